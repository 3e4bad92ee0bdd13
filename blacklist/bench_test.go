package blacklist

import (
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"
)

// rnd is a small deterministic generator (splitmix64) so benchmarks and tests see
// the same data every run.
type rnd struct{ s uint64 }

func newRand(seed uint64) *rnd { return &rnd{seed} }

func (r *rnd) next() uint64 {
	r.s += 0x9E3779B97F4A7C15
	z := r.s
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
	z = (z ^ (z >> 27)) * 0x94D049BB133111EB
	return z ^ (z >> 31)
}

func randAddr4(r *rnd) netip.Addr {
	v := r.next()
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// randAddr6 draws from 2001:db8::/32 so that random prefixes are hit now and then.
func randAddr6(r *rnd) netip.Addr {
	var b [16]byte
	b[0], b[1], b[2], b[3] = 0x20, 0x01, 0x0d, 0xb8
	v, w := r.next(), r.next()
	for i := 4; i < 8; i++ {
		b[i] = byte(v >> (8 * i))
	}
	for i := 8; i < 16; i++ {
		b[i] = byte(w >> (8 * (i - 8)))
	}
	return netip.AddrFrom16(b)
}

// randPrefix4 returns a random IPv4 prefix of minBits to 32 bits.
func randPrefix4(r *rnd, minBits int) netip.Prefix {
	bits := minBits + int(r.next()%uint64(33-minBits))
	p, _ := randAddr4(r).Prefix(bits)
	return p
}

// randPrefix6 returns a random prefix of /40 to /128 inside 2001:db8::/32.
func randPrefix6(r *rnd) netip.Prefix {
	bits := 40 + int(r.next()%89)
	p, _ := randAddr6(r).Prefix(bits)
	return p
}

const benchEntries = 1_000_000

var bench struct {
	once sync.Once
	cfg  Config
	l    *List
	a4   []netip.Addr
	a6   []netip.Addr
}

// benchList: 1M entries, 95% random IPv4 /16–/32 CIDRs and 5% IPv6, plus 10k users.
func benchList(b *testing.B) *List {
	bench.once.Do(func() {
		r := newRand(42)
		ips := make([]netip.Prefix, benchEntries)
		for i := range ips {
			if i%20 == 0 {
				ips[i] = randPrefix6(r)
			} else {
				ips[i] = randPrefix4(r, 16)
			}
		}
		users := make([]string, 10000)
		for i := range users {
			users[i] = "user-" + strconv.Itoa(i)
		}
		bench.cfg = Config{IPs: ips, Users: users}
		l, _, err := New(bench.cfg, "", t0)
		if err != nil {
			panic(err)
		}
		bench.l = l
		for range 1 << 16 {
			bench.a4 = append(bench.a4, randAddr4(r))
			bench.a6 = append(bench.a6, randAddr6(r))
		}
	})
	return bench.l
}

// lookups benchmarks BlockedIP over addrs (a power-of-two count) and reports the
// share of lookups that hit.
func lookups(b *testing.B, l *List, addrs []netip.Addr) {
	b.ReportAllocs()
	b.ResetTimer()
	hits := 0
	for i := 0; b.Loop(); i++ {
		if l.BlockedIP(addrs[i&(len(addrs)-1)], t0) != KindNone {
			hits++
		}
	}
	b.ReportMetric(float64(hits)/float64(b.N), "hit/op")
}

func BenchmarkBlockedIP4_1M(b *testing.B) {
	l := benchList(b)
	lookups(b, l, bench.a4)
}

func BenchmarkBlockedIP6_1M(b *testing.B) {
	l := benchList(b)
	lookups(b, l, bench.a6)
}

func BenchmarkBlockedIP4_1M_Parallel(b *testing.B) {
	l := benchList(b)
	a := bench.a4
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			l.BlockedIP(a[i&(len(a)-1)], t0)
			i++
		}
	})
}

// BenchmarkBlockedIP4_1M_Dynamic: the same lookups with 10k live dynamic single-IP
// bans and 100 dynamic CIDR bans, the worst case during an attack.
func BenchmarkBlockedIP4_1M_Dynamic(b *testing.B) {
	l, _, err := New(Config{}, "", t0)
	if err != nil {
		b.Fatal(err)
	}
	l.static.Store(benchList(b).static.Load())
	r := newRand(7)
	for range 10000 {
		if _, err := l.BanIP(netip.PrefixFrom(randAddr4(r), 32), time.Hour, "", t0); err != nil {
			b.Fatal(err)
		}
	}
	for range 100 {
		if _, err := l.BanIP(randPrefix4(r, 20), time.Hour, "", t0); err != nil {
			b.Fatal(err)
		}
	}
	lookups(b, l, bench.a4)
}

func BenchmarkBlockedUser(b *testing.B) {
	l := benchList(b)
	users := [][]byte{[]byte("user-17"), []byte("someone-else"), []byte("user-9999"), []byte("x")}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		l.BlockedUser(users[i&3], t0)
	}
}

// BenchmarkBuild1M: rebuilding the static part from 1M entries (off the hot path).
func BenchmarkBuild1M(b *testing.B) {
	benchList(b)
	entries, err := configEntries(bench.cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		buildStatic(entries)
	}
}

// BenchmarkBanIP: adding a dynamic ban next to a 1M-entry static part (no state dir).
func BenchmarkBanIP(b *testing.B) {
	l, _, err := New(Config{}, "", t0)
	if err != nil {
		b.Fatal(err)
	}
	l.static.Store(benchList(b).static.Load())
	r := newRand(9)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := l.BanIP(netip.PrefixFrom(randAddr4(r), 32), time.Hour, "", t0); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRecordReject(b *testing.B) {
	l, _, err := New(Config{AutoBan: AutoBanConfig{Rejects: 1 << 30, Window: time.Minute, Ban: time.Minute}}, "", t0)
	if err != nil {
		b.Fatal(err)
	}
	a := make([]netip.Addr, 1<<16)
	r := newRand(3)
	for i := range a {
		a[i] = randAddr4(r)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		l.RecordReject(a[i&(len(a)-1)], t0)
	}
}

// BenchmarkBlockedIP4_1M_Sparse: 1M random IPv4 /24–/32 CIDRs, so most lookups miss
// and walk the whole search.
func BenchmarkBlockedIP4_1M_Sparse(b *testing.B) {
	r := newRand(43)
	ips := make([]netip.Prefix, benchEntries)
	for i := range ips {
		ips[i] = randPrefix4(r, 24)
	}
	l, _, err := New(Config{IPs: ips}, "", t0)
	if err != nil {
		b.Fatal(err)
	}
	benchList(b)
	lookups(b, l, bench.a4)
}
