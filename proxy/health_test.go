package proxy

import (
	"bufio"
	"fmt"
	"net"
	"net/textproto"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edge-gw/edge/internal/origintest"
	"github.com/valyala/fasthttp"
)

// poolConfig is an upstream "app" over addrs with extra lines in its block, and a
// route /app/ to it for every method.
func poolConfig(extra string, addrs ...string) string {
	return fmt.Sprintf(`
upstream "app" {
  servers = [%s]
  timeout = "400ms"
  connect_timeout = "200ms"
  %s
}
route "app" {
  match { path = "/app/" }
  upstream = "app"
}
`, quoteList(addrs), extra)
}

// brokenOrigin reads each request's head and closes the connection without an
// answer: the request reached it, the response never came.
func brokenOrigin(t *testing.T) (addr string, requests *atomic.Int64) {
	requests = &atomic.Int64{}
	addr, _ = rawOrigin(t, func(c net.Conn) {
		tp := textproto.NewReader(bufio.NewReader(c))
		if _, err := tp.ReadLine(); err != nil {
			return
		}
		if _, err := tp.ReadMIMEHeader(); err != nil {
			return
		}
		requests.Add(1)
	})
	return addr, requests
}

// A POST that timed out at an origin reached origins exactly once; so did a GET
// (a timeout is never retried: the origin may still be working on it).
func TestTimeoutNotRetried(t *testing.T) {
	slow := func(ctx *fasthttp.RequestCtx) { time.Sleep(time.Second) }
	a, b := origintest.Start(t, slow), origintest.Start(t, slow)
	e := startEdge(t, poolConfig("", a.Addr, b.Addr))
	for _, method := range []string{"POST", "GET"} {
		before := a.Requests.Load() + b.Requests.Load()
		resp := e.do(t, method, "/app/order")
		if resp.StatusCode() != 504 || string(resp.Body()) != `{"error":"gateway_timeout"}` {
			t.Errorf("%s: %d %s, want 504 gateway_timeout", method, resp.StatusCode(), resp.Body())
		}
		// The origin counts a request when it starts handling it; wait for a
		// second one to show up if there were one.
		time.Sleep(100 * time.Millisecond)
		if n := a.Requests.Load() + b.Requests.Load() - before; n != 1 {
			t.Errorf("timed-out %s reached origins %d times, want exactly 1", method, n)
		}
	}
}

// The same in a cell of two servers.
func TestCellPOSTTimeoutNotRetried(t *testing.T) {
	slow := func(ctx *fasthttp.RequestCtx) { time.Sleep(time.Second) }
	a, b := origintest.Start(t, slow), origintest.Start(t, slow)
	e := startEdge(t, strings.Replace(cellsConfig([]cellDef{{name: "c1", servers: []string{a.Addr, b.Addr}}}, ""),
		`timeout = "1s"`, `timeout = "300ms"`, 1))
	for i := 0; i < 3; i++ {
		resp := e.do(t, "POST", "/shop/order", "X-User-Id", "u1")
		if resp.StatusCode() != 504 || string(resp.Header.Peek("X-Edge-Cell")) != "c1" {
			t.Errorf("POST: %d %s cell %q, want 504 from c1", resp.StatusCode(), resp.Body(), resp.Header.Peek("X-Edge-Cell"))
		}
	}
	time.Sleep(100 * time.Millisecond)
	if n := a.Requests.Load() + b.Requests.Load(); n != 3 {
		t.Errorf("3 timed-out POSTs reached origins %d times, want 3", n)
	}
}

// A request that never reached a server (connection refused) is retried on
// another one, whatever its method; after passiveFails failures the dead server
// is skipped altogether.
func TestRetryConnectRefused(t *testing.T) {
	o := origintest.Start(t, nil)
	dead := origintest.FreeAddr(t)
	e := startEdge(t, poolConfig("", dead, o.Addr))
	for i := 0; i < 20; i++ {
		method := "GET"
		if i%2 == 0 {
			method = "POST"
		}
		if resp := e.do(t, method, "/app/x"); resp.StatusCode() != 200 {
			t.Fatalf("%s #%d: %d %s, want 200 from the live server", method, i, resp.StatusCode(), resp.Body())
		}
	}
	if n := o.Requests.Load(); n != 20 {
		t.Errorf("live server saw %d requests, want 20 (each once)", n)
	}
	if got := gathered(t, e.reg, "edge_upstream_errors_total", "reason", "connect"); got != passiveFails {
		t.Errorf("connect errors = %v, want %d: the dead server should be skipped after that many", got, passiveFails)
	}
	if got := gathered(t, e.reg, "edge_upstream_retries_total", "upstream", "app"); got != passiveFails {
		t.Errorf("edge_upstream_retries_total = %v, want %d", got, passiveFails)
	}
}

