package h3

import (
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edge-gw/edge/h2"
	"github.com/quic-go/quic-go"
	"github.com/valyala/fasthttp"
)

// connKey is the request-context key of a request's *quic.Conn.
type connKey struct{}

// exchange is the pooled state of one request: the ctx handed to the handler and the
// buffers that fill it. Nothing of it is kept once the request is answered.
type exchange struct {
	ctx           fasthttp.RequestCtx
	addr          h2.AddrConn
	local, remote net.TCPAddr
	buf           []byte
	name          []byte
}

var exchangePool = sync.Pool{New: func() any { return new(exchange) }}

// bigBuffer: buffers grown past it are dropped rather than pooled.
const bigBuffer = 64 << 10

// safeMethod reports the methods RFC 9110 §9.2.1 calls safe: those a replayed 0-RTT
// request may run.
func safeMethod(m string) bool {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return false
}

const (
	bodyTooLarge = `{"error":"body_too_large"}`
	bodyTooEarly = `{"error":"too_early"}`
	bodyMethod   = `{"error":"method_not_allowed"}`
)

func answer(w http.ResponseWriter, status int, body string) {
	h := w.Header()
	h["Content-Type"] = []string{"application/json"}
	w.WriteHeader(status)
	io.WriteString(w, body)
}

// job is one request handed from quic-go's stream goroutine to a worker.
type job struct {
	w        http.ResponseWriter
	r        *http.Request
	done     chan struct{}
	panicked any // what serve panicked with, re-raised on the stream's goroutine
}

var jobPool = sync.Pool{New: func() any { return &job{done: make(chan struct{}, 1)} }}

// maxIdleWorkers bounds the workers kept waiting for the next request.
const maxIdleWorkers = 64

