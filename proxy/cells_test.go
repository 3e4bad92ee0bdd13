package proxy

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/edge-gw/edge/admin"
	"github.com/edge-gw/edge/internal/origintest"
	"github.com/edge-gw/edge/shard"
	"github.com/valyala/fasthttp"
)

// cellOrigin answers every request with its cell's name, and /healthz with 200.
func cellOrigin(t testing.TB, name string) *origintest.Origin {
	return origintest.Start(t, cellHandler(name))
}

func cellHandler(name string) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString(name) }
}

// startOriginAt serves h on addr (a port an origin just gave up), retrying while
// the port is still held.
func startOriginAt(t *testing.T, addr string, h fasthttp.RequestHandler) *fasthttp.Server {
	t.Helper()
	var ln net.Listener
	var err error
	for i := 0; i < 100; i++ {
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("cannot listen again on %s: %v", addr, err)
	}
	srv := &fasthttp.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown() })
	return srv
}

// cellDef is one cell of cellsConfig: name, servers and optional weight.
type cellDef struct {
	name    string
	servers []string
	weight  float64
}

// cellsConfig is a cells block "shop" keyed by X-User-Id with the cells in the
// given order, extra lines inside the block, and a route /shop/ to it.
func cellsConfig(cells []cellDef, extra string) string {
	var b strings.Builder
	b.WriteString(`
trusted_proxies = ["127.0.0.1/32"]
cells "shop" {
  key = "header:X-User-Id"
  timeout = "1s"
  connect_timeout = "200ms"
` + extra + "\n")
	for _, c := range cells {
		w := ""
		if c.weight != 0 {
			w = fmt.Sprintf("weight = %v", c.weight)
		}
		fmt.Fprintf(&b, "  cell %q {\n    servers = [%s]\n    %s\n  }\n", c.name, quoteList(c.servers), w)
	}
	b.WriteString(`}
route "shop" {
  match { path = "/shop/" }
  cells = "shop"
}
`)
	return b.String()
}

// threeCells starts one origin per cell c1..c3 and returns them with their defs.
func threeCells(t *testing.T) (map[string]*origintest.Origin, []cellDef) {
	origins := map[string]*origintest.Origin{}
	var defs []cellDef
	for _, name := range []string{"c1", "c2", "c3"} {
		o := cellOrigin(t, name)
		origins[name] = o
		defs = append(defs, cellDef{name: name, servers: []string{o.Addr}})
	}
	return origins, defs
}

func reversed(defs []cellDef) []cellDef {
	out := make([]cellDef, len(defs))
	for i, d := range defs {
		out[len(defs)-1-i] = d
	}
	return out
}

// cellOf asks e for user's page and returns the cell that answered (the body) after
// checking that X-Edge-Cell names the same cell.
func cellOf(t *testing.T, e *testEdge, user string) string {
	t.Helper()
	resp := e.do(t, "GET", "/shop/cart", "X-User-Id", user)
	if resp.StatusCode() != 200 {
		t.Fatalf("user %s: status %d %s", user, resp.StatusCode(), resp.Body())
	}
	if hdr := string(resp.Header.Peek("X-Edge-Cell")); hdr != string(resp.Body()) {
		t.Fatalf("user %s: X-Edge-Cell %q but served by %q", user, hdr, resp.Body())
	}
	return string(resp.Body())
}

func users(n int) []string {
	u := make([]string, n)
	for i := range u {
		u[i] = fmt.Sprintf("user-%d", i)
	}
	return u
}

