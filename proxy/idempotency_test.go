package proxy

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edge-gw/edge/internal/origintest"
	"github.com/edge-gw/edge/internal/redistest"
	"github.com/valyala/fasthttp"
)

// orderOrigin is an origin that creates an order per request it sees: 201 with the order
// number in the body and in X-Order-Id, a cookie (never replayed) and a Date. A request with
// X-Fail answers that status instead; while gate is set, requests wait for it to close.
type orderOrigin struct {
	*origintest.Origin
	n    atomic.Int64
	gate atomic.Pointer[chan struct{}]
}

func startOrderOrigin(t *testing.T) *orderOrigin {
	o := &orderOrigin{}
	o.Origin = origintest.Start(t, func(ctx *fasthttp.RequestCtx) {
		if g := o.gate.Load(); g != nil {
			<-*g
		}
		if f := ctx.Request.Header.Peek("X-Fail"); len(f) > 0 {
			st, _ := strconv.Atoi(string(f))
			ctx.SetStatusCode(st)
			ctx.SetBodyString(`{"error":"origin says no"}`)
			return
		}
		n := o.n.Add(1)
		ctx.SetStatusCode(201)
		ctx.SetContentType("application/json")
		ctx.Response.Header.Set("X-Order-Id", strconv.FormatInt(n, 10))
		ctx.Response.Header.Set("Set-Cookie", "session=s"+strconv.FormatInt(n, 10))
		ctx.SetBodyString(fmt.Sprintf(`{"order":%d,"user":%q,"body":%q}`, n, ctx.Request.Header.Peek("X-User-Id"), ctx.Request.Body()))
	})
	return o
}

// hold makes the origin wait until the returned function is called.
func (o *orderOrigin) hold() (release func()) {
	ch := make(chan struct{})
	o.gate.Store(&ch)
	var once sync.Once
	return func() { once.Do(func() { o.gate.Store(nil); close(ch) }) }
}

// idemConfig is an edge with route "orders" (POST /orders/…, idempotent with the given
// extra attributes) forwarding to origin. redis, when set, adds a seckill block whose
// redis block the idempotency store "redis" uses.
func idemConfig(origin, redis, extra string) string {
	sk := ""
	if redis != "" {
		sk = fmt.Sprintf(`
seckill {
  store  = "memory"
  redis { addrs = [%q] }
  secret = "0123456789abcdef0123456789abcdef"
}`, redis)
	}
	return fmt.Sprintf(`
trusted_proxies = ["127.0.0.1/32"]
upstream "app" {
  servers = [%q]
  timeout = "3s"
}
%s
route "orders" {
  match {
    path    = "/orders/"
    methods = ["POST", "GET"]
  }
  upstream = "app"
  idempotency {
    %s
  }
}
route "plain" {
  match { path = "/plain/" }
  upstream = "app"
}
`, origin, sk, extra)
}

// post sends a POST with body and header pairs.
func (e *testEdge) post(t testing.TB, uri, body string, headers ...string) *fasthttp.Response {
	t.Helper()
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	req.Header.SetMethod("POST")
	req.SetRequestURI("http://" + e.addr + uri)
	req.SetBodyString(body)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp := &fasthttp.Response{}
	if err := fasthttp.DoTimeout(req, resp, 10*time.Second); err != nil {
		t.Errorf("POST %s: %v", uri, err)
	}
	return resp
}

// replayable is what a client must see again on a replay: status, body and headers,
// without the two a replay drops on purpose (Date is now, Set-Cookie is never replayed)
// and without Idempotent-Replayed.
func replayable(r *fasthttp.Response) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d\n", r.StatusCode())
	for k, v := range r.Header.All() {
		switch string(k) {
		case "Date", "Set-Cookie", "Idempotent-Replayed":
			continue
		}
		fmt.Fprintf(&b, "%s: %s\n", k, v)
	}
	b.Write(r.Body())
	return b.String()
}

func isReplay(r *fasthttp.Response) bool {
	return string(r.Header.Peek("Idempotent-Replayed")) == "true"
}

