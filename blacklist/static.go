package blacklist

import (
	"cmp"
	"encoding/binary"
	"net/netip"
	"slices"
)

// static is the immutable part of a List: config and file entries. It is built once
// per reload or file change and read without locks.
type static struct {
	// IPv4: merged non-overlapping ranges sorted by lo, lo and hi side by side so a
	// lookup touches few cache lines; idx4[p] is the first range whose lo has the top
	// 16 bits >= p (len 1<<16+1), so a lookup binary-searches only one /16's ranges.
	r4   []range4
	idx4 []uint32
	// IPv6: merged non-overlapping ranges sorted by lo.
	r6    []range6
	users map[string]struct{}

	// What was configured, for the listing (compact: no pointers for the GC to scan).
	list4  []raw4
	list6  []raw6
	ulist  []rawUser
	counts [numKinds]int
}

type u128 struct{ hi, lo uint64 }

func (a u128) less(b u128) bool { return a.hi < b.hi || (a.hi == b.hi && a.lo < b.lo) }

func (a u128) inc() (u128, bool) { // a+1, false on overflow
	if a.lo != ^uint64(0) {
		return u128{a.hi, a.lo + 1}, true
	}
	if a.hi != ^uint64(0) {
		return u128{a.hi + 1, 0}, true
	}
	return a, false
}

type range4 struct{ lo, hi uint32 }

type range6 struct{ lo, hi u128 }

type raw4 struct {
	addr uint32
	bits uint8
	src  Source
}

type raw6 struct {
	addr u128
	bits uint8
	src  Source
}

type rawUser struct {
	user string
	src  Source
}

func addr4(a netip.Addr) uint32 {
	b := a.As4()
	return binary.BigEndian.Uint32(b[:])
}

func addr6(a netip.Addr) u128 {
	b := a.As16()
	return u128{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
}

func range4Of(addr uint32, bits uint8) (lo, hi uint32) {
	if bits == 0 {
		return 0, ^uint32(0)
	}
	mask := ^uint32(0) << (32 - bits)
	return addr & mask, addr | ^mask
}

func range6Of(a u128, bits uint8) range6 {
	var mhi, mlo uint64 // host bits set
	switch {
	case bits == 0:
		mhi, mlo = ^uint64(0), ^uint64(0)
	case bits < 64:
		mhi, mlo = ^uint64(0)>>bits, ^uint64(0)
	case bits < 128:
		mhi, mlo = 0, ^uint64(0)>>(bits-64)
	}
	return range6{u128{a.hi &^ mhi, a.lo &^ mlo}, u128{a.hi | mhi, a.lo | mlo}}
}

// buildStatic builds the lookup structures from entries; entries of kind ip/cidr
// must hold normalized prefixes (ParsePrefix). It does not keep entries.
func buildStatic(entries []Entry) *static {
	s := &static{users: make(map[string]struct{})}
	for _, e := range entries {
		switch e.Kind {
		case KindUser:
			s.ulist = append(s.ulist, rawUser{e.User, e.Source})
			s.users[e.User] = struct{}{}
		case KindIP, KindCIDR:
			p := e.Prefix
			if p.Addr().Is4() {
				s.list4 = append(s.list4, raw4{addr4(p.Addr()), uint8(p.Bits()), e.Source})
			} else {
				s.list6 = append(s.list6, raw6{addr6(p.Addr()), uint8(p.Bits()), e.Source})
			}
		default:
			continue
		}
		s.counts[e.Kind]++
	}

	// IPv4 ranges: sort by lo, merge overlapping and adjacent ones.
	rs := make([]range4, len(s.list4))
	for i, r := range s.list4 {
		rs[i].lo, rs[i].hi = range4Of(r.addr, r.bits)
	}
	slices.SortFunc(rs, func(a, b range4) int { return cmp.Compare(a.lo, b.lo) })
	merged := rs[:0] // in place: the write index never passes the read index
	for _, r := range rs {
		if n := len(merged); n > 0 {
			last := &merged[n-1]
			if r.lo <= last.hi || (last.hi != ^uint32(0) && r.lo == last.hi+1) {
				last.hi = max(last.hi, r.hi)
				continue
			}
		}
		merged = append(merged, r)
	}
	s.r4 = slices.Clip(merged)
	s.idx4 = make([]uint32, 1<<16+1)
	j := 0
	for p := 0; p <= 1<<16; p++ {
		for j < len(s.r4) && int(s.r4[j].lo>>16) < p {
			j++
		}
		s.idx4[p] = uint32(j)
	}

	// IPv6 ranges.
	r6 := make([]range6, len(s.list6))
	for i, r := range s.list6 {
		r6[i] = range6Of(r.addr, r.bits)
	}
	slices.SortFunc(r6, func(a, b range6) int {
		if a.lo.less(b.lo) {
			return -1
		}
		if b.lo.less(a.lo) {
			return 1
		}
		return 0
	})
	for _, r := range r6 {
		if n := len(s.r6); n > 0 {
			last := &s.r6[n-1]
			next, ok := last.hi.inc()
			if !ok || !next.less(r.lo) { // r.lo <= last.hi+1
				if last.hi.less(r.hi) {
					last.hi = r.hi
				}
				continue
			}
		}
		s.r6 = append(s.r6, r)
	}
	return s
}

// lookup4 reports the kind of the static range holding x, or KindNone.
func (s *static) lookup4(x uint32) Kind {
	p := x >> 16
	i, j := int(s.idx4[p]), int(s.idx4[p+1])
	// The range holding x, if any, is the last one with lo <= x: within this /16's
	// ranges, or the one just before them (it may span into this /16).
	if i > 0 {
		i--
	}
	// Find the first k in [i, j) with lo[k] > x: small spans (the usual case) by a
	// forward scan, which reads consecutive cache lines the CPU prefetches.
	lo, hi := i, j
	if j-i <= 32 {
		for _, r := range s.r4[i:j] {
			if r.lo > x {
				break
			}
			lo++
		}
		hi = lo
	}
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if s.r4[m].lo <= x {
			lo = m + 1
		} else {
			hi = m
		}
	}
	k := lo - 1
	if k < i || k < 0 {
		return KindNone
	}
	r := s.r4[k]
	if r.hi < x {
		return KindNone
	}
	if r.lo == r.hi {
		return KindIP
	}
	return KindCIDR
}

