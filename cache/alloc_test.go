//go:build !race

package cache

import (
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// The hit path — key, request check, lookup, replay — must not allocate.
func TestHitAllocs(t *testing.T) {
	c := newTestCache(t, Config{Size: DefaultSize})
	f := func(name string, req *fasthttp.Request, resp *fasthttp.Response) {
		t.Helper()
		get := &fasthttp.Request{}
		req.CopyTo(get)
		get.Header.SetMethod("GET")
		store(t, c, get, resp, rule, t0)
		e := AcquireEntry()
		defer ReleaseEntry(e)
		var out fasthttp.Response
		key := make([]byte, 0, 256)
		now := t0.Add(time.Second)
		hit := func() {
			if rule.CheckRequest(&req.Header) != nil {
				t.Fatal("request refused")
			}
			key = AppendKey(key[:0], req.Header.Method(), req.Header.Host(), req.Header.RequestURI())
			if st := c.Lookup(e, key, &req.Header, now); st != Hit {
				t.Fatalf("%s: state %s", name, st)
			}
			out.Reset()
			e.WriteTo(&out, now)
		}
		for range 3 { // warm up the buffers; the 2 KiB entry is promoted to the hot set
			hit()
		}
		if n := testing.AllocsPerRun(200, hit); n != 0 {
			t.Errorf("%s: %v allocations per hit, want 0", name, n)
		}
	}
	body2k := randBody(2048, 1)
	f("2 KiB", mkReq("GET", "shop", "/item/42?x=1", "Accept", "*/*"),
		mkResp(200, body2k, "Cache-Control", "max-age=60", "Content-Type", "text/html", "ETag", `"v"`, "Surrogate-Key", "a b c"))
	f("vary", mkReq("GET", "shop", "/v", "Accept-Encoding", "gzip"),
		mkResp(200, body2k, "Cache-Control", "max-age=60", "Vary", "Accept-Encoding", "Content-Encoding", "gzip"))
	f("1 MiB", mkReq("HEAD", "shop", "/big"), mkResp(200, randBody(1<<20, 2), "Cache-Control", "max-age=60"))
}

func TestCoalesceAllocs(t *testing.T) {
	c := newTestCache(t, Config{})
	kh := KeyHash([]byte("k"))
	lead := func() {
		tk := c.Acquire(kh, t0)
		if !tk.Leader() {
			t.Fatal("not leader")
		}
		tk.Done()
	}
	lead()
	if n := testing.AllocsPerRun(200, lead); n != 0 {
		t.Errorf("leader without followers: %v allocations, want 0", n)
	}
	refresh := func() {
		if !c.TryStartRefresh(kh, t0) {
			t.Fatal("refresh refused")
		}
		c.EndRefresh(kh)
	}
	refresh()
	if n := testing.AllocsPerRun(200, refresh); n != 0 {
		t.Errorf("refresh claim: %v allocations, want 0", n)
	}
}

func TestParseAllocs(t *testing.T) {
	v := []byte(`public, max-age=60, s-maxage="30", stale-while-revalidate=5, no-cache="Set-Cookie"`)
	var cc CacheControl
	if n := testing.AllocsPerRun(200, func() { cc.Reset(); cc.Parse(v) }); n != 0 {
		t.Errorf("CacheControl.Parse: %v allocations, want 0", n)
	}
}