// 3000 users over 3 cells: balanced, sticky, and the same from a second edge whose
// config lists the cells in another order.
func TestCellsBalanceAndStickiness(t *testing.T) {
	origins, defs := threeCells(t)
	e1 := startEdge(t, cellsConfig(defs, ""))
	e2 := startEdge(t, cellsConfig(reversed(defs), ""))
	count := map[string]int{}
	all := users(3000)
	for _, u := range all {
		c := cellOf(t, e1, u)
		count[c]++
		if again := cellOf(t, e1, u); again != c {
			t.Fatalf("user %s went to %s, then %s", u, c, again)
		}
		if other := cellOf(t, e2, u); other != c {
			t.Fatalf("user %s: edge 1 sent it to %s, edge 2 (cells in reverse order) to %s", u, c, other)
		}
	}
	for name, o := range origins {
		share := float64(count[name]) / float64(len(all))
		t.Logf("cell %s: %d users (%.1f%%)", name, count[name], 100*share)
		if share < 0.28 || share > 0.39 {
			t.Errorf("cell %s has %.1f%% of users, want 28–39%%", name, 100*share)
		}
		if got := o.Requests.Load(); got != int64(3*count[name]) {
			t.Errorf("origin of %s served %d requests, want %d", name, got, 3*count[name])
		}
	}
	if got := gathered(t, e1.reg, "edge_cell_requests_total", "cell", "c1"); got != float64(2*count["c1"]) {
		t.Errorf("edge_cell_requests_total{cell=c1} = %v, want %d", got, 2*count["c1"])
	}
}

// Removing a cell by reload moves only its users; re-adding it restores the map.
func TestCellsReloadMovesOnlyRemovedCell(t *testing.T) {
	_, defs := threeCells(t)
	e := startEdge(t, cellsConfig(defs, ""))
	all := users(1500)
	before := map[string]string{}
	for _, u := range all {
		before[u] = cellOf(t, e, u)
	}
	ring := e.px.Current().cells["shop"].ring

	if err := e.reload(t, cellsConfig([]cellDef{defs[0], defs[2]}, "")); err != nil {
		t.Fatal(err)
	}
	moved := 0
	for _, u := range all {
		got := cellOf(t, e, u)
		switch {
		case before[u] == "c2":
			moved++
		case got != before[u]:
			t.Fatalf("user %s of %s moved to %s when c2 was removed", u, before[u], got)
		}
	}
	if moved == 0 {
		t.Fatal("no user belonged to c2")
	}
	if err := e.reload(t, cellsConfig(reversed(defs), "")); err != nil {
		t.Fatal(err)
	}
	for _, u := range all {
		if got := cellOf(t, e, u); got != before[u] {
			t.Fatalf("after re-adding c2, user %s is in %s, was %s", u, got, before[u])
		}
	}
	// A reload that keeps the (name, weight) set reuses the ring instead of
	// rebuilding it (New costs tens of ms per cell).
	if err := e.reload(t, cellsConfig(defs, "")+"\n# edited\n"); err != nil {
		t.Fatal(err)
	}
	cur := e.px.Current().cells["shop"].ring
	if err := e.reload(t, cellsConfig(defs, "")+"\n# edited again\n"); err != nil {
		t.Fatal(err)
	}
	if e.px.Current().cells["shop"].ring != cur {
		t.Error("unchanged cells rebuilt their ring on reload")
	}
	_ = ring
}

// Weights: a cell of weight 2 gets about twice the users of a cell of weight 1.
func TestCellsWeights(t *testing.T) {
	origins, defs := threeCells(t)
	defs[0].weight = 2
	e := startEdge(t, cellsConfig(defs, ""))
	for _, u := range users(2000) {
		cellOf(t, e, u)
	}
	c1, c2, c3 := origins["c1"].Requests.Load(), origins["c2"].Requests.Load(), origins["c3"].Requests.Load()
	t.Logf("weights 2:1:1 → %d %d %d", c1, c2, c3)
	if share := float64(c1) / 2000; share < 0.45 || share > 0.55 {
		t.Errorf("cell of weight 2 of 4 got %.1f%% of users, want about 50%%", 100*share)
	}
}

