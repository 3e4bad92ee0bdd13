package proxy

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edge-gw/edge/internal/redistest"
)

// redisLimitConfig is limitConfig with a seckill block on the Redis at addrs (the Redis
// of scope "redis" limits) whose calls time out after timeout.
func redisLimitConfig(addrs []string, timeout, body, rbody string) string {
	return limitConfig("127.0.0.1:1", body, rbody) + fmt.Sprintf(`
seckill {
  redis { addrs = [%s] }
  secret  = "0123456789abcdef0123456789abcdef"
  timeout = %q
}`, quoteList(addrs), timeout)
}

// hitConcurrently sends n requests to each edge at once for user, and returns how many
// got each status.
func hitConcurrently(t *testing.T, edges []*testEdge, n int, uri, user string) map[int]int {
	t.Helper()
	var mu sync.Mutex
	got := map[int]int{}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for _, e := range edges {
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				r := e.do(t, "GET", uri, "X-User-Id", user)
				mu.Lock()
				got[r.StatusCode()]++
				mu.Unlock()
			}()
		}
	}
	close(start)
	wg.Wait()
	return got
}

// decisions sums edge_limit_decisions_total{route,limit,result} over edges.
func decisions(t *testing.T, edges []*testEdge, route, limit, result string) float64 {
	t.Helper()
	sum := 0.0
	for _, e := range edges {
		if v := limitMetric(t, e.reg, "edge_limit_decisions_total", route, limit, result); v > 0 {
			sum += v
		}
	}
	return sum
}

// Three edges on one Redis, hit at once: exactly the bucket passes, in total.
func TestLimitRedisExactAcrossNodes(t *testing.T) {
	rs := redistest.Start(t)
	src := redisLimitConfig([]string{rs.Addr}, "2s", "", `
  limit "user" {
    key   = "header:X-User-Id"
    rate  = "1r/m"
    burst = 10
    scope = "redis"
  }`)
	edges := []*testEdge{startEdge(t, src), startEdge(t, src), startEdge(t, src)}
	for round, user := range []string{"u1", "u2", "u3"} {
		got := hitConcurrently(t, edges, 15, "/r/x", user)
		if got[200] != 10 || got[429] != 35 {
			t.Errorf("round %d: answers %v, want exactly 10 × 200 and 35 × 429", round, got)
		}
	}
	if p, r := decisions(t, edges, "r", "user", "pass"), decisions(t, edges, "r", "user", "reject"); p != 30 || r != 105 {
		t.Errorf("decisions pass %v reject %v, want 30 and 105", p, r)
	}
	// The rejection says when the bucket has a token again: one minute at 1r/m.
	r := edges[1].do(t, "GET", "/r/x", "X-User-Id", "u1")
	if ra := string(r.Header.Peek("Retry-After")); r.StatusCode() != 429 || (ra != "60" && ra != "59") {
		t.Errorf("reject %d Retry-After %q, want 429 with 59 or 60", r.StatusCode(), ra)
	}
	// One bucket per key in Redis, hash-tagged, expiring.
	keys := strings.Fields(rs.Do("--raw", "KEYS", "rl:*"))
	if len(keys) != 3 || !strings.HasPrefix(keys[0], "rl:{r:user:") || !strings.HasSuffix(keys[0], "}") {
		t.Errorf("redis keys %q, want 3 of the form rl:{r:user:<hash>}", keys)
	}
	if ttl, _ := strconv.Atoi(rs.Do("PTTL", keys[0])); ttl <= 0 {
		t.Errorf("bucket key PTTL %d, want an expiry", ttl)
	}
}

// On a 3-master Redis Cluster the buckets of many keys (all slots) work from two edges.
func TestLimitRedisCluster(t *testing.T) {
	cl := redistest.StartCluster(t)
	src := redisLimitConfig(cl.Addrs, "2s", "", `
  limit "user" {
    key   = "header:X-User-Id"
    rate  = "1r/h"
    burst = 2
    scope = "redis"
  }
  limit "item" {
    key   = "path:2"
    rate  = "1r/h"
    burst = 1000
    scope = "redis"
  }`)
	a, b := startEdge(t, src), startEdge(t, src)
	for u := 0; u < 30; u++ {
		user := "user-" + strconv.Itoa(u)
		for i, want := range []int{200, 200, 429, 429} {
			e := a
			if i%2 == 1 {
				e = b
			}
			if r := e.do(t, "GET", "/r/"+strconv.Itoa(u%3), "X-User-Id", user); r.StatusCode() != want {
				t.Fatalf("%s request %d: %d %q, want %d", user, i, r.StatusCode(), r.Body(), want)
			}
		}
	}
	errs := 0.0
	for _, e := range []*testEdge{a, b} {
		for _, l := range []string{"user", "item"} {
			errs += max(0, limitMetric(t, e.reg, "edge_limit_redis_errors_total", "r", l, ""))
		}
	}
	if errs != 0 {
		t.Errorf("edge_limit_redis_errors_total = %v on a healthy cluster, want 0", errs)
	}
	if p := decisions(t, []*testEdge{a, b}, "r", "item", "pass"); p != 60 {
		t.Errorf("item passes %v, want 60 (the user limit's rejections take no item token)", p)
	}
}

