// Package status is the live status page of the admin listener: GET / serves one HTML
// page, its CSS and JS embedded in the binary (no CDN: it works offline), that polls
// GET /status.json every second and redraws itself without a reload.
//
// The JSON is built from the Prometheus registry at request time, so the page shows
// exactly what GET /metrics exports and needs no state of its own: counters are sent as
// totals and histograms as buckets, and the page turns successive polls into rates and
// recent percentiles. The little that is not a metric (cluster members, seckill stock)
// comes through Sources. Nothing here is secret (no token, no Redis password, no seckill
// secret), so neither endpoint asks for the admin token; the admin listener is loopback
// by default and should stay private.
//
// The package is a leaf: it imports no edge package; cmd/edge wires it.
package status

import (
	"context"
	"embed"
	"encoding/json"
	"math"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

//go:embed page
var page embed.FS

// Registrar is where the endpoints go: admin.API satisfies it.
type Registrar interface {
	Handle(pattern string, h http.HandlerFunc)
}

// Member is a cluster member as this node sees it.
type Member struct {
	Name    string `json:"name"`
	Address string `json:"address"`
	State   string `json:"state"` // alive, suspect, dead, left
	Local   bool   `json:"local,omitempty"`
}

// Item is the stock of one seckill item.
type Item struct {
	Item   string `json:"item"`
	Stock  int64  `json:"stock"`  // units left
	Issued int64  `json:"issued"` // units held by users
}

// Sources supply what the registry does not hold. Each may be nil; each is called once
// per GET /status.json, concurrently with the proxy, so it must be safe for that.
type Sources struct {
	// Members lists the cluster members; nil without a cluster.
	Members func() []Member
	// Seckill returns the items of the sales this node knows; ok false when the running
	// config has no seckill block (or its store is not connected): no seckill section.
	Seckill func(ctx context.Context) (items []Item, ok bool)
}

// Register adds GET / (the page), GET /status.js, GET /status.css and GET
// /status.json (Build's answer) to r. None needs the admin token.
func Register(r Registrar, g prometheus.Gatherer, src Sources) {
	asset := func(name, ctype string) http.HandlerFunc {
		body, err := page.ReadFile("page/" + name)
		if err != nil {
			panic("BUG: status page asset missing: " + name)
		}
		return func(w http.ResponseWriter, _ *http.Request) {
			h := w.Header()
			h.Set("Content-Type", ctype)
			h.Set("Cache-Control", "no-cache")
			h.Set("X-Content-Type-Options", "nosniff")
			h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; "+
				"connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
			w.Write(body)
		}
	}
	// "/{$}" is the root only: other unknown paths keep the admin API's JSON 404.
	r.Handle("GET /{$}", asset("index.html", "text/html; charset=utf-8"))
	r.Handle("GET /status.js", asset("status.js", "text/javascript; charset=utf-8"))
	r.Handle("GET /status.css", asset("status.css", "text/css; charset=utf-8"))
	r.Handle("GET /status.json", func(w http.ResponseWriter, req *http.Request) {
		ctx, cancel := context.WithTimeout(req.Context(), 2*time.Second)
		defer cancel()
		st := Build(ctx, g, src, time.Now())
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false)
		enc.Encode(st)
	})
}

// Status is the answer of GET /status.json. Counters are totals since the process
// started (the page takes differences of successive polls); gauges are values now.
type Status struct {
	Time      float64    `json:"time"` // unix seconds of the gather
	Edge      Edge       `json:"edge"`
	Routes    []Route    `json:"routes"`
	Bans      Bans       `json:"bans"`
	Upstreams []Upstream `json:"upstreams"`
	Seckill   *Seckill   `json:"seckill,omitempty"` // nil without a seckill block
	Rooms     []Room     `json:"waiting_rooms"`
	Cluster   *Cluster   `json:"cluster,omitempty"` // nil without a cluster block
	Listeners []Listener `json:"listeners"`
	Streams   []Stream   `json:"streams"`
	Error     string     `json:"error,omitempty"` // a collector failed: the rest is shown
}

