package proxy

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Counts and durations added on different stripes are reported as one counter and one
// histogram per route, with cumulative buckets; a dropped route disappears.
func TestStripedRouteMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	rm := m.route("shop")
	for i := range uint32(40) {
		rm.count(i, 200)
	}
	rm.count(3, 404)
	rm.count(7, 0) // out of range: counted as 599
	for i, d := range []time.Duration{100 * time.Microsecond, 800 * time.Microsecond, 3 * time.Millisecond, 20 * time.Second} {
		rm.duration.observe(uint32(i*5), d)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		got[mf.GetName()] = mf
	}
	codes := map[string]float64{}
	for _, mt := range got["edge_requests_total"].GetMetric() {
		lbl := map[string]string{}
		for _, l := range mt.GetLabel() {
			lbl[l.GetName()] = l.GetValue()
		}
		if lbl["route"] != "shop" {
			t.Errorf("unexpected route label %q", lbl["route"])
		}
		codes[lbl["code"]] = mt.GetCounter().GetValue()
	}
	if codes["200"] != 40 || codes["404"] != 1 || codes["599"] != 1 || len(codes) != 3 {
		t.Errorf("edge_requests_total by code = %v, want 200:40 404:1 599:1", codes)
	}
	h := got["edge_request_duration_seconds"].GetMetric()[0].GetHistogram()
	if h.GetSampleCount() != 4 {
		t.Errorf("histogram count %d, want 4", h.GetSampleCount())
	}
	if want := 20.0039; h.GetSampleSum() < want-1e-9 || h.GetSampleSum() > want+1e-9 {
		t.Errorf("histogram sum %v, want %v", h.GetSampleSum(), want)
	}
	wantCum := map[float64]uint64{.0005: 1, .001: 2, .0025: 2, .005: 3, 10: 3}
	for _, b := range h.GetBucket() {
		if w, ok := wantCum[b.GetUpperBound()]; ok && b.GetCumulativeCount() != w {
			t.Errorf("bucket le=%v: %d, want %d", b.GetUpperBound(), b.GetCumulativeCount(), w)
		}
	}
	m.retain(map[string]bool{})
	mfs, _ = reg.Gather()
	for _, mf := range mfs {
		if n := mf.GetName(); n == "edge_requests_total" || n == "edge_request_duration_seconds" {
			t.Errorf("%s still reported after its route was dropped", n)
		}
	}
}
