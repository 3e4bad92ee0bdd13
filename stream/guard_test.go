package stream

import (
	"net/netip"
	"testing"
	"time"
)

// The table of client addresses stays bounded whatever addresses come: an address with
// no connection and a full bucket is forgotten, and a new address finding the table
// full of live ones is refused rather than tracked.
func TestGuardBounded(t *testing.T) {
	ip := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}) }
	now := time.Unix(1000, 0)

	g := newGuard(1, 0, 0) // max_conns_per_ip only: an address is forgotten when its last connection ends
	for i := range 10000 {
		if ok, _ := g.admit(ip(i), now); !ok {
			t.Fatalf("address %d refused", i)
		}
		g.done(ip(i))
	}
	if n := g.tracked(); n != 0 {
		t.Errorf("%d addresses tracked with no connection open, want 0", n)
	}

	g = newGuard(0, 1, 2) // conn_rate 1r/s, burst 2: kept until the bucket refills
	g.maxSize = 100
	for i := range 100 {
		g.admit(ip(i), now)
		g.done(ip(i))
	}
	if ok, why := g.admit(ip(100), now); ok || why != "conns" {
		t.Errorf("a new address with the table full of fresh buckets: %v %q, want refused", ok, why)
	}
	later := now.Add(3 * time.Second) // every bucket has refilled
	if ok, _ := g.admit(ip(101), later); !ok {
		t.Error("after the buckets refilled, a new address is still refused")
	}
	if n := g.tracked(); n > 100 {
		t.Errorf("%d addresses tracked, bound 100", n)
	}
	// The bucket itself: two at once, then one a second.
	g = newGuard(0, 1, 2)
	a := ip(1)
	for i, want := range []bool{true, true, false} {
		if ok, _ := g.admit(a, now); ok != want {
			t.Errorf("connection %d at once: %v, want %v", i+1, ok, want)
		}
	}
	if ok, _ := g.admit(a, now.Add(1100*time.Millisecond)); !ok {
		t.Error("a second later: refused, want a token")
	}
}
