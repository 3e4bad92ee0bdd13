package idempotency

import (
	"context"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"
)

// MemoryOptions configures NewMemory. Zero fields take their defaults.
type MemoryOptions struct {
	// MaxEntries bounds the number of keys held, in flight and completed. Default 100000.
	MaxEntries int
	// MaxBytes bounds the bytes held: records, scopes and keys plus entryOverhead per entry.
	// Default 64 MiB.
	MaxBytes int
	// MaxRecordBytes is the longest record Complete keeps (ErrTooLarge beyond). Default
	// DefaultMaxRecordBytes; at most a quarter of a shard's share of MaxBytes, so that one
	// record always fits next to others (it is lowered to that when larger).
	MaxRecordBytes int
}

// Defaults of MemoryOptions.
const (
	DefaultMaxEntries = 100_000
	DefaultMaxBytes   = 64 << 20
)

// entryOverhead is what an entry costs beyond its scope, key and record: the entry struct,
// its map slot and the map key. Counted in MaxBytes.
const entryOverhead = 160

// sweepEvery is how often a shard drops expired entries on the way of an insert;
// fullSweepEvery is how often it may try again when it is full of in-flight claims.
const (
	sweepEvery     = time.Second
	fullSweepEvery = 10 * time.Millisecond
)

// Memory is the Store of a single edge node: entries live in this process, in shards of
// their own mutex chosen by a hash of scope and key. Safe for concurrent use; build one per
// process and keep it across reloads. Calls never block on anything but a shard's mutex
// (Wait aside) and ignore ctx.
//
// Bounds: each of the shards holds at most its share of MaxEntries and MaxBytes (so the
// total never exceeds them; a shard may refuse while another has room). Expired entries
// (records past their ttl, claims past their lease) are treated as absent at once and
// dropped when an insert passes by, at least once a second per shard. When a new entry
// does not fit, the shard evicts its oldest completed records first (by completion time):
// an evicted record is forgotten early, so a later repeat is forwarded again. In-flight
// claims are never evicted: when only claims are left, Begin and Complete fail with an
// error matching ErrFull and ErrUnavailable, and the caller fails closed (503) or open as
// configured, until claims complete, abort or reach their lease.
//
// Allocation: Begin allocates one entry (and map growth) when it starts a claim and nothing
// otherwise;
// Replay returns the stored record itself (read-only). Complete allocates the copy of the
// record.
type Memory struct {
	shards     []memShard
	mask       uint64
	maxEntries int // per shard
	maxBytes   int // per shard
	maxRecord  int
	epoch      time.Time
}

type memShard struct {
	mu         sync.Mutex
	m          map[memKey]*memEntry
	head, tail *memEntry // completed entries, oldest first
	bytes      int
	inflight   int
	lastSweep  int64
	_          [64]byte // keep shards' mutexes on separate cache lines
}

type memKey struct{ scope, key string }

type memEntry struct {
	k          memKey
	fp         Fingerprint
	token      uint64
	done       bool
	deadline   int64 // since epoch: end of the lease while in flight, expiry when done
	size       int
	rec        Record
	prev, next *memEntry     // completed list
	wait       chan struct{} // closed when the entry changes state or goes; made by waiters
}

// NewMemory returns an empty memory store bounded by opts.
func NewMemory(opts MemoryOptions) *Memory {
	maxEntries := opts.MaxEntries
	if maxEntries <= 0 {
		maxEntries = DefaultMaxEntries
	}
	maxBytes := opts.MaxBytes
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	maxRecord := opts.MaxRecordBytes
	if maxRecord <= 0 {
		maxRecord = DefaultMaxRecordBytes
	}
	// As many shards as keep each one worth having: 16+ entries and room for 4 records.
	n := 64
	for n > 1 && (maxEntries/n < 16 || maxBytes/n < 4*(maxRecord+entryOverhead)) {
		n /= 2
	}
	m := &Memory{
		shards:     make([]memShard, n),
		mask:       uint64(n - 1),
		maxEntries: max(maxEntries/n, 1),
		maxBytes:   maxBytes / n,
		epoch:      time.Now(),
	}
	m.maxRecord = min(maxRecord, m.maxBytes/4)
	for i := range m.shards {
		m.shards[i].m = make(map[memKey]*memEntry)
	}
	return m
}

