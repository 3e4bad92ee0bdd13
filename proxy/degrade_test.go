package proxy

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edge-gw/edge/internal/origintest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
)

const dgToken = "degrade-test-token"

// dgFallback is the fallback body of the test routes.
const dgFallback = `{"msg":"resting, retry soon"}`

type dgRoutes struct {
	Routes []struct {
		Name     string  `json:"name"`
		Target   string  `json:"target"`
		Priority string  `json:"priority"`
		Inflight int64   `json:"inflight"`
		Degraded bool    `json:"degraded"`
		Switch   *Switch `json:"switch"`
	} `json:"routes"`
}

func dgConfig(dir, origin, extra string) string {
	return fmt.Sprintf(`
state_dir = %q
upstream "app" {
  servers = [%q]
  timeout = "2s"
}
route "app" {
  match { path = "/app/" }
  upstream = "app"
  fallback {
    status = 503
    body   = %q
  }
}
route "other" {
  match { path = "/other/" }
  upstream = "app"
}
%s
`, dir, origin, dgFallback, extra)
}

// wantFallback checks that resp is the test routes' fallback with a Retry-After
// in [minRetry, maxRetry] seconds.
func wantFallback(t *testing.T, resp *fasthttp.Response, minRetry, maxRetry int) {
	t.Helper()
	if resp.StatusCode() != 503 || string(resp.Body()) != dgFallback {
		t.Fatalf("answer %d %q, want the fallback 503 %q", resp.StatusCode(), resp.Body(), dgFallback)
	}
	ra, err := strconv.Atoi(string(resp.Header.Peek("Retry-After")))
	if err != nil || ra < minRetry || ra > maxRetry {
		t.Errorf("Retry-After %q, want %d..%d", resp.Header.Peek("Retry-After"), minRetry, maxRetry)
	}
}

func wantOrigin(t *testing.T, resp *fasthttp.Response) {
	t.Helper()
	if resp.StatusCode() != 200 || !strings.HasPrefix(string(resp.Body()), "ok from") {
		t.Fatalf("answer %d %q, want 200 from the origin", resp.StatusCode(), resp.Body())
	}
}

