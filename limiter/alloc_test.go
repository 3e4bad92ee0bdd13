//go:build !race

package limiter

import (
	"testing"
	"time"
)

// TestZeroAllocs guards the promise that a decision allocates nothing once a key's
// shard has room: Take (pass and reject), Reserve, Refund, and eviction at the limit.
func TestZeroAllocs(t *testing.T) {
	s := newStore(t, 1, 5, 1024)
	for k := uint64(0); k < 4096; k++ { // fill to the key limit: later keys evict
		s.Take(k, t0)
	}
	now, k := t0, uint64(1<<40)
	f := func(name string, op func()) {
		t.Helper()
		if n := testing.AllocsPerRun(1000, op); n != 0 {
			t.Fatalf("%s allocates %v times per run; want 0", name, n)
		}
	}
	f("Take", func() { now++; s.Take(7, now) })
	f("Take new key (evicts)", func() { k++; s.Take(k, now) })
	f("Reserve", func() { s.Reserve(8, now, time.Second) })
	f("Refund", func() { s.Take(9, now); s.Refund(9, now) })
	f("Rate and Burst", func() { _, _ = s.Rate(), s.Burst() })
	if s.Evictions() == 0 {
		t.Fatal("Evictions = 0; want the new keys to have evicted")
	}
}
