package proxy

import (
	"bytes"
	"sync"
	"testing"
	"time"

	"github.com/edge-gw/edge/internal/origintest"
	"github.com/valyala/fasthttp"
)

const rangeLastModified = "Wed, 02 Jan 2030 00:00:00 GMT"

// rangeOrigin is a real origin answering every path with the same 1000 bytes, ETag "r1"
// and a fixed Last-Modified, fresh for the max-age in query cc (default 600); it answers
// 304 to a matching If-None-Match, and counts per path what reached it.
type rangeOrigin struct {
	*origintest.Origin
	mu                     sync.Mutex
	count, cond, withRange map[string]int
}

func startRangeOrigin(t *testing.T) *rangeOrigin {
	o := &rangeOrigin{count: map[string]int{}, cond: map[string]int{}, withRange: map[string]int{}}
	o.Origin = origintest.Start(t, func(ctx *fasthttp.RequestCtx) {
		p := string(ctx.Path())
		inm := string(ctx.Request.Header.Peek("If-None-Match"))
		o.mu.Lock()
		o.count[p]++
		if inm != "" {
			o.cond[p]++
		}
		if len(ctx.Request.Header.Peek("Range")) > 0 || len(ctx.Request.Header.Peek("If-Range")) > 0 {
			o.withRange[p]++
		}
		o.mu.Unlock()
		h := &ctx.Response.Header
		cc := string(ctx.QueryArgs().Peek("cc"))
		if cc == "" {
			cc = "max-age=600"
		}
		h.Set("Cache-Control", cc)
		h.Set("ETag", `"r1"`)
		h.Set("Last-Modified", rangeLastModified)
		if inm == `"r1"` {
			ctx.SetStatusCode(304)
			return
		}
		h.SetContentType("application/octet-stream")
		body := pseudoRandom(1000)
		if r := ctx.Request.Header.Peek("Range"); len(r) > 0 { // one range, as origins do
			if a, b, err := fasthttp.ParseByteRange(r, len(body)); err == nil {
				h.SetContentRange(a, b, len(body))
				ctx.SetStatusCode(206)
				body = body[a : b+1]
			}
		}
		ctx.SetBody(body)
	})
	return o
}

// seen returns the requests for path that reached the origin: all, conditional, and
// those carrying Range or If-Range.
func (o *rangeOrigin) seen(path string) (all, cond, withRange int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.count[path], o.cond[path], o.withRange[path]
}

