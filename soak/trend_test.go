package soak

import (
	"testing"
	"time"
)

func TestFlatness(t *testing.T) {
	f := func(name string, v []float64, limit, floor float64, want bool) {
		t.Helper()
		ts := make([]float64, len(v))
		for i := range ts {
			ts[i] = float64(i * 5)
		}
		tr := Flatness(name, ts, v, limit, floor)
		if tr.Flat != want {
			t.Errorf("%s: flat = %v, want %v (%s)", name, tr.Flat, want, tr)
		}
	}
	// Warm-up growth in the first half is forgiven; noise around a level is flat.
	f("warm-up then level", []float64{10, 50, 90, 100, 101, 99, 100, 102, 100, 99}, 0.10, 0, true)
	// A steady climb of 2 % a sample is 8 % over the 5-sample half: flat at 10 %, not at 5 %.
	f("slow climb at 10%", []float64{100, 102, 104, 106, 108, 110, 112, 114, 116, 118}, 0.10, 0, true)
	f("slow climb at 5%", []float64{100, 102, 104, 106, 108, 110, 112, 114, 116, 118}, 0.05, 0, false)
	f("leak", []float64{100, 120, 140, 160, 180, 200, 220, 240, 260, 280}, 0.10, 0, false)
	f("falling is drift too", []float64{280, 260, 240, 220, 200, 180, 160, 140, 120, 100}, 0.10, 0, false)
	// The floor: 12 goroutines becoming 16 is not a trend.
	f("small counts under the floor", []float64{12, 12, 13, 12, 13, 14, 14, 15, 16, 16}, 0.10, 10, true)
	f("too few samples", []float64{1, 1, 1, 1, 1, 1}, 0.10, 0, false)
	f("empty", nil, 0.10, 0, false)
}

func TestPercentiles(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	got := Percentiles(ds, 0.5, 0.99, 1)
	if got[0] != 50 || got[1] != 99 || got[2] != 100 {
		t.Errorf("p50, p99, max = %v, want [50 99 100]", got)
	}
	if got := Percentiles(nil, 0.5); got[0] != 0 {
		t.Errorf("empty: %v", got)
	}
}
