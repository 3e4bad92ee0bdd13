package status

import (
	"context"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// registry returns a registry holding the metrics the page reads, with known values,
// named and labelled as edge's packages export them.
func registry(t *testing.T) *prometheus.Registry {
	t.Helper()
	reg := prometheus.NewRegistry()
	counter := func(name string, labels []string, values ...any) {
		v := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: name}, labels)
		for i := 0; i < len(values); i += 2 {
			v.WithLabelValues(values[i].([]string)...).Add(values[i+1].(float64))
		}
		reg.MustRegister(v)
	}
	gauge := func(name string, labels []string, values ...any) {
		v := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: name}, labels)
		for i := 0; i < len(values); i += 2 {
			v.WithLabelValues(values[i].([]string)...).Set(values[i+1].(float64))
		}
		reg.MustRegister(v)
	}
	l := func(s ...string) []string { return s }

	gauge("edge_build_info", l("version", "goversion"), l("v1.2.3", "go1.26"), 1.0)
	gauge("edge_config_version", nil, l(), 4.0)
	gauge("edge_config_last_reload_successful", nil, l(), 0.0)
	gauge("edge_inflight_requests", nil, l(), 7.0)
	gauge("process_start_time_seconds", nil, l(), 1000.0)

	counter("edge_requests_total", l("route", "code"),
		l("detail", "200"), 90.0, l("detail", "204"), 5.0, l("detail", "429"), 3.0, l("detail", "503"), 2.0,
		l("order", "302"), 1.0)
	lat := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "edge_request_duration_seconds", Help: "h",
		Buckets: []float64{.001, .01, .1, 1}}, []string{"route"})
	for i := 0; i < 100; i++ { // detail: 50 in (0, 1ms], 49 in (1ms, 10ms], 1 in (100ms, 1s]
		switch {
		case i < 50:
			lat.WithLabelValues("detail").Observe(.0005)
		case i < 99:
			lat.WithLabelValues("detail").Observe(.005)
		default:
			lat.WithLabelValues("detail").Observe(.5)
		}
	}
	lat.WithLabelValues("order").Observe(.05)
	reg.MustRegister(lat)
	counter("edge_cache_requests_total", l("route", "result"), l("detail", "hit"), 60.0, l("detail", "miss"), 30.0)
	counter("edge_limit_decisions_total", l("route", "limit", "result"),
		l("detail", "ip", "pass"), 97.0, l("detail", "ip", "reject"), 3.0, l("detail", "user", "dry_run_reject"), 9.0)
	counter("edge_shed_total", l("route", "reason"), l("order", "degraded"), 4.0)
	gauge("edge_route_inflight", l("route"), l("detail"), 2.0, l("order"), 0.0)
	gauge("edge_route_degraded", l("route"), l("detail"), 0.0, l("order"), 1.0)

	counter("edge_blacklist_blocked_total", l("kind"), l("ip"), 5.0, l("user"), 1.0)
	gauge("edge_blacklist_entries", l("kind"), l("ip"), 2.0)
	counter("edge_autoban_bans_total", nil, l(), 1.0)

	gauge("edge_upstream_up", l("upstream", "server"),
		l("catalog", "10.0.0.2:80"), 0.0, l("catalog", "10.0.0.1:80"), 1.0, l("shop/c1", "10.0.1.1:80"), 1.0)
	gauge("edge_breaker_state", l("upstream"), l("catalog"), 2.0)
	gauge("edge_upstream_inflight", l("upstream"), l("catalog"), 3.0)
	counter("edge_upstream_errors_total", l("upstream", "reason"),
		l("catalog", "connect"), 4.0, l("catalog", "timeout"), 1.0, l("shop/c1", "connect"), 0.0)
	counter("edge_upstream_retries_total", l("upstream"), l("catalog"), 2.0)
	counter("edge_cell_requests_total", l("cells", "cell"), l("shop", "c1"), 12.0)

	counter("edge_seckill_requests_total", l("result"), l("issued"), 10.0, l("sold_out"), 30.0)
	counter("edge_seckill_orders_total", l("result"), l("ok"), 8.0)
	gauge("edge_seckill_store_up", nil, l(), 1.0)

	gauge("edge_waiting_room_waiting", l("room"), l("sale"), 120.0)
	gauge("edge_waiting_room_active", l("room"), l("sale"), 40.0)
	counter("edge_waiting_room_admitted_total", l("room"), l("sale"), 300.0)
	gauge("edge_waiting_room_admit_rate", l("room"), l("sale"), 50.0)
	gauge("edge_waiting_room_eta_seconds", l("room"), l("sale"), 2.4)

	gauge("edge_cluster_members", l("state"), l("alive"), 2.0, l("suspect"), 1.0)

	gauge("edge_listener_connections", l("listener", "kind"),
		l("default", "http1"), 3.0, l("default", "http2"), 1.0, l("tls", "http1"), 0.0)
	counter("edge_listener_accepted_total", l("listener"), l("default"), 50.0, l("tls"), 0.0)
	counter("edge_listener_refused_total", l("listener"), l("default"), 1.0)
	counter("edge_listener_requests_total", l("listener", "protocol"), l("default", "http/1.1"), 90.0, l("default", "h2"), 11.0)
	gauge("edge_tls_certificate_expiry_seconds", l("listener", "name"), l("tls", "shop.example"), 2e9)

	gauge("edge_stream_connections", l("stream"), l("pg"), 2.0)
	counter("edge_stream_connections_total", l("stream", "result"), l("pg", "accepted"), 9.0, l("pg", "banned"), 1.0)
	counter("edge_stream_bytes_total", l("stream", "direction"),
		l("pg", "up"), 100.0, l("pg", "down"), 2000.0, l("dns", "up"), 5.0, l("dns", "down"), 6.0)
	gauge("edge_stream_sessions", l("stream"), l("dns"), 1.0)
	counter("edge_stream_sessions_total", l("stream", "result"), l("dns", "opened"), 4.0, l("dns", "over_max_sessions"), 2.0)
	return reg
}

