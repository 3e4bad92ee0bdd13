package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// Errors of Publish and Delete.
var (
	ErrStopped      = errors.New("cluster stopped")
	ErrTooLarge     = errors.New("cluster entry larger than MaxMessageSize")
	ErrTooManyKinds = errors.New("too many cluster kinds")
	ErrBadKey       = errors.New("bad cluster kind or key")
)

// Entry is one replicated key of a kind, as handed to Get, Entries and
// subscribers. It is a copy the caller owns, except Value, which is shared and
// must not be modified (it may be retained).
type Entry struct {
	Kind    string
	Key     string
	Value   []byte    // nil when Deleted
	Expires time.Time // zero: never
	Version uint64    // hybrid logical clock: unix ms << 16 | counter
	Origin  string    // name of the node that wrote this version
	Deleted bool      // the key was deleted (Delete) or expired
	Expired bool      // Deleted because Expires passed
}

func (e *entry) export(expired bool) Entry {
	x := Entry{Kind: e.kind, Key: e.key, Value: e.value, Version: e.version, Origin: e.origin,
		Deleted: e.deleted || expired, Expired: expired}
	if e.expires != 0 {
		x.Expires = time.UnixMilli(e.expires)
	}
	if x.Deleted {
		x.Value = nil
	}
	return x
}

// hlc is a hybrid logical clock: versions follow wall time (so a restarted node
// does not reuse old versions) yet always exceed every version seen.
type hlc struct{ last atomic.Uint64 }

func (c *hlc) next(now time.Time) uint64 {
	for {
		last := c.last.Load()
		v := uint64(now.UnixMilli()) << 16
		if v <= last {
			v = last + 1
		}
		if c.last.CompareAndSwap(last, v) {
			return v
		}
	}
}

func (c *hlc) observe(v uint64) {
	for {
		last := c.last.Load()
		if v <= last || c.last.CompareAndSwap(last, v) {
			return
		}
	}
}

// store holds every kind's entries and tombstones.
type store struct {
	mu       sync.RWMutex
	kinds    map[string]map[string]*entry
	maxKinds int
	maxPer   func(kind string) int
	evicted  atomic.Uint64
}

