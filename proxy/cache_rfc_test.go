package proxy

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edge-gw/edge/internal/origintest"
	"github.com/valyala/fasthttp"
)

// Tests of issue 27 (the cache by the RFCs): one table per item, against a real origin
// that counts requests, asserting what the client sees.

// scriptAnswer is what a scriptOrigin answers to the n-th request (from 1) of a method
// and path: a status and header name, value pairs (a name may repeat: one line each).
type scriptAnswer func(method string, n int) (status int, hdrs []string)

// always answers status with hdrs to every request.
func always(status int, hdrs ...string) scriptAnswer {
	return func(string, int) (int, []string) { return status, hdrs }
}

// scriptOrigin is a real origin answering each path by its script (paths without one
// get 200 "max-age=60"); the body is "METHOD PATH #n".
type scriptOrigin struct {
	*origintest.Origin
	mu    sync.Mutex
	count map[string]int // by "METHOD PATH"
}

func startScriptOrigin(t *testing.T, scripts map[string]scriptAnswer) *scriptOrigin {
	o := &scriptOrigin{count: map[string]int{}}
	o.Origin = origintest.Start(t, func(ctx *fasthttp.RequestCtx) {
		path, method := string(ctx.Path()), string(ctx.Method())
		o.mu.Lock()
		o.count[method+" "+path]++
		n := o.count[method+" "+path]
		o.mu.Unlock()
		status, hdrs := 200, []string{"Cache-Control", "max-age=60"}
		if s := scripts[path]; s != nil {
			status, hdrs = s(method, n)
		}
		ctx.SetStatusCode(status)
		for i := 0; i+1 < len(hdrs); i += 2 {
			ctx.Response.Header.Add(hdrs[i], hdrs[i+1])
		}
		ctx.SetContentType("text/plain")
		if status != 204 && status != 304 {
			ctx.SetBodyString(fmt.Sprintf("%s %s #%d", method, path, n))
		}
	})
	return o
}

// gets is how many GET requests for path reached the origin.
func (o *scriptOrigin) gets(path string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.count["GET "+path]
}

// scriptConfig caches every path of origin with the given cache block body.
func scriptConfig(origin, cacheBlock string) string {
	return fmt.Sprintf(`
upstream "app" {
  servers         = [%q]
  timeout         = "2s"
  connect_timeout = "200ms"
}
route "all" {
  upstream = "app"
  cache {
%s
  }
}
`, origin, cacheBlock)
}

