package proxy

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edge-gw/edge/internal/origintest"
	"github.com/edge-gw/edge/limiter"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
)

// limitConfig is an edge with an upstream route "shop" on /item/ carrying body (limit
// and reject blocks), and a respond route "r" on /r/ carrying rbody.
func limitConfig(origin, body, rbody string) string {
	return fmt.Sprintf(`
trusted_proxies = ["127.0.0.1/32"]
upstream "app" {
  servers = [%q]
}
route "shop" {
  match { path = "/item/" }
  upstream = "app"
%s
}
route "r" {
  match { path = "/r/" }
  respond {
    status = 200
    body   = "ok"
  }
%s
}
`, origin, body, rbody)
}

// limitMetric returns the value of the series of family name with labels route,
// limit and, when not empty, result; -1 when there is none.
func limitMetric(t testing.TB, g prometheus.Gatherer, name, route, limit, result string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			want := map[string]string{"route": route, "limit": limit}
			if result != "" {
				want["result"] = result
			}
			for _, l := range m.GetLabel() {
				if v, ok := want[l.GetName()]; ok && v != l.GetValue() {
					continue next
				}
			}
			if m.GetGauge() != nil {
				return m.GetGauge().GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	return -1
}

func wantAnswer(t testing.TB, resp *fasthttp.Response, status int, body string) {
	t.Helper()
	if resp.StatusCode() != status || (body != "" && string(resp.Body()) != body) {
		t.Errorf("answer %d %q, want %d %q", resp.StatusCode(), resp.Body(), status, body)
	}
}

func TestLimitPerUser(t *testing.T) {
	o := origintest.Start(t, func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("item") })
	e := startEdge(t, limitConfig(o.Addr, `
  limit "user" {
    key   = "header:X-User-Id"
    rate  = "6r/m"
    burst = 1
  }
  reject {
    status       = 429
    body         = "{\"code\":429,\"msg\":\"busy, please retry\"}"
    content_type = "application/json; charset=utf-8"
  }`, ""))

	wantAnswer(t, e.do(t, "GET", "/item/42", "X-User-Id", "u1"), 200, "item")
	resp := e.do(t, "GET", "/item/42", "X-User-Id", "u1")
	wantAnswer(t, resp, 429, `{"code":429,"msg":"busy, please retry"}`)
	// 6r/m: the next token comes 10 s after the first request.
	if ra := string(resp.Header.Peek("Retry-After")); ra != "10" {
		t.Errorf("Retry-After %q, want 10", ra)
	}
	if ct := string(resp.Header.ContentType()); ct != "application/json; charset=utf-8" {
		t.Errorf("reject Content-Type %q", ct)
	}
	wantAnswer(t, e.do(t, "GET", "/item/42", "X-User-Id", "u2"), 200, "item")
	if n := o.Requests.Load(); n != 2 {
		t.Errorf("origin saw %d requests, want 2 (the rejected one stays at the edge)", n)
	}
	for result, want := range map[string]float64{"pass": 2, "reject": 1, "delayed": 0, "dry_run_reject": 0} {
		if got := limitMetric(t, e.reg, "edge_limit_decisions_total", "shop", "user", result); got != want {
			t.Errorf("edge_limit_decisions_total{result=%q} = %v, want %v", result, got, want)
		}
	}
	if got := limitMetric(t, e.reg, "edge_limit_keys", "shop", "user", ""); got != 2 {
		t.Errorf("edge_limit_keys = %v, want 2 (the buckets of u1 and u2 are not full)", got)
	}
}

// A request rejected by the item limit keeps the token the user limit gave it.
func TestLimitRejectRefunds(t *testing.T) {
	e := startEdge(t, limitConfig("127.0.0.1:1", "", `
  limit "user" {
    key  = "header:X-User-Id"
    rate = "1r/h"
  }
  limit "item" {
    key  = "path:2"
    rate = "1r/h"
  }`))
	wantAnswer(t, e.do(t, "GET", "/r/1", "X-User-Id", "u1"), 200, "ok")
	wantAnswer(t, e.do(t, "GET", "/r/1", "X-User-Id", "u2"), 429, `{"error":"rate_limited"}`)
	wantAnswer(t, e.do(t, "GET", "/r/2", "X-User-Id", "u2"), 200, "ok")
	wantAnswer(t, e.do(t, "GET", "/r/3", "X-User-Id", "u2"), 429, `{"error":"rate_limited"}`)
	for _, c := range []struct {
		limit, result string
		want          float64
	}{{"user", "pass", 3}, {"user", "reject", 1}, {"item", "pass", 2}, {"item", "reject", 1}} {
		if got := limitMetric(t, e.reg, "edge_limit_decisions_total", "r", c.limit, c.result); got != c.want {
			t.Errorf("%s %s = %v, want %v", c.limit, c.result, got, c.want)
		}
	}
}

