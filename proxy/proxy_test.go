package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edge-gw/edge/config"
	"github.com/edge-gw/edge/internal/origintest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
)

// testEdge is a Proxy serving on a loopback port.
type testEdge struct {
	addr string
	px   *Proxy
	srv  *Server
	reg  *prometheus.Registry
}

func mustParse(t testing.TB, src string) *config.Config {
	t.Helper()
	cfg, err := config.Parse("test.hcl", []byte(src), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatalf("config:\n%v", err)
	}
	return cfg
}

// startEdge serves the config src, whose listen is ignored, on a fresh port.
func startEdge(t testing.TB, src string) *testEdge {
	t.Helper()
	cfg := mustParse(t, src)
	reg := prometheus.NewRegistry()
	px := New(NewMetrics(reg))
	if _, err := px.Apply(cfg); err != nil {
		t.Fatalf("apply: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &testEdge{addr: ln.Addr().String(), px: px, srv: px.NewServer(cfg), reg: reg}
	// Idle worker goroutines go after a second (fasthttp's default is 10 s), so tests that
	// compare goroutine counts with a baseline settle quickly.
	e.srv.MaxIdleWorkerDuration = time.Second
	go e.srv.Serve(ln)
	t.Cleanup(func() { e.srv.Shutdown(); px.Close() })
	return e
}

// reload applies src to the running edge.
func (e *testEdge) reload(t testing.TB, src string) error {
	t.Helper()
	_, err := e.px.Apply(mustParse(t, src))
	return err
}

// do sends a request with the given headers and returns the response.
func (e *testEdge) do(t testing.TB, method, uri string, headers ...string) *fasthttp.Response {
	t.Helper()
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	req.Header.SetMethod(method)
	req.SetRequestURI("http://" + e.addr + uri)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp := &fasthttp.Response{}
	if err := fasthttp.DoTimeout(req, resp, 5*time.Second); err != nil {
		t.Fatalf("%s %s: %v", method, uri, err)
	}
	return resp
}

func upstreamConfig(addrs ...string) string {
	return fmt.Sprintf(`
trusted_proxies = ["127.0.0.1/32"]
upstream "app" {
  servers = [%s]
  timeout = "300ms"
  connect_timeout = "200ms"
}
route "hello" {
  match { path = "/hello" }
  respond {
    status = 200
    body = "hi"
    content_type = "text/plain"
    headers = { "X-Served-By" = "edge" }
  }
}
route "app" {
  match {
    path = "/app/"
    methods = ["GET", "POST", "HEAD"]
  }
  upstream = "app"
}
`, quoteList(addrs))
}

func quoteList(addrs []string) string {
	q := make([]string, len(addrs))
	for i, a := range addrs {
		q[i] = fmt.Sprintf("%q", a)
	}
	return strings.Join(q, ", ")
}

func TestRoutingAndErrors(t *testing.T) {
	slow := origintest.Start(t, func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/app/slow" {
			time.Sleep(time.Second)
		}
		ctx.SetBodyString("from origin " + string(ctx.Path()))
	})
	e := startEdge(t, upstreamConfig(slow.Addr))

	f := func(method, uri string, wantStatus int, wantBody string) {
		t.Helper()
		resp := e.do(t, method, uri)
		if resp.StatusCode() != wantStatus || string(resp.Body()) != wantBody {
			t.Errorf("%s %s = %d %q, want %d %q", method, uri, resp.StatusCode(), resp.Body(), wantStatus, wantBody)
		}
	}
	f("GET", "/hello", 200, "hi")
	f("GET", "/app/x", 200, "from origin /app/x")
	f("POST", "/app/y", 200, "from origin /app/y")
	f("GET", "/nothing", 404, `{"error":"no_route"}`)
	f("DELETE", "/app/x", 404, `{"error":"no_route"}`)

	start := time.Now()
	f("GET", "/app/slow", 504, `{"error":"gateway_timeout"}`)
	if d := time.Since(start); d > 900*time.Millisecond {
		t.Errorf("504 took %v, want about the 300ms upstream timeout", d)
	}
	if resp := e.do(t, "GET", "/hello"); string(resp.Header.Peek("X-Served-By")) != "edge" ||
		string(resp.Header.ContentType()) != "text/plain" {
		t.Errorf("respond headers: %s", resp.Header.String())
	}

	dead := startEdge(t, upstreamConfig(origintest.FreeAddr(t)))
	start = time.Now()
	resp := dead.do(t, "GET", "/app/x")
	if resp.StatusCode() != 502 || string(resp.Body()) != `{"error":"bad_gateway"}` {
		t.Errorf("dead upstream = %d %q, want 502 bad_gateway", resp.StatusCode(), resp.Body())
	}
	if d := time.Since(start); d > 250*time.Millisecond {
		t.Errorf("502 took %v, want a fast refusal", d)
	}
	if got := gathered(t, dead.reg, "edge_upstream_errors_total", "reason", "connect"); got != 1 {
		t.Errorf("edge_upstream_errors_total{reason=connect} = %v, want 1", got)
	}
	if got := gathered(t, e.reg, "edge_requests_total", "code", "404"); got != 2 {
		t.Errorf("edge_requests_total{code=404} = %v, want 2", got)
	}
}

