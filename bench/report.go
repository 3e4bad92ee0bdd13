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
	// L4 holds an L4 scenario's figures (l4_bulk, l4_connect), whose units are not
	// requests; Edge and Nginx are nil then.
	L4 *L4Result `json:"l4,omitempty"`
}

// L4Result is an L4 scenario on each proxy: edge first, then nginx, then HAProxy when
// it was measured.
type L4Result struct {
	Unit       string       `json:"unit"`         // of Rate: "MB/s" (10^6 bytes) or "conn/s"
	PerCPUUnit string       `json:"per_cpu_unit"` // of PerCPU: "MB/CPU-s" or "conn/CPU-s"
	Sides      []*L4Side    `json:"sides"`
	Syscalls   []L4Syscalls `json:"syscalls,omitempty"` // the splice check (l4_bulk)
}

// L4Side is what one proxy did in an L4 scenario, over all rounds. A side that is not
// Valid has no meaningful numbers: Invalid says why.
type L4Side struct {
	Target     string    `json:"target"`
	Valid      bool      `json:"valid"`
	Invalid    string    `json:"invalid,omitempty"`
	Rate       float64   `json:"rate"` // median of rounds, in the result's Unit
	RoundsRate []float64 `json:"rounds_rate,omitempty"`
	Amount     float64   `json:"amount"`               // bytes or connections, all rounds' windows
	CPU        float64   `json:"cpu_s"`                // the proxy's user+system CPU seconds in those windows
	PerCPU     *float64  `json:"per_cpu_s,omitempty"`  // Amount (MB or connections) per CPU second; nil: unknown
	P50        float64   `json:"p50_ms,omitempty"`     // l4_connect: connect to close
	P99        float64   `json:"p99_ms,omitempty"`     //
	Errors     int64     `json:"errors"`               // failed connections
	Ratio      float64   `json:"ratio_edge,omitempty"` // not edge: edge's rate over this one's, median of per-round ratios; 0: none
	// CPURatio is edge's amount per CPU-second over this one's, median of per-round ratios; 0: none.
	CPURatio       float64   `json:"cpu_ratio_edge,omitempty"`
	RoundRatios    []float64 `json:"round_ratios,omitempty"`
	CPURoundRatios []float64 `json:"cpu_round_ratios,omitempty"`
}

// L4Syscalls is one proxy's system calls during a bulk run under strace -f -c.
type L4Syscalls struct {
	Target  string           `json:"target"`
	Splice  int64            `json:"splice"`
	Reads   int64            `json:"reads"`  // read + recvfrom + readv
	Writes  int64            `json:"writes"` // write + sendto + writev
	Calls   map[string]int64 `json:"calls"`
	MB      float64          `json:"mb"` // what went through during the traced run
	Seconds float64          `json:"seconds"`
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
	var http, l4 []ScenarioResult
	for _, sc := range r.Scenarios {
		if sc.L4 != nil {
			l4 = append(l4, sc)
		} else {
			http = append(http, sc)
		}
	}
	var notes []string
	if len(http) > 0 || len(l4) == 0 {
		notes = httpTables(&b, s, http)
	}
	if len(l4) > 0 {
		if len(http) > 0 {
			b.WriteString("\n")
		}
		notes = append(notes, l4Tables(&b, s, l4)...)
	}
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
		"it needs nginx-light and redis-server (installed with apt-get when run as root)")
	if len(l4) > 0 {
		b.WriteString("; the L4 scenarios (`go run ./bench run -only l4_bulk,l4_connect`) need libnginx-mod-stream and strace, and measure HAProxy too when it is installed or can be")
	}
	b.WriteString(".\n")
	return b.String()
}