func sources() Sources {
	return Sources{
		Members: func() []Member {
			return []Member{{Name: "n1", Address: "127.0.0.1:7946", State: "alive", Local: true}}
		},
		Seckill: func(context.Context) ([]Item, bool) {
			return []Item{{Item: "phone", Stock: 90, Issued: 10}}, true
		},
	}
}

func TestBuild(t *testing.T) {
	st := Build(context.Background(), registry(t), sources(), time.Unix(1700000000, 0))
	if st.Error != "" {
		t.Fatalf("error %q", st.Error)
	}
	if st.Time != 1700000000 {
		t.Errorf("time %v", st.Time)
	}
	if e := st.Edge; e.Version != "v1.2.3" || e.GoVersion != "go1.26" || e.ConfigVersion != 4 || e.ReloadOK || e.Inflight != 7 || e.Start != 1000 {
		t.Errorf("edge %+v", e)
	}

	if len(st.Routes) != 2 || st.Routes[0].Name != "detail" || st.Routes[1].Name != "order" {
		t.Fatalf("routes %+v", st.Routes)
	}
	d := st.Routes[0]
	if d.Requests != 100 || d.Classes["2xx"] != 95 || d.Classes["4xx"] != 3 || d.Classes["5xx"] != 2 || d.Classes["3xx"] != 0 {
		t.Errorf("detail counts: requests %v classes %v", d.Requests, d.Classes)
	}
	if d.Limited != 3 || d.Cache["hit"] != 60 || d.Cache["miss"] != 30 || d.Inflight != 2 || d.Degraded {
		t.Errorf("detail: limited %v (dry runs are no rejects) cache %v inflight %v degraded %v", d.Limited, d.Cache, d.Inflight, d.Degraded)
	}
	if want := []float64{.001, .01, .1, 1}; !equal(d.Latency.Bounds, want) {
		t.Errorf("bounds %v, want %v", d.Latency.Bounds, want)
	}
	if want := []float64{50, 99, 99, 100, 100}; !equal(d.Latency.Counts, want) {
		t.Errorf("cumulative counts %v, want %v", d.Latency.Counts, want)
	}
	// p50: rank 50 falls at the top of the first bucket; p99: rank 99, top of the second.
	if d.P50 == nil || math.Abs(*d.P50-.001) > 1e-12 || d.P99 == nil || math.Abs(*d.P99-.01) > 1e-12 {
		t.Errorf("p50 %v p99 %v, want 1ms and 10ms", ptr(d.P50), ptr(d.P99))
	}
	o := st.Routes[1]
	if o.Requests != 1 || o.Classes["3xx"] != 1 || o.Cache != nil || o.Shed != 4 || !o.Degraded {
		t.Errorf("order %+v", o)
	}

	if b := st.Bans; b.Blocked["ip"] != 5 || b.Blocked["user"] != 1 || b.Entries["ip"] != 2 || b.AutoBans != 1 {
		t.Errorf("bans %+v", b)
	}

	if len(st.Upstreams) != 2 {
		t.Fatalf("upstreams %+v", st.Upstreams)
	}
	c := st.Upstreams[0]
	if c.Name != "catalog" || c.Cell || c.Breaker != "open" || c.Inflight == nil || *c.Inflight != 3 ||
		c.Errors != 5 || c.Retries != 2 || c.Requests != nil || len(c.Servers) != 2 ||
		c.Servers[0] != (Server{"10.0.0.1:80", true}) || c.Servers[1] != (Server{"10.0.0.2:80", false}) {
		t.Errorf("catalog %+v", c)
	}
	cell := st.Upstreams[1]
	if cell.Name != "shop/c1" || !cell.Cell || cell.Breaker != "" || cell.Inflight != nil || cell.Requests == nil || *cell.Requests != 12 {
		t.Errorf("cell %+v", cell)
	}

	if k := st.Seckill; k == nil || k.Requests["issued"] != 10 || k.Requests["sold_out"] != 30 || k.Orders["ok"] != 8 ||
		!k.StoreUp || len(k.Items) != 1 || k.Items[0] != (Item{"phone", 90, 10}) {
		t.Errorf("seckill %+v", st.Seckill)
	}
	if len(st.Rooms) != 1 || st.Rooms[0] != (Room{Name: "sale", Waiting: 120, Active: 40, Admitted: 300, AdmitRate: 50, ETA: 2.4}) {
		t.Errorf("rooms %+v", st.Rooms)
	}
	if cl := st.Cluster; cl == nil || cl.Counts["alive"] != 2 || cl.Counts["suspect"] != 1 || len(cl.Members) != 1 || cl.Members[0].Name != "n1" {
		t.Errorf("cluster %+v", st.Cluster)
	}

	if len(st.Listeners) != 2 {
		t.Fatalf("listeners %+v", st.Listeners)
	}
	if l := st.Listeners[0]; l.Name != "default" || l.Connections["http1"] != 3 || l.Connections["http2"] != 1 ||
		l.Accepted != 50 || l.Refused != 1 || l.Requests != 101 || len(l.Certs) != 0 {
		t.Errorf("default listener %+v", l)
	}
	if l := st.Listeners[1]; l.Name != "tls" || len(l.Certs) != 1 || l.Certs[0] != (Cert{"shop.example", 2e9}) {
		t.Errorf("tls listener %+v", l)
	}

	if len(st.Streams) != 2 {
		t.Fatalf("streams %+v", st.Streams)
	}
	if s := st.Streams[0]; s != (Stream{Name: "dns", Protocol: "udp", Connections: 1, Accepted: 4, Refused: 2, BytesUp: 5, BytesDown: 6}) {
		t.Errorf("dns %+v", s)
	}
	if s := st.Streams[1]; s != (Stream{Name: "pg", Protocol: "tcp", Connections: 2, Accepted: 9, Refused: 1, BytesUp: 100, BytesDown: 2000}) {
		t.Errorf("pg %+v", s)
	}
}

