package proxy

import (
	"log/slog"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/edge-gw/edge/breaker"
	"github.com/edge-gw/edge/config"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
)

// Circuit breakers and bulkheads per upstream pool (issue 10; see degrade.go for
// the route side). An upstream's breaker block gives its pool one breaker; a cells
// block's breaker block gives each cell its own, so one failing cell does not cut
// off the users of the others. A pool's breaker is kept across reloads while its
// settings stay the same (keyed by pool name: "upstream" or "cells/cell"), like
// the pool's health; changed settings start a new, closed breaker.

// poolGuard is the bulkhead and breaker of one pool in one snapshot.
type poolGuard struct {
	name     string
	brk      *breaker.Breaker // nil: no breaker block
	inflight *atomic.Int64    // requests of the pool in flight; long-lived, by name
	max      int64            // upstream max_inflight; 0: unbounded
}

// breakerEntry is a long-lived breaker and the settings it was made from.
type breakerEntry struct {
	cfg breaker.Config
	b   *breaker.Breaker
}

// outcome is what one forward says about its pool, for the breaker.
type outcome uint8

const (
	outcomeNone   outcome = iota // nothing learnt: no server tried, or the local connection pool was full
	outcomeOK                    // an answer below 500
	outcomeFailed                // connect error, timeout, broken exchange or 5xx
)

// outcomeOf maps the failure of the last attempt to an outcome.
func outcomeOf(f failure) outcome {
	switch f {
	case failNone, failBusy: // failBusy: a full local pool says nothing about the server
		return outcomeNone
	}
	return outcomeFailed
}

func breakerConfig(b *config.Breaker) breaker.Config {
	return breaker.Config{Window: b.Window, MinRequests: b.MinRequests, FailureRatio: b.FailureRatio,
		SlowRatio: b.SlowRatio, SlowThreshold: b.SlowThreshold, CoolOff: b.CoolOff, Probes: b.Probes}
}

// buildDegrade attaches pool guards to the pools of s that have a breaker block or
// an upstream max_inflight, and registers the start hook that makes the
// snapshot's breakers the long-lived ones and forgets those of pools it dropped.
// It runs once per snapshot, after the cells are built.
func (p *Proxy) buildDegrade(s *Snapshot, prev *Snapshot) error {
	st := p.degradeState
	var guards []*poolGuard
	attach := func(pl *pool, bc *config.Breaker, maxInflight int) error {
		if pl == nil || (bc == nil && maxInflight == 0) {
			return nil
		}
		g := &poolGuard{name: pl.name, max: int64(maxInflight)}
		st.mu.Lock()
		defer st.mu.Unlock()
		if g.inflight = st.poolIn[pl.name]; g.inflight == nil {
			g.inflight = new(atomic.Int64)
			st.poolIn[pl.name] = g.inflight
		}
		if bc != nil {
			cfg := breakerConfig(bc)
			if e := st.breakers[pl.name]; e != nil && e.cfg == cfg {
				g.brk = e.b
			} else {
				b, err := breaker.New(cfg, st.onBreakerChange(pl.name))
				if err != nil {
					return err
				}
				g.brk = b
			}
		}
		pl.guard = g
		guards = append(guards, g)
		return nil
	}
	for _, u := range s.Config.Upstreams {
		if err := attach(s.pools[u.Name], u.Breaker, u.MaxInflight); err != nil {
			return err
		}
	}
	for _, cc := range s.Config.Cells {
		if grp := s.cells[cc.Name]; grp != nil {
			for _, c := range grp.cells {
				if err := attach(c.pool, cc.Breaker, 0); err != nil {
					return err
				}
			}
		}
	}
	s.starts = append(s.starts, func() {
		st.retainGuards(s)
		st.keepPools(guards)
	})
	return nil
}

// keepPools makes the breakers of guards the long-lived ones and forgets the
// breakers and counters of pools no longer guarded.
func (st *degradeState) keepPools(guards []*poolGuard) {
	st.mu.Lock()
	defer st.mu.Unlock()
	breakers := map[string]*breakerEntry{}
	counters := map[string]*atomic.Int64{}
	for _, g := range guards {
		counters[g.name] = g.inflight
		if g.brk != nil {
			breakers[g.name] = &breakerEntry{cfg: g.brk.Config(), b: g.brk}
		}
	}
	for name := range st.breakers {
		if breakers[name] == nil {
			st.transitions.DeletePartialMatch(prometheus.Labels{"upstream": name})
		}
	}
	st.breakers, st.poolIn = breakers, counters
}

