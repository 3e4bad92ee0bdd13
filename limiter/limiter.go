// Package limiter keeps keyed token buckets in bounded memory.
//
// A Store holds the buckets of one `limit` block: one rate, one burst, one bucket per
// key. Keys arrive already hashed to 64 bits (the caller hashes the key expression's
// bytes with xxhash); the hash is the key's identity.
//
// # Algorithm
//
// Each bucket is stored as a single int64, its theoretical arrival time (GCRA, the
// generic cell rate algorithm): tat is the instant at which the bucket will be full
// again. With the emission interval I = 1/rate and tau = burst·I, the bucket holds
// burst - max(0, tat-now)/I tokens at time now. Taking a token moves tat to
// max(tat, now) + I; it is allowed when the new tat is at most now + tau. This is the
// same continuous refill, clamped at burst, that golang.org/x/time/rate.Limiter does
// with its (tokens, last) pair, so a Store admits exactly what a rate.Limiter per key
// admits (AllowN(now, 1), bucket starting full); a property test checks it. Like
// rate.Limiter, a request is admitted when the wait for its token truncates to 0 ns.
//
// Times are kept in fixed point, 1/16 ns, relative to the first `now` the Store sees,
// so a rate whose interval is not a whole number of nanoseconds (3 r/s = 333333333.3 ns)
// drifts by at most 1/32 ns per token instead of 1/2 ns. The covered range is ±2^58 ns
// (about 9 years) around that first call; times outside it are clamped.
//
// A bucket whose tat is not after now is full, and a full bucket behaves exactly like a
// bucket that does not exist (a new key starts full). So such entries are free space:
// they are overwritten or dropped whenever convenient, and Len counts them only until
// then.
//
// # Memory
//
// The buckets live in open-addressing hash tables of 16-byte slots (hash, tat), split
// into up to 64 shards, each with its own mutex. A shard's table starts at 16 slots
// and doubles when 3/4 full, up to the size that holds its share of maxKeys at a load
// of at most 3/4. Growing drops full buckets first. So a store costs between 21 and
// 43 bytes per tracked key (measured: 32 B at 1M keys and 27 B at 10M, see
// BenchmarkMemory), 32 MiB at most with DefaultMaxKeys, and about 16 KiB when it
// tracks no key. Once a shard holds its share of maxKeys of non-full buckets, a new
// key evicts the bucket closest to full among the 4 nearest in its table (counted by
// Evictions): an evicted key starts over with a full bucket, and that one gains the
// fewest tokens from it. That gain is the price of bounded memory.
//
// # Identity
//
// Two keys whose 64-bit hashes are equal share a bucket. Among n keys tracked at once
// the chance that any two collide is about n²/2^65: 3·10^-8 at a million keys, 3·10^-6
// at ten million. Hash 0 shares its bucket with one other, fixed, hash value.
//
// # Concurrency and allocation
//
// Every method is safe for concurrent use. Take, Reserve and Refund take one shard lock
// and allocate nothing, except when a shard's table grows (a bounded number of times
// over a Store's life). A Store survives config reloads: Update changes rate and burst
// in place.
package limiter

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultMaxKeys is the key bound to use when a limit configures none. A Store holding
// that many non-full buckets uses 32 MiB of tables.
const DefaultMaxKeys = 1 << 20

const (
	unitShift   = 4                  // fixed point: 1 unit = 1/16 ns
	unitsPerNS  = 1 << unitShift     // units in one nanosecond
	maxDeltaNS  = int64(1) << 58     // clamp of now - epoch, in ns
	maxSpan     = int64(1) << 60     // largest tau (burst·interval) in units
	epochUnset  = math.MinInt64      // epoch sentinel before the first call
	maxShardLog = 6                  // at most 64 shards
	minPerShard = 256                // fewer shards when maxKeys/shards would be smaller
	minSlotsLog = 4                  // a table starts with 16 slots
	evictScan   = 4                  // occupied slots looked at to pick an eviction victim
	mixMul      = 0x9E3779B97F4A7C15 // odd: multiplying by it is a bijection on uint64
	zeroKey     = 0x5BD1E9955BD1E995 // where key 0 is stored; one other hash maps here
)

// slot is one bucket: the mixed key hash (0 = empty) and its theoretical arrival time.
type slot struct {
	key uint64
	tat int64
}

