package limiter

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/cespare/xxhash/v2"
)

// keyHashes returns n hashes of distinct keys, as the proxy would compute them.
func keyHashes(n int) []uint64 {
	h := make([]uint64, n)
	var b [8]byte
	for i := range h {
		binary.LittleEndian.PutUint64(b[:], uint64(i))
		h[i] = xxhash.Sum64(b[:])
	}
	return h
}

// BenchmarkTake measures one decision: over 1k tracked keys (tables in cache), over
// 1M (a cache miss per decision), on one hot key (mostly rejecting) and on new keys
// past the key limit (evicting).
func BenchmarkTake(b *testing.B) {
	keys := keyHashes(1 << 20)
	for _, n := range []int{1 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("keys=%d", n), func(b *testing.B) {
			s := newStore(b, 1000, 100, 2*n)
			for _, k := range keys[:n] {
				s.Take(k, t0)
			}
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				s.Take(keys[i&(n-1)], t0+int64(i))
			}
		})
	}
	b.Run("hot", func(b *testing.B) {
		s := newStore(b, 1000, 100, 0)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			s.Take(keys[0], t0+int64(i))
		}
	})
	b.Run("evict", func(b *testing.B) {
		s := newStore(b, 1e-3, 1, 1<<14)
		for _, k := range keys[:1<<14] {
			s.Take(k, t0)
		}
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			s.Take(uint64(i)*0x9E3779B97F4A7C15+12345, t0)
		}
	})
}

// BenchmarkTakeParallel measures decisions from all cores: over distinct keys (spread
// over the shards) and on one hot key (one shard lock, the flash-sale item case).
func BenchmarkTakeParallel(b *testing.B) {
	keys := keyHashes(1 << 20)
	var clock atomic.Int64
	for _, n := range []int{1 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("keys=%d", n), func(b *testing.B) {
			s := newStore(b, 1000, 100, 2*n)
			for _, k := range keys[:n] {
				s.Take(k, t0)
			}
			b.ReportAllocs()
			b.ResetTimer()
			var seq atomic.Uint64
			b.RunParallel(func(pb *testing.PB) {
				i := seq.Add(7919)
				now := t0
				for pb.Next() {
					i++
					now += 10
					s.Take(keys[i&uint64(n-1)], now)
				}
			})
		})
	}
	b.Run("hot", func(b *testing.B) {
		s := newStore(b, 1000, 100, 0)
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			now := t0 + clock.Add(1)
			for pb.Next() {
				now += 10
				s.Take(keys[0], now)
			}
		})
	})
}

// BenchmarkMemory reports the heap bytes per tracked key (bytes/key) of a store filled
// with 1M and 10M non-full buckets.
func BenchmarkMemory(b *testing.B) {
	for _, n := range []int{1 << 20, 10_000_000} {
		b.Run(fmt.Sprintf("keys=%d", n), func(b *testing.B) {
			var perKey float64
			for b.Loop() {
				perKey = heapPerKey(n)
			}
			b.ReportMetric(perKey, "bytes/key")
		})
	}
}
