package waitroom

import (
	"testing"
	"time"
)

func TestController(t *testing.T) {
	a := &Adaptive{On: true, MinRate: 10, LatencyTarget: 500 * time.Millisecond, MaxErrorRatio: 0.05}
	var c controller
	f := func(h health, wantRate float64, wantWhy string) {
		t.Helper()
		rate, why := c.step(a, 100, false, h)
		if rate < wantRate-1e-9 || rate > wantRate+1e-9 || why != wantWhy {
			t.Fatalf("step(%+v) = %v %q, want %v %q", h, rate, why, wantRate, wantWhy)
		}
	}
	f(health{}, 100, reasonConfigured)
	f(health{count: 100, p90: latLower(latBucket(time.Second))}, 70, reasonLatency)
	f(health{count: 100, bad: 10, p90: time.Millisecond}, 49, reasonErrors)
	f(health{count: 1, breaker: 1}, 34.3, reasonBreaker)
	for i := 0; i < 10; i++ {
		c.step(a, 100, false, health{count: 100, p90: 10 * time.Second})
	}
	f(health{count: 100, p90: 10 * time.Second}, 10, reasonLatency) // the floor
	f(health{count: 100, p90: 10 * time.Millisecond}, 20, reasonRecovering)
	f(health{count: 3, bad: 3}, 30, reasonRecovering) // too few requests to judge
	for i := 0; i < 6; i++ {
		c.step(a, 100, false, health{})
	}
	f(health{}, 100, reasonConfigured)
	if rate, why := c.step(a, 40, true, health{}); rate != 40 || why != reasonOverride {
		t.Fatalf("override under the rate: %v %q", rate, why)
	}
}

func TestLatencyBuckets(t *testing.T) {
	for _, d := range []time.Duration{0, time.Microsecond, 3 * time.Microsecond, 499 * time.Millisecond, 501 * time.Millisecond, time.Second, time.Hour} {
		i := latBucket(d)
		lo := latLower(i)
		if lo > max(d, time.Microsecond) || latBucket(lo) != i || (d >= 4*time.Microsecond && i+1 < latBuckets && latLower(i+1) <= d) {
			t.Fatalf("%v in bucket %d [%v, %v)", d, i, lo, latLower(i+1))
		}
	}
}

// TestAdaptiveRoom: slow protected requests make the room's rate drop, healthy ones make
// it recover; Stats says so.
func TestAdaptiveRoom(t *testing.T) {
	t.Parallel()
	o := options(100)
	o.Adaptive = Adaptive{On: true, MinRate: 10, LatencyTarget: 200 * time.Millisecond}
	r := nodes(t, 1, "adapt", NewMemoryStore(), o, nil)[0]
	leaderOf(t, []*Room{r})
	feed := func(d time.Duration, until func(Stats) bool, what string) Stats {
		t.Helper()
		var s Stats
		waitFor(t, 20*time.Second, what, func() bool {
			for i := 0; i < 20; i++ {
				r.Observe(d, 200, false)
			}
			s = r.Stats()
			return until(s)
		})
		return s
	}
	s := feed(800*time.Millisecond, func(s Stats) bool { return s.AdmitRate < 40 }, "the rate backing off")
	t.Logf("slow upstream: rate %.1f (%s)", s.AdmitRate, s.Reason)
	if s.Reason != reasonLatency {
		t.Fatalf("reason %q, want %q", s.Reason, reasonLatency)
	}
	s = feed(20*time.Millisecond, func(s Stats) bool { return s.AdmitRate >= 100 }, "the rate recovering")
	t.Logf("healthy again: rate %.1f (%s)", s.AdmitRate, s.Reason)
	if s.Reason != reasonConfigured {
		t.Fatalf("reason %q, want %q", s.Reason, reasonConfigured)
	}
}