// httpTables writes the HTTP scenarios' load paragraph and tables and returns the
// notes on their INVALID sides.
func httpTables(b *strings.Builder, s Settings, scs []ScenarioResult) []string {
	fmt.Fprintf(b, "Load: bench's own fasthttp client on the same machine, closed loop, %d connections; "+
		"%g s warm-up, then %d rounds of %g s per side, alternating edge, nginx, edge, nginx. "+
		"Both proxy the same origin (an nginx serving a 2 KB JSON body). req/s is the median of rounds; "+
		"edge/nginx is the median of the per-round ratios; latency percentiles are over all rounds; "+
		"CPU is user+system seconds of edge, or of nginx master+workers, per 1000 answers.\n\n",
		s.Conns, s.WarmupS, s.Rounds, s.Seconds)
	b.WriteString("| scenario | edge req/s | nginx req/s | edge/nginx | edge p50 / p99 ms | nginx p50 / p99 ms | edge CPU s/1k | nginx CPU s/1k |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|\n")
	var notes []string
	for _, sc := range scs {
		ratio := "—"
		if sc.Ratio > 0 {
			ratio = fmt.Sprintf("%.2f", sc.Ratio)
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", sc.Name,
			sideRPS(sc.Edge), sideRPS(sc.Nginx), ratio, sideLat(sc.Edge), sideLat(sc.Nginx), sideCPU(sc.Edge), sideCPU(sc.Nginx))
		for _, sd := range []*Side{sc.Edge, sc.Nginx} {
			if sd != nil && !sd.Valid {
				notes = append(notes, fmt.Sprintf("- **%s, %s: INVALID**: %s", sc.Name, sd.Target, sd.Invalid))
			}
		}
	}
	b.WriteString(cpuTable(scs))
	return notes
}

// l4Tables writes the L4 scenarios' paragraph and table and returns the notes on
// their INVALID sides.
func l4Tables(b *strings.Builder, s Settings, scs []ScenarioResult) []string {
	fmt.Fprintf(b, "L4 (TCP streams): edge's `stream` against nginx's `stream` module (and HAProxy in mode tcp when measured), "+
		"each proxying to the same origin; clients and origins are bench's own, in one process on the same machine. "+
		"%g s warm-up per proxy, then %d rounds of %g s per proxy, alternating. Rate is the median of rounds; "+
		"per CPU-s is the amount over all rounds ÷ the proxy's user+system CPU seconds in the measured windows "+
		"(edge; nginx master+workers; HAProxy); edge/X is the median of the per-round ratios.\n\n",
		s.WarmupS, s.Rounds, s.Seconds)
	b.WriteString("| scenario | proxy | rate | per CPU-s | edge/X rate | edge/X per CPU-s | p50 / p99 ms | rounds |\n")
	b.WriteString("|---|---|---:|---:|---:|---:|---:|---|\n")
	var notes []string
	for _, sc := range scs {
		l := sc.L4
		for _, sd := range l.Sides {
			if !sd.Valid {
				fmt.Fprintf(b, "| %s | %s | INVALID | — | — | — | — | |\n", sc.Name, sd.Target)
				notes = append(notes, fmt.Sprintf("- **%s, %s: INVALID**: %s", sc.Name, sd.Target, sd.Invalid))
				continue
			}
			perCPU, ratio, cpuRatio, lat := "—", "—", "—", "—"
			if sd.PerCPU != nil {
				perCPU = fmt.Sprintf("%s %s", thousands(*sd.PerCPU), l.PerCPUUnit)
			}
			if sd.Ratio > 0 {
				ratio = fmt.Sprintf("%.2f", sd.Ratio)
			}
			if sd.CPURatio > 0 {
				cpuRatio = fmt.Sprintf("%.2f", sd.CPURatio)
			}
			if sd.P50 > 0 || sd.P99 > 0 {
				lat = fmt.Sprintf("%.2f / %.2f", sd.P50, sd.P99)
			}
			var rounds []string
			for _, v := range sd.RoundsRate {
				rounds = append(rounds, thousands(v))
			}
			fmt.Fprintf(b, "| %s | %s | %s %s | %s | %s | %s | %s | %s |\n", sc.Name, sd.Target,
				thousands(sd.Rate), l.Unit, perCPU, ratio, cpuRatio, lat, strings.Join(rounds, " "))
		}
	}
	return notes
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

// latestReport reads the newest dir/*.json (names sort by date) that has a scenario
// named scenario: a partial run without it (-only l4_bulk) does not hide the last full one.
func latestReport(dir, scenario string) (*Report, string, error) {
	files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
	if len(files) == 0 {
		return nil, "", fmt.Errorf("no report in %s: run `make bench` first, or pass -edge-capacity", dir)
	}
	sort.Strings(files)
	var first *Report
	var firstPath string
	for i := len(files) - 1; i >= 0; i-- {
		path := files[i]
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, "", fmt.Errorf("cannot read report %s: %w", path, err)
		}
		var r Report
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, "", fmt.Errorf("cannot parse report %s: %w", path, err)
		}
		for _, sc := range r.Scenarios {
			if sc.Name == scenario {
				return &r, path, nil
			}
		}
		if first == nil {
			first, firstPath = &r, path
		}
	}
	return first, firstPath, nil // capacityFromReport says it lacks the scenario
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