// now is the monotonic time since the store was made.
func (m *Memory) now() int64 { return int64(time.Since(m.epoch)) }

func (m *Memory) shard(scope, key string) *memShard {
	h := xxhash.Sum64String(key) ^ bits.RotateLeft64(xxhash.Sum64String(scope), 31)
	return &m.shards[h&m.mask]
}

// Begin implements Store.
func (m *Memory) Begin(_ context.Context, scope, key string, fp Fingerprint, lease time.Duration) (Result, error) {
	r, _, _, err := m.begin(scope, key, fp, lease, false)
	return r, err
}

// begin is Begin; with wait, an InProgress answer also returns the channel closed when the
// claim changes state and the end of its lease.
func (m *Memory) begin(scope, key string, fp Fingerprint, lease time.Duration, wait bool) (Result, <-chan struct{}, int64, error) {
	if err := checkKey(scope, key); err != nil {
		return Result{}, nil, 0, err
	}
	lease = leaseOrDefault(lease)
	s := m.shard(scope, key)
	k := memKey{scope, key}
	now := m.now()
	s.mu.Lock()
	e := s.m[k]
	if e != nil && e.deadline <= now {
		s.remove(e)
		e = nil
	}
	if e == nil {
		size := entryOverhead + len(scope) + len(key)
		if !s.makeRoom(m, 1, size, now) {
			s.mu.Unlock()
			return Result{}, nil, 0, errFull
		}
		e = &memEntry{k: k, fp: fp, token: rand.Uint64(), deadline: now + int64(lease), size: size}
		s.m[k] = e
		s.bytes += size
		s.inflight++
		token := e.token
		s.mu.Unlock()
		return Result{Outcome: Started, Claim: Claim{Scope: scope, Key: key, Fingerprint: fp, Token: token}}, nil, 0, nil
	}
	if e.fp != fp {
		s.mu.Unlock()
		return Result{Outcome: Reused}, nil, 0, nil
	}
	if e.done {
		rec := e.rec
		s.mu.Unlock()
		return Result{Outcome: Replay, Record: rec}, nil, 0, nil
	}
	var ch chan struct{}
	if wait {
		if e.wait == nil {
			e.wait = make(chan struct{})
		}
		ch = e.wait
	}
	end := e.deadline
	s.mu.Unlock()
	return Result{Outcome: InProgress}, ch, end, nil
}

// Wait implements Store: an InProgress caller sleeps on the claim's channel, woken by
// Complete or Abort, or by a timer at the end of the claim's lease.
func (m *Memory) Wait(ctx context.Context, scope, key string, fp Fingerprint, lease, maxWait time.Duration) (Result, error) {
	until := m.now() + int64(maxWait)
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		r, ch, leaseEnd, err := m.begin(scope, key, fp, lease, true)
		if err != nil || r.Outcome != InProgress {
			return r, err
		}
		now := m.now()
		if now >= until {
			return r, nil
		}
		d := time.Duration(min(until, leaseEnd) - now)
		if timer == nil {
			timer = time.NewTimer(d)
		} else {
			timer.Reset(d)
		}
		select {
		case <-ch:
		case <-timer.C:
		case <-ctx.Done():
			return r, fmt.Errorf("wait for idempotency key %q: %w", trim(key), ctx.Err())
		}
	}
}

