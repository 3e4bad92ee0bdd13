package h2

import (
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
)

// Errors a streamed request body's Read returns instead of io.EOF (see
// Config.StreamRequest). A proxy gives up the request upstream on any of them.
var (
	// ErrBodyReset: the client reset the stream (RST_STREAM), or h2 did (a malformed
	// body: more or less DATA than content-length, flow control broken; or the answer
	// failed).
	ErrBodyReset = errors.New("h2: request body: stream reset")
	// ErrBodyTimeout: no DATA arrived within ReadTimeout; the stream was reset with CANCEL.
	ErrBodyTimeout = errors.New("h2: request body: no data within ReadTimeout")
	// ErrBodyConnClosed: the connection ended before the body did.
	ErrBodyConnClosed = errors.New("h2: request body: connection closed")
	// ErrBodyClosed: the body was closed (by its reader, or by h2 once the stream was
	// done: the answer was sent, and a body not complete by then was abandoned with
	// RST_STREAM(NO_ERROR)).
	ErrBodyClosed = errors.New("h2: request body: closed")
)

// chunkSize is the piece a streamed request body is buffered in: pooled, so that what a
// stream holds is what it has received and not yet read, rounded up to two chunks.
const chunkSize = 16 << 10

var chunkPool = sync.Pool{New: func() any { return new([chunkSize]byte) }}

// reqBody is the body stream of a streamed request: ctx.Request's body stream, fed by
// the connection's reader with the DATA received and read by the handler (or whatever
// it handed the body to, such as a proxy's upstream writer) as it wants, while the
// answer is sent: both directions live at once.
//
// It is allocated per streamed request and never reused, and it refers to the
// connection only, never to the pooled stream or ctx: a Read that comes late (after the
// stream is done and its ctx pooled again) returns ErrBodyClosed and touches nothing of
// another request.
//
// Flow control follows the reads: the stream's and the connection's windows are
// returned as the data is read, not as it arrives, so a slow reader paces the client and
// a stream holds at most one stream window of unread data (see the package doc, Memory).
type reqBody struct {
	c    *conn
	id   uint32
	cond sync.Cond // L is &c.mu: data arrived, or the body ended or failed

	// Under c.mu.
	chunks   []*[chunkSize]byte
	r, w     int   // read offset in chunks[0], write offset in the last chunk
	unread   int64 // bytes received and not read
	recvWin  int64 // the stream's receive window left
	unacked  int64 // read (or padding), not yet returned to the stream's window
	half     int64 // unacked is returned once it reaches this: half the stream window
	received int64 // body bytes received
	cl       int64 // declared content-length, -1 if none
	deadline int64 // ReadTimeout as an idle limit: when the next DATA is due; 0: none
	// idle is the longest wait for the next DATA (nanoseconds; 0: none): ReadTimeout, or
	// none for an extended CONNECT (its bytes may pause as long as the tunnel allows, the
	// handler's own idle limit), or what the handler set (Body.SetIdleTimeout).
	idle int64
	// tunnel is set for an extended CONNECT: the stream outlives its answer until the
	// body is drained (see serveStream).
	tunnel  bool
	drained bool  // Read returned io.EOF
	eof     bool  // END_STREAM received: no more data comes
	err     error // the body failed or was closed: Read returns it
	done    bool  // the stream is over: no WINDOW_UPDATE for it any more

	handle Body // the request's body stream
}

func newReqBody(c *conn, st *stream) *reqBody {
	b := &reqBody{c: c, id: st.id, recvWin: st.recvWin, half: max(st.recvWin/2, 1), cl: st.cl}
	b.cond.L = &c.mu
	return b
}

// Read returns what was received and not read yet, waiting for DATA if there is none;
// io.EOF once END_STREAM came and everything was read; or one of the ErrBody errors. It
// returns the stream's and the connection's windows for what it read. Safe to call
// concurrently with Close, and from any goroutine.
func (b *reqBody) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c := b.c
	c.mu.Lock()
	for b.unread == 0 && b.err == nil && !b.eof {
		b.cond.Wait()
	}
	if b.err != nil {
		c.mu.Unlock()
		return 0, b.err
	}
	if b.unread == 0 {
		if !b.drained {
			b.drained = true
			b.cond.Broadcast() // a tunnel's worker waits for it (serveStream)
		}
		c.mu.Unlock()
		return 0, io.EOF
	}
	n := b.take(p)
	c.recvUnacked += int64(n)
	connIncr := c.grantLocked()
	var incr int64
	if !b.eof && !b.done {
		b.unacked += int64(n)
		if b.unacked >= b.half {
			incr = b.unacked
			b.unacked = 0
			b.recvWin += incr
		}
	}
	c.mu.Unlock()
	if incr > 0 {
		id := b.id
		c.write(func() error { return c.fr.WriteWindowUpdate(id, uint32(incr)) })
	}
	c.sendConnWindow(connIncr)
	return n, nil
}

