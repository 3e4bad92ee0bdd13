package proxy

import (
	"encoding/json"
	"fmt"
	"github.com/prometheus/client_golang/prometheus"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edge-gw/edge/internal/origintest"
	"github.com/edge-gw/edge/shard"
	"github.com/valyala/fasthttp"
)

// Modes of a commanded origin.
const (
	modeOK   = iota // 200 "ok from …"
	mode5xx         // 500
	modeHang        // answers after hangFor: beyond the upstream timeout
	modeSlow        // answers 200 after slowFor: slow, within the timeout
)

const (
	hangFor = 400 * time.Millisecond
	slowFor = 60 * time.Millisecond
)

// commanded is an origin that fails, slows down and recovers on command.
type commanded struct {
	*origintest.Origin
	mode atomic.Int32
}

func startCommanded(t *testing.T) *commanded {
	c := &commanded{}
	c.Origin = origintest.Start(t, func(ctx *fasthttp.RequestCtx) {
		switch c.mode.Load() {
		case mode5xx:
			ctx.SetStatusCode(500)
			ctx.SetBodyString("origin broke")
			return
		case modeHang:
			time.Sleep(hangFor)
		case modeSlow:
			time.Sleep(slowFor)
		}
		ctx.SetBodyString("ok from origin")
	})
	return c
}

func breakerConfigSrc(dir, addr, breaker string) string {
	return fmt.Sprintf(`
state_dir = %q
upstream "pay" {
  servers = [%q]
  timeout = "150ms"
  breaker {
    %s
  }
}
route "pay" {
  match { path = "/pay/" }
  upstream = "pay"
  fallback {
    status = 503
    body   = %q
  }
}
`, dir, addr, breaker, dgFallback)
}

func breakerState(t *testing.T, e *testEdge, upstream string) float64 {
	t.Helper()
	return metricValue(t, e.reg, "edge_breaker_state", "upstream", upstream)
}

// waitRecovered polls until the breaker lets a request through to the origin
// again and closes; every answer before that must be the fallback.
func waitRecovered(t *testing.T, e *testEdge, uri string) {
	t.Helper()
	waitUntil(t, 10*time.Second, "breaker half-opens after cool_off", func() bool {
		resp := e.do(t, "GET", uri)
		if resp.StatusCode() == 200 {
			return true
		}
		wantFallback(t, resp, 1, 60)
		return false
	})
}

// An origin answering 5xx opens the breaker within its window; while open, the
// route answers its fallback and the origin sees nothing; after cool_off the
// probes find the origin recovered and the breaker closes.
func TestBreakerOpensOn5xxAndRecovers(t *testing.T) {
	o := startCommanded(t)
	e := startEdge(t, breakerConfigSrc(t.TempDir(), o.Addr,
		`min_requests = 6
    failure_ratio = 0.5
    cool_off = "300ms"
    probes = 2`))
	api := startAdmin(t, prometheus.NewRegistry(), dgToken, e.px.RegisterAdmin)
	for i := 0; i < 3; i++ {
		if resp := e.do(t, "GET", "/pay/1"); resp.StatusCode() != 200 {
			t.Fatalf("healthy origin: %d", resp.StatusCode())
		}
	}
	o.mode.Store(mode5xx)
	// 3 ok + 3 failures = 6 requests, half failed: the third failure opens it. The
	// failures themselves reach the client as the origin's 500.
	for i := 0; i < 3; i++ {
		if resp := e.do(t, "GET", "/pay/1"); resp.StatusCode() != 500 {
			t.Fatalf("failure %d: %d %s, want the origin's 500", i, resp.StatusCode(), resp.Body())
		}
	}
	if s := breakerState(t, e, "pay"); s != 2 {
		t.Fatalf("edge_breaker_state{pay} = %v after 3/6 failures, want 2 (open)", s)
	}
	seen := o.Requests.Load()
	for i := 0; i < 20; i++ {
		wantFallback(t, e.do(t, "GET", "/pay/1"), 1, 1)
	}
	if n := o.Requests.Load() - seen; n != 0 {
		t.Errorf("origin saw %d requests while the breaker was open, want 0", n)
	}
	if v := metricValue(t, e.reg, "edge_shed_total", "route", "pay", "reason", "breaker"); v != 20 {
		t.Errorf("edge_shed_total{pay,breaker} = %v, want 20", v)
	}
	_, body := api.call(t, "GET", "/upstreams", "")
	if !strings.Contains(body, `"breaker":{"state":"open"`) {
		t.Errorf("GET /upstreams while open: %s", body)
	}

	o.mode.Store(modeOK)
	waitRecovered(t, e, "/pay/1") // the first probe
	if resp := e.do(t, "GET", "/pay/1"); resp.StatusCode() != 200 {
		t.Fatalf("second probe: %d", resp.StatusCode())
	}
	if s := breakerState(t, e, "pay"); s != 0 {
		t.Errorf("edge_breaker_state{pay} = %v after 2 good probes, want 0 (closed)", s)
	}
	for _, to := range []string{"open", "half_open", "closed"} {
		if v := metricValue(t, e.reg, "edge_breaker_transitions_total", "upstream", "pay", "to", to); v != 1 {
			t.Errorf("edge_breaker_transitions_total{pay,%s} = %v, want 1", to, v)
		}
	}
	var up struct {
		Upstreams []struct {
			Name    string       `json:"name"`
			Breaker *breakerInfo `json:"breaker"`
		} `json:"upstreams"`
	}
	_, body = api.call(t, "GET", "/upstreams", "")
	if err := json.Unmarshal([]byte(body), &up); err != nil || len(up.Upstreams) != 1 || up.Upstreams[0].Breaker == nil ||
		up.Upstreams[0].Breaker.State != "closed" {
		t.Errorf("GET /upstreams after recovery: %s", body)
	}
}