// shard is one lock's worth of buckets. Its params are a copy of the Store's, changed
// under the lock so that a bucket is always read with the params it was written with.
type shard struct {
	mu         sync.Mutex
	slots      []slot
	mask       uint64
	idxShift   uint // 64 - log2(len(slots))
	count      int  // occupied slots, full buckets included
	growAt     int  // count that triggers growth or eviction
	limit      int  // this shard's share of maxKeys
	maxSlots   int  // table size that holds limit at load ≤ 3/4
	sinceSweep int  // inserts at the limit since the last sweep
	evictions  uint64
	interval   int64 // emission interval, units
	tau        int64 // burst·interval, units
	_          [64]byte
}

// Store is a set of token buckets sharing one rate and burst, keyed by a 64-bit hash.
// Create it with NewStore. It is safe for concurrent use; see the package doc for
// memory and allocation promises.
type Store struct {
	shards    []shard
	shardBits uint
	epoch     atomic.Int64

	cfgMu sync.Mutex // serialises SetScaleAt and UpdateAt
	rate  float64    // configured rate, tokens per second
	burst int        // configured burst
	scale float64    // runtime factor, 1 unless SetScale
	eff   atomic.Pointer[effective]
}

// effective is the rate and burst in force, after scaling.
type effective struct {
	rate  float64
	burst int
}

// ErrInvalid is wrapped by every error NewStore, SetScale and Update return.
var ErrInvalid = errors.New("invalid limiter parameter")

// NewStore returns a Store of buckets refilling at rate tokens per second and holding
// at most burst tokens (each starts full), tracking at most maxKeys keys; maxKeys ≤ 0
// means DefaultMaxKeys. rate must be positive and at most 1e9; burst at least 1, and
// burst/rate at most about 834 days.
func NewStore(rate float64, burst, maxKeys int) (*Store, error) {
	if maxKeys <= 0 {
		maxKeys = DefaultMaxKeys
	}
	interval, tau, err := params(rate, burst)
	if err != nil {
		return nil, err
	}
	shardBits := uint(0)
	for shardBits < maxShardLog && maxKeys>>(shardBits+1) >= minPerShard {
		shardBits++
	}
	s := &Store{
		shards:    make([]shard, 1<<shardBits),
		shardBits: shardBits,
		rate:      rate,
		burst:     burst,
		scale:     1,
	}
	s.epoch.Store(epochUnset)
	s.eff.Store(&effective{rate: rate, burst: burst})
	limit := maxKeys >> shardBits
	maxSlots := 1 << minSlotsLog
	for maxSlots/4*3 < limit {
		maxSlots <<= 1
	}
	for i := range s.shards {
		sh := &s.shards[i]
		sh.limit = limit
		sh.maxSlots = maxSlots
		sh.interval = interval
		sh.tau = tau
		sh.resize(1 << minSlotsLog)
	}
	return s, nil
}

// params converts rate and burst to the interval and tau in units.
func params(rate float64, burst int) (interval, tau int64, err error) {
	if !(rate > 0 && rate <= 1e9) { // also rejects NaN
		return 0, 0, fmt.Errorf("%w: rate %g per second is not in (0, 1e9]", ErrInvalid, rate)
	}
	if burst < 1 {
		return 0, 0, fmt.Errorf("%w: burst %d is less than 1", ErrInvalid, burst)
	}
	iv := math.Round(1e9 * unitsPerNS / rate)
	if iv*float64(burst) > float64(maxSpan) {
		return 0, 0, fmt.Errorf("%w: burst %d at rate %g per second takes longer than %v to refill",
			ErrInvalid, burst, rate, time.Duration(maxSpan/unitsPerNS))
	}
	interval = int64(iv)
	return interval, interval * int64(burst), nil
}

// units converts now to fixed point relative to the epoch, fixing the epoch on the
// first call.
func (s *Store) units(now int64) int64 {
	e := s.epoch.Load()
	if e == epochUnset {
		s.epoch.CompareAndSwap(epochUnset, now)
		e = s.epoch.Load()
	}
	d := now - e
	if (now >= e) != (d >= 0) { // overflow: far outside the range anyway
		d = maxDeltaNS
		if now < e {
			d = -maxDeltaNS
		}
	}
	d = min(max(d, -maxDeltaNS), maxDeltaNS)
	return d << unitShift
}

// locate returns the shard for key and the mixed key stored in its slots.
func (s *Store) locate(key uint64) (*shard, uint64) {
	m := key * mixMul
	if m == 0 { // key 0: 0 marks empty slots
		m = zeroKey
	}
	return &s.shards[m>>(64-s.shardBits)&uint64(len(s.shards)-1)], m
}

// home is the preferred slot of mixed key m: the bits after the shard bits.
func (sh *shard) home(m uint64, shardBits uint) uint64 {
	return (m << shardBits) >> sh.idxShift
}

