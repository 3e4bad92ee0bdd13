//go:build !race

package proxy

import (
	"testing"

	"github.com/edge-gw/edge/internal/origintest"
	"github.com/valyala/fasthttp"
)

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
	benchServe(b, px, "GET", "/app/item/42")
}

func BenchmarkRespond(b *testing.B) {
	px := benchProxy(b, upstreamConfig("127.0.0.1:1"))
	benchServe(b, px, "GET", "/hello")
}
