//go:build !race

package breaker

import (
	"testing"
	"time"
)

func TestZeroAllocs(t *testing.T) {
	b, err := New(Config{MinRequests: 5, SlowThreshold: time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_700_000_000, 0)
	i := 0
	n := testing.AllocsPerRun(1000, func() {
		i++
		now = now.Add(time.Millisecond)
		if b.Allow(now) {
			b.Record(now, i%2 == 0, time.Duration(i%3)*time.Millisecond)
		}
		_ = b.State()
	})
	if n != 0 {
		t.Errorf("%v allocs per Allow+Record, want 0", n)
	}
}

func BenchmarkAllowRecord(b *testing.B) {
	br, _ := New(Config{}, nil)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			now := time.Now()
			if br.Allow(now) {
				br.Record(now, false, time.Millisecond)
			}
		}
	})
}
