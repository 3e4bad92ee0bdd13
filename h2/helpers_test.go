package h2

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// testServer is a real listener on 127.0.0.1:0 whose connections are served by srv.
type testServer struct {
	srv      *Server
	ln       net.Listener
	addr     string
	handled  atomic.Int64   // handler calls
	bytesIn  atomic.Int64   // bytes the server read from its connections
	errs     chan error     // what ServeConn returned, per connection
	unblock  chan struct{}  // closed to release /block handlers
	blockedN atomic.Int64   // handlers that entered /block
	floodN   atomic.Int64   // handler calls for /flood
	wg       sync.WaitGroup // ServeConn goroutines
	once     sync.Once
}

// countConn counts what the server reads.
type countConn struct {
	net.Conn
	n *atomic.Int64
}

func (c *countConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func (c *countConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// startServer starts a server with cfg and the echo handler (or h if not nil).
func startServer(t testing.TB, cfg Config, h fasthttp.RequestHandler) *testServer {
	t.Helper()
	return startServerTLS(t, cfg, h, nil)
}

func startServerTLS(t testing.TB, cfg Config, h fasthttp.RequestHandler, tlsCfg *tls.Config) *testServer {
	t.Helper()
	ts := &testServer{errs: make(chan error, 1024), unblock: make(chan struct{})}
	if h == nil {
		h = ts.echo
	}
	ts.srv = &Server{Handler: func(ctx *fasthttp.RequestCtx) { ts.handled.Add(1); h(ctx) }, Config: cfg}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts.ln = ln
	ts.addr = ln.Addr().String()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			var nc net.Conn = &countConn{Conn: c, n: &ts.bytesIn}
			ts.wg.Add(1)
			go func() {
				defer ts.wg.Done()
				if tlsCfg != nil {
					tc := tls.Server(nc, tlsCfg)
					if err := tc.Handshake(); err != nil {
						tc.Close()
						return
					}
					nc = tc
				}
				err := ts.srv.ServeConn(nc)
				select {
				case ts.errs <- err:
				default:
				}
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		ts.closeUnblock()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		ts.srv.Shutdown(ctx)
		ts.wg.Wait()
		if n := ts.srv.Stats().ConnsOpen; n != 0 {
			t.Errorf("%d connections still open after Shutdown", n)
		}
	})
	return ts
}

func (ts *testServer) closeUnblock() { ts.once.Do(func() { close(ts.unblock) }) }

// echo answers with what it received, one "key=value" per line, and has a few special
// paths: /204, /big (5 MiB), /sleep (300ms), /cookies, /block (until unblock).
func (ts *testServer) echo(ctx *fasthttp.RequestCtx) {
	switch string(ctx.Path()) {
	case "/204":
		ctx.SetStatusCode(204)
		return
	case "/big":
		ctx.SetContentType("application/octet-stream")
		ctx.SetBody(bigBody5M)
		return
	case "/sleep":
		time.Sleep(300 * time.Millisecond)
	case "/cookies":
		for _, kv := range [][2]string{{"a", "1"}, {"b", "2"}} {
			c := fasthttp.AcquireCookie()
			c.SetKey(kv[0])
			c.SetValue(kv[1])
			ctx.Response.Header.SetCookie(c)
			fasthttp.ReleaseCookie(c)
		}
	case "/block":
		ts.blockedN.Add(1)
		<-ts.unblock
	case "/flood":
		ts.floodN.Add(1)
	case "/alloc":
		ctx.SetBodyString("ok")
		return
	}
	ctx.Response.Header.Set("X-Echo", "yes")
	ctx.Response.Header.Set("Server", "edge-test")
	ctx.SetContentType("text/plain")
	sum := sha256.Sum256(ctx.Request.Body())
	fmt.Fprintf(ctx, "method=%s\npath=%s\nhost=%s\nx-test=%s\ncookie=%s\nbody=%d\nsum=%x\nremote=%s\nproto=%s\n",
		ctx.Method(), ctx.RequestURI(), ctx.Host(), ctx.Request.Header.Peek("X-Test"),
		ctx.Request.Header.Peek("Cookie"), len(ctx.Request.Body()), sum[:8], ctx.RemoteAddr(),
		ctx.Request.Header.Protocol())
}

var bigBody5M = func() []byte {
	b := make([]byte, 5<<20)
	for i := range b {
		b[i] = byte(i * 7)
	}
	return b
}()

// parseEcho turns the echo body into a map.
func parseEcho(t testing.TB, body []byte) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(body)), "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("not an echo body: %.200q", body)
		}
		m[k] = v
	}
	return m
}

