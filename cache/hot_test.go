package cache

import (
	"bytes"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// hit looks req up at now, answers it into a fresh response and returns the state, the
// response and whether the hot set served it.
func hit(t testing.TB, c *Cache, req *fasthttp.Request, now time.Time) (State, *fasthttp.Response, bool) {
	t.Helper()
	e := AcquireEntry()
	defer ReleaseEntry(e)
	st := c.Lookup(e, keyOf(req), &req.Header, now)
	resp := &fasthttp.Response{}
	if st != Miss {
		e.WriteTo(resp, now)
		resp.SetBody(resp.Body()) // own the body: e goes back to the pool
	}
	return st, resp, e.hot != nil
}

// An entry hit twice through fastcache is served from the hot set from then on, with the
// same status, headers and body.
func TestHotPromotion(t *testing.T) {
	c := newTestCache(t, Config{Size: DefaultSize})
	req := mkReq("GET", "shop", "/item/1")
	body := randBody(2048, 7)
	store(t, c, req, mkResp(200, body, "Cache-Control", "max-age=60", "Content-Type", "application/json", "ETag", `"v1"`, "X-Shop", "a"), rule, t0)
	now := t0.Add(time.Second)
	var first string
	for i, wantHot := range []bool{false, false, true, true} {
		st, resp, hot := hit(t, c, req, now)
		if st != Hit || hot != wantHot {
			t.Fatalf("lookup %d: state %s hot %v, want Hit hot %v", i, st, hot, wantHot)
		}
		if !bytes.Equal(resp.Body(), body) {
			t.Fatalf("lookup %d: body differs", i)
		}
		got := resp.Header.String()
		if i == 0 {
			first = got
		} else if got != first {
			t.Errorf("lookup %d header:\n%s\nwant as first:\n%s", i, got, first)
		}
	}
	// The origin sent no Date: the time it was stored goes out, cold and hot.
	for _, h := range []string{"Content-Type: application/json", "Etag: \"v1\"", "X-Shop: a", "Age: 1", "Date: Wed, 02 Jan 2030 03:04:05 GMT"} {
		if !bytes.Contains([]byte(first), []byte(h)) {
			t.Errorf("answer lacks %q:\n%s", h, first)
		}
	}
	// Freshness is evaluated at each hit, hot or not.
	if st, _, _ := hit(t, c, req, t0.Add(2*time.Minute)); st != Revalidate {
		t.Errorf("hot entry after max-age: %s, want Revalidate", st)
	}
}

// A store, a purge by key, URL or tag, or a purge of everything is seen at once by hot
// entries.
func TestHotInvalidation(t *testing.T) {
	now := t0.Add(time.Second)
	warm := func(t *testing.T, c *Cache, req *fasthttp.Request) {
		for range 3 {
			hit(t, c, req, now)
		}
		if _, _, hot := hit(t, c, req, now); !hot {
			t.Fatal("entry not hot after 3 hits")
		}
	}
	for _, tc := range []struct {
		name  string
		purge func(c *Cache, key []byte)
	}{
		{"key", func(c *Cache, key []byte) { c.PurgeKey(key) }},
		{"url", func(c *Cache, _ []byte) { c.PurgeURL("/p/1") }},
		{"tag", func(c *Cache, _ []byte) { c.PurgeTag("t1") }},
		{"all", func(c *Cache, _ []byte) { c.PurgeAll() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newTestCache(t, Config{Size: DefaultSize})
			req := mkReq("GET", "shop", "/p/1")
			store(t, c, req, mkResp(200, []byte("old"), "Cache-Control", "max-age=60", "Surrogate-Key", "t1"), rule, t0)
			warm(t, c, req)
			tc.purge(c, keyOf(req))
			if st, _, _ := hit(t, c, req, now); st != Miss {
				t.Errorf("after purge: %s, want Miss", st)
			}
		})
	}
	c := newTestCache(t, Config{Size: DefaultSize})
	req := mkReq("GET", "shop", "/p/2")
	store(t, c, req, mkResp(200, []byte("old"), "Cache-Control", "max-age=60"), rule, t0)
	warm(t, c, req)
	store(t, c, req, mkResp(200, []byte("new"), "Cache-Control", "max-age=60"), rule, t0)
	if st, resp, _ := hit(t, c, req, now); st != Hit || string(resp.Body()) != "new" {
		t.Errorf("after a new store: %s %q, want Hit \"new\"", st, resp.Body())
	}
}

// Writers storing new versions while readers hit: no reader ever sees a body that was
// not stored, and once the writers stop every reader sees the last version.
func TestHotConcurrentStores(t *testing.T) {
	c := newTestCache(t, Config{Size: DefaultSize})
	req := mkReq("GET", "shop", "/race")
	version := func(i int) []byte { return []byte(fmt.Sprintf("version-%04d", i)) }
	store(t, c, req, mkResp(200, version(0), "Cache-Control", "max-age=60"), rule, t0)
	const versions = 300
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := mkReq("GET", "shop", "/race")
			for {
				select {
				case <-stop:
					return
				default:
				}
				st, resp, _ := hit(t, c, r, t0.Add(time.Second))
				if st != Hit || !bytes.HasPrefix(resp.Body(), []byte("version-")) {
					t.Errorf("reader got %s %q", st, resp.Body())
					return
				}
			}
		}()
	}
	for i := 1; i <= versions; i++ {
		store(t, c, req, mkResp(200, version(i), "Cache-Control", "max-age=60"), rule, t0)
	}
	close(stop)
	wg.Wait()
	for range 5 {
		if st, resp, _ := hit(t, c, req, t0.Add(time.Second)); st != Hit || !bytes.Equal(resp.Body(), version(versions)) {
			t.Fatalf("after the last store: %s %q, want %q", st, resp.Body(), version(versions))
		}
	}
}

// The hot set's budget is a sixteenth of cache_size, at most 16 MiB; a small cache only
// promotes small entries.
func TestHotBudget(t *testing.T) {
	for _, c := range []struct{ size, maxRecord int }{
		{DefaultSize, 16 << 10}, {1 << 30, 16 << 10}, {MinSize, 2 << 10}, {64 << 20, 4 << 10},
	} {
		if got := hotMaxRecord(c.size); got != c.maxRecord {
			t.Errorf("hotMaxRecord(%d) = %d, want %d", c.size, got, c.maxRecord)
		}
	}
	c := newTestCache(t, Config{Size: MinSize})
	small, big := mkReq("GET", "shop", "/small"), mkReq("GET", "shop", "/big")
	store(t, c, small, mkResp(200, []byte("tiny"), "Cache-Control", "max-age=60"), rule, t0)
	store(t, c, big, mkResp(200, randBody(4096, 3), "Cache-Control", "max-age=60"), rule, t0)
	now := t0.Add(time.Second)
	for range 3 {
		hit(t, c, small, now)
		hit(t, c, big, now)
	}
	if _, _, hot := hit(t, c, small, now); !hot {
		t.Error("small entry not promoted in a 32MB cache")
	}
	if _, _, hot := hit(t, c, big, now); hot {
		t.Error("4 KiB entry promoted in a 32MB cache, whose hot records are at most 2 KiB")
	}
}