// Timeouts count as failures; a probe that times out again opens it for another
// cool_off.
func TestBreakerOpensOnTimeouts(t *testing.T) {
	o := startCommanded(t)
	e := startEdge(t, breakerConfigSrc(t.TempDir(), o.Addr,
		`min_requests = 3
    failure_ratio = 1
    cool_off = "200ms"
    probes = 1`))
	o.mode.Store(modeHang)
	for i := 0; i < 3; i++ {
		if resp := e.do(t, "GET", "/pay/1"); resp.StatusCode() != 504 {
			t.Fatalf("hanging origin: %d, want 504", resp.StatusCode())
		}
	}
	seen := o.Requests.Load()
	wantFallback(t, e.do(t, "GET", "/pay/1"), 1, 1)
	if o.Requests.Load() != seen {
		t.Error("origin reached while open")
	}
	// Still hanging after cool_off: the probe times out and the breaker reopens.
	waitUntil(t, 5*time.Second, "probe let through", func() bool {
		return e.do(t, "GET", "/pay/1").StatusCode() == 504
	})
	if s := breakerState(t, e, "pay"); s != 2 {
		t.Fatalf("state %v after a failed probe, want 2", s)
	}
	if v := metricValue(t, e.reg, "edge_breaker_transitions_total", "upstream", "pay", "to", "open"); v != 2 {
		t.Errorf("opened %v times, want 2", v)
	}
	o.mode.Store(modeOK)
	waitRecovered(t, e, "/pay/1")
	if s := breakerState(t, e, "pay"); s != 0 {
		t.Errorf("state %v after the good probe, want 0", s)
	}
}

// With slow_threshold, answers that are slow but successful open it too.
func TestBreakerOpensOnSlowCalls(t *testing.T) {
	o := startCommanded(t)
	e := startEdge(t, breakerConfigSrc(t.TempDir(), o.Addr, fmt.Sprintf(
		`min_requests = 4
    slow_threshold = %q
    slow_ratio = 0.75
    cool_off = "1m"`, slowFor/2)))
	e.do(t, "GET", "/pay/1")
	o.mode.Store(modeSlow)
	for i := 0; i < 3; i++ {
		if resp := e.do(t, "GET", "/pay/1"); resp.StatusCode() != 200 {
			t.Fatalf("slow origin: %d", resp.StatusCode())
		}
	}
	wantFallback(t, e.do(t, "GET", "/pay/1"), 55, 60)
}