func TestIdempotencyOnceAtOnceAndInARow(t *testing.T) {
	o := startOrderOrigin(t)
	e := startEdge(t, idemConfig(o.Addr, "", `wait = "5s"`))

	release := o.hold()
	var wg, ready sync.WaitGroup
	start := make(chan struct{})
	resps := make([]*fasthttp.Response, 20)
	for i := range resps {
		wg.Add(1)
		ready.Add(1)
		go func() {
			defer wg.Done()
			ready.Done()
			<-start
			resps[i] = e.post(t, "/orders/new", `{"item":42}`, "X-User-Id", "u1", "Idempotency-Key", "k-1")
		}()
	}
	ready.Wait()
	close(start)
	eventually(t, "the first request to reach the origin", func() bool { return o.Requests.Load() == 1 })
	release()
	wg.Wait()

	var first *fasthttp.Response
	replays := 0
	for _, r := range resps {
		if isReplay(r) {
			replays++
		} else if first != nil {
			t.Fatalf("two answers without Idempotent-Replayed:\n%s\n%s", replayable(first), replayable(r))
		} else {
			first = r
		}
	}
	if first == nil || first.StatusCode() != 201 || replays != 19 {
		t.Fatalf("want one first answer (201) and 19 replays, got first=%v replays=%d", first != nil, replays)
	}
	if len(first.Header.Peek("Set-Cookie")) == 0 {
		t.Errorf("the first answer lost its Set-Cookie: %s", first.Header.String())
	}
	want := replayable(first)
	for _, r := range resps {
		if got := replayable(r); got != want {
			t.Errorf("answer differs from the recorded one:\n got %q\nwant %q", got, want)
		}
	}
	for i := 0; i < 20; i++ {
		r := e.post(t, "/orders/new", `{"item":42}`, "X-User-Id", "u1", "Idempotency-Key", "k-1")
		if !isReplay(r) || replayable(r) != want || len(r.Header.Peek("Set-Cookie")) != 0 {
			t.Errorf("repeat %d: replayed=%v set-cookie=%q\n got %q\nwant %q", i, isReplay(r), r.Header.Peek("Set-Cookie"), replayable(r), want)
		}
	}
	if n := o.Requests.Load(); n != 1 {
		t.Errorf("origin saw %d requests, want 1", n)
	}
	if got := gathered(t, e.reg, "edge_idempotency_total", "result", "first"); got != 1 {
		t.Errorf("edge_idempotency_total{result=first} = %v, want 1", got)
	}
	if got := gathered(t, e.reg, "edge_idempotency_total", "result", "replayed"); got != 39 {
		t.Errorf("edge_idempotency_total{result=replayed} = %v, want 39", got)
	}
}

func TestIdempotencyInProgress(t *testing.T) {
	o := startOrderOrigin(t)
	e := startEdge(t, idemConfig(o.Addr, "", ""))

	release := o.hold()
	defer release()
	firstDone := make(chan *fasthttp.Response)
	go func() { firstDone <- e.post(t, "/orders/new", "a", "X-User-Id", "u1", "Idempotency-Key", "k") }()
	eventually(t, "the first request to reach the origin", func() bool { return o.Requests.Load() == 1 })

	var wg sync.WaitGroup
	for i := 0; i < 19; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := e.post(t, "/orders/new", "a", "X-User-Id", "u1", "Idempotency-Key", "k")
			if r.StatusCode() != 409 || string(r.Body()) != `{"error":"in_progress"}` || string(r.Header.Peek("Retry-After")) != "1" {
				t.Errorf("repeat while in flight = %d %q (Retry-After %q), want 409 in_progress", r.StatusCode(), r.Body(), r.Header.Peek("Retry-After"))
			}
		}()
	}
	wg.Wait()
	// Another body with the same key while the first runs is a reused key, not a repeat.
	if r := e.post(t, "/orders/new", "b", "X-User-Id", "u1", "Idempotency-Key", "k"); r.StatusCode() != 422 {
		t.Errorf("other request while in flight = %d %q, want 422", r.StatusCode(), r.Body())
	}
	release()
	first := <-firstDone
	if first.StatusCode() != 201 || isReplay(first) {
		t.Fatalf("first = %d replayed=%v", first.StatusCode(), isReplay(first))
	}
	if r := e.post(t, "/orders/new", "a", "X-User-Id", "u1", "Idempotency-Key", "k"); !isReplay(r) || replayable(r) != replayable(first) {
		t.Errorf("repeat after completion: %q, want the recorded %q", replayable(r), replayable(first))
	}
	if n := o.Requests.Load(); n != 1 {
		t.Errorf("origin saw %d requests, want 1", n)
	}
	if got := gathered(t, e.reg, "edge_idempotency_total", "result", "in_progress"); got != 19 {
		t.Errorf("edge_idempotency_total{result=in_progress} = %v, want 19", got)
	}
}