// A request rejected by a later limit gets its redis token back; headers come from the
// Redis bucket.
func TestLimitRedisRefundAndHeaders(t *testing.T) {
	rs := redistest.Start(t)
	e := startEdge(t, redisLimitConfig([]string{rs.Addr}, "2s", "", `
  limit "user" {
    key     = "header:X-User-Id"
    rate    = "6r/m"
    burst   = 2
    scope   = "redis"
    headers = true
  }
  limit "item" {
    key  = "path:2"
    rate = "1r/h"
  }`))
	r := e.do(t, "GET", "/r/1", "X-User-Id", "u1")
	wantAnswer(t, r, 200, "ok")
	if lim, rem := string(r.Header.Peek("RateLimit-Limit")), string(r.Header.Peek("RateLimit-Remaining")); lim != "2" || rem != "1" {
		t.Errorf("RateLimit-Limit %q Remaining %q, want 2 and 1", lim, rem)
	}
	// Rejected by item, twice: u2 keeps both tokens.
	wantAnswer(t, e.do(t, "GET", "/r/1", "X-User-Id", "u2"), 429, `{"error":"rate_limited"}`)
	wantAnswer(t, e.do(t, "GET", "/r/1", "X-User-Id", "u2"), 429, `{"error":"rate_limited"}`)
	r = e.do(t, "GET", "/r/2", "X-User-Id", "u2")
	wantAnswer(t, r, 200, "ok")
	if rem := string(r.Header.Peek("RateLimit-Remaining")); rem != "1" {
		t.Errorf("u2 RateLimit-Remaining %q after two refunded rejections, want 1", rem)
	}
	wantAnswer(t, e.do(t, "GET", "/r/3", "X-User-Id", "u2"), 200, "ok")
	r = e.do(t, "GET", "/r/4", "X-User-Id", "u2")
	wantAnswer(t, r, 429, `{"error":"rate_limited"}`)
	if ra := string(r.Header.Peek("Retry-After")); ra != "10" && ra != "9" {
		t.Errorf("Retry-After %q, want about 10 (6r/m)", ra)
	}
}