// lookup6 reports the kind of the static range holding x, or KindNone.
func (s *static) lookup6(x u128) Kind {
	lo, hi := 0, len(s.r6)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if !x.less(s.r6[m].lo) { // lo <= x
			lo = m + 1
		} else {
			hi = m
		}
	}
	k := lo - 1
	if k < 0 || s.r6[k].hi.less(x) {
		return KindNone
	}
	if s.r6[k].lo == s.r6[k].hi {
		return KindIP
	}
	return KindCIDR
}

// appendEntries appends the static entries to dst in the order they were given,
// IPv4 first, then IPv6, then users.
func (s *static) appendEntries(dst []Entry) []Entry {
	for _, r := range s.list4 {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], r.addr)
		p := netip.PrefixFrom(netip.AddrFrom4(b), int(r.bits))
		dst = append(dst, Entry{Kind: prefixKind(p), Source: r.src, Prefix: p})
	}
	for _, r := range s.list6 {
		var b [16]byte
		binary.BigEndian.PutUint64(b[:8], r.addr.hi)
		binary.BigEndian.PutUint64(b[8:], r.addr.lo)
		p := netip.PrefixFrom(netip.AddrFrom16(b), int(r.bits))
		dst = append(dst, Entry{Kind: prefixKind(p), Source: r.src, Prefix: p})
	}
	for _, u := range s.ulist {
		dst = append(dst, Entry{Kind: KindUser, Source: u.src, User: u.user})
	}
	return dst
}

// hasPrefix reports whether p is a static entry (for refusing to delete it).
func (s *static) hasPrefix(p netip.Prefix) bool {
	if p.Addr().Is4() {
		a, bits := addr4(p.Addr()), uint8(p.Bits())
		for _, r := range s.list4 {
			if r.addr == a && r.bits == bits {
				return true
			}
		}
		return false
	}
	a, bits := addr6(p.Addr()), uint8(p.Bits())
	for _, r := range s.list6 {
		if r.addr == a && r.bits == bits {
			return true
		}
	}
	return false
}