// apply stores e if it wins over what the store holds. notify reports whether
// subscribers should hear of it: a new or changed live value, or the deletion
// of a live one.
func (s *store) apply(e *entry, nowMS int64) (applied, notify bool, err error) {
	if e.expired(nowMS) {
		return false, false, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.kinds[e.kind]
	if t == nil {
		if len(s.kinds) >= s.maxKinds {
			return false, false, fmt.Errorf("cannot add kind %q: %w (max %d)", e.kind, ErrTooManyKinds, s.maxKinds)
		}
		t = make(map[string]*entry)
		s.kinds[e.kind] = t
	}
	cur := t[e.key]
	if cur != nil && !e.newer(cur) {
		return false, false, nil
	}
	wasLive := cur != nil && !cur.deleted && !cur.expired(nowMS)
	if cur == nil && len(t) >= s.maxPer(e.kind) {
		s.evictLocked(t, nowMS)
	}
	t[e.key] = e
	return true, !e.deleted || wasLive, nil
}

// evictLocked makes room for one entry in a full kind: it drops expired entries,
// then the tombstone, else the live entry, that expires soonest. Subscribers are
// not told: the entry is still valid on the nodes that kept it.
func (s *store) evictLocked(t map[string]*entry, nowMS int64) {
	var victim *entry
	for k, e := range t {
		if e.expired(nowMS) {
			delete(t, k)
		} else if victim == nil || evictBefore(e, victim) {
			victim = e
		}
	}
	if victim != nil && len(t) >= s.maxPer(victim.kind) {
		delete(t, victim.key)
		s.evicted.Add(1)
	}
}

func evictBefore(a, b *entry) bool {
	if a.deleted != b.deleted {
		return a.deleted
	}
	ae, be := a.expires, b.expires
	if ae == 0 {
		ae = 1<<63 - 1
	}
	if be == 0 {
		be = 1<<63 - 1
	}
	return ae < be
}

func (s *store) get(kind, key string, nowMS int64) (Entry, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	e := s.kinds[kind][key]
	if e == nil || e.deleted || e.expired(nowMS) {
		return Entry{}, false
	}
	return e.export(false), true
}

func (s *store) entries(kind string, nowMS int64) []Entry {
	s.mu.RLock()
	t := s.kinds[kind]
	out := make([]Entry, 0, len(t))
	for _, e := range t {
		if !e.deleted && !e.expired(nowMS) {
			out = append(out, e.export(false))
		}
	}
	s.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// sweep drops expired entries and tombstones and returns the live entries that
// expired, for subscribers.
func (s *store) sweep(nowMS int64) []*entry {
	var gone []*entry
	s.mu.Lock()
	for _, t := range s.kinds {
		for k, e := range t {
			if e.expired(nowMS) {
				delete(t, k)
				if !e.deleted {
					gone = append(gone, e)
				}
			}
		}
	}
	s.mu.Unlock()
	return gone
}

// appendState encodes live entries, then tombstones, until maxBytes.
func (s *store) appendState(dst []byte, maxBytes int, nowMS int64) []byte {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var body []byte
	n := 0
	var scratch []byte
	for pass := range 2 {
		for _, t := range s.kinds {
			for _, e := range t {
				if e.deleted != (pass == 1) || e.expired(nowMS) {
					continue
				}
				scratch = appendEntry(scratch[:0], e)
				if len(body)+len(scratch)+3 > maxBytes {
					continue
				}
				body = appendBytes(body, scratch)
				n++
			}
		}
	}
	dst = append(dst, msgState)
	dst = binary.AppendUvarint(dst, uint64(n))
	return append(dst, body...)
}

func (s *store) counts(nowMS int64) (live, tombstones int) {
	s.mu.RLock()
	for _, t := range s.kinds {
		for _, e := range t {
			switch {
			case e.expired(nowMS):
			case e.deleted:
				tombstones++
			default:
				live++
			}
		}
	}
	s.mu.RUnlock()
	return live, tombstones
}

// broadcast is one entry message in the transmit queue. A newer version of a
// key replaces an older one still queued.
type broadcast struct {
	name string
	msg  []byte
}

func (b *broadcast) Invalidates(o memberlist.Broadcast) bool {
	ob, ok := o.(*broadcast)
	return ok && ob.name == b.name
}
func (b *broadcast) Name() string    { return b.name }
func (b *broadcast) Message() []byte { return b.msg }
func (b *broadcast) Finished()       {}

func broadcastName(kind, key string) string { return kind + "\x00" + key }

// subscriber is one Subscribe registration; only the delivery goroutine reads fn.
type subscriber struct {
	kind      string
	fn        func(Entry)
	cancelled atomic.Bool
	replayed  chan struct{}
}

// Publish sets key of kind to value on this node and gossips it to every live
// node; ttl 0 means it never expires, otherwise it expires on every node at
// now+ttl by each node's clock (keep clocks in sync with NTP). The newest
// version wins everywhere. Subscribers on this node are not called: the caller
// applies its own change. value is copied. Safe for concurrent use; it does not
// block on the network.
func (c *Cluster) Publish(kind, key string, value []byte, ttl time.Duration) error {
	if ttl < 0 {
		return fmt.Errorf("cannot publish %s %q: negative ttl %v", kind, key, ttl)
	}
	now := time.Now()
	e := &entry{kind: kind, key: key, origin: c.name, value: append([]byte{}, value...)}
	if ttl > 0 {
		e.expires = now.Add(ttl).UnixMilli()
	}
	return c.write(e, now)
}

// Delete removes key of kind on every live node. The deletion is remembered as
// a tombstone for Options.TombstoneTTL so a node that missed it cannot bring the
// old value back through push/pull. Subscribers on this node are not called.
// Safe for concurrent use; it does not block on the network.
func (c *Cluster) Delete(kind, key string) error {
	now := time.Now()
	e := &entry{kind: kind, key: key, origin: c.name, deleted: true,
		expires: now.Add(c.opts.TombstoneTTL).UnixMilli()}
	return c.write(e, now)
}

func (c *Cluster) write(e *entry, now time.Time) error {
	if len(e.kind) == 0 || len(e.kind) > MaxKindLen || len(e.key) == 0 || len(e.key) > MaxKeyLen {
		return fmt.Errorf("cannot write %s %q: %w (kind 1..%d bytes, key 1..%d bytes)",
			e.kind, e.key, ErrBadKey, MaxKindLen, MaxKeyLen)
	}
	if c.stopped.Load() {
		return fmt.Errorf("cannot write %s %q: %w", e.kind, e.key, ErrStopped)
	}
	e.version = c.clock.next(now)
	msg := appendEntry(make([]byte, 0, 32+len(e.kind)+len(e.key)+len(e.origin)+len(e.value)), e)
	if len(msg) > MaxMessageSize {
		return fmt.Errorf("cannot write %s %q: %w (%d > %d bytes)", e.kind, e.key, ErrTooLarge, len(msg), MaxMessageSize)
	}
	if _, _, err := c.store.apply(e, now.UnixMilli()); err != nil {
		return err
	}
	c.queue.QueueBroadcast(&broadcast{name: broadcastName(e.kind, e.key), msg: msg})
	return nil
}

// Get returns the live value of key in kind on this node.
func (c *Cluster) Get(kind, key string) (Entry, bool) {
	return c.store.get(kind, key, time.Now().UnixMilli())
}

// Entries returns the live entries of kind on this node, sorted by key.
func (c *Cluster) Entries(kind string) []Entry {
	return c.store.entries(kind, time.Now().UnixMilli())
}

// Subscribe calls fn for every change of kind that reaches this node from
// another node (a newer value, a deletion), and for every entry of kind that
// expires here (Deleted and Expired set). Before it returns, fn has been
// called with every current live entry of kind, so a subscriber registered
// after a join still sees them; fn must not call Subscribe. fn runs on one
// delivery goroutine shared by all subscribers, never on memberlist's: it may
// block briefly, but a slow fn delays every delivery. A change may be
// delivered more than once, so fn must be idempotent. cancel stops deliveries
// to fn (one already running finishes).
func (c *Cluster) Subscribe(kind string, fn func(Entry)) (cancel func()) {
	s := &subscriber{kind: kind, fn: fn, replayed: make(chan struct{})}
	select {
	case c.subCh <- s:
		select {
		case <-s.replayed:
		case <-c.done:
		}
	case <-c.done:
	}
	return func() { s.cancelled.Store(true) }
}

// kvDelegate adapts Cluster to memberlist's Delegate.
type kvDelegate Cluster

func (d *kvDelegate) NodeMeta(limit int) []byte {
	m := []byte{metaVersion, 0}
	if d.leaving.Load() {
		m[1] |= metaLeaving
	}
	return m
}

// NotifyMsg runs on memberlist's packet goroutine: copy and hand over, never block.
func (d *kvDelegate) NotifyMsg(b []byte) {
	if len(b) == 0 {
		return
	}
	cp := append([]byte{}, b...)
	select {
	case d.msgCh <- cp:
	default:
		d.stats.dropped.Add(1)
	}
}

func (d *kvDelegate) GetBroadcasts(overhead, limit int) [][]byte {
	msgs := d.queue.GetBroadcasts(overhead, limit)
	for _, m := range msgs {
		d.stats.broadcastBytes.Add(uint64(len(m) + overhead))
	}
	d.stats.broadcasts.Add(uint64(len(msgs)))
	return msgs
}

func (d *kvDelegate) LocalState(join bool) []byte {
	return d.store.appendState(nil, d.opts.MaxStateBytes, time.Now().UnixMilli())
}

// MergeRemoteState runs on a push/pull stream goroutine; it may wait for the
// delivery goroutine, but not past the TCP timeout.
func (d *kvDelegate) MergeRemoteState(b []byte, join bool) {
	if len(b) == 0 {
		return
	}
	cp := append([]byte{}, b...)
	t := time.NewTimer(d.opts.TCPTimeout)
	defer t.Stop()
	select {
	case d.stateCh <- cp:
	case <-d.done:
	case <-t.C:
		d.stats.dropped.Add(1)
	}
}

// deliverLoop is the one goroutine that applies remote changes, relays them,
// sweeps expired entries and calls subscribers.
func (c *Cluster) deliverLoop() {
	defer c.wg.Done()
	subs := map[string][]*subscriber{}
	deliver := func(e *entry, expired bool) {
		list := subs[e.kind]
		kept := list[:0]
		for _, s := range list {
			if s.cancelled.Load() {
				continue
			}
			kept = append(kept, s)
			s.fn(e.export(expired))
		}
		clear(list[len(kept):])
		subs[e.kind] = kept
	}
	tick := time.NewTicker(c.opts.SweepInterval)
	defer tick.Stop()
	for {
		select {
		case <-c.done:
			return
		case b := <-c.msgCh:
			c.handleMsg(b, deliver)
		case b := <-c.stateCh:
			nowMS := time.Now().UnixMilli()
			err := decodeState(b, func(e entry) {
				c.clock.observe(e.version)
				if _, notify, err := c.store.apply(&e, nowMS); err != nil {
					c.stats.invalid.Add(1)
				} else if notify {
					c.stats.applied.Add(1)
					deliver(&e, false)
				}
			})
			if err != nil {
				c.stats.invalid.Add(1)
				c.log.Warn("cluster: bad push/pull state", "error", err)
			}
		case s := <-c.subCh:
			subs[s.kind] = append(subs[s.kind], s)
			for _, x := range c.store.entries(s.kind, time.Now().UnixMilli()) {
				if s.cancelled.Load() {
					break
				}
				s.fn(x)
			}
			close(s.replayed)
		case now := <-tick.C:
			for _, e := range c.store.sweep(now.UnixMilli()) {
				deliver(e, true)
			}
			c.members.reap(now)
		}
	}
}

func (c *Cluster) handleMsg(b []byte, deliver func(*entry, bool)) {
	if b[0] != msgEntry {
		c.stats.invalid.Add(1)
		return
	}
	e, err := decodeEntry(b)
	if err != nil {
		c.stats.invalid.Add(1)
		c.log.Debug("cluster: bad message", "error", err)
		return
	}
	c.stats.received.Add(1)
	c.clock.observe(e.version)
	applied, notify, err := c.store.apply(&e, time.Now().UnixMilli())
	if err != nil {
		c.stats.invalid.Add(1)
		return
	}
	if !applied {
		return
	}
	c.stats.applied.Add(1)
	// memberlist does not relay user broadcasts: relay a version on first
	// receipt, so it reaches nodes the origin's few transmissions missed.
	c.stats.relayed.Add(1)
	c.queue.QueueBroadcast(&broadcast{name: broadcastName(e.kind, e.key), msg: b})
	if notify {
		deliver(&e, false)
	}
}