func TestIdempotencyScopesAndReuse(t *testing.T) {
	o := startOrderOrigin(t)
	e := startEdge(t, idemConfig(o.Addr, "", ""))

	body := func(r *fasthttp.Response) string { return string(r.Body()) }
	u1 := e.post(t, "/orders/new", "x", "X-User-Id", "u1", "Idempotency-Key", "same")
	u2 := e.post(t, "/orders/new", "x", "X-User-Id", "u2", "Idempotency-Key", "same")
	if u1.StatusCode() != 201 || u2.StatusCode() != 201 || isReplay(u2) || body(u1) == body(u2) {
		t.Fatalf("two users with one key must be independent: %d %q / %d %q", u1.StatusCode(), body(u1), u2.StatusCode(), body(u2))
	}
	if r := e.post(t, "/orders/new", "x", "X-User-Id", "u2", "Idempotency-Key", "same"); !isReplay(r) || body(r) != body(u2) {
		t.Errorf("u2's repeat = %q, want u2's own answer %q", body(r), body(u2))
	}
	// Without a user, the client IP is the scope (X-Forwarded-For from a trusted peer).
	a := e.post(t, "/orders/new", "x", "X-Forwarded-For", "203.0.113.1", "Idempotency-Key", "same")
	b := e.post(t, "/orders/new", "x", "X-Forwarded-For", "203.0.113.2", "Idempotency-Key", "same")
	a2 := e.post(t, "/orders/new", "x", "X-Forwarded-For", "203.0.113.1", "Idempotency-Key", "same")
	if isReplay(a) || isReplay(b) || !isReplay(a2) || body(a2) != body(a) {
		t.Errorf("IP scopes: a replayed=%v, b replayed=%v, a again replayed=%v (%q vs %q)", isReplay(a), isReplay(b), isReplay(a2), body(a2), body(a))
	}
	// A user id that looks like an IP does not share the IP's scope.
	if r := e.post(t, "/orders/new", "x", "X-User-Id", "203.0.113.1", "Idempotency-Key", "same"); isReplay(r) {
		t.Errorf("user 203.0.113.1 got the answer of client IP 203.0.113.1")
	}
	if n := o.Requests.Load(); n != 5 {
		t.Errorf("origin saw %d requests, want 5", n)
	}

	f := func(name, uri, reqBody string) {
		t.Helper()
		r := e.post(t, uri, reqBody, "X-User-Id", "u1", "Idempotency-Key", "same")
		if r.StatusCode() != 422 || string(r.Body()) != `{"error":"key_reused"}` {
			t.Errorf("%s: %d %q, want 422 key_reused", name, r.StatusCode(), r.Body())
		}
	}
	f("another body", "/orders/new", "y")
	f("another path", "/orders/other", "x")
	f("another query", "/orders/new?x=1", "x")
	if n := o.Requests.Load(); n != 5 {
		t.Errorf("origin saw %d requests after the reused keys, want still 5", n)
	}
	if got := gathered(t, e.reg, "edge_idempotency_total", "result", "reused"); got != 3 {
		t.Errorf("edge_idempotency_total{result=reused} = %v, want 3", got)
	}
}

