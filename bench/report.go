package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Report is one suite run: what bench writes to bench/results/<date>.json and renders
// to <date>.md. The JSON is the planner's source of per-node capacity.
type Report struct {
	Date      string           `json:"date"` // RFC 3339, UTC
	Machine   Machine          `json:"machine"`
	Settings  Settings         `json:"settings"`
	Scenarios []ScenarioResult `json:"scenarios"`
}

// ScenarioResult is one scenario: edge, and nginx unless EdgeOnly.
type ScenarioResult struct {
	Name        string    `json:"name"`
	Desc        string    `json:"description"`
	EdgeOnly    bool      `json:"edge_only,omitempty"`
	Edge        *Side     `json:"edge"`
	Nginx       *Side     `json:"nginx,omitempty"`
	Ratio       float64   `json:"ratio_edge_nginx,omitempty"` // median of per-round ratios; 0: none
	RoundRatios []float64 `json:"round_ratios,omitempty"`
	// CPURatio is the median of the per-round ratios of requests per CPU-second of the
	// server process (edge, or nginx master+workers); 0: unknown.
	CPURatio       float64   `json:"cpu_ratio_edge_nginx,omitempty"`
	CPURoundRatios []float64 `json:"cpu_round_ratios,omitempty"`
	Notes          []string  `json:"notes,omitempty"` // what the clients and servers agreed, checks, goals
}

// Side is what one target (edge or nginx) did in a scenario, over all rounds.
// A side that is not Valid has no meaningful numbers: Invalid says why.
type Side struct {
	Target    string           `json:"target"`
	Valid     bool             `json:"valid"`
	Invalid   string           `json:"invalid,omitempty"`
	Expect    string           `json:"expect"`
	RPS       float64          `json:"rps"` // median of rounds
	RoundsRPS []float64        `json:"rounds_rps,omitempty"`
	P50       float64          `json:"p50_ms"`
	P90       float64          `json:"p90_ms"`
	P99       float64          `json:"p99_ms"`
	P999      float64          `json:"p99_9_ms"`
	CPUPer1k  *float64         `json:"cpu_s_per_1k,omitempty"`       // CPU seconds per 1000 answers; nil: unknown
	ReqPerCPU *float64         `json:"requests_per_cpu_s,omitempty"` // answers per CPU-second of the server, all rounds; nil: unknown
	Requests  int64            `json:"answers"`
	Errors    int64            `json:"errors"`
	Matched   int64            `json:"as_expected"`
	Status    map[string]int64 `json:"status,omitempty"`
}

// Markdown renders the report as the page bench/results/<date>.md (also the README's table).
func (r *Report) Markdown() string {
	var b strings.Builder
	m := r.Machine
	fmt.Fprintf(&b, "# edge vs nginx: %s\n\n", r.Date)
	fmt.Fprintf(&b, "Machine: %d cores, %s, %s, %s", m.Cores, m.CPU, m.Kernel, m.MemInfo)
	fmt.Fprintf(&b, "; %s, %s", m.Go, m.Nginx)
	if m.Redis != "" {
		fmt.Fprintf(&b, ", %s", m.Redis)
	}
	fmt.Fprintf(&b, "; edge %s.\n\n", m.Edge)
	s := r.Settings
	fmt.Fprintf(&b, "Load: bench's own fasthttp client on the same machine, closed loop, %d connections; "+
		"%g s warm-up, then %d rounds of %g s per side, alternating edge, nginx, edge, nginx. "+
		"Both proxy the same origin (an nginx serving a 2 KB JSON body). req/s is the median of rounds; "+
		"edge/nginx is the median of the per-round ratios; latency percentiles are over all rounds; "+
		"CPU is user+system seconds of edge, or of nginx master+workers, per 1000 answers.\n\n",
		s.Conns, s.WarmupS, s.Rounds, s.Seconds)
	b.WriteString("| scenario | edge req/s | nginx req/s | edge/nginx | edge p50 / p99 ms | nginx p50 / p99 ms | edge CPU s/1k | nginx CPU s/1k |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|\n")
	var notes []string
	for _, sc := range r.Scenarios {
		ratio := "—"
		if sc.Ratio > 0 {
			ratio = fmt.Sprintf("%.2f", sc.Ratio)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", sc.Name,
			sideRPS(sc.Edge), sideRPS(sc.Nginx), ratio, sideLat(sc.Edge), sideLat(sc.Nginx), sideCPU(sc.Edge), sideCPU(sc.Nginx))
		for _, sd := range []*Side{sc.Edge, sc.Nginx} {
			if sd != nil && !sd.Valid {
				notes = append(notes, fmt.Sprintf("- **%s, %s: INVALID**: %s", sc.Name, sd.Target, sd.Invalid))
			}
		}
	}
	b.WriteString(cpuTable(r.Scenarios))
	b.WriteString("\nScenarios:\n")
	for _, sc := range r.Scenarios {
		fmt.Fprintf(&b, "- `%s`: %s", sc.Name, sc.Desc)
		if sc.EdgeOnly {
			b.WriteString(" (edge only)")
		}
		b.WriteString(".\n")
		for _, n := range sc.Notes {
			fmt.Fprintf(&b, "  - %s\n", n)
		}
	}
	if len(notes) > 0 {
		b.WriteString("\nINVALID means that side's answers were wrong (or missing), so its numbers are not shown:\n")
		for _, n := range notes {
			b.WriteString(n + "\n")
		}
	}
	b.WriteString("\nReproduce: `make bench` (or `go run ./bench run`) from the repository root; " +
		"it needs nginx-light and redis-server (installed with apt-get when run as root).\n")
	return b.String()
}

