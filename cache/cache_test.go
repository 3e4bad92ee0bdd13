package cache

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/VictoriaMetrics/fastcache"
	"github.com/valyala/fasthttp"
)

func randBody(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 42))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

var rule = &Rule{Route: "detail", TTL: 2 * time.Second, Stale: 30 * time.Second}

func TestRoundTrip(t *testing.T) {
	// Bodies above 64 KiB are split by SetBig into chunk-sized parts; at the 32 MiB minimum
	// a bucket holds one chunk and the next write to it evicts the part (see package doc).
	c := newTestCache(t, Config{Size: DefaultSize, MaxEntry: 2 << 20})
	f := func(uri string, body []byte) {
		t.Helper()
		req := mkReq("GET", "shop", uri)
		resp := mkResp(200, body,
			"Content-Type", "text/html", "Cache-Control", "max-age=60", "ETag", `"v1"`,
			"Last-Modified", "Wed, 02 Jan 2030 00:00:00 GMT", "X-App", "a", "X-App", "b",
			"Connection", "X-Hop", "X-Hop", "secret", "Keep-Alive", "timeout=5",
			"Surrogate-Key", "item-42 list", "Surrogate-Control", "max-age=60", "Age", "3",
			"Date", "Wed, 02 Jan 2030 03:04:05 GMT")
		store(t, c, req, resp, rule, t0)
		st, e := lookup(t, c, req, t0.Add(time.Second))
		if st != Hit {
			t.Fatalf("%s: state %s, want HIT", uri, st)
		}
		if e.Status() != 200 || !bytes.Equal(e.Body(), body) {
			t.Fatalf("%s: status %d, body %d bytes equal=%v", uri, e.Status(), len(e.Body()), bytes.Equal(e.Body(), body))
		}
		if string(e.ETag()) != `"v1"` || string(e.LastModified()) != "Wed, 02 Jan 2030 00:00:00 GMT" {
			t.Errorf("%s: validators %q %q", uri, e.ETag(), e.LastModified())
		}
		var out fasthttp.Response
		e.WriteTo(&out, t0.Add(10*time.Second))
		if !bytes.Equal(out.Body(), body) || out.StatusCode() != 200 {
			t.Fatalf("%s: WriteTo status %d body equal=%v", uri, out.StatusCode(), bytes.Equal(out.Body(), body))
		}
		wire, _, _ := strings.Cut(out.String(), "\r\n\r\n")
		wire += "\r\n"
		for _, want := range []string{"Content-Type: text/html", "X-App: a", "X-App: b", "Age: 13", `Etag: "v1"`,
			fmt.Sprintf("Content-Length: %d", len(body)), "Date: Wed, 02 Jan 2030 03:04:05 GMT"} {
			if !strings.Contains(wire, want+"\r\n") {
				t.Errorf("%s: replayed header lacks %q:\n%s", uri, want, wire)
			}
		}
		for _, bad := range []string{"X-Hop", "Keep-Alive", "Surrogate-Key", "Surrogate-Control", "Connection: X", "Age: 3\r"} {
			if strings.Contains(wire, bad) {
				t.Errorf("%s: replayed header has %q:\n%s", uri, bad, wire)
			}
		}
		if n := strings.Count(wire, "\r\nDate: "); n != 1 {
			t.Errorf("%s: %d Date fields, want the stored one only:\n%s", uri, n, wire)
		}
	}
	f("/small", []byte("hello"))
	f("/empty", nil)
	f("/edge-of-record", randBody(65000, 1)) // just past what fits in one record
	f("/1mib", randBody(1<<20, 2))
	f("/max", randBody(2<<20, 3))

	req := mkReq("GET", "shop", "/too-big")
	err := c.Store(keyOf(req), &req.Header, mkResp(200, randBody(2<<20+1, 4), "Cache-Control", "max-age=60"), rule, t0, c.Epoch())
	if err != ErrTooLarge {
		t.Fatalf("body over max_entry: Store error %v, want ErrTooLarge", err)
	}
	if st, _ := lookup(t, c, req, t0); st != Miss {
		t.Fatalf("body over max_entry: state %s, want MISS", st)
	}
	if s := c.Stats(); s.TooLarge != 1 || s.Stored != 5 {
		t.Errorf("stats %+v, want Stored 5 TooLarge 1", s)
	}
}