func TestIdempotencyFailuresAreNotRecorded(t *testing.T) {
	o := startOrderOrigin(t)
	e := startEdge(t, idemConfig(o.Addr, "", ""))

	// A 5xx is not recorded: the retry is forwarded and its answer recorded.
	r := e.post(t, "/orders/new", "x", "X-User-Id", "u1", "Idempotency-Key", "k5", "X-Fail", "500")
	if r.StatusCode() != 500 || isReplay(r) {
		t.Fatalf("first = %d replayed=%v, want the origin's 500", r.StatusCode(), isReplay(r))
	}
	r = e.post(t, "/orders/new", "x", "X-User-Id", "u1", "Idempotency-Key", "k5")
	if r.StatusCode() != 201 || isReplay(r) {
		t.Fatalf("retry after a 5xx = %d replayed=%v, want a forwarded 201", r.StatusCode(), isReplay(r))
	}
	if r = e.post(t, "/orders/new", "x", "X-User-Id", "u1", "Idempotency-Key", "k5"); r.StatusCode() != 201 || !isReplay(r) {
		t.Errorf("repeat after the 201 = %d replayed=%v, want the recorded 201", r.StatusCode(), isReplay(r))
	}
	// A 4xx of the origin is an answer: recorded.
	r = e.post(t, "/orders/new", "x", "X-User-Id", "u1", "Idempotency-Key", "k4", "X-Fail", "409")
	r2 := e.post(t, "/orders/new", "x", "X-User-Id", "u1", "Idempotency-Key", "k4")
	if r.StatusCode() != 409 || r2.StatusCode() != 409 || !isReplay(r2) {
		t.Errorf("origin 409 then repeat = %d, %d replayed=%v; want the 409 replayed", r.StatusCode(), r2.StatusCode(), isReplay(r2))
	}
	if n := o.Requests.Load(); n != 3 {
		t.Errorf("origin saw %d requests, want 3", n)
	}

	// An unreachable upstream (502 from the edge) is not recorded either.
	dead := startEdge(t, idemConfig(origintest.FreeAddr(t), "", ""))
	for i := 0; i < 2; i++ {
		if r := dead.post(t, "/orders/new", "x", "X-User-Id", "u1", "Idempotency-Key", "k"); r.StatusCode() != 502 || isReplay(r) {
			t.Errorf("dead upstream try %d = %d replayed=%v, want 502 each time", i, r.StatusCode(), isReplay(r))
		}
	}
	if got := gathered(t, dead.reg, "edge_idempotency_total", "result", "not_recorded"); got != 2 {
		t.Errorf("edge_idempotency_total{result=not_recorded} = %v, want 2", got)
	}
}

// TestIdempotencyTimeoutIsRecorded: a request that timed out (504) may have reached the
// origin and been acted on: its key keeps edge's 504, replayed, and is never forwarded
// again, while the origin did finish the first.
func TestIdempotencyTimeoutIsRecorded(t *testing.T) {
	o := startOrderOrigin(t)
	e := startEdge(t, strings.Replace(idemConfig(o.Addr, "", ""), `timeout = "3s"`, `timeout = "300ms"`, 1))
	release := o.hold()
	r := e.post(t, "/orders/new", "x", "X-User-Id", "u1", "Idempotency-Key", "kt")
	if r.StatusCode() != 504 || isReplay(r) {
		t.Fatalf("first = %d replayed=%v, want edge's 504", r.StatusCode(), isReplay(r))
	}
	release()
	waitUntil(t, 5*time.Second, "the origin to finish the first order", func() bool { return o.n.Load() == 1 })
	for i := range 2 {
		r = e.post(t, "/orders/new", "x", "X-User-Id", "u1", "Idempotency-Key", "kt")
		if r.StatusCode() != 504 || !isReplay(r) || string(r.Body()) != `{"error":"gateway_timeout"}` {
			t.Errorf("repeat %d = %d %s replayed=%v, want the 504 replayed", i, r.StatusCode(), r.Body(), isReplay(r))
		}
	}
	if n := o.n.Load(); n != 1 {
		t.Errorf("origin acted on %d orders, want 1", n)
	}
}

