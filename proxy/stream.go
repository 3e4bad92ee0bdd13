package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http/httputil"
	"time"

	"github.com/edge-gw/edge/keepdate"
	"github.com/valyala/fasthttp"
)

// Streamed upstream responses. A route that needs no whole body hands large and
// open-ended answers to the client as they arrive (streamRuleOf): a Content-Length over
// streamAbove (a cached route: over its max_entry), a chunked or close-delimited body,
// or text/event-stream. The client's connection then reads straight from the upstream
// connection (backpressure: a slow client slows the upstream reads, edge holds one
// buffer), each upstream read under the pool's timeout as an idle limit, so an active
// stream is never cut and a silent one is; chunked and close-delimited bodies go to
// the client chunked, each chunk flushed as it comes (server-sent events, long polls).
// Other answers are read whole as before (no allocation on that path).

// streamAbove is the Content-Length above which a body is streamed rather than held.
const streamAbove = 1 << 20

var (
	strEventStream    = []byte("text/event-stream")
	errTooManyInterim = errors.New("too many interim responses from the upstream")
)

// maxInterim bounds the interim answers before a final one, as fasthttp's client does:
// an origin may send 102 Processing every few seconds during a long operation.
const maxInterim = 100

// readHead reads the status line and headers of the final answer after up to
// maxInterim interim (1xx other than 101) answers, which it relays to interim's client
// (interim.go).
//
// The answer goes out with the upstream's Date, not one of edge's (keepdate): a proxy
// forwards the origin's header fields, and a cached copy must carry the same Date as the
// answer it was stored from. An answer without a Date gets the time it arrived (RFC 9110
// §6.6.1). A failed read leaves resp's header reset, so whatever edge answers instead
// gets the server's Date.
func readHead(resp *fasthttp.Response, br *bufio.Reader, interim *fasthttp.RequestCtx) error {
	resp.ResetBody()
	keepdate.Hold(&resp.Header)
	for n := 0; ; n++ {
		if err := resp.Header.Read(br); err != nil {
			resp.Header.Reset()
			return err
		}
		if code := resp.StatusCode(); code < 100 || code > 199 || code == fasthttp.StatusSwitchingProtocols {
			return keepdate.Ensure(&resp.Header, time.Now())
		}
		if n >= maxInterim {
			resp.Header.Reset()
			return errTooManyInterim
		}
		relayInterim(interim, &resp.Header)
	}
}

// noBody reports the statuses that never have a body.
func noBody(resp *fasthttp.Response) bool {
	code := resp.StatusCode()
	return code < 200 || code == fasthttp.StatusNoContent || code == fasthttp.StatusNotModified
}

// readBody reads the body after readHead, whole, as ReadLimitBody would have.
func readBody(resp *fasthttp.Response, br *bufio.Reader, limit int) error {
	if noBody(resp) {
		return nil
	}
	if err := resp.ReadBody(br, limit); err != nil {
		return err
	}
	if resp.Header.ContentLength() == -1 {
		if err := resp.Header.ReadTrailer(br); err != nil {
			if err == io.EOF {
				return io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

// streamRule says which answers a request may take as streams; the zero rule: none.
type streamRule struct {
	above   int64 // a Content-Length beyond this streams; 0: nothing streams
	chunked bool  // chunked and close-delimited bodies stream too
}

// streamRuleOf is the rule of route rt: none where the body is recorded (idempotency);
// on cached routes, what the cache would not store anyway (beyond its max_entry, and
// event streams: those are answered X-Cache: BYPASS); elsewhere every large or
// open-ended answer.
func streamRuleOf(rt *route) streamRule {
	switch {
	case rt.idem != nil:
		return streamRule{}
	case rt.cache != nil:
		return streamRule{above: int64(rt.cache.maxEntry)}
	}
	return streamRule{above: streamAbove, chunked: true}
}

// streamable reports whether the body after this head is streamed under r.
func (r streamRule) streamable(resp *fasthttp.Response) bool {
	if r.above == 0 || noBody(resp) {
		return false
	}
	cl := resp.Header.ContentLength()
	return int64(cl) > r.above || cl < 0 && r.chunked || bytes.HasPrefix(resp.Header.ContentType(), strEventStream)
}

// startStream makes resp's body a stream reading the rest of the answer from br.
// release gives the connection back (reuse true: the body was read to its end and the
// connection may serve again) or closes it; it is called once, when the client's
// server closes the stream (after writing it, or on any failure).
func startStream(resp *fasthttp.Response, br *bufio.Reader, conn net.Conn, idle time.Duration, release func(reuse bool)) {
	b := &upstreamBody{br: br, conn: conn, idle: idle, release: release}
	cl := resp.Header.ContentLength()
	switch {
	case cl >= 0:
		b.r, b.left = br, int64(cl)
	case cl == -1:
		b.r, b.chunked = httputil.NewChunkedReader(br), true
	default: // until the upstream closes: never reusable
		b.r, b.closeDelimited = br, true
		cl = -1
	}
	resp.SetBodyStream(b, cl)
}

// upstreamBody is a response body read from its upstream connection as the client
// takes it.
type upstreamBody struct {
	r              io.Reader
	br             *bufio.Reader
	conn           net.Conn
	idle           time.Duration
	left           int64 // bytes of a Content-Length body still to come
	chunked        bool
	closeDelimited bool
	done           bool // read to its end, cleanly
	release        func(reuse bool)
}

var errShortBody = errors.New("upstream closed before the end of the body")

func (b *upstreamBody) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	if !b.chunked && !b.closeDelimited {
		if b.left == 0 {
			b.done = true
			return 0, io.EOF
		}
		if int64(len(p)) > b.left {
			p = p[:b.left]
		}
	}
	b.conn.SetReadDeadline(time.Now().Add(b.idle))
	n, err := b.r.Read(p)
	b.left -= int64(n)
	switch {
	case err == io.EOF && b.chunked:
		err = skipTrailers(b.br)
		if err == nil {
			b.done, err = true, io.EOF
		}
	case err == io.EOF && b.closeDelimited:
		b.done = false // the connection is gone; the body ended as it should
	case err == io.EOF:
		err = errShortBody
	case err == nil && !b.chunked && !b.closeDelimited && b.left == 0:
		b.done = true
	}
	return n, err
}

// Close gives the connection back (or closes it); fasthttp's server calls it once the
// body is written or the write failed.
func (b *upstreamBody) Close() error {
	if b.release != nil {
		b.release(b.done)
		b.release = nil
	}
	return nil
}

var errTrailers = errors.New("upstream chunked trailers too long")

// skipTrailers reads what follows the last chunk, trailer lines up to the empty line.
func skipTrailers(br *bufio.Reader) error {
	for range 64 {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			return nil
		}
	}
	return errTrailers
}
