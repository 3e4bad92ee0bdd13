package proxy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edge-gw/edge/internal/origintest"
	"github.com/valyala/fasthttp"
)

// cacheOrigin is a real origin whose answers are steered by query arguments, and that
// counts what reached it per request URI:
//
//	cc=…        Cache-Control       sleep=800ms  answer late     status=N  status code
//	cookie=1    Set-Cookie          tag=a+b      Surrogate-Key   size=N    N pseudo-random bytes
//	etag=v1     ETag, and 304 to a matching If-None-Match
//
// Without size the body is "PATH #n", n counting the fetches of that path (tests use a
// path per case, since the client may re-encode the query).
type cacheOrigin struct {
	*origintest.Origin
	mu    sync.Mutex
	count map[string]int
	cond  map[string]int // conditional requests per URI
}

func startCacheOrigin(t *testing.T) *cacheOrigin {
	o := &cacheOrigin{count: map[string]int{}, cond: map[string]int{}}
	o.Origin = origintest.Start(t, func(ctx *fasthttp.RequestCtx) {
		q := ctx.QueryArgs()
		uri := string(ctx.Path())
		inm := ctx.Request.Header.Peek("If-None-Match")
		o.mu.Lock()
		o.count[uri]++
		n := o.count[uri]
		if len(inm) > 0 {
			o.cond[uri]++
		}
		o.mu.Unlock()
		if d := q.Peek("sleep"); len(d) > 0 {
			dur, _ := time.ParseDuration(string(d))
			time.Sleep(dur)
		}
		h := &ctx.Response.Header
		if v := q.Peek("cc"); len(v) > 0 {
			h.SetBytesV("Cache-Control", v)
		}
		if q.Has("cookie") {
			h.Set("Set-Cookie", "session=s1")
		}
		if v := q.Peek("tag"); len(v) > 0 {
			h.SetBytesV("Surrogate-Key", v)
			h.Set("Surrogate-Control", "max-age=3600")
		}
		if v := q.Peek("etag"); len(v) > 0 {
			etag := `"` + string(v) + `"`
			h.Set("ETag", etag)
			if string(inm) == etag {
				ctx.SetStatusCode(304)
				return
			}
		}
		if s := q.GetUintOrZero("status"); s > 0 {
			ctx.SetStatusCode(s)
		}
		h.SetContentType("text/plain")
		if size := q.GetUintOrZero("size"); size > 0 {
			ctx.SetBody(pseudoRandom(size))
			return
		}
		ctx.SetBodyString(fmt.Sprintf("%s #%d", uri, n))
	})
	return o
}

// fetches returns how many requests for the path of uri reached the origin.
func (o *cacheOrigin) fetches(uri string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.count[pathOf(uri)]
}

func (o *cacheOrigin) conditionals(uri string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.cond[pathOf(uri)]
}

func pathOf(uri string) string {
	p, _, _ := strings.Cut(uri, "?")
	return p
}

var randomBodies sync.Map // size → []byte, so a flood does not regenerate bodies

// pseudoRandom returns n reproducible pseudo-random bytes (shared: do not modify).
func pseudoRandom(n int) []byte {
	if b, ok := randomBodies.Load(n); ok {
		return b.([]byte)
	}
	r := rand.New(rand.NewPCG(uint64(n), 7))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	for i := n &^ 7; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	randomBodies.Store(n, b)
	return b
}

// cacheConfig is a config with route "detail" (/item/, cached with the given cache block
// body) and route "list" (/list/, cached for a minute), both to origin.
func cacheConfig(origin, cacheBlock string, top ...string) string {
	return fmt.Sprintf(`
%s
upstream "app" {
  servers         = [%q]
  timeout         = "2s"
  connect_timeout = "200ms"
}
route "detail" {
  match {
    path    = "/item/"
    methods = ["GET", "HEAD", "POST"]
  }
  upstream = "app"
  cache {
%s
  }
}
route "list" {
  match { path = "/list/" }
  upstream = "app"
  cache { ttl = "1m" }
}
`, strings.Join(top, "\n"), origin, cacheBlock)
}

// get requests uri and checks status and X-Cache; it returns the response.
func (e *testEdge) expect(t *testing.T, method, uri string, status int, xcache string, headers ...string) *fasthttp.Response {
	t.Helper()
	resp := e.do(t, method, uri, headers...)
	if resp.StatusCode() != status || string(resp.Header.Peek("X-Cache")) != xcache {
		t.Fatalf("%s %s = %d X-Cache %q, want %d %q (body %.80q)", method, uri, resp.StatusCode(),
			resp.Header.Peek("X-Cache"), status, xcache, resp.Body())
	}
	return resp
}