// next is the GCRA step Take and Reserve share: the theoretical arrival time slot i
// would have after one more token at time n, and how far that lies beyond the burst
// (below unitsPerNS: within it). Call with sh.mu held.
func (sh *shard) next(i int, n int64) (newTat, excess int64) {
	newTat = max(sh.slots[i].tat, n) + sh.interval
	return newTat, newTat - n - sh.tau
}

// Take takes one token from key's bucket at time now (nanoseconds on any clock that
// the Store's callers share, e.g. time.Now().UnixNano()). When a token is available it
// returns ok and the whole tokens left; otherwise it takes nothing and returns the time
// until a token is available (at least 1 ns). A key not seen before starts with a full
// bucket. Safe for concurrent use; allocates nothing.
func (s *Store) Take(key uint64, now int64) (ok bool, retryAfter time.Duration, remaining int) {
	sh, m := s.locate(key)
	n := s.units(now)
	sh.mu.Lock()
	i := sh.findOrInsert(m, n, s.shardBits)
	newTat, excess := sh.next(i, n)
	if excess < unitsPerNS {
		sh.slots[i].tat = newTat
		left := (sh.tau - (newTat - n)) / sh.interval // ≥ -1/16 ns worth: truncates to 0
		sh.mu.Unlock()
		return true, 0, int(left)
	}
	sh.mu.Unlock()
	return false, time.Duration(excess >> unitShift), 0
}

// Reserve takes one token from key's bucket at time now if it is available within
// maxWait (a negative maxWait counts as 0): it returns ok and how long the caller must
// wait before acting on it (0 when available at once). Otherwise it takes nothing and
// returns ok false and the time until a token would be available. A caller that does
// not act after all gives the token back with Refund. This is rate.Limiter's
// ReserveN(now, 1) followed by Cancel when the delay exceeds maxWait. Safe for
// concurrent use; allocates nothing.
func (s *Store) Reserve(key uint64, now int64, maxWait time.Duration) (wait time.Duration, ok bool) {
	sh, m := s.locate(key)
	n := s.units(now)
	sh.mu.Lock()
	i := sh.findOrInsert(m, n, s.shardBits)
	newTat, excess := sh.next(i, n)
	if excess < unitsPerNS {
		sh.slots[i].tat = newTat
		sh.mu.Unlock()
		return 0, true
	}
	wait = time.Duration(excess >> unitShift)
	if wait <= maxWait {
		sh.slots[i].tat = newTat
		sh.mu.Unlock()
		return wait, true
	}
	sh.mu.Unlock()
	return wait, false
}

// Refund gives one token back to key's bucket at time now, up to the burst: the undo of
// a Take or Reserve that succeeded moments ago, for a request that a later limit
// rejected. Unlike rate.Reservation.CancelAt it returns the token even when the moment
// it was taken for has passed. It does not check that a token was taken: refunding
// without taking makes a free token. A key not tracked (full, dropped or evicted) is
// left alone. Safe for concurrent use; allocates nothing.
func (s *Store) Refund(key uint64, now int64) {
	sh, m := s.locate(key)
	n := s.units(now)
	sh.mu.Lock()
	if i := sh.find(m, s.shardBits); i >= 0 {
		if t := sh.slots[i].tat - sh.interval; t > n {
			sh.slots[i].tat = t
		} else if sh.slots[i].tat > n {
			sh.slots[i].tat = n // full: now free space
		}
	}
	sh.mu.Unlock()
}

// find returns the slot of m, or -1. Requires sh.mu.
func (sh *shard) find(m uint64, shardBits uint) int {
	i := sh.home(m, shardBits)
	for {
		k := sh.slots[i].key
		if k == m {
			return int(i)
		}
		if k == 0 {
			return -1
		}
		i = (i + 1) & sh.mask
	}
}

// findOrInsert returns the slot of m, inserting a full bucket for it when absent.
// Requires sh.mu.
func (sh *shard) findOrInsert(m uint64, n int64, shardBits uint) int {
	i := sh.home(m, shardBits)
	reuse := -1
	for {
		k := sh.slots[i].key
		if k == m {
			return int(i)
		}
		if k == 0 {
			break
		}
		if reuse < 0 && sh.slots[i].tat <= n {
			reuse = int(i)
		}
		i = (i + 1) & sh.mask
	}
	// m is absent. A full bucket on m's probe path is free space: taking its slot in
	// place keeps every other key's probe path intact.
	if reuse >= 0 {
		sh.slots[reuse] = slot{key: m, tat: n}
		return reuse
	}
	if sh.count >= sh.growAt {
		sh.makeRoom(m, n, shardBits)
		return sh.insert(m, n, shardBits)
	}
	sh.slots[i] = slot{key: m, tat: n}
	sh.count++
	return int(i)
}