// Edge is the process as a whole.
type Edge struct {
	Version       string  `json:"version"`
	GoVersion     string  `json:"go"`
	Start         float64 `json:"start"` // unix seconds; 0 when unknown
	ConfigVersion float64 `json:"config_version"`
	ReloadOK      bool    `json:"reload_ok"`
	Inflight      float64 `json:"inflight"`
	Workers       float64 `json:"workers"`
}

// Route is one route ("" is requests no route matched).
type Route struct {
	Name     string             `json:"name"`
	Requests float64            `json:"requests"`
	Classes  map[string]float64 `json:"classes"` // "2xx" → answers, 1xx to 5xx
	Latency  Histogram          `json:"latency"`
	P50      *float64           `json:"p50"` // seconds, since start; null before any request
	P99      *float64           `json:"p99"`
	Cache    map[string]float64 `json:"cache,omitempty"` // result → lookups; absent when the route has no cache
	Limited  float64            `json:"limited"`         // limit rejects (reject, unavailable)
	Shed     float64            `json:"shed"`            // answered with the fallback
	Inflight float64            `json:"inflight"`
	Degraded bool               `json:"degraded,omitempty"`
}

// Histogram is a cumulative histogram: Counts[i] observations at most Bounds[i], and
// the last count, one past Bounds, is every observation.
type Histogram struct {
	Bounds []float64 `json:"bounds"`
	Counts []float64 `json:"counts"`
	Sum    float64   `json:"sum"`
}

// Bans are the blacklist's numbers; the blacklist is global, not per route.
type Bans struct {
	Blocked  map[string]float64 `json:"blocked"` // kind (ip, cidr, user) → 403s
	Entries  map[string]float64 `json:"entries"` // kind → entries now
	AutoBans float64            `json:"auto_bans"`
}

// Upstream is an upstream pool, or a cell (Name "cells/cell").
type Upstream struct {
	Name     string   `json:"name"`
	Cell     bool     `json:"cell,omitempty"`
	Servers  []Server `json:"servers"`
	Breaker  string   `json:"breaker,omitempty"`  // closed, half_open, open; "" without a breaker
	Inflight *float64 `json:"inflight,omitempty"` // only pools with a breaker or max_inflight count
	Errors   float64  `json:"errors"`
	Retries  float64  `json:"retries"`
	Requests *float64 `json:"requests,omitempty"` // cells only
}

// Server is one server of a pool.
type Server struct {
	Address string `json:"address"`
	Up      bool   `json:"up"`
}

// Seckill is the sale: token request results and the stock of the items.
type Seckill struct {
	Requests map[string]float64 `json:"requests"` // issued, sold_out, repeat, …
	Orders   map[string]float64 `json:"orders"`
	StoreUp  bool               `json:"store_up"`
	Items    []Item             `json:"items"`
}

// Room is a waiting room.
type Room struct {
	Name      string  `json:"name"`
	Waiting   float64 `json:"waiting"`
	Active    float64 `json:"active"`
	Admitted  float64 `json:"admitted"`
	AdmitRate float64 `json:"admit_rate"`
	ETA       float64 `json:"eta"`
}

// Cluster is the membership as this node sees it.
type Cluster struct {
	Counts  map[string]float64 `json:"counts"` // state → members
	Members []Member           `json:"members"`
}

// Listener is a client listener.
type Listener struct {
	Name        string             `json:"name"`
	Connections map[string]float64 `json:"connections"` // http1, http2, handshaking
	Accepted    float64            `json:"accepted"`
	Refused     float64            `json:"refused"`
	Requests    float64            `json:"requests"`
	Certs       []Cert             `json:"certs"`
}

// Cert is a certificate a listener serves.
type Cert struct {
	Name     string  `json:"name"`
	NotAfter float64 `json:"not_after"` // unix seconds
}

// Stream is an L4 stream.
type Stream struct {
	Name        string  `json:"name"`
	Protocol    string  `json:"protocol"`    // tcp or udp
	Connections float64 `json:"connections"` // open now (UDP: sessions)
	Accepted    float64 `json:"accepted"`    // since start (UDP: sessions opened)
	Refused     float64 `json:"refused"`     // every other outcome
	BytesUp     float64 `json:"bytes_up"`
	BytesDown   float64 `json:"bytes_down"`
}