// pollXCache repeats GET uri until X-Cache is want (at most 5s) and returns that response.
func (e *testEdge) pollXCache(t *testing.T, uri, want string) *fasthttp.Response {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp := e.do(t, "GET", uri)
		if string(resp.Header.Peek("X-Cache")) == want {
			return resp
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: X-Cache %q after 5s, want %q", uri, resp.Header.Peek("X-Cache"), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestCacheMissThenHit(t *testing.T) {
	o := startCacheOrigin(t)
	e := startEdge(t, cacheConfig(o.Addr, `ttl = "1m"`))

	miss := e.expect(t, "GET", "/item/1?tag=item-1", 200, "MISS")
	hit := e.expect(t, "GET", "/item/1?tag=item-1", 200, "HIT")
	if string(miss.Body()) != "/item/1 #1" || !bytes.Equal(hit.Body(), miss.Body()) {
		t.Errorf("bodies: miss %q, hit %q", miss.Body(), hit.Body())
	}
	if age := string(hit.Header.Peek("Age")); age == "" {
		t.Errorf("HIT without Age")
	}
	if string(hit.Header.ContentType()) != "text/plain" {
		t.Errorf("HIT Content-Type %q", hit.Header.ContentType())
	}
	for _, r := range []*fasthttp.Response{miss, hit} {
		if v := r.Header.Peek("Surrogate-Key"); len(v) > 0 {
			t.Errorf("client saw Surrogate-Key %q", v)
		}
		if v := r.Header.Peek("Surrogate-Control"); len(v) > 0 {
			t.Errorf("client saw Surrogate-Control %q", v)
		}
	}
	head := e.expect(t, "HEAD", "/item/1?tag=item-1", 200, "HIT")
	if len(head.Body()) != 0 || head.Header.ContentLength() != len(miss.Body()) {
		t.Errorf("HEAD: body %d bytes, Content-Length %d; want none and %d", len(head.Body()), head.Header.ContentLength(), len(miss.Body()))
	}
	if n := o.fetches("/item/1"); n != 1 {
		t.Errorf("origin fetched %d times, want 1", n)
	}

	// Another query is another entry.
	other := e.expect(t, "GET", "/item/1?tag=item-2", 200, "MISS")
	if string(other.Body()) != "/item/1 #2" {
		t.Errorf("other query body %q", other.Body())
	}
	e.expect(t, "GET", "/item/1?tag=item-2", 200, "HIT")

	// A HEAD miss is fetched as GET, and then serves GET.
	head = e.expect(t, "HEAD", "/item/head", 200, "MISS")
	if len(head.Body()) != 0 {
		t.Errorf("HEAD miss answered a body")
	}
	if got := e.expect(t, "GET", "/item/head", 200, "HIT"); string(got.Body()) != "/item/head #1" {
		t.Errorf("GET after HEAD miss: %q", got.Body())
	}

	// A client's conditional request is answered 304 from the entry.
	e.expect(t, "GET", "/item/etag?etag=v1", 200, "MISS")
	if r := e.expect(t, "GET", "/item/etag?etag=v1", 304, "HIT", "If-None-Match", `"v1"`); len(r.Body()) != 0 {
		t.Errorf("304 with a body")
	}
	if n := o.Requests.Load(); n != 4 {
		t.Errorf("origin saw %d requests, want 4", n)
	}
	if hits := gathered(t, e.reg, "edge_cache_requests_total", "result", "hit"); hits != 5 {
		t.Errorf("edge_cache_requests_total{result=hit} = %v, want 5", hits)
	}
	if misses := gathered(t, e.reg, "edge_cache_requests_total", "result", "miss"); misses != 4 {
		t.Errorf("edge_cache_requests_total{result=miss} = %v, want 4", misses)
	}
}

func TestCacheNeverStored(t *testing.T) {
	o := startCacheOrigin(t)
	e := startEdge(t, cacheConfig(o.Addr, `ttl = "1m"`))
	f := func(method, uri string, headers ...string) {
		t.Helper()
		for i := 0; i < 2; i++ {
			e.expect(t, method, uri, 200, "BYPASS", headers...)
		}
		if n := o.fetches(uri); n != 2 {
			t.Errorf("%s %s %v: origin fetched %d times, want 2", method, uri, headers, n)
		}
	}
	f("GET", "/item/a?cc=no-store")
	f("GET", "/item/b?cc=private")
	f("GET", "/item/c?cc=private,max-age=60")
	f("GET", "/item/d?cookie=1")
	f("POST", "/item/e")
	f("GET", "/item/f", "Authorization", "Bearer x")
	f("GET", "/item/g", "Cookie", "session=1")
	f("GET", "/item/h?cc=max-age=0") // no freshness, no validator

	// A status not listed passes through too, and so does edge's own 502.
	for i := 0; i < 2; i++ {
		e.expect(t, "GET", "/item/i?status=500", 500, "BYPASS")
	}
	if n := o.fetches("/item/i?status=500"); n != 2 {
		t.Errorf("500: origin fetched %d times, want 2", n)
	}
	if got := gathered(t, e.reg, "edge_cache_requests_total", "result", "bypass"); got != 18 {
		t.Errorf("edge_cache_requests_total{result=bypass} = %v, want 18", got)
	}
}

func TestCacheOriginMaxAge(t *testing.T) {
	o := startCacheOrigin(t)
	e := startEdge(t, cacheConfig(o.Addr, `ttl = "1h"`))
	const uri = "/item/m?cc=max-age=1"
	e.expect(t, "GET", uri, 200, "MISS")
	start := time.Now()
	e.expect(t, "GET", uri, 200, "HIT")
	resp := e.pollXCache(t, uri, "MISS") // max-age=1 wins over the route's ttl of 1h
	if d := time.Since(start); d < 500*time.Millisecond {
		t.Errorf("entry expired after %v, before its max-age", d)
	}
	if string(resp.Body()) != "/item/m #2" || o.fetches(uri) != 2 {
		t.Errorf("after expiry: body %q, %d fetches; want the second fetch", resp.Body(), o.fetches(uri))
	}
	// Without max-age the route's ttl applies: still a HIT.
	e.expect(t, "GET", "/item/ttl", 200, "MISS")
	e.expect(t, "GET", "/item/ttl", 200, "HIT")
}

func TestCacheCoalescesMisses(t *testing.T) {
	o := startCacheOrigin(t)
	e := startEdge(t, cacheConfig(o.Addr, `ttl = "1m"`))
	const uri = "/item/cold?sleep=800ms"
	const n = 100
	var wg sync.WaitGroup
	type result struct {
		status int
		xcache string
		body   string
		err    error
	}
	results := make([]result, n)
	client := &fasthttp.Client{MaxConnsPerHost: 2 * n}
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			req.SetRequestURI("http://" + e.addr + uri)
			err := client.DoTimeout(req, resp, 10*time.Second)
			results[i] = result{resp.StatusCode(), string(resp.Header.Peek("X-Cache")), string(resp.Body()), err}
		}()
	}
	wg.Wait()
	misses := 0
	for i, r := range results {
		if r.err != nil || r.status != 200 || r.body != "/item/cold #1" {
			t.Fatalf("request %d: %v %d %q", i, r.err, r.status, r.body)
		}
		if r.xcache == "MISS" {
			misses++
		}
	}
	if got := o.fetches(uri); got != 1 {
		t.Errorf("%d concurrent misses made %d origin fetches, want 1", n, got)
	}
	if misses != 1 {
		t.Errorf("%d answers said MISS, want 1 (the rest HIT)", misses)
	}
}