// A switch turns a route's answers into its fallback at once and back, and the
// switch survives a reload and a restart (a new Proxy reading the same state_dir).
func TestKillSwitch(t *testing.T) {
	o := origintest.Start(t, nil)
	dir := t.TempDir()
	src := dgConfig(dir, o.Addr, "")
	e := startEdge(t, src)
	api := startAdmin(t, prometheus.NewRegistry(), dgToken, e.px.RegisterAdmin)

	wantOrigin(t, e.do(t, "GET", "/app/1"))
	var changes []Switch
	e.px.OnDegradeChange(func(sw Switch) { changes = append(changes, sw) })

	code, body := api.call(t, "POST", "/routes/app/degrade", `{"on":true,"reason":"sale melting","ttl":"10m","by":"alice"}`)
	if code != 200 {
		t.Fatalf("degrade: %d %s", code, body)
	}
	var sw Switch
	if err := json.Unmarshal([]byte(body), &sw); err != nil || !sw.On || sw.Reason != "sale melting" || sw.By != "alice" ||
		time.Until(sw.Until) < 9*time.Minute {
		t.Fatalf("degrade answered %s (%v)", body, err)
	}
	before := o.Requests.Load()
	for i := 0; i < 5; i++ {
		wantFallback(t, e.do(t, "GET", "/app/x"), 590, 600)
	}
	if n := o.Requests.Load() - before; n != 0 {
		t.Errorf("origin saw %d requests of a degraded route, want 0", n)
	}
	wantOrigin(t, e.do(t, "GET", "/other/x")) // same upstream, other route: untouched
	if v := metricValue(t, e.reg, "edge_route_degraded", "route", "app"); v != 1 {
		t.Errorf("edge_route_degraded{route=app} = %v, want 1", v)
	}
	if v := metricValue(t, e.reg, "edge_route_degraded", "route", "other"); v != 0 {
		t.Errorf("edge_route_degraded{route=other} = %v, want 0", v)
	}
	if v := metricValue(t, e.reg, "edge_shed_total", "route", "app", "reason", "degraded"); v != 5 {
		t.Errorf("edge_shed_total{app,degraded} = %v, want 5", v)
	}
	if len(changes) != 1 || changes[0].Route != "app" || !changes[0].On {
		t.Errorf("OnDegradeChange saw %+v, want one switch on for app", changes)
	}
	code, body = api.call(t, "GET", "/routes", "")
	var rs dgRoutes
	if err := json.Unmarshal([]byte(body), &rs); code != 200 || err != nil || len(rs.Routes) != 2 {
		t.Fatalf("GET /routes: %d %s", code, body)
	}
	if r := rs.Routes[0]; r.Name != "app" || !r.Degraded || r.Switch == nil || r.Switch.Reason != "sale melting" ||
		r.Switch.By != "alice" || r.Target != "upstream app" || r.Priority != "normal" {
		t.Errorf("GET /routes app = %+v", r)
	}
	if r := rs.Routes[1]; r.Name != "other" || r.Degraded || r.Switch != nil {
		t.Errorf("GET /routes other = %+v", r)
	}

	// A reload keeps the switch.
	if err := e.reload(t, src+"\n# reloaded\n"); err != nil {
		t.Fatal(err)
	}
	wantFallback(t, e.do(t, "GET", "/app/x"), 590, 600)

	// A restart keeps it: a new Proxy on the same state_dir.
	e.srv.Shutdown()
	e2 := startEdge(t, src)
	api2 := startAdmin(t, prometheus.NewRegistry(), dgToken, e2.px.RegisterAdmin)
	wantFallback(t, e2.do(t, "GET", "/app/x"), 590, 600)
	if n := o.Requests.Load() - before; n != 1 {
		t.Errorf("origin saw %d requests, want the 1 of /other", n)
	}

	// Off again: at once, and after another restart.
	if code, body := api2.call(t, "POST", "/routes/app/degrade", `{"on":false}`); code != 200 || !strings.Contains(body, `"on":false`) {
		t.Fatalf("undegrade: %d %s", code, body)
	}
	wantOrigin(t, e2.do(t, "GET", "/app/x"))
	e2.srv.Shutdown()
	e3 := startEdge(t, src)
	wantOrigin(t, e3.do(t, "GET", "/app/x"))
	if len(changes) != 1 {
		t.Errorf("the first Proxy's callback saw changes made on another: %+v", changes)
	}
}

func TestKillSwitchTTL(t *testing.T) {
	o := origintest.Start(t, nil)
	e := startEdge(t, dgConfig(t.TempDir(), o.Addr, ""))
	api := startAdmin(t, prometheus.NewRegistry(), dgToken, e.px.RegisterAdmin)
	if code, body := api.call(t, "POST", "/routes/app/degrade", `{"on":true,"ttl":"300ms"}`); code != 200 {
		t.Fatalf("degrade: %d %s", code, body)
	}
	wantFallback(t, e.do(t, "GET", "/app/x"), 1, 1)
	waitUntil(t, 5*time.Second, "switch with ttl 300ms ends", func() bool {
		return e.do(t, "GET", "/app/x").StatusCode() == 200
	})
	_, body := api.call(t, "GET", "/routes", "")
	if strings.Contains(body, `"degraded":true`) {
		t.Errorf("GET /routes after the ttl: %s", body)
	}
}