func TestHeadAnsweredFromGet(t *testing.T) {
	c := newTestCache(t, Config{})
	store(t, c, mkReq("GET", "shop", "/a"), mkResp(200, []byte("body"), "Cache-Control", "max-age=60"), rule, t0)
	head := mkReq("HEAD", "shop", "/a")
	if st, e := lookup(t, c, head, t0); st != Hit || string(e.Body()) != "body" {
		t.Fatalf("HEAD after GET: %s %q", st, e.Body())
	}
	if err := c.Store(keyOf(head), &head.Header, mkResp(200, nil, "Cache-Control", "max-age=60"), rule, t0, c.Epoch()); err != ErrMethod {
		t.Fatalf("Store of a HEAD response: %v, want ErrMethod", err)
	}
	if st, _ := lookup(t, c, mkReq("GET", "shop", "/a?x=1"), t0); st != Miss {
		t.Fatalf("other query: %s, want MISS", st)
	}
}

func TestNotCacheable(t *testing.T) {
	c := newTestCache(t, Config{})
	f := func(resp *fasthttp.Response, want error) {
		t.Helper()
		req := mkReq("GET", "shop", "/nc")
		if err := c.Store(keyOf(req), &req.Header, resp, rule, t0, c.Epoch()); err != want {
			t.Fatalf("Store error %v, want %v", err, want)
		}
		if st, _ := lookup(t, c, req, t0); st != Miss {
			t.Fatalf("state %s after refused Store, want MISS", st)
		}
	}
	f(mkResp(200, []byte("x"), "Set-Cookie", "sid=1; Path=/", "Cache-Control", "max-age=60"), ErrSetCookie)
	f(mkResp(200, []byte("x"), "Cache-Control", "no-store"), ErrNoStore)
	f(mkResp(200, []byte("x"), "Cache-Control", "private, max-age=60"), ErrPrivate)
	f(mkResp(500, []byte("x"), "Cache-Control", "max-age=60"), ErrStatus)
	f(mkResp(200, []byte("x"), "Surrogate-Key", strings.Repeat("t ", MaxTags+1)), ErrTooManyTags)
	f(mkResp(200, []byte("x"), "X-Huge", strings.Repeat("h", 70000)), ErrHeadersTooBig)
	req := mkReq("POST", "shop", "/nc")
	if err := c.Store(keyOf(req), &req.Header, mkResp(200, nil, "Cache-Control", "max-age=60"), rule, t0, c.Epoch()); err != ErrMethod {
		t.Fatalf("POST: %v", err)
	}
}

func TestStates(t *testing.T) {
	c := newTestCache(t, Config{})
	r := &Rule{Route: "r", TTL: time.Second, Stale: 20 * time.Second}
	s := time.Second
	f := func(uri string, hdrs []string, at time.Duration, want State) {
		t.Helper()
		req := mkReq("GET", "shop", uri)
		store(t, c, req, mkResp(200, []byte("b"), hdrs...), r, t0)
		if st, _ := lookup(t, c, req, t0.Add(at)); st != want {
			t.Errorf("%s %q at +%s: %s, want %s", uri, hdrs, at, st, want)
		}
	}
	etag := []string{"Cache-Control", "max-age=10", "ETag", `"e"`}
	f("/1", etag, 0, Hit)
	f("/2", etag, 9*s, Hit)
	f("/3", etag, 10*s, Stale)
	f("/4", etag, 29*s, Stale)
	f("/5", etag, 30*s, Revalidate)
	f("/6", []string{"Cache-Control", "max-age=10", "Last-Modified", "Wed, 02 Jan 2030 00:00:00 GMT"}, 31*s, Revalidate)
	f("/7", []string{"Cache-Control", "max-age=10"}, 31*s, Miss)
	f("/8", []string{"Cache-Control", "no-cache", "ETag", `"e"`}, 0, Revalidate)
	f("/9", []string{"Cache-Control", "max-age=10, must-revalidate", "ETag", `"e"`}, 11*s, Revalidate)
	f("/10", []string{"Cache-Control", "max-age=10, must-revalidate"}, 11*s, Miss)
	f("/11", nil, 500*time.Millisecond, Hit) // route ttl
	f("/12", nil, 2*s, Stale)
	f("/13", []string{"Cache-Control", "max-age=10", "Age", "8"}, 3*s, Stale)
}

