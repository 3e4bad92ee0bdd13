package blacklist

import (
	"hash/maphash"
	"net/netip"
	"sync"
	"sync/atomic"
)

// dynBan is one runtime ban.
type dynBan struct {
	expires int64 // unix nanoseconds; 0: never
	created int64 // unix nanoseconds
	reason  string
	source  Source
}

func (b *dynBan) live(now int64) bool { return b.expires == 0 || now < b.expires }

// ipKey is a dynamic single-address ban (bits 128, IPv4 as IPv4-mapped) or an IPv6
// /64 ban (bits 64, host half zeroed).
type ipKey struct {
	a    u128
	bits uint8
}

func keyOf(p netip.Prefix) ipKey {
	a := p.Addr()
	if a.Is4() {
		a = netip.AddrFrom16(a.As16())
		return ipKey{addr6(a), 128}
	}
	return ipKey{addr6(p.Masked().Addr()), uint8(p.Bits())}
}

// mapKeyable reports whether a dynamic ban of p lives in the sharded map rather than
// in the CIDR list.
func mapKeyable(p netip.Prefix) bool {
	return p.IsSingleIP() || (p.Addr().Is6() && p.Bits() == 64)
}

func (k ipKey) prefix() netip.Prefix {
	var b [16]byte
	putU128(b[:], k.a)
	a := netip.AddrFrom16(b)
	if k.bits == 128 && a.Is4In6() {
		return netip.PrefixFrom(a.Unmap(), 32)
	}
	return netip.PrefixFrom(a, int(k.bits))
}

func putU128(b []byte, x u128) {
	_ = b[15]
	for i := 0; i < 8; i++ {
		b[i] = byte(x.hi >> (56 - 8*i))
		b[8+i] = byte(x.lo >> (56 - 8*i))
	}
}

const numShards = 32 // power of two

// shard holds the dynamic single-address and user bans whose hash falls on it. The
// padding keeps two shards' locks off one cache line.
type shard struct {
	mu    sync.RWMutex
	ips   map[ipKey]dynBan
	users map[string]dynBan
	_     [64]byte
}

// dynamic is the runtime part of a List.
type dynamic struct {
	seed   maphash.Seed
	shards [numShards]shard

	// Counts of live-or-not-yet-swept entries, read on the hot path to skip empty
	// structures.
	nExact atomic.Int64 // single addresses
	n64    atomic.Int64 // IPv6 /64s
	nUsers atomic.Int64
	nAuto  atomic.Int64 // entries with SourceAuto, for AutoBanConfig.MaxBans

	// cidrs holds the other CIDR bans, copied on write; writers hold List.mu.
	cidrs atomic.Pointer[cidrSet]
}

type dynCIDR struct {
	p   netip.Prefix
	ban dynBan
}

// cidrSet is an immutable set of dynamic CIDR bans. Beyond a few entries it carries
// the same range index as the static part, valid until the first entry expires
// (minExp); from then until the next Sweep rebuilds it, lookups scan the list and
// check each expiry.
type cidrSet struct {
	list   []dynCIDR
	idx    *static // nil: scan
	minExp int64   // earliest expiry in list; 0: none expires
}

const cidrScanMax = 8

func newCIDRSet(list []dynCIDR) *cidrSet {
	cs := &cidrSet{list: list}
	if len(list) <= cidrScanMax {
		return cs
	}
	entries := make([]Entry, len(list))
	for i, c := range list {
		entries[i] = Entry{Kind: KindCIDR, Prefix: c.p}
		if e := c.ban.expires; e != 0 && (cs.minExp == 0 || e < cs.minExp) {
			cs.minExp = e
		}
	}
	cs.idx = buildStatic(entries)
	return cs
}

func (cs *cidrSet) lookup(ip netip.Addr, now int64) Kind {
	if cs.idx != nil && (cs.minExp == 0 || now < cs.minExp) {
		k := KindNone
		if ip.Is4() {
			k = cs.idx.lookup4(addr4(ip))
		} else if len(cs.idx.r6) > 0 {
			k = cs.idx.lookup6(addr6(ip))
		}
		if k != KindNone {
			return KindCIDR
		}
		return KindNone
	}
	for _, c := range cs.list {
		if c.ban.live(now) && c.p.Contains(ip) {
			return KindCIDR
		}
	}
	return KindNone
}

func newDynamic() *dynamic {
	d := &dynamic{seed: maphash.MakeSeed()}
	for i := range d.shards {
		d.shards[i].ips = make(map[ipKey]dynBan)
		d.shards[i].users = make(map[string]dynBan)
	}
	d.cidrs.Store(newCIDRSet(nil))
	return d
}

