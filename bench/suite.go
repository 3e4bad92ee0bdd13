package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

const (
	adminToken    = "bench-admin-token"
	seckillSecret = "bench-seckill-secret-0123456789abcdef0123"
	soldOutItem   = 2
	saleItem      = 1
)

// scenario is one row of the report: the same requests sent to edge and to nginx.
type scenario struct {
	name, desc string
	edgeOnly   bool
	needsRedis bool
	method     string
	path       string
	headers    []string
	users      string // IDs spec for {user}
	items      string // IDs spec for {item}
	edge       Expect // what a correct edge answer is
	nginx      Expect
	share      float64 // matching answers needed, as a fraction
	// edgeHCL returns the scenario's blocks of edge.hcl (after the shared ones).
	edgeHCL func(e *env) string
	// setup prepares a started edge (e.g. stocks a sale); nil: nothing.
	setup func(e *env, adminAddr string) error
	// ext makes it a TLS scenario, measured by runExternal (tls.go); nil: plain HTTP
	// with bench's own client.
	ext *extScenario
	// l4 makes it an L4 scenario, measured by runL4 (l4.go); nil: HTTP.
	l4 *l4Scenario
}

var scenarios = []*scenario{
	{
		name: "pass", desc: "proxy GET to the origin (2 KB JSON), 100k item paths",
		path: "/pass/item/{item}", items: "1-100000",
		edge: Expect{Status: 200}, nginx: Expect{Status: 200}, share: 0.99,
		edgeHCL: func(e *env) string {
			return `route "pass" {
  match { path = "/pass/" }
  upstream = "origin"
}
`
		},
	},
	{
		name: "cache_hit", desc: "GET of 100 cached items (origin says max-age=60)",
		path: "/cache/item/{item}", items: "1-100",
		edge:  Expect{Status: 200, Header: "X-Cache", Value: "HIT"},
		nginx: Expect{Status: 200, Header: "X-Cache", Value: "HIT"}, share: 0.99,
		edgeHCL: func(e *env) string {
			return `route "cache" {
  match { path = "/cache/" }
  upstream = "origin"
  cache {
    ttl = "60s"
  }
}
`
		},
	},
	{
		name: "cache_hit_gzip", desc: "GET of 100 cached 16 KB JSON pages, gzip asked for (edge compresses each entry once; nginx gzips every hit)",
		path: "/gzcache/item/{item}", items: "1-100", headers: []string{"Accept-Encoding: gzip"},
		edge:  Expect{Status: 200, Header: "Content-Encoding", Value: "gzip"},
		nginx: Expect{Status: 200, Header: "Content-Encoding", Value: "gzip"}, share: 0.99,
		edgeHCL: func(e *env) string {
			return `compression {
  types       = ["application/json"]
  min_size    = "1KB"
  gzip_level  = 5
}
route "gzcache" {
  match { path = "/gzcache/" }
  upstream = "origin"
  cache {
    ttl = "60s"
  }
}
`
		},
	},
	{
		name: "limit_reject", desc: "100 users over a 1r/m burst-1 limit per X-User-Id: 429",
		path: "/limit/item/{item}", headers: []string{"X-User-Id: u{user}"}, users: "1-100", items: "1-1000",
		edge: Expect{Status: 429}, nginx: Expect{Status: 429}, share: 0.95,
		edgeHCL: func(e *env) string {
			return `route "limit" {
  match { path = "/limit/" }
  upstream = "origin"
  limit "user" {
    key   = "header:X-User-Id"
    rate  = "1r/m"
    burst = 1
  }
}
`
		},
	},
	{
		name: "blacklist_reject", desc: "clients in a blacklisted /8 (X-Forwarded-For from a trusted peer): 403",
		path: "/ban/item/{item}", headers: []string{"X-Forwarded-For: 10.0.{item}.1"}, items: "1-250",
		edge: Expect{Status: 403}, nginx: Expect{Status: 403}, share: 0.99,
		edgeHCL: func(e *env) string {
			return `blacklist {
  ips = ["10.0.0.0/8"]
}
route "ban" {
  match { path = "/ban/" }
  upstream = "origin"
}
`
		},
	},
	{
		name: "cells", desc: "100k users hashed over 3 cells by X-User-Id",
		path: "/cell/item/{item}", headers: []string{"X-User-Id: u{user}"}, users: "1-100000", items: "1-1000",
		edge: Expect{Status: 200, Header: "X-Edge-Cell"}, nginx: Expect{Status: 200}, share: 0.99,
		edgeHCL: func(e *env) string {
			return fmt.Sprintf(`cells "shop" {
  key = "header:X-User-Id"
  cell "c1" { servers = ["127.0.0.1:%d"] }
  cell "c2" { servers = ["127.0.0.1:%d"] }
  cell "c3" { servers = ["127.0.0.1:%d"] }
}
route "cell" {
  match { path = "/cell/" }
  cells = "shop"
}
`, e.cellPorts[0], e.cellPorts[1], e.cellPorts[2])
		},
	},
	{
		name: "seckill_issue", desc: "POST /seckill/1/token, every request a new user (Redis store)",
		edgeOnly: true, needsRedis: true, method: "POST",
		path: fmt.Sprintf("/seckill/%d/token", saleItem), headers: []string{"X-User-Id: u{user}"}, users: "seq",
		edge: Expect{Status: 200}, share: 0.99,
		edgeHCL: seckillHCL,
		setup: func(e *env, admin string) error {
			return stock(admin, saleItem, 1_000_000_000)
		},
	},
	{
		name: "seckill_soldout", desc: "POST /seckill/2/token of a sold-out item, random users: 410",
		edgeOnly: true, needsRedis: true, method: "POST",
		path: fmt.Sprintf("/seckill/%d/token", soldOutItem), headers: []string{"X-User-Id: u{user}"}, users: "1-1000000",
		edge: Expect{Status: 410}, share: 0.99,
		edgeHCL: seckillHCL,
		setup: func(e *env, admin string) error {
			return stock(admin, soldOutItem, 1) // the warm-up takes the one unit
		},
	},
	{
		name: "waiting_poll", desc: "GET of a route behind a paused waiting room (Redis store) by 1,000 users in line: 202 with their place",
		edgeOnly: true, needsRedis: true,
		path: "/wait/item/{item}", headers: []string{"X-User-Id: u{user}"}, users: "1-1000", items: "1-100",
		edge: Expect{Status: 202}, share: 0.99,
		edgeHCL: func(e *env) string {
			return seckillHCL(e) + `route "wait" {
  match { path = "/wait/" }
  upstream = "origin"
}
waiting_room "bench" {
  routes     = ["wait"]
  key        = "header:X-User-Id"
  admit_rate = "1r/h"
  session    = "10m"
  store      = "redis"
  max_per_ip = 0 # every bench user comes from 127.0.0.1
}
`
		},
		setup: func(e *env, admin string) error {
			return adminPost(admin, "/waiting-rooms/bench", `{"paused":true}`)
		},
	},
}