func TestRenew304KeepsBody(t *testing.T) {
	c := newTestCache(t, Config{Size: DefaultSize})
	body := randBody(1<<20, 7)
	req := mkReq("GET", "shop", "/item/42")
	key := keyOf(req)
	store(t, c, req, mkResp(200, body, "Cache-Control", "max-age=10", "ETag", `W/"v1"`, "X-Version", "1", "Content-Type", "text/plain", "Surrogate-Key", "item-42"), rule, t0)
	var fs fastcache.Stats
	c.fc.UpdateStats(&fs)
	setBigBefore := fs.SetBigCalls

	at := t0.Add(time.Minute)
	st, e := lookup(t, c, req, at)
	if st != Revalidate {
		t.Fatalf("state %s, want REVALIDATE", st)
	}
	cond := mkReq("GET", "shop", "/item/42", "If-None-Match", `"client-copy"`, "If-Modified-Since", "Wed, 02 Jan 2030 00:00:00 GMT")
	e.PrepareRevalidation(&cond.Header)
	if got := string(cond.Header.Peek("If-None-Match")); got != `W/"v1"` {
		t.Fatalf("If-None-Match %q, want the stored ETag", got)
	}
	if got := cond.Header.Peek("If-Modified-Since"); len(got) != 0 {
		t.Fatalf("client's If-Modified-Since kept: %q", got)
	}

	// A 304 naming another ETag must not renew.
	if err := c.Renew(e, key, &req.Header, mkResp(304, nil, "ETag", `"v2"`, "Cache-Control", "max-age=100"), rule, at, c.Epoch()); err != ErrValidatorMatch {
		t.Fatalf("Renew with other ETag: %v, want ErrValidatorMatch", err)
	}
	r304 := mkResp(304, nil, "ETag", `W/"v1"`, "Cache-Control", "max-age=100", "X-Version", "2", "Date", "Wed, 02 Jan 2030 03:05:05 GMT")
	if err := c.Renew(e, key, &req.Header, r304, rule, at, c.Epoch()); err != nil {
		t.Fatalf("Renew: %v", err)
	}
	if e.State(at.Add(99*time.Second)) != Hit || !bytes.Equal(e.Body(), body) || string(e.Header("X-Version")) != "2" {
		t.Fatalf("renewed entry in e: state %s body equal %v X-Version %q", e.State(at), bytes.Equal(e.Body(), body), e.Header("X-Version"))
	}
	st, e2 := lookup(t, c, req, at.Add(99*time.Second))
	if st != Hit || !bytes.Equal(e2.Body(), body) {
		t.Fatalf("after 304: state %s, body equal %v", st, bytes.Equal(e2.Body(), body))
	}
	if got := string(e2.Header("X-Version")); got != "2" {
		t.Errorf("X-Version %q after 304, want 2", got)
	}
	if got := string(e2.Header("Date")); got != "Wed, 02 Jan 2030 03:05:05 GMT" {
		t.Errorf("Date %q after 304, want the 304's", got)
	}
	var out fasthttp.Response
	e2.WriteTo(&out, at.Add(99*time.Second))
	if wire := out.Header.String(); strings.Count(wire, "Date: ") != 1 || !strings.Contains(wire, "Date: Wed, 02 Jan 2030 03:05:05 GMT\r\n") {
		t.Errorf("renewed answer's Date is not the 304's:\n%s", wire)
	}
	if got := string(e2.Header("Content-Type")); got != "text/plain" {
		t.Errorf("Content-Type %q after 304, want the stored one", got)
	}
	if n := strings.Count(fmt.Sprint(collect(e2)), "X-Version"); n != 1 {
		t.Errorf("X-Version appears %d times", n)
	}
	later := at.Add(10 * time.Second)
	if err := c.Renew(e, key, &req.Header, mkResp(304, nil, "ETag", `W/"v1"`, "Cache-Control", "max-age=100"), rule, later, c.Epoch()); err != nil {
		t.Fatalf("Renew without Date: %v", err)
	}
	if got, want := string(e.Header("Date")), string(fasthttp.AppendHTTPDate(nil, later)); got != want {
		t.Errorf("Date %q after a 304 without one, want the renewal time %q", got, want)
	}
	fs.Reset()
	c.fc.UpdateStats(&fs)
	if fs.SetBigCalls != setBigBefore {
		t.Errorf("renewal rewrote the body: SetBig calls %d → %d", setBigBefore, fs.SetBigCalls)
	}
	// Tags survive a 304 that does not repeat Surrogate-Key.
	c.PurgeTag("item-42")
	if st, _ := lookup(t, c, req, at); st != Miss {
		t.Errorf("tag purge after renewal: %s, want MISS", st)
	}
	if err := c.Renew(e, key, &req.Header, r304, rule, at, c.Epoch()); err != ErrNotFound {
		t.Errorf("Renew of a purged entry: %v, want ErrNotFound", err)
	}
}