// onBreakerChange returns the state-change callback of pool name's breaker: a log
// line and a count. It runs on the request that made the change, rarely.
func (st *degradeState) onBreakerChange(name string) func(from, to breaker.State, now time.Time) {
	return func(from, to breaker.State, now time.Time) {
		st.transitions.WithLabelValues(name, to.String()).Inc()
		slog.Default().Warn("breaker: state changed", "upstream", name, "from", from.String(), "to", to.String())
	}
}

// forwardGuarded is forward for a pool with a guard: the upstream's bulkhead, then
// its breaker, then send; the outcome feeds the breaker. A refused request gets
// its route's fallback at once. Allocation-free.
func (p *Proxy) forwardGuarded(ctx *fasthttp.RequestCtx, s *Snapshot, pl *pool, peer, client netip.Addr, sc *scratch) {
	g := pl.guard
	if n := g.inflight.Add(1); g.max > 0 && n > g.max {
		g.inflight.Add(-1)
		refuseForward(ctx, sc, shedBulkhead, busyRetryAfter)
		return
	}
	start := time.Now()
	if g.brk != nil && !g.brk.Allow(start) {
		g.inflight.Add(-1)
		refuseForward(ctx, sc, shedBreaker, g.brk.RetryIn(start))
		return
	}
	o := p.send(ctx, s, pl, peer, client, sc)
	g.inflight.Add(-1)
	if g.brk != nil && o != outcomeNone {
		now := time.Now()
		g.brk.Record(now, o == outcomeFailed, now.Sub(start))
	}
}

// defaultFallback answers for a forward that did not come through forwardRoute
// (which sets sc.guard); no such caller exists, but a nil must not crash.
var defaultFallback = newAnswer(config.DefaultFallback)

// hdrSurrogateControl with no-store keeps a fallback out of the response cache,
// whatever its status; the cache strips Surrogate-* before the client sees them.
var (
	hdrSurrogateControl = []byte("Surrogate-Control")
	noStore             = []byte("no-store")
)

// refuseForward writes the fallback of the request's route for why. On a cached
// route the fallback comes back to the cache as if from the origin, so it is
// marked no-store: a fallback of status 200 must never be served as content.
func refuseForward(ctx *fasthttp.RequestCtx, sc *scratch, why shedReason, retry time.Duration) {
	if g := sc.guard; g != nil {
		g.refuse(ctx, why, retry)
		if g.cached {
			ctx.Response.Header.SetCanonical(hdrSurrogateControl, noStore)
		}
		return
	}
	defaultFallback.write(ctx)
	setInt(&ctx.Response.Header, hdrRetryAfter, ceilSeconds(retry))
}

var (
	breakerStateDesc = prometheus.NewDesc("edge_breaker_state",
		"Circuit breaker state by upstream (cells/cell for cells): 0 closed, 1 half-open, 2 open.", []string{"upstream"}, nil)
	poolInflightDesc = prometheus.NewDesc("edge_upstream_inflight",
		"Requests to the upstream (cells/cell for cells) in flight, for pools with max_inflight or a breaker.", []string{"upstream"}, nil)
)

// collectPools reports edge_breaker_state and edge_upstream_inflight for the
// guarded pools of s (called by degradeCollector).
func collectPools(s *Snapshot, ch chan<- prometheus.Metric) {
	s.eachPool(func(pl *pool) {
		g := pl.guard
		if g == nil {
			return
		}
		if g.brk != nil {
			ch <- prometheus.MustNewConstMetric(breakerStateDesc, prometheus.GaugeValue, float64(g.brk.State()), pl.name)
		}
		ch <- prometheus.MustNewConstMetric(poolInflightDesc, prometheus.GaugeValue, float64(g.inflight.Load()), pl.name)
	})
}

// breakerInfo is a pool's breaker and bulkhead in GET /upstreams and GET /cells.
type breakerInfo struct {
	State       string `json:"state"` // closed, half_open or open
	RetryIn     string `json:"retry_in,omitempty"`
	Requests    int64  `json:"window_requests"`
	Failures    int64  `json:"window_failures"`
	Slow        int64  `json:"window_slow"`
	Inflight    int64  `json:"inflight"`
	MaxInflight int64  `json:"max_inflight"` // 0: unbounded
}

// guardInfo describes pl's guard, or nil when it has none.
func guardInfo(pl *pool) *breakerInfo {
	g := pl.guard
	if g == nil {
		return nil
	}
	bi := &breakerInfo{State: "none", Inflight: g.inflight.Load(), MaxInflight: g.max}
	if g.brk != nil {
		now := time.Now()
		bi.State = g.brk.State().String()
		if d := g.brk.RetryIn(now); d > 0 {
			bi.RetryIn = d.Round(time.Millisecond).String()
		}
		bi.Requests, bi.Failures, bi.Slow = g.brk.Counts(now)
	}
	return bi
}
