package h3

import (
	"bufio"
	"errors"
	"io"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/edge-gw/edge/h2"
	"github.com/quic-go/quic-go"
	"github.com/valyala/fasthttp"
)

// exchange is the pooled state of one request stream: the ctx handed to the handler and
// the buffers that fill and answer it. Nothing of it is kept once the request is
// answered.
type exchange struct {
	ctx           fasthttp.RequestCtx
	addr          streamConn // what ctx.Conn() is
	local, remote net.TCPAddr
	br            *bufio.Reader // the request stream
	block         []byte        // a HEADERS frame's payload
	buf           []byte        // the request body; a streamed answer's pieces
	out           []byte        // the answer's frames
	name          []byte
	idle          time.Duration // the connection's idle timeout: each read and write's bound
	streamed      bool          // the request's body is to be streamed (reqbody.go)
	dec           fieldDecoder
	f             fields
}

var exchangePool = sync.Pool{New: func() any {
	return &exchange{br: bufio.NewReaderSize(nil, 4<<10)}
}}

// bigBuffer: buffers grown past it are dropped rather than pooled.
const bigBuffer = 64 << 10

// smallBody: an answer body up to this size is copied behind its HEADERS frame and sent
// in one write; a larger one is written as it is.
const smallBody = 16 << 10

func release(x *exchange) {
	x.ctx.Request.Reset()
	x.ctx.Response.Reset()
	x.addr, x.local, x.remote = streamConn{}, net.TCPAddr{}, net.TCPAddr{}
	x.br.Reset(nil)
	for _, b := range []*[]byte{&x.block, &x.buf, &x.out, &x.dec.scratch} {
		if cap(*b) > bigBuffer {
			*b = nil
		}
	}
	exchangePool.Put(x)
}

// safeMethod reports the methods RFC 9110 §9.2.1 calls safe: those a replayed 0-RTT
// request may run.
func safeMethod(m []byte) bool {
	switch string(m) {
	case fasthttp.MethodGet, fasthttp.MethodHead, fasthttp.MethodOptions, fasthttp.MethodTrace:
		return true
	}
	return false
}

const (
	bodyTooLarge       = `{"error":"body_too_large"}`
	bodyHeaderTooLarge = `{"error":"header_too_large"}`
	bodyTooEarly       = `{"error":"too_early"}`
	bodyMethod         = `{"error":"method_not_allowed"}`
)

// job is one request stream handed to a worker.
type job struct {
	c   *conn
	str *quic.Stream
}

var jobPool = sync.Pool{New: func() any { return new(job) }}

// maxIdleWorkers bounds the workers kept waiting for the next request.
const maxIdleWorkers = 64

// dispatch serves str on a worker goroutine kept from one request to the next, or a
// new one. Each request runs on a goroutine of its own (its handler may block on the
// upstream); a fresh goroutine's stack grew by copying on every request through the
// reads, fasthttp and the funnel, while a worker has grown it once. Measured: about 14%
// of edge's CPU under HTTP/3 load without them.
func (s *Server) dispatch(c *conn, str *quic.Stream) {
	j := jobPool.Get().(*job)
	j.c, j.str = c, str
	select {
	case s.work <- j:
	default:
		go s.worker(j)
	}
}

// workerReserve is the stack a worker keeps in use while it idles. The garbage
// collector halves the stack of a goroutine using under a quarter of it, and a worker
// waiting for work uses almost none: without the reserve, every collection (several a
// second under load) undid what the last requests grew, and the next ones copied the
// stack again. A request's stack up to 4×workerReserve is kept.
const workerReserve = 8 << 10

// worker serves j, then the jobs handed to it while it idles; it ends when more than
// maxIdleWorkers idle or the server shuts down. Its frame holds workerReserve bytes
// below which it waits (see workerReserve).
func (s *Server) worker(j *job) {
	var reserve [workerReserve]byte
	keepOnStack(&reserve)
	s.workLoop(j)
}