// Per item 100r/s burst 10 under 1500 requests of distinct users in about a second:
// the passes are 10 + 100 per second, within 10%.
func TestLimitPerItemRate(t *testing.T) {
	o := origintest.Start(t, nil)
	e := startEdge(t, limitConfig(o.Addr, `
  limit "item" {
    key   = "path:2"
    rate  = "100r/s"
    burst = 10
  }
  limit "user" {
    key  = "header:X-User-Id"
    rate = "1r/m"
  }`, ""))
	// 1,500 requests over 3 s offer five times the rate. A stall of the machine (the
	// race detector, a loaded CI host) bunches the arrivals behind it and costs the
	// bucket at most the tokens it could not keep above its burst; over 3 s such a
	// stall stays inside the 10 % the count is allowed, where over 1 s it did not.
	const total, span = 1500, 3 * time.Second
	var next, passed, rejected atomic.Int64
	var firstSend, lastSend atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &fasthttp.HostClient{Addr: e.addr, MaxConns: 1}
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			for {
				i := next.Add(1) - 1
				if i >= total {
					return
				}
				time.Sleep(time.Until(start.Add(span * time.Duration(i) / total))) // pace the arrivals
				req.SetRequestURI("http://" + e.addr + "/item/7")
				req.Header.Set("X-User-Id", "user-"+strconv.FormatInt(i, 10))
				sent := time.Since(start)
				if i == 0 {
					firstSend.Store(int64(sent))
				}
				if i == total-1 {
					lastSend.Store(int64(sent))
				}
				if err := c.DoTimeout(req, resp, 5*time.Second); err != nil {
					t.Error(err)
					return
				}
				switch resp.StatusCode() {
				case 200:
					passed.Add(1)
				case 429:
					rejected.Add(1)
				default:
					t.Errorf("status %d", resp.StatusCode())
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Duration(lastSend.Load() - firstSend.Load()).Seconds()
	want := 10 + 100*elapsed
	got := float64(passed.Load())
	t.Logf("%d passed, %d rejected over %.3fs; expected %.0f", passed.Load(), rejected.Load(), elapsed, want)
	if math.Abs(got-want) > 0.1*want {
		t.Errorf("%v passed over %.3fs, want %.0f ± 10%%", got, elapsed, want)
	}
	if passed.Load()+rejected.Load() != total {
		t.Errorf("%d answers, want %d", passed.Load()+rejected.Load(), total)
	}
	if got := limitMetric(t, e.reg, "edge_limit_decisions_total", "shop", "user", "reject"); got != 0 {
		t.Errorf("distinct users were rejected by the user limit %v times", got)
	}
}

func TestLimitDelay(t *testing.T) {
	e := startEdge(t, limitConfig("127.0.0.1:1", "", `
  limit "user" {
    key   = "header:X-User-Id"
    rate  = "4r/s"
    delay = "250ms"
  }`))
	wantAnswer(t, e.do(t, "GET", "/r/x", "X-User-Id", "u1"), 200, "ok")
	// Two at once: the first waits for the token due in 250 ms and passes; the second
	// would wait 500 ms, beyond the delay, and is rejected at once.
	type result struct {
		status int
		took   time.Duration
		retry  string
	}
	out := make(chan result, 2)
	for i := 0; i < 2; i++ {
		go func() {
			start := time.Now()
			resp := e.do(t, "GET", "/r/x", "X-User-Id", "u1")
			out <- result{resp.StatusCode(), time.Since(start), string(resp.Header.Peek("Retry-After"))}
		}()
	}
	a, b := <-out, <-out
	if a.status == 429 {
		a, b = b, a
	}
	if a.status != 200 || b.status != 429 || b.retry != "1" {
		t.Fatalf("two requests at once = %+v, %+v; want one delayed 200 and one 429 with Retry-After 1", a, b)
	}
	if a.took < 100*time.Millisecond {
		t.Errorf("delayed request answered after %v, want it to wait for its token (about 250ms)", a.took)
	}
	for result, want := range map[string]float64{"pass": 1, "delayed": 1, "reject": 1} {
		if got := limitMetric(t, e.reg, "edge_limit_decisions_total", "r", "user", result); got != want {
			t.Errorf("edge_limit_decisions_total{result=%q} = %v, want %v", result, got, want)
		}
	}
}

func TestLimitDryRun(t *testing.T) {
	o := origintest.Start(t, nil)
	e := startEdge(t, limitConfig(o.Addr, `
  limit "user" {
    key     = "header:X-User-Id"
    rate    = "1r/h"
    dry_run = true
  }`, ""))
	for i := 0; i < 3; i++ {
		wantAnswer(t, e.do(t, "GET", "/item/1", "X-User-Id", "u1"), 200, "")
	}
	if o.Requests.Load() != 3 {
		t.Errorf("origin saw %d requests, want 3", o.Requests.Load())
	}
	for result, want := range map[string]float64{"pass": 1, "dry_run_reject": 2, "reject": 0} {
		if got := limitMetric(t, e.reg, "edge_limit_decisions_total", "shop", "user", result); got != want {
			t.Errorf("edge_limit_decisions_total{result=%q} = %v, want %v", result, got, want)
		}
	}
}

func TestLimitMissingKey(t *testing.T) {
	f := func(mode string, want ...int) {
		t.Helper()
		e := startEdge(t, limitConfig("127.0.0.1:1", "", fmt.Sprintf(`
  limit "user" {
    key         = "header:X-User-Id"
    rate        = "1r/h"
    missing_key = %q
  }`, mode)))
		var got []int
		for i := 0; i < 3; i++ {
			got = append(got, e.do(t, "GET", "/r/x").StatusCode())
		}
		got = append(got, e.do(t, "GET", "/r/x", "X-User-Id", "u1").StatusCode())
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("missing_key %s: three key-less requests then a keyed one = %v, want %v", mode, got, want)
		}
	}
	f("skip", 200, 200, 200, 200)
	f("reject", 429, 429, 429, 200)
	f("shared", 200, 429, 429, 200)
}

func TestLimitHeaders(t *testing.T) {
	o := origintest.Start(t, nil)
	e := startEdge(t, limitConfig(o.Addr, `
  limit "user" {
    key     = "header:X-User-Id"
    rate    = "1r/m"
    burst   = 3
    headers = true
  }
  limit "item" {
    key   = "path:2"
    rate  = "100r/s"
    burst = 100
  }`, ""))
	f := func(status int, remaining, reset, retry string) {
		t.Helper()
		resp := e.do(t, "GET", "/item/1", "X-User-Id", "u1")
		h := &resp.Header
		got := fmt.Sprint(resp.StatusCode(), string(h.Peek("RateLimit-Limit")), string(h.Peek("RateLimit-Remaining")),
			string(h.Peek("RateLimit-Reset")), string(h.Peek("Retry-After")))
		if want := fmt.Sprint(status, "3", remaining, reset, retry); got != want {
			t.Errorf("status, RateLimit-Limit, -Remaining, -Reset, Retry-After = %s, want %s", got, want)
		}
	}
	// Passes carry the headers through the upstream's answer; Reset is when the bucket
	// is full again.
	f(200, "2", "60", "")
	f(200, "1", "120", "")
	f(200, "0", "180", "")
	f(429, "0", "60", "60")
}

// A flood of a million distinct keys keeps the store within max_keys and the edge
// answering everyone correctly.
func TestLimitFlood(t *testing.T) {
	const maxKeys = 4096
	px := benchProxy(t, limitConfig("127.0.0.1:1", "", fmt.Sprintf(`
  limit "user" {
    key      = "header:X-User-Id"
    rate     = "1r/h"
    max_keys = %d
  }`, maxKeys)))
	n := 1_000_000
	if testing.Short() || raceEnabled {
		n = 100_000
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var bad atomic.Int64
	var wg sync.WaitGroup
	const workers = 4
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := keyCtx("/r/x", "shop.example")
			var req fasthttp.Request
			ctx.Request.CopyTo(&req)
			var id []byte
			for i := w; i < n; i += workers {
				id = strconv.AppendInt(append(id[:0], "flood-"...), int64(i), 10)
				req.Header.SetBytesV("X-User-Id", id)
				serveOnce(px, ctx, &req)
				if ctx.Response.StatusCode() != 200 {
					bad.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	runtime.GC()
	runtime.ReadMemStats(&after)
	if bad.Load() != 0 {
		t.Errorf("%d first requests of new keys were not answered 200", bad.Load())
	}
	st := px.limitState
	var store *limiter.Store
	for _, e := range st.entries {
		store = e.store
	}
	if l := store.Len(); l > maxKeys {
		t.Errorf("store tracks %d keys after the flood, want at most max_keys %d", l, maxKeys)
	}
	if ev := store.Evictions(); ev < uint64(n-maxKeys) {
		t.Errorf("%d evictions, want at least %d", ev, n-maxKeys)
	}
	grew := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("%d keys: heap grew %d bytes, store holds %d keys", n, grew, store.Len())
	if grew > 8<<20 {
		t.Errorf("heap grew %d bytes over a flood with max_keys %d", grew, maxKeys)
	}
	// The edge still limits a real user.
	ctx := keyCtx("/r/x", "shop.example", "X-User-Id", "real")
	var req fasthttp.Request
	ctx.Request.CopyTo(&req)
	for i, want := range []int{200, 429} {
		serveOnce(px, ctx, &req)
		if got := ctx.Response.StatusCode(); got != want {
			t.Errorf("real user's request %d after the flood = %d, want %d", i+1, got, want)
		}
	}
}

// Buckets survive a reload that keeps them; a changed burst does not refill them; a
// changed key starts over; a removed limit is dropped with its series.
func TestLimitReload(t *testing.T) {
	limit := func(key string, burst int) string {
		return fmt.Sprintf(`
  limit "user" {
    key   = %q
    rate  = "1r/h"
    burst = %d
  }`, key, burst)
	}
	e := startEdge(t, limitConfig("127.0.0.1:1", "", limit("header:X-User-Id", 1)))
	status := func(user string) int { return e.do(t, "GET", "/r/x", "X-User-Id", user, "X-Other", user).StatusCode() }
	reload := func(src string) {
		t.Helper()
		if err := e.reload(t, src); err != nil {
			t.Fatal(err)
		}
	}
	if status("u1") != 200 || status("u1") != 429 {
		t.Fatal("u1 not limited")
	}
	reload(limitConfig("127.0.0.1:1", "", limit("header:X-User-Id", 1)) + "\n# edited\n")
	if got := status("u1"); got != 429 {
		t.Errorf("after an unrelated reload u1 = %d, want 429: the bucket was lost", got)
	}
	reload(limitConfig("127.0.0.1:1", "", limit("header:X-User-Id", 3)))
	if got := status("u1"); got != 429 {
		t.Errorf("after burst 1 → 3 u1 = %d, want 429: the bucket was refilled", got)
	}
	if got := []int{status("u2"), status("u2"), status("u2"), status("u2")}; fmt.Sprint(got) != "[200 200 200 429]" {
		t.Errorf("new user after burst 3 = %v, want three passes", got)
	}
	reload(limitConfig("127.0.0.1:1", "", limit("header:X-Other", 3)))
	if got := status("u1"); got != 200 {
		t.Errorf("after a key change u1 = %d, want 200 (new buckets)", got)
	}
	if n := len(e.px.limitState.entries); n != 1 {
		t.Errorf("%d stores after the key change, want 1", n)
	}
	reload(limitConfig("127.0.0.1:1", "", ""))
	if n := len(e.px.limitState.entries); n != 0 {
		t.Errorf("%d stores after removing the limit, want 0", n)
	}
	for _, name := range []string{"edge_limit_keys", "edge_limit_decisions_total", "edge_limit_evictions_total"} {
		if got := limitMetric(t, e.reg, name, "r", "user", ""); got != -1 {
			t.Errorf("%s of the removed limit still reported: %v", name, got)
		}
	}
	// A failed reload changes nothing.
	reload(limitConfig("127.0.0.1:1", "", limit("header:X-User-Id", 1)))
	status("u9")
	// burst 100000 at 1r/h takes longer to refill than the limiter supports.
	if err := e.reload(t, limitConfig("127.0.0.1:1", "", limit("header:X-User-Id", 100000))); err == nil {
		t.Fatal("bad config applied")
	}
	if got := status("u9"); got != 429 {
		t.Errorf("after a failed reload u9 = %d, want 429 with burst 1", got)
	}
}

func TestSetLimitScale(t *testing.T) {
	src := limitConfig("127.0.0.1:1", "", `
  limit "user" {
    key   = "header:X-User-Id"
    rate  = "10r/m"
    burst = 10
  }`)
	e := startEdge(t, src)
	passes := func(user string) int {
		n := 0
		for i := 0; i < 12; i++ {
			if e.do(t, "GET", "/r/x", "X-User-Id", user).StatusCode() == 200 {
				n++
			}
		}
		return n
	}
	if err := e.px.SetLimitScale("r", "user", 0.5); err != nil {
		t.Fatal(err)
	}
	if n := passes("u1"); n != 5 {
		t.Errorf("scale 0.5 of burst 10: %d passes, want 5", n)
	}
	if err := e.reload(t, src+"\n# edited\n"); err != nil {
		t.Fatal(err)
	}
	if n := passes("u2"); n != 5 {
		t.Errorf("after a reload, scale 0.5 of burst 10: %d passes, want 5", n)
	}
	if err := e.px.SetLimitScale("r", "user", 1); err != nil {
		t.Fatal(err)
	}
	if n := passes("u3"); n != 10 {
		t.Errorf("scale 1: %d passes, want 10", n)
	}
	if err := e.px.SetLimitScale("r", "nope", 1); !errors.Is(err, ErrNoLimit) {
		t.Errorf("unknown limit: %v, want ErrNoLimit", err)
	}
	if err := e.px.SetLimitScale("nope", "user", 1); !errors.Is(err, ErrNoLimit) {
		t.Errorf("unknown route: %v, want ErrNoLimit", err)
	}
	if err := e.px.SetLimitScale("r", "user", 0); !errors.Is(err, limiter.ErrInvalid) {
		t.Errorf("scale 0: %v, want limiter.ErrInvalid", err)
	}
}

// The background sweep drops full buckets, so edge_limit_keys falls back to 0 once
// clients stop.
func TestLimitSweep(t *testing.T) {
	old := limitSweepEvery
	limitSweepEvery = 20 * time.Millisecond
	t.Cleanup(func() { limitSweepEvery = old })
	e := startEdge(t, limitConfig("127.0.0.1:1", "", `
  limit "user" {
    key  = "header:X-User-Id"
    rate = "50r/s"
  }`))
	for i := 0; i < 20; i++ {
		e.do(t, "GET", "/r/x", "X-User-Id", "u"+strconv.Itoa(i))
	}
	deadline := time.Now().Add(5 * time.Second)
	for limitMetric(t, e.reg, "edge_limit_keys", "r", "user", "") != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("edge_limit_keys = %v 5s after the last request, want 0", limitMetric(t, e.reg, "edge_limit_keys", "r", "user", ""))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestLimitBuildErrors(t *testing.T) {
	many := ""
	for i := 0; i <= maxRouteLimits; i++ {
		many += fmt.Sprintf("\n  limit \"l%d\" {\n    key = \"ip\"\n    rate = \"1r/s\"\n  }", i)
	}
	if err := Check(mustParse(t, limitConfig("127.0.0.1:1", "", many))); err == nil || !strings.Contains(err.Error(), "at most 32") {
		t.Errorf("33 limits on a route: %v", err)
	}
	huge := `
  limit "user" {
    key   = "ip"
    rate  = "1r/h"
    burst = 100000
  }`
	if err := Check(mustParse(t, limitConfig("127.0.0.1:1", "", huge))); err == nil || !strings.Contains(err.Error(), `route "r" limit "user"`) {
		t.Errorf("burst of 100000 hours: %v, want an error naming the route and limit", err)
	}
}