// TestCacheRange: Range requests are answered from the stored whole response; the
// origin is asked once, without Range.
func TestCacheRange(t *testing.T) {
	o := startRangeOrigin(t)
	e := startEdge(t, cacheConfig(o.Addr, `ttl = "1m"`))
	body := pseudoRandom(1000)
	e.expect(t, "GET", "/item/r", 200, "MISS")
	whole := "whole"
	cases := []struct {
		name    string
		method  string
		headers []string
		status  int
		crange  string // Content-Range; "whole": 200 with the whole body
		from    int    // the slice of body expected for a 206
		to      int
	}{
		{"first bytes", "GET", []string{"Range", "bytes=0-9"}, 206, "bytes 0-9/1000", 0, 10},
		{"middle", "GET", []string{"Range", "bytes=100-199"}, 206, "bytes 100-199/1000", 100, 200},
		{"suffix", "GET", []string{"Range", "bytes=-10"}, 206, "bytes 990-999/1000", 990, 1000},
		{"open-ended", "GET", []string{"Range", "bytes=995-"}, 206, "bytes 995-999/1000", 995, 1000},
		{"last past the end", "GET", []string{"Range", "bytes=990-5000"}, 206, "bytes 990-999/1000", 990, 1000},
		{"unsatisfiable", "GET", []string{"Range", "bytes=1000-"}, 416, "bytes */1000", 0, 0},
		{"multi-range: whole", "GET", []string{"Range", "bytes=0-1,5-6"}, 200, whole, 0, 0},
		{"invalid range: whole", "GET", []string{"Range", "bytes=9-1"}, 200, whole, 0, 0},
		{"If-Range ETag match", "GET", []string{"Range", "bytes=0-9", "If-Range", `"r1"`}, 206, "bytes 0-9/1000", 0, 10},
		{"If-Range ETag mismatch", "GET", []string{"Range", "bytes=0-9", "If-Range", `"r0"`}, 200, whole, 0, 0},
		{"If-Range weak ETag", "GET", []string{"Range", "bytes=0-9", "If-Range", `W/"r1"`}, 200, whole, 0, 0},
		{"If-Range date match", "GET", []string{"Range", "bytes=0-9", "If-Range", rangeLastModified}, 206, "bytes 0-9/1000", 0, 10},
		{"If-Range date mismatch", "GET", []string{"Range", "bytes=0-9", "If-Range", "Tue, 01 Jan 2030 00:00:00 GMT"}, 200, whole, 0, 0},
		{"HEAD ignores Range", "HEAD", []string{"Range", "bytes=0-9"}, 200, "", 0, 0},
	}
	for _, c := range cases {
		r := e.expect(t, c.method, "/item/r", c.status, "HIT", c.headers...)
		if len(r.Header.Peek("Age")) == 0 || len(r.Header.Peek("Date")) == 0 {
			t.Errorf("%s: Age %q Date %q, want both", c.name, r.Header.Peek("Age"), r.Header.Peek("Date"))
		}
		cr := string(r.Header.Peek("Content-Range"))
		switch {
		case c.crange == whole:
			if cr != "" || !bytes.Equal(r.Body(), body) {
				t.Errorf("%s: Content-Range %q, %d bytes; want the whole body", c.name, cr, len(r.Body()))
			}
		case c.status == 206:
			if cr != c.crange || !bytes.Equal(r.Body(), body[c.from:c.to]) {
				t.Errorf("%s: Content-Range %q, body %d bytes; want %q and bytes %d-%d", c.name, cr, len(r.Body()), c.crange, c.from, c.to-1)
			}
			if r.Header.ContentLength() != c.to-c.from {
				t.Errorf("%s: Content-Length %d, want %d", c.name, r.Header.ContentLength(), c.to-c.from)
			}
		default:
			if cr != c.crange || len(r.Body()) != 0 {
				t.Errorf("%s: Content-Range %q, %d bytes; want %q and no body", c.name, cr, len(r.Body()), c.crange)
			}
		}
	}
	if all, _, withRange := o.seen("/item/r"); all != 1 || withRange != 0 {
		t.Errorf("origin: %d requests, %d with Range; want 1 and 0", all, withRange)
	}

	// A Range request that misses: the origin is asked for the whole body (stored), the
	// client gets its range; then a plain GET is a HIT with the whole body.
	r := e.expect(t, "GET", "/item/rmiss", 206, "MISS", "Range", "bytes=10-19")
	if cr := string(r.Header.Peek("Content-Range")); cr != "bytes 10-19/1000" || !bytes.Equal(r.Body(), body[10:20]) {
		t.Errorf("range miss: Content-Range %q, body %d bytes", cr, len(r.Body()))
	}
	if r = e.expect(t, "GET", "/item/rmiss", 200, "HIT"); !bytes.Equal(r.Body(), body) {
		t.Errorf("GET after range miss: %d bytes, want the whole body", len(r.Body()))
	}
	if all, _, withRange := o.seen("/item/rmiss"); all != 1 || withRange != 0 {
		t.Errorf("range miss: origin saw %d requests, %d with Range; want 1 and 0", all, withRange)
	}
}

// TestCacheRangeTooLarge: a Range request whose whole answer is too large to store
// (over max_entry, so it streams) gets its range from the origin, not the whole body.
func TestCacheRangeTooLarge(t *testing.T) {
	o := startRangeOrigin(t)
	e := startEdge(t, cacheConfig(o.Addr, "ttl = \"1m\"\nmax_entry = \"500B\""))
	body := pseudoRandom(1000)
	r := e.expect(t, "GET", "/item/big", 206, "BYPASS", "Range", "bytes=10-19", "If-Range", `"r1"`)
	if cr := string(r.Header.Peek("Content-Range")); cr != "bytes 10-19/1000" || !bytes.Equal(r.Body(), body[10:20]) {
		t.Errorf("Content-Range %q, body %d bytes; want bytes 10-19", cr, len(r.Body()))
	}
	// Once without Range (the whole answer, which streamed and was dropped), then
	// with the client's Range and If-Range.
	if all, cond, withRange := o.seen("/item/big"); all != 2 || cond != 0 || withRange != 1 {
		t.Errorf("origin: %d requests, %d conditional, %d with Range; want 2, 0, 1", all, cond, withRange)
	}
	r = e.expect(t, "GET", "/item/big", 200, "BYPASS")
	if !bytes.Equal(r.Body(), body) {
		t.Errorf("GET: %d bytes, want the whole body", len(r.Body()))
	}
}