func TestIdempotencyKeysAndMethods(t *testing.T) {
	o := startOrderOrigin(t)
	e := startEdge(t, idemConfig(o.Addr, "", `required = true`))

	f := func(name string, r *fasthttp.Response, status int, body string) {
		t.Helper()
		if r.StatusCode() != status || (body != "" && string(r.Body()) != body) {
			t.Errorf("%s = %d %q, want %d %s", name, r.StatusCode(), r.Body(), status, body)
		}
	}
	f("missing key", e.post(t, "/orders/new", "x", "X-User-Id", "u1"), 400, `{"error":"missing_idempotency_key"}`)
	f("empty key", e.post(t, "/orders/new", "x", "X-User-Id", "u1", "Idempotency-Key", ""), 400, `{"error":"missing_idempotency_key"}`)
	f("over-long key", e.post(t, "/orders/new", "x", "X-User-Id", "u1", "Idempotency-Key", strings.Repeat("k", 256)), 400, `{"error":"invalid_idempotency_key"}`)
	f("longest key", e.post(t, "/orders/new", "x", "X-User-Id", "u1", "Idempotency-Key", strings.Repeat("k", 255)), 201, "")
	f("over-long user", e.post(t, "/orders/new", "x", "X-User-Id", strings.Repeat("u", 300), "Idempotency-Key", "k"), 400, `{"error":"invalid_user"}`)
	// GET is not in methods: no key needed, no guarantee.
	f("GET without key", e.do(t, "GET", "/orders/1"), 201, "")
	f("GET again", e.do(t, "GET", "/orders/1"), 201, "")
	if n := o.Requests.Load(); n != 3 {
		t.Errorf("origin saw %d requests, want 3", n)
	}

	// Without required, a request without a key is forwarded as is.
	o2 := startOrderOrigin(t)
	e2 := startEdge(t, idemConfig(o2.Addr, "", `header = "X-Request-Key"`))
	f("optional key", e2.post(t, "/orders/new", "x", "X-User-Id", "u1"), 201, "")
	f("optional key again", e2.post(t, "/orders/new", "x", "X-User-Id", "u1"), 201, "")
	f("custom header", e2.post(t, "/orders/new", "x", "X-User-Id", "u1", "X-Request-Key", "a"), 201, "")
	if r := e2.post(t, "/orders/new", "x", "X-User-Id", "u1", "X-Request-Key", "a"); !isReplay(r) {
		t.Errorf("repeat with the custom header was not replayed")
	}
	if n := o2.Requests.Load(); n != 3 {
		t.Errorf("origin saw %d requests, want 3", n)
	}
}

func TestIdempotencyRecordsSurviveReload(t *testing.T) {
	o := startOrderOrigin(t)
	src := idemConfig(o.Addr, "", "")
	e := startEdge(t, src)
	first := e.post(t, "/orders/new", "x", "X-User-Id", "u1", "Idempotency-Key", "k")
	if err := e.reload(t, src+"\n# touched\n"); err != nil {
		t.Fatal(err)
	}
	if r := e.post(t, "/orders/new", "x", "X-User-Id", "u1", "Idempotency-Key", "k"); !isReplay(r) || replayable(r) != replayable(first) {
		t.Errorf("repeat after a reload: replayed=%v %q, want %q", isReplay(r), replayable(r), replayable(first))
	}
	// A new max_entries makes a new store: its records start empty.
	if err := e.reload(t, idemConfig(o.Addr, "", "max_entries = 1000")); err != nil {
		t.Fatal(err)
	}
	if r := e.post(t, "/orders/new", "x", "X-User-Id", "u1", "Idempotency-Key", "k"); isReplay(r) {
		t.Errorf("repeat after max_entries changed was replayed from the old store")
	}
}

func TestIdempotencyRecordsExpire(t *testing.T) {
	o := startOrderOrigin(t)
	e := startEdge(t, idemConfig(o.Addr, "", `ttl = "500ms"`))
	checkTTL(t, e, 500*time.Millisecond)
}

// checkTTL: a repeat within ttl is replayed; after ttl the record is gone and the same
// request is forwarded again.
func checkTTL(t *testing.T, e *testEdge, ttl time.Duration) {
	t.Helper()
	start := time.Now()
	first := e.post(t, "/orders/new", "x", "X-User-Id", "u1", "Idempotency-Key", "k")
	if r := e.post(t, "/orders/new", "x", "X-User-Id", "u1", "Idempotency-Key", "k"); !isReplay(r) && time.Since(start) < ttl {
		t.Fatalf("repeat within ttl was not replayed: %d %q", r.StatusCode(), r.Body())
	}
	// After ttl, the record is gone: the same request is forwarded again.
	eventually(t, "the record to expire", func() bool {
		r := e.post(t, "/orders/new", "x", "X-User-Id", "u1", "Idempotency-Key", "k")
		return !isReplay(r) && r.StatusCode() == 201 && string(r.Body()) != string(first.Body())
	})
}