func TestRoundRobin(t *testing.T) {
	a, b := origintest.Start(t, nil), origintest.Start(t, nil)
	e := startEdge(t, upstreamConfig(a.Addr, b.Addr))
	for i := 0; i < 10; i++ {
		e.do(t, "GET", "/app/x")
	}
	if a.Requests.Load() != 5 || b.Requests.Load() != 5 {
		t.Errorf("requests a=%d b=%d, want 5 and 5", a.Requests.Load(), b.Requests.Load())
	}
}

func TestForwardedHeaders(t *testing.T) {
	o := origintest.Start(t, func(ctx *fasthttp.RequestCtx) {
		ctx.Response.Header.Set("Connection", "X-Secret-Hop")
		ctx.Response.Header.Set("X-Secret-Hop", "1")
		ctx.Response.Header.Set("Keep-Alive", "timeout=5")
		ctx.Response.Header.Set("X-Kept", "yes")
	})
	f := func(trusted string, headers []string, want map[string]string) {
		t.Helper()
		e := startEdge(t, strings.Replace(upstreamConfig(o.Addr), `["127.0.0.1/32"]`, trusted, 1))
		resp := e.do(t, "GET", "/app/h", headers...)
		got := o.LastHeader()
		for k, v := range want {
			if string(got.Peek(k)) != v {
				t.Errorf("trusted %s: upstream saw %s = %q, want %q", trusted, k, got.Peek(k), v)
			}
		}
		for _, hop := range []string{"Connection", "X-Hop", "Keep-Alive", "Te", "Upgrade", "Proxy-Connection", "Http2-Settings"} {
			if v := got.Peek(hop); len(v) > 0 {
				t.Errorf("upstream saw hop-by-hop %s: %q", hop, v)
			}
		}
		if v := resp.Header.Peek("X-Secret-Hop"); len(v) > 0 {
			t.Errorf("client saw hop-by-hop X-Secret-Hop from upstream")
		}
		if v := resp.Header.Peek("Keep-Alive"); len(v) > 0 {
			t.Errorf("client saw upstream Keep-Alive %q", v)
		}
		if string(resp.Header.Peek("X-Kept")) != "yes" {
			t.Errorf("end-to-end response header lost")
		}
	}
	hop := []string{"Connection", "X-Hop, Upgrade", "X-Hop", "1", "Upgrade", "h2c", "HTTP2-Settings", "AAMAAABkAAQAoAAAAAIAAAAA", "TE", "trailers",
		"Keep-Alive", "timeout=1", "Proxy-Connection", "keep-alive", "X-Request-Id", "req-7"}
	// From a trusted peer the client is the right-most untrusted address.
	f(`["127.0.0.1/32"]`, append([]string{"X-Forwarded-For", "203.0.113.9, 198.51.100.1", "X-Forwarded-Proto", "https"}, hop...),
		map[string]string{"X-Forwarded-For": "203.0.113.9, 198.51.100.1, 127.0.0.1", "X-Real-IP": "198.51.100.1",
			"X-Forwarded-Proto": "https", "X-Request-Id": "req-7"})
	// An untrusted peer cannot choose its address or protocol.
	f(`["10.0.0.0/8"]`, append([]string{"X-Forwarded-For", "203.0.113.9", "X-Forwarded-Proto", "https"}, hop...),
		map[string]string{"X-Forwarded-For": "203.0.113.9, 127.0.0.1", "X-Real-IP": "127.0.0.1", "X-Forwarded-Proto": "http"})

	// A request id is generated when absent, and differs per request.
	e := startEdge(t, upstreamConfig(o.Addr))
	e.do(t, "GET", "/app/1")
	id1 := string(o.LastHeader().Peek("X-Request-Id"))
	e.do(t, "GET", "/app/2")
	id2 := string(o.LastHeader().Peek("X-Request-Id"))
	if len(id1) != 32 || id1 == id2 {
		t.Errorf("generated request ids %q, %q: want 32 hex digits, distinct", id1, id2)
	}
}

