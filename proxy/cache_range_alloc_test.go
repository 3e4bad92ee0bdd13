//go:build !race

package proxy

import (
	"testing"

	"github.com/valyala/fasthttp"
)

// Answers the client's Range and conditional headers make of a cache hit allocate
// nothing, as a plain hit does (hot entry and fastcache read alike: allocs warms up).
func TestCacheRangeZeroAllocs(t *testing.T) {
	o := cacheBenchOrigin(t)
	px := benchProxy(t, cacheConfig(o.Addr, `ttl = "1m"`))
	f := func(name string, status int, headers ...string) {
		t.Helper()
		ctx := handlerCtx("GET", "/item/42?x=1", headers...)
		if n := allocs(t, px, ctx, status); n != 0 {
			t.Errorf("%s: %v allocs per request, want 0", name, n)
		}
		if got := string(ctx.Response.Header.Peek("X-Cache")); got != "HIT" {
			t.Errorf("%s: X-Cache %q, want HIT", name, got)
		}
	}
	f("range hit (206)", fasthttp.StatusPartialContent, "Range", "bytes=100-199")
	f("suffix range with If-Range (206)", fasthttp.StatusPartialContent, "Range", "bytes=-10", "If-Range", `"v1"`)
	f("unsatisfiable range (416)", fasthttp.StatusRequestedRangeNotSatisfiable, "Range", "bytes=5000-")
	f("If-None-Match list hit (304)", fasthttp.StatusNotModified, "If-None-Match", `"v0", "v1"`)
}

// BenchmarkCacheHitRange is a cache hit of a 2 KB body answered 206 with 100 bytes.
func BenchmarkCacheHitRange(b *testing.B) {
	o := cacheBenchOrigin(b)
	px := benchProxy(b, cacheConfig(o.Addr, `ttl = "1m"`))
	benchServe(b, px, "GET", "/item/42", "Range", "bytes=100-199")
}