// Without sources and metrics the status still has every list (as [] in JSON, so the
// page need not test for null) and no seckill or cluster section.
func TestBuildEmpty(t *testing.T) {
	st := Build(context.Background(), prometheus.NewRegistry(), Sources{}, time.Now())
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for _, want := range []string{`"routes":[]`, `"upstreams":[]`, `"waiting_rooms":[]`, `"listeners":[]`, `"streams":[]`} {
		if !strings.Contains(s, want) {
			t.Errorf("%s lacks %s", s, want)
		}
	}
	if strings.Contains(s, `"seckill"`) || strings.Contains(s, `"cluster"`) {
		t.Errorf("sections without a source: %s", s)
	}
	noSale := Sources{Seckill: func(context.Context) ([]Item, bool) { return nil, false }, Members: func() []Member { return nil }}
	if st := Build(context.Background(), prometheus.NewRegistry(), noSale, time.Now()); st.Seckill != nil || st.Cluster != nil {
		t.Errorf("seckill %+v cluster %+v, want none", st.Seckill, st.Cluster)
	}
}

// A value JSON cannot carry (NaN, ±Inf) reads as 0 rather than breaking the answer.
func TestBuildNonFinite(t *testing.T) {
	reg := prometheus.NewRegistry()
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "edge_waiting_room_admit_rate", Help: "h"}, []string{"room"})
	g.WithLabelValues("a").Set(math.Inf(1))
	g.WithLabelValues("b").Set(math.NaN())
	reg.MustRegister(g)
	st := Build(context.Background(), reg, Sources{}, time.Now())
	if _, err := json.Marshal(st); err != nil {
		t.Fatal(err)
	}
	if len(st.Rooms) != 2 || st.Rooms[0].AdmitRate != 0 || st.Rooms[1].AdmitRate != 0 {
		t.Errorf("rooms %+v", st.Rooms)
	}
}