func TestIdempotencyCells(t *testing.T) {
	o := startOrderOrigin(t)
	e := startEdge(t, fmt.Sprintf(`
cells "shop" {
  key         = "header:X-User-Id"
  missing_key = "reject"
  timeout     = "2s"
  cell "c1" { servers = [%q] }
}
route "orders" {
  match { path = "/orders/" }
  cells = "shop"
  idempotency {}
}
`, o.Addr))
	if lease := e.px.Current().routes[0].idem.lease; lease != 10*time.Second {
		t.Errorf("default lease = %v, want max(2 × 2s, 10s)", lease)
	}
	r := e.post(t, "/orders/new", "x", "X-User-Id", "u1", "Idempotency-Key", "k")
	r2 := e.post(t, "/orders/new", "x", "X-User-Id", "u1", "Idempotency-Key", "k")
	if r.StatusCode() != 201 || !isReplay(r2) || replayable(r2) != replayable(r) || string(r2.Header.Peek("X-Edge-Cell")) != "c1" {
		t.Errorf("cells route: %q then %q", replayable(r), replayable(r2))
	}
	// The edge's own 400 (no user for the cells) is not recorded.
	for i := 0; i < 2; i++ {
		if r := e.post(t, "/orders/new", "x", "Idempotency-Key", "k"); r.StatusCode() != 400 || isReplay(r) {
			t.Errorf("cells without a key: %d replayed=%v, want the edge's 400 each time", r.StatusCode(), isReplay(r))
		}
	}
	if n := o.Requests.Load(); n != 1 {
		t.Errorf("origin saw %d requests, want 1", n)
	}
}

func TestIdempotencyConfigErrors(t *testing.T) {
	err := Check(mustParse(t, idemConfig("127.0.0.1:1", "", `lease = "1s"`)))
	if err == nil || !strings.Contains(err.Error(), "lease 1s is shorter than the upstream timeout 3s") {
		t.Errorf("short lease: %v", err)
	}
}

func TestIdempotencyRedisTwoEdges(t *testing.T) {
	rs := redistest.Start(t)
	o := startOrderOrigin(t)
	src := idemConfig(o.Addr, rs.Addr, `
    store = "redis"
    wait  = "5s"`)
	a, b := startEdge(t, src), startEdge(t, src)

	release := o.hold()
	var wg sync.WaitGroup
	resps := make([]*fasthttp.Response, 20)
	for i := range resps {
		e := a
		if i%2 == 1 {
			e = b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			resps[i] = e.post(t, "/orders/new", "x", "X-User-Id", "u1", "Idempotency-Key", "shared")
		}()
	}
	eventually(t, "the first request to reach the origin", func() bool { return o.Requests.Load() >= 1 })
	release()
	wg.Wait()
	want := ""
	replays := 0
	for _, r := range resps {
		if r.StatusCode() != 201 {
			t.Fatalf("answer %d %q, want 201", r.StatusCode(), r.Body())
		}
		if isReplay(r) {
			replays++
		} else {
			want = replayable(r)
		}
	}
	if replays != 19 {
		t.Errorf("%d replays, want 19", replays)
	}
	for _, e := range []*testEdge{a, b, a, b} {
		if r := e.post(t, "/orders/new", "x", "X-User-Id", "u1", "Idempotency-Key", "shared"); !isReplay(r) || replayable(r) != want {
			t.Errorf("repeat: replayed=%v %q, want %q", isReplay(r), replayable(r), want)
		}
	}
	if r := b.post(t, "/orders/new", "y", "X-User-Id", "u1", "Idempotency-Key", "shared"); r.StatusCode() != 422 {
		t.Errorf("other body on the other edge = %d, want 422", r.StatusCode())
	}
	if n := o.Requests.Load(); n != 1 {
		t.Errorf("origin saw %d requests through two edges, want 1", n)
	}
	// One shared client per Redis, however many routes and snapshots use it.
	a.px.redis.mu.Lock()
	conns := len(a.px.redis.conns)
	a.px.redis.mu.Unlock()
	if conns != 1 {
		t.Errorf("edge holds %d redis clients, want 1", conns)
	}
}

func TestIdempotencyRedisTTL(t *testing.T) {
	rs := redistest.Start(t)
	o := startOrderOrigin(t)
	e := startEdge(t, idemConfig(o.Addr, rs.Addr, `
    store = "redis"
    ttl   = "500ms"`))
	checkTTL(t, e, 500*time.Millisecond)
}

