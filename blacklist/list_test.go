package blacklist

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

func mustTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t
}

var t0 = mustTime("2030-01-01T00:00:00Z")

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		p, err := ParsePrefix(s)
		if err != nil {
			panic(err)
		}
		out[i] = p
	}
	return out
}

func newList(t *testing.T, cfg Config, dir string, now time.Time) *List {
	t.Helper()
	l, problems, err := New(cfg, dir, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(problems) > 0 {
		t.Fatalf("problems: %v", problems)
	}
	return l
}

func checkIPs(t *testing.T, l *List, now time.Time, want map[string]Kind) {
	t.Helper()
	for s, k := range want {
		if got := l.BlockedIP(netip.MustParseAddr(s), now); got != k {
			t.Errorf("BlockedIP(%s) = %s, want %s", s, got, k)
		}
	}
}

func TestMatchStatic(t *testing.T) {
	l := newList(t, Config{
		IPs: prefixes(
			"10.0.0.0/8", "10.1.0.0/16", // overlapping: inner inside outer
			"192.168.1.0/24", "192.168.1.128/25", "192.168.2.0/23", // adjacent and overlapping
			"172.16.5.5", "0.0.0.0/32", "255.255.255.255",
			"11.255.255.0/24", // spans into the next /16 index bucket's neighbour
			"2001:db8::/32", "2001:db8:1::/48", "::1", "fe80::/10", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
		Users: []string{"u-banned"},
	}, "", t0)
	checkIPs(t, l, t0, map[string]Kind{
		"10.0.0.0": KindCIDR, "10.255.255.255": KindCIDR, "10.1.2.3": KindCIDR,
		"9.255.255.255": KindNone, "11.0.0.0": KindNone,
		"192.168.1.0": KindCIDR, "192.168.1.255": KindCIDR, "192.168.2.7": KindCIDR, "192.168.3.255": KindCIDR,
		"192.168.0.255": KindNone, "192.168.4.0": KindNone,
		"172.16.5.5": KindIP, "172.16.5.4": KindNone, "172.16.5.6": KindNone,
		"0.0.0.0": KindIP, "0.0.0.1": KindNone, "255.255.255.255": KindIP, "255.255.255.254": KindNone,
		"11.255.255.9": KindCIDR, "11.255.254.255": KindNone,
		"::ffff:10.9.9.9": KindCIDR, // IPv4-mapped client address
		"2001:db8::1":     KindCIDR, "2001:db8:ffff::": KindCIDR, "2001:db9::": KindNone, "2001:db7:ffff::": KindNone,
		"::1": KindIP, "::2": KindNone, "::": KindNone,
		"fe80::1": KindCIDR, "febf::1": KindCIDR, "fec0::": KindNone,
		"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff": KindIP, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe": KindNone,
	})
	if l.BlockedIP(netip.Addr{}, t0) != KindNone {
		t.Fatal("the zero Addr is blocked")
	}
	if !l.BlockedUser([]byte("u-banned"), t0) || l.BlockedUser([]byte("u-ok"), t0) || l.BlockedUser(nil, t0) {
		t.Fatal("user matching")
	}
	if got := [3]int{l.Len(KindIP), l.Len(KindCIDR), l.Len(KindUser)}; got != [3]int{5, 9, 1} {
		t.Fatalf("Len ip/cidr/user = %v", got)
	}
}

// TestMatchRandom compares the range structure with a plain scan of the prefixes.
func TestMatchRandom(t *testing.T) {
	rng := newRand(1)
	var ps []netip.Prefix
	for range 1000 {
		ps = append(ps, randPrefix4(rng, 8), randPrefix6(rng))
	}
	for range 500 { // one crowded /16: its lookups take the binary search
		a := randAddr4(rng).As4()
		p, _ := netip.AddrFrom4([4]byte{100, 64, a[2], a[3]}).Prefix(26 + int(rng.next()%7))
		ps = append(ps, p)
	}
	l := newList(t, Config{IPs: ps}, "", t0)
	for range 30000 {
		var a netip.Addr
		if rng.next()%4 == 0 {
			a = randAddr6(rng)
		} else {
			a = randAddr4(rng)
		}
		if rng.next()%2 == 0 { // near a banned prefix's edge
			p := ps[rng.next()%uint64(len(ps))]
			a = p.Masked().Addr()
			if rng.next()%2 == 0 {
				a = a.Prev()
			}
			if !a.IsValid() {
				continue
			}
		}
		want := false
		for _, p := range ps {
			if p.Contains(a) {
				want = true
				break
			}
		}
		if got := l.BlockedIP(a, t0) != KindNone; got != want {
			t.Fatalf("BlockedIP(%s) = %v, want %v", a, got, want)
		}
	}
}

func TestDynamicBansTTL(t *testing.T) {
	l := newList(t, Config{}, "", t0)
	ban := func(s string, ttl time.Duration) {
		t.Helper()
		if _, err := l.BanIP(netip.MustParsePrefix(s), ttl, "test", t0); err != nil {
			t.Fatal(err)
		}
	}
	ban("1.2.3.4/32", time.Minute)
	ban("5.6.0.0/16", time.Hour)
	ban("2001:db8:1:2::/64", time.Minute)
	ban("2001:db8:9::7/128", 0)
	ban("2001:db8:a::/48", time.Minute)
	if _, err := l.BanUser("u1", time.Minute, "spam", t0); err != nil {
		t.Fatal(err)
	}
	in := map[string]Kind{
		"1.2.3.4": KindIP, "1.2.3.5": KindNone, "::ffff:1.2.3.4": KindIP,
		"5.6.7.8": KindCIDR, "5.7.0.0": KindNone,
		"2001:db8:1:2:aaaa::1": KindCIDR, "2001:db8:1:3::1": KindNone,
		"2001:db8:9::7": KindIP, "2001:db8:a:ffff::": KindCIDR,
	}
	checkIPs(t, l, t0.Add(59*time.Second), in)
	if !l.BlockedUser([]byte("u1"), t0.Add(59*time.Second)) {
		t.Fatal("u1 not banned")
	}
	// At expiry the TTL bans stop matching at once, before any sweep.
	later := t0.Add(time.Minute)
	checkIPs(t, l, later, map[string]Kind{
		"1.2.3.4": KindNone, "2001:db8:1:2::1": KindNone, "2001:db8:a::1": KindNone,
		"5.6.7.8": KindCIDR, "2001:db8:9::7": KindIP,
	})
	if l.BlockedUser([]byte("u1"), later) {
		t.Fatal("u1 still banned after its ttl")
	}
	if n := len(l.Entries(later)); n != 2 {
		t.Fatalf("listing after expiry has %d entries, want 2", n)
	}
	removed, err := l.Sweep(later)
	if err != nil || removed != 4 {
		t.Fatalf("Sweep = %d, %v; want 4", removed, err)
	}
	if got := [3]int{l.Len(KindIP), l.Len(KindCIDR), l.Len(KindUser)}; got != [3]int{1, 1, 0} {
		t.Fatalf("Len after sweep = %v", got)
	}
	// A later ban of the same prefix replaces the earlier one.
	ban("5.6.0.0/16", time.Second)
	checkIPs(t, l, t0.Add(2*time.Second), map[string]Kind{"5.6.7.8": KindNone})
}

func TestUnban(t *testing.T) {
	l := newList(t, Config{IPs: prefixes("9.9.9.0/24"), Users: []string{"cfg-user"}}, "", t0)
	for _, s := range []string{"1.2.3.4", "1.2.0.0/16", "2001:db8::/64", "2001:db8::/40"} {
		if _, err := l.BanIP(prefixes(s)[0], 0, "", t0); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := l.BanUser("u1", 0, "", t0); err != nil {
		t.Fatal(err)
	}
	f := func(s string, want error) {
		t.Helper()
		err := l.UnbanIP(prefixes(s)[0], t0)
		if !errors.Is(err, want) || (want == nil) != (err == nil) {
			t.Fatalf("UnbanIP(%s) = %v, want %v", s, err, want)
		}
	}
	f("1.2.3.4", nil)
	f("1.2.3.4", ErrNotFound)
	f("1.2.9.9", ErrNotFound) // inside a banned CIDR, but not a ban itself
	f("1.2.0.0/16", nil)
	f("2001:db8::/64", nil)
	f("2001:db8::/40", nil)
	f("9.9.9.0/24", ErrStatic)
	checkIPs(t, l, t0, map[string]Kind{"1.2.3.4": KindNone, "1.2.9.9": KindNone, "2001:db8::1": KindNone, "9.9.9.9": KindCIDR})
	if err := l.UnbanUser("u1", t0); err != nil {
		t.Fatal(err)
	}
	if l.BlockedUser([]byte("u1"), t0) {
		t.Fatal("u1 still banned")
	}
	if err := l.UnbanUser("u1", t0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second UnbanUser: %v", err)
	}
	if err := l.UnbanUser("cfg-user", t0); !errors.Is(err, ErrStatic) {
		t.Fatalf("UnbanUser of a config user: %v", err)
	}
	if got := [3]int{l.Len(KindIP), l.Len(KindCIDR), l.Len(KindUser)}; got != [3]int{0, 1, 1} {
		t.Fatalf("Len after unbans = %v", got)
	}
}

func TestListFileAndReload(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "blacklist.txt")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("# list\n1.1.1.0/24\nbogus\nuser:file-user\n")
	l, problems, err := New(Config{IPs: prefixes("8.8.8.8"), File: path}, "", t0)
	if err != nil {
		t.Fatal(err)
	}
	if len(problems) != 1 || problems[0].Error() != path+`:3: invalid IP "bogus": unable to parse IP` {
		t.Fatalf("problems %v", problems)
	}
	checkIPs(t, l, t0, map[string]Kind{"1.1.1.1": KindCIDR, "8.8.8.8": KindIP, "2.2.2.2": KindNone})
	if !l.BlockedUser([]byte("file-user"), t0) {
		t.Fatal("file user not banned")
	}
	var sources []string
	for _, e := range l.Entries(t0) {
		sources = append(sources, e.Value()+"="+e.Source.String())
	}
	if got := strings.Join(sources, " "); got != "8.8.8.8=config 1.1.1.0/24=file user:file-user=file" {
		t.Fatalf("listing %s", got)
	}

	// A dynamic ban survives file reloads.
	if _, err := l.BanIP(netip.MustParsePrefix("3.3.3.3/32"), 0, "", t0); err != nil {
		t.Fatal(err)
	}
	write("2.2.2.0/24\n")
	if problems, err := l.ReloadFile(); err != nil || len(problems) != 0 {
		t.Fatalf("ReloadFile: %v %v", problems, err)
	}
	checkIPs(t, l, t0, map[string]Kind{"1.1.1.1": KindNone, "2.2.2.2": KindCIDR, "8.8.8.8": KindIP, "3.3.3.3": KindIP})

	// An unreadable file keeps the previous entries.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if _, err := l.ReloadFile(); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("ReloadFile of a missing file: %v", err)
	}
	checkIPs(t, l, t0, map[string]Kind{"2.2.2.2": KindCIDR})

	// Reconfigure replaces the config entries; a bad config changes nothing.
	if _, err := l.Reconfigure(Config{IPs: []netip.Prefix{{}}}); err == nil || !strings.Contains(err.Error(), "ips[0]") {
		t.Fatalf("Reconfigure with a bad prefix: %v", err)
	}
	checkIPs(t, l, t0, map[string]Kind{"8.8.8.8": KindIP})
	if _, err := l.Reconfigure(Config{IPs: prefixes("7.7.7.7")}); err != nil {
		t.Fatal(err)
	}
	checkIPs(t, l, t0, map[string]Kind{"8.8.8.8": KindNone, "2.2.2.2": KindNone, "7.7.7.7": KindIP, "3.3.3.3": KindIP})
}

func TestWatchFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "list.txt")
	if err := os.WriteFile(path, []byte("1.1.1.1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	l := newList(t, Config{File: path}, "", t0)
	changed := make(chan struct{}, 16)
	w := WatchFile(path, 5*time.Millisecond, func() {
		if _, err := l.ReloadFile(); err != nil {
			t.Error(err)
		}
		changed <- struct{}{}
	})
	defer w.Stop()
	if err := os.WriteFile(path, []byte("1.1.1.1\n2.2.2.0/24\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatal("no change seen in 10s")
	}
	checkIPs(t, l, t0, map[string]Kind{"2.2.2.2": KindCIDR})
	w.Stop()
	w.Stop() // idempotent
}

func TestPersistenceRoundTrip(t *testing.T) {
	dir := t.TempDir()
	l := newList(t, Config{}, dir, t0)
	mustBan := func(_ Entry, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	mustBan(l.BanIP(netip.MustParsePrefix("1.2.3.0/24"), 10*time.Minute, "scraper", t0))
	mustBan(l.BanIP(netip.MustParsePrefix("2001:db8::5/128"), 0, "", t0.Add(time.Second)))
	mustBan(l.BanIP(netip.MustParsePrefix("2001:db8:1:2::/64"), 0, "", t0.Add(2*time.Second)))
	mustBan(l.BanIP(netip.MustParsePrefix("4.4.4.4/32"), time.Minute, "short", t0.Add(3*time.Second)))
	mustBan(l.BanUser("u1", time.Hour, "fraud", t0.Add(4*time.Second)))

	// A new instance at a later time sees the same bans, minus the expired one.
	later := t0.Add(2 * time.Minute)
	l2 := newList(t, Config{}, dir, later)
	checkIPs(t, l2, later, map[string]Kind{
		"1.2.3.9": KindCIDR, "2001:db8::5": KindIP, "2001:db8:1:2::9": KindCIDR, "4.4.4.4": KindNone,
	})
	if !l2.BlockedUser([]byte("u1"), later) {
		t.Fatal("u1 not banned after restart")
	}
	got, _ := json.Marshal(l2.Entries(later))
	want := `[{"ip":"1.2.3.0/24","kind":"cidr","source":"api","reason":"scraper","created_at":"2030-01-01T00:00:00Z","expires_at":"2030-01-01T00:10:00Z"},` +
		`{"ip":"2001:db8::5","kind":"ip","source":"api","created_at":"2030-01-01T00:00:01Z"},` +
		`{"ip":"2001:db8:1:2::/64","kind":"cidr","source":"api","created_at":"2030-01-01T00:00:02Z"},` +
		`{"user":"u1","kind":"user","source":"api","reason":"fraud","created_at":"2030-01-01T00:00:04Z","expires_at":"2030-01-01T01:00:04Z"}]`
	if string(got) != want {
		t.Fatalf("listing after restart:\n%s\nwant\n%s", got, want)
	}

	// A deletion is durable too.
	if err := l2.UnbanUser("u1", later); err != nil {
		t.Fatal(err)
	}
	l3 := newList(t, Config{}, dir, later)
	if l3.BlockedUser([]byte("u1"), later) || l3.BlockedIP(netip.MustParseAddr("1.2.3.9"), later) != KindCIDR {
		t.Fatal("state after delete and restart")
	}
}

func TestStateCorrupt(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, StateFile)
	f := func(content, wantErr string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		_, _, err := New(Config{}, dir, t0)
		if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("New with state %q: %v, want an error naming the file and %q", content, err, wantErr)
		}
		if b, _ := os.ReadFile(path); string(b) != content {
			t.Fatal("corrupt state file was overwritten")
		}
	}
	f(`{"version":1,"bans":[{"ip":"1.2.3`, "unexpected EOF")
	f(`{"version":2,"bans":[]}`, "version 2")
	f(`{"version":1,"bans":[{"ip":"nope","kind":"ip","source":"api"}]}`, `invalid IP "nope"`)
	f(`{"version":1,"bans":[{"ip":"1.2.3.4","kind":"ip","source":"config"}]}`, "want api or auto")
}

func TestStateAtomicWrite(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, StateFile)
	l := newList(t, Config{}, dir, t0)
	if _, err := l.BanIP(netip.MustParsePrefix("1.1.1.1/32"), 0, "", t0); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}

	// A write that fails before the rename (as a crash would) leaves the previous
	// file whole, no temp file behind, and the ban is not applied.
	testHookBeforeRename = func() error { return errors.New("injected crash") }
	_, err = l.BanIP(netip.MustParsePrefix("2.2.2.2/32"), 0, "", t0)
	testHookBeforeRename = nil
	if err == nil || !strings.Contains(err.Error(), "injected crash") || !strings.Contains(err.Error(), path) {
		t.Fatalf("BanIP with a failing write: %v", err)
	}
	if after, _ := os.ReadFile(path); string(after) != string(before) {
		t.Fatalf("state file changed by a failed write:\n%s", after)
	}
	if l.BlockedIP(netip.MustParseAddr("2.2.2.2"), t0) != KindNone {
		t.Fatal("ban applied although it could not be saved")
	}
	testHookBeforeRename = func() error { return errors.New("injected crash") }
	err = l.UnbanIP(netip.MustParsePrefix("1.1.1.1/32"), t0)
	testHookBeforeRename = nil
	if err == nil || l.BlockedIP(netip.MustParseAddr("1.1.1.1"), t0) != KindIP {
		t.Fatalf("failed unban: %v, and the ban must stay", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("state dir holds %d files, want only %s", len(entries), StateFile)
	}

	// A temp file left by a crash mid-write is ignored and cleaned at start.
	leftover := filepath.Join(dir, "."+StateFile+".tmp-12345")
	if err := os.WriteFile(leftover, []byte(`{"version":1,"ba`), 0o644); err != nil {
		t.Fatal(err)
	}
	l2 := newList(t, Config{}, dir, t0)
	if l2.BlockedIP(netip.MustParseAddr("1.1.1.1"), t0) != KindIP {
		t.Fatal("saved ban lost")
	}
	if _, err := os.Stat(leftover); !os.IsNotExist(err) {
		t.Fatalf("leftover temp file still there: %v", err)
	}

	// A state dir that cannot be read or written is an error that names it.
	file := filepath.Join(t.TempDir(), "plain-file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := New(Config{}, filepath.Join(file, "state"), t0); err == nil || !strings.Contains(err.Error(), "plain-file") {
		t.Fatalf("New with a bad state dir: %v", err)
	}
	gone := filepath.Join(t.TempDir(), "state")
	l3 := newList(t, Config{}, gone, t0)
	if err := os.WriteFile(gone, nil, 0o644); err != nil { // the dir is now a file
		t.Fatal(err)
	}
	if _, err := l3.BanUser("u", 0, "", t0); err == nil || !strings.Contains(err.Error(), gone) {
		t.Fatalf("ban with a bad state dir: %v", err)
	}
}