// Complete implements Store.
func (m *Memory) Complete(ctx context.Context, c Claim, rec Record, ttl time.Duration) error {
	if err := checkKey(c.Scope, c.Key); err != nil {
		return err
	}
	if len(rec) > m.maxRecord {
		_ = m.Abort(ctx, c)
		return fmt.Errorf("record of %d bytes for idempotency key %q (max %d): %w", len(rec), trim(c.Key), m.maxRecord, ErrTooLarge)
	}
	ttl = ttlOrDefault(ttl)
	own := make(Record, len(rec))
	copy(own, rec)
	s := m.shard(c.Scope, c.Key)
	k := memKey{c.Scope, c.Key}
	now := m.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.m[k]
	if e != nil && e.deadline <= now {
		s.remove(e)
		e = nil
	}
	if e != nil {
		if e.token != c.Token {
			return fmt.Errorf("complete idempotency key %q: %w", trim(c.Key), ErrClaimLost)
		}
		if e.done {
			return nil
		}
		if !s.makeRoom(m, 0, len(own), now) {
			s.remove(e)
			return errFull
		}
		s.inflight--
		e.done = true
		e.rec = own
		e.size += len(own)
		s.bytes += len(own)
		e.deadline = now + int64(ttl)
		s.push(e)
		if e.wait != nil {
			close(e.wait)
			e.wait = nil
		}
		return nil
	}
	// The lease ran out and nobody took the key: the request did take effect, so record it.
	size := entryOverhead + len(c.Scope) + len(c.Key) + len(own)
	if !s.makeRoom(m, 1, size, now) {
		return errFull
	}
	e = &memEntry{k: k, fp: c.Fingerprint, token: c.Token, done: true, deadline: now + int64(ttl), size: size, rec: own}
	s.m[k] = e
	s.bytes += size
	s.push(e)
	return nil
}

// Abort implements Store.
func (m *Memory) Abort(_ context.Context, c Claim) error {
	if err := checkKey(c.Scope, c.Key); err != nil {
		return err
	}
	s := m.shard(c.Scope, c.Key)
	s.mu.Lock()
	if e := s.m[memKey{c.Scope, c.Key}]; e != nil && !e.done && e.token == c.Token {
		s.remove(e)
	}
	s.mu.Unlock()
	return nil
}

// MemoryStats is a snapshot of a memory store's size.
type MemoryStats struct {
	Entries  int // keys held, in flight and completed (expired ones not yet dropped included)
	InFlight int // claims not completed
	Bytes    int // as counted against MaxBytes
}

// Stats sums the shards. Each shard is read under its lock, so the sums are not one
// instant's. It does not allocate.
func (m *Memory) Stats() MemoryStats {
	var st MemoryStats
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		st.Entries += len(s.m)
		st.InFlight += s.inflight
		st.Bytes += s.bytes
		s.mu.Unlock()
	}
	return st
}

// makeRoom makes room for n more entries and size more bytes, dropping expired entries
// (at most once per sweepEvery, or per fullSweepEvery when the shard is full) and then the
// oldest completed records. It reports false, having evicted nothing in flight, when only
// claims are left. Called with s.mu held.
func (s *memShard) makeRoom(m *Memory, n, size int, now int64) bool {
	if now-s.lastSweep >= int64(sweepEvery) {
		s.sweep(now)
	}
	for len(s.m)+n > m.maxEntries || s.bytes+size > m.maxBytes {
		if s.head != nil {
			s.remove(s.head)
			continue
		}
		if now-s.lastSweep < int64(fullSweepEvery) {
			return false
		}
		s.sweep(now)
		if s.head == nil && (len(s.m)+n > m.maxEntries || s.bytes+size > m.maxBytes) {
			return false
		}
	}
	return true
}

// sweep drops every expired entry. Called with s.mu held.
func (s *memShard) sweep(now int64) {
	s.lastSweep = now
	for _, e := range s.m {
		if e.deadline <= now {
			s.remove(e)
		}
	}
}

// remove drops e from the shard and wakes its waiters. Called with s.mu held.
func (s *memShard) remove(e *memEntry) {
	delete(s.m, e.k)
	s.bytes -= e.size
	if e.done {
		if e.prev != nil {
			e.prev.next = e.next
		} else {
			s.head = e.next
		}
		if e.next != nil {
			e.next.prev = e.prev
		} else {
			s.tail = e.prev
		}
		e.prev, e.next = nil, nil
	} else {
		s.inflight--
	}
	if e.wait != nil {
		close(e.wait)
		e.wait = nil
	}
}

// push appends a completed entry to the list. Called with s.mu held.
func (s *memShard) push(e *memEntry) {
	e.prev, e.next = s.tail, nil
	if s.tail != nil {
		s.tail.next = e
	} else {
		s.head = e
	}
	s.tail = e
}

var _ Store = (*Memory)(nil)
