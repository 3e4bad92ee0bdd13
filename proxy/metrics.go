package proxy

import (
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics holds the proxy's Prometheus metrics. Label children used per request are
// created when a snapshot is built (or once, lazily, for a new status code), so a
// request only does atomic adds. Metrics outlive snapshots.
type Metrics struct {
	upstreamErrs  *prometheus.CounterVec
	inflight      atomic.Int64   // edge_inflight_requests, read at scrape: one atomic add per change
	served        stripedCounter // requests finished (Traffic)
	forwarded     stripedCounter // requests sent to an upstream (Traffic)
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
	reg.MustRegister(m.upstreamErrs, inflight, m.accessDropped, routeCollector{m})
	return m
}

// Per-request counters are striped: each is an array of stripes a cache line apart, and a
// request adds to the stripe of its pooled scratch (sync.Pool keeps a scratch on the P
// that put it back), so requests running on different cores seldom write the same cache
// line, where one shared atomic would move its line between cores on every add. The gain
// grows with the cores; on the 2-core bench machine it is within the noise. Scrapes add
// the stripes up.
const stripes = 16

// nextStripe spreads scratch objects over the stripes as they are created.
var nextStripe atomic.Uint32

type stripedCounter [stripes]struct {
	n atomic.Uint64
	_ [56]byte
}

func (c *stripedCounter) inc(stripe uint32) { c[stripe%stripes].n.Add(1) }

func (c *stripedCounter) load() uint64 {
	var n uint64
	for i := range c {
		n += c[i].n.Load()
	}
	return n
}

// durationBounds are the upper bounds (seconds) of edge_request_duration_seconds.
var durationBounds = [...]float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

var durationBoundsNS = func() (b [len(durationBounds)]int64) {
	for i, s := range durationBounds {
		b[i] = int64(s * 1e9)
	}
	return b
}()

// stripedHistogram is edge_request_duration_seconds of one route: per stripe, one count
// per bucket (the last one past every bound) and the sum in nanoseconds; 128 bytes.
type stripedHistogram [stripes]struct {
	counts [len(durationBounds) + 1]atomic.Uint64
	sumNS  atomic.Int64
}

func (h *stripedHistogram) observe(stripe uint32, d time.Duration) {
	i := 0
	for i < len(durationBoundsNS) && int64(d) > durationBoundsNS[i] {
		i++
	}
	s := &h[stripe%stripes]
	s.counts[i].Add(1)
	s.sumNS.Add(int64(d))
}

// Traffic returns how many requests the proxy has finished since it was created, and
// how many of them went to an upstream pool (whether or not a server answered; the
// rest it answered itself: cache hits, rejects, respond routes, seckill, no route).
// Both only grow; sums over stripes, so a pair read during traffic may be a few
// requests apart.
func (p *Proxy) Traffic() (served, forwarded uint64) {
	return p.metrics.served.load(), p.metrics.forwarded.load()
}

// routeMetrics are the per-request metrics of one route label. codes is filled lazily:
// the first request with a new status code creates its counter, later ones load it.
type routeMetrics struct {
	name     string
	codes    [600]atomic.Pointer[stripedCounter]
	duration stripedHistogram
}

func (m *Metrics) route(name string) *routeMetrics {
	m.mu.Lock()
	defer m.mu.Unlock()
	rm := m.routes[name]
	if rm == nil {
		rm = &routeMetrics{name: name}
		m.routes[name] = rm
	}
	return rm
}

// retain drops the metrics of routes that are no longer configured.
func (m *Metrics) retain(keep map[string]bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for name := range m.routes {
		if !keep[name] && name != "" {
			delete(m.routes, name)
		}
	}
}

// count adds one answer with status code to the route's edge_requests_total.
func (rm *routeMetrics) count(stripe uint32, code int) {
	if code < 100 || code >= 600 {
		code = 599
	}
	c := rm.codes[code].Load()
	if c == nil {
		rm.codes[code].CompareAndSwap(nil, new(stripedCounter))
		c = rm.codes[code].Load()
	}
	c.inc(stripe)
}

var (
	requestsDesc = prometheus.NewDesc("edge_requests_total",
		"Requests answered, by route and status code (route \"\" when none matched).", []string{"route", "code"}, nil)
	durationDesc = prometheus.NewDesc("edge_request_duration_seconds",
		"Time from request read to response ready, by route.", []string{"route"}, nil)
)

// routeCollector reports edge_requests_total and edge_request_duration_seconds from the
// striped counters of the configured routes.
type routeCollector struct{ m *Metrics }

// Describe sends the two descriptors.
func (c routeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- requestsDesc
	ch <- durationDesc
}

// Collect adds up the stripes of every route.
func (c routeCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.mu.Lock()
	routes := make([]*routeMetrics, 0, len(c.m.routes))
	for _, rm := range c.m.routes {
		routes = append(routes, rm)
	}
	c.m.mu.Unlock()
	sort.Slice(routes, func(i, j int) bool { return routes[i].name < routes[j].name })
	for _, rm := range routes {
		for code := range rm.codes {
			if sc := rm.codes[code].Load(); sc != nil {
				ch <- prometheus.MustNewConstMetric(requestsDesc, prometheus.CounterValue, float64(sc.load()), rm.name, strconv.Itoa(code))
			}
		}
		var counts [len(durationBounds) + 1]uint64
		var sumNS int64
		for i := range rm.duration {
			s := &rm.duration[i]
			for b := range counts {
				counts[b] += s.counts[b].Load()
			}
			sumNS += s.sumNS.Load()
		}
		buckets := make(map[float64]uint64, len(durationBounds))
		var cum uint64
		for b, bound := range durationBounds {
			cum += counts[b]
			buckets[bound] = cum
		}
		cum += counts[len(durationBounds)]
		ch <- prometheus.MustNewConstHistogram(durationDesc, cum, float64(sumNS)/1e9, buckets, rm.name)
	}
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
