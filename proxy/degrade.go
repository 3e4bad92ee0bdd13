package proxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edge-gw/edge/admin"
	"github.com/edge-gw/edge/config"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
)

// Degrade, isolate, break (issue 10): kill switches, bulkheads and priority
// shedding per route (this file); circuit breakers and bulkheads per upstream pool
// (breaker.go). Every refusal answers the route's fallback block with Retry-After
// and never touches the upstream.
//
// State that must outlive a config lives in degradeState, keyed by name: a route's
// switch and in-flight count (routeGuard), a pool's breaker and in-flight count.
// A snapshot's route holds a *guard: the long-lived routeGuard plus the bounds of
// that config.

// Why a request was shed: the reason label of edge_shed_total.
type shedReason uint8

const (
	shedDegraded shedReason = iota // the route's kill switch is on
	shedBulkhead                   // the route's or the upstream's max_inflight is reached
	shedOverload                   // the edge has too many requests in flight for the route's priority
	shedBreaker                    // the upstream's (or cell's) circuit breaker is open
	numShedReasons
)

var shedReasonNames = [numShedReasons]string{"degraded", "bulkhead", "overload", "breaker"}

// Retry-After of a fallback when nothing better is known: a switch without ttl
// (an operator will turn it off; clients should not hammer until then), and a full
// bulkhead or an overloaded edge (a second is long for a request in flight).
const (
	degradedRetryAfter = 30 * time.Second
	busyRetryAfter     = time.Second
)

// DegradeStateFile is the file in state_dir that keeps the kill switches.
const DegradeStateFile = "degrade.json"

// Switch is a route's kill switch as the admin API and the state file show it.
type Switch struct {
	Route  string    `json:"route"`
	On     bool      `json:"on"`
	Reason string    `json:"reason,omitempty"`
	By     string    `json:"by,omitempty"`   // who turned it on: the admin call's "by", or its peer address
	Since  time.Time `json:"since,omitzero"` // when it was last changed
	Until  time.Time `json:"until,omitzero"` // when it turns itself off; zero: never
}

// active reports whether the switch degrades its route at now.
func (sw Switch) active(now time.Time) bool {
	return sw.On && (sw.Until.IsZero() || now.Before(sw.Until))
}

// Errors of SetDegraded and SetSwitch.
var (
	ErrBadSwitch  = errors.New("bad switch")
	ErrNotStarted = errors.New("no config applied yet")
)

// maxSwitchReason bounds a switch's reason and by, which the state file keeps.
const maxSwitchReason = 1024

// routeGuard is what outlives snapshots for one route name: its switch as the hot
// path reads it, its requests in flight and its shed counters.
type routeGuard struct {
	name     string
	degraded atomic.Bool
	until    atomic.Int64 // unix ns when the switch ends; 0: never
	inflight atomic.Int64
	shed     [numShedReasons]prometheus.Counter
}

// guard is a route's admission check in one snapshot.
type guard struct {
	rg       *routeGuard
	max      int64 // route max_inflight; 0: unbounded
	shedAt   int64 // in-flight bound of the route's priority; 0: no overload block
	fallback *answer
	ownRetry bool // the fallback block sets Retry-After itself
	cached   bool // the route has a cache block (see refuseForward)
}

// degradeState is the feature's long-lived state (created by initDegrade in New).
type degradeState struct {
	shed        *prometheus.CounterVec // edge_shed_total{route,reason}
	transitions *prometheus.CounterVec // edge_breaker_transitions_total{upstream,to}

	mu       sync.Mutex
	loaded   bool              // the state file was read
	switches map[string]Switch // switches that are on, by route; what the file holds
	guards   map[string]*routeGuard
	breakers map[string]*breakerEntry // by pool name (breaker.go)
	poolIn   map[string]*atomic.Int64 // in-flight requests by pool name (breaker.go)
	onChange []func(Switch)
}