func TestCellsMissingKey(t *testing.T) {
	origins, defs := threeCells(t)
	f := func(extra string) *testEdge { return startEdge(t, cellsConfig(defs, extra)) }

	e := f(`missing_key = "reject"`)
	resp := e.do(t, "GET", "/shop/cart")
	if resp.StatusCode() != 400 || string(resp.Body()) != `{"error":"missing_key"}` {
		t.Errorf("reject: %d %s", resp.StatusCode(), resp.Body())
	}
	if v := resp.Header.Peek("X-Edge-Cell"); v != nil {
		t.Errorf("reject: X-Edge-Cell %q on a request that has no cell", v)
	}
	if n := origins["c1"].Requests.Load() + origins["c2"].Requests.Load() + origins["c3"].Requests.Load(); n != 0 {
		t.Errorf("rejected request reached origins %d times", n)
	}

	e = f(`missing_key = "c2"`)
	for i := 0; i < 5; i++ {
		resp = e.do(t, "GET", "/shop/cart")
		if string(resp.Body()) != "c2" || string(resp.Header.Peek("X-Edge-Cell")) != "c2" {
			t.Errorf("missing_key = c2: served by %q, X-Edge-Cell %q", resp.Body(), resp.Header.Peek("X-Edge-Cell"))
		}
	}

	e = f(`missing_key = "any"`)
	seen := map[string]int{}
	for i := 0; i < 300; i++ {
		resp = e.do(t, "GET", "/shop/cart")
		if resp.StatusCode() != 200 || string(resp.Header.Peek("X-Edge-Cell")) != string(resp.Body()) {
			t.Fatalf("any: %d %q X-Edge-Cell %q", resp.StatusCode(), resp.Body(), resp.Header.Peek("X-Edge-Cell"))
		}
		seen[string(resp.Body())]++
	}
	for _, c := range []string{"c1", "c2", "c3"} {
		if seen[c] < 50 {
			t.Errorf("missing_key = any: %v, want key-less requests spread over all cells", seen)
		}
	}
}

// Several servers in a cell are balanced round robin, and only the cell's servers
// see its users.
func TestCellsSeveralServers(t *testing.T) {
	a, b := cellOrigin(t, "c1"), cellOrigin(t, "c1")
	o2 := cellOrigin(t, "c2")
	e := startEdge(t, cellsConfig([]cellDef{{name: "c1", servers: []string{a.Addr, b.Addr}}, {name: "c2", servers: []string{o2.Addr}}}, ""))
	n1 := 0
	for _, u := range users(200) {
		if cellOf(t, e, u) == "c1" {
			n1++
		}
	}
	if a.Requests.Load()+b.Requests.Load() != int64(n1) || a.Requests.Load() < int64(n1/2-1) || b.Requests.Load() < int64(n1/2-1) {
		t.Errorf("c1's %d requests: server a %d, b %d; want an even split", n1, a.Requests.Load(), b.Requests.Load())
	}
}