// Redis killed: fail_open passes and fail-closed answers 503, both at once (well within
// the timeout); Redis hung: both answer within about the timeout; Redis back: exact again.
func TestLimitRedisDown(t *testing.T) {
	old := redisRetryEvery
	redisRetryEvery = 20 * time.Millisecond
	t.Cleanup(func() { redisRetryEvery = old })

	rs := redistest.Start(t)
	const timeout = 300 * time.Millisecond
	cfg := func(failOpen bool) string {
		return redisLimitConfig([]string{rs.Addr}, timeout.String(), "", fmt.Sprintf(`
  limit "user" {
    key       = "header:X-User-Id"
    rate      = "1r/h"
    burst     = 3
    scope     = "redis"
    fail_open = %v
  }`, failOpen))
	}
	open, closed := startEdge(t, cfg(true)), startEdge(t, cfg(false))
	edges := []*testEdge{open, closed}
	exact := func(user string) {
		t.Helper()
		if got := hitConcurrently(t, edges, 4, "/r/x", user); got[200] != 3 || got[429] != 5 {
			t.Errorf("%s: answers %v, want exactly 3 × 200 and 5 × 429", user, got)
		}
	}
	exact("before")

	down := func(how string, bound time.Duration) {
		t.Helper()
		for i := 0; i < 3; i++ {
			start := time.Now()
			r := open.do(t, "GET", "/r/x", "X-User-Id", "before")
			if took := time.Since(start); r.StatusCode() != 200 || took > bound {
				t.Errorf("%s, fail_open: %d after %v, want 200 within %v", how, r.StatusCode(), took, bound)
			}
			start = time.Now()
			r = closed.do(t, "GET", "/r/x", "X-User-Id", "new")
			took := time.Since(start)
			t.Logf("%s: fail closed answered %d in %v", how, r.StatusCode(), took)
			if r.StatusCode() != 503 || string(r.Body()) != `{"error":"store_unavailable"}` ||
				string(r.Header.Peek("Retry-After")) != "1" || took > bound {
				t.Errorf("%s, fail closed: %d %q Retry-After %q after %v, want 503 store_unavailable within %v",
					how, r.StatusCode(), r.Body(), r.Header.Peek("Retry-After"), took, bound)
			}
		}
	}
	// A hung Redis is the slow case: every call waits for its timeout.
	rs.Pause()
	down("redis paused", timeout+time.Second)
	rs.Resume()
	rs.Kill()
	down("redis killed", timeout+time.Second)

	if v := limitMetric(t, open.reg, "edge_limit_decisions_total", "r", "user", "fail_open"); v != 6 {
		t.Errorf("fail_open decisions %v, want 6", v)
	}
	if v := limitMetric(t, closed.reg, "edge_limit_decisions_total", "r", "user", "unavailable"); v != 6 {
		t.Errorf("unavailable decisions %v, want 6", v)
	}
	if v := limitMetric(t, closed.reg, "edge_limit_redis_errors_total", "r", "user", ""); v != 6 {
		t.Errorf("edge_limit_redis_errors_total %v, want 6", v)
	}

	rs.Restart() // empty: every bucket is full again
	idemWaitFor(t, "the edges to reach redis again", func() bool {
		return closed.do(t, "GET", "/r/x", "X-User-Id", "probe").StatusCode() != 503 &&
			open.do(t, "GET", "/r/x", "X-User-Id", "probe").StatusCode() != 503
	})
	exact("after")
}

// A redis-scoped limit takes no scale: it is one exact bucket for every node.
func TestLimitRedisNoScale(t *testing.T) {
	rs := redistest.Start(t)
	e := startEdge(t, redisLimitConfig([]string{rs.Addr}, "1s", "", `
  limit "user" {
    key   = "header:X-User-Id"
    rate  = "1r/s"
    scope = "redis"
  }`))
	if err := e.px.SetLimitScale("r", "user", 0.5); !errors.Is(err, ErrNoLimit) {
		t.Errorf("SetLimitScale(0.5) of a redis-scoped limit = %v, want ErrNoLimit", err)
	}
	// Scale 1 (what the cluster sets when a limit leaves scope "cluster") is accepted.
	if err := e.px.SetLimitScale("r", "user", 1); err != nil {
		t.Errorf("SetLimitScale(1) of a redis-scoped limit = %v, want nil", err)
	}
	wantAnswer(t, e.do(t, "GET", "/r/x", "X-User-Id", "u1"), 200, "ok")
	wantAnswer(t, e.do(t, "GET", "/r/x", "X-User-Id", "u1"), 429, `{"error":"rate_limited"}`)
}

// A reload that changes rate or burst keeps the Redis buckets without refilling them, as
// for local limits.
func TestLimitRedisReload(t *testing.T) {
	rs := redistest.Start(t)
	cfg := func(burst int) string {
		return redisLimitConfig([]string{rs.Addr}, "1s", "", fmt.Sprintf(`
  limit "user" {
    key   = "header:X-User-Id"
    rate  = "1r/h"
    burst = %d
    scope = "redis"
  }`, burst))
	}
	e := startEdge(t, cfg(3))
	for range 2 {
		wantAnswer(t, e.do(t, "GET", "/r/x", "X-User-Id", "u1"), 200, "")
	}
	wantAnswer(t, e.do(t, "GET", "/r/x", "X-User-Id", "u2"), 200, "")
	if err := e.reload(t, cfg(2)); err != nil { // u1 holds 1 token, u2 holds 2
		t.Fatal(err)
	}
	for _, c := range []struct {
		user string
		want []int
	}{{"u1", []int{200, 429}}, {"u2", []int{200, 200, 429}}, {"u3", []int{200, 200, 429}}} {
		for i, want := range c.want {
			if r := e.do(t, "GET", "/r/x", "X-User-Id", c.user); r.StatusCode() != want {
				t.Errorf("after reload, %s request %d: %d, want %d", c.user, i, r.StatusCode(), want)
			}
		}
	}
}