// A client that sends Connection: close on every request must not cost one
// upstream connection per request.
func TestConnectionCloseReusesUpstream(t *testing.T) {
	o := origintest.Start(t, nil)
	e := startEdge(t, upstreamConfig(o.Addr))
	for i := 0; i < 20; i++ {
		resp := e.do(t, "GET", "/app/x", "Connection", "close")
		if resp.StatusCode() != 200 {
			t.Fatalf("status %d", resp.StatusCode())
		}
		if !resp.ConnectionClose() {
			t.Fatalf("edge did not honour the client's Connection: close")
		}
	}
	if n := o.Conns.Load(); n != 1 {
		t.Errorf("20 requests with Connection: close used %d upstream connections, want 1", n)
	}
}

func rawRequest(t *testing.T, addr, raw string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line)
}

func TestClientBounds(t *testing.T) {
	o := origintest.Start(t, nil)
	src := upstreamConfig(o.Addr) + `
read_timeout    = "300ms"
max_header_size = "2KB"
max_body_size   = "1KB"
`
	e := startEdge(t, src)
	big := strings.Repeat("a", 4096)
	if got := rawRequest(t, e.addr, "GET /app/x HTTP/1.1\r\nHost: x\r\nX-Big: "+big+"\r\n\r\n"); got != "HTTP/1.1 431 Request Header Fields Too Large" {
		t.Errorf("oversize header: %q", got)
	}
	body := strings.Repeat("b", 2000)
	if got := rawRequest(t, e.addr, fmt.Sprintf("POST /app/x HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", len(body), body)); got != "HTTP/1.1 413 Request Entity Too Large" {
		t.Errorf("oversize body: %q", got)
	}
	if o.Requests.Load() != 0 {
		t.Errorf("oversize requests reached the origin %d times", o.Requests.Load())
	}

	// A slow client dripping its headers is cut off at read_timeout.
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	io.WriteString(c, "GET /app/x HTTP/1.1\r\nHost: x\r\n")
	done := make(chan error, 1)
	go func() {
		for {
			time.Sleep(50 * time.Millisecond)
			if _, err := io.WriteString(c, "X-Drip: 1\r\n"); err != nil {
				done <- err
				return
			}
			if time.Since(start) > 3*time.Second {
				done <- nil
				return
			}
		}
	}()
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	io.Copy(io.Discard, c) // returns when edge closes the connection
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("slow client held the connection for %v, want cut at about 300ms", d)
	}
	<-done
}

