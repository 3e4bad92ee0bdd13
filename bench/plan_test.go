package main

import (
	"math"
	"strings"
	"testing"
)

func TestPlanWorkedExample(t *testing.T) {
	// The seed's example: 100M users, 30 clicks, factor 4, a 5-hour peak.
	// 100e6 × 0.2 × 30 = 600M views; 0.8 × 600M / 18000 s = 26,667 QPS; × 4 = 106,667.
	p := &Plan{Users: 100e6, Clicks: 30, Factor: 4, PeakHours: 5, EdgeCapacity: 20000,
		Layers: []Layer{{"app", 2000}, {"redis", 80000}}}
	if err := p.Compute(); err != nil {
		t.Fatal(err)
	}
	if p.Active != 20e6 || p.Views != 600e6 {
		t.Errorf("active %g views %g, want 2e7 and 6e8", p.Active, p.Views)
	}
	if math.Abs(p.PeakQPS-26666.67) > 0.01 || math.Abs(p.Required-106666.67) > 0.01 {
		t.Errorf("peak %f required %f, want 26666.67 and 106666.67", p.PeakQPS, p.Required)
	}
	var b strings.Builder
	p.Print(&b)
	out := b.String()
	for _, want := range []string{
		"20% × 100,000,000 users = 20,000,000",
		"20,000,000 active × 30 clicks = 600,000,000",
		"80% × 600,000,000 views / (5 h × 3600 s = 18,000 s) = 26,667",
		"26,667 × redundancy factor 4 = 106,667 QPS (≈107k)",
		"edge nodes         = ⌈106,667 / 20,000 req/s per node⌉ = 6",
		"app nodes          = ⌈106,667 / 2,000 req/s per node⌉ = 54",
		"redis nodes        = ⌈106,667 / 80,000 req/s per node⌉ = 2",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("plan output lacks %q:\n%s", want, out)
		}
	}
}

func TestPlanDefaultsAndValidation(t *testing.T) {
	p := &Plan{Users: 1e6, Clicks: 10, Factor: 2}
	if err := p.Compute(); err != nil {
		t.Fatal(err)
	}
	if p.PeakHours != 4.8 || math.Abs(p.PeakQPS-1e6*0.2*10*0.8/(4.8*3600)) > 1e-9 {
		t.Errorf("default peak window %g h, peak %f", p.PeakHours, p.PeakQPS)
	}
	var b strings.Builder
	p.Print(&b)
	if !strings.Contains(b.String(), "edge nodes         = unknown") {
		t.Errorf("without a capacity the plan should say nodes are unknown:\n%s", b.String())
	}
	bad := &Plan{Users: 0, Clicks: 30, Factor: 6, PeakHours: 30}
	err := bad.Compute()
	if err == nil {
		t.Fatal("bad plan accepted")
	}
	for _, want := range []string{"-users", "-factor 6", "-peak-hours 30"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	var l layerFlags
	if l.Set("app=2000") != nil || l.Set("db") == nil || l.Set("db=-1") == nil || len(l) != 1 {
		t.Errorf("layer flags parsed as %v", l)
	}
}