func collect(e *Entry) []string {
	var out []string
	for k, v := range e.Headers() {
		out = append(out, string(k)+": "+string(v))
	}
	return out
}

func TestPurge(t *testing.T) {
	c := newTestCache(t, Config{})
	other := &Rule{Route: "list", TTL: time.Minute}
	type item struct {
		host, uri string
		rule      *Rule
		tags      string
	}
	items := []item{
		{"shop", "/item/1", rule, "item-1 items"},
		{"shop", "/item/1?c=red", rule, "item-1 items"},
		{"m.shop", "/item/1", rule, "item-1 items"},
		{"shop", "/item/2", rule, "item-2 items"},
		{"shop", "/list", other, "items"},
		{"shop", "/about", other, ""},
	}
	fill := func() {
		for _, it := range items {
			store(t, c, mkReq("GET", it.host, it.uri), mkResp(200, []byte(it.uri), "Cache-Control", "max-age=600", "Surrogate-Key", it.tags), it.rule, t0)
		}
	}
	check := func(what string, wantHit ...bool) {
		t.Helper()
		for i, it := range items {
			st, _ := lookup(t, c, mkReq("GET", it.host, it.uri), t0)
			if (st == Hit) != wantHit[i] {
				t.Errorf("after %s: %s%s is %s, want hit=%v", what, it.host, it.uri, st, wantHit[i])
			}
		}
	}
	fill()
	check("fill", true, true, true, true, true, true)
	c.PurgeURL("/item/1")
	check("PurgeURL(/item/1)", false, false, false, true, true, true)
	fill()
	c.PurgeURL("/item/1?c=red")
	check("PurgeURL(/item/1?c=red)", true, false, true, true, true, true)
	fill()
	c.PurgeURL("http://shop/item/2")
	check("PurgeURL(absolute)", true, true, true, false, true, true)
	fill()
	c.PurgeTag("item-1")
	check("PurgeTag(item-1)", false, false, false, true, true, true)
	fill()
	c.PurgeTag("items")
	check("PurgeTag(items)", false, false, false, false, false, true)
	fill()
	c.PurgeRoute("list")
	check("PurgeRoute(list)", true, true, true, true, false, false)
	fill()
	c.PurgeKey(keyOf(mkReq("GET", "m.shop", "/item/1")))
	check("PurgeKey", true, true, false, true, true, true)
	fill()
	c.PurgeAll()
	check("PurgeAll", false, false, false, false, false, false)
	fill()
	check("refill", true, true, true, true, true, true)

	// A purge while a fetch is in flight also invalidates that fetch's result.
	req := mkReq("GET", "shop", "/item/9")
	epoch := c.Epoch()
	c.PurgeURL("/item/9")
	if err := c.Store(keyOf(req), &req.Header, mkResp(200, []byte("old"), "Cache-Control", "max-age=60"), rule, t0, epoch); err != nil {
		t.Fatal(err)
	}
	if st, _ := lookup(t, c, req, t0); st != Miss {
		t.Errorf("result of a fetch started before the purge: %s, want MISS", st)
	}
}