// adminPost sends an authorised admin POST with a JSON body and expects 200.
func adminPost(admin, path, body string) error {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod("POST")
	req.SetRequestURI("http://" + admin + path)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	req.Header.SetContentType("application/json")
	req.SetBodyString(body)
	if err := fasthttp.DoTimeout(req, resp, 5*time.Second); err != nil {
		return fmt.Errorf("admin POST %s: %w", path, err)
	}
	if resp.StatusCode() != 200 {
		return fmt.Errorf("admin POST %s answered %s", path, describe(resp))
	}
	return nil
}

func seckillHCL(e *env) string {
	return fmt.Sprintf(`seckill {
  store     = "redis"
  redis { addrs = ["127.0.0.1:%d"] }
  secret    = %q
  token_ttl = "5m"
  user_key  = "header:X-User-Id"
  item_key  = "path:2"
}
route "seckill" {
  match {
    path    = "/seckill/"
    methods = ["POST"]
  }
  seckill = true
}
`, e.redisPort, seckillSecret)
}

// stock starts a sale of item with n units through the admin API.
func stock(admin string, item, n int) error {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod("PUT")
	req.SetRequestURI(fmt.Sprintf("http://%s/seckill/items/%d", admin, item))
	req.Header.Set("Authorization", "Bearer "+adminToken)
	req.Header.SetContentType("application/json")
	req.SetBodyString(fmt.Sprintf(`{"stock":%d}`, n))
	if err := fasthttp.DoTimeout(req, resp, 5*time.Second); err != nil {
		return fmt.Errorf("admin PUT /seckill/items/%d: %w", item, err)
	}
	if resp.StatusCode() != 200 {
		return fmt.Errorf("admin PUT /seckill/items/%d answered %s", item, describe(resp))
	}
	return nil
}