// initDegrade creates the feature's long-lived state and registers its metrics.
func (p *Proxy) initDegrade() {
	st := &degradeState{
		shed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_shed_total", Help: "Requests answered with the route's fallback instead of being served, by route and reason (degraded, bulkhead, overload, breaker).",
		}, []string{"route", "reason"}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_breaker_transitions_total", Help: "Circuit breaker state changes, by upstream (cells/cell for cells) and new state (closed, half_open, open).",
		}, []string{"upstream", "to"}),
		switches: map[string]Switch{},
		guards:   map[string]*routeGuard{},
		breakers: map[string]*breakerEntry{},
		poolIn:   map[string]*atomic.Int64{},
	}
	p.metrics.Reg.MustRegister(st.shed, st.transitions, &degradeCollector{p: p})
	p.degradeState = st
}

// buildGuard sets rt.guard. The first build reads the switches saved in
// state_dir; a corrupt file fails the build, naming the file, rather than
// serving a route an operator switched off.
func (p *Proxy) buildGuard(s *Snapshot, prev *Snapshot, rt *route) error {
	st := p.degradeState
	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.loaded {
		sws, err := loadSwitches(s.Config.StateDir, time.Now())
		if err != nil {
			return err
		}
		st.loaded = true
		for _, sw := range sws {
			st.switches[sw.Route] = sw
			st.guardLocked(sw.Route).set(sw)
		}
	}
	g := &guard{rg: st.guardLocked(rt.name), max: int64(rt.cfg.MaxInflight), fallback: rt.fallback, cached: rt.cache != nil}
	for _, h := range rt.fallback.headers {
		if bytes.EqualFold(h[0], hdrRetryAfter) {
			g.ownRetry = true
		}
	}
	if o := s.Config.Overload; o != nil {
		g.shedAt = shedBound(o, rt.cfg.Priority)
	}
	rt.guard = g
	return nil
}

// shedBound is the in-flight count above which a route of priority prio is shed.
func shedBound(o *config.Overload, prio string) int64 {
	switch prio {
	case "low":
		return max(1, int64(o.Low*float64(o.MaxInflight)))
	case "core":
		return int64(o.MaxInflight)
	}
	return max(1, int64(o.Normal*float64(o.MaxInflight)))
}

// guardLocked returns the routeGuard of name, creating it. Caller holds st.mu.
func (st *degradeState) guardLocked(name string) *routeGuard {
	rg := st.guards[name]
	if rg == nil {
		rg = &routeGuard{name: name}
		for r := range rg.shed {
			rg.shed[r] = st.shed.WithLabelValues(name, shedReasonNames[r])
		}
		st.guards[name] = rg
	}
	return rg
}

// set makes sw the switch the hot path sees.
func (rg *routeGuard) set(sw Switch) {
	var until int64
	if !sw.Until.IsZero() {
		until = sw.Until.UnixNano()
	}
	rg.until.Store(until)
	rg.degraded.Store(sw.On)
}

// isDegraded reports whether the route's switch is on at now (unix ns).
func (rg *routeGuard) isDegraded(now int64) (bool, int64) {
	if !rg.degraded.Load() {
		return false, 0
	}
	u := rg.until.Load()
	return u == 0 || now < u, u
}