// TestCacheConditional: If-None-Match and If-Modified-Since are answered 304 from a
// fresh entry; past its freshness the origin revalidates it first.
func TestCacheConditional(t *testing.T) {
	o := startRangeOrigin(t)
	e := startEdge(t, cacheConfig(o.Addr, `ttl = "1m"`))
	body := pseudoRandom(1000)
	e.expect(t, "GET", "/item/c", 200, "MISS")
	cases := []struct {
		name    string
		method  string
		headers []string
		status  int
	}{
		{"If-None-Match match", "GET", []string{"If-None-Match", `"r1"`}, 304},
		{"If-None-Match weak", "GET", []string{"If-None-Match", `W/"r1"`}, 304},
		{"If-None-Match list", "GET", []string{"If-None-Match", `"x", "r1"`}, 304},
		{"If-None-Match *", "GET", []string{"If-None-Match", `*`}, 304},
		{"If-None-Match mismatch", "GET", []string{"If-None-Match", `"r0"`}, 200},
		{"If-Modified-Since equal", "GET", []string{"If-Modified-Since", rangeLastModified}, 304},
		{"If-Modified-Since later", "GET", []string{"If-Modified-Since", "Thu, 03 Jan 2030 00:00:00 GMT"}, 304},
		{"If-Modified-Since earlier", "GET", []string{"If-Modified-Since", "Tue, 01 Jan 2030 00:00:00 GMT"}, 200},
		{"If-None-Match wins over If-Modified-Since", "GET", []string{"If-None-Match", `"r0"`, "If-Modified-Since", rangeLastModified}, 200},
		{"HEAD If-None-Match", "HEAD", []string{"If-None-Match", `"r1"`}, 304},
		{"304 wins over Range", "GET", []string{"If-None-Match", `"r1"`, "Range", "bytes=0-9"}, 304},
	}
	for _, c := range cases {
		r := e.expect(t, c.method, "/item/c", c.status, "HIT", c.headers...)
		if len(r.Header.Peek("Age")) == 0 || len(r.Header.Peek("Date")) == 0 {
			t.Errorf("%s: Age %q Date %q, want both", c.name, r.Header.Peek("Age"), r.Header.Peek("Date"))
		}
		if string(r.Header.Peek("ETag")) != `"r1"` || string(r.Header.Peek("Cache-Control")) != "max-age=600" ||
			string(r.Header.Peek("Last-Modified")) != rangeLastModified {
			t.Errorf("%s: ETag %q Cache-Control %q Last-Modified %q, want the stored ones", c.name,
				r.Header.Peek("ETag"), r.Header.Peek("Cache-Control"), r.Header.Peek("Last-Modified"))
		}
		switch {
		case c.status == 304 && len(r.Body()) != 0:
			t.Errorf("%s: 304 with %d bytes of body", c.name, len(r.Body()))
		case c.status == 200 && c.method == "GET" && !bytes.Equal(r.Body(), body):
			t.Errorf("%s: 200 with %d bytes, want the whole body", c.name, len(r.Body()))
		}
	}
	if all, cond, _ := o.seen("/item/c"); all != 1 || cond != 0 {
		t.Errorf("origin: %d requests, %d conditional; want 1 and 0", all, cond)
	}

	// A conditional request that misses: the origin gets an unconditional one (the
	// entry needs the body), the client its 304.
	e.expect(t, "GET", "/item/cmiss", 304, "MISS", "If-None-Match", `"r1"`)
	if all, cond, _ := o.seen("/item/cmiss"); all != 1 || cond != 0 {
		t.Errorf("conditional miss: origin saw %d requests, %d conditional; want 1 and 0", all, cond)
	}
	e.expect(t, "GET", "/item/cmiss", 200, "HIT")

	// Past its freshness (max-age=1, no stale window) the entry is not used for a 304
	// before the origin confirmed it: each request is 304, the first after expiry a
	// revalidation (one conditional request to the origin), answered from the renewed
	// entry.
	const uri = "/item/cstale?cc=max-age=1"
	e.expect(t, "GET", uri, 200, "MISS")
	waitUntil(t, 10*time.Second, "a revalidation of /item/cstale", func() bool {
		r := e.do(t, "GET", uri, "If-None-Match", `"r1"`)
		if r.StatusCode() != 304 || string(r.Header.Peek("X-Cache")) != "HIT" {
			t.Fatalf("conditional GET of a cached entry: %d X-Cache %q, want 304 HIT", r.StatusCode(), r.Header.Peek("X-Cache"))
		}
		_, cond, _ := o.seen("/item/cstale")
		return cond == 1
	})
	if all, cond, _ := o.seen("/item/cstale"); all != 2 || cond != 1 {
		t.Errorf("stale entry: origin saw %d requests, %d conditional; want 2 and 1", all, cond)
	}
	if got := gathered(t, e.reg, "edge_cache_requests_total", "result", "revalidated"); got != 1 {
		t.Errorf("edge_cache_requests_total{result=revalidated} = %v, want 1", got)
	}
	if age := string(e.expect(t, "GET", uri, 200, "HIT").Header.Peek("Age")); age != "0" && age != "1" {
		t.Errorf("renewed entry: Age %q, want 0 or 1", age)
	}
}