func TestQuantile(t *testing.T) {
	h := func(bounds []float64, counts ...float64) Histogram { return Histogram{Bounds: bounds, Counts: counts} }
	b := []float64{.1, .2, .4}
	f := func(q float64, hist Histogram, want float64, wantOK bool) {
		t.Helper()
		got, ok := Quantile(q, hist)
		if ok != wantOK || math.Abs(got-want) > 1e-9 {
			t.Errorf("Quantile(%v, %v) = %v, %v; want %v, %v", q, hist.Counts, got, ok, want, wantOK)
		}
	}
	f(.5, h(b, 0, 0, 0, 0), 0, false)      // no observations
	f(.5, h(b, 10, 10, 10, 10), .05, true) // all in the first bucket: interpolated from 0
	f(.5, h(b, 0, 10, 10, 10), .15, true)  // all in the second: from its lower bound
	f(.99, h(b, 0, 0, 0, 10), .4, true)    // past every bound: the largest bound
	f(.5, h(b, 5, 5, 10, 10), .1, true)    // rank 5 is exactly the first bucket's top
	f(.75, h(b, 5, 5, 10, 10), .3, true)   // rank 7.5: halfway through (.2, .4]
	f(.5, h(nil, 3), 0, false)             // no bounds: nothing to say
	f(.5, Histogram{}, 0, false)           // nothing at all
	f(.9, h([]float64{1}, 0, 10), 1, true) // only the overflow bucket
	f(.1, h([]float64{1, 2}, 10, 10, 10), .1, true)
}

func TestRegister(t *testing.T) {
	mux := http.NewServeMux()
	Register(registrar{mux}, registry(t), sources())
	srv := httptest.NewServer(mux)
	defer srv.Close()
	get := func(path string) (*http.Response, string) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	resp, body := get("/")
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") ||
		!strings.Contains(body, `src="/status.js"`) || !strings.Contains(body, `href="/status.css"`) {
		t.Errorf("GET /: %d %s\n%s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	if strings.Contains(body, "http://") || strings.Contains(body, "https://") {
		t.Errorf("the page loads something from elsewhere:\n%s", body)
	}
	for path, ctype := range map[string]string{"/status.js": "text/javascript", "/status.css": "text/css"} {
		if resp, body := get(path); resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), ctype) || len(body) < 100 {
			t.Errorf("GET %s: %d %s, %d bytes", path, resp.StatusCode, resp.Header.Get("Content-Type"), len(body))
		}
	}
	resp, body = get("/status.json")
	var st Status
	if err := json.Unmarshal([]byte(body), &st); resp.StatusCode != 200 || err != nil || len(st.Routes) != 2 || resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("GET /status.json: %d %v %s", resp.StatusCode, err, body)
	}
	if resp, _ := get("/elsewhere"); resp.StatusCode != 404 {
		t.Errorf("GET /elsewhere: %d; the page must take the root only", resp.StatusCode)
	}
}

type registrar struct{ mux *http.ServeMux }

func (r registrar) Handle(pattern string, h http.HandlerFunc) { r.mux.HandleFunc(pattern, h) }

func equal(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Abs(a[i]-b[i]) > 1e-12 {
			return false
		}
	}
	return true
}

func ptr(p *float64) any {
	if p == nil {
		return nil
	}
	return *p
}