// Item 1: RFC 9111 §4.4, a non-error answer to an unsafe method invalidates the target
// URI and the same-host Location / Content-Location URIs.
func TestCacheInvalidationAfterUnsafe(t *testing.T) {
	type row struct {
		name, method, path string
		status             int
		hdrs               []string // the unsafe answer's headers
		fresh, invalidated []string // paths (GET before) still HIT, or MISS again after
	}
	hostRef := func(p string) string { return "http://HOST" + p } // HOST: the edge's address
	rows := []row{
		{"POST 200 invalidates its target", "POST", "/a", 200, nil, []string{"/a-other"}, []string{"/a"}},
		{"POST 500 does not", "POST", "/b", 500, nil, []string{"/b"}, nil},
		{"DELETE 404 does not", "DELETE", "/c", 404, nil, []string{"/c"}, nil},
		{"PUT 204 with Location invalidates it too", "PUT", "/d", 204, []string{"Location", "/d-y"}, nil, []string{"/d", "/d-y"}},
		{"cross-origin Location is ignored", "POST", "/e", 201, []string{"Location", "http://other.example/e-y"}, []string{"/e-y"}, []string{"/e"}},
		{"same-host absolute Content-Location", "POST", "/f", 200, []string{"Content-Location", hostRef("/f-y?v=2")}, []string{"/f-y"}, []string{"/f", "/f-y?v=2"}},
		{"relative Location", "PATCH", "/g/h", 303, []string{"Location", "../g-z"}, nil, []string{"/g/h", "/g-z"}},
		{"an unknown method invalidates", "FROB", "/i", 200, nil, nil, []string{"/i"}},
		{"a safe method does not", "OPTIONS", "/j", 200, nil, []string{"/j"}, nil},
		{"the query is part of the target", "POST", "/k?x=1", 200, nil, []string{"/k", "/k?x=2"}, []string{"/k?x=1"}},
	}
	scripts := map[string]scriptAnswer{}
	var edgeHost string
	for _, r := range rows {
		r := r
		scripts[pathOf(r.path)] = func(method string, n int) (int, []string) {
			if method == "GET" {
				return 200, []string{"Cache-Control", "max-age=600"}
			}
			hdrs := append([]string(nil), r.hdrs...)
			for i := range hdrs {
				hdrs[i] = strings.ReplaceAll(hdrs[i], "HOST", edgeHost)
			}
			return r.status, hdrs
		}
	}
	o := startScriptOrigin(t, scripts)
	e := startEdge(t, scriptConfig(o.Addr, `ttl = "1m"`))
	edgeHost = e.addr
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			all := append(append([]string{}, r.fresh...), r.invalidated...)
			for _, p := range all {
				e.expect(t, "GET", p, 200, "MISS")
				e.expect(t, "GET", p, 200, "HIT")
			}
			resp := e.do(t, r.method, r.path)
			if resp.StatusCode() != r.status || string(resp.Header.Peek("X-Cache")) != "BYPASS" {
				t.Fatalf("%s %s = %d X-Cache %q, want %d BYPASS", r.method, r.path, resp.StatusCode(), resp.Header.Peek("X-Cache"), r.status)
			}
			for _, p := range r.fresh {
				if got := e.do(t, "GET", p); string(got.Header.Peek("X-Cache")) != "HIT" {
					t.Errorf("after %s %s %d: GET %s X-Cache %q, want HIT", r.method, r.path, r.status, p, got.Header.Peek("X-Cache"))
				}
			}
			for _, p := range r.invalidated {
				before := o.gets(pathOf(p))
				got := e.do(t, "GET", p)
				if string(got.Header.Peek("X-Cache")) != "MISS" || o.gets(pathOf(p)) != before+1 {
					t.Errorf("after %s %s %d: GET %s = X-Cache %q, origin GETs %d→%d; want MISS and one fetch",
						r.method, r.path, r.status, p, got.Header.Peek("X-Cache"), before, o.gets(pathOf(p)))
				}
			}
		})
	}
}

// Item 1 across a cluster: a POST through edge A invalidates what edge B stored.
func TestCacheInvalidationCluster(t *testing.T) {
	o := startScriptOrigin(t, map[string]scriptAnswer{"/p/2": func(method string, _ int) (int, []string) {
		if method == "POST" {
			return 500, nil
		}
		return 200, []string{"Cache-Control", "max-age=600"}
	}})
	src := scriptConfig(o.Addr, `ttl = "1m"`)
	edges := startClusterEdges(t, 2, func(int) string { return src })
	a, b := edges[0], edges[1]
	for _, p := range []string{"/p/1", "/p/2"} {
		b.expect(t, "GET", p, 200, "MISS")
		b.expect(t, "GET", p, 200, "HIT")
	}
	a.expect(t, "POST", "/p/1", 200, "BYPASS")
	start := time.Now()
	waitUntil(t, clusterDeadline, "B invalidates /p/1", func() bool {
		return string(b.do(t, "GET", "/p/1").Header.Peek("X-Cache")) == "MISS"
	})
	t.Logf("a POST on A invalidated B's entry after %v", time.Since(start).Round(time.Millisecond))
	b.expect(t, "GET", "/p/1", 200, "HIT") // stored again
	b.expect(t, "GET", "/p/2", 200, "HIT") // untouched
	if n := o.gets("/p/1"); n != 2 {
		t.Errorf("origin saw %d GETs of /p/1, want 2 (one per edge B fill)", n)
	}
	// A POST answered with an error invalidates nothing anywhere.
	o2 := o.gets("/p/2")
	a.expect(t, "POST", "/p/2", 500, "BYPASS")
	time.Sleep(300 * time.Millisecond) // more than a gossip round; nothing may arrive
	b.expect(t, "GET", "/p/2", 200, "HIT")
	if o.gets("/p/2") != o2 {
		t.Errorf("B fetched /p/2 again")
	}
}