// Close discards what was not read (returning its connection window) and makes later
// Reads fail with ErrBodyClosed, waking a blocked one. The stream itself goes on: DATA
// still arriving is dropped. Safe to call more than once and from any goroutine.
func (b *reqBody) Close() error {
	c := b.c
	c.mu.Lock()
	b.failLocked(ErrBodyClosed)
	incr := c.grantLocked()
	c.mu.Unlock()
	c.sendConnWindow(incr)
	return nil
}

// take copies unread data into p. Called with c.mu held.
func (b *reqBody) take(p []byte) int {
	n := 0
	for n < len(p) && b.unread > 0 {
		end := chunkSize
		if len(b.chunks) == 1 {
			end = b.w
		}
		k := copy(p[n:], b.chunks[0][b.r:end])
		n += k
		b.r += k
		b.unread -= int64(k)
		if b.r == end {
			b.popChunk()
		}
	}
	return n
}

// popChunk returns the first chunk to the pool.
func (b *reqBody) popChunk() {
	chunkPool.Put(b.chunks[0])
	copy(b.chunks, b.chunks[1:])
	b.chunks[len(b.chunks)-1] = nil
	b.chunks = b.chunks[:len(b.chunks)-1]
	b.r = 0
	if len(b.chunks) == 0 {
		b.w = 0
	}
}

// put appends received data. Called with c.mu held.
func (b *reqBody) put(p []byte) {
	for len(p) > 0 {
		if len(b.chunks) == 0 || b.w == chunkSize {
			b.chunks = append(b.chunks, chunkPool.Get().(*[chunkSize]byte))
			b.w = 0
		}
		k := copy(b.chunks[len(b.chunks)-1][b.w:], p)
		b.w += k
		p = p[k:]
		b.unread += int64(k)
	}
	b.cond.Broadcast()
}

// failLocked ends the body with err (the first error stays): what was not read is
// dropped and its connection window becomes returnable (the caller sends it with
// grantLocked), and Reads, blocked ones included, return the error. Called with c.mu
// held.
func (b *reqBody) failLocked(err error) {
	if b.err == nil {
		b.err = err
	}
	b.c.recvUnacked += b.unread
	b.unread = 0
	for len(b.chunks) > 0 {
		b.popChunk()
	}
	b.deadline = 0
	b.cond.Broadcast()
}

// bodyData handles a DATA frame of n bytes (data is its payload without padding) on a
// stream whose body streams to its handler; mu is held and the connection window was
// already charged. It reports whether to reset the stream, and with which code.
func (c *conn) bodyData(st *stream, n int64, data []byte, end bool) (code http2.ErrCode, reset bool) {
	b := st.body
	switch {
	case b.eof: // DATA after END_STREAM
		c.recvUnacked += n
		c.abortLocked(st, ErrBodyReset)
		return http2.ErrCodeStreamClosed, true
	case b.err != nil: // given up (closed, reset, timed out): dropped
		c.recvUnacked += n
		b.eof = b.eof || end
		return 0, false
	case n > b.recvWin:
		c.recvUnacked += n
		c.abortLocked(st, ErrBodyReset)
		return http2.ErrCodeFlowControl, true
	}
	b.recvWin -= n
	pad := n - int64(len(data))
	c.recvUnacked += pad // padding is never read: returned at once
	b.unacked += pad
	b.received += int64(len(data))
	if b.cl >= 0 && (b.received > b.cl || (end && b.received != b.cl)) {
		c.recvUnacked += int64(len(data))
		c.abortLocked(st, ErrBodyReset)
		return http2.ErrCodeProtocol, true
	}
	if len(data) > 0 {
		b.put(data)
	}
	if end {
		b.eof = true
		b.deadline = 0
		b.cond.Broadcast()
	} else {
		b.armLocked()
	}
	return 0, false
}