// env is the running world of one suite: the origin, nginx, Redis, and the edge
// binary that each scenario starts with its own config.
type env struct {
	dir       string
	edgeBin   string
	nginxBin  string
	origin    *proc
	nginx     *proc
	redis     *proc
	redisErr  string // why there is no Redis
	originPrt int
	cellPorts [3]int
	nginxPort int
	redisPort int
	tls       *tlsEnv // certificates and TLS nginx, made by the first TLS scenario
	l4        *l4Env  // origins, stream nginx and HAProxy, made by the first L4 scenario
	logf      func(string, ...any)

	mu   sync.Mutex
	edge *proc // the running edge, for close
}

// close stops every child; it may be called more than once, and from a signal handler.
func (e *env) close() {
	e.mu.Lock()
	defer e.mu.Unlock()
	procs := []*proc{e.edge, e.nginx, e.origin, e.redis}
	if e.tls != nil {
		procs = append(procs, e.tls.nginx)
	}
	for _, p := range procs {
		if p != nil {
			p.stop(syscall.SIGTERM)
		}
	}
	if e.l4 != nil {
		e.l4.close()
	}
}

// body is the origin's 2 KB JSON answer.
func body() []byte {
	b := []byte(`{"id":42,"name":"flash sale item","price":9900,"stock":100,"data":"`)
	for len(b) < 2048-2 {
		b = append(b, 'x')
	}
	return append(b, `"}`...)
}

// pageBody is a 16 KB JSON product list, the body of the compression scenario: a page
// size where compressing is worth it (a 2 KB body costs nginx little to gzip).
func pageBody() []byte {
	b := []byte(`{"items":[`)
	for i := 0; len(b) < 16<<10-64; i++ {
		if i > 0 {
			b = append(b, ',')
		}
		b = fmt.Appendf(b, `{"id":%d,"name":"flash sale item %d","price":%d,"stock":%d,"tags":["sale","limited"]}`, i, i, 9900+i%7*100, 100-i%50)
	}
	return append(b, "]}"...)
}

