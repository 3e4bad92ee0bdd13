package soak

import "fmt"

// Trend is the flatness verdict on one sampled series: a least-squares line fitted
// through the second half of the samples (the first half is warm-up: caches,
// limiter buckets and connection pools filling), and how far that line moves over
// the second half's span.
type Trend struct {
	Name  string  `json:"name"`
	First float64 `json:"first"` // first sample of the whole run
	Last  float64 `json:"last"`  // last sample
	Mean  float64 `json:"mean"`  // mean of the second half
	// Drift is slope × span of the second half: how much the fitted line rises
	// (negative: falls) from the half's first sample time to its last.
	Drift float64 `json:"drift"`
	// Allowed is the largest |Drift| called flat: Limit × Mean, but at least Floor.
	Allowed float64 `json:"allowed"`
	Flat    bool    `json:"flat"`
}

// Flatness fits v against t (seconds) over the second half of the samples and calls
// the series flat when the fitted line moves by no more than limit × its mean
// (a fraction: 0.10 is 10 %) or by floor, whichever is larger, over that half. The
// floor keeps small counts (12 goroutines becoming 14) from reading as growth.
// Fewer than 4 samples in the half are never flat: there is nothing to judge.
func Flatness(name string, t, v []float64, limit, floor float64) Trend {
	tr := Trend{Name: name}
	if len(v) == 0 || len(t) != len(v) {
		return tr
	}
	tr.First, tr.Last = v[0], v[len(v)-1]
	h := len(v) / 2
	t, v = t[h:], v[h:]
	n := float64(len(v))
	var st, sv float64
	for i := range v {
		st += t[i]
		sv += v[i]
	}
	mt, mv := st/n, sv/n
	var cov, vt float64
	for i := range v {
		cov += (t[i] - mt) * (v[i] - mv)
		vt += (t[i] - mt) * (t[i] - mt)
	}
	tr.Mean = mv
	tr.Allowed = max(limit*mv, floor)
	if len(v) < 4 || vt == 0 {
		return tr
	}
	tr.Drift = cov / vt * (t[len(t)-1] - t[0])
	tr.Flat = tr.Drift <= tr.Allowed && tr.Drift >= -tr.Allowed
	return tr
}

// String is one line for a log or a report: name, first and last value, drift and verdict.
func (tr Trend) String() string {
	verdict := "flat"
	if !tr.Flat {
		verdict = "NOT FLAT"
	}
	return fmt.Sprintf("%s: first %.0f, last %.0f, second-half mean %.0f, drift %+.1f (allowed ±%.1f): %s",
		tr.Name, tr.First, tr.Last, tr.Mean, tr.Drift, tr.Allowed, verdict)
}