// Item 2: RFC 9213 targeted fields govern edge's cache ahead of Cache-Control and are
// consumed (not shown to clients) unless forward_targeted.
func TestCacheTargetedControl(t *testing.T) {
	scripts := map[string]scriptAnswer{
		"/cdn-max-age":       always(200, "Cache-Control", "no-store", "CDN-Cache-Control", "max-age=600"),
		"/cdn-no-store":      always(200, "Cache-Control", "max-age=600", "CDN-Cache-Control", "no-store"),
		"/cdn-private":       always(200, "Cache-Control", "max-age=600", "CDN-Cache-Control", "private"),
		"/cdn-beats-private": always(200, "Cache-Control", "private", "CDN-Cache-Control", "max-age=600"),
		"/edge-first":        always(200, "CDN-Cache-Control", "max-age=600", "Edge-Cache-Control", "no-store"),
		"/edge-max-age":      always(200, "Cache-Control", "max-age=0", "Edge-Cache-Control", "max-age=600"),
		"/cdn-no-cache":      always(200, "Cache-Control", "max-age=600", "CDN-Cache-Control", "no-cache", "ETag", `"v1"`),
	}
	o := startScriptOrigin(t, scripts)
	type row struct {
		path          string
		first, second string   // X-Cache of two GETs
		gets          int      // origin GETs after them
		shown         []string // the CDN-/Edge-Cache-Control fields the client sees
	}
	for _, tc := range []struct {
		name  string
		block string
		rows  []row
	}{
		{"default list", `ttl = "1m"`, []row{
			{"/cdn-max-age", "MISS", "HIT", 1, nil},
			{"/cdn-no-store", "BYPASS", "BYPASS", 2, nil},
			{"/cdn-private", "BYPASS", "BYPASS", 2, nil},
			{"/cdn-beats-private", "MISS", "HIT", 1, nil},
			{"/cdn-no-cache", "MISS", "MISS", 2, nil},                                // stored, revalidated before use (the origin answers 200)
			{"/edge-max-age", "BYPASS", "BYPASS", 2, []string{"Edge-Cache-Control"}}, // not on the list: a plain header
		}},
		{"Edge-Cache-Control first, forwarded", `
    ttl              = "1m"
    targeted         = ["Edge-Cache-Control", "CDN-Cache-Control"]
    forward_targeted = true`, []row{
			{"/edge-first", "BYPASS", "BYPASS", 2, []string{"CDN-Cache-Control", "Edge-Cache-Control"}},
			{"/edge-max-age", "MISS", "HIT", 1, []string{"Edge-Cache-Control"}},
			{"/cdn-max-age", "MISS", "HIT", 1, []string{"CDN-Cache-Control"}},
		}},
		{"none", `
    ttl      = "1m"
    targeted = []`, []row{
			{"/cdn-max-age", "BYPASS", "BYPASS", 2, []string{"CDN-Cache-Control"}},
			{"/cdn-no-store", "MISS", "HIT", 1, []string{"CDN-Cache-Control"}},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := startEdge(t, scriptConfig(o.Addr, tc.block))
			for _, r := range tc.rows {
				before := o.gets(r.path)
				for i, want := range []string{r.first, r.second} {
					resp := e.expect(t, "GET", r.path, 200, want)
					for _, f := range []string{"CDN-Cache-Control", "Edge-Cache-Control"} {
						v := resp.Header.Peek(f)
						if slices.Contains(r.shown, f) != (len(v) > 0) {
							t.Errorf("GET %s #%d: client sees %s %q, want it shown: %v", r.path, i+1, f, v, slices.Contains(r.shown, f))
						}
					}
				}
				if n := o.gets(r.path) - before; n != r.gets {
					t.Errorf("GET %s twice: origin fetched %d times, want %d", r.path, n, r.gets)
				}
			}
		})
	}
}