// Build gathers g and returns the status; src may be zero. It never fails: a gather
// error is reported in Error beside what could be read.
func Build(ctx context.Context, g prometheus.Gatherer, src Sources, now time.Time) *Status {
	st := &Status{Time: float64(now.UnixMilli()) / 1e3}
	mfs, err := g.Gather()
	if err != nil {
		st.Error = "metrics: " + err.Error()
	}
	f := families{}
	for _, mf := range mfs {
		f[mf.GetName()] = mf.GetMetric()
	}
	st.Edge = buildEdge(f)
	st.Routes = buildRoutes(f)
	st.Bans = Bans{
		Blocked:  f.byLabel("edge_blacklist_blocked_total", "kind"),
		Entries:  f.byLabel("edge_blacklist_entries", "kind"),
		AutoBans: f.sum("edge_autoban_bans_total"),
	}
	st.Upstreams = buildUpstreams(f)
	if src.Seckill != nil {
		if items, ok := src.Seckill(ctx); ok {
			if items == nil {
				items = []Item{}
			}
			st.Seckill = &Seckill{
				Requests: f.byLabel("edge_seckill_requests_total", "result"),
				Orders:   f.byLabel("edge_seckill_orders_total", "result"),
				StoreUp:  f.sum("edge_seckill_store_up") == 1,
				Items:    items,
			}
		}
	}
	st.Rooms = buildRooms(f)
	if src.Members != nil {
		if ms := src.Members(); ms != nil {
			st.Cluster = &Cluster{Counts: f.byLabel("edge_cluster_members", "state"), Members: ms}
		}
	}
	st.Listeners = buildListeners(f)
	st.Streams = buildStreams(f)
	return st
}

// families are the gathered metrics by name.
type families map[string][]*dto.Metric

func label(m *dto.Metric, name string) string {
	for _, lp := range m.GetLabel() {
		if lp.GetName() == name {
			return lp.GetValue()
		}
	}
	return ""
}

// value is a sample's value, whatever its type; NaN and infinities (which JSON cannot
// carry) read as 0.
func value(m *dto.Metric) float64 {
	var v float64
	switch {
	case m.Counter != nil:
		v = m.Counter.GetValue()
	case m.Gauge != nil:
		v = m.Gauge.GetValue()
	case m.Untyped != nil:
		v = m.Untyped.GetValue()
	case m.Histogram != nil:
		v = float64(m.Histogram.GetSampleCount())
	}
	return finite(v)
}

func finite(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return v
}

// sum adds up every sample of name.
func (f families) sum(name string) float64 {
	var s float64
	for _, m := range f[name] {
		s += value(m)
	}
	return s
}

// byLabel adds up the samples of name by the value of one label.
func (f families) byLabel(name, key string) map[string]float64 {
	out := map[string]float64{}
	for _, m := range f[name] {
		out[label(m, key)] += value(m)
	}
	return out
}

// by adds up the samples of name by one label, then by a second.
func (f families) by(name, key, sub string) map[string]map[string]float64 {
	out := map[string]map[string]float64{}
	for _, m := range f[name] {
		k := label(m, key)
		if out[k] == nil {
			out[k] = map[string]float64{}
		}
		out[k][label(m, sub)] += value(m)
	}
	return out
}

// keys returns the keys of m.
func keys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

// union returns the distinct strings of lists, sorted.
func union(lists ...[]string) []string {
	seen := map[string]bool{}
	out := []string{}
	for _, l := range lists {
		for _, k := range l {
			if !seen[k] {
				seen[k] = true
				out = append(out, k)
			}
		}
	}
	sort.Strings(out)
	return out
}

func buildEdge(f families) Edge {
	e := Edge{
		Start:         f.sum("process_start_time_seconds"),
		ConfigVersion: f.sum("edge_config_version"),
		ReloadOK:      f.sum("edge_config_last_reload_successful") == 1,
		Inflight:      f.sum("edge_inflight_requests"),
		Workers:       f.sum("edge_workers"),
	}
	if ms := f["edge_build_info"]; len(ms) > 0 {
		e.Version, e.GoVersion = label(ms[0], "version"), label(ms[0], "goversion")
	}
	return e
}

