package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func fixedReport() *Report {
	cpu := func(v float64) *float64 { return &v }
	return &Report{
		Date: "2026-01-02T03:04:05Z",
		Machine: Machine{Cores: 2, CPU: "AMD EPYC", Kernel: "Linux 6.1", MemInfo: "8.0 GiB", Go: "go1.26.0",
			Nginx: "nginx/1.22.1", Redis: "redis 7.0.15", Edge: "dev (go1.26.0)"},
		Settings: Settings{Seconds: 5, WarmupS: 1, Rounds: 3, Conns: 64},
		Scenarios: []ScenarioResult{
			{Name: "pass", Desc: "proxy GET", Ratio: 0.8123, RoundRatios: []float64{0.8, 0.8123, 0.9},
				Edge:  &Side{Target: "edge", Valid: true, RPS: 12345.6, P50: 3.1, P99: 9.876, CPUPer1k: cpu(0.031)},
				Nginx: &Side{Target: "nginx", Valid: true, RPS: 15200, P50: 2.5, P99: 8, CPUPer1k: cpu(0.024)}},
			{Name: "limit_reject", Desc: "over the limit: 429",
				Edge:  &Side{Target: "edge", Invalid: "expected status 429 on ≥95% of answers, got 0.0% (statuses 200×100)", RPS: 99999},
				Nginx: &Side{Target: "nginx", Valid: true, RPS: 44000, P50: 1.2, P99: 7.5}},
			{Name: "seckill_issue", Desc: "new user each time", EdgeOnly: true,
				Edge: &Side{Target: "edge", Valid: true, RPS: 9000, P50: 5, P99: 20, CPUPer1k: cpu(0.1)}},
		},
	}
}

func TestMarkdown(t *testing.T) {
	want := `# edge vs nginx: 2026-01-02T03:04:05Z

Machine: 2 cores, AMD EPYC, Linux 6.1, 8.0 GiB; go1.26.0, nginx/1.22.1, redis 7.0.15; edge dev (go1.26.0).

Load: bench's own fasthttp client on the same machine, closed loop, 64 connections; 1 s warm-up, then 3 rounds of 5 s per side, alternating edge, nginx, edge, nginx. Both proxy the same origin (an nginx serving a 2 KB JSON body). req/s is the median of rounds; edge/nginx is the median of the per-round ratios; latency percentiles are over all rounds; CPU is user+system seconds of edge, or of nginx master+workers, per 1000 answers.

| scenario | edge req/s | nginx req/s | edge/nginx | edge p50 / p99 ms | nginx p50 / p99 ms | edge CPU s/1k | nginx CPU s/1k |
|---|---:|---:|---:|---:|---:|---:|---:|
| pass | 12,346 | 15,200 | 0.81 | 3.10 / 9.88 | 2.50 / 8.00 | 0.031 | 0.024 |
| limit_reject | INVALID | 44,000 | — | — | 1.20 / 7.50 | — | — |
| seckill_issue | 9,000 | — | — | 5.00 / 20.00 | — | 0.100 | — |

Scenarios:
- ` + "`pass`" + `: proxy GET.
- ` + "`limit_reject`" + `: over the limit: 429.
- ` + "`seckill_issue`" + `: new user each time (edge only).

INVALID means that side's answers were wrong (or missing), so its numbers are not shown:
- **limit_reject, edge: INVALID**: expected status 429 on ≥95% of answers, got 0.0% (statuses 200×100)

Reproduce: ` + "`make bench` (or `go run ./bench run`)" + ` from the repository root; it needs nginx-light and redis-server (installed with apt-get when run as root).
`
	if got := fixedReport().Markdown(); got != want {
		t.Errorf("markdown differs.\ngot:\n%s\nwant:\n%s", got, want)
	}
}

func TestReportFilesFeedThePlanner(t *testing.T) {
	dir := t.TempDir()
	old := fixedReport()
	old.Scenarios[0].Edge.RPS = 1
	if _, _, err := old.write(dir, "2026-01-01"); err != nil {
		t.Fatal(err)
	}
	jp, mp, err := fixedReport().write(dir, "2026-01-02")
	if err != nil {
		t.Fatal(err)
	}
	md, _ := os.ReadFile(mp)
	if string(md) != fixedReport().Markdown() {
		t.Errorf("%s does not hold the rendered report", mp)
	}
	r, path, err := latestReport(dir, "pass")
	if err != nil {
		t.Fatal(err)
	}
	if path != jp || filepath.Base(path) != "2026-01-02.json" {
		t.Errorf("latest report %s, want %s", path, jp)
	}
	c, from, err := capacityFromReport(r, path, "pass")
	if err != nil || c != 12345.6 || !strings.Contains(from, "2 cores") {
		t.Errorf("capacity %g from %q err %v, want 12345.6 from the pass scenario", c, from, err)
	}
	if _, _, err := capacityFromReport(r, path, "limit_reject"); err == nil || !strings.Contains(err.Error(), "not valid") {
		t.Errorf("an INVALID scenario gave a capacity (err %v)", err)
	}
	if _, _, err := latestReport(t.TempDir(), "pass"); err == nil {
		t.Error("empty results dir gave a report")
	}
}

func TestMarkdownCPUTable(t *testing.T) {
	r := fixedReport()
	r.Scenarios[0].CPURatio, r.Scenarios[0].CPURoundRatios = 1.25, []float64{1.2, 1.25, 1.3}
	a, b := 40000.0, 32000.0
	r.Scenarios[0].Edge.ReqPerCPU, r.Scenarios[0].Nginx.ReqPerCPU = &a, &b
	r.Scenarios[0].Notes = []string{"edge agreed TLS 1.3, X25519, TLS_AES_128_GCM_SHA256"}
	md := r.Markdown()
	for _, want := range []string{
		"| scenario | edge req/CPU-s | nginx req/CPU-s | edge/nginx | rounds |\n|---|---:|---:|---:|---|\n" +
			"| pass | 40,000 | 32,000 | 1.25 | 1.20 1.25 1.30 |\n\nScenarios:",
		"- `pass`: proxy GET.\n  - edge agreed TLS 1.3, X25519, TLS_AES_128_GCM_SHA256\n- `limit_reject`",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	if strings.Contains(fixedReport().Markdown(), "req/CPU-s") {
		t.Error("a report without CPU ratios has a CPU table")
	}
}
