package stream

import (
	"net/netip"
	"sync"
	"time"
)

// guard bounds what one client address may do on a stream: connections open at once
// (max_conns_per_ip) and new connections per second (conn_rate, a token bucket of
// conn_burst). It tracks at most maxTracked addresses: an address with no connection
// open whose bucket has refilled is forgotten by the next sweep, and a new address
// finding the table full is refused (counted as limited) until one is. Safe for
// concurrent use; a reload builds a new guard only when the bounds change.
type guard struct {
	maxConns int     // 0: none
	rate     float64 // tokens per second; 0: none
	burst    float64

	mu      sync.Mutex
	ips     map[netip.Addr]*ipState
	lastGC  time.Time
	maxSize int
}

type ipState struct {
	conns  int
	tokens float64
	at     time.Time // when tokens was computed
}

// maxTracked bounds the addresses a guard tracks.
const maxTracked = 1 << 20

func newGuard(maxConns int, rate float64, burst int) *guard {
	return &guard{maxConns: maxConns, rate: rate, burst: float64(max(burst, 1)),
		ips: map[netip.Addr]*ipState{}, maxSize: maxTracked}
}

// active reports whether the guard bounds anything.
func (g *guard) active() bool { return g != nil && (g.maxConns > 0 || g.rate > 0) }

// admit takes a connection slot (and a token) for ip, or reports which bound said no:
// "conns" or "rate". A connection admitted must be given back with done.
func (g *guard) admit(ip netip.Addr, now time.Time) (ok bool, why string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	st := g.ips[ip]
	if st == nil {
		if len(g.ips) >= g.maxSize {
			g.sweepLocked(now)
			if len(g.ips) >= g.maxSize {
				return false, "conns"
			}
		}
		st = &ipState{tokens: g.burst, at: now}
		g.ips[ip] = st
	}
	if g.maxConns > 0 && st.conns >= g.maxConns {
		return false, "conns"
	}
	if g.rate > 0 {
		st.tokens = min(g.burst, st.tokens+now.Sub(st.at).Seconds()*g.rate)
		st.at = now
		if st.tokens < 1 {
			return false, "rate"
		}
		st.tokens--
	}
	st.conns++
	if now.Sub(g.lastGC) > 10*time.Second {
		g.sweepLocked(now)
	}
	return true, ""
}

// done gives back the slot of a connection of ip that admit let in.
func (g *guard) done(ip netip.Addr) {
	g.mu.Lock()
	if st := g.ips[ip]; st != nil {
		st.conns--
		if st.conns <= 0 && g.rate == 0 {
			delete(g.ips, ip)
		}
	}
	g.mu.Unlock()
}

// sweepLocked forgets the addresses with no connection and a full bucket.
func (g *guard) sweepLocked(now time.Time) {
	g.lastGC = now
	for ip, st := range g.ips {
		if st.conns <= 0 && (g.rate == 0 || st.tokens+now.Sub(st.at).Seconds()*g.rate >= g.burst) {
			delete(g.ips, ip)
		}
	}
}

// tracked returns the number of addresses the guard holds.
func (g *guard) tracked() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.ips)
}
