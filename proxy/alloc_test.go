//go:build !race

package proxy

import (
	"net"
	"testing"

	"github.com/edge-gw/edge/internal/origintest"
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

// serveOnce runs one request through h the way the server does, reusing ctx.
func serveOnce(px *Proxy, ctx *fasthttp.RequestCtx, req *fasthttp.Request) {
	req.CopyTo(&ctx.Request)
	ctx.Response.Reset()
	px.Handler(ctx)
}

func benchProxy(tb testing.TB, src string) *Proxy {
	cfg := mustParse(tb, src)
	px := New(NewMetrics(prometheus.NewRegistry()))
	if _, err := px.Apply(cfg); err != nil {
		tb.Fatal(err)
	}
	return px
}

func allocs(t *testing.T, px *Proxy, ctx *fasthttp.RequestCtx, wantStatus int) float64 {
	t.Helper()
	var req fasthttp.Request
	ctx.Request.CopyTo(&req)
	serveOnce(px, ctx, &req) // warm: connection, metric children, pools
	if ctx.Response.StatusCode() != wantStatus {
		t.Fatalf("status %d, want %d: %s", ctx.Response.StatusCode(), wantStatus, ctx.Response.Body())
	}
	return testing.AllocsPerRun(200, func() { serveOnce(px, ctx, &req) })
}

func TestZeroAllocs(t *testing.T) {
	o := origintest.Start(t, func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("hello") })
	px := benchProxy(t, upstreamConfig(o.Addr))
	f := func(name string, ctx *fasthttp.RequestCtx, status int) {
		t.Helper()
		if n := allocs(t, px, ctx, status); n != 0 {
			t.Errorf("%s: %v allocs per request, want 0", name, n)
		}
	}
	f("proxied GET", handlerCtx("GET", "/app/item/42?x=1"), 200)
	f("proxied GET with hop-by-hop and XFF", handlerCtx("GET", "/app/item/42", "Connection", "close, X-Hop",
		"X-Hop", "1", "X-Forwarded-For", "203.0.113.7", "X-Request-Id", "abc"), 200)
	f("respond", handlerCtx("GET", "/hello"), 200)
	f("no route", handlerCtx("GET", "/nope"), 404)
}

func BenchmarkProxyGET(b *testing.B) {
	o := origintest.Start(b, func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("hello") })
	px := benchProxy(b, upstreamConfig(o.Addr))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		ctx := handlerCtx("GET", "/app/item/42")
		var req fasthttp.Request
		ctx.Request.CopyTo(&req)
		for pb.Next() {
			serveOnce(px, ctx, &req)
		}
	})
}

func BenchmarkRespond(b *testing.B) {
	px := benchProxy(b, upstreamConfig("127.0.0.1:1"))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		ctx := handlerCtx("GET", "/hello")
		var req fasthttp.Request
		ctx.Request.CopyTo(&req)
		for pb.Next() {
			serveOnce(px, ctx, &req)
		}
	})
}
