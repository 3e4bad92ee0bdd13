package cache

import (
	"sync"
	"time"
)

const flightShards = 64

type flightShard struct {
	mu      sync.Mutex
	m       map[uint64]*flight
	refresh map[uint64]int64 // key hash → refresh start (unix nanos)
	_       [40]byte         // keep shards on separate cache lines
}

// flight is one in-progress origin fetch. ch is made only when a follower arrives, so a
// leader without followers allocates nothing (flights are pooled).
type flight struct {
	ch    chan struct{}
	start int64 // unix nanos when the leader acquired it
}

var flightPool = sync.Pool{New: func() any { return new(flight) }}

// Ticket is the outcome of Acquire. It is a small value; copy it freely, but a leader must
// call Done exactly once, and only the leader.
type Ticket struct {
	c      *Cache
	f      *flight
	ch     chan struct{}
	key    uint64
	leader bool
}

// Acquire joins the fetch for keyHash (KeyHash of the primary key) at now. The first
// caller becomes the leader (Ticket.Leader): it fetches, stores, then calls Done. Later
// callers are followers: they call Wait, then Lookup again, and on a Miss go to the origin
// themselves without calling Acquire again (the leader's answer was not cacheable, or it
// took too long), so an uncacheable URL never serialises its requests. A flight older than
// Config.RefreshTimeout is presumed lost (a leader that never called Done) and the caller
// takes over as the new leader. A leader without followers does not allocate; the first
// follower allocates one channel.
func (c *Cache) Acquire(keyHash uint64, now time.Time) Ticket {
	n := now.UnixNano()
	s := &c.flights[keyHash%flightShards]
	s.mu.Lock()
	if f, ok := s.m[keyHash]; ok && n-f.start < c.refreshT {
		if f.ch == nil {
			f.ch = make(chan struct{})
		}
		ch := f.ch
		s.mu.Unlock()
		return Ticket{ch: ch, key: keyHash}
	}
	f := flightPool.Get().(*flight)
	f.start = n
	s.m[keyHash] = f
	s.mu.Unlock()
	return Ticket{c: c, f: f, key: keyHash, leader: true}
}

// Leader reports whether this caller must fetch from the origin.
func (t Ticket) Leader() bool { return t.leader }

// Done ends the leader's flight and wakes every follower at once (channel close). Call it
// after Store (or after deciding not to store), also on errors: use defer.
func (t Ticket) Done() {
	if !t.leader {
		return
	}
	s := &t.c.flights[t.key%flightShards]
	s.mu.Lock()
	if s.m[t.key] == t.f { // not taken over meanwhile
		delete(s.m, t.key)
	}
	ch := t.f.ch
	t.f.ch = nil
	s.mu.Unlock()
	if ch != nil {
		close(ch)
	}
	flightPool.Put(t.f)
}

var timerPool sync.Pool

// Wait blocks a follower until the leader calls Done (true) or timeout passes (false).
// A leader's Wait returns true at once. Followers are woken by the close itself, with no
// polling interval.
func (t Ticket) Wait(timeout time.Duration) bool {
	if t.leader || t.ch == nil {
		return true
	}
	select {
	case <-t.ch:
		return true
	default:
	}
	if timeout <= 0 {
		return false
	}
	var tm *time.Timer
	if v := timerPool.Get(); v != nil {
		tm = v.(*time.Timer)
		tm.Reset(timeout)
	} else {
		tm = time.NewTimer(timeout)
	}
	defer func() {
		tm.Stop() // Go ≥1.23: no stale value can be received after Stop
		timerPool.Put(tm)
	}()
	select {
	case <-t.ch:
		return true
	case <-tm.C:
		return false
	}
}

// TryStartRefresh claims the one background refresh of keyHash (for a Stale answer). It
// returns false when another refresh of that key is running and started less than
// Config.RefreshTimeout ago. The winner must call EndRefresh when finished, also on error.
// It does not allocate once the shard's map has grown.
func (c *Cache) TryStartRefresh(keyHash uint64, now time.Time) bool {
	s := &c.flights[keyHash%flightShards]
	n := now.UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	if start, ok := s.refresh[keyHash]; ok && n-start < c.refreshT {
		return false
	}
	s.refresh[keyHash] = n
	return true
}

// EndRefresh releases the refresh claimed by TryStartRefresh.
func (c *Cache) EndRefresh(keyHash uint64) {
	s := &c.flights[keyHash%flightShards]
	s.mu.Lock()
	delete(s.refresh, keyHash)
	s.mu.Unlock()
}
