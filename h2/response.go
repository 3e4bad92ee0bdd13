package h2

import (
	"bytes"
	"io"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/net/http2"
)

// worker runs the handler of st, then of the streams handed to it while it idles; it ends
// when too many workers idle or the connection is done.
func (c *conn) worker(st *stream) {
	defer c.wg.Done()
	for {
		c.serveStream(st)
		if c.idleWorkers.Add(1) > maxIdleWorkers {
			c.idleWorkers.Add(-1)
			return
		}
		select {
		case st = <-c.work:
			c.idleWorkers.Add(-1)
		case <-c.done:
			c.idleWorkers.Add(-1)
			return
		}
	}
}

func (c *conn) serveStream(st *stream) {
	if !st.reset.Load() { // reset before it ran: the handler is not needed
		c.srv.stats.handlerRuns.Add(1)
		c.srv.Handler(&st.ctx)
		c.respond(st)
		// A body stream is closed here whatever happened to it (sent, not wanted for
		// HEAD or 204, client reset, connection gone), and before the stream's slot is
		// released: a proxy's reader gives its upstream connection back (or closes it)
		// on Close. CloseBodyStream forgets the stream, so Reset in release does not
		// close it again; its error changes nothing, the stream is done either way.
		if st.ctx.Response.IsBodyStream() {
			st.ctx.Response.CloseBodyStream()
		}
	}
	// The answer is done (and a proxy's upstream exchange, closed with the response's
	// body stream above, let go of the request): a streamed request body ends here.
	c.mu.Lock()
	if b := st.body; b != nil && b.tunnel && st.ended.Load() && !st.reset.Load() {
		// A tunnel's answer that ended cleanly only half-closed it (RFC 8441 §4, as a TCP
		// FIN): the client's bytes go on flowing until its END_STREAM was read, or the
		// body fails or is closed (the handler's end of the tunnel), a reset included.
		for b.err == nil && !b.drained {
			b.cond.Wait()
		}
	}
	rst, byUs := false, false
	var incr int64
	if st.body != nil {
		byUs = !st.body.eof // DATA still in flight is dropped quietly
		rst = c.endBodyLocked(st)
		incr = c.grantLocked()
	}
	closeNow := c.removeLocked(st, byUs)
	c.mu.Unlock()
	if rst {
		id := st.id
		c.write(func() error { return c.fr.WriteRSTStream(id, http2.ErrCodeNo) })
	}
	c.sendConnWindow(incr)
	release(st)
	if closeNow {
		c.beginClose(nil)
	}
}

// SkipResponseHeader reports the response header names (lowercase) h2 does not
// forward, in the header section or as trailers: connection-specific ones (RFC 9113
// §8.2.2, the same list in RFC 9114 §4.2 for HTTP/3, so package h3 uses it too),
// content-length (recomputed) and trailer (HTTP/2 and HTTP/3 need no announcement of
// trailers; fasthttp's Trailer header only serves HTTP/1.1's chunked encoding).
func SkipResponseHeader(name []byte) bool {
	switch string(name) {
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade",
		"content-length", "trailer", "te":
		return true
	}
	return false
}

// ResponseFieldName lowercases the response field name k into buf (reused) and reports
// whether an HTTP/2 or HTTP/3 answer carries the field: not a connection-specific one
// (SkipResponseHeader), nor content-type on an interim answer (a 1xx has no content, and
// fasthttp's header reports a default type).
func ResponseFieldName(buf, k []byte, interim bool) ([]byte, bool) {
	buf = append(buf[:0], k...)
	for i, ch := range buf {
		if 'A' <= ch && ch <= 'Z' {
			buf[i] = ch + 'a' - 'A'
		}
	}
	return buf, !SkipResponseHeader(buf) && !(interim && string(buf) == "content-type")
}

// What appendFields encodes a header for.
const (
	fieldsFinal    = iota // a final answer
	fieldsStreamed        // a final answer with a streamed body: names sent are kept in st.sent
	fieldsInterim         // a 1xx: no content-type either (fasthttp's header has a default one)
)