// insert puts absent key m in the first empty slot of its probe path. Requires sh.mu
// and an empty slot.
func (sh *shard) insert(m uint64, tat int64, shardBits uint) int {
	i := sh.home(m, shardBits)
	for sh.slots[i].key != 0 {
		i = (i + 1) & sh.mask
	}
	sh.slots[i] = slot{key: m, tat: tat}
	sh.count++
	return int(i)
}

// makeRoom makes count < growAt by growing the table, dropping full buckets or, at the
// key limit, evicting one bucket. Requires sh.mu.
func (sh *shard) makeRoom(m uint64, n int64, shardBits uint) {
	if len(sh.slots) < sh.maxSlots {
		live := 0
		for _, sl := range sh.slots {
			if sl.key != 0 && sl.tat > n {
				live++
			}
		}
		size := len(sh.slots)
		if live >= size/8*3 { // keep at least 3/8 of the table free for inserts
			size <<= 1
		}
		sh.rebuild(size, n, shardBits)
		if sh.count < sh.growAt {
			return
		}
	}
	// At the size limit. Sweeping costs a pass over the table, so do it at most once
	// per limit inserts; in between, evict.
	if sh.sinceSweep >= sh.limit {
		sh.sinceSweep = 0
		sh.sweep(n, shardBits)
		if sh.count < sh.growAt {
			return
		}
	}
	sh.sinceSweep++
	i := sh.home(m, shardBits)
	victim, seen := -1, 0
	for j := 0; seen < evictScan && j < len(sh.slots); j++ {
		if sl := sh.slots[i]; sl.key != 0 {
			seen++
			if victim < 0 || sl.tat < sh.slots[victim].tat {
				victim = int(i)
			}
		}
		i = (i + 1) & sh.mask
	}
	if victim < 0 {
		panic("BUG: limiter shard at its key limit has no occupied slot")
	}
	if sh.slots[victim].tat > n {
		sh.evictions++
	}
	sh.del(uint64(victim), shardBits)
}

// rebuild moves the buckets that are not full into a new table of size slots.
// Requires sh.mu.
func (sh *shard) rebuild(size int, n int64, shardBits uint) {
	if size == len(sh.slots) && sh.slots != nil {
		sh.sweep(n, shardBits)
		return
	}
	old := sh.slots
	sh.resize(size)
	for _, sl := range old {
		if sl.key != 0 && sl.tat > n {
			sh.insert(sl.key, sl.tat, shardBits)
		}
	}
}

// resize installs an empty table of size slots (a power of two). Requires sh.mu.
func (sh *shard) resize(size int) {
	sh.slots = make([]slot, size)
	sh.mask = uint64(size - 1)
	sh.idxShift = uint(64 - bits.TrailingZeros(uint(size)))
	sh.count = 0
	sh.growAt = min(sh.limit, size/4*3)
}

// sweep drops the full buckets in place and returns how many. Requires sh.mu.
func (sh *shard) sweep(n int64, shardBits uint) int {
	dropped := 0
	for i := range sh.slots {
		// del may move a later bucket into i: look at i again.
		for sh.slots[i].key != 0 && sh.slots[i].tat <= n {
			sh.del(uint64(i), shardBits)
			dropped++
		}
	}
	return dropped
}

// del empties slot i, shifting later buckets of its cluster back so that no probe path
// crosses an empty slot (linear probing without tombstones). Requires sh.mu.
func (sh *shard) del(i uint64, shardBits uint) {
	j := i
	for {
		j = (j + 1) & sh.mask
		k := sh.slots[j].key
		if k == 0 {
			break
		}
		h := sh.home(k, shardBits)
		// The bucket at j may fill the hole at i if i lies on its path from h to j.
		if (j-h)&sh.mask >= (j-i)&sh.mask {
			sh.slots[i] = sh.slots[j]
			i = j
		}
	}
	sh.slots[i] = slot{}
	sh.count--
}

// Sweep drops every full bucket at time now and shrinks tables that became mostly
// empty, so that Len counts only keys that are being limited and an idle Store returns
// its memory. It returns the number of buckets dropped. It takes each shard's lock in
// turn for a pass over its table (a few milliseconds per million keys) and may
// allocate a smaller one: call it from a background ticker, not per request. Safe for
// concurrent use.
func (s *Store) Sweep(now int64) int {
	n := s.units(now)
	dropped := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		before := sh.count
		size := len(sh.slots)
		live := 0
		for _, sl := range sh.slots {
			if sl.key != 0 && sl.tat > n {
				live++
			}
		}
		for size > 1<<minSlotsLog && live < size/8 {
			size >>= 1
		}
		sh.rebuild(size, n, s.shardBits)
		sh.sinceSweep = 0
		dropped += before - sh.count
		sh.mu.Unlock()
	}
	return dropped
}

