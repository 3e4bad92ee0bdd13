package proxy

import (
	"io"
	"net"

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
)

// h1Handshake turns an extended CONNECT's header into an HTTP/1.1 WebSocket handshake
// (sendUpgrade adds Connection and Upgrade, as for any upgrade): GET, no body, no
// X-Edge-Protocol, version 13 and a fresh key, which it returns. The path, Host and the
// client's Sec-WebSocket-Protocol and -Extensions stay.
func h1Handshake(h *fasthttp.RequestHeader) tunnel.WebSocketKey {
	key := tunnel.NewWebSocketKey()
	h.SetMethod(fasthttp.MethodGet)
	h.SetContentLength(0) // drops the Transfer-Encoding of a stream of unknown size
	h.DelBytes(hdrEdgeProtocol)
	h.SetCanonical(hdrWSVersion, strWSVersion)
	h.SetCanonical(hdrWSKey, key[:])
	return key
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
	c, down := tunnel.StreamConn(body, ctx.LocalAddr(), ctx.RemoteAddr())
	resp.SetBodyStream(down, -1) // h2 closes it when the stream ends, which ends the tunnel
	go rt.group.Run(c, up, tunnel.Options{IdleTimeout: rt.idle, UpstreamPending: pending})
}