// retainGuards drops the guards (and their metric children) of routes that s no
// longer has and whose switch is off; run when s has become current.
func (st *degradeState) retainGuards(s *Snapshot) {
	keep := map[string]bool{}
	for _, rt := range s.routes {
		keep[rt.name] = true
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	for name := range st.guards {
		if _, on := st.switches[name]; !keep[name] && !on {
			delete(st.guards, name)
			st.shed.DeletePartialMatch(prometheus.Labels{"route": name})
		}
	}
}

// admit runs the route's admission checks in order: kill switch, overload
// shedding by priority, the route's bulkhead. When it returns false, ctx holds the
// fallback answer and nothing is held; when true, the caller must call release
// once the route has answered. Allocation-free.
func (p *Proxy) admit(ctx *fasthttp.RequestCtx, s *Snapshot, rt *route, sc *scratch) bool {
	g := rt.guard
	rg := g.rg
	if on, until := rg.isDegraded(ctx.Time().UnixNano()); on {
		retry := degradedRetryAfter
		if until != 0 {
			retry = time.Duration(until - ctx.Time().UnixNano())
		}
		g.refuse(ctx, shedDegraded, retry)
		return false
	}
	// Overload is judged on edge_inflight_requests, which Handler already counts
	// (this request included): one shared counter less to bounce between cores.
	if g.shedAt > 0 && p.metrics.inflight.Load() > g.shedAt {
		g.refuse(ctx, shedOverload, busyRetryAfter)
		return false
	}
	if n := rg.inflight.Add(1); g.max > 0 && n > g.max {
		rg.inflight.Add(-1)
		g.refuse(ctx, shedBulkhead, busyRetryAfter)
		return false
	}
	return true
}

// release gives back what admit took.
func (p *Proxy) release(rt *route) {
	rt.guard.rg.inflight.Add(-1)
}

// refuse writes the route's fallback with Retry-After (whole seconds, at least 1,
// unless the fallback block sets its own) and counts the reason.
func (g *guard) refuse(ctx *fasthttp.RequestCtx, why shedReason, retry time.Duration) {
	g.fallback.write(ctx)
	if !g.ownRetry {
		setInt(&ctx.Response.Header, hdrRetryAfter, ceilSeconds(retry))
	}
	g.rg.shed[why].Inc()
}

// SetDegraded turns route's kill switch on or off, at once, on this node: until
// (zero: no end) is when an on switch turns itself off; reason is free text. The
// change is saved in state_dir before it is made, so it survives reloads and
// restarts; when the save fails nothing changes and the error says why. The route
// need not be in the current config (a cluster peer may know it first): the switch
// applies whenever a route of that name exists.
//
// It is how switches made on another edge node arrive: it does not call the
// OnDegradeChange callbacks, so a change is never echoed back. Safe for concurrent
// use.
func (p *Proxy) SetDegraded(route string, on bool, reason string, until time.Time) error {
	return p.setSwitch(Switch{Route: route, On: on, Reason: reason, Until: until}, false)
}

// OnDegradeChange registers f, called after every switch change made through the
// admin API (POST /routes/{name}/degrade) with the new switch (On false when
// turned off). f runs on the admin request's goroutine after the change is saved
// and applied; it must not block. The cluster uses it to tell the other nodes.
func (p *Proxy) OnDegradeChange(f func(Switch)) {
	st := p.degradeState
	st.mu.Lock()
	st.onChange = append(st.onChange, f)
	st.mu.Unlock()
}

// Degraded returns the switches that are on now, sorted by route: the state a
// joining cluster node needs.
func (p *Proxy) Degraded() []Switch {
	st := p.degradeState
	now := time.Now()
	st.mu.Lock()
	defer st.mu.Unlock()
	out := make([]Switch, 0, len(st.switches))
	for _, sw := range st.switches {
		if sw.active(now) {
			out = append(out, sw)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Route < out[j].Route })
	return out
}

func (p *Proxy) setSwitch(sw Switch, notify bool) error {
	if !validRouteName(sw.Route) {
		return fmt.Errorf("route name %q: %w", sw.Route, ErrBadSwitch)
	}
	if len(sw.Reason) > maxSwitchReason || len(sw.By) > maxSwitchReason {
		return fmt.Errorf("reason or by longer than %d bytes: %w", maxSwitchReason, ErrBadSwitch)
	}
	s := p.snap.Load()
	if s == nil {
		return ErrNotStarted
	}
	now := time.Now()
	sw.Since = now
	if !sw.On || !sw.active(now) { // an on switch that has already ended is off
		sw = Switch{Route: sw.Route, Since: now}
	}
	st := p.degradeState
	st.mu.Lock()
	next := make([]Switch, 0, len(st.switches)+1)
	for name, old := range st.switches {
		if name != sw.Route && old.active(now) {
			next = append(next, old)
		}
	}
	if sw.On {
		next = append(next, sw)
	}
	if err := saveSwitches(s.Config.StateDir, next); err != nil {
		st.mu.Unlock()
		return err
	}
	st.switches = make(map[string]Switch, len(next))
	for _, x := range next {
		st.switches[x.Route] = x
	}
	st.guardLocked(sw.Route).set(sw)
	var fs []func(Switch)
	if notify {
		fs = append(fs, st.onChange...)
	}
	st.mu.Unlock()
	slog.Default().Info("degrade: switch changed", "route", sw.Route, "on", sw.On, "reason", sw.Reason,
		"by", sw.By, "until", sw.Until)
	for _, f := range fs {
		f(sw)
	}
	return nil
}

func validRouteName(s string) bool {
	if s == "" || len(s) > 256 {
		return false
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '-' || ch == '_') {
			return false
		}
	}
	return true
}