func TestCacheBigBody(t *testing.T) {
	o := startCacheOrigin(t)
	e := startEdge(t, cacheConfig(o.Addr, `ttl = "1m"`))
	const uri = "/item/big?size=1048576"
	want := pseudoRandom(1 << 20)
	for _, xc := range []string{"MISS", "HIT"} {
		if r := e.expect(t, "GET", uri, 200, xc); !bytes.Equal(r.Body(), want) {
			t.Fatalf("%s: body of %d bytes differs from the origin's", xc, len(r.Body()))
		}
	}
	// Above the route's max_entry: passed through, never stored.
	e2 := startEdge(t, cacheConfig(o.Addr, "ttl = \"1m\"\nmax_entry = \"512KB\""))
	for i := 0; i < 2; i++ {
		if r := e2.expect(t, "GET", "/item/big2?size=1048576", 200, "BYPASS"); !bytes.Equal(r.Body(), want) {
			t.Fatalf("bypassed body differs")
		}
	}
}

func TestCachePurge(t *testing.T) {
	o := startCacheOrigin(t)
	e := startEdge(t, cacheConfig(o.Addr, `ttl = "1m"`))
	srv := startAdmin(t, e.reg, "tok", e.px.RegisterAdmin)
	warm := func(uris ...string) {
		t.Helper()
		for _, u := range uris {
			e.do(t, "GET", u)
			e.expect(t, "GET", u, 200, "HIT")
		}
	}
	purge := func(body, want string) {
		t.Helper()
		if code, got := srv.callAs(t, "tok", "POST", "/cache/purge", body); code != 200 || got != want {
			t.Fatalf("purge %s = %d %s, want 200 %s", body, code, got, want)
		}
	}

	warm("/item/42", "/item/42?c=red", "/item/43")
	purge(`{"url":"/item/42"}`, `{"purged":{"url":"/item/42"}}`)
	e.expect(t, "GET", "/item/42", 200, "MISS")
	e.expect(t, "GET", "/item/42?c=red", 200, "MISS") // a path purges every query of it
	e.expect(t, "GET", "/item/43", 200, "HIT")

	warm("/item/7?tag=item-7+list", "/item/8?tag=item-8+list")
	purge(`{"tag":"item-7"}`, `{"purged":{"tag":"item-7"}}`)
	e.expect(t, "GET", "/item/7?tag=item-7+list", 200, "MISS")
	e.expect(t, "GET", "/item/8?tag=item-8+list", 200, "HIT")
	purge(`{"tag":"list"}`, `{"purged":{"tag":"list"}}`)
	e.expect(t, "GET", "/item/7?tag=item-7+list", 200, "MISS")
	e.expect(t, "GET", "/item/8?tag=item-8+list", 200, "MISS")

	warm("/list/a")
	purge(`{"route":"detail"}`, `{"purged":{"route":"detail"}}`)
	e.expect(t, "GET", "/item/43", 200, "MISS")
	e.expect(t, "GET", "/list/a", 200, "HIT")

	for kind, want := range map[string]float64{"url": 1, "tag": 2, "route": 1} {
		if got := mustMetric(t, e.reg, "edge_cache_purges_total", "kind", kind, "source", "admin"); got != want {
			t.Errorf("edge_cache_purges_total{kind=%q,source=\"admin\"} = %v, want %v", kind, got, want)
		}
	}
	if got := mustMetric(t, e.reg, "edge_cache_purges_total", "kind", "url", "source", "cluster"); got != 0 {
		t.Errorf("edge_cache_purges_total{kind=\"url\",source=\"cluster\"} = %v, want 0 (no cluster)", got)
	}

	f := func(body, token string, wantCode int, wantBody string) {
		t.Helper()
		if code, got := srv.callAs(t, token, "POST", "/cache/purge", body); code != wantCode || !strings.Contains(got, wantBody) {
			t.Errorf("purge %s = %d %s, want %d %s", body, code, got, wantCode, wantBody)
		}
	}
	f(`{"url":"/item/42"}`, "", 401, `"unauthorized"`)
	f(`{}`, "tok", 400, `"bad_purge"`)
	f(`{"url":"/a","tag":"b"}`, "tok", 400, `"bad_purge"`)
	f(`{"url":"item/42"}`, "tok", 400, `"bad_url"`)
	f(`{"tag":""}`, "tok", 400, `"bad_tag"`)
	f(`{"path":"/x"}`, "tok", 400, `"bad_json"`)
	f(`not json`, "tok", 400, `"bad_json"`)
	f(`{"route":"nope"}`, "tok", 404, `"unknown_route"`)
}