// appendFields appends the encoded fields of h, lowercased, minus the ones h2 never
// forwards, and reports whether Date was among them. For fieldsStreamed each name sent
// is also kept in st.sent (a streamed answer's trailers must not repeat them).
func (st *stream) appendFields(b []byte, h *fasthttp.ResponseHeader, mode int) (_ []byte, date bool) {
	for k, v := range h.All() {
		var keep bool
		if st.lower, keep = ResponseFieldName(st.lower, k, mode == fieldsInterim); !keep {
			continue
		}
		if string(st.lower) == "date" {
			date = true
		}
		if mode == fieldsStreamed {
			st.sent = append(append(st.sent, st.lower...), 0)
		}
		b = appendField(b, st.lower, v)
	}
	return b, date
}

// respond translates ctx.Response into HEADERS and DATA frames.
func (c *conn) respond(st *stream) {
	if st.reset.Load() {
		return
	}
	resp := &st.ctx.Response
	status := resp.StatusCode()
	noBody := st.ctx.IsHead() || status == 204 || status == 304 || status < 200 || resp.SkipBody
	streamed := !noBody && resp.IsBodyStream()
	var body []byte
	if !noBody && !streamed {
		body = resp.Body()
	}

	st.sent = st.sent[:0]
	mode := fieldsFinal
	if streamed {
		mode = fieldsStreamed
	}
	b, date := st.appendFields(appendStatus(st.hdr[:0], status), &resp.Header, mode)
	switch {
	case status == 204 || status == 304 || status < 200:
	case streamed || (noBody && resp.IsBodyStream()):
		if cl := resp.Header.ContentLength(); cl >= 0 {
			b = appendContentLength(b, int64(cl))
		}
	case noBody: // HEAD: the length a GET would get
		if n := len(resp.Body()); n > 0 {
			b = appendContentLength(b, int64(n))
		} else if cl := resp.Header.ContentLength(); cl >= 0 {
			b = appendContentLength(b, int64(cl))
		}
	default:
		b = appendContentLength(b, int64(len(body)))
	}
	if !date {
		b = appendDate(b)
	}
	st.hdr = b
	// Declared trailers (AddTrailer) follow a buffered body in a HEADERS frame of their
	// own; a body stream's are looked at when it ended (see sendStream).
	trailers := !noBody && !streamed && hasTrailers(&resp.Header)
	endOnHeaders := noBody || (!streamed && len(body) == 0 && !trailers) || (streamed && resp.Header.ContentLength() == 0)
	if endOnHeaders {
		st.ended.Store(true)
	}
	if !c.writeHeaders(st.id, b, endOnHeaders) {
		return
	}
	st.answered.Store(true)
	switch {
	case endOnHeaders:
	case streamed:
		c.sendStream(st, resp.BodyStream(), int64(resp.Header.ContentLength()))
	case trailers:
		if c.sendData(st, body, false) {
			c.sendTrailers(st)
		}
	default:
		c.sendData(st, body, true)
	}
}

// sendTrailers ends the stream with the response's trailers: a HEADERS frame with
// END_STREAM carrying the values of the names declared with AddTrailer (lowercase,
// without connection-specific ones), or an empty DATA frame with END_STREAM when no
// declared name got a value.
func (c *conn) sendTrailers(st *stream) bool {
	b := c.appendTrailers(st, st.hdr[:0])
	st.hdr = b
	if len(b) == 0 {
		return c.sendData(st, nil, true)
	}
	st.ended.Store(true)
	return c.writeHeaders(st.id, b, true)
}

// hasTrailers reports whether a name declared as a trailer has a value.
func hasTrailers(h *fasthttp.ResponseHeader) bool {
	return len(h.PeekTrailerKeys()) > 0 && len(h.TrailerHeader()) > len(strCRLF)
}