func (e *env) startNginx() error {
	ports := []*int{&e.originPrt, &e.cellPorts[0], &e.cellPorts[1], &e.cellPorts[2], &e.nginxPort}
	for _, p := range ports {
		v, err := freePort()
		if err != nil {
			return err
		}
		*p = v
	}
	// nginx workers drop root for nobody: they must reach these.
	os.Chmod(e.dir, 0o755)
	for _, d := range []string{"cache", "tmp", "logs"} {
		os.MkdirAll(filepath.Join(e.dir, d), 0o777)
		os.Chmod(filepath.Join(e.dir, d), 0o777)
	}
	if err := os.WriteFile(filepath.Join(e.dir, "body.json"), body(), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(e.dir, "page.json"), pageBody(), 0o644); err != nil {
		return err
	}
	origin := fmt.Sprintf(`worker_processes 1; pid %[1]s/origin.pid; error_log %[1]s/origin.err;
events { worker_connections 8192; }
http { access_log off; client_body_temp_path %[1]s/tmp; proxy_temp_path %[1]s/tmp;
  server {
    listen 127.0.0.1:%[2]d reuseport backlog=4096; listen 127.0.0.1:%[3]d; listen 127.0.0.1:%[4]d; listen 127.0.0.1:%[5]d;
    keepalive_requests 1000000;
    location / { default_type application/json; root %[1]s; try_files /body.json =404;
      add_header Cache-Control "max-age=60"; add_header X-Origin-Port $server_port; }
    location /gzcache/ { default_type application/json; root %[1]s; try_files /page.json =404;
      add_header Cache-Control "max-age=60"; }
  }
}
`, e.dir, e.originPrt, e.cellPorts[0], e.cellPorts[1], e.cellPorts[2])
	front := nginxConfig(e.dir, e.nginxPort, e.originPrt, e.cellPorts)
	for name, conf := range map[string]string{"origin.conf": origin, "nginx.conf": front} {
		if err := os.WriteFile(filepath.Join(e.dir, name), []byte(conf), 0o644); err != nil {
			return err
		}
	}
	var err error
	e.origin, err = startProc("origin nginx", filepath.Join(e.dir, "origin.log"),
		e.nginxBin, "-p", e.dir, "-c", filepath.Join(e.dir, "origin.conf"), "-e", filepath.Join(e.dir, "origin.err"), "-g", "daemon off;")
	if err != nil {
		return err
	}
	if err := e.origin.waitPort(fmt.Sprintf("127.0.0.1:%d", e.originPrt)); err != nil {
		return fmt.Errorf("%w (%s)", err, readTail(filepath.Join(e.dir, "origin.err")))
	}
	e.nginx, err = startProc("nginx", filepath.Join(e.dir, "nginx.log"),
		e.nginxBin, "-p", e.dir, "-c", filepath.Join(e.dir, "nginx.conf"), "-e", filepath.Join(e.dir, "nginx.err"), "-g", "daemon off;")
	if err != nil {
		return err
	}
	if err := e.nginx.waitPort(fmt.Sprintf("127.0.0.1:%d", e.nginxPort)); err != nil {
		return fmt.Errorf("%w (%s)", err, readTail(filepath.Join(e.dir, "nginx.err")))
	}
	return nil
}

// nginxConfig is the nginx that edge is measured against: the same features, the
// same origin. Keep it equivalent to the edge blocks in scenarios.
func nginxConfig(dir string, port, origin int, cells [3]int) string {
	return fmt.Sprintf(`worker_processes auto; pid %[1]s/nginx.pid; error_log %[1]s/nginx.err;
events { worker_connections 8192; }
http { access_log off; client_body_temp_path %[1]s/tmp; proxy_temp_path %[1]s/tmp;
  upstream origin { server 127.0.0.1:%[3]d; keepalive 256; }
  upstream cells { hash $http_x_user_id consistent;
    server 127.0.0.1:%[4]d; server 127.0.0.1:%[5]d; server 127.0.0.1:%[6]d; keepalive 256; }
  proxy_cache_path %[1]s/cache levels=1:2 keys_zone=c:64m max_size=1g inactive=10m use_temp_path=off;
  limit_req_zone $http_x_user_id zone=user:10m rate=1r/m;
  geo $http_x_forwarded_for $banned { default 0; 10.0.0.0/8 1; }
  server { listen 127.0.0.1:%[2]d reuseport backlog=4096; keepalive_requests 1000000;
    proxy_http_version 1.1; proxy_set_header Connection "";
    location /pass/ { proxy_pass http://origin; }
    location /cache/ { proxy_cache c; proxy_cache_valid 200 60s; proxy_cache_lock on;
      add_header X-Cache $upstream_cache_status; proxy_pass http://origin; }
    location /gzcache/ { proxy_cache c; proxy_cache_valid 200 60s; proxy_cache_lock on;
      gzip on; gzip_types application/json; gzip_min_length 1024; gzip_proxied any; gzip_comp_level 5;
      add_header X-Cache $upstream_cache_status; proxy_pass http://origin; }
    location /limit/ { limit_req zone=user burst=1 nodelay; limit_req_status 429; proxy_pass http://origin; }
    location /ban/ { if ($banned) { return 403; } proxy_pass http://origin; }
    location /cell/ { proxy_pass http://cells; }
  }
}
`, dir, port, origin, cells[0], cells[1], cells[2])
}

