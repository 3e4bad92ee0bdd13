package waitroom

import (
	"sync"
)

// Bounds of a node's memory per room.
const (
	// maxLocalPlaces bounds the places a node remembers having answered (about 40 bytes
	// each); a user beyond it is still served, with one store call per poll.
	maxLocalPlaces = 1 << 17
	// maxLocalKeyBytes bounds the bytes of user keys a node remembers.
	maxLocalKeyBytes = 8 << 20
	// maxPending bounds the touches of waiting users a node batches between flushes;
	// touches beyond it are dropped (the user polls again before their place lapses).
	maxPending = 1 << 16
	// activeSlots is the size of the table of admitted users' touches between flushes;
	// at most 3/4 of it is used.
	activeSlots = 1 << 16
)

// local is a node's memory of the users it answered: the place of each (and, for users
// with a key, key → place) and when it last polled here. It lets a poll be answered
// without the store: a user polling here within half a session is known alive. The last
// bit of a seen value marks a place whose touch is pending for the next flush. Safe for
// concurrent use; the lookups and the update of a known place do not allocate.
type local struct {
	mu       sync.Mutex
	seen     map[int64]int64 // place (< 0: pre-queue ticket) -> last poll ms << 1 | pending
	keys     map[string]int64
	keyBytes int
	pending  []int64 // places with the pending bit set, cap maxPending
	spare    []int64
}

func newLocal() *local {
	return &local{
		seen:    make(map[int64]int64),
		keys:    make(map[string]int64),
		pending: make([]int64, 0, maxPending),
		spare:   make([]int64, 0, maxPending),
	}
}

// byKey returns the place this node last saw for key, or 0.
func (l *local) byKey(key []byte) int64 {
	l.mu.Lock()
	p := l.keys[string(key)]
	l.mu.Unlock()
	return p
}

// poll reports whether place was polled here within maxAge ms of now and, if so, marks it
// polled now and pending for the next flush (places > 0 only: tickets are not touched).
func (l *local) poll(place, now, maxAge int64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	v, ok := l.seen[place]
	if !ok || now-v>>1 > maxAge {
		return false
	}
	flag := v & 1
	if flag == 0 && place > 0 && len(l.pending) < cap(l.pending) {
		l.pending = append(l.pending, place)
		flag = 1
	}
	l.seen[place] = now<<1 | flag
	return true
}

// remember records that the store answered place for key (nil: no key) at now; the store
// touched it, so nothing is pending. A full memory remembers nothing new.
func (l *local) remember(place int64, key []byte, now int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if v, ok := l.seen[place]; ok {
		l.seen[place] = now<<1 | v&1
	} else if len(l.seen) < maxLocalPlaces {
		l.seen[place] = now << 1
	}
	if len(key) > 0 {
		if old, ok := l.keys[string(key)]; ok {
			if old != place {
				l.keys[string(key)] = place
			}
		} else if l.keyBytes+len(key) <= maxLocalKeyBytes {
			l.keys[string(key)] = place
			l.keyBytes += len(key)
		}
	}
}

// forget drops place (admitted, or no longer in line).
func (l *local) forget(places []int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, p := range places {
		delete(l.seen, p)
	}
}

// takePending appends the pending places to dst, clears their pending bit and returns dst.
func (l *local) takePending(dst []int64) []int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, p := range l.pending {
		if v, ok := l.seen[p]; ok {
			l.seen[p] = v &^ 1
			dst = append(dst, p)
		}
	}
	l.pending, l.spare = l.spare[:0], l.pending
	return dst
}

// prune drops places not polled within maxAge ms of now, and keys whose place is gone.
func (l *local) prune(now, maxAge int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for p, v := range l.seen {
		if now-v>>1 > maxAge {
			delete(l.seen, p)
		}
	}
	for k, p := range l.keys {
		if _, ok := l.seen[p]; !ok {
			delete(l.keys, k)
			l.keyBytes -= len(k)
		}
	}
}

// placeSet collects the admitted places seen between two flushes: a fixed open-addressing
// table, so adding does not allocate and memory is bounded. Places beyond 3/4 of it are
// dropped until the next flush. Safe for concurrent use.
type placeSet struct {
	mu    sync.Mutex
	slots []int64 // 0: empty
	list  []int64
}

func newPlaceSet() *placeSet {
	return &placeSet{slots: make([]int64, activeSlots), list: make([]int64, 0, activeSlots*3/4)}
}

func (s *placeSet) add(p int64) {
	mask := uint64(len(s.slots) - 1)
	i := (uint64(p) * 0x9E3779B97F4A7C15) >> 40 & mask
	s.mu.Lock()
	if len(s.list) < cap(s.list) {
		for {
			switch s.slots[i] {
			case p:
			case 0:
				s.slots[i] = p
				s.list = append(s.list, p)
			default:
				i = (i + 1) & mask
				continue
			}
			break
		}
	}
	s.mu.Unlock()
}

// drain appends the collected places to dst, empties the set and returns dst.
func (s *placeSet) drain(dst []int64) []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	dst = append(dst, s.list...)
	clear(s.slots) // 512 KiB, twice a second: cheaper than any bookkeeping
	s.list = s.list[:0]
	return dst
}