func sideRPS(s *Side) string {
	switch {
	case s == nil:
		return "—"
	case !s.Valid:
		return "INVALID"
	}
	return thousands(s.RPS)
}

func sideLat(s *Side) string {
	if s == nil || !s.Valid || (s.P50 == 0 && s.P99 == 0) {
		return "—"
	}
	return fmt.Sprintf("%.2f / %.2f", s.P50, s.P99)
}

func sideCPU(s *Side) string {
	if s == nil || !s.Valid || s.CPUPer1k == nil {
		return "—"
	}
	return fmt.Sprintf("%.3f", *s.CPUPer1k)
}

// thousands formats v rounded to an integer with comma separators.
func thousands(v float64) string {
	n := int64(v + 0.5)
	s := fmt.Sprint(n)
	var out []byte
	for i, c := range []byte(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, c)
	}
	return string(out)
}

// write saves the report as dir/<day>.json and dir/<day>.md and returns the paths.
func (r *Report) write(dir, day string) (string, string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", fmt.Errorf("cannot create results dir %s: %w", dir, err)
	}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return "", "", err
	}
	jp, mp := filepath.Join(dir, day+".json"), filepath.Join(dir, day+".md")
	if err := os.WriteFile(jp, append(js, '\n'), 0o644); err != nil {
		return "", "", fmt.Errorf("cannot write %s: %w", jp, err)
	}
	if err := os.WriteFile(mp, []byte(r.Markdown()), 0o644); err != nil {
		return "", "", fmt.Errorf("cannot write %s: %w", mp, err)
	}
	return jp, mp, nil
}

// latestReport reads the newest dir/*.json (names sort by date).
func latestReport(dir string) (*Report, string, error) {
	files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
	if len(files) == 0 {
		return nil, "", fmt.Errorf("no report in %s: run `make bench` first, or pass -edge-capacity", dir)
	}
	sort.Strings(files)
	path := files[len(files)-1]
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, "", fmt.Errorf("cannot read report %s: %w", path, err)
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, "", fmt.Errorf("cannot parse report %s: %w", path, err)
	}
	return &r, path, nil
}

// cpuTable renders requests per CPU-second of the server for the scenarios whose
// ratio is known; "" when none is.
func cpuTable(scs []ScenarioResult) string {
	var b strings.Builder
	for _, sc := range scs {
		if sc.CPURatio <= 0 {
			continue
		}
		if b.Len() == 0 {
			b.WriteString("\nRequests per CPU-second of the server process (answers ÷ its user+system CPU seconds, " +
				"all rounds; edge/nginx is the median of the per-round ratios):\n\n" +
				"| scenario | edge req/CPU-s | nginx req/CPU-s | edge/nginx | rounds |\n|---|---:|---:|---:|---|\n")
		}
		var rounds []string
		for _, v := range sc.CPURoundRatios {
			rounds = append(rounds, fmt.Sprintf("%.2f", v))
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %.2f | %s |\n", sc.Name, perCPU(sc.Edge), perCPU(sc.Nginx), sc.CPURatio, strings.Join(rounds, " "))
	}
	return b.String()
}

func perCPU(s *Side) string {
	if s == nil || !s.Valid || s.ReqPerCPU == nil {
		return "—"
	}
	return thousands(*s.ReqPerCPU)
}