func readTail(path string) string {
	b, _ := os.ReadFile(path)
	return lastLines(b, 5)
}

func (e *env) startRedis(bin string) error {
	var err error
	for try := 0; try < 5; try++ {
		if e.redisPort, err = freePort(); err != nil {
			return err
		}
		e.redis, err = startProc("redis-server", filepath.Join(e.dir, "redis.log"), bin,
			"--port", fmt.Sprint(e.redisPort), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
			"--dir", e.dir)
		if err != nil {
			return err
		}
		if err = e.redis.waitPort(fmt.Sprintf("127.0.0.1:%d", e.redisPort)); err == nil {
			return nil
		}
		e.redis.stop(syscall.SIGTERM) // port taken meanwhile: try another
	}
	return err
}

// startEdge starts the edge binary with the scenario's config and keeps it as the
// running edge, which close stops.
func (e *env) startEdge(sc *scenario) (p *proc, addr, admin string, err error) {
	ports, err := freePorts(2)
	if err != nil {
		return nil, "", "", err
	}
	addr, admin = fmt.Sprintf("127.0.0.1:%d", ports[0]), fmt.Sprintf("127.0.0.1:%d", ports[1])
	hcl := fmt.Sprintf(`# written by bench for scenario %s
listen          = %q
trusted_proxies = ["127.0.0.1/32"]
state_dir       = %q
admin {
  listen = %q
  token  = %q
}
upstream "origin" {
  servers = ["127.0.0.1:%d"]
}
`, sc.name, addr, filepath.Join(e.dir, "state-"+sc.name), admin, adminToken, e.originPrt) + sc.edgeHCL(e)
	conf := filepath.Join(e.dir, "edge-"+sc.name+".hcl")
	if err := os.WriteFile(conf, []byte(hcl), 0o644); err != nil {
		return nil, "", "", err
	}
	p, err = startProc("edge", filepath.Join(e.dir, "edge-"+sc.name+".log"), e.edgeBin, "-config", conf)
	if err != nil {
		return nil, "", "", err
	}
	if err := p.waitPort(addr); err != nil {
		p.stop(syscall.SIGKILL)
		return nil, "", "", err
	}
	e.mu.Lock()
	e.edge = p
	e.mu.Unlock()
	return p, addr, admin, nil
}

// Settings are the knobs of one suite run.
type Settings struct {
	Duration time.Duration `json:"-"`
	Warmup   time.Duration `json:"-"`
	Seconds  float64       `json:"seconds_per_run"`
	WarmupS  float64       `json:"warmup_seconds"`
	Rounds   int           `json:"rounds"`
	Conns    int           `json:"connections"`
	Only     []string      `json:"only,omitempty"`
}

// sideRun accumulates one side's rounds of one scenario.
type sideRun struct {
	rounds   []*Result
	cpus     []float64 // CPU seconds of each round
	cpu      float64
	cpuKnown bool
}

func (s *sideRun) add(r *Result, cpu float64, ok bool) {
	s.rounds = append(s.rounds, r)
	s.cpus = append(s.cpus, cpu)
	s.cpu += cpu
	s.cpuKnown = ok && (s.cpuKnown || len(s.rounds) == 1)
}