// Killing a cell's only server gives its users 503 cell_unavailable within one
// health interval while the other cells are untouched; the cell recovers when the
// server returns. Its users never leak into other cells.
func TestCellDownAndRecovery(t *testing.T) {
	origins, defs := threeCells(t)
	const interval = 300 * time.Millisecond
	e := startEdge(t, cellsConfig(defs, `health_check {
    path     = "/healthz"
    interval = "300ms"
    timeout  = "200ms"
    rise     = 1
    fall     = 1
  }`))
	stopChecks(t, e)
	all := users(300)
	home := map[string]string{}
	var c1users, others []string
	for _, u := range all {
		home[u] = cellOf(t, e, u)
		if home[u] == "c1" {
			c1users = append(c1users, u)
		} else {
			others = append(others, u)
		}
	}
	c1addr := origins["c1"].Addr
	killed := time.Now()
	origins["c1"].Stop()

	// Poll with one c1 user; every answer is c1's own: 502 while the failure is
	// being noticed, then 503 cell_unavailable.
	var down time.Duration
	for deadline := time.Now().Add(5 * time.Second); ; {
		resp := e.do(t, "GET", "/shop/cart", "X-User-Id", c1users[0])
		if cell := string(resp.Header.Peek("X-Edge-Cell")); cell != "c1" {
			t.Fatalf("c1's user answered with X-Edge-Cell %q (status %d)", cell, resp.StatusCode())
		}
		if resp.StatusCode() == 503 {
			if string(resp.Body()) != `{"error":"cell_unavailable"}` {
				t.Fatalf("503 body %s", resp.Body())
			}
			down = time.Since(killed)
			break
		}
		if resp.StatusCode() != 502 {
			t.Fatalf("dead cell answered %d %s", resp.StatusCode(), resp.Body())
		}
		if time.Now().After(deadline) {
			t.Fatal("cell never became unavailable")
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("cell c1 unavailable %v after its server died (interval %v)", down, interval)
	// One interval for the next probe, plus scheduling slack on a shared machine.
	if down > interval+time.Second {
		t.Errorf("cell unavailable only after %v, want within about one health interval (%v)", down, interval)
	}
	for _, u := range c1users {
		resp := e.do(t, "GET", "/shop/cart", "X-User-Id", u)
		if resp.StatusCode() != 503 || string(resp.Header.Peek("X-Edge-Cell")) != "c1" {
			t.Fatalf("c1 user %s while c1 is down: %d %s cell %q", u, resp.StatusCode(), resp.Body(), resp.Header.Peek("X-Edge-Cell"))
		}
	}
	for _, u := range others {
		if got := cellOf(t, e, u); got != home[u] {
			t.Fatalf("user %s of %s went to %s while c1 was down", u, home[u], got)
		}
	}

	startOriginAt(t, c1addr, cellHandler("c1"))
	for deadline := time.Now().Add(5 * time.Second); ; {
		resp := e.do(t, "GET", "/shop/cart", "X-User-Id", c1users[0])
		if resp.StatusCode() == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("cell did not recover after its server came back")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, u := range all {
		if got := cellOf(t, e, u); got != home[u] {
			t.Fatalf("after recovery user %s is in %s, was %s", u, got, home[u])
		}
	}
}

// With spill = true a down cell's users go to the cell a ring without it would
// give them: the same on every node. Nobody else moves.
func TestCellSpill(t *testing.T) {
	origins, defs := threeCells(t)
	e := startEdge(t, cellsConfig(defs, `spill = true
  health_check {
    interval = "100ms"
    timeout  = "100ms"
    rise     = 1
    fall     = 1
  }`))
	stopChecks(t, e)
	all := users(600)
	home := map[string]string{}
	for _, u := range all {
		home[u] = cellOf(t, e, u)
	}
	origins["c2"].Stop()
	g := e.px.Current().cells["shop"]
	var c2 *cell
	for _, c := range g.cells {
		if c.name == "c2" {
			c2 = c
		}
	}
	for deadline := time.Now().Add(5 * time.Second); c2.pool.available(); {
		if time.Now().After(deadline) {
			t.Fatal("c2 never marked down")
		}
		time.Sleep(10 * time.Millisecond)
	}
	without, err := shard.New([]shard.Cell{{Name: "c3", Weight: 1}, {Name: "c1", Weight: 1}})
	if err != nil {
		t.Fatal(err)
	}
	spilled := map[string]int{}
	for _, u := range all {
		got := cellOf(t, e, u)
		if home[u] != "c2" {
			if got != home[u] {
				t.Fatalf("user %s of %s moved to %s when c2 went down", u, home[u], got)
			}
			continue
		}
		if want := without.Name(without.Lookup([]byte(u))); got != want {
			t.Fatalf("c2's user %s spilled to %s, want %s (its cell without c2)", u, got, want)
		}
		spilled[got]++
	}
	t.Logf("c2's users spilled to %v", spilled)
	if spilled["c1"] == 0 || spilled["c3"] == 0 {
		t.Errorf("spill went to %v, want c2's users spread over c1 and c3", spilled)
	}
}

// Admin GET /cells and GET /upstreams show servers, health and weights.
func TestAdminCellsAndUpstreams(t *testing.T) {
	_, defs := threeCells(t)
	defs[2].weight = 2
	up := origintest.Start(t, nil)
	dead := origintest.FreeAddr(t)
	src := cellsConfig(defs, `missing_key = "any"`) + fmt.Sprintf(`
upstream "catalog" {
  servers = [%q, %q]
  health_check {
    interval = "100ms"
    timeout  = "100ms"
    fall     = 1
  }
}
`, up.Addr, dead)
	e := startEdge(t, src)
	stopChecks(t, e)
	api := admin.New(e.reg, func() string { return "" })
	e.px.RegisterAdmin(api)
	get := func(path string, v any) {
		t.Helper()
		rec := httptest.NewRecorder()
		api.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		if rec.Code != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, rec.Code, rec.Body)
		}
		if err := json.Unmarshal(rec.Body.Bytes(), v); err != nil {
			t.Fatalf("GET %s: %v: %s", path, err, rec.Body)
		}
	}
	var cells struct {
		Cells []cellsInfo `json:"cells"`
	}
	get("/cells", &cells)
	if len(cells.Cells) != 1 || cells.Cells[0].Name != "shop" || cells.Cells[0].Key != "header:X-User-Id" ||
		cells.Cells[0].MissingKey != "any" || len(cells.Cells[0].Cells) != 3 {
		t.Fatalf("GET /cells = %+v", cells)
	}
	c3 := cells.Cells[0].Cells[2]
	if c3.Name != "c3" || c3.Weight != 2 || c3.Share != 0.5 || !c3.Available || len(c3.Servers) != 1 ||
		!c3.Servers[0].Up || c3.Servers[0].Active != "unchecked" {
		t.Errorf("GET /cells c3 = %+v", c3)
	}

	var ups struct {
		Upstreams []upstreamInfo `json:"upstreams"`
	}
	for deadline := time.Now().Add(5 * time.Second); ; {
		get("/upstreams", &ups)
		if len(ups.Upstreams) == 1 && len(ups.Upstreams[0].Servers) == 2 && ups.Upstreams[0].Servers[1].Active == "down" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET /upstreams never showed the dead server down: %+v", ups)
		}
		time.Sleep(20 * time.Millisecond)
	}
	s0, s1 := ups.Upstreams[0].Servers[0], ups.Upstreams[0].Servers[1]
	if s0.Addr != up.Addr || !s0.Up || s0.Active != "up" || s1.Addr != dead || s1.Up || ups.Upstreams[0].HealthCheck == nil {
		t.Errorf("GET /upstreams = %+v", ups)
	}
	if v := mustMetric(t, e.reg, "edge_upstream_up", "server", dead); v != 0 {
		t.Errorf("edge_upstream_up{server=%s} = %v, want 0", dead, v)
	}
	if v := mustMetric(t, e.reg, "edge_upstream_up", "server", up.Addr); v != 1 {
		t.Errorf("edge_upstream_up{server=%s} = %v, want 1", up.Addr, v)
	}
	if v := gathered(t, e.reg, "edge_health_checks_total", "result", "fail"); v < 1 {
		t.Errorf("edge_health_checks_total{result=fail} = %v, want ≥ 1", v)
	}
	waitUntil(t, 5*time.Second, "a passed probe counted", func() bool {
		return gathered(t, e.reg, "edge_health_checks_total", "result", "pass") >= 1
	})
}