func TestReload(t *testing.T) {
	a := origintest.Start(t, func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("a") })
	b := origintest.Start(t, func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("b") })
	e := startEdge(t, upstreamConfig(a.Addr))
	body := func() string { return string(e.do(t, "GET", "/app/x").Body()) }
	if body() != "a" {
		t.Fatal("first config not serving")
	}
	if err := e.reload(t, upstreamConfig(b.Addr)); err != nil {
		t.Fatal(err)
	}
	if got := body(); got != "b" {
		t.Errorf("after reload served by %q, want b", got)
	}
	if v := e.px.Current().Version; v != 2 {
		t.Errorf("version %d, want 2", v)
	}
	err := e.reload(t, upstreamConfig(a.Addr)+"\nlisten = \"127.0.0.1:1\"\n")
	if err == nil || !strings.Contains(err.Error(), "listen changed") {
		t.Errorf("listen change: err = %v, want a refusal naming listen", err)
	}
	if got := body(); got != "b" || e.px.Current().Version != 2 {
		t.Errorf("refused reload changed the running config: body %q version %d", got, e.px.Current().Version)
	}
}

// A keep-alive pool to an unchanged upstream survives a reload.
func TestReloadKeepsUpstreamConnections(t *testing.T) {
	o := origintest.Start(t, nil)
	e := startEdge(t, upstreamConfig(o.Addr))
	e.do(t, "GET", "/app/x")
	for i := 0; i < 5; i++ {
		if err := e.reload(t, upstreamConfig(o.Addr)+fmt.Sprintf("\n# edit %d\n", i)); err != nil {
			t.Fatal(err)
		}
		e.do(t, "GET", "/app/x")
	}
	if n := o.Conns.Load(); n != 1 {
		t.Errorf("6 requests across 5 reloads used %d upstream connections, want 1", n)
	}
}

// Reloads under continuous load fail no request, and in-flight requests finish on
// the config they started with.
func TestReloadUnderLoad(t *testing.T) {
	a := origintest.Start(t, func(ctx *fasthttp.RequestCtx) { time.Sleep(2 * time.Millisecond); ctx.SetBodyString("a") })
	b := origintest.Start(t, func(ctx *fasthttp.RequestCtx) { time.Sleep(2 * time.Millisecond); ctx.SetBodyString("b") })
	e := startEdge(t, upstreamConfig(a.Addr))
	var stop atomic.Bool
	var ok, failed atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &fasthttp.HostClient{Addr: e.addr}
			for !stop.Load() {
				req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
				req.SetRequestURI("http://" + e.addr + "/app/x")
				err := c.DoTimeout(req, resp, 5*time.Second)
				if err != nil || resp.StatusCode() != 200 || (string(resp.Body()) != "a" && string(resp.Body()) != "b") {
					failed.Add(1)
				} else {
					ok.Add(1)
				}
				fasthttp.ReleaseRequest(req)
				fasthttp.ReleaseResponse(resp)
			}
		}()
	}
	for i := 0; i < 20; i++ {
		addr := a.Addr
		if i%2 == 0 {
			addr = b.Addr
		}
		if err := e.reload(t, upstreamConfig(addr)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond) // let requests run on this config
	}
	stop.Store(true)
	wg.Wait()
	if failed.Load() != 0 || ok.Load() < 100 {
		t.Errorf("20 reloads under load: %d ok, %d failed; want 0 failed", ok.Load(), failed.Load())
	}
}

// rawExchange sends a raw HTTP/1.1 request to addr and returns the raw response head
// and body, read until the connection closes (the request says Connection: close).
func rawExchange(t *testing.T, addr, request string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(request)); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading the response: %v", err)
	}
	return string(b)
}

// oneCopy returns the value of header name in h, failing the test unless there is
// exactly one copy of it.
func oneCopy(t *testing.T, h *fasthttp.RequestHeader, name string) string {
	t.Helper()
	var vs []string
	for k, v := range h.All() {
		if strings.EqualFold(string(k), name) {
			vs = append(vs, string(v))
		}
	}
	if len(vs) != 1 {
		t.Errorf("upstream saw %s %q, want exactly one copy", name, vs)
		return ""
	}
	return vs[0]
}

