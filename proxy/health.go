package proxy

import (
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edge-gw/edge/config"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
)

// Active health checks (issue 5).
//
// The verdicts live in *health, keyed by server address in the registry, so they
// survive reloads (upstream.go). The checkers that reach them live here, outside
// snapshots too: a checker is keyed by what it checks and how (upstream label,
// address, health_check settings) and shared by every snapshot that wants it by
// reference count. A snapshot takes its checkers when it becomes current (a start
// hook) and gives them back when retired, so a reload that keeps a check keeps its
// goroutine (no restart, no double probing), a reload that drops it stops it, and
// `edge -check` (which never starts a snapshot) starts none.

// healthState runs the active health checkers. Safe for concurrent use.
type healthState struct {
	checks *prometheus.CounterVec // edge_health_checks_total{upstream,server,result}

	mu        sync.Mutex
	checkers  map[checkKey]*checker
	labelRefs map[[2]string]int // checkers per {upstream, server} label pair
	wg        sync.WaitGroup    // running checker goroutines
	running   atomic.Int32      // how many (for tests and GET /upstreams)
}

// checkKey identifies one checker. config.HealthCheck is plain comparable data.
type checkKey struct {
	upstream string // label: upstream name, or "cells/cell"
	h        *health
	hc       config.HealthCheck
}

// checker is one goroutine probing one address.
type checker struct {
	key        checkKey
	refs       int  // snapshots holding it; guarded by healthState.mu
	stopped    bool // guarded by healthState.mu
	stop       chan struct{}
	pass, fail prometheus.Counter
}

func newHealthState() *healthState {
	return &healthState{
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_health_checks_total", Help: "Active health check probes, by upstream (cells/cell for cells), server and result (pass, fail).",
		}, []string{"upstream", "server", "result"}),
		checkers:  map[checkKey]*checker{},
		labelRefs: map[[2]string]int{},
	}
}

// buildHealth prepares s's health checks and retry counters. It starts nothing:
// the checkers start in a start hook, when s becomes current.
func (p *Proxy) buildHealth(s *Snapshot) {
	cst := p.cellState
	var keys []checkKey
	seen := map[checkKey]bool{}
	add := func(name string, pl *pool, hc *config.HealthCheck) {
		if hc == nil {
			return
		}
		for _, srv := range pl.servers {
			k := checkKey{upstream: name, h: srv.health, hc: *hc}
			if !seen[k] {
				seen[k] = true
				keys = append(keys, k)
			}
		}
	}
	for _, u := range s.Config.Upstreams {
		pl := s.pools[u.Name]
		if pl == nil {
			continue
		}
		if pl.retries == nil {
			pl.retries = cst.retries.WithLabelValues(u.Name)
		}
		add(u.Name, pl, u.HealthCheck)
	}
	for _, cc := range s.Config.Cells {
		for _, c := range s.cells[cc.Name].cells {
			add(c.pool.name, c.pool, cc.HealthCheck)
		}
	}
	var held []*checker
	s.starts = append(s.starts, func() {
		held = cst.health.acquire(keys)
		cst.retainMetrics(s)
	})
	s.stops = append(s.stops, func() {
		cst.health.release(held)
		held = nil
	})
}

// acquire returns a checker for each key, starting those not yet running.
func (hs *healthState) acquire(keys []checkKey) []*checker {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	out := make([]*checker, 0, len(keys))
	for _, k := range keys {
		c := hs.checkers[k]
		if c == nil {
			c = &checker{key: k, stop: make(chan struct{}),
				pass: hs.checks.WithLabelValues(k.upstream, k.h.addr, "pass"),
				fail: hs.checks.WithLabelValues(k.upstream, k.h.addr, "fail")}
			hs.labelRefs[[2]string{k.upstream, k.h.addr}]++
			hs.checkers[k] = c
			k.h.checkers++
			hs.wg.Add(1)
			go hs.run(c)
		}
		c.refs++
		out = append(out, c)
	}
	return out
}

// release gives checkers back; one no snapshot holds stops. An address no checker
// watches any more forgets the active verdict: it would never be revised.
func (hs *healthState) release(cs []*checker) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	for _, c := range cs {
		if c.refs--; c.refs > 0 {
			continue
		}
		k := c.key
		delete(hs.checkers, k)
		c.stopped = true
		close(c.stop)
		if k.h.checkers--; k.h.checkers == 0 {
			k.h.activeDown.Store(false)
		}
		lbl := [2]string{k.upstream, k.h.addr}
		if hs.labelRefs[lbl]--; hs.labelRefs[lbl] <= 0 {
			delete(hs.labelRefs, lbl)
			hs.checks.DeleteLabelValues(k.upstream, k.h.addr, "pass")
			hs.checks.DeleteLabelValues(k.upstream, k.h.addr, "fail")
		}
	}
}

