package proxy

// The helpers every test file of the package shares: handler calls without a
// server, polling, metric reading and an admin API on a test server. No build tag:
// the race build (limit tests) uses them too.

import (
	"io"
	"log"
	"net"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edge-gw/edge/admin"
	"github.com/edge-gw/edge/internal/edgetest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
)

// handlerCtx returns a request context as the server would hand it to Handler,
// from peer 127.0.0.1.
func handlerCtx(method, uri string, headers ...string) *fasthttp.RequestCtx {
	var req fasthttp.Request
	req.Header.SetMethod(method)
	req.SetRequestURI(uri)
	req.Header.SetHost("shop.example")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	ctx := &fasthttp.RequestCtx{}
	ctx.Init(&req, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}, nil)
	return ctx
}

// serveOnce runs req through px's Handler the way the server does, reusing ctx: the
// request copied in, the response reset, the request time (ctx.Time, from which the
// upstream deadline counts) read anew.
func serveOnce(px *Proxy, ctx *fasthttp.RequestCtx, req *fasthttp.Request) {
	ctx.Init2(ctx.Conn(), quietLogger, true)
	req.CopyTo(&ctx.Request)
	ctx.Response.Reset()
	px.Handler(ctx)
}

// rawOrigin serves each connection to a fresh loopback listener with serve, closing it
// when serve returns, until the test ends. It returns the address and the count of
// connections accepted: an origin that misbehaves at the TCP level, as fasthttp's
// server would not.
func rawOrigin(t testing.TB, serve func(c net.Conn)) (addr string, conns *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	conns = &atomic.Int64{}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer c.Close()
				serve(c)
			}()
		}
	}()
	return ln.Addr().String(), conns
}

// quietLogger is the fasthttp logger of handler calls without a server.
var quietLogger = log.New(io.Discard, "", 0)

// benchProxy is a Proxy serving src in process, for tests and benchmarks that
// call Handler directly.
func benchProxy(tb testing.TB, src string) *Proxy {
	tb.Helper()
	cfg := mustParse(tb, src)
	px := New(NewMetrics(prometheus.NewRegistry()))
	if _, err := px.Apply(cfg); err != nil {
		tb.Fatal(err)
	}
	return px
}

// allocs serves ctx once to warm up (it must answer wantStatus), then returns the
// allocations per request.
func allocs(t *testing.T, px *Proxy, ctx *fasthttp.RequestCtx, wantStatus int) float64 {
	t.Helper()
	var req fasthttp.Request
	ctx.Request.CopyTo(&req)
	for range 3 { // warm: connection, metric children, pools, the cache's hot set
		serveOnce(px, ctx, &req)
	}
	if ctx.Response.StatusCode() != wantStatus {
		t.Fatalf("status %d, want %d: %s", ctx.Response.StatusCode(), wantStatus, ctx.Response.Body())
	}
	n := testing.AllocsPerRun(200, func() { serveOnce(px, ctx, &req) })
	if ctx.Response.StatusCode() != wantStatus {
		t.Fatalf("status %d after the measured runs, want %d: %s", ctx.Response.StatusCode(), wantStatus, ctx.Response.Body())
	}
	return n
}

// benchServe reports allocations and runs the same request through px's Handler
// in parallel, one context per goroutine. A 502 or 504 answer (an upstream exchange
// that failed) fails the benchmark: it would be timing an error path.
func benchServe(b *testing.B, px *Proxy, method, uri string, headers ...string) {
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		ctx := handlerCtx(method, uri, headers...)
		var req fasthttp.Request
		ctx.Request.CopyTo(&req)
		for pb.Next() {
			serveOnce(px, ctx, &req)
			if code := ctx.Response.StatusCode(); code == 502 || code == 504 {
				b.Errorf("answer %d: %s", code, ctx.Response.Body())
				return
			}
		}
	})
}

// waitUntil polls cond every 5ms until it holds, failing the test after timeout,
// and returns how long it took.
func waitUntil(t testing.TB, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

// eventually is waitUntil with a 10s timeout.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	waitUntil(t, 10*time.Second, what, cond)
}

// idemWaitFor is eventually under the name limit_redis_test.go calls.
var idemWaitFor = eventually

// samples returns the values of metric family name whose labels include every
// name/value pair of labels: counters, gauges and counter funcs by value, a
// histogram by its count of observations.
func samples(t testing.TB, g prometheus.Gatherer, name string, labels ...string) []float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, l := range m.GetLabel() {
					found = found || l.GetName() == labels[i] && l.GetValue() == labels[i+1]
				}
				if !found {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				out = append(out, m.GetCounter().GetValue())
			case m.Gauge != nil:
				out = append(out, m.GetGauge().GetValue())
			case m.Histogram != nil:
				out = append(out, float64(m.GetHistogram().GetSampleCount()))
			default:
				out = append(out, 0)
			}
		}
	}
	return out
}

// gathered sums the samples of family name whose labels include all of labels.
func gathered(t testing.TB, g prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	sum := 0.0
	for _, v := range samples(t, g, name, labels...) {
		sum += v
	}
	return sum
}

// metricValue returns the first sample of family name whose labels include all of
// labels, or -1.
func metricValue(t testing.TB, g prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	if vs := samples(t, g, name, labels...); len(vs) > 0 {
		return vs[0]
	}
	return -1
}

// mustMetric is metricValue that fails the test when there is no such sample.
func mustMetric(t testing.TB, g prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	vs := samples(t, g, name, labels...)
	if len(vs) == 0 {
		t.Fatalf("metric %s%q not exported", name, labels)
	}
	return vs[0]
}

// adminAPI is an admin API on a test server.
type adminAPI struct {
	url   string
	token string
}

// startAdmin serves an admin API that gathers g, wants token and has the endpoints
// register adds, until the test ends.
func startAdmin(t testing.TB, g prometheus.Gatherer, token string, register func(*admin.API)) *adminAPI {
	t.Helper()
	api := admin.New(g, func() string { return token })
	register(api)
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	return &adminAPI{url: srv.URL, token: token}
}

// call sends an admin request with the API's token and returns the status and
// the body, trimmed. Every answer must be JSON.
func (a *adminAPI) call(t testing.TB, method, path, body string) (int, string) {
	t.Helper()
	return a.callAs(t, a.token, method, path, body)
}

// callAs is call with token instead of the API's ("": no Authorization header).
func (a *adminAPI) callAs(t testing.TB, token, method, path, body string) (int, string) {
	t.Helper()
	resp, out := edgetest.Do(t, method, a.url+path, body, edgetest.Bearer(token)...)
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s %s: Content-Type %q, want application/json", method, path, ct)
	}
	return resp.StatusCode, strings.TrimSpace(out)
}