// serveHTTP runs one HTTP/3 request on a worker goroutine. quic-go starts a goroutine
// per stream, whose stack starts small and grows (by copying) on every request through
// quic-go's reads, fasthttp and the funnel: a worker kept from one request to the next
// has grown it once. Measured: about 14% of edge's CPU under HTTP/3 load without them.
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	j := jobPool.Get().(*job)
	j.w, j.r = w, r
	select {
	case s.work <- j:
	default:
		go s.worker(j)
	}
	<-j.done
	p := j.panicked
	*j = job{done: j.done}
	jobPool.Put(j)
	if p != nil {
		panic(p)
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

func (s *Server) runJob(j *job) {
	defer func() {
		j.panicked = recover()
		j.done <- struct{}{}
	}()
	s.serve(j.w, j.r)
}

// serve runs one HTTP/3 request through the handler.
func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	qc, _ := r.Context().Value(connKey{}).(*quic.Conn)
	if qc == nil {
		panic("BUG: h3: a request without its QUIC connection")
	}
	cfg := s.cfg.Load()
	if !handshakeDone(qc) && !safeMethod(r.Method) && !s.holdEarly(qc, r, cfg.HandshakeTimeout) {
		answer(w, http.StatusTooEarly, bodyTooEarly)
		return
	}
	if r.Method == http.MethodConnect { // no extended CONNECT (RFC 9220) over HTTP/3 yet
		answer(w, http.StatusMethodNotAllowed, bodyMethod)
		return
	}
	if r.ContentLength > cfg.MaxBodySize {
		answer(w, http.StatusRequestEntityTooLarge, bodyTooLarge)
		return
	}
	x := exchangePool.Get().(*exchange)
	defer release(x)
	// fasthttp (RemoteIP) and the funnel read client addresses as *net.TCPAddr only.
	x.local, x.remote = tcpAddr(qc.LocalAddr()), tcpAddr(qc.RemoteAddr())
	x.addr = h2.AddrConn{Local: &x.local, Remote: &x.remote}
	ctx := &x.ctx
	ctx.Init2(&x.addr, s.logger, false)
	req := &ctx.Request
	req.Header.DisableNormalizing()
	req.Header.SetMethod(r.Method)
	req.Header.SetRequestURI(r.RequestURI)
	req.Header.SetHost(r.Host)
	for k, vs := range r.Header {
		if k == h2.ProtocolHeader || k == "Host" {
			continue
		}
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	if r.Body != nil && r.Body != http.NoBody {
		b, err := readBody(x.buf[:0], r.Body, cfg.MaxBodySize)
		x.buf = b
		switch {
		case errors.Is(err, errTooLarge):
			answer(w, http.StatusRequestEntityTooLarge, bodyTooLarge)
			return
		case err != nil: // the client reset the stream, or the connection ended
			panic(http.ErrAbortHandler)
		}
		req.SetBodyRaw(b)
	}
	s.stats.requests.Add(1)
	s.handler(ctx)
	s.respond(w, x, r.Method == http.MethodHead)
}

// holdEarly waits, for a request received before its connection's handshake
// completed, until it completes; false if it did not (the connection failed, the
// client gave up, or twice the handshake timeout passed).
func (s *Server) holdEarly(qc *quic.Conn, r *http.Request, timeout time.Duration) bool {
	s.stats.earlyHeld.Add(1)
	t := time.NewTimer(2 * timeout)
	defer t.Stop()
	select {
	case <-qc.HandshakeComplete():
		return true
	case <-qc.Context().Done():
	case <-r.Context().Done():
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

var errTooLarge = errors.New("h3: request body over max_body_size")

// readBody appends r to dst, up to limit bytes.
func readBody(dst []byte, r io.Reader, limit int64) ([]byte, error) {
	for {
		if int64(len(dst)) > limit {
			return dst, errTooLarge
		}
		if len(dst) == cap(dst) {
			dst = append(dst, 0)[:len(dst)]
		}
		n, err := r.Read(dst[len(dst):min(cap(dst), len(dst)+int(limit)+1)])
		dst = dst[:len(dst)+n]
		if err == io.EOF {
			if int64(len(dst)) > limit {
				return dst, errTooLarge
			}
			return dst, nil
		}
		if err != nil {
			return dst, err
		}
	}
}

// respond writes ctx.Response as the HTTP/3 answer: status, the headers minus the
// connection-specific ones (h2.SkipResponseHeader), content-length, then the body,
// buffered or read from its stream and flushed piece by piece.
func (s *Server) respond(w http.ResponseWriter, x *exchange, head bool) {
	resp := &x.ctx.Response
	status := resp.StatusCode()
	h := w.Header()
	// Every value of the answer in one array: one allocation, not one per field.
	vals := make([]string, 0, 16)
	add := func(key string, v string) {
		i := len(vals)
		vals = append(vals, v)
		if old, ok := h[key]; ok {
			h[key] = append(old, v)
		} else {
			h[key] = vals[i : i+1 : i+1] // capacity 1: an append copies
		}
	}
	for k, v := range resp.Header.All() {
		x.name = append(x.name[:0], k...)
		for i, c := range x.name {
			if 'A' <= c && c <= 'Z' {
				x.name[i] = c + 'a' - 'A'
			}
		}
		if h2.SkipResponseHeader(x.name) {
			continue
		}
		key, ok := commonNames[string(x.name)]
		if !ok {
			key = http.CanonicalHeaderKey(string(k))
		}
		add(key, string(v))
	}
	noBody := head || status == 204 || status == 304 || status < 200 || resp.SkipBody
	streamed := resp.IsBodyStream()
	switch {
	case status == 204 || status == 304 || status < 200:
	case streamed:
		if cl := resp.Header.ContentLength(); cl >= 0 {
			add("Content-Length", itoa(int64(cl)))
		}
	case noBody && len(resp.Body()) == 0:
		if cl := resp.Header.ContentLength(); cl >= 0 {
			add("Content-Length", itoa(int64(cl)))
		}
	default:
		add("Content-Length", itoa(int64(len(resp.Body()))))
	}
	if _, ok := h["Date"]; !ok {
		h["Date"] = date(time.Now())
	}
	w.WriteHeader(status)
	switch {
	case noBody:
	case streamed:
		s.sendStream(w, x, resp.BodyStream())
	default:
		// HEADERS first, so the body goes to the stream as it is: before them, http3
		// copies a body under 4 KiB into a buffer of its own (to count it for a
		// Content-Length, which is set above).
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		w.Write(resp.Body())
	}
	if streamed {
		resp.CloseBodyStream()
	}
}

// sendStream copies a body stream to the client as it is read, flushing each piece.
func (s *Server) sendStream(w http.ResponseWriter, x *exchange, r io.Reader) {
	if cap(x.buf) < 32<<10 {
		x.buf = make([]byte, 32<<10)
	}
	buf := x.buf[:32<<10]
	f, _ := w.(http.Flusher)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			if f != nil {
				f.Flush()
			}
		}
		if err == io.EOF {
			return
		}
		if err != nil {
			// The client must not take a truncated body for a whole one.
			panic(http.ErrAbortHandler)
		}
	}
}

// commonNames maps the lowercase names of common response header fields to the
// canonical keys http.Header wants, so that copying them allocates no name.
var commonNames = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{"Accept-Ranges", "Access-Control-Allow-Credentials",
		"Access-Control-Allow-Headers", "Access-Control-Allow-Methods", "Access-Control-Allow-Origin",
		"Access-Control-Expose-Headers", "Access-Control-Max-Age", "Age", "Alt-Svc", "Cache-Control",
		"Content-Disposition", "Content-Encoding", "Content-Language", "Content-Location",
		"Content-Range", "Content-Security-Policy", "Content-Type", "Date", "Etag", "Expires",
		"Last-Modified", "Link", "Location", "Retry-After", "Server", "Set-Cookie",
		"Strict-Transport-Security", "Vary", "Via", "Www-Authenticate", "X-Cache",
		"X-Content-Type-Options", "X-Frame-Options", "X-Request-Id"} {
		m[strings.ToLower(k)] = k
	}
	return m
}()

// dateNow is the Date value of the latest second an answer was sent in.
var dateNow atomic.Pointer[dateValue]

type dateValue struct {
	unix int64
	v    []string // one value, capacity 1: shared read-only by the answers of that second
}

// date returns the Date header value (RFC 9110 §6.6.1) of now, formatted once per
// second rather than once per answer.
func date(now time.Time) []string {
	sec := now.Unix()
	if d := dateNow.Load(); d != nil && d.unix == sec {
		return d.v
	}
	d := &dateValue{unix: sec, v: []string{string(fasthttp.AppendHTTPDate(nil, now))}}
	dateNow.Store(d)
	return d.v
}

func itoa(n int64) string {
	var b [20]byte
	return string(fasthttp.AppendUint(b[:0], int(n)))
}

func release(x *exchange) {
	x.ctx.Request.Reset()
	x.ctx.Response.Reset()
	x.addr, x.local, x.remote = h2.AddrConn{}, net.TCPAddr{}, net.TCPAddr{}
	if cap(x.buf) > bigBuffer {
		x.buf = nil
	}
	exchangePool.Put(x)
}