// h2cClient is Go's HTTP/2 client speaking h2c with prior knowledge. (x/net/http2's
// Transport is deprecated in favour of net/http's, which carries the same HTTP/2 code.)
// Each client has its own connection pool; dialed records the local address of every
// connection it makes.
func h2cClient() *http.Client {
	t1 := &http.Transport{Protocols: new(http.Protocols)}
	t1.Protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: t1, Timeout: 30 * time.Second}
}

// do sends one request and returns the response with its body read.
func do(t testing.TB, cl *http.Client, method, url string, body []byte, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, url, err)
	}
	return resp, b
}

// rawClient is a frame-level HTTP/2 client for the tests that break the rules.
type rawClient struct {
	t   testing.TB
	c   net.Conn
	fr  *http2.Framer
	enc *hpack.Encoder
	eb  bytes.Buffer
	dec *hpack.Decoder

	noPingAck bool                       // do not answer the server's PINGs
	closeErr  error                      // how the connection ended
	settings  map[http2.SettingID]uint32 // the server's first SETTINGS
}

// dialRaw connects, sends the preface and an empty SETTINGS, and reads the server's
// SETTINGS (acknowledging it).
func dialRaw(t testing.TB, addr string) *rawClient {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	r := &rawClient{t: t, c: c}
	r.fr = http2.NewFramer(c, c)
	r.fr.AllowIllegalWrites = true
	r.enc = hpack.NewEncoder(&r.eb)
	r.dec = hpack.NewDecoder(4096, nil)
	if _, err := io.WriteString(c, ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := r.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	f, err := r.fr.ReadFrame()
	if err != nil {
		t.Fatalf("reading server SETTINGS: %v", err)
	}
	sf, ok := f.(*http2.SettingsFrame)
	if !ok || sf.IsAck() {
		t.Fatalf("first server frame %v, want SETTINGS", f)
	}
	r.settings = map[http2.SettingID]uint32{}
	sf.ForeachSetting(func(s http2.Setting) error { r.settings[s.ID] = s.Val; return nil })
	if err := r.fr.WriteSettingsAck(); err != nil {
		t.Fatal(err)
	}
	return r
}

// block encodes header fields given as name, value pairs.
func (r *rawClient) block(kv ...string) []byte {
	r.eb.Reset()
	for i := 0; i+1 < len(kv); i += 2 {
		r.enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
	}
	return bytes.Clone(r.eb.Bytes())
}

var getFields = []string{":method", "GET", ":scheme", "http", ":path", "/", ":authority", "example.com"}

func (r *rawClient) headers(id uint32, end bool, kv ...string) {
	r.t.Helper()
	if err := r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: r.block(kv...), EndStream: end, EndHeaders: true}); err != nil {
		r.t.Fatal(err)
	}
}

// event is what the raw client saw: a frame summary or the end of the connection.
type event struct {
	typ    http2.FrameType
	stream uint32
	code   http2.ErrCode       // RST_STREAM, GOAWAY
	last   uint32              // GOAWAY
	status string              // HEADERS
	fields []hpack.HeaderField // HEADERS
	data   []byte              // DATA
	end    bool
	closed bool // the connection ended (EOF or reset)
}

func (e event) String() string {
	if e.closed {
		return "closed"
	}
	return fmt.Sprintf("%v stream=%d code=%v status=%s len=%d end=%v", e.typ, e.stream, e.code, e.status, len(e.data), e.end)
}