// runScenario measures sc: warm-up, then rounds of edge, nginx, edge, nginx, …
func (e *env) runScenario(sc *scenario, st Settings, prog *Progress) ScenarioResult {
	if sc.ext != nil {
		return e.runExternal(sc, st, prog)
	}
	if sc.l4 != nil {
		return e.runL4(sc, st, prog)
	}
	out := ScenarioResult{Name: sc.name, Desc: sc.desc, EdgeOnly: sc.edgeOnly}
	invalid := func(why string) ScenarioResult {
		out.Edge = &Side{Target: "edge", Invalid: why, Expect: sc.edge.String()}
		if !sc.edgeOnly {
			out.Nginx = &Side{Target: "nginx", Invalid: "not run: " + why, Expect: sc.nginx.String()}
		}
		return out
	}
	if sc.needsRedis && e.redis == nil {
		return invalid("no redis-server: " + e.redisErr)
	}
	ep, addr, admin, err := e.startEdge(sc)
	if err != nil {
		return invalid("edge did not start with this scenario's config: " + err.Error())
	}
	defer ep.stop(syscall.SIGTERM)
	users, err := ParseIDs(orDefault(sc.users, "0"))
	if err != nil {
		panic("BUG: " + err.Error())
	}
	items, err := ParseIDs(orDefault(sc.items, "0"))
	if err != nil {
		panic("BUG: " + err.Error())
	}
	path, err := ParseTemplate(sc.path)
	if err != nil {
		panic("BUG: " + err.Error())
	}
	var hdrs []Header
	for _, h := range sc.headers {
		hh, err := ParseHeader(h)
		if err != nil {
			panic("BUG: " + err.Error())
		}
		hdrs = append(hdrs, hh)
	}
	load := func(target, addr string, exp Expect, d time.Duration, label string) *Result {
		prog.Label = label
		l := &Load{Addr: addr, Method: sc.method, Path: path, Headers: hdrs, Users: users, Items: items,
			Conns: st.Conns, Duration: d, Expect: exp, Progress: prog}
		r, err := l.Run()
		if err != nil {
			panic("BUG: " + err.Error())
		}
		return r
	}
	nginxAddr := fmt.Sprintf("127.0.0.1:%d", e.nginxPort)
	if sc.setup != nil {
		if err := sc.setup(e, admin); err != nil {
			// Show what the data path answers too, so the reason is concrete.
			r := load("edge", addr, sc.edge, 300*time.Millisecond, sc.name+" edge probe")
			why := "setup failed: " + err.Error()
			if r.Mismatch != "" {
				why += "; a request answered " + r.Mismatch
			}
			out.Edge = &Side{Target: "edge", Invalid: why, Expect: sc.edge.String(), Status: statusKeys(r.Status)}
			return out
		}
	}
	load("edge", addr, sc.edge, st.Warmup, sc.name+" edge warm-up ")
	if !sc.edgeOnly {
		load("nginx", nginxAddr, sc.nginx, st.Warmup, sc.name+" nginx warm-up")
	}
	// nginx's children are looked up at every sample: the cache manager and loader
	// come and go.
	edgePIDs := func() []int { return []int{ep.pid()} }
	nginxPIDs := func() []int { return withChildren(e.nginx.pid()) }
	measure := func(target, addr string, exp Expect, pids func() []int, run *sideRun, round int) {
		c0 := sampleCPU(pids())
		r := load(target, addr, exp, st.Duration, fmt.Sprintf("%s %-5s %d/%d", sc.name, target, round, st.Rounds))
		cpu, ok := sampleCPU(pids()).since(c0)
		run.add(r, cpu, ok)
		e.logf("  %-16s %-5s round %d: %s", sc.name, target, round, oneLine(r))
	}
	var edgeRun, nginxRun sideRun
	for round := 1; round <= st.Rounds; round++ {
		measure("edge", addr, sc.edge, edgePIDs, &edgeRun, round)
		if !sc.edgeOnly {
			measure("nginx", nginxAddr, sc.nginx, nginxPIDs, &nginxRun, round)
		}
	}
	out.Edge = summarize("edge", &edgeRun, sc.edge, sc.share)
	if !sc.edgeOnly {
		out.Nginx = summarize("nginx", &nginxRun, sc.nginx, sc.share)
		if out.Edge.Valid && out.Nginx.Valid {
			setRatios(&out, &edgeRun, &nginxRun)
		}
	}
	return out
}