func (d *dynamic) ipShard(k ipKey) *shard {
	h := (k.a.hi ^ k.a.lo*0x9E3779B97F4A7C15) * 0xBF58476D1CE4E5B9
	return &d.shards[(h>>59)&(numShards-1)]
}

func (d *dynamic) userShard(u []byte) *shard {
	return &d.shards[maphash.Bytes(d.seed, u)&(numShards-1)]
}

func (d *dynamic) countersFor(k ipKey) *atomic.Int64 {
	if k.bits == 128 {
		return &d.nExact
	}
	return &d.n64
}

// putIP stores b under k and returns the previous value. Callers serialise through
// List.mu except auto-ban, which uses addAuto.
func (d *dynamic) putIP(k ipKey, b dynBan) (prev dynBan, existed bool) {
	s := d.ipShard(k)
	s.mu.Lock()
	prev, existed = s.ips[k]
	s.ips[k] = b
	s.mu.Unlock()
	d.account(existed, prev.source, true, b.source, d.countersFor(k))
	return prev, existed
}

func (d *dynamic) delIP(k ipKey) (prev dynBan, existed bool) {
	s := d.ipShard(k)
	s.mu.Lock()
	prev, existed = s.ips[k]
	delete(s.ips, k)
	s.mu.Unlock()
	d.account(existed, prev.source, false, 0, d.countersFor(k))
	return prev, existed
}

func (d *dynamic) putUser(u string, b dynBan) (prev dynBan, existed bool) {
	s := d.userShard([]byte(u))
	s.mu.Lock()
	prev, existed = s.users[u]
	s.users[u] = b
	s.mu.Unlock()
	d.account(existed, prev.source, true, b.source, &d.nUsers)
	return prev, existed
}

func (d *dynamic) delUser(u string) (prev dynBan, existed bool) {
	s := d.userShard([]byte(u))
	s.mu.Lock()
	prev, existed = s.users[u]
	delete(s.users, u)
	s.mu.Unlock()
	d.account(existed, prev.source, false, 0, &d.nUsers)
	return prev, existed
}

// account keeps the counters in step with one replace/insert/delete.
func (d *dynamic) account(hadOld bool, oldSrc Source, hasNew bool, newSrc Source, n *atomic.Int64) {
	if hadOld {
		n.Add(-1)
		if oldSrc == SourceAuto {
			d.nAuto.Add(-1)
		}
	}
	if hasNew {
		n.Add(1)
		if newSrc == SourceAuto {
			d.nAuto.Add(1)
		}
	}
}

// addAuto stores an auto-ban for k unless a live ban that lasts at least as long is
// already there. It reports whether the ban was stored.
func (d *dynamic) addAuto(k ipKey, b dynBan, now int64) bool {
	s := d.ipShard(k)
	s.mu.Lock()
	prev, existed := s.ips[k]
	if existed && prev.live(now) && (prev.expires == 0 || prev.expires >= b.expires) {
		s.mu.Unlock()
		return false
	}
	s.ips[k] = b
	s.mu.Unlock()
	d.account(existed, prev.source, true, b.source, d.countersFor(k))
	return true
}

// lookupIP checks the dynamic bans for ip (unmapped, valid). It allocates nothing.
func (d *dynamic) lookupIP(ip netip.Addr, now int64) Kind {
	if d.nExact.Load() > 0 {
		var k ipKey
		if ip.Is4() {
			k = ipKey{u128{0, 0xffff<<32 | uint64(addr4(ip))}, 128}
		} else {
			k = ipKey{addr6(ip), 128}
		}
		s := d.ipShard(k)
		s.mu.RLock()
		b, ok := s.ips[k]
		s.mu.RUnlock()
		if ok && b.live(now) {
			return KindIP
		}
	}
	if ip.Is6() && d.n64.Load() > 0 {
		a := addr6(ip)
		k := ipKey{u128{a.hi, 0}, 64}
		s := d.ipShard(k)
		s.mu.RLock()
		b, ok := s.ips[k]
		s.mu.RUnlock()
		if ok && b.live(now) {
			return KindCIDR
		}
	}
	return d.cidrs.Load().lookup(ip, now)
}

// lookupUser checks the dynamic user bans. It allocates nothing.
func (d *dynamic) lookupUser(u []byte, now int64) bool {
	if d.nUsers.Load() == 0 {
		return false
	}
	s := d.userShard(u)
	s.mu.RLock()
	b, ok := s.users[string(u)]
	s.mu.RUnlock()
	return ok && b.live(now)
}