// A request without hop-by-hop headers (the one-pass path) gets the same forwarding
// headers, and a client's repeated copies of them reach the upstream as exactly one
// each: X-Forwarded-For joined in order, the others edge's own.
func TestForwardedHeadersOnePassAndCopies(t *testing.T) {
	o := origintest.Start(t, func(ctx *fasthttp.RequestCtx) {})
	e := startEdge(t, upstreamConfig(o.Addr))
	check := func(what string, want map[string]string) {
		t.Helper()
		got := o.LastHeader()
		for k, v := range want {
			if g := oneCopy(t, got, k); g != v {
				t.Errorf("%s: upstream saw %s = %q, want %q", what, k, g, v)
			}
		}
	}
	e.do(t, "GET", "/app/h", "X-Forwarded-For", "203.0.113.9, 198.51.100.1", "X-Forwarded-Proto", "https", "X-Request-Id", "req-8")
	check("one copy each", map[string]string{"X-Forwarded-For": "203.0.113.9, 198.51.100.1, 127.0.0.1",
		"X-Real-IP": "198.51.100.1", "X-Forwarded-Proto": "https", "X-Request-Id": "req-8"})

	resp := rawExchange(t, e.addr, "GET /app/dup HTTP/1.1\r\nHost: shop.example\r\n"+
		"X-Forwarded-For: 203.0.113.9\r\nX-Real-IP: 6.6.6.6\r\nX-Forwarded-For: 198.51.100.1\r\nX-Real-IP: 7.7.7.7\r\n"+
		"X-Request-Id: a\r\nX-Request-Id: b\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Proto: ftp\r\nConnection: close\r\n\r\n")
	if !strings.HasPrefix(resp, "HTTP/1.1 200") {
		t.Fatalf("response to a request with repeated headers: %q", resp)
	}
	// X-Forwarded-For copies joined; edge's own X-Real-IP and X-Forwarded-Proto.
	check("two copies each", map[string]string{"X-Forwarded-For": "203.0.113.9, 198.51.100.1, 127.0.0.1",
		"X-Real-IP": "198.51.100.1", "X-Forwarded-Proto": "http"})
	if id := oneCopy(t, o.LastHeader(), "X-Request-Id"); len(id) != 32 {
		t.Errorf("upstream saw X-Request-Id %q, want a generated id (two client ids are ambiguous)", id)
	}
}

// Hop-by-hop headers from an upstream are removed whatever their case.
func TestUpstreamHopHeadersAnyCase(t *testing.T) {
	addr, _ := rawOrigin(t, func(c net.Conn) {
		var req fasthttp.Request
		br := bufio.NewReader(c)
		for req.Read(br) == nil {
			c.Write([]byte("HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: x-secret, keep-alive\r\n" +
				"x-secret: 1\r\nkeep-alive: timeout=5\r\nPROXY-CONNECTION: keep-alive\r\nx-Mixed-Case: kept\r\n\r\nok"))
		}
	})
	e := startEdge(t, upstreamConfig(addr))
	resp := rawExchange(t, e.addr, "GET /app/x HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n")
	head, body, _ := strings.Cut(resp, "\r\n\r\n")
	if !strings.HasPrefix(head, "HTTP/1.1 200") || body != "ok" {
		t.Fatalf("response %q", resp)
	}
	lower := strings.ToLower(head)
	for _, hop := range []string{"x-secret", "keep-alive", "proxy-connection"} {
		if strings.Contains(lower, "\r\n"+hop+":") {
			t.Errorf("client saw upstream hop-by-hop %s:\n%s", hop, head)
		}
	}
	if !strings.Contains(lower, "\r\nx-mixed-case: kept") {
		t.Errorf("end-to-end header lost:\n%s", head)
	}
}