func TestAutoBan(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{AutoBan: AutoBanConfig{Rejects: 5, Window: 10 * time.Second, Ban: 10 * time.Minute}}
	l := newList(t, cfg, dir, t0)
	ip := netip.MustParseAddr("203.0.113.7")
	now := t0
	for i := 1; i <= 4; i++ {
		if l.RecordReject(ip, now) {
			t.Fatalf("banned after %d rejects", i)
		}
		now = now.Add(time.Second)
	}
	if l.BlockedIP(ip, now) != KindNone {
		t.Fatal("blocked before the 5th reject")
	}
	if !l.RecordReject(ip, now) {
		t.Fatal("5th reject within the window did not ban")
	}
	banAt := now
	if l.BlockedIP(ip, now) != KindIP || l.AutoBans() != 1 {
		t.Fatalf("after auto-ban: %s, AutoBans %d", l.BlockedIP(ip, now), l.AutoBans())
	}
	es := l.Entries(now)
	if len(es) != 1 || es[0].Source != SourceAuto || es[0].Reason != "auto-ban: 5 rejects in 10s" ||
		!es[0].Expires.Equal(banAt.Add(10*time.Minute)) {
		t.Fatalf("listing %+v", es)
	}
	// Saved by the next sweep, so it survives a restart.
	if _, err := l.Sweep(now); err != nil {
		t.Fatal(err)
	}
	l2 := newList(t, cfg, dir, now)
	if l2.BlockedIP(ip, now) != KindIP {
		t.Fatal("auto-ban lost across restart")
	}
	// It expires.
	end := banAt.Add(10 * time.Minute)
	if l.BlockedIP(ip, end.Add(-time.Nanosecond)) != KindIP || l.BlockedIP(ip, end) != KindNone {
		t.Fatal("auto-ban expiry")
	}
	if n, err := l.Sweep(end); n != 1 || err != nil {
		t.Fatalf("Sweep = %d, %v", n, err)
	}

	// Rejects spread thinner than the window never ban.
	slow := netip.MustParseAddr("198.51.100.1")
	for i := range 50 {
		if l.RecordReject(slow, t0.Add(time.Duration(i)*3*time.Second)) {
			t.Fatalf("slow client banned after %d rejects 3s apart", i+1)
		}
	}
	// A burst straddling two windows still bans (sliding estimate).
	edge := netip.MustParseAddr("198.51.100.2")
	l.RecordReject(edge, t0) // opens a window at t0
	for i := range 3 {       // 3 just before its end
		l.RecordReject(edge, t0.Add(9*time.Second+time.Duration(i)*time.Millisecond))
	}
	if !l.RecordReject(edge, t0.Add(10*time.Second+time.Millisecond)) &&
		!l.RecordReject(edge, t0.Add(10*time.Second+2*time.Millisecond)) {
		t.Fatal("burst across a window boundary not banned")
	}

	// IPv6 clients are counted and banned by /64.
	for i := range 5 {
		a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, byte(i)})
		if got := l.RecordReject(a, t0); got != (i == 4) {
			t.Fatalf("IPv6 reject %d: banned=%v", i, got)
		}
	}
	checkIPs(t, l, t0, map[string]Kind{"2001:db8:0:1:ffff::1": KindCIDR, "2001:db8:0:2::1": KindNone})
}