// Len returns the number of keys tracked: buckets that are not full, plus full ones not
// dropped yet (see Sweep). It locks each shard in turn. Safe for concurrent use.
func (s *Store) Len() int {
	total := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		total += sh.count
		sh.mu.Unlock()
	}
	return total
}

// Evictions returns how many buckets that were not full have been dropped to make room
// for new keys since the Store was created. Safe for concurrent use.
func (s *Store) Evictions() uint64 {
	var total uint64
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		total += sh.evictions
		sh.mu.Unlock()
	}
	return total
}

// Rate returns the rate in force, tokens per second (the configured rate times the
// scale). Safe for concurrent use; allocates nothing.
func (s *Store) Rate() float64 { return s.eff.Load().rate }

// Burst returns the burst in force (the configured burst times the scale, rounded down,
// at least 1). Safe for concurrent use; allocates nothing.
func (s *Store) Burst() int { return s.eff.Load().burst }

// SetScale is SetScaleAt(f, time.Now().UnixNano()).
func (s *Store) SetScale(f float64) error { return s.SetScaleAt(f, time.Now().UnixNano()) }

// SetScaleAt multiplies the configured rate and burst by f from time now on (a cluster
// of N nodes sharing a global limit sets 1/N). The burst in force is burst·f rounded
// down, at least 1. Every bucket keeps the tokens it holds at now, clamped to the new
// burst; a full bucket counts as absent and so is full at the new burst. It fails
// without changing anything when f or the scaled values are out of range. It locks each
// shard in turn for a pass over its table. Safe for concurrent use.
func (s *Store) SetScaleAt(f float64, now int64) error {
	if !(f > 0) || math.IsInf(f, 1) {
		return fmt.Errorf("%w: scale %g is not a positive number", ErrInvalid, f)
	}
	s.cfgMu.Lock()
	defer s.cfgMu.Unlock()
	return s.apply(s.rate, s.burst, f, now)
}

// Update is UpdateAt(rate, burst, time.Now().UnixNano()).
func (s *Store) Update(rate float64, burst int) error {
	return s.UpdateAt(rate, burst, time.Now().UnixNano())
}

// UpdateAt replaces the configured rate and burst from time now on, for a config
// reload; the scale set by SetScale stays. Buckets are not refilled: each keeps the
// tokens it holds at now, clamped to the new burst (a full bucket counts as absent and
// so is full at the new burst). It fails without changing anything when rate or burst
// is out of range. It locks each shard in turn for a pass over its table. Safe for
// concurrent use.
func (s *Store) UpdateAt(rate float64, burst int, now int64) error {
	if _, _, err := params(rate, burst); err != nil {
		return err
	}
	s.cfgMu.Lock()
	defer s.cfgMu.Unlock()
	return s.apply(rate, burst, s.scale, now)
}

// apply installs configured rate and burst with scale f. Requires s.cfgMu.
func (s *Store) apply(rate float64, burst int, f float64, now int64) error {
	effRate := rate * f
	effBurst := max(1, int(math.Floor(float64(burst)*f+1e-9)))
	interval, tau, err := params(effRate, effBurst)
	if err != nil {
		return fmt.Errorf("scale %g of rate %g burst %d: %w", f, rate, burst, err)
	}
	s.rate, s.burst, s.scale = rate, burst, f
	s.eff.Store(&effective{rate: effRate, burst: effBurst})
	n := s.units(now)
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		if interval != sh.interval || tau != sh.tau {
			oldI := float64(sh.interval)
			newBurst, newI := float64(effBurst), float64(interval)
			oldBurst := float64(sh.tau / sh.interval)
			for j := range sh.slots {
				sl := &sh.slots[j]
				if sl.key == 0 || sl.tat <= n {
					continue // full at any rate and burst
				}
				// Keep the level L = oldBurst - (tat-n)/oldI, clamped to newBurst:
				// tat' = n + (newBurst - min(L, newBurst))·newI.
				deficit := newBurst - oldBurst + float64(sl.tat-n)/oldI
				if deficit <= 0 {
					sl.tat = n
					continue
				}
				sl.tat = n + int64(math.Round(deficit*newI))
			}
			sh.interval, sh.tau = interval, tau
		}
		sh.mu.Unlock()
	}
	return nil
}