// Item 3: strict freshness parsing. An Expires that is no HTTP-date or comes on several
// lines, and an Age that is not one non-negative integer, mean stale; Vary is read on
// all its lines.
func TestCacheStrictFreshness(t *testing.T) {
	in := func(d time.Duration) string { return string(fasthttp.AppendHTTPDate(nil, time.Now().Add(d))) }
	rfc850 := func(d time.Duration) string { return time.Now().Add(d).UTC().Format("Monday, 02-Jan-06 15:04:05 GMT") }
	asctime := func(d time.Duration) string { return time.Now().Add(d).UTC().Format(time.ANSIC) }
	type row struct {
		path          string
		hdrs          func() []string
		second        string // X-Cache of the second GET (the first is MISS or BYPASS)
		firstBypassed bool
	}
	rows := []row{
		{"/expires-imf", func() []string { return []string{"Expires", in(time.Hour)} }, "HIT", false},
		{"/expires-rfc850", func() []string { return []string{"Expires", rfc850(time.Hour)} }, "HIT", false},
		{"/expires-asctime", func() []string { return []string{"Expires", asctime(time.Hour)} }, "HIT", false},
		{"/expires-zero", func() []string { return []string{"Expires", "0"} }, "BYPASS", true},
		{"/expires-pst", func() []string { return []string{"Expires", strings.Replace(rfc850(time.Hour), "GMT", "PST", 1)} }, "BYPASS", true},
		{"/expires-twice", func() []string { return []string{"Expires", in(time.Hour), "Expires", in(time.Hour)} }, "BYPASS", true},
		{"/expires-bad-validator", func() []string { return []string{"Expires", "soon", "ETag", `"e1"`} }, "MISS", false}, // stored stale, revalidated (the origin answers 200)
		{"/age-ok", func() []string { return []string{"Cache-Control", "max-age=600", "Age", "10"} }, "HIT", false},
		{"/age-negative", func() []string { return []string{"Cache-Control", "max-age=600", "Age", "-1"} }, "BYPASS", true},
		{"/age-list", func() []string { return []string{"Cache-Control", "max-age=600", "Age", "1, 2"} }, "BYPASS", true},
		{"/age-twice", func() []string { return []string{"Cache-Control", "max-age=600", "Age", "1", "Age", "1"} }, "BYPASS", true},
		{"/vary-star-second-line", func() []string {
			return []string{"Cache-Control", "max-age=600", "Vary", "Accept-Language", "Vary", "*"}
		}, "BYPASS", true},
	}
	scripts := map[string]scriptAnswer{}
	for _, r := range rows {
		h := r.hdrs
		scripts[r.path] = func(method string, n int) (int, []string) { return 200, h() }
	}
	o := startScriptOrigin(t, scripts)
	e := startEdge(t, scriptConfig(o.Addr, `ttl = "1m"`))
	for _, r := range rows {
		first := "MISS"
		if r.firstBypassed {
			first = "BYPASS"
		}
		e.expect(t, "GET", r.path, 200, first)
		hit := e.expect(t, "GET", r.path, 200, r.second)
		wantGets := 1
		if r.second != "HIT" {
			wantGets = 2
		}
		if n := o.gets(r.path); n != wantGets {
			t.Errorf("GET %s twice: origin fetched %d times, want %d", r.path, n, wantGets)
		}
		if r.path == "/age-ok" {
			if age := string(hit.Header.Peek("Age")); age != "10" && age != "11" {
				t.Errorf("GET /age-ok HIT: Age %q, want the origin's 10 plus time in the cache", age)
			}
		}
	}
	// Vary on two lines: both headers count.
	o2 := startScriptOrigin(t, map[string]scriptAnswer{
		"/vary": always(200, "Cache-Control", "max-age=600", "Vary", "Accept-Language", "Vary", "X-Device"),
	})
	e2 := startEdge(t, scriptConfig(o2.Addr, `ttl = "1m"`))
	e2.expect(t, "GET", "/vary", 200, "MISS", "Accept-Language", "de", "X-Device", "phone")
	e2.expect(t, "GET", "/vary", 200, "HIT", "Accept-Language", "de", "X-Device", "phone")
	e2.expect(t, "GET", "/vary", 200, "MISS", "Accept-Language", "de", "X-Device", "desktop")
	if n := o2.gets("/vary"); n != 2 {
		t.Errorf("Vary on two lines: origin fetched %d times, want 2", n)
	}
}