// bodyTrailers handles the trailers (a HEADERS frame after DATA) of stream id whose body
// streams to its handler: well-formed ones end the body like END_STREAM and are dropped
// (gRPC clients send none; nothing forwards request trailers); malformed ones reset the
// stream. The stream is looked up again: its worker may have finished it meanwhile.
func (c *conn) bodyTrailers(id uint32, ok bool) {
	c.mu.Lock()
	st := c.findLocked(id)
	if st == nil || st.body == nil || st.body.eof {
		c.mu.Unlock()
		return
	}
	b := st.body
	if ok && b.err == nil && b.cl >= 0 && b.received != b.cl {
		ok = false
	}
	if !ok {
		c.abortLocked(st, ErrBodyReset)
		incr := c.grantLocked()
		c.mu.Unlock()
		c.sendConnWindow(incr)
		c.write(func() error { return c.fr.WriteRSTStream(id, http2.ErrCodeProtocol) })
		return
	}
	b.eof = true
	b.deadline = 0
	b.cond.Broadcast()
	c.mu.Unlock()
}

// abortLocked marks st's answer as unwanted and fails its streamed body, if any, with
// err. Called with mu held; the caller returns the connection window freed (grantLocked)
// if it can write.
func (c *conn) abortLocked(st *stream, err error) {
	st.reset.Store(true)
	if st.body != nil {
		st.body.failLocked(err)
	}
	c.cond.Broadcast()
}

// startStreamed hands a request whose body is to be streamed (Config.StreamRequest, or a
// tunnel: an extended CONNECT) to a worker at once, its body stream fed by the reader
// from now on.
func (c *conn) startStreamed(st *stream, tunnel bool) {
	b := newReqBody(c, st)
	b.tunnel = tunnel
	if !tunnel {
		b.idle = int64(c.cfg.ReadTimeout)
	}
	size := -1
	if st.cl >= 0 {
		size = int(min(st.cl, int64(maxInt)))
	}
	b.handle.b = b
	st.ctx.Request.SetBodyStream(&b.handle, size)
	c.mu.Lock()
	if !runLocked(st) {
		c.mu.Unlock()
		return
	}
	st.body = b
	b.armLocked()
	c.mu.Unlock()
	c.dispatch(st)
}

const maxInt = int(^uint(0) >> 1)

// armLocked sets when the next DATA is due, from now. Called with c.mu held.
func (b *reqBody) armLocked() {
	if b.idle <= 0 || b.eof || b.err != nil {
		b.deadline = 0
		return
	}
	now := monoNow()
	b.deadline = now + b.idle
	b.c.armLocked(now, b.deadline)
}

// Body is the body stream of a streamed request (ctx.Request.BodyStream()): Read and
// Close as described for Config.StreamRequest.
type Body struct {
	b        *reqBody
	detached atomic.Bool
}

// Read reads the body.
func (h *Body) Read(p []byte) (int, error) { return h.b.Read(p) }

// Close discards what was not read and makes later Reads fail with ErrBodyClosed, unless
// the handle was detached.
func (h *Body) Close() error {
	if h.detached.Load() {
		return nil
	}
	return h.b.Close()
}

// SetIdleTimeout replaces the body's idle limit (ReadTimeout, for a request that is not
// a tunnel) with d, from now: the longest wait for the next DATA frame, after which Read
// fails with ErrBodyTimeout and the stream is reset. d ≤ 0: no limit (the handler bounds
// the request some other way, such as a deadline of its own).
func (h *Body) SetIdleTimeout(d time.Duration) {
	c := h.b.c
	c.mu.Lock()
	h.b.idle = int64(max(d, 0))
	h.b.armLocked()
	c.mu.Unlock()
}

// Detach returns a new handle on the same body and makes this one's Close do nothing.
// A handler that replaces the request's body stream with a reader of its own built on
// this one (fasthttp's SetBodyStream closes the stream it replaces) detaches it first.
func (h *Body) Detach() io.ReadCloser {
	h.detached.Store(true)
	return &Body{b: h.b}
}

// endBody finishes the streamed body of st once its answer is done: a body not complete
// by then is abandoned with RST_STREAM(NO_ERROR) (RFC 9113 §8.1), unless the stream was
// reset already; either way it is closed, so a late Read touches nothing of the pooled
// stream. Called with mu held; it reports whether to send the RST_STREAM.
func (c *conn) endBodyLocked(st *stream) (rst bool) {
	b := st.body
	rst = !b.eof && !st.reset.Load()
	b.done = true
	b.failLocked(ErrBodyClosed)
	st.body = nil
	return rst
}