func TestIdempotencyRedisDown(t *testing.T) {
	old := redisRetryEvery
	redisRetryEvery = 20 * time.Millisecond
	t.Cleanup(func() { redisRetryEvery = old })

	rs := redistest.Start(t)
	rs.Kill() // down before edge starts: edge must start and serve anyway
	o := startOrderOrigin(t)
	closed := startEdge(t, idemConfig(o.Addr, rs.Addr, `store = "redis"`))
	open := startEdge(t, idemConfig(o.Addr, rs.Addr, `
    store     = "redis"
    fail_open = true`))

	r := closed.post(t, "/orders/new", "x", "X-User-Id", "u1", "Idempotency-Key", "k")
	if r.StatusCode() != 503 || string(r.Body()) != `{"error":"store_unavailable"}` || string(r.Header.Peek("Retry-After")) != "1" {
		t.Errorf("fail closed with redis down = %d %q Retry-After %q, want 503 store_unavailable", r.StatusCode(), r.Body(), r.Header.Peek("Retry-After"))
	}
	if n := o.Requests.Load(); n != 0 {
		t.Errorf("origin saw %d requests while failing closed, want 0", n)
	}
	for i := 0; i < 2; i++ {
		if r := open.post(t, "/orders/new", "x", "X-User-Id", "u1", "Idempotency-Key", "k"); r.StatusCode() != 201 || isReplay(r) {
			t.Errorf("fail open try %d = %d replayed=%v, want forwarded 201", i, r.StatusCode(), isReplay(r))
		}
	}
	if n := o.Requests.Load(); n != 2 {
		t.Errorf("origin saw %d requests failing open, want 2", n)
	}
	if got := gathered(t, closed.reg, "edge_idempotency_total", "result", "unavailable"); got != 1 {
		t.Errorf("edge_idempotency_total{result=unavailable} = %v, want 1", got)
	}

	// Redis comes up: the background retry connects, and the guarantee is back.
	rs.Restart()
	eventually(t, "the edge to connect redis", func() bool {
		return closed.post(t, "/orders/new", "x", "X-User-Id", "u1", "Idempotency-Key", "k").StatusCode() == 201
	})
	if r := closed.post(t, "/orders/new", "x", "X-User-Id", "u1", "Idempotency-Key", "k"); !isReplay(r) {
		t.Errorf("repeat after redis came up = %d, want a replay", r.StatusCode())
	}

	// Redis goes away under a connected client: fail closed again.
	rs.Kill()
	if r := closed.post(t, "/orders/new", "x", "X-User-Id", "u1", "Idempotency-Key", "k2"); r.StatusCode() != 503 {
		t.Errorf("fail closed after redis died = %d %q, want 503", r.StatusCode(), r.Body())
	}
}

// TestRedisRegistryShares: routes and snapshots on one Redis share one client, released
// after the last user is gone.
func TestRedisRegistryShares(t *testing.T) {
	old := redisCloseGrace
	redisCloseGrace = 10 * time.Millisecond
	t.Cleanup(func() { redisCloseGrace = old })
	rs := redistest.Start(t)
	o := startOrderOrigin(t)
	src := idemConfig(o.Addr, rs.Addr, `store = "redis"`) + `
route "orders2" {
  match { path = "/orders2/" }
  upstream = "app"
  idempotency { store = "redis" }
}`
	e := startEdge(t, src)
	conn := func() (n, refs int) {
		e.px.redis.mu.Lock()
		defer e.px.redis.mu.Unlock()
		for _, c := range e.px.redis.conns {
			refs += c.refs
		}
		return len(e.px.redis.conns), refs
	}
	if n, refs := conn(); n != 1 || refs != 2 {
		t.Errorf("clients %d with %d references, want 1 with 2", n, refs)
	}
	if err := e.reload(t, src+"\n"); err != nil {
		t.Fatal(err)
	}
	if n, refs := conn(); n != 1 || refs != 2 {
		t.Errorf("after reload: clients %d with %d references, want 1 with 2", n, refs)
	}
	if r := e.post(t, "/orders2/x", "x", "Idempotency-Key", "k"); r.StatusCode() != 201 {
		t.Errorf("after reload: %d %q", r.StatusCode(), r.Body())
	}
	if err := e.reload(t, idemConfig(o.Addr, "", "")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the unused client to close", func() bool { n, _ := conn(); return n == 0 })
}