// Item 5: the origin's stale-while-revalidate and stale-if-error (RFC 5861) are honoured
// inside their windows and never after; a route's stale overrides them.
func TestCacheStaleExtensions(t *testing.T) {
	var mu sync.Mutex
	failing := map[string]bool{}
	fail := func(p string) { mu.Lock(); failing[p] = true; mu.Unlock() }
	answer := func(p, cc string) scriptAnswer {
		return func(string, int) (int, []string) {
			mu.Lock()
			defer mu.Unlock()
			if failing[p] {
				return 503, []string{"Cache-Control", "no-store"}
			}
			return 200, []string{"Cache-Control", cc}
		}
	}
	scripts := map[string]scriptAnswer{
		"/swr":          answer("/swr", "max-age=1, stale-while-revalidate=3"),
		"/sie":          answer("/sie", "max-age=1, stale-if-error=3"),
		"/sie-must":     answer("/sie-must", "max-age=1, stale-if-error=30, must-revalidate"),
		"/swr-override": answer("/swr-override", "max-age=1, stale-while-revalidate=600"),
	}
	o := startScriptOrigin(t, scripts)
	e := startEdge(t, scriptConfig(o.Addr, `ttl = "1m"`))
	eStale := startEdge(t, scriptConfig(o.Addr, `
    ttl   = "1m"
    stale = "1s"`))

	stored := time.Now()
	e.expect(t, "GET", "/swr", 200, "MISS")
	e.expect(t, "GET", "/sie", 200, "MISS")
	e.expect(t, "GET", "/sie-must", 200, "MISS")
	eStale.expect(t, "GET", "/swr-override", 200, "MISS")
	fail("/sie")
	fail("/sie-must")
	fail("/swr-override")
	time.Sleep(time.Until(stored.Add(1500 * time.Millisecond))) // all expired, inside the windows

	// stale-while-revalidate: answered at once, one background refresh.
	if r := e.expect(t, "GET", "/swr", 200, "STALE"); !strings.HasSuffix(string(r.Body()), "#1") {
		t.Errorf("STALE /swr body %q, want the stored #1", r.Body())
	}
	waitUntil(t, 5*time.Second, "background refresh of /swr", func() bool { return o.gets("/swr") == 2 })
	// stale-if-error: the origin's 503 is replaced by the entry.
	if r := e.expect(t, "GET", "/sie", 200, "STALE"); !strings.HasSuffix(string(r.Body()), "#1") {
		t.Errorf("stale-if-error /sie body %q, want the stored #1", r.Body())
	}
	e.expect(t, "GET", "/sie-must", 503, "BYPASS") // must-revalidate forbids it
	// The route's stale = "1s" overrides the origin's 600 s: past it the entry is not
	// served (the origin now fails, so the client sees its 503).
	time.Sleep(time.Until(stored.Add(3 * time.Second)))
	eStale.expect(t, "GET", "/swr-override", 503, "BYPASS")

	// Never after: past max-age + 3 s the 503 reaches the client.
	time.Sleep(time.Until(stored.Add(5500 * time.Millisecond)))
	e.expect(t, "GET", "/sie", 503, "BYPASS")
	if n := o.gets("/sie"); n != 3 {
		t.Errorf("origin saw %d GETs of /sie, want 3 (fill, error answered stale, error passed on)", n)
	}
}