// A broken exchange (the request reached the server, no response came) is retried
// on another server only for idempotent methods: a POST is never sent twice.
func TestRetryBrokenOnlyIdempotent(t *testing.T) {
	f := func(method string, wantRetry bool) {
		t.Helper()
		broken, brokenN := brokenOrigin(t)
		good := origintest.Start(t, nil)
		e := startEdge(t, poolConfig("", broken, good.Addr))
		const n = 8 // fewer than passiveFails failures: the broken server stays in
		fails := 0
		for i := 0; i < n; i++ {
			resp := e.do(t, method, "/app/x")
			switch resp.StatusCode() {
			case 200:
			case 502:
				fails++
			default:
				t.Fatalf("%s: status %d %s", method, resp.StatusCode(), resp.Body())
			}
		}
		time.Sleep(50 * time.Millisecond) // let the broken origin count its last read
		t.Logf("%s: broken server saw %d sends, good server %d requests, %d answered 502", method, brokenN.Load(), good.Requests.Load(), fails)
		if brokenN.Load() == 0 {
			t.Fatalf("%s: round robin never tried the broken server", method)
		}
		if wantRetry {
			if fails != 0 || good.Requests.Load() != n {
				t.Errorf("%s: %d failed, good server saw %d of %d; want all retried there", method, fails, good.Requests.Load(), n)
			}
			return
		}
		if int64(fails) != brokenN.Load() || good.Requests.Load()+brokenN.Load() != n {
			t.Errorf("%s: %d sends to the broken server, %d to the good one, %d failed: want each request sent exactly once",
				method, brokenN.Load(), good.Requests.Load(), fails)
		}
	}
	f("GET", true)
	f("POST", false)
	f("PATCH", false)
}

// Passive detection: a server answering 5xx passiveFails times in a row gets no
// traffic for the cool-off.
func TestPassive5xx(t *testing.T) {
	bad := origintest.Start(t, func(ctx *fasthttp.RequestCtx) { ctx.SetStatusCode(500) })
	good := origintest.Start(t, nil)
	e := startEdge(t, poolConfig("", bad.Addr, good.Addr))
	codes := map[int]int{}
	for i := 0; i < 40; i++ {
		codes[e.do(t, "GET", "/app/x").StatusCode()]++
	}
	if n := bad.Requests.Load(); n != passiveFails {
		t.Errorf("failing server got %d requests (answers %v), want %d before the cool-off", n, codes, passiveFails)
	}
	if codes[500] != passiveFails {
		t.Errorf("answers %v: a 5xx is passed through, not retried; want %d of them", codes, passiveFails)
	}
}

// Active checks take a failing server out of a plain upstream; when every server
// is down, edge tries them anyway rather than fail closed.
func TestActiveCheckPlainUpstream(t *testing.T) {
	var aSick, bSick atomic.Bool
	handler := func(name string, sick *atomic.Bool) fasthttp.RequestHandler {
		return func(ctx *fasthttp.RequestCtx) {
			if string(ctx.Path()) == "/ready" && sick.Load() {
				ctx.SetStatusCode(503)
				return
			}
			ctx.SetBodyString(name)
		}
	}
	a, b := origintest.Start(t, handler("a", &aSick)), origintest.Start(t, handler("b", &bSick))
	e := startEdge(t, poolConfig(`health_check {
    path = "/ready"
    interval = "50ms"
    timeout = "100ms"
    rise = 1
    fall = 2
  }`, a.Addr, b.Addr))
	stopChecks(t, e)
	aSick.Store(true)
	pool := e.px.Current().pools["app"]
	waitUntil(t, 5*time.Second, "a marked down", func() bool { return !pool.servers[0].health.up() })
	for i := 0; i < 10; i++ {
		if body := string(e.do(t, "GET", "/app/x").Body()); body != "b" {
			t.Fatalf("request %d served by %q while a is down, want b", i, body)
		}
	}
	bSick.Store(true)
	waitUntil(t, 5*time.Second, "b marked down", func() bool { return !pool.servers[1].health.up() })
	for i := 0; i < 4; i++ {
		if resp := e.do(t, "GET", "/app/x"); resp.StatusCode() != 200 {
			t.Fatalf("all servers down: %d %s, want the request tried anyway", resp.StatusCode(), resp.Body())
		}
	}
	aSick.Store(false)
	waitUntil(t, 5*time.Second, "a back up", func() bool { return pool.servers[0].health.up() })
	for i := 0; i < 4; i++ {
		if body := string(e.do(t, "GET", "/app/x").Body()); body != "a" {
			t.Fatalf("served by %q; only a is up", body)
		}
	}
}