// Each cell has its own breaker: one failing cell answers the fallback for its
// users, the others keep serving theirs.
func TestCellBreakers(t *testing.T) {
	bad := startCommanded(t)
	good := origintest.Start(t, cellHandler("good"))
	e := startEdge(t, fmt.Sprintf(`
state_dir = %q
cells "shop" {
  key     = "header:X-User-Id"
  timeout = "1s"
  cell "a" { servers = [%q] }
  cell "b" { servers = [%q] }
  breaker {
    min_requests = 2
    cool_off     = "1m"
  }
}
route "shop" {
  match { path = "/shop/" }
  cells = "shop"
  fallback {
    status = 503
    body   = %q
  }
}
`, t.TempDir(), bad.Addr, good.Addr, dgFallback))
	// Find a user of each cell from the ring, without requests that would fill the
	// breakers' windows.
	userOf := map[string]string{}
	g := e.px.Current().cells["shop"]
	for _, u := range users(200) {
		userOf[g.cells[g.ring.LookupHash(shard.Hash([]byte(u)))].name] = u
	}
	ua, ub := userOf["a"], userOf["b"]
	if ua == "" || ub == "" {
		t.Fatalf("no user for each cell: %v", userOf)
	}
	bad.mode.Store(mode5xx)
	for i := 0; i < 2; i++ {
		e.do(t, "GET", "/shop/x", "X-User-Id", ua)
	}
	seen := bad.Requests.Load()
	resp := e.do(t, "GET", "/shop/x", "X-User-Id", ua)
	wantFallback(t, resp, 55, 60)
	if c := string(resp.Header.Peek("X-Edge-Cell")); c != "a" {
		t.Errorf("X-Edge-Cell %q on the fallback, want a", c)
	}
	if bad.Requests.Load() != seen {
		t.Error("cell a reached while its breaker is open")
	}
	for i := 0; i < 10; i++ {
		if resp := e.do(t, "GET", "/shop/x", "X-User-Id", ub); resp.StatusCode() != 200 || string(resp.Body()) != "good" {
			t.Fatalf("cell b while a is open: %d %s", resp.StatusCode(), resp.Body())
		}
	}
	if s := breakerState(t, e, "shop/a"); s != 2 {
		t.Errorf("edge_breaker_state{shop/a} = %v, want 2", s)
	}
	if s := breakerState(t, e, "shop/b"); s != 0 {
		t.Errorf("edge_breaker_state{shop/b} = %v, want 0", s)
	}
}

// A reload that keeps the breaker's settings keeps its state; changed settings
// start a closed one.
func TestBreakerSurvivesReload(t *testing.T) {
	o := startCommanded(t)
	dir := t.TempDir()
	src := breakerConfigSrc(dir, o.Addr, `min_requests = 2
    cool_off = "1m"`)
	e := startEdge(t, src)
	o.mode.Store(mode5xx)
	e.do(t, "GET", "/pay/1")
	e.do(t, "GET", "/pay/1")
	wantFallback(t, e.do(t, "GET", "/pay/1"), 55, 60)
	if err := e.reload(t, src+"\n# same breaker\n"); err != nil {
		t.Fatal(err)
	}
	wantFallback(t, e.do(t, "GET", "/pay/1"), 55, 60)
	if err := e.reload(t, breakerConfigSrc(dir, o.Addr, `min_requests = 3
    cool_off = "1m"`)); err != nil {
		t.Fatal(err)
	}
	if resp := e.do(t, "GET", "/pay/1"); resp.StatusCode() != 500 {
		t.Errorf("after a reload with new breaker settings: %d, want the origin's 500", resp.StatusCode())
	}
}

// On a cached route, the fallback of an open breaker is never stored, even with
// status 200: once the origin recovers, clients get its content, not the fallback.
func TestBreakerFallbackNotCached(t *testing.T) {
	o := startCommanded(t)
	e := startEdge(t, fmt.Sprintf(`
state_dir = %q
upstream "cat" {
  servers = [%q]
  breaker {
    min_requests = 1
    cool_off     = "200ms"
    probes       = 1
  }
}
route "cat" {
  match { path = "/cat/" }
  upstream = "cat"
  cache { ttl = "1m" }
  fallback {
    status = 200
    body   = "{\"items\":[]}"
  }
}
`, t.TempDir(), o.Addr))
	o.mode.Store(mode5xx)
	if resp := e.do(t, "GET", "/cat/1"); resp.StatusCode() != 500 {
		t.Fatalf("failing origin: %d", resp.StatusCode())
	}
	resp := e.do(t, "GET", "/cat/1")
	if resp.StatusCode() != 200 || string(resp.Body()) != `{"items":[]}` || len(resp.Header.Peek("Surrogate-Control")) != 0 {
		t.Fatalf("open breaker: %d %q Surrogate-Control %q", resp.StatusCode(), resp.Body(), resp.Header.Peek("Surrogate-Control"))
	}
	if xc := string(resp.Header.Peek("X-Cache")); xc != "BYPASS" {
		t.Errorf("X-Cache %q on the fallback, want BYPASS (not stored)", xc)
	}
	o.mode.Store(modeOK)
	waitUntil(t, 5*time.Second, "origin content after recovery", func() bool {
		return string(e.do(t, "GET", "/cat/1").Body()) == "ok from origin"
	})
}