// Item 8: with explicit freshness 204, 3xx, 4xx and 5xx answers are stored when the
// route lists them; the route's ttl (heuristic freshness) only for the statuses RFC 9110
// marks heuristically cacheable.
func TestCacheStatuses(t *testing.T) {
	type row struct {
		path   string
		status int
		cc     string // Cache-Control of the answer, "" none
		want   string // X-Cache of the second GET
	}
	rows := []row{
		{"/s204", 204, "", "HIT"},
		{"/s302", 302, "max-age=60", "HIT"},
		{"/s302-heuristic", 302, "", "BYPASS"},
		{"/s307", 307, "max-age=60", "HIT"},
		{"/s403", 403, "max-age=60", "HIT"},
		{"/s403-heuristic", 403, "", "BYPASS"},
		{"/s410", 410, "", "HIT"},
		{"/s500", 500, "max-age=60", "HIT"},
		{"/s500-heuristic", 500, "", "BYPASS"},
		{"/s503", 503, "s-maxage=60", "HIT"},
		{"/s501", 501, "", "HIT"},
		{"/s418-unlisted", 418, "max-age=60", "BYPASS"},
	}
	scripts := map[string]scriptAnswer{}
	for _, r := range rows {
		r := r
		scripts[r.path] = func(string, int) (int, []string) {
			h := []string{"Location", "/elsewhere"}
			if r.cc != "" {
				h = append(h, "Cache-Control", r.cc)
			}
			return r.status, h
		}
	}
	o := startScriptOrigin(t, scripts)
	e := startEdge(t, scriptConfig(o.Addr, `
    ttl      = "1m"
    statuses = [200, 204, 302, 307, 403, 410, 500, 501, 503]`))
	for _, r := range rows {
		first := "MISS"
		if r.want == "BYPASS" {
			first = "BYPASS"
		}
		e.expect(t, "GET", r.path, r.status, first)
		resp := e.expect(t, "GET", r.path, r.status, r.want)
		wantGets := 1
		if r.want == "BYPASS" {
			wantGets = 2
		}
		if n := o.gets(r.path); n != wantGets {
			t.Errorf("GET %s (%d) twice: origin fetched %d times, want %d", r.path, r.status, n, wantGets)
		}
		if r.want == "HIT" && (len(resp.Header.Peek("Age")) == 0 || string(resp.Header.Peek("Location")) != "/elsewhere") {
			t.Errorf("GET %s HIT: Age %q Location %q", r.path, resp.Header.Peek("Age"), resp.Header.Peek("Location"))
		}
	}
	// Without statuses the default list applies: 500 with max-age is not stored.
	e2 := startEdge(t, scriptConfig(o.Addr, `ttl = "1m"`))
	e2.expect(t, "GET", "/s500", 500, "BYPASS")
}

func TestSameHostURI(t *testing.T) {
	for _, tc := range []struct{ ref, want string }{
		{"/a/b?c=1", "/a/b?c=1"},
		{"/a#frag", "/a"},
		{"http://shop.example/x", "/x"},
		{"HTTPS://Shop.Example?q=1", "/?q=1"},
		{"https://shop.example", "/"},
		{"//shop.example/y", "/y"},
		{"//other.example/y", ""},
		{"http://other.example/x", ""},
		{"http://shop.example:8080/x", ""}, // another port, another origin
		{"ftp://shop.example/x", ""},
		{"mailto:a@shop.example", ""},
		{"c", "/a/c"},
		{"../c?d", "/c?d"},
		{"?p=2", "/a/b?p=2"},
		{"#only-fragment", ""},
		{"", ""},
	} {
		got, ok := sameHostURI([]byte(tc.ref), []byte("shop.example"), []byte("/a/b?c=1"))
		if !ok {
			got = nil
		}
		if string(got) != tc.want || ok != (tc.want != "") {
			t.Errorf("sameHostURI(%q) = %q, %v; want %q", tc.ref, got, ok, tc.want)
		}
	}
}