func TestVary(t *testing.T) {
	c := newTestCache(t, Config{})
	gz := mkReq("GET", "shop", "/v", "Accept-Encoding", "gzip")
	br := mkReq("GET", "shop", "/v", "Accept-Encoding", "br")
	none := mkReq("GET", "shop", "/v")
	resp := func(body string) *fasthttp.Response {
		return mkResp(200, []byte(body), "Cache-Control", "max-age=60", "Vary", "accept-encoding", "Content-Encoding", body)
	}
	store(t, c, gz, resp("gzip"), rule, t0)
	if st, e := lookup(t, c, gz, t0); st != Hit || string(e.Body()) != "gzip" {
		t.Fatalf("gzip variant: %s %q", st, e.Body())
	}
	if st, _ := lookup(t, c, br, t0); st != Miss {
		t.Fatalf("br request with only a gzip variant: %s, want MISS", st)
	}
	store(t, c, br, resp("br"), rule, t0)
	f := func(req *fasthttp.Request, want string) {
		t.Helper()
		st, e := lookup(t, c, req, t0)
		if want == "" {
			if st != Miss {
				t.Errorf("Accept-Encoding %q: %s, want MISS", req.Header.Peek("Accept-Encoding"), st)
			}
			return
		}
		if st != Hit || string(e.Body()) != want {
			t.Errorf("Accept-Encoding %q: %s %q, want HIT %q", req.Header.Peek("Accept-Encoding"), st, e.Body(), want)
		}
	}
	f(gz, "gzip")
	f(br, "br")
	f(mkReq("GET", "shop", "/v", "Accept-Encoding", " gzip "), "gzip") // OWS-trimmed
	f(mkReq("GET", "shop", "/v", "Accept-Encoding", "br, gzip"), "")
	f(none, "")
	// The origin stops varying: the plain entry replaces the variants.
	store(t, c, none, mkResp(200, []byte("plain"), "Cache-Control", "max-age=60"), rule, t0)
	if st, e := lookup(t, c, br, t0); st != Hit || string(e.Body()) != "plain" {
		t.Errorf("after Vary dropped: %s %q", st, e.Body())
	}
	// Purging the URL purges every variant.
	store(t, c, gz, resp("gzip"), rule, t0)
	c.PurgeURL("/v")
	if st, _ := lookup(t, c, gz, t0); st != Miss {
		t.Errorf("variant after PurgeURL: %s", st)
	}
}

func TestNotModified(t *testing.T) {
	c := newTestCache(t, Config{})
	req := mkReq("GET", "shop", "/nm")
	store(t, c, req, mkResp(200, []byte("b"), "Cache-Control", "max-age=60", "ETag", `"v1"`, "Last-Modified", "Wed, 02 Jan 2030 00:00:00 GMT"), rule, t0)
	_, e := lookup(t, c, req, t0)
	f := func(want bool, hdrs ...string) {
		t.Helper()
		if got := e.NotModified(&mkReq("GET", "shop", "/nm", hdrs...).Header); got != want {
			t.Errorf("NotModified(%q) = %v, want %v", hdrs, got, want)
		}
	}
	f(false)
	f(true, "If-None-Match", `"v1"`)
	f(true, "If-None-Match", `"x", W/"v1"`)
	f(true, "If-None-Match", `*`)
	f(false, "If-None-Match", `"v2"`)
	f(false, "If-None-Match", `"v2"`, "If-Modified-Since", "Wed, 02 Jan 2030 00:00:00 GMT")
	f(true, "If-Modified-Since", "Wed, 02 Jan 2030 00:00:00 GMT")
	f(true, "If-Modified-Since", "Thu, 03 Jan 2030 00:00:00 GMT")
	f(false, "If-Modified-Since", "Tue, 01 Jan 2030 00:00:00 GMT")
}

