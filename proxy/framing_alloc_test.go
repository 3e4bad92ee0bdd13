//go:build !race

package proxy

import (
	"bufio"
	"net"
	"strings"
	"testing"

	"github.com/edge-gw/edge/internal/origintest"
	"github.com/valyala/fasthttp"
)

// browserHead is a request head as a browser sends it: the size framingFault scans on
// every HTTP/1.1 request.
const browserHead = "GET /app/item/42?x=1 HTTP/1.1\r\n" +
	"Host: shop.example\r\n" +
	"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36\r\n" +
	"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8\r\n" +
	"Accept-Language: en-US,en;q=0.9\r\n" +
	"Accept-Encoding: gzip, deflate, br\r\n" +
	"Cookie: session=0123456789abcdef0123456789abcdef; theme=dark\r\n" +
	"Referer: https://shop.example/\r\n" +
	"Sec-Fetch-Dest: document\r\n" +
	"Sec-Fetch-Mode: navigate\r\n" +
	"Upgrade-Insecure-Requests: 1\r\n" +
	"\r\n"

// wireCtx returns a request context holding raw as fasthttp's server parses it from
// the wire (its raw header block included), from peer 127.0.0.1.
func wireCtx(tb testing.TB, raw string) *fasthttp.RequestCtx {
	tb.Helper()
	var req fasthttp.Request
	if err := req.Read(bufio.NewReader(strings.NewReader(raw))); err != nil {
		tb.Fatalf("parsing %q: %v", raw, err)
	}
	ctx := &fasthttp.RequestCtx{}
	ctx.Init(&req, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}, nil)
	return ctx
}

// TestFramingZeroAllocs: a proxied request whose head came from the wire, so that the
// framing check reads it, still allocates nothing.
func TestFramingZeroAllocs(t *testing.T) {
	o := origintest.Start(t, func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("hello") })
	px := benchProxy(t, upstreamConfig(o.Addr))
	ctx := wireCtx(t, browserHead)
	if len(ctx.Request.Header.RawHeaders()) == 0 {
		t.Fatal("the parsed request kept no raw header block: the framing check would read nothing")
	}
	if n := allocs(t, px, ctx, 200); n != 0 {
		t.Errorf("%v allocs per request, want 0", n)
	}
	h := &wireCtx(t, browserHead).Request.Header
	if n := testing.AllocsPerRun(200, func() { framingFault(h); dropTrailers(h) }); n != 0 {
		t.Errorf("framingFault and dropTrailers: %v allocs, want 0", n)
	}
}

// BenchmarkFramingFault is the framing check's cost per request on a browser's head.
func BenchmarkFramingFault(b *testing.B) {
	h := &wireCtx(b, browserHead).Request.Header
	b.ReportAllocs()
	b.SetBytes(int64(len(h.RawHeaders())))
	for b.Loop() {
		if framingFault(h) != nil {
			b.Fatal("a browser's head refused")
		}
	}
}

// BenchmarkProxyGETWire is BenchmarkProxyGET with the head parsed from the wire, as the
// server hands it over: the framing check included.
func BenchmarkProxyGETWire(b *testing.B) {
	o := origintest.Start(b, func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("hello") })
	px := benchProxy(b, upstreamConfig(o.Addr))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		ctx := wireCtx(b, browserHead)
		var req fasthttp.Request
		ctx.Request.CopyTo(&req)
		for pb.Next() {
			serveOnce(px, ctx, &req)
			if code := ctx.Response.StatusCode(); code != 200 {
				b.Errorf("answer %d: %s", code, ctx.Response.Body())
				return
			}
		}
	})
}
