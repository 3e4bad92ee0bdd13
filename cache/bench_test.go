package cache

import (
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

func benchHit(b *testing.B, size int, parallel bool) {
	c := newTestCache(b, Config{Size: DefaultSize})
	req := mkReq("GET", "shop", "/item/42?x=1", "Accept", "*/*")
	store(b, c, req, mkResp(200, randBody(size, 1), "Cache-Control", "max-age=600", "Content-Type", "text/html",
		"ETag", `"v"`, "Surrogate-Key", "item-42 items"), rule, t0)
	now := t0.Add(time.Second)
	hit := func(req *fasthttp.Request, e *Entry, out *fasthttp.Response, key []byte) []byte {
		key = AppendKey(key[:0], req.Header.Method(), req.Header.Host(), req.Header.RequestURI())
		if c.Lookup(e, key, &req.Header, now) != Hit {
			b.Fatal("not a hit")
		}
		out.Reset()
		e.WriteTo(out, now)
		return key
	}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	if !parallel {
		e := AcquireEntry()
		var out fasthttp.Response
		var key []byte
		for b.Loop() {
			key = hit(req, e, &out, key)
		}
		return
	}
	// Each goroutine has its own request copy: fasthttp headers are not concurrency-safe.
	b.RunParallel(func(pb *testing.PB) {
		var r fasthttp.Request
		req.CopyTo(&r)
		e := AcquireEntry()
		var out fasthttp.Response
		var key []byte
		for pb.Next() {
			key = hit(&r, e, &out, key)
		}
	})
}

// BenchmarkHit measures key build + Lookup + WriteTo for a stored entry.
func BenchmarkHit(b *testing.B) {
	b.Run("2KiB", func(b *testing.B) { benchHit(b, 2048, false) })
	b.Run("64KiB", func(b *testing.B) { benchHit(b, 64<<10, false) })
	b.Run("1MiB", func(b *testing.B) { benchHit(b, 1<<20, false) })
	b.Run("2KiB-parallel", func(b *testing.B) { benchHit(b, 2048, true) })
}

func BenchmarkStore2KiB(b *testing.B) {
	c := newTestCache(b, Config{Size: DefaultSize})
	req := mkReq("GET", "shop", "/item/42")
	resp := mkResp(200, randBody(2048, 1), "Cache-Control", "max-age=600", "Content-Type", "text/html", "ETag", `"v"`)
	key := keyOf(req)
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Store(key, &req.Header, resp, rule, t0, c.Epoch()); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAcquireDone(b *testing.B) {
	c := newTestCache(b, Config{})
	b.ReportAllocs()
	var i uint64
	for b.Loop() {
		i++
		tk := c.Acquire(i, t0)
		tk.Done()
	}
}

func BenchmarkCacheControlParse(b *testing.B) {
	v := []byte("public, max-age=60, s-maxage=30, stale-while-revalidate=5")
	var cc CacheControl
	b.ReportAllocs()
	for b.Loop() {
		cc.Reset()
		cc.Parse(v)
	}
}
