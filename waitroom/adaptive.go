package waitroom

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// Adaptive control, once a second: unhealthy multiplies the rate by backoff (not below
// MinRate), healthy adds recoverStep × the base rate (not above it).
const (
	adaptEvery  = time.Second
	backoff     = 0.7
	recoverStep = 0.1
	// minSamples is the fewest requests in a second that can show slowness or errors; an
	// open breaker counts from one.
	minSamples = 5
)

// Reasons for the rate in force (Stats.Reason).
const (
	reasonConfigured = "configured"
	reasonOverride   = "override" // SetAdmitRate
	reasonLatency    = "latency"  // p90 over Adaptive.LatencyTarget
	reasonErrors     = "errors"   // 5xx share over Adaptive.MaxErrorRatio
	reasonBreaker    = "breaker_open"
	reasonRecovering = "recovering"
)

// latBuckets is the size of the latency histogram: 4 buckets per power of two of
// microseconds, up to about 2^38 µs (3 days; longer lands in the last).
const latBuckets = 4 * 38

// observations are the protected requests finished since the controller last looked.
// Observe only does atomic adds.
type observations struct {
	count, bad, breaker atomic.Uint64
	hist                [latBuckets]atomic.Uint64
}

// latBucket maps a duration to its histogram bucket: 4 per power of two of microseconds.
func latBucket(d time.Duration) int {
	us := uint64(max(d.Microseconds(), 1))
	e := bits.Len64(us) - 1
	sub := 0
	if e >= 2 {
		sub = int(us>>(e-2)) & 3
	}
	return min(e*4+sub, latBuckets-1)
}

// latLower is the smallest duration of bucket i.
func latLower(i int) time.Duration {
	e, sub := i/4, i%4
	if e < 2 {
		return time.Duration(1<<e) * time.Microsecond
	}
	return time.Duration((4+sub)<<(e-2)) * time.Microsecond
}

// health is what one period of observations says.
type health struct {
	count, bad, breaker uint64
	p90                 time.Duration // the lower bound of the bucket holding the 90th percentile
}

// drain reads and resets the observations.
func (o *observations) drain() health {
	h := health{count: o.count.Swap(0), bad: o.bad.Swap(0), breaker: o.breaker.Swap(0)}
	var counts [latBuckets]uint64
	var total uint64
	for i := range o.hist {
		counts[i] = o.hist[i].Swap(0)
		total += counts[i]
	}
	if total > 0 {
		want := (total*9 + 9) / 10
		var cum uint64
		for i, c := range counts {
			cum += c
			if cum >= want {
				h.p90 = latLower(i)
				break
			}
		}
	}
	return h
}

// controller is the adaptive rate of one node; only the goroutine of the leader loop uses it.
type controller struct {
	rate   float64
	reason string
}

// step moves the rate one period on: base is the rate configured (or overridden), h the
// period's health. It returns the rate in force and its reason.
func (c *controller) step(a *Adaptive, base float64, overridden bool, h health) (float64, string) {
	steady := reasonConfigured
	if overridden {
		steady = reasonOverride
	}
	if !a.On || c.rate <= 0 || c.rate > base {
		c.rate, c.reason = base, steady
		if !a.On {
			return c.rate, c.reason
		}
	}
	minRate := a.MinRate
	if minRate <= 0 {
		minRate = base / 10
	}
	minRate = min(minRate, base)
	target := a.LatencyTarget
	if target <= 0 {
		target = 500 * time.Millisecond
	}
	maxErr := a.MaxErrorRatio
	if maxErr <= 0 {
		maxErr = 0.05
	}
	why := ""
	switch {
	case h.breaker > 0:
		why = reasonBreaker
	case h.count >= minSamples && float64(h.bad)/float64(h.count) > maxErr:
		why = reasonErrors
	case h.count >= minSamples && h.p90 > target:
		why = reasonLatency
	}
	if why != "" {
		c.rate, c.reason = max(minRate, c.rate*backoff), why
		return c.rate, c.reason
	}
	c.rate = min(base, c.rate+base*recoverStep)
	if c.rate < base {
		c.reason = reasonRecovering
	} else {
		c.reason = steady
	}
	return c.rate, c.reason
}