func TestCorruptRecordIsMiss(t *testing.T) {
	c := newTestCache(t, Config{})
	req := mkReq("GET", "shop", "/c")
	key := keyOf(req)
	pk, n := makeKey(fkPrimary, KeyHash(key), 0)
	for _, rec := range [][]byte{{}, {recVersion}, {9, kindEntry}, {recVersion, kindEntry, 0, 0}, bytes.Repeat([]byte{1}, 200)} {
		c.fc.Set(pk[:n], rec)
		if st, _ := lookup(t, c, req, t0); st != Miss {
			t.Errorf("record %x: %s, want MISS", rec, st)
		}
	}
	// A big entry whose body chunks were evicted is a miss, not a short body.
	store(t, c, req, mkResp(200, randBody(200<<10, 5), "Cache-Control", "max-age=60"), rule, t0)
	_, e := lookup(t, c, req, t0)
	dk, dn := makeKey(fkBody, KeyHash(key), e.nonce)
	c.fc.Set(dk[:dn], []byte("garbage")) // metavalue no longer 16 bytes
	if st, _ := lookup(t, c, req, t0); st != Miss {
		t.Errorf("big entry without its body: %s, want MISS", st)
	}
}

func TestMemoryBound(t *testing.T) {
	c := newTestCache(t, Config{Size: MinSize})
	body := randBody(2048, 9)
	req := mkReq("GET", "shop", "/")
	resp := mkResp(200, body, "Cache-Control", "max-age=600", "Content-Type", "text/html")
	key := make([]byte, 0, 64)
	const n = 20000 // ~40 MB of small entries plus ~600 MB of big ones into 32 MiB
	bigBody := randBody(300<<10, 10)
	var last []byte
	for i := range n {
		uri := fmt.Appendf(nil, "/item/%d", i)
		req.Header.SetRequestURIBytes(uri)
		key = AppendKey(key[:0], []byte("GET"), []byte("shop"), uri)
		if err := c.Store(key, &req.Header, resp, rule, t0, c.Epoch()); err != nil {
			t.Fatal(err)
		}
		last = uri
		if i%10 == 0 { // a few big ones too, each distinct (SetBig shares equal bodies)
			binary.BigEndian.PutUint64(bigBody, uint64(i))
			if err := c.Store(append(key, 'b'), &req.Header, mkResp(200, bigBody, "Cache-Control", "max-age=600"), rule, t0, c.Epoch()); err != nil {
				t.Fatal(err)
			}
		}
		if i%5000 == 0 {
			if s := c.Stats(); s.Bytes > MinSize || s.MaxBytes > MinSize {
				t.Fatalf("after %d stores: Bytes %d MaxBytes %d > %d", i, s.Bytes, s.MaxBytes, MinSize)
			}
		}
	}
	s := c.Stats()
	t.Logf("stats after flood: %+v", s)
	if s.Bytes > MinSize || s.EvictedBytes == 0 || s.Stored == 0 {
		t.Fatalf("stats %+v: want Bytes ≤ %d and evictions", s, MinSize)
	}
	req.Header.SetRequestURIBytes(last)
	if st, e := lookup(t, c, req, t0); st != Hit || !bytes.Equal(e.Body(), body) {
		t.Fatalf("latest entry after flood: %s", st)
	}
	req.Header.SetRequestURI("/item/0")
	if st, _ := lookup(t, c, req, t0); st != Miss {
		t.Fatalf("oldest entry after flood: %s, want evicted", st)
	}
}

