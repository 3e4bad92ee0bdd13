package deploy

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/edge-gw/edge/internal/tcptest"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/edge-gw/edge/internal/edgetest"
	"github.com/edge-gw/edge/internal/origintest"
	"github.com/edge-gw/edge/internal/redistest"
	"github.com/edge-gw/edge/internal/testcert"
	"github.com/valyala/fasthttp"
)

const adminToken = "deploy-test-admin-token"

// Stand-ins for Grafana's built-in and template variables when a panel query is sent
// to Prometheus directly: every node, job and route, and windows that hold several
// 1 s scrapes.
var dashboardVars = strings.NewReplacer(
	"$__rate_interval", "10s",
	"$__interval", "5s",
	"$__range", "1m",
	"$job", ".*",
	"$instance", ".*",
	"$route", ".*",
)

// TestAlertRules runs promtool on the rules and their unit tests.
func TestAlertRules(t *testing.T) {
	promtool := lookPath(t, "promtool")
	for _, args := range [][]string{
		{"check", "rules", "alerts.yml"},
		{"test", "rules", "alerts_test.yml"},
	} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = "prometheus"
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "SUCCESS") {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
			continue
		}
		t.Logf("promtool %s: %s", strings.Join(args, " "), strings.Join(strings.Fields(string(out)), " "))
	}
}

// panelQuery is one target of a dashboard panel.
type panelQuery struct {
	panel, refID, expr string
}

func (q panelQuery) String() string { return fmt.Sprintf("%q %s: %s", q.panel, q.refID, q.expr) }

