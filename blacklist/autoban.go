package blacklist

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"
)

// AutoBanConfig is the auto_ban block: ban a client IP that keeps hitting limits.
// The zero value (Rejects 0) turns auto-ban off.
type AutoBanConfig struct {
	Rejects int           // rejects: limit rejections that trigger a ban; 0: auto-ban off
	Window  time.Duration // window: the rejections must fall within it; required with Rejects
	Ban     time.Duration // ban: how long the ban lasts; required with Rejects

	// Tracked bounds how many client IPs are counted at once, whatever the number of
	// distinct clients; 0 means 65536. Rounded up to a multiple of 8. Memory is about
	// 41 bytes per tracked IP, allocated once. When full, the client with the fewest
	// recent rejections in a set of 8 is forgotten first.
	Tracked int
	// MaxBans bounds how many auto-bans exist at once; 0 means 100000. When reached,
	// further clients are not banned until bans expire (see AutoBansRefused).
	MaxBans int
	// IPv6Bits is the prefix length IPv6 clients are counted and banned by, since one
	// client usually holds a whole /64; 0 means 64. Only 64 and 128 are accepted.
	IPv6Bits int
}

func (c AutoBanConfig) withDefaults() AutoBanConfig {
	if c.Tracked <= 0 {
		c.Tracked = 65536
	}
	if c.MaxBans <= 0 {
		c.MaxBans = 100000
	}
	if c.IPv6Bits == 0 {
		c.IPv6Bits = 64
	}
	return c
}

// Validate reports every problem of the settings, naming the field.
func (c AutoBanConfig) Validate() error {
	if c.Rejects == 0 {
		return nil
	}
	var errs []error
	if c.Rejects < 0 {
		errs = append(errs, fmt.Errorf("auto_ban: rejects must be positive, got %d", c.Rejects))
	}
	if c.Window <= 0 {
		errs = append(errs, fmt.Errorf("auto_ban: window must be positive, got %s", c.Window))
	}
	if c.Ban <= 0 {
		errs = append(errs, fmt.Errorf("auto_ban: ban must be positive, got %s", c.Ban))
	}
	if c.IPv6Bits != 0 && c.IPv6Bits != 64 && c.IPv6Bits != 128 {
		errs = append(errs, fmt.Errorf("auto_ban: ipv6 prefix must be 64 or 128, got %d", c.IPv6Bits))
	}
	if c.Tracked < 0 || c.MaxBans < 0 {
		errs = append(errs, errors.New("auto_ban: tracked and max bans cannot be negative"))
	}
	return errors.Join(errs...)
}

const ways = 8

// tslot counts one client's recent rejections as a sliding window estimated from the
// current and previous fixed windows (start is the current window's start).
type tslot struct {
	key   ipKey
	start int64 // unix nanoseconds; 0: empty
	cur   uint32
	prev  uint32
}

// tset is one set of a set-associative table, with its own lock: recording a
// rejection locks 1/len(sets) of the table.
type tset struct {
	mu sync.Mutex
	s  [ways]tslot
}

// tracker counts rejections per client in a fixed-size table allocated once.
type tracker struct {
	cfg    AutoBanConfig // with defaults
	window int64
	reason string
	sets   []tset
}

func newTracker(c AutoBanConfig) *tracker {
	c = c.withDefaults()
	n := (c.Tracked + ways - 1) / ways
	return &tracker{
		cfg:    c,
		window: int64(c.Window),
		reason: fmt.Sprintf("auto-ban: %d rejects in %s", c.Rejects, c.Window),
		sets:   make([]tset, n),
	}
}

// key maps a client address to what is counted and banned.
func (t *tracker) key(ip netip.Addr) ipKey {
	if ip.Is4() {
		return ipKey{u128{0, 0xffff<<32 | uint64(addr4(ip))}, 128}
	}
	a := addr6(ip)
	if t.cfg.IPv6Bits == 64 {
		return ipKey{u128{a.hi, 0}, 64}
	}
	return ipKey{a, 128}
}

// record counts one rejection of k at now and reports whether k crossed the limit;
// the slot is then cleared. It allocates nothing.
func (t *tracker) record(k ipKey, now int64) bool {
	h := (k.a.hi*0x9E3779B97F4A7C15 ^ k.a.lo) * 0xBF58476D1CE4E5B9
	h ^= h >> 29
	set := &t.sets[h%uint64(len(t.sets))]
	w := t.window
	set.mu.Lock()
	var sl *tslot
	victim, victimScore := -1, uint64(1<<63)
	for i := range set.s {
		s := &set.s[i]
		if s.start != 0 && s.key == k {
			sl = s
			break
		}
		var score uint64 // lower is evicted first; empty and stale slots score 0
		if s.start != 0 && now-s.start < 2*w {
			score = 1 + uint64(s.cur) + uint64(s.prev)
		}
		if score < victimScore {
			victim, victimScore = i, score
		}
	}
	if sl == nil {
		sl = &set.s[victim]
		*sl = tslot{key: k, start: now}
	}
	switch el := now - sl.start; {
	case el >= 2*w || el < 0:
		sl.start, sl.cur, sl.prev = now, 0, 0
	case el >= w:
		sl.start += w
		sl.prev, sl.cur = sl.cur, 0
	}
	sl.cur++
	est := uint64(sl.cur)
	if sl.prev > 0 {
		el := now - sl.start
		est += uint64(sl.prev) * uint64(w-el) / uint64(w)
	}
	hit := est >= uint64(t.cfg.Rejects)
	if hit {
		*sl = tslot{}
	}
	set.mu.Unlock()
	return hit
}

// len counts occupied slots (tests).
func (t *tracker) len() int {
	n := 0
	for i := range t.sets {
		t.sets[i].mu.Lock()
		for _, s := range t.sets[i].s {
			if s.start != 0 {
				n++
			}
		}
		t.sets[i].mu.Unlock()
	}
	return n
}
