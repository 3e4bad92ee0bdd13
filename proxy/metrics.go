package proxy

import (
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics holds the proxy's Prometheus metrics. Label children used per request are
// created when a snapshot is built (or once, lazily, for a new status code), so a
// request only does atomic adds. Metrics outlive snapshots.
type Metrics struct {
	requests      *prometheus.CounterVec
	duration      *prometheus.HistogramVec
	upstreamErrs  *prometheus.CounterVec
	inflight      atomic.Int64 // edge_inflight_requests, read at scrape: one atomic add per change
	accessDropped prometheus.Counter

	// Reg is where feature files register their own metrics, once, from their
	// initX function.
	Reg prometheus.Registerer

	mu     sync.Mutex
	routes map[string]*routeMetrics
}

// NewMetrics registers the proxy metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_requests_total", Help: "Requests answered, by route and status code (route \"\" when none matched).",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "edge_request_duration_seconds", Help: "Time from request read to response ready, by route.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route"}),
		upstreamErrs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_upstream_errors_total", Help: "Failed upstream exchanges, by upstream and reason (connect, timeout, busy, broken).",
		}, []string{"upstream", "reason"}),
		accessDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edge_access_log_dropped_total", Help: "Access log lines dropped because the writer fell behind.",
		}),
		routes: map[string]*routeMetrics{},
		Reg:    reg,
	}
	inflight := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "edge_inflight_requests", Help: "Requests being handled now.",
	}, func() float64 { return float64(m.inflight.Load()) })
	reg.MustRegister(m.requests, m.duration, m.upstreamErrs, inflight, m.accessDropped)
	return m
}

// routeMetrics are the children of one route label. codes is filled lazily: the
// first request with a new status code creates its child, later ones load it.
type routeMetrics struct {
	name     string
	codes    [600]atomic.Pointer[prometheus.Counter]
	duration prometheus.Observer
	vec      *prometheus.CounterVec
}

func (m *Metrics) route(name string) *routeMetrics {
	m.mu.Lock()
	defer m.mu.Unlock()
	rm := m.routes[name]
	if rm == nil {
		rm = &routeMetrics{name: name, duration: m.duration.WithLabelValues(name), vec: m.requests}
		m.routes[name] = rm
	}
	return rm
}

// retain drops the children of routes that are no longer configured.
func (m *Metrics) retain(keep map[string]bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for name := range m.routes {
		if !keep[name] && name != "" {
			delete(m.routes, name)
			m.requests.DeletePartialMatch(prometheus.Labels{"route": name})
			m.duration.DeleteLabelValues(name)
		}
	}
}

func (rm *routeMetrics) count(code int) {
	if code < 100 || code >= 600 {
		code = 599
	}
	c := rm.codes[code].Load()
	if c == nil {
		counter := rm.vec.WithLabelValues(rm.name, strconv.Itoa(code))
		rm.codes[code].CompareAndSwap(nil, &counter)
		c = rm.codes[code].Load()
	}
	(*c).Inc()
}

// upstreamErrors are the children of one upstream label, one per failure reason.
type upstreamErrors [numFailures]prometheus.Counter

func (m *Metrics) upstream(name string) *upstreamErrors {
	var e upstreamErrors
	for f := failConnect; f < numFailures; f++ {
		e[f] = m.upstreamErrs.WithLabelValues(name, f.String())
	}
	return &e
}