// keepOnStack makes the compiler keep *b in its caller's frame: b does not escape.
//
//go:noinline
func keepOnStack(b *[workerReserve]byte) { b[0] = 1 }

func (s *Server) workLoop(j *job) {
	for {
		s.runJob(j)
		if s.idle.Add(1) > maxIdleWorkers {
			s.idle.Add(-1)
			return
		}
		select {
		case j = <-s.work:
			s.idle.Add(-1)
		case <-s.quit:
			s.idle.Add(-1)
			return
		}
	}
}

// runJob serves one request stream. A panic in the handler resets the stream (the
// client sees an error, never a truncated answer taken for a whole one) and is logged;
// the worker goes on.
func (s *Server) runJob(j *job) {
	c, str := j.c, j.str
	*j = job{}
	jobPool.Put(j)
	defer func() {
		if p := recover(); p != nil {
			str.CancelRead(errInternal)
			str.CancelWrite(errInternal)
			if p != errAbort && s.logger != nil {
				s.logger.Printf("h3: panic serving a request: %v", p)
			}
		}
		c.done()
	}()
	s.serve(c, str)
}

// errAbort ends a request whose answer cannot be completed (a body stream failed).
var errAbort = errors.New("h3: answer aborted")

// serve reads one request off str, runs it through the handler and writes the answer.
func (s *Server) serve(c *conn, str *quic.Stream) {
	cfg := s.cfg.Load()
	x := exchangePool.Get().(*exchange)
	defer release(x)
	// fasthttp (RemoteIP) and the funnel read client addresses as *net.TCPAddr only.
	x.local, x.remote = tcpAddr(c.qc.LocalAddr()), tcpAddr(c.qc.RemoteAddr())
	x.addr = streamConn{AddrConn: h2.AddrConn{Local: &x.local, Remote: &x.remote}, str: str, x: x}
	ctx := &x.ctx
	ctx.Init2(&x.addr, s.logger, false)
	x.br.Reset(str)
	x.buf = x.buf[:0]
	x.streamed = false
	// A request must arrive whole, and its answer be taken, within the idle timeout: a
	// client keeping its connection alive with pings cannot hold a worker with a stream
	// it never finishes, nor one whose answer it never reads.
	x.idle = c.idleAfter
	str.SetReadDeadline(ctx.Time().Add(x.idle))
	str.SetWriteDeadline(ctx.Time().Add(x.idle))
	status, code := s.readRequest(c, x, cfg)
	switch {
	case code != 0:
		str.CancelRead(code)
		str.CancelWrite(code)
		return
	case status != 0:
		str.CancelRead(errNoError) // the rest of the request is not needed (RFC 9114 §4.1)
		s.answer(str, x, status)
		return
	}
	req := &ctx.Request
	var body *reqBody
	if x.streamed { // the body goes with its reader; the exchange keeps a new one
		body = newReqBody(c, str, x.br, x.f.cl, x.idle, cfg.MaxHeaderBytes)
		x.br = bufio.NewReaderSize(nil, 4<<10)
		req.SetBodyStream(&Body{b: body}, int(x.f.cl))
	}
	s.stats.requests.Add(1)
	s.handler(ctx)
	str.SetWriteDeadline(time.Now().Add(x.idle))
	s.respond(str, x, req.Header.IsHead())
	if body != nil {
		body.close()
	}
}

