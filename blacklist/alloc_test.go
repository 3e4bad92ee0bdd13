//go:build !race

package blacklist

import (
	"net/netip"
	"testing"
	"time"
)

// TestZeroAllocs guards the hot-path promise: lookups and recording a rejection
// allocate nothing, with static, dynamic single-IP, /64 and CIDR bans all present.
func TestZeroAllocs(t *testing.T) {
	l := newList(t, Config{
		IPs:     prefixes("10.0.0.0/8", "2001:db8::/32", "1.2.3.4"),
		Users:   []string{"u-static"},
		AutoBan: AutoBanConfig{Rejects: 1 << 20, Window: time.Minute, Ban: time.Minute},
	}, "", t0)
	for _, s := range []string{"5.5.5.5", "2001:db9::1", "2001:dba:0:1::/64", "6.6.0.0/16"} {
		if _, err := l.BanIP(prefixes(s)[0], time.Hour, "", t0); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 10 { // enough dynamic CIDRs for the indexed path
		if _, err := l.BanIP(netip.PrefixFrom(netip.AddrFrom4([4]byte{7, byte(i), 0, 0}), 16), time.Hour, "", t0); err != nil {
			t.Fatal(err)
		}
	}
	if l.dyn.cidrs.Load().idx == nil {
		t.Fatal("dynamic CIDRs not indexed")
	}
	if _, err := l.BanUser("u-dyn", time.Hour, "", t0); err != nil {
		t.Fatal(err)
	}
	addrs := []netip.Addr{
		netip.MustParseAddr("10.1.1.1"), netip.MustParseAddr("11.1.1.1"), netip.MustParseAddr("5.5.5.5"),
		netip.MustParseAddr("6.6.6.6"), netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:dba:0:1::9"),
		netip.MustParseAddr("2001:dbf::1"), netip.MustParseAddr("::ffff:10.1.1.1"), netip.MustParseAddr("7.3.1.1"),
	}
	users := [][]byte{[]byte("u-static"), []byte("u-dyn"), []byte("u-none")}
	f := func(name string, fn func()) {
		t.Helper()
		if n := testing.AllocsPerRun(1000, fn); n != 0 {
			t.Errorf("%s: %v allocs per run, want 0", name, n)
		}
	}
	i := 0
	f("BlockedIP", func() {
		l.BlockedIP(addrs[i%len(addrs)], t0)
		i++
	})
	f("BlockedUser", func() {
		l.BlockedUser(users[i%len(users)], t0)
		i++
	})
	f("RecordReject", func() {
		l.RecordReject(addrs[i%len(addrs)], t0)
		i++
	})
	f("Len", func() { l.Len(KindCIDR) })
}
