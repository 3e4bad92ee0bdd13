package proxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"time"

	"github.com/valyala/fasthttp"
)

// Streamed request bodies. The HTTP/1.1 server hands every request body over as a stream
// (fasthttp's StreamRequestBody), the HTTP/2 one every body that may be larger than
// max_body_size (StreamRequest). holdBody reads one of at most max_body_size whole
// before anything else, so the funnel sees requests as it always did; a larger one stays
// a stream that only a route with its own max_body_size takes (takeBigBody), and that
// send forwards as it arrives: edge holds one buffer, and each write to the upstream is
// bounded by the pool's timeout as an idle limit. Any other route answers 413.

// holdBody reads the body of ctx's request whole when it is at most limit bytes, and
// reports false when it is larger (it then stays a stream, of which at most limit+1
// bytes were read for a chunked body).
func holdBody(ctx *fasthttp.RequestCtx, sc *scratch, limit int64) bool {
	req := &ctx.Request
	cl := int64(req.Header.ContentLength())
	if cl > limit {
		return false
	}
	// Read up to limit+1 bytes: a Content-Length body to its end, a chunked one until
	// it ends or proves too large.
	src := bodySource(req)
	b := sc.body[:0]
	for int64(len(b)) <= limit {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := src.Read(b[len(b):min(cap(b), int(limit)+1)])
		b = b[:len(b)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			if overLimit(ctx) {
				err = errChunkOverhead
			}
			sc.bodyErr = err
			req.SetBodyStream(failingBody{err}, -1)
			sc.body = b[:0]
			return false
		}
	}
	if int64(len(b)) <= limit {
		req.SetBody(b) // copies: the request owns its body
		sc.keepBody(b)
		return true
	}
	held := bytes.Clone(b) // the stream reads it first; sc.body is reused
	sc.keepBody(b)
	req.SetBodyStream(io.MultiReader(bytes.NewReader(held), src), -1)
	return false
}

// bodySource returns the body stream of req for a reader that replaces it in req.
// Replacing a body stream closes it (fasthttp's SetBodyStream), which ends an HTTP/2
// body (h2.Body), so that one is detached first: h2 ends it with its stream.
func bodySource(req *fasthttp.Request) io.Reader {
	src := req.BodyStream()
	if d, ok := src.(interface{ Detach() io.ReadCloser }); ok {
		return d.Detach()
	}
	return src
}

// takeBigBody prepares a body over max_body_size for a route that streams it (its own
// max_body_size: -1 unlimited, or a bound), or answers 413 and returns false.
func takeBigBody(ctx *fasthttp.RequestCtx, rt *route) bool {
	limit := rt.cfg.MaxBodySize
	cl := int64(ctx.Request.Header.ContentLength())
	if limit == 0 || limit > 0 && cl > limit || rt.kind != kindUpstream && rt.kind != kindCells {
		errBodyTooLarge.write(ctx)
		ctx.SetConnectionClose() // the rest of the body is not read
		return false
	}
	if w, ok := ctx.Conn().(interface{ StreamBody() }); ok {
		w.StreamBody() // read_timeout bounds a held request; a streamed one gets idle_timeout per read
	}
	limitChunked(ctx, limit, 0) // from here, the route's limit bounds the framing too
	ub := &uploadBody{src: bodySource(&ctx.Request), left: limit}
	ctx.Request.SetBodyStream(ub, int(cl))
	return true
}

// uploadBody is a request body streamed to the upstream as the client sends it. send
// tells it the upstream connection (prepare), whose write deadline each read moves.
type uploadBody struct {
	src  io.Reader
	left int64 // bytes the route still allows; -1: unlimited
	conn net.Conn
	idle time.Duration
}

var errUploadTooLarge = errors.New("request body over the route's max_body_size")

func (u *uploadBody) prepare(conn net.Conn, idle time.Duration) { u.conn, u.idle = conn, idle }

func (u *uploadBody) Read(p []byte) (int, error) {
	if u.left == 0 {
		// At the bound: one more byte means too large.
		var one [1]byte
		if n, _ := u.src.Read(one[:]); n > 0 {
			return 0, errUploadTooLarge
		}
		return 0, io.EOF
	}
	if u.left > 0 && int64(len(p)) > u.left {
		p = p[:u.left]
	}
	n, err := u.src.Read(p)
	if u.left > 0 {
		u.left -= int64(n)
	}
	if n > 0 && u.conn != nil {
		u.conn.SetWriteDeadline(time.Now().Add(u.idle))
	}
	return n, err
}

// readLimiter is the byte limit the connection (package watchdog) puts on the request
// being read.
type readLimiter interface {
	LimitRead(n int64)
	ReadLimited() bool
}

// chunkSlack is what a chunked body may take off the connection beyond twice its size
// limit: room for the trailer section and the last read buffer.
const chunkSlack = 64 << 10

// errChunkOverhead: a chunked body whose framing (sizes, extensions, trailers) took more
// bytes than limitChunked allows. Answered 413.
var errChunkOverhead = errors.New("chunked body framing over its byte limit")

// limitChunked bounds the bytes the chunked HTTP/1.1 body of ctx may take off the
// connection while it is read, for a body of at most limit bytes (-1: unbounded):
// 2×limit + headerSize + chunkSlack. Chunk sizes, extensions and trailers are read inside
// fasthttp's chunk parser, where no body limit sees them, so without this a client could
// send an endless chunk extension; 2×limit lets through chunks down to about 5 data
// bytes each (RFC 9112 §7.1.1: a server ought to limit extensions). A body with a
// Content-Length, or a connection that is not watched (HTTP/2), is left alone.
func limitChunked(ctx *fasthttp.RequestCtx, limit, headerSize int64) {
	if ctx.Request.Header.ContentLength() != -1 {
		return
	}
	rl, ok := ctx.Conn().(readLimiter)
	if !ok {
		return
	}
	if limit < 0 {
		rl.LimitRead(-1)
		return
	}
	rl.LimitRead(2*limit + headerSize + chunkSlack)
}

// overLimit reports whether the body of ctx failed because it went past limitChunked.
func overLimit(ctx *fasthttp.RequestCtx) bool {
	rl, ok := ctx.Conn().(readLimiter)
	return ok && rl.ReadLimited()
}

// failingBody is a body whose reading failed already.
type failingBody struct{ err error }

func (f failingBody) Read([]byte) (int, error) { return 0, f.err }