// appendTrailers appends the encoded trailer fields of st's response to dst. fasthttp
// keeps the values set under a declared name apart, in its trailer section, and gives
// them back only as that section's HTTP/1.1 text ("Name: value\r\n" per value, CR and
// LF in values already replaced): that text is what is read here, so h2 sends exactly
// what fasthttp's HTTP/1.1 server would.
func (c *conn) appendTrailers(st *stream, dst []byte) []byte {
	h := &st.ctx.Response.Header
	if len(h.PeekTrailerKeys()) == 0 {
		return dst
	}
	sec := h.TrailerHeader()
	all := sec
	for len(sec) > 0 {
		before := all[:len(all)-len(sec)]
		var line []byte
		line, sec, _ = bytes.Cut(sec, strCRLF)
		name, value, ok := bytes.Cut(line, strColonSpace)
		if !ok || len(name) == 0 {
			continue // the empty line ending the section
		}
		st.lower = append(st.lower[:0], name...)
		for i, ch := range st.lower {
			if 'A' <= ch && ch <= 'Z' {
				st.lower[i] = ch + 'a' - 'A'
			}
		}
		if SkipResponseHeader(st.lower) || !validName(b2s(st.lower)) || !validValue(b2s(value)) {
			continue // pseudo-headers included: ':' is not a token byte
		}
		if migrated(st.sent, st.lower, before) {
			continue
		}
		dst = appendField(dst, st.lower, value)
	}
	return dst
}

// migrated reports whether the trailer value of name about to be sent is one that was
// sent in the header section already. fasthttp moves the values a header has to its
// trailer section when the name is announced as a trailer; its HTTP/1.1 server does not
// once the header block is out, but h2 cannot tell it so. A proxy announcing a trailer
// after it sent a header of the same name (h2up at the end of a body stream: gRPC's
// x-chat: open in the headers, x-chat: closed in the trailers) then finds the header's
// values at the front of the trailer's: the first k values of a name, k being how many
// the header block carried (sent: the lowercase names it carried, each ended by a 0),
// are those. before is the trailer section up to the value in question.
func migrated(sent, name, before []byte) bool {
	k := 0
	for rest := sent; len(rest) > 0; {
		i := bytes.IndexByte(rest, 0)
		if string(rest[:i]) == string(name) {
			k++
		}
		rest = rest[i+1:]
	}
	if k == 0 {
		return false
	}
	for len(before) > 0 && k > 0 {
		var line []byte
		line, before, _ = bytes.Cut(before, strCRLF)
		if n, _, ok := bytes.Cut(line, strColonSpace); ok && len(n) == len(name) && equalLower(n, name) {
			k--
		}
	}
	return k > 0
}

