//go:build !race

package proxy

import (
	"testing"

	"github.com/edge-gw/edge/internal/origintest"
	"github.com/valyala/fasthttp"
)

func cacheBenchOrigin(tb testing.TB) *origintest.Origin {
	body := make([]byte, 2048)
	for i := range body {
		body[i] = 'a' + byte(i%26)
	}
	return origintest.Start(tb, func(ctx *fasthttp.RequestCtx) {
		ctx.Response.Header.Set("Cache-Control", "max-age=600")
		ctx.Response.Header.Set("ETag", `"v1"`)
		ctx.Response.Header.SetContentType("application/json")
		ctx.SetBody(body)
	})
}

func TestCacheZeroAllocs(t *testing.T) {
	o := cacheBenchOrigin(t)
	px := benchProxy(t, cacheConfig(o.Addr, `ttl = "1m"`))
	f := func(name string, ctx *fasthttp.RequestCtx, status int) {
		t.Helper()
		if n := allocs(t, px, ctx, status); n != 0 {
			t.Errorf("%s: %v allocs per request, want 0", name, n)
		}
		if got := string(ctx.Response.Header.Peek("X-Cache")); got != "HIT" {
			t.Errorf("%s: X-Cache %q, want HIT", name, got)
		}
	}
	f("hit", handlerCtx("GET", "/item/42?x=1"), 200)
	f("HEAD hit", handlerCtx("HEAD", "/item/42?x=1"), 200)
	f("conditional hit (304)", handlerCtx("GET", "/item/42?x=1", "If-None-Match", `"v1"`), 304)

	// A POST answered 200 invalidates /item/42 (RFC 9111 §4.4) without allocating.
	post := handlerCtx("POST", "/item/42?x=1")
	if n := allocs(t, px, post, 200); n != 0 {
		t.Errorf("POST invalidating its target: %v allocs per request, want 0", n)
	}
	if got := string(post.Response.Header.Peek("X-Cache")); got != "BYPASS" {
		t.Errorf("POST: X-Cache %q, want BYPASS", got)
	}
	get := handlerCtx("GET", "/item/42?x=1")
	var req fasthttp.Request
	get.Request.CopyTo(&req)
	serveOnce(px, get, &req)
	if got := string(get.Response.Header.Peek("X-Cache")); got != "MISS" {
		t.Errorf("GET after the POST: X-Cache %q, want MISS", got)
	}

	pk := benchProxy(t, cacheConfig(o.Addr, "ttl = \"1m\"\nkey = [\"header:X-Lang\", \"host\", \"ip\"]"))
	ctx := handlerCtx("GET", "/item/42", "X-Lang", "en")
	if n := allocs(t, pk, ctx, 200); n != 0 {
		t.Errorf("hit with key expressions: %v allocs per request, want 0", n)
	}
}

// BenchmarkCacheHit is one cache hit of a 2 KB body through the whole handler.
func BenchmarkCacheHit(b *testing.B) {
	o := cacheBenchOrigin(b)
	px := benchProxy(b, cacheConfig(o.Addr, `ttl = "1m"`))
	benchServe(b, px, "GET", "/item/42")
}

// A cache hit served compressed allocates nothing and compresses nothing: the entry's
// compressed bytes come from the memo.
func TestCompressedCacheHitZeroAllocs(t *testing.T) {
	o := cacheBenchOrigin(t)
	px := benchProxy(t, cacheConfig(o.Addr, `ttl = "1m"`, "compression {}"))
	for _, enc := range []string{"gzip", "br"} {
		ctx := handlerCtx("GET", "/item/42?x=1", "Accept-Encoding", enc)
		before := testutilCount(t, px, "edge_compress_total", enc, "compressed")
		if n := allocs(t, px, ctx, 200); n != 0 {
			t.Errorf("%s hit: %v allocs per request, want 0", enc, n)
		}
		if got := string(ctx.Response.Header.Peek("Content-Encoding")); got != enc {
			t.Errorf("%s hit: Content-Encoding %q", enc, got)
		}
		if n := testutilCount(t, px, "edge_compress_total", enc, "compressed") - before; n != 1 {
			t.Errorf("%s: %v compressions for 200+ hits of one entry, want 1", enc, n)
		}
	}
}

// BenchmarkCompressedCacheHit is a cache hit of a 2 KB JSON body served gzip-compressed.
func BenchmarkCompressedCacheHit(b *testing.B) {
	o := cacheBenchOrigin(b)
	px := benchProxy(b, cacheConfig(o.Addr, `ttl = "1m"`, "compression {}"))
	benchServe(b, px, "GET", "/item/42", "Accept-Encoding", "gzip")
}