func TestAutoBanMaxBans(t *testing.T) {
	cfg := Config{AutoBan: AutoBanConfig{Rejects: 1, Window: time.Second, Ban: time.Minute, MaxBans: 3}}
	l := newList(t, cfg, "", t0)
	banned := 0
	for i := range 10 {
		if l.RecordReject(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), t0) {
			banned++
		}
	}
	if banned != 3 || l.AutoBansRefused() != 7 || l.Len(KindIP) != 3 {
		t.Fatalf("banned %d, refused %d, Len %d", banned, l.AutoBansRefused(), l.Len(KindIP))
	}
	// Once they expire and are swept there is room again.
	if _, err := l.Sweep(t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if !l.RecordReject(netip.MustParseAddr("10.0.0.99"), t0.Add(time.Minute)) {
		t.Fatal("no auto-ban after the old ones expired")
	}
}

func TestAutoBanOffAndReconfigure(t *testing.T) {
	l := newList(t, Config{}, "", t0)
	for range 100 {
		if l.RecordReject(netip.MustParseAddr("1.1.1.1"), t0) {
			t.Fatal("auto-ban while off")
		}
	}
	if _, err := l.Reconfigure(Config{AutoBan: AutoBanConfig{Rejects: 2, Window: time.Second}}); err == nil ||
		!strings.Contains(err.Error(), "auto_ban: ban must be positive") {
		t.Fatalf("bad auto_ban: %v", err)
	}
	if _, err := l.Reconfigure(Config{AutoBan: AutoBanConfig{Rejects: 2, Window: time.Second, Ban: time.Minute}}); err != nil {
		t.Fatal(err)
	}
	l.RecordReject(netip.MustParseAddr("1.1.1.1"), t0)
	// Same settings again: counts are kept across the reload.
	if _, err := l.Reconfigure(Config{AutoBan: AutoBanConfig{Rejects: 2, Window: time.Second, Ban: time.Minute}}); err != nil {
		t.Fatal(err)
	}
	if !l.RecordReject(netip.MustParseAddr("1.1.1.1"), t0) {
		t.Fatal("count lost across a reload with the same settings")
	}
}