// equalLower reports whether a equals lower, which is lowercase, ignoring a's case.
func equalLower(a, lower []byte) bool {
	for i := range a {
		c := a[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

var (
	strCRLF       = []byte("\r\n")
	strColonSpace = []byte(": ")
)

// streamBufSize is the piece a streamed body is read in: two DATA frames of the default
// SETTINGS_MAX_FRAME_SIZE, and the only memory a streamed response costs h2.
const streamBufSize = 32 << 10

var streamBufPool = sync.Pool{New: func() any { return new([streamBufSize]byte) }}

// maxEmptyReads is how many (0, nil) reads in a row a body stream may return before it
// is taken as broken, as bufio does (io.ErrNoProgress).
const maxEmptyReads = 100

// sendStream sends the body stream r as DATA, piece by piece as Read returns it, within
// the peer's windows (a slow client slows the reads instead of growing memory), and ends
// the stream after EOF or, for a known size (size >= 0), after size bytes without
// reading further: with the trailers declared in the response, if any, which the reader
// may have filled in as it returned EOF (h2up does), else END_STREAM on the last DATA. A read error, or EOF before size bytes, resets the stream with
// INTERNAL_ERROR so the client cannot take the truncated body for a whole one. It stops
// without a further Read once the stream is reset or the connection goes; a Read already
// blocked cannot be interrupted from here and is waited for. The caller closes r.
func (c *conn) sendStream(st *stream, r io.Reader, size int64) {
	buf := streamBufPool.Get().(*[streamBufSize]byte)
	defer streamBufPool.Put(buf)
	var sent int64
	empty := 0
	for !st.reset.Load() && !c.closing.Load() {
		p := buf[:]
		if size >= 0 && size-sent < int64(len(p)) {
			p = p[:size-sent]
		}
		n, err := r.Read(p)
		if n < 0 || n > len(p) {
			n, err = 0, io.ErrShortBuffer // a broken reader; what matters is to reset
		}
		sent += int64(n)
		complete := size >= 0 && sent == size // all of a known size: no further Read
		switch {
		case complete:
		case err == io.EOF && size < 0:
		case err != nil: // a read error, or EOF before the known size
			if !st.reset.Load() { // reset already: by the peer, or with a code of ours (a body's timeout)
				c.resetStream(st.id, http2.ErrCodeInternal)
			}
			return
		case n == 0:
			if empty++; empty >= maxEmptyReads {
				c.resetStream(st.id, http2.ErrCodeInternal)
				return
			}
			continue
		}
		done := complete || err == io.EOF
		empty = 0
		// Trailers are filled in by the reader as it returns EOF (a proxy's upstream
		// sends them after its body): only now are they known.
		trailers := done && hasTrailers(&st.ctx.Response.Header)
		// sendData writes the piece now, and the write lock's holder flushes it when no
		// other writer waits: an event reaches the client as soon as it is read.
		ok := c.sendData(st, p[:n], done && !trailers)
		if ok && trailers {
			c.sendTrailers(st)
		}
		if !ok || done {
			return
		}
	}
}

// sendData writes p as DATA frames within the peer's windows and SETTINGS_MAX_FRAME_SIZE,
// blocking while a window is empty. end sets END_STREAM on the last frame (an empty one if
// p is empty). It reports false if the stream was reset or the connection is going.
func (c *conn) sendData(st *stream, p []byte, end bool) bool {
	for {
		n := 0
		if len(p) > 0 {
			c.mu.Lock()
			for !st.reset.Load() && !c.closing.Load() && (c.sendWin <= 0 || st.sendWin <= 0) {
				if st.blocked == 0 {
					st.blocked = monoNow()
					if wt := c.cfg.WriteTimeout; wt > 0 {
						c.armLocked(st.blocked, st.blocked+int64(wt))
					}
				}
				c.cond.Wait()
			}
			st.blocked = 0
			if st.reset.Load() || c.closing.Load() {
				c.mu.Unlock()
				return false
			}
			n = int(min(int64(len(p)), c.sendWin, st.sendWin, int64(c.peerFrame.Load())))
			c.sendWin -= int64(n)
			st.sendWin -= int64(n)
			c.mu.Unlock()
		}
		last := end && n == len(p)
		if last {
			st.ended.Store(true)
		}
		if n > 0 || last {
			if !c.write(func() error { return c.fr.WriteData(st.id, last, p[:n]) }) {
				return false
			}
		}
		p = p[n:]
		if len(p) == 0 {
			return true
		}
	}
}

// writeHeaders writes a header block as HEADERS and, beyond the peer's frame size,
// CONTINUATION frames, all under one hold of the write lock.
func (c *conn) writeHeaders(id uint32, block []byte, end bool) bool {
	if !c.lockWrite() {
		return false
	}
	max := int(c.peerFrame.Load())
	first := block
	if len(first) > max {
		first = first[:max]
	}
	rest := block[len(first):]
	err := c.fr.WriteHeaders(http2.HeadersFrameParam{
		StreamID:      id,
		BlockFragment: first,
		EndStream:     end,
		EndHeaders:    len(rest) == 0,
	})
	for err == nil && len(rest) > 0 {
		frag := rest
		if len(frag) > max {
			frag = frag[:max]
		}
		rest = rest[len(frag):]
		err = c.fr.WriteContinuation(id, len(rest) == 0, frag)
	}
	c.unlockWrite(err)
	return err == nil
}

// writeAnswer writes one of h2's own small JSON answers: HEADERS then one DATA frame.
func (c *conn) writeAnswer(id uint32, status int, body string) {
	if !c.lockWrite() {
		return
	}
	b := appendStatus(c.ebuf[:0], status)
	b = appendIndexedNameField(b, idxContentType, strJSON)
	b = appendContentLength(b, int64(len(body)))
	b = appendDate(b)
	c.ebuf = b
	err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: b, EndHeaders: true})
	if err == nil {
		c.ebuf = append(c.ebuf[:0], body...)
		err = c.fr.WriteData(id, true, c.ebuf)
	}
	c.unlockWrite(err)
}

var strJSON = []byte("application/json")

// pingData is the opaque data of our PINGs; an ACK carrying it answers ours.
var pingData = [8]byte{'e', 'd', 'g', 'e', '-', 'h', '2', 'p'}

// armLocked makes the timer fire no later than at. Called with mu held.
func (c *conn) armLocked(now, at int64) {
	if at < c.timerAt && c.timer != nil && !c.dead {
		c.timerAt = at
		c.timer.Reset(time.Duration(at - now))
	}
}

// nextIdleLocked is when an idle connection times out.
func (c *conn) nextIdleLocked() int64 {
	if it := c.cfg.IdleTimeout; it > 0 {
		return c.idleSince + int64(it)
	}
	return never
}

// onTimer enforces ReadTimeout per stream, the flow-control stall bound, IdleTimeout and
// the PINGs. It runs on the timer's goroutine and re-arms the timer for the next deadline.
func (c *conn) onTimer() {
	cfg := c.cfg
	now := monoNow()
	var (
		timedOut     uint32
		stalled      bool
		idle         bool
		ping         bool
		pingTimeout  bool
		closeNow     bool
		incr         int64
		bodyTimedOut []uint32 // rarely more than one; allocates only then
	)
	c.mu.Lock()
	if c.dead || c.closing.Load() {
		c.mu.Unlock()
		return
	}
	// Counted with the workers, so ServeConn does not return while this runs.
	c.wg.Add(1)
	defer c.wg.Done()
	next := never
	for _, st := range c.streams {
		if b := st.body; b != nil && b.deadline > 0 {
			if b.deadline <= now {
				// A streamed body quiet for ReadTimeout: its reader gets an error, the
				// stream is reset; its handler and answer end as they will.
				c.abortLocked(st, ErrBodyTimeout)
				bodyTimedOut = append(bodyTimedOut, st.id)
			} else {
				next = min(next, b.deadline)
			}
		}
		if st.state == stOpen && st.deadline > 0 {
			if st.deadline <= now && timedOut == 0 {
				timedOut = st.id
				st.state = stAbandoned
				st.reset.Store(true)
			} else {
				next = min(next, st.deadline)
			}
		}
		if st.blocked > 0 && cfg.WriteTimeout > 0 {
			if d := st.blocked + int64(cfg.WriteTimeout); d <= now {
				stalled = true
			} else {
				next = min(next, d)
			}
		}
	}
	if timedOut != 0 {
		st := c.findLocked(timedOut)
		closeNow = c.removeLocked(st, true)
		next = now // look again for more
	}
	incr = c.grantLocked() // bodies dropped no longer hold the budget: the others may go on
	if len(c.streams) == 0 {
		if d := c.nextIdleLocked(); d <= now && !c.goingAway {
			idle = true
		} else {
			next = min(next, d)
		}
	} else if cfg.PingInterval > 0 {
		if c.pingAt > 0 {
			if d := c.pingAt + int64(cfg.PingTimeout); d <= now {
				pingTimeout = true
			} else {
				next = min(next, d)
			}
		} else if d := c.lastRead.Load() + int64(cfg.PingInterval); d <= now {
			ping = true
			c.pingAt = now
			next = min(next, now+int64(cfg.PingTimeout))
		} else {
			next = min(next, d)
		}
	}
	c.timerAt = next
	if next < never {
		c.timer.Reset(time.Duration(max(next-now, int64(time.Millisecond))))
	}
	c.mu.Unlock()

	switch {
	case stalled:
		c.closeNow(ErrTimeout)
	case pingTimeout:
		c.goAway(http2.ErrCodeNo, ReasonPingTimeout)
		c.beginClose(ErrTimeout)
	case idle:
		c.goAway(http2.ErrCodeNo, ReasonIdle)
	}
	if ping {
		c.write(func() error { return c.fr.WritePing(false, pingData) })
	}
	for _, id := range bodyTimedOut {
		c.write(func() error { return c.fr.WriteRSTStream(id, http2.ErrCodeCancel) })
	}
	if timedOut == 0 {
		c.sendConnWindow(incr)
	}
	if timedOut != 0 {
		c.writeAnswer(timedOut, 408, bodyTimeout)
		c.sendConnWindow(incr)
		c.write(func() error { return c.fr.WriteRSTStream(timedOut, http2.ErrCodeNo) })
		c.goAway(http2.ErrCodeNo, ReasonBodyTimeout)
		if closeNow {
			c.beginClose(nil)
		}
	}
}