// Health state lives outside snapshots: a down server stays down across reloads
// (no fresh "up" until the next probe), an unchanged check keeps its goroutine,
// and 20 reloads that change the check leak no goroutine.
func TestHealthAcrossReloads(t *testing.T) {
	var sick atomic.Bool
	sick.Store(true)
	a := origintest.Start(t, func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/healthz" && sick.Load() {
			ctx.SetStatusCode(500)
			return
		}
		ctx.SetBodyString("a")
	})
	b := origintest.Start(t, func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("b") })
	check := func(interval string) string {
		return fmt.Sprintf(`health_check {
    interval = %q
    timeout = "100ms"
    fall = 1
  }`, interval)
	}
	e := startEdge(t, poolConfig(check("1h"), a.Addr, b.Addr))
	stopChecks(t, e)
	hs := e.px.cellState.health
	srvA := e.px.Current().pools["app"].servers[0]
	waitUntil(t, 5*time.Second, "a marked down", func() bool { return !srvA.health.up() })
	probes := gathered(t, e.reg, "edge_health_checks_total", "result", "fail")

	// An edit that keeps the check: same checker (no new probe), a still down.
	for i := 0; i < 3; i++ {
		if err := e.reload(t, poolConfig(check("1h"), a.Addr, b.Addr)+fmt.Sprintf("\n# edit %d\n", i)); err != nil {
			t.Fatal(err)
		}
		if body := string(e.do(t, "GET", "/app/x").Body()); body != "b" {
			t.Fatalf("after reload %d served by %q; a is down", i, body)
		}
	}
	if got := gathered(t, e.reg, "edge_health_checks_total", "result", "fail"); got != probes {
		t.Errorf("reloads with an unchanged check probed again (%v probes, was %v)", got, probes)
	}

	// 20 reloads that change the check each time: one checker per server remains.
	for i := 0; i < 20; i++ {
		if err := e.reload(t, poolConfig(check(fmt.Sprintf("%dms", 1000+i)), a.Addr, b.Addr)); err != nil {
			t.Fatal(err)
		}
	}
	hs.mu.Lock()
	n := len(hs.checkers)
	hs.mu.Unlock()
	if n != 2 {
		t.Errorf("%d checkers after 20 reloads, want 2 (one per server)", n)
	}
	// A replaced checker's goroutine ends at once (it waits on its ticker or
	// stop channel), or after its probe in flight (timeout 100ms).
	waitUntil(t, 10*time.Second, "replaced checkers to end", func() bool { return hs.running.Load() == 2 })
	// Removing the check stops every checker and forgets the active verdict.
	if err := e.reload(t, poolConfig("", a.Addr, b.Addr)); err != nil {
		t.Fatal(err)
	}
	if !srvA.health.up() {
		t.Error("a still down after its health check was removed from the config")
	}
	done := make(chan struct{})
	go func() { hs.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("checker goroutines still running after the check was removed")
	}
	if n := hs.running.Load(); n != 0 {
		t.Errorf("%d health check goroutines left", n)
	}
}

// stopChecks retires e's snapshot when the test ends, so that its health checkers
// do not keep probing the test's origins after they are gone. (Proxy.Close does not
// retire the current snapshot.)
func stopChecks(t *testing.T, e *testEdge) {
	t.Cleanup(func() { e.px.Current().retire() })
}