// SetDegraded is how a cluster peer's switch arrives: it applies and persists,
// and does not call the OnDegradeChange callbacks (no echo).
func TestSetDegraded(t *testing.T) {
	o := origintest.Start(t, nil)
	dir := t.TempDir()
	e := startEdge(t, dgConfig(dir, o.Addr, ""))
	called := false
	e.px.OnDegradeChange(func(Switch) { called = true })
	if err := e.px.SetDegraded("app", true, "from node-2", time.Time{}); err != nil {
		t.Fatal(err)
	}
	wantFallback(t, e.do(t, "GET", "/app/x"), 30, 30) // no ttl: Retry-After 30
	// A route this node does not have yet: kept, applied when it appears.
	if err := e.px.SetDegraded("newroute", true, "", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got := e.px.Degraded(); len(got) != 2 || got[0].Route != "app" || got[1].Route != "newroute" {
		t.Errorf("Degraded() = %+v", got)
	}
	if called {
		t.Error("SetDegraded called the change callback")
	}
	data, err := os.ReadFile(filepath.Join(dir, DegradeStateFile))
	if err != nil || !strings.Contains(string(data), `"from node-2"`) || !strings.Contains(string(data), `"newroute"`) {
		t.Errorf("state file: %s (%v)", data, err)
	}
	if err := e.px.SetDegraded("bad name!", true, "", time.Time{}); err == nil {
		t.Error("SetDegraded accepted a bad route name")
	}
	// An on switch whose end has passed is off.
	if err := e.px.SetDegraded("app", true, "", time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	wantOrigin(t, e.do(t, "GET", "/app/x"))
}

func TestDegradeAdminErrors(t *testing.T) {
	o := origintest.Start(t, nil)
	e := startEdge(t, dgConfig(t.TempDir(), o.Addr, ""))
	api := startAdmin(t, prometheus.NewRegistry(), dgToken, e.px.RegisterAdmin)
	f := func(path, body string, wantCode int, wantErr string, noAuth ...bool) {
		t.Helper()
		token := dgToken
		if len(noAuth) > 0 {
			token = ""
		}
		code, got := api.callAs(t, token, "POST", path, body)
		if code != wantCode || !strings.Contains(got, `"error":"`+wantErr+`"`) {
			t.Errorf("POST %s %s = %d %s, want %d %s", path, body, code, got, wantCode, wantErr)
		}
	}
	f("/routes/app/degrade", `{"on":true}`, 401, "unauthorized", true)
	f("/routes/nope/degrade", `{"on":true}`, 404, "no_route")
	f("/routes/app/degrade", `{"reason":"x"}`, 400, "bad_switch")
	f("/routes/app/degrade", `{"on":true,"ttl":"soon"}`, 400, "bad_ttl")
	f("/routes/app/degrade", `{"on":true,"ttl":"-1m"}`, 400, "bad_ttl")
	f("/routes/app/degrade", `{"on":false,"ttl":"1m"}`, 400, "bad_ttl")
	f("/routes/app/degrade", `{"on":true,"reason":"`+strings.Repeat("x", 2000)+`"}`, 400, "bad_reason")
	f("/routes/app/degrade", `{"on":true,"extra":1}`, 400, "bad_json")
	f("/routes/app/degrade", `not json`, 400, "bad_json")
	wantOrigin(t, e.do(t, "GET", "/app/x")) // nothing was switched
}

// A state_dir that cannot be written refuses the switch (500) and changes nothing.
func TestDegradeStateWriteFails(t *testing.T) {
	o := origintest.Start(t, nil)
	dir := filepath.Join(t.TempDir(), "state")
	e := startEdge(t, dgConfig(dir, o.Addr, ""))
	api := startAdmin(t, prometheus.NewRegistry(), dgToken, e.px.RegisterAdmin)
	// state_dir becomes a file: the write fails, as on a full or read-only disk.
	if err := os.WriteFile(dir, []byte("not a dir"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, body := api.call(t, "POST", "/routes/app/degrade", `{"on":true}`)
	if code != 500 || !strings.Contains(body, "state_write_failed") {
		t.Fatalf("degrade with a broken state_dir: %d %s", code, body)
	}
	wantOrigin(t, e.do(t, "GET", "/app/x"))
}

func TestDegradeCorruptStateFile(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, DegradeStateFile), []byte(`{"version":1,"switches":[{"route":`), 0o644)
	px := New(NewMetrics(prometheus.NewRegistry()))
	_, err := px.Apply(mustParse(t, dgConfig(dir, "127.0.0.1:1", "")))
	if err == nil || !strings.Contains(err.Error(), DegradeStateFile) {
		t.Fatalf("Apply with a corrupt state file: %v, want an error naming it", err)
	}
}

// gate is an origin that holds every request until opened.
type gate struct {
	*origintest.Origin
	open chan struct{}
	once sync.Once
}

func startGate(t *testing.T) *gate {
	g := &gate{open: make(chan struct{})}
	g.Origin = origintest.Start(t, func(ctx *fasthttp.RequestCtx) {
		<-g.open
		ctx.SetBodyString("ok from gate")
	})
	t.Cleanup(g.release) // before the origin's Stop (cleanups run last-in first-out)
	return g
}

func (g *gate) release() { g.once.Do(func() { close(g.open) }) }

// hold sends n requests to e in the background; they wait at the gate. It returns
// when the origin holds all n, and a function that waits for their statuses.
func hold(t *testing.T, e *testEdge, g *gate, uri string, n int) func() []int {
	t.Helper()
	base := g.Requests.Load()
	codes := make([]int, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			req := fasthttp.AcquireRequest()
			defer fasthttp.ReleaseRequest(req)
			req.SetRequestURI("http://" + e.addr + uri)
			var resp fasthttp.Response
			if err := fasthttp.DoTimeout(req, &resp, 20*time.Second); err != nil {
				codes[i] = -1
				return
			}
			codes[i] = resp.StatusCode()
		}(i)
	}
	waitUntil(t, 10*time.Second, fmt.Sprintf("%d requests held at the origin", n), func() bool {
		return g.Requests.Load()-base == int64(n)
	})
	return func() []int { wg.Wait(); return codes }
}

func allCode(codes []int, want int) bool {
	for _, c := range codes {
		if c != want {
			return false
		}
	}
	return true
}

// A bulkhead of 10 on a route with a slow origin: the 11th concurrent request gets
// the fallback at once (while the 10 are still held), and others routes to the
// same origin are not affected.
func TestRouteBulkhead(t *testing.T) {
	g := startGate(t)
	e := startEdge(t, fmt.Sprintf(`
state_dir = %q
upstream "slow" {
  servers = [%q]
  timeout = "20s"
}
route "reviews" {
  match { path = "/reviews/" }
  upstream     = "slow"
  max_inflight = 10
  fallback {
    status = 503
    body   = %q
  }
}
route "core" {
  match { path = "/core/" }
  upstream = "slow"
}
`, t.TempDir(), g.Addr, dgFallback))
	wait := hold(t, e, g, "/reviews/1", 10)
	before := g.Requests.Load()
	for i := 0; i < 3; i++ {
		wantFallback(t, e.do(t, "GET", "/reviews/11"), 1, 1)
	}
	if n := g.Requests.Load() - before; n != 0 {
		t.Errorf("origin saw %d requests over the bulkhead, want 0", n)
	}
	// Another route to the same origin still gets through (it is held too).
	waitCore := hold(t, e, g, "/core/1", 1)
	if v := metricValue(t, e.reg, "edge_shed_total", "route", "reviews", "reason", "bulkhead"); v != 3 {
		t.Errorf("edge_shed_total{reviews,bulkhead} = %v, want 3", v)
	}
	if v := metricValue(t, e.reg, "edge_route_inflight", "route", "reviews"); v != 10 {
		t.Errorf("edge_route_inflight{reviews} = %v, want 10", v)
	}
	g.release()
	if codes := wait(); !allCode(codes, 200) {
		t.Errorf("held requests answered %v, want all 200", codes)
	}
	if codes := waitCore(); !allCode(codes, 200) {
		t.Errorf("core request answered %v", codes)
	}
	if resp := e.do(t, "GET", "/reviews/12"); resp.StatusCode() != 200 {
		t.Errorf("after the bulkhead drained: %d %s", resp.StatusCode(), resp.Body())
	}
}

// max_inflight of an upstream bounds all routes to it together.
func TestUpstreamBulkhead(t *testing.T) {
	g := startGate(t)
	e := startEdge(t, fmt.Sprintf(`
state_dir = %q
upstream "slow" {
  servers      = [%q]
  timeout      = "20s"
  max_inflight = 4
}
route "a" {
  match { path = "/a/" }
  upstream = "slow"
  fallback {
    status = 503
    body   = %q
  }
}
route "b" {
  match { path = "/b/" }
  upstream = "slow"
}
`, t.TempDir(), g.Addr, dgFallback))
	waitA := hold(t, e, g, "/a/1", 2)
	waitB := hold(t, e, g, "/b/1", 2)
	wantFallback(t, e.do(t, "GET", "/a/2"), 1, 1)
	if resp := e.do(t, "GET", "/b/2"); resp.StatusCode() != 503 || string(resp.Body()) != `{"error":"unavailable"}` {
		t.Errorf("route b over the upstream bulkhead: %d %s, want its default fallback", resp.StatusCode(), resp.Body())
	}
	if v := metricValue(t, e.reg, "edge_upstream_inflight", "upstream", "slow"); v != 4 {
		t.Errorf("edge_upstream_inflight{slow} = %v, want 4", v)
	}
	g.release()
	if a, b := waitA(), waitB(); !allCode(a, 200) || !allCode(b, 200) {
		t.Errorf("held requests: %v %v", a, b)
	}
	if resp := e.do(t, "GET", "/a/3"); resp.StatusCode() != 200 {
		t.Errorf("after draining: %d", resp.StatusCode())
	}
}

// Under overload the edge sheds low routes first, then normal ones, and keeps
// serving core: overload is made deterministic by holding slow requests in flight.
func TestPriorityShedding(t *testing.T) {
	g := startGate(t)
	fast := origintest.Start(t, nil)
	e := startEdge(t, fmt.Sprintf(`
state_dir = %q
overload {
  max_inflight = 20
  low          = 0.5
  normal       = 0.8
}
upstream "slow" {
  servers = [%q]
  timeout = "20s"
}
upstream "fast" {
  servers = [%q]
}
route "recommend" {
  match { path = "/recommend/" }
  upstream = "slow"
  priority = "low"
  fallback {
    status = 503
    body   = %q
  }
}
route "detail" {
  match { path = "/detail/" }
  upstream = "slow"
}
route "order" {
  match { path = "/order/" }
  upstream = "fast"
  priority = "core"
}
route "detail-fast" {
  match { path = "/detail-fast/" }
  upstream = "fast"
}
`, t.TempDir(), g.Addr, fast.Addr, dgFallback))

	// 10 low requests in flight: low is at its bound (0.5 × 20).
	waitLow := hold(t, e, g, "/recommend/1", 10)
	wantFallback(t, e.do(t, "GET", "/recommend/2"), 1, 1)
	okCore := 0
	for i := 0; i < 200; i++ {
		if e.do(t, "GET", "/order/1").StatusCode() == 200 {
			okCore++
		}
	}
	if okCore < 198 { // ≥ 99%
		t.Errorf("core succeeded %d/200 while low was shed, want ≥ 99%%", okCore)
	}
	if resp := e.do(t, "GET", "/detail-fast/1"); resp.StatusCode() != 200 {
		t.Errorf("normal route at 11/20 in flight: %d, want served", resp.StatusCode())
	}
	// 6 normal requests more: 16 in flight, normal's bound (0.8 × 20).
	waitNormal := hold(t, e, g, "/detail/1", 6)
	if resp := e.do(t, "GET", "/detail-fast/2"); resp.StatusCode() != 503 || string(resp.Body()) != `{"error":"unavailable"}` {
		t.Errorf("normal route at 16/20: %d %s, want shed with its fallback", resp.StatusCode(), resp.Body())
	}
	wantFallback(t, e.do(t, "GET", "/recommend/3"), 1, 1)
	for i := 0; i < 50; i++ {
		if resp := e.do(t, "GET", "/order/2"); resp.StatusCode() != 200 {
			t.Fatalf("core at 16/20 in flight: %d %s", resp.StatusCode(), resp.Body())
		}
	}
	if v := metricValue(t, e.reg, "edge_shed_total", "route", "recommend", "reason", "overload"); v != 2 {
		t.Errorf("edge_shed_total{recommend,overload} = %v, want 2", v)
	}
	if v := metricValue(t, e.reg, "edge_shed_total", "route", "detail-fast", "reason", "overload"); v != 1 {
		t.Errorf("edge_shed_total{detail-fast,overload} = %v, want 1", v)
	}
	if v := metricValue(t, e.reg, "edge_shed_total", "route", "order", "reason", "overload"); v != 0 {
		t.Errorf("edge_shed_total{order,overload} = %v, want 0", v)
	}
	g.release()
	if l, n := waitLow(), waitNormal(); !allCode(l, 200) || !allCode(n, 200) {
		t.Errorf("held requests: %v %v", l, n)
	}
	if resp := e.do(t, "GET", "/recommend/4"); resp.StatusCode() != 200 {
		t.Errorf("low route after the overload: %d", resp.StatusCode())
	}
}

// Core routes are shed too, but only beyond max_inflight itself.
func TestShedBound(t *testing.T) {
	cfg := mustParse(t, `
overload {
  max_inflight = 1000
  low          = 0.5
}
route "r" {
  respond { status = 200 }
}
`)
	for prio, want := range map[string]int64{"low": 500, "normal": 800, "core": 1000} {
		if got := shedBound(cfg.Overload, prio); got != want {
			t.Errorf("shedBound(%s) = %d, want %d", prio, got, want)
		}
	}
	// A tiny bound never sheds everything: at least one request of each priority.
	cfg.Overload.MaxInflight = 1
	if got := shedBound(cfg.Overload, "low"); got != 1 {
		t.Errorf("shedBound(low) of max_inflight 1 = %d, want 1", got)
	}
}

// BenchmarkOverloadShedding measures priority shedding under real overload: 128
// clients loop on a low route whose origin takes 20 ms, far more than the edge's
// overload bound (max_inflight 64, low 0.5) lets in, while the benchmark's
// requests go to a core route. It reports the share of core requests served and
// of low requests shed.
func BenchmarkOverloadShedding(b *testing.B) {
	slow := origintest.Start(b, func(ctx *fasthttp.RequestCtx) {
		time.Sleep(20 * time.Millisecond)
		ctx.SetBodyString("slow")
	})
	fast := origintest.Start(b, nil)
	e := startEdge(b, fmt.Sprintf(`
state_dir = %q
overload {
  max_inflight = 64
  low          = 0.5
}
upstream "slow" {
  servers = [%q]
}
upstream "fast" {
  servers = [%q]
}
route "low" {
  match { path = "/low/" }
  upstream = "slow"
  priority = "low"
}
route "core" {
  match { path = "/core/" }
  upstream = "fast"
  priority = "core"
}
`, b.TempDir(), slow.Addr, fast.Addr))
	client := &fasthttp.Client{MaxConnsPerHost: 1024}
	stop := make(chan struct{})
	var lowOK, lowShed atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < 128; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var req fasthttp.Request
			var resp fasthttp.Response
			req.SetRequestURI("http://" + e.addr + "/low/1")
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := client.DoTimeout(&req, &resp, 5*time.Second); err == nil {
					if resp.StatusCode() == 200 {
						lowOK.Add(1)
					} else {
						lowShed.Add(1)
					}
				}
			}
		}()
	}
	time.Sleep(200 * time.Millisecond) // let the low clients fill the edge
	var coreOK, coreAll atomic.Int64
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var req fasthttp.Request
		var resp fasthttp.Response
		req.SetRequestURI("http://" + e.addr + "/core/1")
		for pb.Next() {
			coreAll.Add(1)
			if client.DoTimeout(&req, &resp, 5*time.Second) == nil && resp.StatusCode() == 200 {
				coreOK.Add(1)
			}
		}
	})
	b.StopTimer()
	close(stop)
	wg.Wait()
	b.ReportMetric(100*float64(coreOK.Load())/float64(coreAll.Load()), "core_ok_%")
	if n := lowOK.Load() + lowShed.Load(); n > 0 {
		b.ReportMetric(100*float64(lowShed.Load())/float64(n), "low_shed_%")
	}
}