// readRequest reads the request's frames into x.ctx.Request (RFC 9114 §4.1): HEADERS,
// DATA up to cfg.MaxBodySize, perhaps trailing HEADERS (checked, dropped); or only the
// HEADERS of a request whose body is to be streamed (x.streamed, reqbody.go). An unsafe
// request received in 0-RTT is held after its HEADERS until the handshake completes. It
// returns the status of an answer edge gives itself (405, 413, 425, 431), or the error
// code to reset the stream with; both 0 for a request to run.
func (s *Server) readRequest(c *conn, x *exchange, cfg *Config) (status int, code quic.StreamErrorCode) {
	req := &x.ctx.Request
	headers, trailers := false, false
	var body int64
	for {
		typ, n, err := readRequestFrame(c, x.br)
		if err == io.EOF {
			break
		}
		switch {
		case err == errControlFrame:
			return 0, errFrameUnexpected
		case err != nil:
			return 0, errRequestIncomplete
		}
		switch typ {
		case frameHeaders:
			if trailers {
				c.closeWith(errFrameUnexpected, "HEADERS after trailers")
				return 0, errFrameUnexpected
			}
			if n > uint64(cfg.MaxHeaderBytes) {
				if headers {
					return 0, errMessage // trailers too large
				}
				return fasthttp.StatusRequestHeaderFieldsTooLarge, 0
			}
			if cap(x.block) < int(n) {
				x.block = make([]byte, n)
			}
			x.block = x.block[:n]
			if _, err := io.ReadFull(x.br, x.block); err != nil {
				return 0, errRequestIncomplete
			}
			if headers {
				trailers = true
				if err := x.dec.decode(x.block, x.f.checkTrailer); err != nil {
					c.closeWith(errQPACKDecompression, "")
					return 0, errQPACKDecompression
				}
				if x.f.bad {
					return 0, errMessage
				}
				continue
			}
			headers = true
			x.f.reset(&req.Header)
			if err := x.dec.decode(x.block, x.f.add); err != nil {
				c.closeWith(errQPACKDecompression, "") // RFC 9204 §2.2.3: a connection error
				return 0, errQPACKDecompression
			}
			if status, code := x.f.finish(cfg); status != 0 || code != 0 {
				return status, code
			}
			// Received in 0-RTT: an unsafe request waits for the handshake before anything
			// more of it is read (RFC 8470 §3); a replayed one never gets further.
			if !handshakeDone(c.qc) && !safeMethod(req.Header.Method()) && !s.holdEarly(c.qc, x.addr.str, cfg.HandshakeTimeout) {
				return statusTooEarly, 0
			}
			if streamBody(cfg, &req.Header, x.f.cl) {
				x.streamed = true
				return 0, 0
			}
			if x.f.cl > cfg.MaxBodySize {
				return fasthttp.StatusRequestEntityTooLarge, 0
			}
		case frameData:
			if !headers || trailers {
				c.closeWith(errFrameUnexpected, "DATA before HEADERS or after trailers")
				return 0, errFrameUnexpected
			}
			if body += int64(n); body > cfg.MaxBodySize {
				return fasthttp.StatusRequestEntityTooLarge, 0
			}
			start := len(x.buf)
			x.buf = slices.Grow(x.buf, int(n))[:start+int(n)]
			if _, err := io.ReadFull(x.br, x.buf[start:]); err != nil {
				return 0, errRequestIncomplete
			}
		}
	}
	if !headers {
		return 0, errRequestIncomplete
	}
	if x.f.cl >= 0 && x.f.cl != body {
		return 0, errMessage // RFC 9114 §4.1.2: a Content-Length that the body belies
	}
	if body > 0 {
		req.SetBodyRaw(x.buf)
	}
	return 0, 0
}

// errControlFrame: a frame only the control stream may carry came on a request stream;
// the connection is closed with H3_FRAME_UNEXPECTED.
var errControlFrame = errors.New("h3: a control frame on a request stream")

// readRequestFrame reads the header of the next DATA or HEADERS frame of a request
// stream, skipping frames of unknown and reserved types (RFC 9114 §9); readRequest and a
// streamed body's reader both go through it. It returns io.EOF at the stream's clean end,
// io.ErrUnexpectedEOF inside a frame, and errControlFrame (having closed the connection)
// for a frame only the control stream may carry.
func readRequestFrame(c *conn, br *bufio.Reader) (typ, n uint64, err error) {
	for {
		if typ, err = readVarint(br); err != nil {
			return 0, 0, err
		}
		if n, err = readVarint(br); err != nil {
			return 0, 0, noEOF(err)
		}
		switch typ {
		case frameData, frameHeaders:
			return typ, n, nil
		case frameCancelPush, frameSettings, framePushPromise, frameGoAway, frameMaxPushID:
			c.closeWith(errFrameUnexpected, "a control frame on a request stream")
			return 0, 0, errControlFrame
		}
		if _, err = br.Discard(int(min(n, 1<<31))); err != nil {
			return 0, 0, noEOF(err)
		}
	}
}