// Hot/cold routing: today's data from the hot store, the rest from the cold one,
// by query and by header value.
func TestHotColdRouting(t *testing.T) {
	hot := origintest.Start(t, func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("hot") })
	cold := origintest.Start(t, func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("cold") })
	e := startEdge(t, fmt.Sprintf(`
upstream "hot"  { servers = [%q] }
upstream "cold" { servers = [%q] }
route "today" {
  match {
    path  = "/orders"
    query = { day = "today" }
  }
  upstream = "hot"
}
route "today-header" {
  match {
    path   = "/orders"
    header = { "X-Data-Tier" = "hot" }
  }
  upstream = "hot"
}
route "history" {
  match { path = "/orders" }
  upstream = "cold"
}
`, hot.Addr, cold.Addr))
	f := func(uri string, want string, headers ...string) {
		t.Helper()
		resp := e.do(t, "GET", uri, headers...)
		if string(resp.Body()) != want {
			t.Errorf("GET %s %v served by %q, want %s", uri, headers, resp.Body(), want)
		}
	}
	f("/orders?day=today", "hot")
	f("/orders?page=2&day=today", "hot")
	f("/orders?day=2024-05-01", "cold")
	f("/orders?day=Today", "cold")
	f("/orders", "cold")
	f("/orders?today", "cold")
	f("/orders", "hot", "X-Data-Tier", "hot")
	f("/orders", "cold", "X-Data-Tier", "cold")
}

// edge -check builds cells with the same code path as a reload.
func TestCheckCells(t *testing.T) {
	_, defs := threeCells(t)
	cfg := mustParse(t, cellsConfig(defs, `health_check { interval = "50ms" }`))
	if err := Check(cfg); err != nil {
		t.Fatal(err)
	}
}