// dashboard is the part of edge.json the test reads.
type dashboard struct {
	SchemaVersion int `json:"schemaVersion"`
	Templating    struct {
		List []struct {
			Name  string          `json:"name"`
			Type  string          `json:"type"`
			Query json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
	Annotations struct {
		List []struct {
			Name string `json:"name"`
			Expr string `json:"expr"`
		} `json:"list"`
	} `json:"annotations"`
	Panels []panel `json:"panels"`
}

type panel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	GridPos struct{ H, W, X, Y int } `json:"gridPos"`
	Targets []struct {
		RefID      string `json:"refId"`
		Expr       string `json:"expr"`
		Datasource struct {
			UID string `json:"uid"`
		} `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row's
}

// loadDashboard reads edge.json, checks what Grafana needs of its structure, and
// returns every panel query and the template variables' label_values queries.
func loadDashboard(t *testing.T) (queries []panelQuery, vars map[string]string, annotations []string) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("grafana", "edge.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("edge.json: %v", err)
	}
	if d.SchemaVersion < 36 {
		t.Errorf("schemaVersion %d: want a current one (39)", d.SchemaVersion)
	}
	vars = map[string]string{}
	hasDS := false
	for _, v := range d.Templating.List {
		switch v.Type {
		case "datasource":
			hasDS = hasDS || v.Name == "datasource"
		case "query":
			var q struct{ Query string }
			if err := json.Unmarshal(v.Query, &q); err != nil {
				t.Fatalf("variable %s: %v", v.Name, err)
			}
			vars[v.Name] = q.Query
		}
	}
	if !hasDS {
		t.Error("edge.json has no datasource variable named datasource")
	}
	for _, a := range d.Annotations.List {
		if a.Expr != "" {
			annotations = append(annotations, a.Expr)
		}
	}
	ids := map[int]string{}
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if prev, ok := ids[p.ID]; ok {
				t.Errorf("panels %q and %q share id %d", prev, p.Title, p.ID)
			}
			ids[p.ID] = p.Title
			if p.GridPos.X+p.GridPos.W > 24 || p.GridPos.W == 0 || p.GridPos.H == 0 {
				t.Errorf("panel %q: gridPos %+v does not fit the 24 columns", p.Title, p.GridPos)
			}
			if p.Type == "row" {
				walk(p.Panels)
				continue
			}
			if p.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q: datasource uid %q, want ${datasource}", p.Title, p.Datasource.UID)
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			for _, tg := range p.Targets {
				if tg.Expr == "" || tg.RefID == "" || tg.Datasource.UID != "${datasource}" {
					t.Errorf("panel %q: target %+v lacks an expr, a refId or the ${datasource} datasource", p.Title, tg)
				}
				queries = append(queries, panelQuery{panel: p.Title, refID: tg.RefID, expr: tg.Expr})
			}
		}
	}
	walk(d.Panels)
	return queries, vars, annotations
}

// edgeMetricNames returns every edge_* metric name the sources define, read the way
// a reviewer would grep them, so a dashboard query naming a metric edge does not
// export fails even before Prometheus runs.
func edgeMetricNames(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	def := regexp.MustCompile(`(?:Name:\s*|NewDesc\()"(edge_[a-z0-9_]+)"`)
	err := filepath.WalkDir("..", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "node_modules") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range def.FindAllStringSubmatch(string(src), -1) {
			names[m[1]] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}

func TestDashboardNamesOnlyExportedMetrics(t *testing.T) {
	queries, vars, annotations := loadDashboard(t)
	exported := edgeMetricNames(t)
	if len(exported) < 50 {
		t.Fatalf("found only %d edge metric definitions: is the source walk broken?", len(exported))
	}
	used := regexp.MustCompile(`\bedge_[a-z0-9_]+`)
	check := func(where, expr string) {
		for _, name := range used.FindAllString(expr, -1) {
			base := name
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if b, ok := strings.CutSuffix(name, suffix); ok && exported[b] {
					base = b
				}
			}
			if !exported[base] {
				t.Errorf("%s names %s, which edge does not export", where, name)
			}
		}
	}
	for _, q := range queries {
		check(q.String(), q.expr)
	}
	for name, q := range vars {
		check("variable "+name, q)
	}
	for _, a := range annotations {
		check("annotation", a)
	}
	rules, err := os.ReadFile(filepath.Join("prometheus", "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	check("alerts.yml", string(rules))
}

// TestDashboardQueries runs the real edge binary under light load and a real
// Prometheus scraping it every second (with alerts.yml loaded), and asserts that every
// panel query of edge.json is valid and returns at least one series.
func TestDashboardQueries(t *testing.T) {
	if testing.Short() {
		t.Skip("starts edge, redis-server and prometheus")
	}
	promBin := lookPath(t, "prometheus")
	queries, vars, annotations := loadDashboard(t)
	w := startWorld(t)
	w.startLoad(t)

	// What an operator does during a sale: purge the cache, reload the config.
	if code, body := w.edge.Admin(t, adminToken, "POST", "/cache/purge", `{"route":"item"}`); code != 200 {
		t.Fatalf("purge: %d %s", code, body)
	}
	if code, body := w.edge.Admin(t, adminToken, "POST", "/reload", ""); code != 200 {
		t.Fatalf("reload: %d %s", code, body)
	}

	prom := startPrometheus(t, promBin, w.edge.AdminAddr)
	start := time.Now()

	// Poll until every query returns data (a rate needs two scrapes in its window; a
	// breaker needs time to open), failing at once on an invalid query.
	pending := map[int]panelQuery{}
	for i, q := range queries {
		pending[i] = q
	}
	deadline := time.Now().Add(35 * time.Second)
	for len(pending) > 0 && time.Now().Before(deadline) {
		for i, q := range pending {
			n, err := prom.count(dashboardVars.Replace(q.expr))
			if err != nil {
				t.Fatalf("%s: %v", q, err)
			}
			if n > 0 {
				delete(pending, i)
			}
		}
		if len(pending) > 0 {
			time.Sleep(500 * time.Millisecond)
		}
	}
	if len(pending) > 0 {
		var missing []string
		for _, q := range pending {
			missing = append(missing, "  "+q.String())
		}
		sort.Strings(missing)
		t.Errorf("%d of %d panel queries returned no series after %v:\n%s", len(pending), len(queries),
			time.Since(start).Round(time.Second), strings.Join(missing, "\n"))
	} else {
		t.Logf("all %d panel queries of edge.json returned data, %v after Prometheus started", len(queries), time.Since(start).Round(100*time.Millisecond))
	}

	// Say which panels only show zeros under this load (not a failure: a healthy edge
	// shows no refused connections), so a reader sees what the run exercised.
	var flat []string
	for _, q := range queries {
		if _, nonZero, err := prom.query(dashboardVars.Replace(q.expr)); err == nil && nonZero == 0 {
			flat = append(flat, fmt.Sprintf("%q %s", q.panel, q.refID))
		}
	}
	t.Logf("%d of %d queries show values other than 0 or NaN; only zeros: %s", len(queries)-len(flat), len(queries), strings.Join(flat, ", "))

	// Annotations are valid queries (they return data only when something happened).
	for _, a := range annotations {
		if _, err := prom.count(dashboardVars.Replace(a)); err != nil {
			t.Errorf("annotation %s: %v", a, err)
		}
	}
	// Template variables list values: label_values(selector, label).
	labelValues := regexp.MustCompile(`^label_values\((.+),\s*(\w+)\)$`)
	for name, q := range vars {
		m := labelValues.FindStringSubmatch(q)
		if m == nil {
			t.Errorf("variable %s: %q is not label_values(selector, label)", name, q)
			continue
		}
		values, err := prom.labelValues(m[2], dashboardVars.Replace(m[1]))
		if err != nil || len(values) == 0 {
			t.Errorf("variable %s (%s): values %v, %v", name, q, values, err)
		}
	}
	// The alert rules evaluate against real data without errors.
	prom.checkRules(t)
	t.Logf("load sent: %s", w.loadSummary())
}

// world is edge with everything the dashboard shows behind it.
type world struct {
	edge       *edgetest.Edge
	ca         *testcert.CA
	https      string // the TLS listener's address
	stream     string // the echo stream's address
	mu         sync.Mutex
	statuses   map[string]int // "route status" → answers, for the log
	loadErrors atomic.Int64
}

func startWorld(t *testing.T) *world {
	t.Helper()
	redis := redistest.Start(t)
	origin := origintest.Start(t, func(ctx *fasthttp.RequestCtx) {
		path := string(ctx.Path())
		switch {
		case strings.HasPrefix(path, "/flaky/"):
			// Phases of 1.5 s: mostly failing, then mostly healthy, so the breaker
			// opens, half-opens and closes while Prometheus watches.
			failShare := 0.1
			if time.Now().UnixMilli()/1500%2 == 0 {
				failShare = 0.8
			}
			if rand.Float64() < failShare {
				ctx.SetStatusCode(500)
				ctx.SetBodyString(`{"error":"origin failed"}`)
				return
			}
		case strings.HasPrefix(path, "/slow/"):
			if rand.Float64() < 0.25 { // beyond the upstream's timeout
				time.Sleep(250 * time.Millisecond)
			}
		case strings.HasPrefix(path, "/item/"):
			ctx.Response.Header.Set("Cache-Control", "max-age=1")
			ctx.Response.Header.Set("Surrogate-Key", "items")
		}
		ctx.SetContentType("application/json")
		fmt.Fprintf(ctx, `{"path":%q}`, path)
	})
	echo := tcptest.Echo(t)
	ca := testcert.NewCA(t)
	leaf := ca.Leaf(t, testcert.Opts{Names: []string{"shop.test"}, NotAfter: time.Now().Add(30 * 24 * time.Hour)})

	dir := t.TempDir()
	cfg := filepath.Join(dir, "edge.hcl")
	edgetest.WriteConfig(t, cfg, fmt.Sprintf(`
listen           = "127.0.0.1:0"
shutdown_timeout = "2s"
state_dir        = "state"
admin {
  listen = "127.0.0.1:0"
  token  = env("TEST_ADMIN_TOKEN")
}
access_log {
  path = "access.log"
}
listener "https" {
  address = "127.0.0.1:0"
  tls {
    certificate {
      cert_file = %[1]q
      key_file  = %[2]q
    }
  }
}
upstream "app" {
  servers = [%[3]q, %[4]q]      # the second refuses: connect errors, retries, passive cool-off
  timeout = "2s"
}
upstream "flaky" {
  servers = [%[3]q]
  breaker {
    window        = "2s"
    min_requests  = 5
    failure_ratio = 0.5
    cool_off      = "1s"
    probes        = 2
  }
  max_inflight = 100
}
upstream "slow" {
  servers = [%[3]q]
  timeout = "100ms"
}
upstream "shop" {
  servers = [%[3]q]
  health_check {
    path     = "/health"
    interval = "1s"
  }
}
upstream "echo" {
  servers = [%[5]q]
}
cells "buyers" {
  key = "header:X-User-Id"
  cell "c1" { servers = [%[3]q] }
  cell "c2" { servers = [%[3]q] }
}
blacklist {
  users    = ["u-banned"]
  user_key = "header:X-User-Id"
}
seckill {
  store     = "redis"
  redis { addrs = [%[6]q] }
  secret    = "0123456789abcdef0123456789abcdef-deploy"
  user_key  = "header:X-User-Id"
  item_key  = "path:2"
}
route "item" {
  match {
    path    = "/item/"
    methods = ["GET", "HEAD"]
  }
  upstream = "app"
  cache {
    ttl = "1s"
  }
}
route "flaky" {
  match { path = "/flaky/" }
  upstream = "flaky"
  fallback {
    status = 503
    body   = "{\"error\":\"busy\"}"
  }
}
route "slow" {
  match { path = "/slow/" }
  upstream = "slow"
}
route "seckill" {
  match {
    path    = "/seckill/"
    methods = ["POST"]
  }
  seckill = true
}
route "order" {
  match {
    path    = "/order/"
    methods = ["POST"]
  }
  cells         = "buyers"
  require_token = true
}
route "orders" {
  match {
    path    = "/api/orders"
    methods = ["POST"]
  }
  upstream = "app"
  idempotency {
    header = "Idempotency-Key"
    ttl    = "1m"
  }
}
route "sale" {
  match { path = "/sale/" }
  upstream = "shop"
}
route "api" {
  match { path = "/" }
  upstream = "app"
  limit "user" {
    key   = "header:X-User-Id"
    rate  = "10r/s"
    burst = 5
  }
}
waiting_room "sale" {
  routes     = ["sale"]
  admit_rate = "5r/s"
  session    = "1m"
  store      = "memory"
  max_per_ip = 0
  secret     = "0123456789abcdef0123456789abcdef-room"
}
stream "echo" {
  listen   = "127.0.0.1:0"
  upstream = "echo"
}
`, leaf.CertFile, leaf.KeyFile, origin.Addr, origintest.FreeAddr(t), echo, redis.Addr))
	w := &world{ca: ca, statuses: map[string]int{}}
	w.edge = edgetest.Start(t, cfg, "TEST_ADMIN_TOKEN="+adminToken)
	w.https = w.address(t, "/listeners", "listeners", "https")
	w.stream = w.address(t, "/streams", "streams", "echo")
	// Item 42 has stock for the whole test; item 7 sells out at once.
	for item, stock := range map[string]int{"42": 1000000, "7": 3} {
		if code, body := w.edge.Admin(t, adminToken, "PUT", "/seckill/items/"+item, fmt.Sprintf(`{"stock":%d}`, stock)); code != 200 {
			t.Fatalf("stock item %s: %d %s", item, code, body)
		}
	}
	return w
}

// address returns the "address" of the object named name in the list field of the
// admin API's GET path.
func (w *world) address(t *testing.T, path, field, name string) string {
	t.Helper()
	code, raw := w.edge.Admin(t, adminToken, "GET", path, "")
	var body map[string][]struct{ Name, Address string }
	if err := json.Unmarshal([]byte(raw), &body); code != 200 || err != nil {
		t.Fatalf("GET %s = %d %q", path, code, raw)
	}
	for _, l := range body[field] {
		if l.Name == name {
			return l.Address
		}
	}
	t.Fatalf("GET %s has no %q: %s", path, name, raw)
	return ""
}

// startLoad sends a light, steady mix of requests until the test ends: cache hits,
// limit rejects, blacklisted users, 5xx and breaker fallbacks, upstream timeouts,
// seckill tokens (issued, repeat, sold out) and orders, waiting-room joins, idempotent
// orders, HTTP/2 over TLS, a failed TLS handshake, L4 stream connections and cache
// purges.
func (w *world) startLoad(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	plain := &fasthttp.Client{MaxConnsPerHost: 64, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second}
	var protos http.Protocols
	protos.SetHTTP2(true)
	h2 := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Protocols: &protos,
		TLSClientConfig: &tls.Config{RootCAs: w.ca.Pool, ServerName: "shop.test"}}}
	t.Cleanup(h2.CloseIdleConnections)

	base := "http://" + w.edge.Addr
	do := func(route, method, path string, headers ...string) (int, []byte) {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.Header.SetMethod(method)
		req.SetRequestURI(base + path)
		for i := 0; i+1 < len(headers); i += 2 {
			req.Header.Set(headers[i], headers[i+1])
		}
		if err := plain.DoTimeout(req, resp, 5*time.Second); err != nil {
			w.loadErrors.Add(1)
			return 0, nil
		}
		w.count(route, resp.StatusCode())
		return resp.StatusCode(), append([]byte(nil), resp.Body()...)
	}
	buyer := func(i int) {
		user := fmt.Sprintf("b-%d", i)
		code, body := do("seckill", "POST", "/seckill/42/token", "X-User-Id", user)
		var tok struct{ Token string }
		if code != 200 || json.Unmarshal(body, &tok) != nil {
			return
		}
		if i%4 == 0 {
			do("seckill", "POST", "/seckill/42/token", "X-User-Id", user) // repeat
		}
		do("order", "POST", "/order/42", "X-User-Id", user, "X-Seckill-Token", tok.Token)
		if i%8 == 0 {
			do("order", "POST", "/order/42", "X-User-Id", user, "X-Seckill-Token", tok.Token) // used
		}
	}

	wg.Add(2)
	go func() { // HTTP/1.1 on the plain listener
		defer wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			do("item", "GET", fmt.Sprintf("/item/%d", i%5))
			do("api", "GET", fmt.Sprintf("/api/list?p=%d", i), "X-User-Id", fmt.Sprintf("u%d", i%3))
			do("flaky", "GET", fmt.Sprintf("/flaky/%d", i))
			buyer(i)
			do("seckill", "POST", "/seckill/7/token", "X-User-Id", fmt.Sprintf("late-%d", i))
			if i%3 == 0 {
				do("sale", "GET", "/sale/now")
				do("orders", "POST", "/api/orders", "Idempotency-Key", fmt.Sprintf("k%d", i%40), "X-User-Id", "u9")
			}
			if i%10 == 0 {
				do("api", "GET", "/api/me", "X-User-Id", "u-banned")
				do("order", "POST", "/order/42", "X-User-Id", "nobody", "X-Seckill-Token", "forged")
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	go func() { // HTTP/2 over TLS, a failed handshake, L4 streams
		defer wg.Done()
		payload := make([]byte, 4096)
		for i := 0; ctx.Err() == nil; i++ {
			if resp, err := h2.Get("https://" + w.https + fmt.Sprintf("/item/%d", i%5)); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				w.count("item (h2)", resp.StatusCode)
			} else {
				w.loadErrors.Add(1)
			}
			do("slow", "GET", fmt.Sprintf("/slow/%d", i))
			if i%20 == 0 { // plain HTTP to the TLS port: a not_tls handshake error
				if c, err := net.DialTimeout("tcp", w.https, time.Second); err == nil {
					c.SetDeadline(time.Now().Add(2 * time.Second))
					io.WriteString(c, "GET / HTTP/1.1\r\nHost: shop.test\r\n\r\n")
					io.Copy(io.Discard, c)
					c.Close()
				}
			}
			if i%2 == 0 {
				w.echoOnce(payload)
			}
			if i%25 == 0 { // an operator purging what changed
				w.purge(`{"tag":"items"}`)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
}

// purge sends POST /cache/purge with body to the admin API.
func (w *world) purge(body string) {
	req, err := http.NewRequest("POST", "http://"+w.edge.AdminAddr+"/cache/purge", strings.NewReader(body))
	if err != nil {
		panic("BUG: " + err.Error())
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		w.loadErrors.Add(1)
		return
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	w.count("admin purge", resp.StatusCode)
}

// echoOnce sends payload through the echo stream and reads it back.
func (w *world) echoOnce(payload []byte) {
	c, err := net.DialTimeout("tcp", w.stream, time.Second)
	if err != nil {
		w.loadErrors.Add(1)
		return
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write(payload); err != nil {
		w.loadErrors.Add(1)
		return
	}
	if _, err := io.ReadFull(c, make([]byte, len(payload))); err != nil {
		w.loadErrors.Add(1)
		return
	}
	w.count("stream echo", 0)
}

func (w *world) count(route string, status int) {
	w.mu.Lock()
	w.statuses[route+" "+strconv.Itoa(status)]++
	w.mu.Unlock()
}

func (w *world) loadSummary() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	keys := make([]string, 0, len(w.statuses))
	for k := range w.statuses {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s×%d, ", k, w.statuses[k])
	}
	fmt.Fprintf(&b, "client errors %d", w.loadErrors.Load())
	return b.String()
}

// prometheus is a running Prometheus server.
type prometheus struct {
	url string
}

// startPrometheus runs bin scraping edge's admin listener every second, with
// alerts.yml loaded, on a free port and a temporary storage directory.
func startPrometheus(t *testing.T, bin, target string) *prometheus {
	t.Helper()
	rules, err := filepath.Abs(filepath.Join("prometheus", "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	src := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - %q
scrape_configs:
  - job_name: edge
    metrics_path: /metrics
    static_configs:
      - targets: [%q]
`, rules, target)
	if err := os.WriteFile(cfg, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	// A free port can be taken between our check and Prometheus' bind: try a few.
	for attempt := 0; attempt < 5; attempt++ {
		addr := freeAddr(t)
		var log strings.Builder // read only once the process has exited
		var logMu sync.Mutex
		cmd := exec.Command(bin, "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, fmt.Sprintf("data%d", attempt)),
			"--web.listen-address="+addr, "--log.level=warn")
		cmd.Stdout, cmd.Stderr = lockedLog{&logMu, &log}, lockedLog{&logMu, &log}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		p := &prometheus{url: "http://" + addr}
		if p.waitReady(exited, 15*time.Second) {
			t.Cleanup(func() {
				cmd.Process.Signal(syscall.SIGTERM)
				select {
				case <-exited:
				case <-time.After(5 * time.Second):
					cmd.Process.Kill()
					<-exited
				}
			})
			return p
		}
		cmd.Process.Kill()
		err := <-exited
		if !strings.Contains(log.String(), "address already in use") {
			t.Fatalf("prometheus did not become ready: %v\n%s", err, log.String())
		}
	}
	t.Fatal("prometheus: no free port after 5 attempts")
	return nil
}

// waitReady polls /-/ready until it answers 200, the process exits or timeout passes.
func (p *prometheus) waitReady(exited chan error, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			exited <- err
			return false
		default:
		}
		if resp, err := http.Get(p.url + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return true
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}

// apiResponse is the envelope of Prometheus' HTTP API.
type apiResponse struct {
	Status    string          `json:"status"`
	ErrorType string          `json:"errorType"`
	Error     string          `json:"error"`
	Data      json.RawMessage `json:"data"`
}

func (p *prometheus) get(path string, params url.Values) (json.RawMessage, error) {
	resp, err := http.Get(p.url + path + "?" + params.Encode())
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var r apiResponse
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return nil, fmt.Errorf("GET %s: %d, not JSON: %v", path, resp.StatusCode, err)
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("%s: %s", r.ErrorType, r.Error)
	}
	return r.Data, nil
}

// count runs expr as an instant query and returns how many series it returned.
func (p *prometheus) count(expr string) (int, error) {
	n, _, err := p.query(expr)
	return n, err
}

// query runs expr as an instant query and returns how many series it returned and
// how many of them have a value other than 0 and NaN.
func (p *prometheus) query(expr string) (series, nonZero int, err error) {
	data, err := p.get("/api/v1/query", url.Values{"query": {expr}})
	if err != nil {
		return 0, 0, err
	}
	var d struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Value [2]any `json:"value"` // [time, "value"]
		} `json:"result"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		return 0, 0, err
	}
	if d.ResultType != "vector" {
		return 0, 0, fmt.Errorf("result type %s, want vector", d.ResultType)
	}
	for _, r := range d.Result {
		if v, _ := r.Value[1].(string); v != "0" && v != "NaN" {
			nonZero++
		}
	}
	return len(d.Result), nonZero, nil
}

// labelValues returns the values of label on series matching selector.
func (p *prometheus) labelValues(label, selector string) ([]string, error) {
	data, err := p.get("/api/v1/label/"+label+"/values", url.Values{"match[]": {selector}})
	if err != nil {
		return nil, err
	}
	var values []string
	return values, json.Unmarshal(data, &values)
}

// checkRules asserts that Prometheus loaded every rule of alerts.yml and evaluated
// each without an error.
func (p *prometheus) checkRules(t *testing.T) {
	t.Helper()
	var d struct {
		Groups []struct {
			Rules []struct {
				Name, Health, LastError string
			}
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		data, err := p.get("/api/v1/rules", nil)
		if err != nil {
			t.Fatalf("GET /api/v1/rules: %v", err)
		}
		if err := json.Unmarshal(data, &d); err != nil {
			t.Fatal(err)
		}
		n, bad := 0, []string(nil)
		for _, g := range d.Groups {
			for _, r := range g.Rules {
				n++
				if r.Health != "ok" {
					bad = append(bad, fmt.Sprintf("%s: %s %s", r.Name, r.Health, r.LastError))
				}
			}
		}
		if n > 0 && len(bad) == 0 {
			t.Logf("prometheus evaluated all %d alert rules of alerts.yml against edge without error", n)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("alert rules: %d loaded, not healthy: %v", n, bad)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// lockedLog lets a child's stdout and stderr write to one builder.
type lockedLog struct {
	mu *sync.Mutex
	b  *strings.Builder
}

func (l lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// freeAddr returns a loopback address nothing listens on (just closed).
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// lookPath finds a program the test runs, or fails with how to install it.
func lookPath(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if errors.Is(err, exec.ErrNotFound) {
		t.Fatalf("%s not found: run 'scripts/ensure-deps prometheus' (or 'sudo apt-get install -y prometheus') and retry", name)
	}
	if err != nil {
		t.Fatal(err)
	}
	return p
}