// holdEarly waits, for a request received before its connection's handshake
// completed, until it completes; false if it did not (the connection failed, the
// client gave up, or twice the handshake timeout passed).
func (s *Server) holdEarly(qc *quic.Conn, str *quic.Stream, timeout time.Duration) bool {
	s.stats.earlyHeld.Add(1)
	t := time.NewTimer(2 * timeout)
	defer t.Stop()
	select {
	case <-qc.HandshakeComplete():
		return true
	case <-qc.Context().Done():
	case <-str.Context().Done():
	case <-t.C:
	}
	s.stats.earlyDropped.Add(1)
	return false
}

// tcpAddr is a UDP address as the *net.TCPAddr fasthttp expects: same IP and port.
func tcpAddr(a net.Addr) net.TCPAddr {
	if u, ok := a.(*net.UDPAddr); ok {
		return net.TCPAddr{IP: u.IP, Port: u.Port, Zone: u.Zone}
	}
	return net.TCPAddr{}
}

func handshakeDone(qc *quic.Conn) bool {
	select {
	case <-qc.HandshakeComplete():
		return true
	default:
		return false
	}
}

// answer sends one of the answers h3 gives itself: a JSON error.
func (s *Server) answer(str *quic.Stream, x *exchange, status int) {
	resp := &x.ctx.Response
	resp.Reset()
	resp.SetStatusCode(status)
	resp.Header.SetContentType("application/json")
	switch status {
	case fasthttp.StatusRequestEntityTooLarge:
		resp.SetBodyString(bodyTooLarge)
	case fasthttp.StatusRequestHeaderFieldsTooLarge:
		resp.SetBodyString(bodyHeaderTooLarge)
	case statusTooEarly:
		resp.SetBodyString(bodyTooEarly)
	case fasthttp.StatusMethodNotAllowed:
		resp.SetBodyString(bodyMethod)
	}
	s.respond(str, x, false)
}

// respond writes ctx.Response as the HTTP/3 answer: HEADERS with the status, the
// fields minus the connection-specific ones (h2.SkipResponseHeader), content-length and
// date; then the body in DATA frames, buffered or read from its stream, each piece
// written as it is read; then the end of the stream.
func (s *Server) respond(str *quic.Stream, x *exchange, head bool) {
	resp := &x.ctx.Response
	status := resp.StatusCode()
	blk, hasDate := x.appendFields(appendStatus(append(x.block[:0], 0, 0), status), &resp.Header, false)
	noBody := head || status == 204 || status == 304 || status < 200 || resp.SkipBody
	streamed := resp.IsBodyStream()
	var body []byte
	if !streamed { // Body would read a stream whole
		body = resp.Body()
	}
	var num [20]byte
	switch {
	case status == 204 || status == 304 || status < 200:
	case streamed || noBody && len(body) == 0:
		if cl := resp.Header.ContentLength(); cl >= 0 {
			blk = appendField(blk, strContentLength, strconv.AppendInt(num[:0], int64(cl), 10))
		}
	default:
		blk = appendField(blk, strContentLength, strconv.AppendInt(num[:0], int64(len(body)), 10))
	}
	if !hasDate {
		blk = appendField(blk, strDate, date(time.Now()))
	}
	x.block = blk
	out := appendFrameHeader(x.out[:0], frameHeaders, uint64(len(blk)))
	out = append(out, blk...)
	switch {
	case noBody:
		x.out = out
		str.Write(out)
	case streamed:
		x.out = out
		if _, err := str.Write(out); err == nil {
			s.sendStream(str, x, resp.BodyStream())
		}
		resp.CloseBodyStream()
	case len(body) <= smallBody:
		out = appendFrameHeader(out, frameData, uint64(len(body)))
		x.out = append(out, body...)
		str.Write(x.out)
	default:
		x.out = appendFrameHeader(out, frameData, uint64(len(body)))
		if _, err := str.Write(x.out); err == nil {
			str.Write(body)
		}
	}
	str.Close()
}

