package proxy

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edge-gw/edge/admin"
	"github.com/edge-gw/edge/cluster"
	"github.com/edge-gw/edge/internal/origintest"
	"github.com/edge-gw/edge/internal/redistest"
	"github.com/valyala/fasthttp"
)

// clusterDeadline is generous for what must happen within 2 s: the machine is
// shared; the measured times are logged.
const clusterDeadline = 10 * time.Second

var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

// clusterTestOptions keep memberlist's LAN gossip timers (200 ms to 3 nodes), so
// the logged convergence times are those of production, and shorten probing, so
// a dead node is found in about a second.
func clusterTestOptions(name string, join []string) cluster.Options {
	return cluster.Options{
		Name: name, Label: "test", BindAddr: "127.0.0.1", Join: join, Logger: quietLog,
		ProbeInterval: 200 * time.Millisecond, ProbeTimeout: 100 * time.Millisecond, SuspicionMult: 3,
		TCPTimeout: time.Second, JoinRetryMin: 50 * time.Millisecond, JoinRetryMax: 500 * time.Millisecond,
		LeaveTimeout: time.Second, SweepInterval: 100 * time.Millisecond,
	}
}

// clusterEdge is an in-process edge with its own cluster node and admin API.
type clusterEdge struct {
	*testEdge
	c      *cluster.Cluster
	admin  *adminAPI
	detach func()
}

// startClusterEdge serves src and joins the cluster through join (none: first
// node).
func startClusterEdge(t *testing.T, name, src string, join ...string) *clusterEdge {
	t.Helper()
	e := startEdge(t, src)
	c, err := cluster.New(clusterTestOptions(name, join))
	if err != nil {
		t.Fatal(err)
	}
	ce := &clusterEdge{testEdge: e, c: c, detach: e.px.SetCluster(c)}
	t.Cleanup(func() { ce.leave() })
	ce.admin = startAdmin(t, e.reg, testAdminToken, e.px.RegisterAdmin)
	return ce
}

// leave detaches the proxy and leaves gracefully, as SIGTERM does.
func (e *clusterEdge) leave() {
	e.detach()
	_ = e.c.Stop()
}

// startClusterEdges starts n edges, src(i) each, all joined to the first, and
// waits until every one sees n live members.
func startClusterEdges(t *testing.T, n int, src func(i int) string) []*clusterEdge {
	t.Helper()
	edges := []*clusterEdge{startClusterEdge(t, "edge-0", src(0))}
	for i := 1; i < n; i++ {
		edges = append(edges, startClusterEdge(t, fmt.Sprintf("edge-%d", i), src(i), edges[0].c.Addr()))
	}
	waitUntil(t, clusterDeadline, fmt.Sprintf("%d members everywhere", n), func() bool {
		for _, e := range edges {
			if e.c.NumAlive() != n {
				return false
			}
		}
		return true
	})
	return edges
}

func (e *clusterEdge) mustCall(t *testing.T, method, path, body string) string {
	t.Helper()
	code, out := e.admin.call(t, method, path, body)
	if code != 200 {
		t.Fatalf("%s %s %s: %d %s", method, path, body, code, out)
	}
	return out
}

// status returns the status of GET uri with the given headers.
func (e *clusterEdge) status(t *testing.T, uri string, headers ...string) int {
	t.Helper()
	return e.do(t, "GET", uri, headers...).StatusCode()
}