// next reads the next frame of interest (SETTINGS, PING acks and WINDOW_UPDATE are skipped).
func (r *rawClient) next(timeout time.Duration) event {
	r.t.Helper()
	r.c.SetReadDeadline(time.Now().Add(timeout))
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				r.t.Fatalf("no frame within %v", timeout)
			}
			r.closeErr = err
			return event{closed: true}
		}
		switch f := f.(type) {
		case *http2.HeadersFrame:
			fields, err := r.dec.DecodeFull(f.HeaderBlockFragment())
			if err != nil {
				r.t.Fatal(err)
			}
			ev := event{typ: f.Type, stream: f.StreamID, end: f.StreamEnded(), fields: fields}
			for _, hf := range fields {
				if hf.Name == ":status" {
					ev.status = hf.Value
				}
			}
			return ev
		case *http2.DataFrame:
			return event{typ: f.Type, stream: f.StreamID, data: bytes.Clone(f.Data()), end: f.StreamEnded()}
		case *http2.RSTStreamFrame:
			return event{typ: f.Type, stream: f.StreamID, code: f.ErrCode}
		case *http2.GoAwayFrame:
			return event{typ: f.Type, code: f.ErrCode, last: f.LastStreamID}
		case *http2.PingFrame:
			if !f.IsAck() && !r.noPingAck {
				r.fr.WritePing(true, f.Data)
			}
		}
	}
}

// expect reads until an event satisfying ok, failing on connection end or timeout.
func (r *rawClient) expect(what string, ok func(event) bool) event {
	r.t.Helper()
	for {
		ev := r.next(5 * time.Second)
		if ok(ev) {
			return ev
		}
		if ev.closed {
			r.t.Fatalf("connection closed (%v), want %s", r.closeErr, what)
		}
	}
}

func (r *rawClient) expectRST(id uint32, code http2.ErrCode) {
	r.t.Helper()
	r.expect(fmt.Sprintf("RST_STREAM(%d, %v)", id, code), func(ev event) bool {
		if ev.typ == http2.FrameRSTStream && ev.stream == id {
			if ev.code != code {
				r.t.Fatalf("RST_STREAM(%d) code %v, want %v", id, ev.code, code)
			}
			return true
		}
		if ev.typ == http2.FrameGoAway && !ev.closed {
			r.t.Fatalf("GOAWAY %v, want RST_STREAM(%d, %v)", ev.code, id, code)
		}
		return false
	})
}

// expectGoAway waits for GOAWAY with code, then for the connection to be closed.
func (r *rawClient) expectGoAway(code http2.ErrCode) event {
	r.t.Helper()
	ev := r.expect("GOAWAY "+code.String(), func(ev event) bool { return ev.typ == http2.FrameGoAway && !ev.closed })
	if ev.code != code {
		r.t.Fatalf("GOAWAY code %v, want %v", ev.code, code)
	}
	r.expectClosed()
	return ev
}

func (r *rawClient) expectClosed() {
	r.t.Helper()
	for {
		if ev := r.next(5 * time.Second); ev.closed {
			return
		}
	}
}

// expectStatus waits for the response HEADERS of stream id and returns its status and body.
func (r *rawClient) expectStatus(id uint32) (int, []byte) {
	r.t.Helper()
	ev := r.expect(fmt.Sprintf("HEADERS(%d)", id), func(ev event) bool {
		if ev.typ == http2.FrameRSTStream && ev.stream == id {
			r.t.Fatalf("RST_STREAM(%d, %v), want a response", id, ev.code)
		}
		return ev.typ == http2.FrameHeaders && ev.stream == id
	})
	status, _ := strconv.Atoi(ev.status)
	var body []byte
	for end := ev.end; !end; {
		ev := r.expect(fmt.Sprintf("DATA(%d)", id), func(ev event) bool { return ev.stream == id })
		if ev.typ == http2.FrameRSTStream {
			break
		}
		body = append(body, ev.data...)
		end = ev.end
	}
	return status, body
}

// waitFor polls cond until it holds or 5s pass.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