// appendFields appends h's fields to a field section, as h2 does: names lowercased,
// minus those h2.ResponseFieldName leaves out. It reports whether Date was among them.
func (x *exchange) appendFields(blk []byte, h *fasthttp.ResponseHeader, interim bool) (_ []byte, hasDate bool) {
	for k, v := range h.All() {
		var keep bool
		if x.name, keep = h2.ResponseFieldName(x.name, k, interim); !keep {
			continue
		}
		hasDate = hasDate || string(x.name) == "date"
		blk = appendField(blk, x.name, v)
	}
	return blk, hasDate
}

// streamConn is the net.Conn a request's ctx sees: the QUIC connection's addresses (its
// I/O is refused, as h2.AddrConn's) and WriteInterim, as over HTTP/2 (h2's streamConn).
type streamConn struct {
	h2.AddrConn
	str *quic.Stream
	x   *exchange
}

var errInterim = errors.New("h3: interim response not sent: not informational, or the stream is gone")

// WriteInterim sends h, a 1xx other than 101, as a HEADERS frame of the request stream
// ahead of its answer (RFC 9114 §4.1): its fields lowercased, minus the
// connection-specific ones and content-type. Call it only from the handler, before it
// returns.
func (v *streamConn) WriteInterim(h *fasthttp.ResponseHeader) error {
	code := h.StatusCode()
	if code < 100 || code > 199 || code == fasthttp.StatusSwitchingProtocols || v.str == nil {
		return errInterim
	}
	x := v.x
	blk, _ := x.appendFields(appendStatus(append(x.block[:0], 0, 0), code), h, true)
	x.block = blk
	x.out = append(appendFrameHeader(x.out[:0], frameHeaders, uint64(len(blk))), blk...)
	if _, err := v.str.Write(x.out); err != nil {
		return errInterim
	}
	return nil
}

// sendStream copies a body stream to the client as it is read, a DATA frame per read.
func (s *Server) sendStream(str *quic.Stream, x *exchange, r io.Reader) {
	const piece, room = 32 << 10, 9 // room: the largest frame header of a piece
	if cap(x.out) < room+piece {
		x.out = make([]byte, room+piece)
	}
	buf := x.out[:room+piece]
	for {
		n, err := r.Read(buf[room:])
		if n > 0 {
			str.SetWriteDeadline(time.Now().Add(x.idle))
			var h [room]byte
			fh := appendFrameHeader(h[:0], frameData, uint64(n))
			start := room - len(fh)
			copy(buf[start:], fh)
			if _, werr := str.Write(buf[start : room+n]); werr != nil {
				return
			}
		}
		if err == io.EOF {
			return
		}
		if err != nil {
			// The client must not take a truncated body for a whole one.
			panic(errAbort)
		}
	}
}

var (
	strContentLength = []byte("content-length")
	strDate          = []byte("date")
)

// dateNow is the Date value of the latest second an answer was sent in.
var dateNow atomic.Pointer[dateValue]

type dateValue struct {
	unix int64
	v    []byte // shared read-only by the answers of that second
}

// date returns the Date header value (RFC 9110 §6.6.1) of now, formatted once per
// second rather than once per answer.
func date(now time.Time) []byte {
	sec := now.Unix()
	if d := dateNow.Load(); d != nil && d.unix == sec {
		return d.v
	}
	d := &dateValue{unix: sec, v: fasthttp.AppendHTTPDate(nil, now)}
	dateNow.Store(d)
	return d.v
}

// s2b views a string's bytes; they must not be written.
func s2b(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// b2s views bytes as a string; they must not change while it is used.
func b2s(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// statusTooEarly is 425 (RFC 8470 §5.2), which fasthttp names not.
const statusTooEarly = 425