func TestClusterMembersSeeEachOther(t *testing.T) {
	src := func(int) string { return upstreamConfig("127.0.0.1:1") }
	edges := startClusterEdges(t, 3, src)
	for i, e := range edges {
		var got struct {
			Node, Address string
			Alive         int
			Members       []struct {
				Name, Address, State string
				Local                bool
			}
			Counts map[string]int
			Stats  map[string]uint64
		}
		if err := json.Unmarshal([]byte(e.mustCall(t, "GET", "/cluster", "")), &got); err != nil {
			t.Fatal(err)
		}
		if got.Node != fmt.Sprintf("edge-%d", i) || got.Address != e.c.Addr() || got.Alive != 3 ||
			len(got.Members) != 3 || got.Counts["alive"] != 3 || got.Counts["dead"] != 0 {
			t.Errorf("edge %d GET /cluster = %+v", i, got)
		}
		for j, m := range got.Members {
			if m.Name != fmt.Sprintf("edge-%d", j) || m.State != "alive" || m.Local != (i == j) || m.Address == "" {
				t.Errorf("edge %d member %d = %+v", i, j, m)
			}
		}
		if got.Stats["udp_bytes_sent"]+got.Stats["tcp_bytes_sent"] == 0 {
			t.Errorf("edge %d: no gossip sent: %v", i, got.Stats)
		}
		if v := metricValue(t, e.reg, "edge_cluster_members", "state", "alive"); v != 3 {
			t.Errorf("edge %d edge_cluster_members{state=alive} = %v, want 3", i, v)
		}
	}
	lone := startEdge(t, upstreamConfig("127.0.0.1:1"))
	api := admin.New(lone.reg, func() string { return "" })
	lone.px.RegisterAdmin(api)
	rec := httptest.NewRecorder()
	api.ServeHTTP(rec, httptest.NewRequest("GET", "/cluster", nil))
	if rec.Code != 404 || !strings.Contains(rec.Body.String(), `"no_cluster"`) {
		t.Errorf("GET /cluster without a cluster = %d %s, want 404 no_cluster", rec.Code, rec.Body)
	}
}

// blockConfig has a blacklist (each node its own state_dir) with auto-ban on a
// tight limit of /limited, and a plain route.
func blockConfig(t *testing.T) func(int) string {
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir(), t.TempDir()}
	return func(i int) string {
		return fmt.Sprintf(`
state_dir = %q
trusted_proxies = ["127.0.0.1/32"]
blacklist {
  auto_ban {
    rejects = 2
    window  = "10s"
    ban     = "1m"
  }
}
route "limited" {
  match { path = "/limited" }
  respond { status = 200 }
  limit "ip" {
    key   = "ip"
    rate  = "1r/m"
    burst = 1
  }
}
route "hello" {
  match { path = "/" }
  respond { status = 200 }
}
`, dirs[i])
	}
}

func TestClusterBansSpreadAndExpire(t *testing.T) {
	src := blockConfig(t)
	edges := startClusterEdges(t, 3, src)
	a, b, c := edges[0], edges[1], edges[2]
	from := func(ip string) []string { return []string{"X-Forwarded-For", ip} }

	// An API ban on A, with a TTL, blocks on B and C.
	a.mustCall(t, "POST", "/blacklist", `{"ip":"203.0.113.7","ttl":"3s","reason":"scraper"}`)
	banned := time.Now()
	for i, e := range []*clusterEdge{b, c} {
		d := waitUntil(t, clusterDeadline, "ban on edge "+fmt.Sprint(i+1), func() bool { return e.status(t, "/", from("203.0.113.7")...) == 403 })
		t.Logf("API ban on A blocks on edge %d after %v", i+1, time.Since(banned).Round(time.Millisecond))
		_ = d
	}
	if code := b.status(t, "/", from("203.0.113.8")...); code != 200 {
		t.Errorf("another IP on B = %d, want 200", code)
	}
	list := b.mustCall(t, "GET", "/blacklist", "")
	if !strings.Contains(list, `"reason":"scraper"`) || !strings.Contains(list, `"source":"api"`) || !strings.Contains(list, `"expires_at"`) {
		t.Errorf("B's listing lost the ban's reason, source or expiry: %s", list)
	}

	// A node that joins later receives the ban (push/pull on join).
	d := startClusterEdge(t, "edge-3", src(3), b.c.Addr())
	waitUntil(t, clusterDeadline, "late joiner blocks", func() bool { return d.status(t, "/", from("203.0.113.7")...) == 403 })
	t.Logf("late joiner blocks %v after the ban", time.Since(banned).Round(time.Millisecond))

	// A user ban on B, lifted on C, is lifted everywhere.
	b.mustCall(t, "POST", "/blacklist", `{"user":"mallory"}`)
	for i, e := range append(edges, d) {
		waitUntil(t, clusterDeadline, "user ban on edge "+fmt.Sprint(i), func() bool { return e.status(t, "/", "X-User-Id", "mallory") == 403 })
	}
	c.mustCall(t, "DELETE", "/blacklist?user=mallory", "")
	for i, e := range append(edges, d) {
		waitUntil(t, clusterDeadline, "unban on edge "+fmt.Sprint(i), func() bool { return e.status(t, "/", "X-User-Id", "mallory") == 200 })
	}

	// An auto-ban on C (two limit rejections) blocks on A.
	for range 3 {
		c.status(t, "/limited", from("198.51.100.9")...)
	}
	if code := c.status(t, "/", from("198.51.100.9")...); code != 403 {
		t.Fatalf("auto-ban on C itself: %d, want 403", code)
	}
	autoBanned := time.Now()
	waitUntil(t, clusterDeadline, "auto-ban on A", func() bool { return a.status(t, "/", from("198.51.100.9")...) == 403 })
	t.Logf("auto-ban on C blocks on A after %v", time.Since(autoBanned).Round(time.Millisecond))
	if list := a.mustCall(t, "GET", "/blacklist", ""); !strings.Contains(list, `"source":"auto"`) {
		t.Errorf("A lists the auto-ban without source auto: %s", list)
	}

	// The API ban expires everywhere, joiner included.
	for i, e := range append(edges, d) {
		waitUntil(t, clusterDeadline, "expiry on edge "+fmt.Sprint(i), func() bool { return e.status(t, "/", from("203.0.113.7")...) == 200 })
	}
	t.Logf("ban with ttl 3s gone everywhere %v after it was made", time.Since(banned).Round(time.Millisecond))
}

