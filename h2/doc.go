// Package h2 is the HTTP/2 server side of edge: it serves connections handed over by a
// listener (TLS with ALPN "h2", or h2c with prior knowledge) and runs every stream through
// the one fasthttp.RequestHandler that serves HTTP/1.1, so both get the same answers.
//
// # Contract
//
// Each stream becomes a pooled *fasthttp.RequestCtx set up with Init2 (fresh ConnID and
// Time, RemoteAddr/LocalAddr of the real connection): :method, :path and :authority (or
// host) become the method, RequestURI and Host; regular fields are added as headers
// (cookie crumbs joined with "; "; te: trailers kept, as gRPC needs it upstream); the body is the DATA received, buffered whole up to
// Config.MaxBodySize, or streamed to the handler as it arrives when
// Config.StreamRequest says so (see Streamed request bodies). The protocol stays
// "HTTP/1.1", so a proxying handler forwards HTTP/1.1. The handler runs once the request
// is complete (END_STREAM), or at once for a streamed one; its ctx.Response becomes
// :status, the response headers lowercased minus the connection-specific ones,
// content-length, date, and DATA frames within the peer's flow control windows and frame
// size (none for HEAD, 1xx, 204 and 304), then the trailers if it declared any (see
// Trailers); a body stream is sent as it is read (see Streamed response bodies). The ctx
// is then reset and pooled: nothing of it is kept.
// Before its answer a handler may send interim (1xx) answers, such as a proxied origin's
// 103 Early Hints: ctx.Conn() of a stream has WriteInterim, which sends each as a
// HEADERS frame without END_STREAM.
//
// Malformed requests (RFC 9113 §8.2, §8.3: uppercase or invalid names, connection-specific
// fields, te other than "trailers", missing, duplicate or misplaced pseudo-headers,
// content-length not matching the DATA) get RST_STREAM(PROTOCOL_ERROR). A plain CONNECT
// is answered 405 {"error":"method_not_allowed"}. h2 answers itself with 408, 413 and 431
// JSON bodies as Config describes.
//
// # Extended CONNECT
//
// h2 sends SETTINGS_ENABLE_CONNECT_PROTOCOL = 1 and accepts an extended CONNECT (RFC 8441:
// :method CONNECT with :protocol, :scheme, :path and :authority; :protocol with any other
// method, or without the other three, is malformed). The handler gets method "CONNECT",
// the path and host as usual, and the protocol in the request header ProtocolHeader
// (X-Edge-Protocol), which h2 drops whenever a client sends it, so only an extended
// CONNECT carries it. Its body is always streamed, whatever Config.StreamRequest says
// (see Streamed request bodies), without ReadTimeout: a tunnel may be quiet for as long
// as the handler's own idle limit allows (it ends the stream by closing the body), and a
// body stream left in ctx.Response flows back at the same time: a tunnel (edge: WebSocket
// over HTTP/2) answers 200 and relays bytes both ways until either side ends its half.
// The answer's END_STREAM only half-closes such a stream: unlike any other request, its
// body goes on until the client's END_STREAM was read (Read returned io.EOF), the body
// was closed, or the stream or connection failed; only then is the stream done.
//
// # Streamed response bodies
//
// A handler may leave a body stream in ctx.Response (SetBodyStream, SetBodyStreamWriter):
// a proxy relaying a large download or server-sent events as the upstream delivers them.
// h2 then sends HEADERS at once, with content-length only when the size is known
// (ctx.Response.Header.ContentLength() >= 0: SetBodyStream's size; -1 means unknown), and
// reads the stream in pieces of at most 32 KiB into one pooled buffer, always with Read
// (never WriteTo). Each piece is written as DATA as soon as Read returns it (with
// SetBodyStreamWriter: when its writer flushes) and flushed
// at once (the write lock's holder flushes when no other writer waits), so an event
// reaches the client without waiting for more. Each piece waits for the peer's stream and
// connection windows like any response: a slow client slows the reads from the stream
// (backpressure) instead of growing memory, and the stream is read ahead of what the
// client received by at most its window plus the buffer. After EOF the stream ends with
// END_STREAM (on an empty DATA frame if needed); a known size ends it after that many
// bytes, without reading further. A read error, or EOF before the known size, resets the
// stream with INTERNAL_ERROR: the client must not take a truncated body for a whole one.
//
// WriteTimeout bounds each write and each flow-control wait, not a whole response: a
// stream lasts as long as its reader produces, and a quiet one (server-sent events
// between two events) is cut neither by WriteTimeout nor by IdleTimeout, which counts
// only while a connection has no open stream; PINGs still check that the peer is alive.
// Server.Shutdown waits for such streams until its context ends.
//
// The body stream is closed exactly once with ctx.Response.CloseBodyStream (its Close,
// or CloseWithError for a fasthttp client's streamed body) however the stream ended:
// sent whole, not sent (HEAD, 1xx, 204, 304, a stream reset before its answer), a read
// error, a client RST_STREAM, the connection closed, cut by WriteTimeout or shut down;
// and before the stream's slot is freed. That is where a proxy's reader gives its
// upstream connection back, or closes it when the body was not read to the end. h2
// cannot interrupt a Read in progress: a reset or a dead connection is noticed when that
// Read returns, and no other Read follows; until then the stream still counts against
// MaxConcurrentStreams and ServeConn waits for it. A reader that may block for long must
// bound its reads itself (a read deadline on its upstream connection).
//
// # Trailers
//
// Trailer names declared in ctx.Response with AddTrailer (as h2up does for a gRPC
// answer, and fasthttp's client for an HTTP/1.1 upstream's) are sent after the body as a
// HEADERS frame with END_STREAM, instead of END_STREAM on the last DATA frame: the values
// set under those names, lowercase, without pseudo-headers and connection-specific names,
// exactly those fasthttp's HTTP/1.1 server would write after a chunked body
// (ResponseHeader.TrailerHeader). For a buffered body they are read when the handler
// returns; for a body stream, once its Read returned io.EOF, since that is when a proxy's
// reader learns them from upstream. A declared name without a value sends nothing (the
// stream then ends on DATA). The Trailer header that announces them in HTTP/1.1 is not
// sent: HTTP/2 needs no announcement, and it would only repeat names. An answer with an
// empty body and no declared trailer, such as gRPC's Trailers-Only (grpc-status among the
// headers), stays one HEADERS frame with END_STREAM. A value fasthttp moved into its
// trailer section from the header block already sent (it does so when a name is
// announced after being set as a header) is not sent twice. HEAD, 1xx, 204 and 304
// answers carry no trailers.
//
// # Streamed request bodies
//
// Config.StreamRequest picks the requests whose body is not buffered (edge: gRPC calls,
// h2up.IsGRPC). For those the handler runs as soon as the HEADERS arrive, with
// ctx.Request.SetBodyStream(r, content-length or -1); r yields the DATA as it arrives,
// io.EOF at END_STREAM, and ErrBodyReset (the client reset the stream, or h2 did: more
// or less data than content-length, flow control broken, the answer failed),
// ErrBodyTimeout, ErrBodyConnClosed or ErrBodyClosed otherwise; r is an io.Closer, whose
// Close wakes a Read blocked in it (h2up closes it when its exchange ends). MaxBodySize
// does not apply: the handler reads as much as it wants. Request trailers are accepted
// (they end the body like END_STREAM) and dropped, as for buffered bodies.
//
// The reader outlives the handler: a proxy's handler returns once the upstream's
// response headers arrived (h2up.Do), and the request body goes on streaming up while
// the response streams down, both on the same stream: full duplex, as a bidirectional
// gRPC call needs (the client sends a message, waits for the answer, sends the next).
// Whatever reads the body after the handler returned must be tied to the response's body
// stream and let go of the request when that stream is closed (h2up's Exchange does).
//
// Flow control follows the reads: the stream's and the connection's windows are
// returned as the body is read, not as it arrives, so a handler (or upstream) that reads
// slowly paces the client, and a stream holds at most one stream window
// (InitialWindowSize) of unread data. ReadTimeout becomes an idle limit: it bounds each
// wait for the next DATA frame (from HEADERS, then between frames, until END_STREAM),
// so a long body that keeps coming is never cut; a body quiet for longer fails its Read
// with ErrBodyTimeout and the stream is reset with CANCEL (no GOAWAY: the client broke
// no rule). A client that keeps a stream open without sending (a watch call waiting on
// the server) is cut by it too: ReadTimeout must then exceed the longest such silence.
// Extended CONNECT streams (tunnels) are the exception: their idle limit is the handler's.
//
// The stream is done when its answer is: once the response's END_STREAM is written, a
// request body that has not ended is abandoned with RST_STREAM(NO_ERROR) (RFC 9113
// §8.1), what it held unread is dropped and its window returned, DATA still in flight is
// dropped quietly, and Read returns ErrBodyClosed. Until then the stream holds its
// MaxConcurrentStreams slot. The body reader is allocated per streamed request and
// refers to the connection only, never to the pooled stream and ctx, so a Read that
// comes too late cannot touch a request that reuses them. A client RST_STREAM, a
// malformed body or the connection ending wakes a blocked Read with its error, which is
// how a proxy's blocked upstream write ends.
//
// # Concurrency shape
//
// ServeConn's goroutine is the connection's only reader: it parses frames, decodes header
// blocks with one hpack.Decoder per connection, buffers bodies and acknowledges them with
// WINDOW_UPDATE (on stream 0 only while MaxConnBodyBuffer allows: see Memory), or hands
// the DATA of a streamed body to its reader (which acknowledges it as it reads). A
// complete request, or a streamed one at its HEADERS, is handed to a worker goroutine
// that runs the handler and writes the answer; after a stream a worker waits for the connection's next stream while at most 4
// idle, so a busy connection starts no goroutine per request. Writes are serialized by a
// mutex around a bufio.Writer, flushed when no other writer waits. One timer per
// connection enforces ReadTimeout per stream, the flow-control stall bound
// (WriteTimeout), IdleTimeout and PINGs. When ServeConn returns, every goroutine it
// started has ended (handlers still running, and Reads of body streams in progress, are
// waited for: they cannot be cancelled).
//
// # Memory
//
// A connection holds at most, whatever the client sends:
//   - request bodies of streams whose handler has not started: under MaxConnBodyBuffer +
//     ConnWindowSize bytes. Connection window is returned only while they are under
//     MaxConnBodyBuffer, so the client waits instead of edge's memory growing; once over
//     it, only what the window already granted can still arrive. The handler starting (or
//     the stream ending, e.g. by ReadTimeout) releases a body's bytes. Per-stream windows
//     (InitialWindowSize) work as usual within that.
//   - streamed request bodies (StreamRequest) received and not read yet: at most one
//     stream window (InitialWindowSize) per stream, and at most ConnWindowSize for the
//     whole connection, since their connection window comes back only as they are read;
//     held in pooled 16 KiB chunks (plus up to two partly used chunks per stream). They
//     are not counted in MaxConnBodyBuffer, which would otherwise let one unread stream
//     stop the buffered ones: the total received and not yet released stays under
//     MaxConnBodyBuffer + ConnWindowSize all the same, since both kinds share the
//     connection window.
//   - the header list of each open stream: MaxConcurrentStreams × MaxHeaderListSize, plus
//     about 2 KiB of fixed state per stream;
//   - one header block being accumulated (MaxHeaderListSize), one frame (MaxFrameSize)
//     and 16 KiB of bufio buffers.
//
// With the defaults that is under 8 MiB + 1 MiB of bodies, 2 MiB of header lists,
// 256 KiB of stream state and 48 KiB: about 11.3 MiB (11,845,632 bytes) per connection,
// where buffering whole bodies against the windows alone allowed 128 × 4 MiB = 512 MiB.
// Body bytes are counted as received; the buffers holding them add Go's append growth
// (up to 2× for small bodies, about 1.25× for large ones).
//
// A side effect of returning window only as streamed bodies are read: streams whose
// readers stall can hold the whole connection window (ConnWindowSize / InitialWindowSize
// streams, 4 with the defaults), and then no DATA arrives on that connection for any
// stream until one of them reads, or ends (its unread data is then dropped and its
// window returned). net/http's server behaves the same. A larger ConnWindowSize lets
// more stalled streams coexist with moving ones.
//
// Not counted: the requests whose handler runs and their responses, which belong to the
// handler until it returns, like the one request of an HTTP/1.1 connection. A response
// body left as a stream is never buffered whole: while it is sent it costs one pooled
// 32 KiB buffer, whatever its size (at most MaxConcurrentStreams × 32 KiB, 4 MiB with the
// defaults, per connection). At most
// MaxConcurrentStreams handlers run per connection, so slow handlers given big bodies
// can still keep up to MaxConcurrentStreams × MaxBodySize alive: the handler's own
// timeouts (or a lower MaxConcurrentStreams) bound that.
//
// # Abuse
//
// Every cut costs the server little CPU and ends with GOAWAY and a closed connection,
// counted in Stats.GoAwayByReason:
//   - Rapid reset (CVE-2023-44487): a client RST_STREAM on a stream not yet answered and
//     a refused stream each cost a token of a per-connection budget of
//     Config.MaxControlFrames refilled at a tenth of it per second; when it is spent:
//     GOAWAY(ENHANCE_YOUR_CALM), "rapid_reset". A stream reset before its handler started
//     never runs it, and a reset stream still counts against MaxConcurrentStreams until
//     its handler returns, so running handlers stay bounded.
//   - SETTINGS, PING and unknown-frame floods, empty DATA and CONTINUATION frames and
//     stream WINDOW_UPDATEs of 0 spend the same budget: "control_flood".
//   - CONTINUATION flood (CVE-2024-27316): the header block is bounded by
//     MaxHeaderListSize bytes while it accumulates: "continuation_flood".
//   - A stream whose body does not arrive within ReadTimeout: 408, then GOAWAY(NO_ERROR)
//     and close once the other streams finish: "body_timeout".
//   - A peer that does not read: WriteTimeout per write and per flow-control stall;
//     a peer that does not answer PINGs: "ping_timeout".
//   - Frames over MaxFrameSize: GOAWAY(FRAME_SIZE_ERROR); other RFC 9113 connection
//     errors: GOAWAY with their code, "protocol".
//
// # Why not net/http's or x/net/http2's server
//
// They build an *http.Request per stream and allocate heavily, would need an adapter to
// fasthttp.RequestCtx on top, and do not close a connection that opens and resets
// streams (they only bound the handlers). h2 is allocation-free per request in steady
// state, except the strings hpack.Decoder makes for literal (non-indexed) fields.
package h2