// The state file: {"version":1,"switches":[…]} with the switches that are on.
type switchDoc struct {
	Version  int      `json:"version"`
	Switches []Switch `json:"switches"`
}

// loadSwitches reads the switches saved in dir, dropping those ended at now. A
// missing file means none.
func loadSwitches(dir string, now time.Time) ([]Switch, error) {
	path := filepath.Join(dir, DegradeStateFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("degrade: cannot read state file: %w", err)
	}
	var doc switchDoc
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("degrade: cannot parse state file %q: %w", path, err)
	}
	if doc.Version != 1 {
		return nil, fmt.Errorf("degrade: cannot parse state file %q: version %d, want 1", path, doc.Version)
	}
	out := doc.Switches[:0]
	for _, sw := range doc.Switches {
		if !validRouteName(sw.Route) {
			return nil, fmt.Errorf("degrade: cannot parse state file %q: bad route name %q", path, sw.Route)
		}
		if sw.active(now) {
			out = append(out, sw)
		}
	}
	return out, nil
}

// saveSwitches replaces the state file atomically: a temp file next to it,
// synced, renamed over it, and the directory synced, so a crash leaves the old or
// the new content, never a mix.
func saveSwitches(dir string, sws []Switch) (err error) {
	sort.Slice(sws, func(i, j int) bool { return sws[i].Route < sws[j].Route })
	data, err := json.MarshalIndent(switchDoc{Version: 1, Switches: sws}, "", "  ")
	if err != nil {
		return fmt.Errorf("degrade: cannot encode switches: %w", err)
	}
	data = append(data, '\n')
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("degrade: cannot create state_dir: %w", err)
	}
	path := filepath.Join(dir, DegradeStateFile)
	f, err := os.CreateTemp(dir, "."+DegradeStateFile+".tmp-*")
	if err != nil {
		return fmt.Errorf("degrade: cannot create temp file for %q: %w", path, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("degrade: cannot write %q: %w", f.Name(), err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("degrade: cannot sync %q: %w", f.Name(), err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("degrade: cannot close %q: %w", f.Name(), err)
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("degrade: cannot replace %q: %w", path, err)
	}
	if d, derr := os.Open(dir); derr == nil {
		if serr := d.Sync(); serr != nil && !strings.Contains(serr.Error(), "invalid argument") {
			slog.Default().Warn("degrade: cannot sync state_dir", "dir", dir, "error", serr)
		}
		d.Close()
	}
	return nil
}

// adminDegrade registers GET /routes and POST /routes/{name}/degrade.
func (p *Proxy) adminDegrade(api *admin.API) {
	api.Handle("GET /routes", p.adminRoutes)
	api.Handle("POST /routes/{name}/degrade", p.adminSetDegrade)
}

// routeInfo is one route in GET /routes.
type routeInfo struct {
	Name        string  `json:"name"`
	Target      string  `json:"target"` // "upstream NAME", "cells NAME", "seckill" or "respond"
	Priority    string  `json:"priority"`
	MaxInflight int     `json:"max_inflight"` // 0: unbounded
	Inflight    int64   `json:"inflight"`
	Degraded    bool    `json:"degraded"`
	Switch      *Switch `json:"switch,omitempty"`  // set while degraded: reason, by, since, until
	ShedAt      int64   `json:"shed_at,omitempty"` // in-flight bound of its priority (overload block)
}

func (p *Proxy) adminRoutes(w http.ResponseWriter, r *http.Request) {
	s := p.snap.Load()
	out := []routeInfo{}
	if s != nil {
		now := time.Now()
		st := p.degradeState
		st.mu.Lock()
		for _, rt := range s.routes {
			ri := routeInfo{Name: rt.name, Target: routeTarget(rt.cfg), Priority: rt.cfg.Priority, MaxInflight: rt.cfg.MaxInflight}
			if g := rt.guard; g != nil {
				ri.Inflight, ri.ShedAt = g.rg.inflight.Load(), g.shedAt
			}
			if sw, ok := st.switches[rt.name]; ok && sw.active(now) {
				ri.Degraded, ri.Switch = true, &sw
			}
			out = append(out, ri)
		}
		st.mu.Unlock()
	}
	admin.JSON(w, http.StatusOK, map[string]any{"routes": out})
}

func routeTarget(rc *config.Route) string {
	switch {
	case rc.Upstream != "":
		return "upstream " + rc.Upstream
	case rc.Cells != "":
		return "cells " + rc.Cells
	case rc.Seckill:
		return "seckill"
	}
	return "respond"
}

// degradeRequest is the body of POST /routes/{name}/degrade.
type degradeRequest struct {
	On     *bool  `json:"on"`
	Reason string `json:"reason"`
	TTL    string `json:"ttl"`
	By     string `json:"by"`
}

func (p *Proxy) adminSetDegrade(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	s := p.snap.Load()
	known := false
	if s != nil {
		for _, rt := range s.routes {
			known = known || rt.name == name
		}
	}
	if !known {
		admin.JSON(w, http.StatusNotFound, map[string]string{"error": "no_route",
			"detail": "the running config has no route " + fmt.Sprintf("%q", name)})
		return
	}
	var req degradeRequest
	if !admin.Decode(w, r, &req) {
		return
	}
	if req.On == nil {
		badRequest(w, "bad_switch", `give "on": true or false`)
		return
	}
	sw := Switch{Route: name, On: *req.On, Reason: req.Reason, By: req.By}
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 {
			badRequest(w, "bad_ttl", fmt.Sprintf("ttl %q: want a positive Go duration like \"10m\"; leave it out for no end", req.TTL))
			return
		}
		if !sw.On {
			badRequest(w, "bad_ttl", `ttl only goes with "on": true`)
			return
		}
		sw.Until = time.Now().Add(d)
	}
	if len(req.Reason) > maxSwitchReason || len(req.By) > maxSwitchReason {
		badRequest(w, "bad_reason", fmt.Sprintf("reason and by must be at most %d bytes", maxSwitchReason))
		return
	}
	if sw.By == "" {
		sw.By = r.RemoteAddr
	}
	if err := p.setSwitch(sw, true); err != nil {
		slog.Default().Error("degrade: switch not changed", "route", name, "error", err)
		admin.JSON(w, http.StatusInternalServerError, map[string]string{"error": "state_write_failed",
			"detail": "the switch could not be saved to state_dir and was not changed; see the edge log"})
		return
	}
	st := p.degradeState
	st.mu.Lock()
	cur, on := st.switches[name]
	st.mu.Unlock()
	if !on {
		cur = Switch{Route: name, Since: time.Now()}
	}
	admin.JSON(w, http.StatusOK, cur)
}

// degradeCollector reports, at scrape time, edge_route_degraded and
// edge_route_inflight per route of the current snapshot, and edge_breaker_state and
// edge_upstream_inflight per guarded pool (breaker.go): always current, and no
// series left behind when a route or pool goes.
type degradeCollector struct{ p *Proxy }

var (
	degradedDesc = prometheus.NewDesc("edge_route_degraded",
		"1 while the route's kill switch is on (it answers its fallback), else 0.", []string{"route"}, nil)
	routeInflightDesc = prometheus.NewDesc("edge_route_inflight",
		"Requests of the route being served now (after admission).", []string{"route"}, nil)
)

func (c *degradeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- degradedDesc
	ch <- routeInflightDesc
	ch <- breakerStateDesc
	ch <- poolInflightDesc
}

func (c *degradeCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.p.snap.Load()
	if s == nil {
		return
	}
	now := time.Now().UnixNano()
	for _, rt := range s.routes {
		if rt.guard == nil {
			continue
		}
		v := 0.0
		if on, _ := rt.guard.rg.isDegraded(now); on {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(degradedDesc, prometheus.GaugeValue, v, rt.name)
		ch <- prometheus.MustNewConstMetric(routeInflightDesc, prometheus.GaugeValue, float64(rt.guard.rg.inflight.Load()), rt.name)
	}
	collectPools(s, ch)
}
