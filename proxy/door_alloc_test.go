//go:build !race

package proxy

import (
	"fmt"
	"testing"

	"github.com/edge-gw/edge/internal/h2test"
	"github.com/edge-gw/edge/internal/origintest"
	"github.com/valyala/fasthttp"
)

// TestDoorAllocs: serving through a listener's handler (HSTS, redirect) allocates
// nothing.
func TestDoorAllocs(t *testing.T) {
	o := origintest.Start(t, func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("hello") })
	px := benchProxy(t, fmt.Sprintf(doorConfig, o.Addr))
	for name, h := range map[string]fasthttp.RequestHandler{
		"https h2":      px.ListenerHandler("https", ProtoH2),
		"http redirect": px.ListenerHandler("http", ProtoHTTP1),
	} {
		ctx := handlerCtx("GET", "/item/42")
		var req fasthttp.Request
		ctx.Request.CopyTo(&req)
		for range 3 {
			serveVia(h, ctx, &req)
		}
		if n := testing.AllocsPerRun(200, func() { serveVia(h, ctx, &req) }); n != 0 {
			t.Errorf("%s: %v allocs per request, want 0", name, n)
		}
	}
}

// TestH2EndToEndAllocs: an HTTP/2 GET proxied to an origin — h2 framing, the funnel,
// the upstream exchange — allocates nothing on a warm connection, like its HTTP/1.1
// twin (TestZeroAllocs). The client allocates nothing, so the count is edge's.
func TestH2EndToEndAllocs(t *testing.T) {
	o := origintest.Start(t, func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("hello") })
	px := benchProxy(t, upstreamConfig(o.Addr))
	c := h2test.Dial(t, serveH2C(t, px.ListenerHandler("inner", ProtoH2)), "/app/item/42")
	for range 100 {
		c.Do(t)
	}
	if n := testing.AllocsPerRun(2000, func() { c.Do(t) }); n != 0 {
		t.Errorf("%v allocations per proxied HTTP/2 GET, want 0", n)
	}
	if c.First != 0x88 { // HPACK static index 8: ":status: 200"
		t.Errorf("answer starts with %#x, want :status 200 (0x88)", c.First)
	}
}

// BenchmarkProxyGETH2Raw is BenchmarkProxyGET over HTTP/2 (h2c), one stream at a
// time, with a client that allocates nothing.
func BenchmarkProxyGETH2Raw(b *testing.B) {
	o := origintest.Start(b, func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("hello") })
	px := benchProxy(b, upstreamConfig(o.Addr))
	c := h2test.Dial(b, serveH2C(b, px.ListenerHandler("inner", ProtoH2)), "/app/item/42")
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		c.Do(b)
	}
}