func TestCacheStale(t *testing.T) {
	o := startCacheOrigin(t)
	e := startEdge(t, cacheConfig(o.Addr, "ttl = \"1m\"\nstale = \"30s\""))

	// Inside the stale window a stale entry is answered at once and refreshed once in
	// the background.
	const uri = "/item/s?cc=max-age=1"
	e.expect(t, "GET", uri, 200, "MISS")
	stale := e.pollXCache(t, uri, "STALE")
	if string(stale.Body()) != "/item/s #1" {
		t.Errorf("STALE body %q", stale.Body())
	}
	fresh := e.pollXCache(t, uri, "HIT")
	if string(fresh.Body()) != "/item/s #2" {
		t.Errorf("refreshed body %q, want the second fetch", fresh.Body())
	}

	// The origin dies after expiry: clients keep getting the stale entry, 200.
	const uri2 = "/item/t?cc=max-age=1"
	e.expect(t, "GET", uri2, 200, "MISS")
	o.Stop()
	resp := e.pollXCache(t, uri2, "STALE")
	for i := 0; i < 5; i++ {
		if resp.StatusCode() != 200 || string(resp.Body()) != "/item/t #1" {
			t.Fatalf("origin down: %d %q, want the stale 200", resp.StatusCode(), resp.Body())
		}
		resp = e.expect(t, "GET", uri2, 200, "STALE")
	}
	if got := gathered(t, e.reg, "edge_cache_requests_total", "result", "stale"); got < 7 {
		t.Errorf("edge_cache_requests_total{result=stale} = %v, want at least 7", got)
	}
}