func TestClusterPurge(t *testing.T) {
	var fetches atomic.Int64
	o := origintest.Start(t, func(ctx *fasthttp.RequestCtx) {
		fetches.Add(1)
		ctx.Response.Header.Set("Cache-Control", "max-age=60")
		ctx.Response.Header.Set("Surrogate-Key", "item-"+strings.TrimPrefix(string(ctx.Path()), "/p/"))
		ctx.SetBodyString("page " + string(ctx.Path()))
	})
	src := fmt.Sprintf(`
upstream "app" {
  servers = [%q]
}
route "pages" {
  match { path = "/p/" }
  upstream = "app"
  cache { ttl = "1m" }
}
`, o.Addr)
	edges := startClusterEdges(t, 3, func(int) string { return src })
	a, b := edges[0], edges[1]
	xcache := func(e *clusterEdge, uri string) string {
		return string(e.do(t, "GET", uri).Header.Peek("X-Cache"))
	}
	for _, uri := range []string{"/p/1", "/p/2"} {
		if got := xcache(b, uri); got != "MISS" {
			t.Fatalf("first %s on B: X-Cache %q, want MISS", uri, got)
		}
		if got := xcache(b, uri); got != "HIT" {
			t.Fatalf("second %s on B: X-Cache %q, want HIT", uri, got)
		}
	}
	f := func(body, uri, other string) {
		t.Helper()
		a.mustCall(t, "POST", "/cache/purge", body)
		start := time.Now()
		waitUntil(t, clusterDeadline, "purge "+body+" on B", func() bool { return xcache(b, uri) == "MISS" })
		t.Logf("purge %s on A empties B's entry after %v", body, time.Since(start).Round(time.Millisecond))
		if got := xcache(b, uri); got != "HIT" {
			t.Errorf("after the purge %s on B: X-Cache %q, want HIT again", uri, got)
		}
		if got := xcache(b, other); got != "HIT" {
			t.Errorf("purge %s also emptied %s on B: %q", body, other, got)
		}
	}
	f(`{"url":"/p/1"}`, "/p/1", "/p/2")
	f(`{"tag":"item-2"}`, "/p/2", "/p/1")
	a.mustCall(t, "POST", "/cache/purge", `{"route":"pages"}`)
	waitUntil(t, clusterDeadline, "route purge on B", func() bool { return xcache(b, "/p/1") == "MISS" })
	if got := xcache(b, "/p/2"); got != "MISS" {
		t.Errorf("route purge left /p/2 on B: %q", got)
	}
	for _, kind := range []string{"url", "tag", "route"} {
		if got := mustMetric(t, b.reg, "edge_cache_purges_total", "kind", kind, "source", "cluster"); got != 1 {
			t.Errorf("B's edge_cache_purges_total{kind=%q,source=\"cluster\"} = %v, want 1", kind, got)
		}
		if got := mustMetric(t, a.reg, "edge_cache_purges_total", "kind", kind, "source", "admin"); got != 1 {
			t.Errorf("A's edge_cache_purges_total{kind=%q,source=\"admin\"} = %v, want 1", kind, got)
		}
	}
}