// setRatios fills the edge/nginx ratios of out from the rounds, each the median of
// the per-round ratios: throughput, and requests per CPU-second of the server when
// both sides' CPU is known.
func setRatios(out *ScenarioResult, edge, nginx *sideRun) {
	var ratios, cpuRatios []float64
	for i := range min(len(edge.rounds), len(nginx.rounds)) {
		if n := nginx.rounds[i].RPS(); n > 0 {
			ratios = append(ratios, edge.rounds[i].RPS()/n)
		}
		if edge.cpuKnown && nginx.cpuKnown && edge.cpus[i] > 0 && nginx.cpus[i] > 0 && nginx.rounds[i].Requests > 0 {
			e := float64(edge.rounds[i].Requests) / edge.cpus[i]
			n := float64(nginx.rounds[i].Requests) / nginx.cpus[i]
			cpuRatios = append(cpuRatios, float64(int64(e/n*1000+0.5))/1000)
		}
	}
	out.RoundRatios = ratios
	out.Ratio = median(ratios)
	out.CPURoundRatios = cpuRatios
	out.CPURatio = median(cpuRatios)
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

func oneLine(r *Result) string {
	return fmt.Sprintf("%8.0f req/s  p50 %s  p99 %s  %d answers, %d errors, %.1f%% as expected",
		r.RPS(), fmtDur(r.Hist.Percentile(50)), fmtDur(r.Hist.Percentile(99)), r.Requests, r.Errors,
		100*float64(r.Matched)/float64(max(r.Requests, 1)))
}

func fmtDur(d time.Duration) string {
	return fmt.Sprintf("%.2fms", float64(d)/1e6)
}

// summarize turns a side's rounds into its report entry and judges whether its
// answers were the right ones.
func summarize(target string, s *sideRun, exp Expect, share float64) *Side {
	side := &Side{Target: target, Expect: exp.String()}
	hist := NewHistogram()
	status := map[int]int64{}
	var mismatch, firstErr string
	for _, r := range s.rounds {
		side.RoundsRPS = append(side.RoundsRPS, round1(r.RPS()))
		side.Requests += r.Requests
		side.Errors += r.Errors
		side.Matched += r.Matched
		hist.Merge(r.Hist)
		for k, v := range r.Status {
			status[k] += v
		}
		if mismatch == "" {
			mismatch = r.Mismatch
		}
		if firstErr == "" {
			firstErr = r.FirstErr
		}
	}
	side.Status = statusKeys(status)
	side.RPS = round1(median(side.RoundsRPS))
	side.P50 = ms(hist.Percentile(50))
	side.P90 = ms(hist.Percentile(90))
	side.P99 = ms(hist.Percentile(99))
	side.P999 = ms(hist.Percentile(99.9))
	if s.cpuKnown && side.Requests > 0 {
		v := float64(int64(s.cpu/float64(side.Requests)*1000*1e5+0.5)) / 1e5
		side.CPUPer1k = &v
		if s.cpu > 0 {
			r := round1(float64(side.Requests) / s.cpu)
			side.ReqPerCPU = &r
		}
	}
	total := side.Requests + side.Errors
	switch {
	case side.Requests == 0:
		side.Invalid = "no answers"
		if firstErr != "" {
			side.Invalid += ": " + firstErr
		}
	case float64(side.Errors) > 0.01*float64(total):
		side.Invalid = fmt.Sprintf("%d of %d requests failed: %s", side.Errors, total, firstErr)
	case float64(side.Matched) < share*float64(side.Requests):
		side.Invalid = fmt.Sprintf("expected %s on ≥%.0f%% of answers, got %.1f%% (statuses %s); sample: %s",
			exp, share*100, 100*float64(side.Matched)/float64(side.Requests), fmtStatus(side.Status), mismatch)
	default:
		side.Valid = true
	}
	return side
}

func ms(d time.Duration) float64 { return float64(int64(float64(d)/1e3+0.5)) / 1e3 }

func round1(v float64) float64 { return float64(int64(v*10+0.5)) / 10 }

func statusKeys(m map[int]int64) map[string]int64 {
	out := map[string]int64{}
	for k, v := range m {
		out[fmt.Sprint(k)] = v
	}
	return out
}

func fmtStatus(m map[string]int64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s×%d", k, m[k]))
	}
	return strings.Join(parts, " ")
}

// median returns the median of v (the mean of the middle two for even lengths), 0 for none.
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
