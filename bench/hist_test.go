package main

import (
	"math/rand/v2"
	"testing"
	"time"
)

func TestPercentileExactSmallValues(t *testing.T) {
	h := NewHistogram()
	for v := 1; v <= 100; v++ {
		h.Record(time.Duration(v))
	}
	f := func(p float64, want time.Duration) {
		t.Helper()
		if got := h.Percentile(p); got != want {
			t.Errorf("p%g of 1..100 = %d, want %d", p, got, want)
		}
	}
	f(0, 1)
	f(50, 50)
	f(90, 90)
	f(99, 99)
	f(99.9, 100)
	f(100, 100)
	if h.Count() != 100 || h.Max() != 100 || h.Mean() != 50 { // 50.5 truncated to a whole ns
		t.Errorf("count %d max %d mean %d, want 100 100 50", h.Count(), h.Max(), h.Mean())
	}
}

func TestPercentileWithinPrecision(t *testing.T) {
	// 1..100000 µs in shuffled order: the p-th percentile is p×1000 µs.
	h := NewHistogram()
	vals := rand.New(rand.NewPCG(1, 2)).Perm(100000)
	for _, v := range vals {
		h.Record(time.Duration(v+1) * time.Microsecond)
	}
	for _, p := range []float64{50, 90, 99, 99.9} {
		want := time.Duration(p*1000) * time.Microsecond
		got := h.Percentile(p)
		if got < want || float64(got-want) > float64(want)/128 {
			t.Errorf("p%g = %v, want %v within +1/128", p, got, want)
		}
	}
	if h.Max() != 100*time.Millisecond {
		t.Errorf("max %v, want 100ms", h.Max())
	}
}

func TestPercentileSkewed(t *testing.T) {
	// 990 fast answers and 10 stalls: p99 is still fast, p99.9 is the stall.
	h := NewHistogram()
	for i := 0; i < 990; i++ {
		h.Record(time.Millisecond)
	}
	for i := 0; i < 10; i++ {
		h.Record(2 * time.Second)
	}
	if got := h.Percentile(99); got < time.Millisecond || got > time.Millisecond+time.Millisecond/128 {
		t.Errorf("p99 = %v, want about 1ms", got)
	}
	if got := h.Percentile(99.9); got != 2*time.Second {
		t.Errorf("p99.9 = %v, want 2s", got)
	}
}

func TestHistogramEmptyAndNegative(t *testing.T) {
	h := NewHistogram()
	if h.Percentile(50) != 0 || h.Mean() != 0 || h.Max() != 0 {
		t.Error("empty histogram should report 0")
	}
	h.Record(-time.Second)
	if h.Count() != 1 || h.Percentile(100) != 0 {
		t.Errorf("negative sample: count %d p100 %v, want 1 and 0", h.Count(), h.Percentile(100))
	}
}

func TestHistogramMerge(t *testing.T) {
	whole, a, b := NewHistogram(), NewHistogram(), NewHistogram()
	rng := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 20000; i++ {
		d := time.Duration(rng.ExpFloat64() * float64(time.Millisecond))
		whole.Record(d)
		if i%2 == 0 {
			a.Record(d)
		} else {
			b.Record(d)
		}
	}
	a.Merge(b)
	a.Merge(NewHistogram())
	for _, p := range []float64{1, 50, 90, 99, 99.9, 100} {
		if a.Percentile(p) != whole.Percentile(p) {
			t.Errorf("p%g: merged %v, whole %v", p, a.Percentile(p), whole.Percentile(p))
		}
	}
	if a.Count() != whole.Count() || a.Max() != whole.Max() {
		t.Errorf("merged count/max %d/%v, whole %d/%v", a.Count(), a.Max(), whole.Count(), whole.Max())
	}
}

func TestBuckets(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	check := func(v uint64) {
		i := bucketOf(v)
		if i < 0 || i >= histBuckets {
			t.Fatalf("bucketOf(%d) = %d, outside [0,%d)", v, i, histBuckets)
		}
		hi := bucketHigh(i)
		if hi < v || bucketOf(hi) != i {
			t.Fatalf("value %d: bucket %d tops at %d", v, i, hi)
		}
		if v > 255 && float64(hi-v) > float64(v)/128 {
			t.Fatalf("value %d: bucket %d is wider than 1/128 (top %d)", v, i, hi)
		}
	}
	for v := uint64(0); v < 4096; v++ {
		check(v)
	}
	for i := 0; i < 100000; i++ {
		check(rng.Uint64() >> rng.UintN(64))
	}
	check(^uint64(0))
}