// An upstream that closes a pooled keep-alive connection while it sits idle costs the
// next GET a second try on a fresh connection, not a hang until the timeout: the
// closed connection's end of file is noticed by the read that awaits the answer.
func TestUpstreamClosedIdleConnection(t *testing.T) {
	addr, conns := rawOrigin(t, func(c net.Conn) {
		var req fasthttp.Request
		if req.Read(bufio.NewReader(c)) != nil {
			return
		}
		c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
		time.Sleep(20 * time.Millisecond) // then close, idle, without notice
	})
	e := startEdge(t, upstreamConfig(addr))
	for i := 0; i < 5; i++ {
		start := time.Now()
		resp := e.do(t, "GET", "/app/x")
		if resp.StatusCode() != 200 || string(resp.Body()) != "ok" {
			t.Fatalf("request %d after the upstream closed the idle connection: %d %q", i, resp.StatusCode(), resp.Body())
		}
		if d := time.Since(start); d > 200*time.Millisecond {
			t.Errorf("request %d took %v: the stale connection was waited on", i, d)
		}
		time.Sleep(60 * time.Millisecond)
	}
	if n := conns.Load(); n != 5 {
		t.Errorf("upstream saw %d connections for 5 requests, want 5 (one per request)", n)
	}
}

// The request target goes upstream as the client sent it: dot segments, doubled
// slashes and escapes untouched (routing saw the normalized path).
func TestRequestTargetVerbatim(t *testing.T) {
	o := origintest.Start(t, nil)
	e := startEdge(t, upstreamConfig(o.Addr))
	for _, target := range []string{"/app/x/../y//z%2Fw?a=b&c=%20", "/app/plain?x=1", "/app//a/./b"} {
		resp := rawExchange(t, e.addr, "GET "+target+" HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n")
		if !strings.HasPrefix(resp, "HTTP/1.1 200") {
			t.Fatalf("GET %s: %q", target, resp)
		}
		if got := string(o.LastHeader().RequestURI()); got != target {
			t.Errorf("upstream saw %q, client sent %q", got, target)
		}
	}
}

// A client that shuts down its sending side right after its request still gets the
// whole response (edge then keeps the connection until idle_timeout; docs/config.md).
func TestHalfClosingClientGetsResponse(t *testing.T) {
	o := origintest.Start(t, func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("whole body") })
	e := startEdge(t, upstreamConfig(o.Addr))
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("GET /app/h HTTP/1.1\r\nHost: shop.example\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var resp fasthttp.Response
	if err := resp.Read(bufio.NewReader(c)); err != nil {
		t.Fatalf("reading the response after a half-close: %v", err)
	}
	if resp.StatusCode() != 200 || string(resp.Body()) != "whole body" {
		t.Errorf("half-closing client got %d %q", resp.StatusCode(), resp.Body())
	}
}

// Pipelined requests (several in one packet, some split across packets) are all
// answered, in order, on the one connection.
func TestPipelinedRequests(t *testing.T) {
	o := origintest.Start(t, func(ctx *fasthttp.RequestCtx) { ctx.SetBody(ctx.Path()) })
	e := startEdge(t, upstreamConfig(o.Addr))
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	req := func(i int) string { return fmt.Sprintf("GET /app/%d HTTP/1.1\r\nHost: shop.example\r\n\r\n", i) }
	batch := req(1) + req(2) + req(3) + req(4)[:10]
	if _, err := c.Write([]byte(batch)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	for i := 1; i <= 4; i++ {
		if i == 4 {
			if _, err := c.Write([]byte(req(4)[10:])); err != nil {
				t.Fatal(err)
			}
		}
		var resp fasthttp.Response
		if err := resp.Read(br); err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
		if want := fmt.Sprintf("/app/%d", i); resp.StatusCode() != 200 || string(resp.Body()) != want {
			t.Fatalf("response %d: %d %q, want 200 %q", i, resp.StatusCode(), resp.Body(), want)
		}
	}
}