// limitRejects are the edge_limit_decisions_total results that answer the client
// with an error.
var limitRejects = map[string]bool{"reject": true, "unavailable": true}

func buildRoutes(f families) []Route {
	codes := f.by("edge_requests_total", "route", "code")
	hists := map[string]*dto.Histogram{}
	for _, m := range f["edge_request_duration_seconds"] {
		if m.Histogram != nil {
			hists[label(m, "route")] = m.Histogram
		}
	}
	cache := f.by("edge_cache_requests_total", "route", "result")
	limited := map[string]float64{}
	for _, m := range f["edge_limit_decisions_total"] {
		if limitRejects[label(m, "result")] {
			limited[label(m, "route")] += value(m)
		}
	}
	shed := f.byLabel("edge_shed_total", "route")
	inflight := f.byLabel("edge_route_inflight", "route")
	degraded := f.byLabel("edge_route_degraded", "route")

	routes := []Route{}
	for _, name := range union(keys(codes), keys(hists), keys(inflight)) {
		r := Route{Name: name, Classes: map[string]float64{"1xx": 0, "2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0},
			Cache: cache[name], Limited: limited[name], Shed: shed[name], Inflight: inflight[name], Degraded: degraded[name] == 1}
		for code, n := range codes[name] {
			r.Requests += n
			if len(code) == 3 && code[0] >= '1' && code[0] <= '5' {
				r.Classes[code[:1]+"xx"] += n
			}
		}
		r.Latency = histogram(hists[name])
		if p, ok := Quantile(0.5, r.Latency); ok {
			r.P50 = &p
		}
		if p, ok := Quantile(0.99, r.Latency); ok {
			r.P99 = &p
		}
		routes = append(routes, r)
	}
	return routes
}

// histogram converts a gathered histogram, dropping a +Inf bucket (the count says it).
func histogram(h *dto.Histogram) Histogram {
	out := Histogram{Bounds: []float64{}, Counts: []float64{}}
	if h == nil {
		out.Counts = append(out.Counts, 0)
		return out
	}
	for _, b := range h.GetBucket() {
		if math.IsInf(b.GetUpperBound(), 1) {
			continue
		}
		out.Bounds = append(out.Bounds, b.GetUpperBound())
		out.Counts = append(out.Counts, float64(b.GetCumulativeCount()))
	}
	out.Counts = append(out.Counts, float64(h.GetSampleCount()))
	out.Sum = finite(h.GetSampleSum())
	return out
}

// Quantile estimates the q-quantile (0 < q < 1) of h by linear interpolation within
// its bucket, as Prometheus's histogram_quantile does; in the last bucket, past every
// bound, it answers the largest bound. ok is false when h is empty. The page runs the
// same computation in JS on the difference of two polls.
func Quantile(q float64, h Histogram) (v float64, ok bool) {
	if len(h.Counts) == 0 || h.Counts[len(h.Counts)-1] <= 0 {
		return 0, false
	}
	rank := q * h.Counts[len(h.Counts)-1]
	i := 0
	for i < len(h.Bounds) && h.Counts[i] < rank {
		i++
	}
	if i == len(h.Bounds) {
		if i == 0 {
			return 0, false
		}
		return h.Bounds[i-1], true
	}
	lo, below := 0.0, 0.0
	if i > 0 {
		lo, below = h.Bounds[i-1], h.Counts[i-1]
	}
	if h.Counts[i] == below {
		return h.Bounds[i], true
	}
	return lo + (h.Bounds[i]-lo)*(rank-below)/(h.Counts[i]-below), true
}

var breakerStates = [...]string{"closed", "half_open", "open"}

func buildUpstreams(f families) []Upstream {
	servers := map[string][]Server{}
	for _, m := range f["edge_upstream_up"] {
		u := label(m, "upstream")
		servers[u] = append(servers[u], Server{Address: label(m, "server"), Up: value(m) == 1})
	}
	breaker := f.byLabel("edge_breaker_state", "upstream")
	inflight := f.byLabel("edge_upstream_inflight", "upstream")
	errs := f.byLabel("edge_upstream_errors_total", "upstream")
	retries := f.byLabel("edge_upstream_retries_total", "upstream")
	cellReqs := map[string]float64{}
	for _, m := range f["edge_cell_requests_total"] {
		cellReqs[label(m, "cells")+"/"+label(m, "cell")] += value(m)
	}
	ups := []Upstream{}
	for _, name := range union(keys(servers), keys(breaker), keys(inflight), keys(errs)) {
		u := Upstream{Name: name, Cell: strings.Contains(name, "/"), Servers: servers[name],
			Errors: errs[name], Retries: retries[name]}
		if u.Servers == nil {
			u.Servers = []Server{}
		}
		sort.Slice(u.Servers, func(i, j int) bool { return u.Servers[i].Address < u.Servers[j].Address })
		if s, ok := breaker[name]; ok && s >= 0 && int(s) < len(breakerStates) {
			u.Breaker = breakerStates[int(s)]
		}
		if n, ok := inflight[name]; ok {
			u.Inflight = &n
		}
		if u.Cell {
			n := cellReqs[name]
			u.Requests = &n
		}
		ups = append(ups, u)
	}
	return ups
}

func buildRooms(f families) []Room {
	waiting := f.byLabel("edge_waiting_room_waiting", "room")
	active := f.byLabel("edge_waiting_room_active", "room")
	admitted := f.byLabel("edge_waiting_room_admitted_total", "room")
	rate := f.byLabel("edge_waiting_room_admit_rate", "room")
	eta := f.byLabel("edge_waiting_room_eta_seconds", "room")
	rooms := []Room{}
	for _, name := range union(keys(waiting), keys(active), keys(admitted), keys(rate)) {
		rooms = append(rooms, Room{Name: name, Waiting: waiting[name], Active: active[name],
			Admitted: admitted[name], AdmitRate: rate[name], ETA: eta[name]})
	}
	return rooms
}

func buildListeners(f families) []Listener {
	conns := f.by("edge_listener_connections", "listener", "kind")
	accepted := f.byLabel("edge_listener_accepted_total", "listener")
	refused := f.byLabel("edge_listener_refused_total", "listener")
	requests := f.byLabel("edge_listener_requests_total", "listener")
	certs := map[string][]Cert{}
	for _, m := range f["edge_tls_certificate_expiry_seconds"] {
		l := label(m, "listener")
		certs[l] = append(certs[l], Cert{Name: label(m, "name"), NotAfter: value(m)})
	}
	ls := []Listener{}
	for _, name := range union(keys(conns), keys(accepted), keys(requests)) {
		l := Listener{Name: name, Connections: conns[name], Accepted: accepted[name], Refused: refused[name],
			Requests: requests[name], Certs: certs[name]}
		if l.Connections == nil {
			l.Connections = map[string]float64{}
		}
		if l.Certs == nil {
			l.Certs = []Cert{}
		}
		sort.Slice(l.Certs, func(i, j int) bool { return l.Certs[i].Name < l.Certs[j].Name })
		ls = append(ls, l)
	}
	return ls
}

func buildStreams(f families) []Stream {
	tcpOpen := f.byLabel("edge_stream_connections", "stream")
	udpOpen := f.byLabel("edge_stream_sessions", "stream")
	tcpResults := f.by("edge_stream_connections_total", "stream", "result")
	udpResults := f.by("edge_stream_sessions_total", "stream", "result")
	bytes := f.by("edge_stream_bytes_total", "stream", "direction")
	streams := []Stream{}
	for _, name := range union(keys(tcpOpen), keys(udpOpen), keys(bytes)) {
		s := Stream{Name: name, Protocol: "tcp", Connections: tcpOpen[name],
			BytesUp: bytes[name]["up"], BytesDown: bytes[name]["down"]}
		results, accepted := tcpResults[name], "accepted"
		if n, udp := udpOpen[name]; udp {
			s.Protocol, s.Connections = "udp", n
			results, accepted = udpResults[name], "opened"
		}
		for r, n := range results {
			if r == accepted {
				s.Accepted += n
			} else {
				s.Refused += n
			}
		}
		streams = append(streams, s)
	}
	return streams
}
