package proxy

import (
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"time"

	"github.com/edge-gw/edge/tunnel"
	"github.com/valyala/fasthttp"
)

// WebSocket over HTTP/2 (RFC 8441). h2 hands an extended CONNECT to the handler as
// method CONNECT with the :protocol in the X-Edge-Protocol header (h2.ProtocolHeader,
// which h2 drops when a client sends it), and its body always streamed. On a websocket
// route upgradeToken takes it for an upgrade, so it runs the same funnel and reaches
// sendUpgrade, which speaks HTTP/1.1 to the origin: the handshake is turned into a GET
// upgrade with a fresh Sec-WebSocket-Key (the HTTP/2 side has none), and only a 101 whose
// Sec-WebSocket-Accept matches that key opens the tunnel. The client then gets 200 and
// the tunnel runs on the stream: the request body carries the client's bytes up, the
// response body (an io.Pipe) carries the origin's down, in the route's tunnel group like
// any other tunnel.

// hdrEdgeProtocol is h2.ProtocolHeader (proxy does not import h2; a test checks they
// agree).
var hdrEdgeProtocol = []byte("X-Edge-Protocol")

var (
	hdrWSKey            = []byte("Sec-WebSocket-Key")
	hdrWSVersion        = []byte("Sec-WebSocket-Version")
	hdrWSAccept         = []byte("Sec-WebSocket-Accept")
	strWSVersion        = []byte("13")
	errMethodNotAllowed = jsonError(405, "method_not_allowed")
	errTunnelEnded      = errors.New("proxy: tunnel ended")
	errNoDeadline       = errors.New("proxy: an HTTP/2 stream has no deadline")
)

// wsKey is the Sec-WebSocket-Key edge sends an origin for an HTTP/2 client.
type wsKey [24]byte

// h1Handshake turns an extended CONNECT's header into an HTTP/1.1 WebSocket handshake
// (sendUpgrade adds Connection and Upgrade, as for any upgrade): GET, no body, no
// X-Edge-Protocol, version 13 and a fresh key, which it returns. The path, Host and the
// client's Sec-WebSocket-Protocol and -Extensions stay.
func h1Handshake(h *fasthttp.RequestHeader) wsKey {
	var nonce [16]byte
	rand.Read(nonce[:]) // never fails (crypto/rand)
	var key wsKey
	base64.StdEncoding.Encode(key[:], nonce[:])
	h.SetMethod(fasthttp.MethodGet)
	h.SetContentLength(0) // drops the Transfer-Encoding of a stream of unknown size
	h.DelBytes(hdrEdgeProtocol)
	h.SetCanonical(hdrWSVersion, strWSVersion)
	h.SetCanonical(hdrWSKey, key[:])
	return key
}

// accepted reports whether h's Sec-WebSocket-Accept answers k (RFC 6455 §4.2.2).
func (k *wsKey) accepted(h *fasthttp.ResponseHeader) bool {
	sum := sha1.New()
	sum.Write(k[:])
	sum.Write([]byte("258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	var want [28]byte
	base64.StdEncoding.Encode(want[:], sum.Sum(nil))
	return string(h.PeekBytes(hdrWSAccept)) == string(want[:])
}

// openH2Tunnel answers the HTTP/2 client 200 with a response body fed by the tunnel
// and runs the tunnel between the stream and up (the origin, after its 101) on a
// goroutine of its own, in rt's group, whose slot the caller took.
func openH2Tunnel(ctx *fasthttp.RequestCtx, body io.Reader, up net.Conn, rt *routeTunnel, pending []byte) {
	resp := &ctx.Response
	resp.SetStatusCode(fasthttp.StatusOK)
	resp.Header.DelBytes(hdrWSAccept) // Sec-WebSocket-Protocol and -Extensions stay
	resp.Header.DelBytes(strUpgrade)
	resp.Header.SetNoDefaultContentType(true) // tunnel bytes have none (Reset clears the flag)
	pr, pw := io.Pipe()
	resp.SetBodyStream(pr, -1) // h2 closes pr when the stream ends, which ends the tunnel
	c := &h2Stream{body: body, pw: pw, local: ctx.LocalAddr(), remote: ctx.RemoteAddr()}
	go rt.group.Run(c, up, tunnel.Options{IdleTimeout: rt.idle, UpstreamPending: pending})
}

// h2Stream is the client side of a tunnel over an HTTP/2 stream, as a net.Conn: Read
// reads the request body, Write feeds the response body, CloseWrite ends the response
// (END_STREAM). It has no deadlines, so the tunnel ends it with Close, which wakes a
// Read and a Write blocked in it.
type h2Stream struct {
	body          io.Reader
	pw            *io.PipeWriter
	local, remote net.Addr
}

func (c *h2Stream) Read(b []byte) (int, error)  { return c.body.Read(b) }
func (c *h2Stream) Write(b []byte) (int, error) { return c.pw.Write(b) }

// CloseWrite ends the response body: h2 sends END_STREAM after what was written.
func (c *h2Stream) CloseWrite() error { return c.pw.Close() }

// Close ends both directions. A response not ended by CloseWrite before fails its
// read, so h2 resets the stream instead of ending it as if the origin had.
func (c *h2Stream) Close() error {
	c.pw.CloseWithError(errTunnelEnded) // after CloseWrite: no effect
	if bc, ok := c.body.(io.Closer); ok {
		bc.Close()
	}
	return nil
}

func (c *h2Stream) LocalAddr() net.Addr              { return c.local }
func (c *h2Stream) RemoteAddr() net.Addr             { return c.remote }
func (c *h2Stream) SetDeadline(time.Time) error      { return errNoDeadline }
func (c *h2Stream) SetReadDeadline(time.Time) error  { return errNoDeadline }
func (c *h2Stream) SetWriteDeadline(time.Time) error { return errNoDeadline }
