// Package h3 is the HTTP/3 server side of edge: QUIC (github.com/quic-go/quic-go, the
// maintained Go implementation) on a listener's UDP socket, each request run through the
// one fasthttp.RequestHandler that serves HTTP/1.1 and HTTP/2, so all three get the same
// answers. Upstreams still get HTTP/1.1 (or h2): the protocol stays "HTTP/1.1".
//
// # Contract
//
// edge speaks HTTP/3 itself on quic-go's QUIC connections (quic-go's http3 package
// builds a net/http Request and Header per request, and its server cost edge half its
// HTTP/3 throughput). Each connection gets edge's control stream with its SETTINGS
// (SETTINGS_MAX_FIELD_SECTION_SIZE = Config.MaxHeaderBytes; a QPACK dynamic table of 0,
// so field sections use only the static table and literals); the client's control
// stream must start with SETTINGS, come once and last as long as the connection (else
// H3_MISSING_SETTINGS, H3_STREAM_CREATION_ERROR, H3_CLOSED_CRITICAL_STREAM), its QPACK
// streams are drained and a push stream is refused (RFC 9114 §6.2). A request stream is
// read whole (RFC 9114 §4.1): HEADERS, DATA up to Config.MaxBodySize, perhaps trailers
// (checked, not kept), unknown frame types skipped; unless Config.StreamRequest picks
// the request, whose handler then runs once the HEADERS are read and reads the DATA as
// it arrives from ctx.Request's body stream (a *Body, reqbody.go). A frame only the control stream may
// carry closes the connection with H3_FRAME_UNEXPECTED, and a field section QPACK cannot
// decode (or one naming the dynamic table) with QPACK_DECOMPRESSION_FAILED. Fields are
// checked as h2 checks them (RFC 9114 §4.2 and §4.3 repeat RFC 9113 §8.2 and §8.3, and the
// checks are h2's): a malformed request is reset with H3_MESSAGE_ERROR and never reaches
// the handler; cookie crumbs are joined with "; "; a Content-Length the DATA belies is
// malformed. A header section over MaxHeaderBytes is answered 431
// {"error":"header_too_large"}, a body over MaxBodySize 413 {"error":"body_too_large"}
// (the rest of the request is then not read: STOP_SENDING with H3_NO_ERROR), a CONNECT
// 405 {"error":"method_not_allowed"}: WebSockets over HTTP/3 (RFC 9220) are not served,
// and SETTINGS_ENABLE_CONNECT_PROTOCOL is not sent.
//
// Each request becomes a pooled *fasthttp.RequestCtx set up with Init2 (fresh ConnID and
// Time; RemoteAddr and LocalAddr are the QUIC connection's, as *net.TCPAddr values with
// the UDP addresses' IP and port, since fasthttp's RemoteIP and the funnel read that
// type): method, request target and Host from the pseudo-headers, the other fields as
// headers (X-Edge-Protocol, the h2 extended CONNECT marker, dropped), the body or its
// stream. The
// handler's ctx.Response becomes the answer: a HEADERS frame with its status, its
// headers minus the connection-specific ones (h2.SkipResponseHeader: the same list),
// content-length and, when the handler set none, date; then the body in one DATA frame,
// or a body stream (SetBodyStream) a DATA frame per read of at most 32 KiB, closed once
// with CloseBodyStream; then the end of the stream. A read error of a body stream, or a
// panic in the handler, resets the stream with H3_INTERNAL_ERROR, so a client never
// takes a truncated body for a whole one. Response trailers are not sent. Interim
// answers (1xx other than 101) the handler sends through ctx.Conn()'s WriteInterim, as
// over HTTP/2, go out as HEADERS frames ahead of the final answer. The ctx is then reset
// and pooled: nothing of it is kept.
//
// # Concurrency
//
// quic-go accepts request streams on the connection's goroutine in h3; each stream is
// handed to a worker goroutine kept from one request to the next (at most 64 idle per
// Server, ended by Shutdown), which reads the request, runs the handler and writes the
// answer. A fresh goroutine's stack grew by copying on every request otherwise (about
// 14% of edge's CPU under load); a worker keeps 8 KiB of its stack in use while it
// idles, so that garbage collections do not shrink it back (about 4% more).
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
// Shutdown sends GOAWAY on every connection (streams the client opened after it are
// rejected with H3_REQUEST_REJECTED, to be retried elsewhere), lets requests in flight
// finish and waits for the clients to close their connections, as they do once their
// requests are answered, until its context ends; then it closes the rest. A connection
// with no request open for Config.IdleTimeout is closed (H3_NO_ERROR) even if its client
// keeps it alive with pings. The certificates of new handshakes come from the TLS config
// New was given, read at every handshake.
package h3