// checking reports whether an active check watches h.
func (hs *healthState) checking(h *health) bool {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	return h.checkers > 0
}

// run probes at once, then every interval, until stopped. A probe is a GET of the
// check's path on a connection of its own (Connection: close): it never competes
// with traffic for the server's pool, so a busy pool does not look like a dead
// server, and nothing of it lingers after the checker stops. It passes on a 2xx
// or 3xx answer within the timeout. `fall` failures in a row mark the server down,
// `rise` passes in a row up again; a pass also ends a passive cool-off (as Envoy's
// successful_active_health_check_uneject_host), since the check proves the server
// reachable.
func (hs *healthState) run(c *checker) {
	hs.running.Add(1)
	defer hs.wg.Done()
	defer hs.running.Add(-1)
	k := c.key
	timeout := k.hc.Timeout
	cl := &fasthttp.HostClient{
		Addr: k.h.addr,
		Dial: func(addr string) (net.Conn, error) {
			return net.DialTimeout("tcp", addr, timeout)
		},
		ReadTimeout:               timeout,
		WriteTimeout:              timeout,
		MaxResponseBodySize:       1 << 20,
		MaxIdemponentCallAttempts: 1,
		NoDefaultUserAgentHeader:  true,
		DisablePathNormalizing:    true,
	}
	req, resp := &fasthttp.Request{}, &fasthttp.Response{}
	req.SetRequestURI(k.hc.Path)
	req.Header.SetHost(k.h.addr)
	req.Header.SetUserAgent("edge-health-check")
	req.SetConnectionClose()
	tick := time.NewTicker(k.hc.Interval)
	defer tick.Stop()
	var passes, fails int
	for {
		err := cl.DoTimeout(req, resp, timeout)
		code := resp.StatusCode()
		ok := err == nil && code >= 200 && code < 400
		hs.mu.Lock()
		if c.stopped { // a late verdict must not outlive release's reset
			hs.mu.Unlock()
			return
		}
		if ok {
			passes, fails = passes+1, 0
			c.pass.Inc()
			if k.h.activeDown.Load() && passes >= k.hc.Rise {
				k.h.activeDown.Store(false)
			}
			k.h.success()
		} else {
			passes, fails = 0, fails+1
			c.fail.Inc()
			if !k.h.activeDown.Load() && fails >= k.hc.Fall {
				k.h.activeDown.Store(true)
			}
		}
		hs.mu.Unlock()
		select {
		case <-c.stop:
			return
		case <-tick.C:
		}
	}
}

// upCollector exports edge_upstream_up from the current snapshot's pools at
// scrape time, so the gauge never lags the health state and needs no cleanup
// when servers leave the config.
type upCollector struct{ p *Proxy }

var upDesc = prometheus.NewDesc("edge_upstream_up",
	"1 when the server gets traffic (no failed active check, no passive cool-off), else 0; by upstream (cells/cell for cells) and server.",
	[]string{"upstream", "server"}, nil)

func (c *upCollector) Describe(ch chan<- *prometheus.Desc) { ch <- upDesc }

func (c *upCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.p.snap.Load()
	if s == nil {
		return
	}
	seen := map[[2]string]bool{}
	s.eachPool(func(pl *pool) {
		for _, srv := range pl.servers {
			lbl := [2]string{pl.name, srv.addr}
			if seen[lbl] {
				continue
			}
			seen[lbl] = true
			v := 0.0
			if srv.health.up() {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(upDesc, prometheus.GaugeValue, v, pl.name, srv.addr)
		}
	})
}

// eachPool calls f for the upstream pools in config order, then the pools of
// every cell.
func (s *Snapshot) eachPool(f func(*pool)) {
	for _, u := range s.Config.Upstreams {
		if pl := s.pools[u.Name]; pl != nil {
			f(pl)
		}
	}
	for _, cc := range s.Config.Cells {
		if g := s.cells[cc.Name]; g != nil {
			for _, c := range g.cells {
				f(c.pool)
			}
		}
	}
}