func TestClusterSoldOutWithoutStoreCall(t *testing.T) {
	srv := redistest.Start(t)
	src := seckillConfig(redisStore(srv.Addr), "127.0.0.1:1", `timeout = "5s"`)
	edges := startClusterEdges(t, 3, func(int) string { return src })
	a, b, c := edges[0], edges[1], edges[2]
	issueOn := func(e *clusterEdge, user string) int {
		code, _ := issue(t, e.addr, "hot", user)
		return code
	}
	scriptCalls := func(e *clusterEdge) uint64 { return e.px.seckillState.gateCounters()[1] }

	if code, out := a.admin.call(t, "PUT", "/seckill/items/hot", `{"stock":1}`); code != 200 {
		t.Fatalf("stock: %d %s", code, out)
	}
	// Warm B's Gate up (it connects lazily) on another item.
	if code := func() int { c, _ := issue(t, b.addr, "cold", "u0"); return c }(); code != 404 {
		t.Fatalf("B on an item never stocked: %d, want 404", code)
	}
	if code := issueOn(a, "u1"); code != 200 {
		t.Fatalf("u1 on A: %d, want 200", code)
	}
	if code := issueOn(a, "u2"); code != 410 {
		t.Fatalf("u2 on A: %d, want 410", code)
	}
	soldOut := time.Now()
	waitUntil(t, clusterDeadline, "sold-out flag on B", func() bool { _, ok := b.c.Get(kindSoldOut, "hot"); return ok })
	t.Logf("sold-out on A reaches B after %v", time.Since(soldOut).Round(time.Millisecond))
	before := scriptCalls(b)
	for i := range 20 {
		if code := issueOn(b, fmt.Sprintf("b%d", i)); code != 410 {
			t.Fatalf("user b%d on B: %d, want 410", i, code)
		}
	}
	if n := scriptCalls(b) - before; n != 0 {
		t.Errorf("B made %d store calls for a sold-out item, want 0", n)
	}

	// A restock on C clears the flag everywhere: B sells again.
	if code, out := c.admin.call(t, "PUT", "/seckill/items/hot", `{"stock":5}`); code != 200 {
		t.Fatalf("restock: %d %s", code, out)
	}
	restocked := time.Now()
	waitUntil(t, clusterDeadline, "restock on B", func() bool { return issueOn(b, "u3") == 200 })
	t.Logf("restock on C lets B sell after %v", time.Since(restocked).Round(time.Millisecond))
}

func TestClusterDegradeSwitch(t *testing.T) {
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()}
	src := func(i int) string {
		return fmt.Sprintf(`
state_dir = %q
route "recommend" {
  match { path = "/recommend" }
  respond { status = 200 }
  fallback {
    status = 200
    body   = "degraded"
  }
}
`, dirs[i])
	}
	edges := startClusterEdges(t, 3, src)
	body := func(e *clusterEdge) string { return string(e.do(t, "GET", "/recommend").Body()) }
	edges[0].mustCall(t, "POST", "/routes/recommend/degrade", `{"on":true,"reason":"slow","ttl":"1m"}`)
	start := time.Now()
	waitUntil(t, clusterDeadline, "switch on C", func() bool { return body(edges[2]) == "degraded" })
	t.Logf("degrade switch on A reaches C after %v", time.Since(start).Round(time.Millisecond))
	edges[1].mustCall(t, "POST", "/routes/recommend/degrade", `{"on":false}`)
	for i, e := range edges {
		waitUntil(t, clusterDeadline, "switch off on edge "+fmt.Sprint(i), func() bool { return body(e) == "" })
	}
}