// Many concurrent stale hits start one background refresh.
func TestCacheStaleOneRefresh(t *testing.T) {
	o := startCacheOrigin(t)
	e := startEdge(t, cacheConfig(o.Addr, "ttl = \"1m\"\nstale = \"30s\""))
	const uri = "/item/r?cc=max-age=1&sleep=300ms"
	e.expect(t, "GET", uri, 200, "MISS")
	e.pollXCache(t, uri, "STALE")
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r := e.do(t, "GET", uri); r.StatusCode() != 200 {
				t.Errorf("stale answer %d", r.StatusCode())
			}
		}()
	}
	wg.Wait()
	e.pollXCache(t, uri, "HIT")
	if n := o.fetches(uri); n != 2 {
		t.Errorf("origin fetched %d times, want 2 (one store, one refresh)", n)
	}
}

func TestCacheRevalidate(t *testing.T) {
	o := startCacheOrigin(t)
	e := startEdge(t, cacheConfig(o.Addr, `ttl = "1m"`))
	const uri = "/item/v?cc=max-age=1&etag=v1"
	miss := e.expect(t, "GET", uri, 200, "MISS")
	// Poll until the entry has expired and one request revalidated it.
	deadline := time.Now().Add(5 * time.Second)
	var resp *fasthttp.Response
	for o.conditionals(uri) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no revalidation within 5s")
		}
		time.Sleep(20 * time.Millisecond)
		resp = e.do(t, "GET", uri)
	}
	if resp.StatusCode() != 200 || string(resp.Header.Peek("X-Cache")) != "HIT" || !bytes.Equal(resp.Body(), miss.Body()) {
		t.Errorf("revalidated answer: %d %q %q, want 200 HIT %q", resp.StatusCode(), resp.Header.Peek("X-Cache"), resp.Body(), miss.Body())
	}
	if string(resp.Header.Peek("ETag")) != `"v1"` {
		t.Errorf("revalidated answer lost its ETag: %q", resp.Header.Peek("ETag"))
	}
	if n, c := o.fetches(uri), o.conditionals(uri); n != 2 || c != 1 {
		t.Errorf("origin: %d requests, %d conditional; want 2 and 1", n, c)
	}
	if got := gathered(t, e.reg, "edge_cache_requests_total", "result", "revalidated"); got != 1 {
		t.Errorf("edge_cache_requests_total{result=revalidated} = %v, want 1", got)
	}
	e.expect(t, "GET", uri, 200, "HIT") // renewed: fresh again
}

func TestCacheMemoryBound(t *testing.T) {
	o := startCacheOrigin(t)
	e := startEdge(t, cacheConfig(o.Addr, `ttl = "1m"`, `cache_size = "32MB"`))
	// 3000 distinct URLs of 32 KiB: about 96 MiB offered to a 32 MiB cache.
	const workers, per = 8, 375
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &fasthttp.HostClient{Addr: e.addr}
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			for i := range per {
				req.SetRequestURI("http://" + e.addr + "/item/flood/" + strconv.Itoa(w) + "/" + strconv.Itoa(i) + "?size=32768")
				if err := c.DoTimeout(req, resp, 5*time.Second); err != nil || resp.StatusCode() != 200 {
					t.Errorf("flood: %v %d", err, resp.StatusCode())
					return
				}
			}
		}()
	}
	wg.Wait()
	bytesNow := mustMetric(t, e.reg, "edge_cache_bytes")
	maxBytes := mustMetric(t, e.reg, "edge_cache_max_bytes")
	evicted := mustMetric(t, e.reg, "edge_cache_evictions_bytes_total")
	if maxBytes < 32<<20 || maxBytes > 33<<20 || bytesNow > maxBytes || bytesNow < 16<<20 {
		t.Errorf("edge_cache_bytes %v, edge_cache_max_bytes %v: want at most about 32 MiB, and filled", bytesNow, maxBytes)
	}
	if evicted == 0 {
		t.Errorf("96 MiB into 32 MiB evicted nothing")
	}
}

