package soak

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Sample is one look at edge during a soak.
type Sample struct {
	At         float64 `json:"at_s"` // seconds since the workload started
	RSSKB      int64   `json:"rss_kb"`
	Goroutines int     `json:"goroutines"`
	FDs        int     `json:"fds"`
	Requests   int64   `json:"requests"` // public requests since the previous sample
	Errors     int64   `json:"errors"`   // unexpected answers since the previous sample
	P50        float64 `json:"p50_ms"`
	P99        float64 `json:"p99_ms"`
	Max        float64 `json:"max_ms"`
}

// The flatness thresholds the soak report and TestSoak apply to the second half of
// a run (see Flatness): RSS may drift by 10 % of its mean, goroutines and open
// descriptors by 10 % or 20, whichever is larger.
const (
	RSSLimit, CountLimit, CountFloor = 0.10, 0.10, 20
)

// Trends judges the samples' RSS, goroutines and descriptors with the thresholds above.
func Trends(samples []Sample) []Trend {
	var t, rss, gr, fds []float64
	for _, s := range samples {
		t = append(t, s.At)
		rss = append(rss, float64(s.RSSKB))
		gr = append(gr, float64(s.Goroutines))
		fds = append(fds, float64(s.FDs))
	}
	return []Trend{
		Flatness("rss_kb", t, rss, RSSLimit, 0),
		Flatness("goroutines", t, gr, CountLimit, CountFloor),
		Flatness("fds", t, fds, CountLimit, CountFloor),
	}
}

// Report is a soak run as written to bench/results.
type Report struct {
	Started  time.Time `json:"started"`
	Duration string    `json:"duration"`
	Workload string    `json:"workload"`
	Reloads  int       `json:"reloads"`
	Samples  []Sample  `json:"samples"`
	Trends   []Trend   `json:"trends"`
	Counts   []string  `json:"counts"`
	Requests int64     `json:"requests"`
	Errors   int64     `json:"errors"`
}

// Write writes r to dir as soak-<date>.json and soak-<date>.md and returns the
// Markdown file's path.
func (r *Report) Write(dir string) (string, error) {
	base := filepath.Join(dir, "soak-"+r.Started.UTC().Format("2006-01-02T1504"))
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(base+".json", append(js, '\n'), 0o644); err != nil {
		return "", fmt.Errorf("cannot write the soak report: %w", err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Soak %s, %s\n\n", r.Started.UTC().Format("2006-01-02 15:04 UTC"), r.Duration)
	fmt.Fprintf(&b, "Workload: %s. Config reloads: %d. Public requests: %d, unexpected answers: %d.\n\n",
		r.Workload, r.Reloads, r.Requests, r.Errors)
	b.WriteString("## Flatness (least-squares drift over the second half)\n\n")
	for _, tr := range r.Trends {
		fmt.Fprintf(&b, "- %s\n", tr)
	}
	if len(r.Samples) > 0 {
		first, last := r.Samples[0], r.Samples[len(r.Samples)-1]
		fmt.Fprintf(&b, "\nStart: RSS %.1f MiB, %d goroutines, %d fds. End: RSS %.1f MiB, %d goroutines, %d fds.\n",
			float64(first.RSSKB)/1024, first.Goroutines, first.FDs, float64(last.RSSKB)/1024, last.Goroutines, last.FDs)
	}
	b.WriteString("\n## Answers\n\n")
	for _, c := range r.Counts {
		fmt.Fprintf(&b, "- %s\n", c)
	}
	b.WriteString("\n## Samples\n\n| t (s) | RSS (MiB) | goroutines | fds | requests | errors | p50 ms | p99 ms | max ms |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, s := range r.Samples {
		fmt.Fprintf(&b, "| %.0f | %.1f | %d | %d | %d | %d | %.2f | %.2f | %.1f |\n",
			s.At, float64(s.RSSKB)/1024, s.Goroutines, s.FDs, s.Requests, s.Errors, s.P50, s.P99, s.Max)
	}
	if err := os.WriteFile(base+".md", []byte(b.String()), 0o644); err != nil {
		return "", fmt.Errorf("cannot write the soak report: %w", err)
	}
	return base + ".md", nil
}
