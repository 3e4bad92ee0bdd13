// Package h3 is the HTTP/3 server side of edge: QUIC (github.com/quic-go/quic-go, the
// maintained Go implementation) on a listener's UDP socket, each request run through the
// one fasthttp.RequestHandler that serves HTTP/1.1 and HTTP/2, so all three get the same
// answers. Upstreams still get HTTP/1.1 (or h2): the protocol stays "HTTP/1.1".
//
// # Contract
//
// quic-go's http3.Server parses and checks each request stream (RFC 9114 §4.2: malformed
// or connection-specific fields reset the stream; cookie fields joined with "; "). Each
// request then becomes a pooled *fasthttp.RequestCtx set up with Init2 (fresh ConnID and
// Time; RemoteAddr and LocalAddr are the QUIC connection's, as *net.TCPAddr values with
// the UDP addresses' IP and port, since fasthttp's RemoteIP and the funnel read that type): method, request target and
// Host from the pseudo-headers, the other fields as headers (X-Edge-Protocol, the h2
// extended CONNECT marker, dropped), the body read whole up to Config.MaxBodySize (413
// {"error":"body_too_large"} beyond). A CONNECT is answered 405
// {"error":"method_not_allowed"}: WebSockets over HTTP/3 (RFC 9220) are not served.
// The handler's ctx.Response becomes the answer: its status, its headers minus the
// connection-specific ones (h2.SkipResponseHeader: the same list), content-length and
// date, then the body; a body stream (SetBodyStream) is sent as it is read, 32 KiB at
// most at a time, each piece flushed, and closed once with CloseBodyStream; a read error
// resets the stream so a client never takes a truncated body for a whole one. Response
// trailers are not sent. The ctx is then reset and pooled: nothing of it is kept. Unlike
// h2 this path allocates (net/http's Request and Header per request).
//
// # Concurrency
//
// quic-go runs each request stream on a goroutine of its own; h3 hands the request to a
// worker goroutine kept from one request to the next (at most 64 idle per Server, ended
// by Shutdown), which runs the handler and writes the answer while the stream's
// goroutine waits. A fresh goroutine's stack grew by copying on every request otherwise
// (about 14% of edge's CPU under load). A panic in the handler is raised again on the
// stream's goroutine, where quic-go recovers it.
//
// # Bounds
//
// See Config: streams per connection, connections in total and per client IP (refused
// before any TLS work), handshake and idle timeouts, and a Retry round trip (RFC 9000
// §8.1.2) asked of new clients once connections arrive faster than RetryThreshold per
// second, so that spoofed sources cost one small stateless packet each and never a
// handshake. Flow control windows are quic-go's (per stream up to 6 MiB, per connection
// up to 15 MiB of unread data).
//
// # 0-RTT
//
// Off unless Config.EarlyData. When on, a resuming client may send requests in its first
// flight. Those with a safe method run at once; any other is held until the handshake
// completes (RFC 8470 §3), or answered 425 {"error":"too_early"} if it never does: an
// attacker replaying a captured first flight cannot complete the handshake, so a
// replayed POST never reaches the handler. Stats counts both.
//
// # Shutdown
//
// Shutdown sends GOAWAY on every connection, lets requests in flight finish until its
// context ends, then closes the connections. The certificates of new handshakes come
// from the TLS config New was given, read at every handshake.
package h3
