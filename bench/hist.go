package main

import (
	"math"
	"math/bits"
	"time"
)

// subBits sets the histogram's precision: each power-of-two range of values is split
// into 2^subBits linear buckets, so a recorded value is known within 1/2^subBits
// (under 0.8%) of itself, and values below 2^(subBits+1) exactly.
const subBits = 7

// histBuckets covers every uint64 value.
const histBuckets = (64 - subBits + 1) << subBits

// Histogram is a log-linear latency histogram in the manner of HdrHistogram:
// fixed memory (about 58 KB), O(1) Record, percentiles within 0.8% of the true
// sample. Values are durations in nanoseconds. A Histogram is not safe for
// concurrent use: give each goroutine its own and Merge them afterwards.
type Histogram struct {
	counts [histBuckets]uint64
	total  uint64
	sum    float64
	min    uint64
	max    uint64
}

// NewHistogram returns an empty histogram.
func NewHistogram() *Histogram { return &Histogram{min: math.MaxUint64} }

// bucketOf returns the bucket index of v: v itself below 2^(subBits+1), then
// 2^subBits buckets per power of two.
func bucketOf(v uint64) int {
	k := bits.Len64(v) - subBits - 1
	if k < 0 {
		k = 0
	}
	return k<<subBits + int(v>>uint(k))
}

// bucketHigh returns the highest value that falls into bucket i.
func bucketHigh(i int) uint64 {
	k := i>>subBits - 1
	if k < 0 {
		return uint64(i)
	}
	m := uint64(i - k<<subBits)
	return m<<uint(k) + (1<<uint(k) - 1)
}

// Record adds one sample; negative durations count as 0.
func (h *Histogram) Record(d time.Duration) {
	v := uint64(0)
	if d > 0 {
		v = uint64(d)
	}
	h.counts[bucketOf(v)]++
	h.total++
	h.sum += float64(v)
	if v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
}

// Merge adds every sample of o to h.
func (h *Histogram) Merge(o *Histogram) {
	if o.total == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.total += o.total
	h.sum += o.sum
	h.min = min(h.min, o.min)
	h.max = max(h.max, o.max)
}

// Count returns the number of samples.
func (h *Histogram) Count() uint64 { return h.total }

// Max returns the largest sample exactly (0 when empty).
func (h *Histogram) Max() time.Duration { return time.Duration(h.max) }

// Mean returns the exact mean of the samples (0 when empty).
func (h *Histogram) Mean() time.Duration {
	if h.total == 0 {
		return 0
	}
	return time.Duration(h.sum / float64(h.total))
}

// Percentile returns the smallest recorded value v (to bucket precision, reported as
// the top of its bucket and never above Max) such that at least p percent of the
// samples are ≤ v. p is in [0, 100]; an empty histogram gives 0.
func (h *Histogram) Percentile(p float64) time.Duration {
	if h.total == 0 {
		return 0
	}
	rank := uint64(math.Ceil(p / 100 * float64(h.total)))
	if rank < 1 {
		rank = 1
	}
	if rank > h.total {
		rank = h.total
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return time.Duration(min(bucketHigh(i), h.max))
		}
	}
	return time.Duration(h.max)
}