// drive sends GET uri to each edge at perNode[i] requests per second for d and
// returns how many each admitted (200).
func drive(t *testing.T, edges []*clusterEdge, perNode []float64, uri string, d time.Duration) []int {
	t.Helper()
	admitted := make([]int, len(edges))
	var wg sync.WaitGroup
	start := time.Now()
	for i, e := range edges {
		if perNode[i] == 0 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &fasthttp.HostClient{Addr: e.addr, MaxConns: 4}
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			req.SetRequestURI("http://" + e.addr + uri)
			every := time.Duration(float64(time.Second) / perNode[i])
			for n := 0; ; n++ {
				at := start.Add(time.Duration(n) * every)
				if at.Sub(start) >= d {
					return
				}
				time.Sleep(time.Until(at))
				if err := client.DoTimeout(req, resp, time.Second); err == nil && resp.StatusCode() == 200 {
					admitted[i]++
				}
			}
		}()
	}
	wg.Wait()
	return admitted
}

func sum(xs []int) int {
	n := 0
	for _, x := range xs {
		n += x
	}
	return n
}

// limitHeader returns the RateLimit-Limit (the burst in force) of GET uri on e.
func limitHeader(t *testing.T, e *clusterEdge, uri string) string {
	return string(e.do(t, "GET", uri).Header.Peek("RateLimit-Limit"))
}

// TestClusterScopeLimit: scope = "cluster" with 300r/s over 3 nodes admits
// 300/s in total, and again over the 2 left after one leaves.
func TestClusterScopeLimit(t *testing.T) {
	const rate, burst, secs = 300, 30, 2
	src := fmt.Sprintf(`
cluster {}
route "sale" {
  match { path = "/sale" }
  respond { status = 200 }
  limit "all" {
    key     = "const:all"
    rate    = "%dr/s"
    burst   = %d
    scope   = "cluster"
    headers = true
  }
}
route "probe" {
  match { path = "/probe" }
  respond { status = 200 }
  limit "all" {
    key     = "const:all"
    rate    = "%dr/s"
    burst   = %d
    scope   = "cluster"
    headers = true
  }
}
`, rate, burst, rate, burst)
	edges := startClusterEdges(t, 3, func(int) string { return src })
	for i, e := range edges {
		waitUntil(t, clusterDeadline, fmt.Sprintf("split in 3 on edge %d", i), func() bool { return limitHeader(t, e, "/probe") == "10" })
	}
	check := func(what string, got int, want float64) {
		t.Helper()
		dev := (float64(got) - want) / want
		t.Logf("%s: admitted %d in %ds, want %.0f (rate × time + tokens in the buckets at the start): %+.1f%%", what, got, secs, want, 100*dev)
		if dev < -0.15 || dev > 0.15 {
			t.Errorf("%s: admitted %d, want %.0f within 15%%", what, got, want)
		}
	}
	// Offered 250/s per node, 750/s in all: every node is over its 100/s share.
	got := drive(t, edges, []float64{250, 250, 250}, "/sale", secs*time.Second)
	check(fmt.Sprintf("3 nodes, even load %v", got), sum(got), rate*secs+burst)

	// Uneven balancing (60/20/20 of 375/s): the busy node is held to its share
	// while the others have room they cannot lend: Σ min(offered, rate/N).
	got = drive(t, edges, []float64{225, 75, 75}, "/sale", secs*time.Second)
	check(fmt.Sprintf("3 nodes, 60/20/20 load %v", got), sum(got), (100+75+75)*secs+burst/3)

	// One node leaves: the two others take 150/s each within a second.
	left := time.Now()
	edges[2].leave()
	for i, e := range edges[:2] {
		waitUntil(t, clusterDeadline, fmt.Sprintf("re-split in 2 on edge %d", i), func() bool { return limitHeader(t, e, "/probe") == "15" })
	}
	t.Logf("re-split after a graceful leave took %v", time.Since(left).Round(time.Millisecond))
	got = drive(t, edges[:2], []float64{300, 300}, "/sale", secs*time.Second)
	check(fmt.Sprintf("2 nodes after a leave, even load %v", got), sum(got), rate*secs+burst)
}
