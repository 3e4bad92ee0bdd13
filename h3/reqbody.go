package h3

import (
	"bufio"
	"errors"
	"io"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/valyala/fasthttp"
)

// Streamed request bodies (Config.StreamRequest): the handler runs once the HEADERS are
// read, with ctx.Request.SetBodyStream(body, content-length or -1), and body yields the
// DATA frames' bytes as they arrive. QUIC's flow control follows the reads: a handler
// (or upstream) that reads slowly paces the client, and the stream holds at most its
// receive window of unread data. MaxBodySize does not apply.

// Errors a streamed body's Read returns besides io.EOF.
var (
	// ErrBodyLength: the DATA received was more or less than the request's
	// Content-Length, or its trailers were over the header bound (the stream is reset
	// with H3_MESSAGE_ERROR).
	ErrBodyLength = errors.New("h3: request body length differs from its content-length")
	// ErrBodyFrame: a frame not allowed in a request body (the connection is closed).
	ErrBodyFrame = errors.New("h3: a frame not allowed in a request body")
	// ErrBodyClosed: the body was closed (Close), or the request ended.
	ErrBodyClosed = errors.New("h3: request body closed")
)

// reqBody is a streamed request body: the request stream past its HEADERS frame.
type reqBody struct {
	c        *conn
	str      *quic.Stream
	br       *bufio.Reader // the exchange's reader, handed over with what it buffered
	maxTrail int           // bound of a trailer section
	cl, n    int64         // declared length (-1: none) and bytes read
	left     uint64        // bytes left in the current DATA frame
	err      error         // the error every Read returns from now on
	idle     atomic.Int64  // bound of each wait for data, in ns; 0: none
	closed   atomic.Bool
}

func newReqBody(c *conn, str *quic.Stream, br *bufio.Reader, cl int64, idle time.Duration, maxTrail int) *reqBody {
	b := &reqBody{c: c, str: str, br: br, cl: cl, maxTrail: maxTrail}
	b.idle.Store(int64(idle))
	return b
}

// Read reads the body's bytes, the DATA frames' payloads in order; io.EOF at the end of
// the stream.
func (b *reqBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.closed.Load() {
		return 0, ErrBodyClosed
	}
	if d := time.Duration(b.idle.Load()); d > 0 {
		b.str.SetReadDeadline(time.Now().Add(d))
	} else {
		b.str.SetReadDeadline(time.Time{})
	}
	for b.left == 0 {
		if err := b.nextFrame(); err != nil {
			b.err = err
			return 0, err
		}
	}
	n, err := b.br.Read(p[:min(uint64(len(p)), b.left)])
	b.left -= uint64(n)
	b.n += int64(n)
	if b.cl >= 0 && b.n > b.cl {
		return n, b.failLength()
	}
	switch {
	case err == io.EOF && b.left == 0: // the stream ended with this frame
		if b.err = b.end(); b.err != io.EOF {
			return n, b.err
		}
		return n, nil // the next Read says io.EOF
	case err != nil:
		b.err = b.readError(noEOF(err))
		return n, b.err
	}
	return n, nil
}

// nextFrame reads frame headers up to the next DATA frame; trailers are checked for
// size and dropped, and end the body.
func (b *reqBody) nextFrame() error {
	typ, n, err := readRequestFrame(b.c, b.br)
	switch {
	case err == io.EOF:
		return b.end()
	case err == errControlFrame:
		return ErrBodyFrame
	case err != nil:
		return b.readError(err)
	case typ == frameData:
		b.left = n
		return nil
	}
	// Trailers: nothing may follow them.
	if n > uint64(b.maxTrail) {
		return b.failLength()
	}
	if _, err := b.br.Discard(int(n)); err != nil {
		return b.readError(noEOF(err))
	}
	if _, err := b.br.Peek(1); err != io.EOF {
		if err == nil {
			b.c.closeWith(errFrameUnexpected, "a frame after trailers")
			return ErrBodyFrame
		}
		return b.readError(err)
	}
	return b.end()
}

// end is the body's end of stream: io.EOF, or ErrBodyLength (the stream reset) when the
// body was shorter than its Content-Length.
func (b *reqBody) end() error {
	if b.cl >= 0 && b.n != b.cl {
		return b.failLength()
	}
	return io.EOF
}

// failLength resets the stream with H3_MESSAGE_ERROR (the body belied its
// Content-Length, or its trailers were too large) and ends the body with ErrBodyLength.
func (b *reqBody) failLength() error {
	b.str.CancelRead(errMessage)
	b.str.CancelWrite(errMessage)
	b.err = ErrBodyLength
	return b.err
}

// readError is what a failed stream read means for the body: the client's reset or a
// deadline as they are, a read after close as ErrBodyClosed.
func (b *reqBody) readError(err error) error {
	if b.closed.Load() {
		return ErrBodyClosed
	}
	return err
}

// close ends the body: a Read blocked in it returns, the client is told to stop sending
// (STOP_SENDING with H3_NO_ERROR, RFC 9114 §4.1) unless the body was read to its end.
func (b *reqBody) close() {
	if !b.closed.Swap(true) {
		b.str.CancelRead(errNoError)
	}
}

// Body is the handler's handle on a streamed request body (ctx.Request's body stream):
// an io.ReadCloser whose Close ends the body, unless it was detached.
type Body struct {
	b        *reqBody
	detached atomic.Bool
}

// Read reads the body: the DATA frames' payloads as they arrive, io.EOF at its end;
// ErrBodyLength, ErrBodyFrame, ErrBodyClosed, a deadline or the client's reset
// otherwise.
func (h *Body) Read(p []byte) (int, error) { return h.b.Read(p) }

// Close ends the body (see reqBody.close), unless the handle was detached. h3 closes it
// itself once the answer is sent.
func (h *Body) Close() error {
	if !h.detached.Load() {
		h.b.close()
	}
	return nil
}

// SetIdleTimeout bounds each wait for the body's next bytes from now on; 0 waits as long
// as the connection lives. (proxy/grpc.go sets it for gRPC calls.)
func (h *Body) SetIdleTimeout(d time.Duration) { h.b.idle.Store(int64(d)) }

// Detach returns a new handle on the same body and makes this one's Close do nothing.
// A handler that replaces the request's body stream with a reader of its own built on
// this one (fasthttp's SetBodyStream closes the stream it replaces) detaches it first.
func (h *Body) Detach() io.ReadCloser {
	h.detached.Store(true)
	return &Body{b: h.b}
}

// streamBody reports whether the request whose header h was just read has its body
// streamed: cfg.StreamRequest says so, and the request may have a body. HTTP/3 has no
// flag saying the HEADERS end the request, so a GET or HEAD without a Content-Length is
// taken as bodiless (and read whole, within MaxBodySize, should it have one).
func streamBody(cfg *Config, h *fasthttp.RequestHeader, cl int64) bool {
	if cfg.StreamRequest == nil || cl == 0 || cl < 0 && (h.IsGet() || h.IsHead()) {
		return false
	}
	return cfg.StreamRequest(h)
}
