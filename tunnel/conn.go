package tunnel

import (
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"time"
)

// Adapters that give Run the two net.Conns it copies between, whatever carries a side.

// WithCloseWrite is c, whose Reads and Writes are used, with the half-close of raw: a
// hijacked connection wrapper (which first returns what its server read ahead) that
// lost the underlying socket's CloseWrite. Without one on raw, CloseWrite closes c.
func WithCloseWrite(c, raw net.Conn) net.Conn { return halfCloser{Conn: c, raw: raw} }

type halfCloser struct {
	net.Conn
	raw net.Conn
}

func (h halfCloser) CloseWrite() error {
	if cw, ok := h.raw.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return h.Conn.Close()
}

// StreamConn makes a tunnel side of a message stream with no socket of its own (an
// HTTP/2 stream): reads come from in (the request body), and what is written comes out
// of the returned reader (the response body). CloseWrite ends that reader with io.EOF;
// Close ends it with an error (so a stream that did not end cleanly is reset) and
// closes in when it is an io.Closer, which wakes a blocked Read. It has no deadlines:
// Run then ends it with Close.
func StreamConn(in io.Reader, local, remote net.Addr) (net.Conn, io.Reader) {
	pr, pw := io.Pipe()
	return &streamConn{in: in, pw: pw, local: local, remote: remote}, pr
}

var (
	errStreamEnded = errors.New("tunnel: ended")
	errNoDeadline  = errors.New("tunnel: a stream has no deadline")
)

type streamConn struct {
	in            io.Reader
	pw            *io.PipeWriter
	local, remote net.Addr
}

func (c *streamConn) Read(b []byte) (int, error)  { return c.in.Read(b) }
func (c *streamConn) Write(b []byte) (int, error) { return c.pw.Write(b) }
func (c *streamConn) CloseWrite() error           { return c.pw.Close() }

func (c *streamConn) Close() error {
	c.pw.CloseWithError(errStreamEnded) // after CloseWrite: no effect
	if bc, ok := c.in.(io.Closer); ok {
		bc.Close()
	}
	return nil
}

func (c *streamConn) LocalAddr() net.Addr              { return c.local }
func (c *streamConn) RemoteAddr() net.Addr             { return c.remote }
func (c *streamConn) SetDeadline(time.Time) error      { return errNoDeadline }
func (c *streamConn) SetReadDeadline(time.Time) error  { return errNoDeadline }
func (c *streamConn) SetWriteDeadline(time.Time) error { return errNoDeadline }

// WebSocketKey is a Sec-WebSocket-Key (RFC 6455 §4.1): 16 random bytes, base64.
type WebSocketKey [24]byte

// NewWebSocketKey returns a fresh key.
func NewWebSocketKey() WebSocketKey {
	var nonce [16]byte
	rand.Read(nonce[:]) // never fails (crypto/rand)
	var k WebSocketKey
	base64.StdEncoding.Encode(k[:], nonce[:])
	return k
}

// Accepted reports whether accept is the Sec-WebSocket-Accept that answers k
// (RFC 6455 §4.2.2).
func (k *WebSocketKey) Accepted(accept []byte) bool {
	sum := sha1.New()
	sum.Write(k[:])
	sum.Write([]byte("258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	var want [28]byte
	base64.StdEncoding.Encode(want[:], sum.Sum(nil))
	return string(accept) == string(want[:])
}