// TestAutoBanMemoryBound: a million distinct clients do not grow the tracker.
func TestAutoBanMemoryBound(t *testing.T) {
	cfg := Config{AutoBan: AutoBanConfig{Rejects: 3, Window: time.Minute, Ban: time.Minute, Tracked: 4096}}
	l := newList(t, cfg, "", t0)
	heavy := netip.MustParseAddr("192.0.2.1")
	l.RecordReject(heavy, t0)
	l.RecordReject(heavy, t0)

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range 1_000_000 {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		if l.RecordReject(a, t0) {
			t.Fatal("a single reject banned")
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if n := l.tracker.Load().len(); n > 4096 {
		t.Fatalf("tracker holds %d clients, cap 4096", n)
	}
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 1<<20 {
		t.Fatalf("heap grew by %d bytes over 1M distinct clients", grew)
	}
	if after.Mallocs-before.Mallocs > 1000 {
		t.Fatalf("%d allocations over 1M rejects", after.Mallocs-before.Mallocs)
	}
	// The heavy hitter's count survived the flood of one-reject clients.
	if !l.RecordReject(heavy, t0) {
		t.Fatal("flood of new clients evicted a heavy hitter")
	}
}

func TestPoller(t *testing.T) {
	calls := make(chan time.Time, 1)
	p := StartPoller(time.Millisecond, func(now time.Time) {
		select {
		case calls <- now:
		default:
		}
	})
	select {
	case <-calls:
	case <-time.After(10 * time.Second):
		t.Fatal("poller never ran")
	}
	p.Stop()
	// After Stop returns no call is running or will start.
	for len(calls) > 0 {
		<-calls
	}
	runtime.Gosched()
	if len(calls) != 0 {
		t.Fatal("poller ran after Stop")
	}
}

func TestConcurrentUse(t *testing.T) {
	l := newList(t, Config{IPs: prefixes("10.0.0.0/8"), AutoBan: AutoBanConfig{Rejects: 3, Window: time.Second, Ban: time.Second}}, t.TempDir(), t0)
	done := make(chan struct{})
	for g := range 4 {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := range 2000 {
				now := t0.Add(time.Duration(i) * time.Millisecond)
				a := netip.AddrFrom4([4]byte{11, byte(g), byte(i >> 8), byte(i)})
				l.BlockedIP(a, now)
				l.RecordReject(netip.AddrFrom4([4]byte{11, 0, 0, byte(i % 7)}), now)
				l.BlockedUser([]byte(fmt.Sprint("u", i%10)), now)
				switch {
				case g == 0 && i%100 == 0:
					if _, err := l.BanUser(fmt.Sprint("u", i%10), time.Second, "", now); err != nil {
						t.Error(err)
					}
				case g == 1 && i%100 == 0:
					if _, err := l.Sweep(now); err != nil {
						t.Error(err)
					}
				case g == 2 && i%500 == 0:
					if _, err := l.Reconfigure(Config{IPs: prefixes("10.0.0.0/8", fmt.Sprint("12.0.0.", i%250))}); err != nil {
						t.Error(err)
					}
				}
			}
		}()
	}
	for range 4 {
		<-done
	}
	if l.BlockedIP(netip.MustParseAddr("10.1.1.1"), t0) != KindCIDR {
		t.Fatal("static entry lost")
	}
}

// TestDynamicCIDRIndex: with more dynamic CIDR bans than a scan handles, lookups go
// through the range index; they must agree with a plain scan before and after the
// first expiry and after a sweep.
func TestDynamicCIDRIndex(t *testing.T) {
	l := newList(t, Config{}, "", t0)
	rng := newRand(5)
	type ban struct {
		p   netip.Prefix
		exp time.Time // zero: never
	}
	var bans []ban
	ttls := []time.Duration{0, time.Minute, 2 * time.Minute, 3 * time.Minute}
	for i := range 60 {
		var p netip.Prefix
		if i%3 == 0 {
			p, _ = randAddr6(rng).Prefix(40 + int(rng.next()%20))
		} else {
			p = randPrefix4(rng, 8)
			if p.IsSingleIP() {
				p, _ = p.Addr().Prefix(24)
			}
		}
		ttl := ttls[rng.next()%4]
		if _, err := l.BanIP(p, ttl, "", t0); err != nil {
			t.Fatal(err)
		}
		b := ban{p: p}
		if ttl > 0 {
			b.exp = t0.Add(ttl)
		}
		bans = slices.DeleteFunc(bans, func(o ban) bool { return o.p == p })
		bans = append(bans, b)
	}
	if cs := l.dyn.cidrs.Load(); cs.idx == nil || len(cs.list) != len(bans) {
		t.Fatalf("dynamic CIDR set: %d entries, indexed %v", len(cs.list), cs.idx != nil)
	}
	check := func(now time.Time) {
		t.Helper()
		for range 20000 {
			var a netip.Addr
			switch rng.next() % 3 {
			case 0:
				a = randAddr6(rng)
			case 1:
				a = randAddr4(rng)
			default:
				a = bans[rng.next()%uint64(len(bans))].p.Addr()
			}
			want := false
			for _, b := range bans {
				if (b.exp.IsZero() || now.Before(b.exp)) && b.p.Contains(a) {
					want = true
				}
			}
			if got := l.BlockedIP(a, now) == KindCIDR; got != want {
				t.Fatalf("at %s BlockedIP(%s) = %v, want %v", now.Sub(t0), a, got, want)
			}
		}
	}
	check(t0)
	check(t0.Add(90 * time.Second)) // past the first expiry: scan path
	if _, err := l.Sweep(t0.Add(90 * time.Second)); err != nil {
		t.Fatal(err)
	}
	check(t0.Add(90 * time.Second)) // rebuilt index
	check(t0.Add(time.Hour))
}