func TestCoalescing(t *testing.T) {
	c := newTestCache(t, Config{})
	const n = 100
	kh := KeyHash([]byte("cold"))
	var leaders, followers, woken atomic.Int32
	release := make(chan struct{})
	var doneAt atomic.Int64
	var maxLag atomic.Int64
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tk := c.Acquire(kh, t0)
			if tk.Leader() {
				leaders.Add(1)
				<-release
				doneAt.Store(time.Now().UnixNano())
				tk.Done()
				return
			}
			followers.Add(1)
			if !tk.Wait(time.Minute) {
				t.Error("follower timed out although the leader finished")
				return
			}
			woken.Add(1)
			lag := time.Now().UnixNano() - doneAt.Load()
			for {
				old := maxLag.Load()
				if lag <= old || maxLag.CompareAndSwap(old, lag) {
					break
				}
			}
		}()
	}
	for followers.Load()+leaders.Load() < n { // every goroutine has joined
		runtime.Gosched()
	}
	close(release)
	wg.Wait()
	if leaders.Load() != 1 || woken.Load() != n-1 {
		t.Fatalf("leaders %d, woken followers %d; want 1 and %d", leaders.Load(), woken.Load(), n-1)
	}
	t.Logf("slowest follower woke %s after Done", time.Duration(maxLag.Load()))

	// The key is free again: the next caller leads.
	tk := c.Acquire(kh, t0)
	if !tk.Leader() {
		t.Fatal("after Done the next Acquire is not the leader")
	}
	// Bounded wait: a leader that never finishes does not hold followers forever.
	f := c.Acquire(kh, t0)
	if f.Leader() || f.Wait(20*time.Millisecond) {
		t.Fatal("follower of a stuck leader: Wait returned true")
	}
	tk.Done()
	if !f.Wait(time.Minute) {
		t.Fatal("Wait after Done returned false")
	}

	// A leader that never calls Done is taken over after RefreshTimeout (30s default).
	lost := c.Acquire(kh, t0)
	if !lost.Leader() || c.Acquire(kh, t0.Add(29*time.Second)).Leader() {
		t.Fatal("second leader before the timeout")
	}
	heir := c.Acquire(kh, t0.Add(31*time.Second))
	if !heir.Leader() {
		t.Fatal("lost leader not taken over after RefreshTimeout")
	}
	lost.Done() // late Done of the lost leader must not end the heir's flight
	if c.Acquire(kh, t0.Add(31*time.Second)).Leader() {
		t.Fatal("the lost leader's Done ended the heir's flight")
	}
	heir.Done()
}

func TestRefreshOncePerKey(t *testing.T) {
	c := newTestCache(t, Config{RefreshTimeout: 10 * time.Second})
	kh := KeyHash([]byte("k"))
	var wins atomic.Int32
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if c.TryStartRefresh(kh, t0) {
				wins.Add(1)
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d refreshes started, want 1", wins.Load())
	}
	if !c.TryStartRefresh(KeyHash([]byte("other")), t0) {
		t.Fatal("another key is blocked")
	}
	if !c.TryStartRefresh(kh, t0.Add(11*time.Second)) {
		t.Fatal("a refresh older than RefreshTimeout is not taken over")
	}
	c.EndRefresh(kh)
	if !c.TryStartRefresh(kh, t0.Add(12*time.Second)) {
		t.Fatal("after EndRefresh a new refresh cannot start")
	}
}

func TestNewConfig(t *testing.T) {
	if _, err := New(Config{Size: -1}); err == nil {
		t.Error("negative size accepted")
	}
	if _, err := New(Config{MaxEntry: -1}); err == nil {
		t.Error("negative max_entry accepted")
	}
	c := newTestCache(t, Config{Size: 1})
	if s := c.Stats(); s.MaxBytes != MinSize || c.MaxEntry() != DefaultMaxEntry {
		t.Errorf("MaxBytes %d MaxEntry %d", s.MaxBytes, c.MaxEntry())
	}
}