func TestCacheSurvivesReload(t *testing.T) {
	o := startCacheOrigin(t)
	src := cacheConfig(o.Addr, `ttl = "1m"`)
	e := startEdge(t, src)
	e.expect(t, "GET", "/item/keep", 200, "MISS")
	e.expect(t, "GET", "/list/keep", 200, "MISS")
	if err := e.reload(t, cacheConfig(o.Addr, "ttl = \"2m\"\nstale = \"10s\"")); err != nil {
		t.Fatal(err)
	}
	e.expect(t, "GET", "/item/keep", 200, "HIT")
	e.expect(t, "GET", "/list/keep", 200, "HIT")

	// A new cache_size needs a restart once the cache holds memory.
	err := e.reload(t, cacheConfig(o.Addr, `ttl = "1m"`, `cache_size = "64MB"`))
	if !errors.Is(err, ErrRestartNeeded) || !strings.Contains(err.Error(), "cache_size") {
		t.Errorf("cache_size change: err = %v, want a restart-needed error naming cache_size", err)
	}
	e.expect(t, "GET", "/item/keep", 200, "HIT")

	// A route that loses its cache block passes through; its metric children go.
	if err := e.reload(t, strings.Replace(src, `cache { ttl = "1m" }`, "", 1)); err != nil {
		t.Fatal(err)
	}
	if r := e.do(t, "GET", "/list/keep"); len(r.Header.Peek("X-Cache")) != 0 {
		t.Errorf("uncached route answered X-Cache %q", r.Header.Peek("X-Cache"))
	}
	mfs, _ := e.reg.Gather()
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if mf.GetName() == "edge_cache_requests_total" && l.GetValue() == "list" {
					t.Errorf("edge_cache_requests_total still has route list")
				}
			}
		}
	}
}

func TestCacheKeyExpression(t *testing.T) {
	o := startCacheOrigin(t)
	e := startEdge(t, cacheConfig(o.Addr, "ttl = \"1m\"\nkey = \"header:X-Lang\""))
	en := e.expect(t, "GET", "/item/k", 200, "MISS", "X-Lang", "en")
	de := e.expect(t, "GET", "/item/k", 200, "MISS", "X-Lang", "de")
	none := e.expect(t, "GET", "/item/k", 200, "MISS")
	if string(en.Body()) == string(de.Body()) || string(de.Body()) == string(none.Body()) {
		t.Errorf("bodies %q %q %q, want three fetches", en.Body(), de.Body(), none.Body())
	}
	if r := e.expect(t, "GET", "/item/k", 200, "HIT", "X-Lang", "en"); !bytes.Equal(r.Body(), en.Body()) {
		t.Errorf("en HIT %q, want %q", r.Body(), en.Body())
	}
	e.expect(t, "GET", "/item/k", 200, "HIT")
}

// Followers of a leader whose answer is not cacheable, or who waited lock_timeout, go to
// the origin themselves.
func TestCacheFollowersFallBack(t *testing.T) {
	o := startCacheOrigin(t)
	e := startEdge(t, cacheConfig(o.Addr, "ttl = \"1m\"\nlock_timeout = \"100ms\""))
	run := func(uri, wantXCache string) {
		t.Helper()
		var wg sync.WaitGroup
		for range 5 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if r := e.do(t, "GET", uri); r.StatusCode() != 200 || string(r.Header.Peek("X-Cache")) != wantXCache {
					t.Errorf("GET %s: %d X-Cache %q", uri, r.StatusCode(), r.Header.Peek("X-Cache"))
				}
			}()
		}
		wg.Wait()
	}
	run("/item/nostore?cc=no-store&sleep=300ms", "BYPASS")
	if n := o.fetches("/item/nostore"); n != 5 {
		t.Errorf("uncacheable: %d origin fetches for 5 requests, want 5", n)
	}
	run("/item/slow?sleep=600ms", "MISS")
	if n := o.fetches("/item/slow"); n < 2 {
		t.Errorf("slow leader: %d origin fetches, want the followers' own after lock_timeout", n)
	}
	e.expect(t, "GET", "/item/slow?sleep=600ms", 200, "HIT")
}
