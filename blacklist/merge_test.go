package blacklist

import (
	"net/netip"
	"testing"
	"time"
)

// Merge keeps a remote ban as it is, is idempotent, ignores expired bans and
// saves on the next Sweep rather than at once.
func TestMerge(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	l, _, err := New(Config{}, dir, now)
	if err != nil {
		t.Fatal(err)
	}
	ip := netip.MustParsePrefix("203.0.113.7/32")
	e := Entry{Kind: KindIP, Source: SourceAuto, Prefix: ip, Reason: "auto-ban: 2 rejects in 10s",
		Created: now.Add(-time.Second), Expires: now.Add(time.Minute)}
	for range 2 {
		if err := l.Merge(e, now); err != nil {
			t.Fatal(err)
		}
	}
	if k := l.BlockedIP(ip.Addr(), now); k != KindIP {
		t.Fatalf("merged ban: %v, want ip", k)
	}
	got := l.Entries(now)
	if len(got) != 1 || got[0].Source != SourceAuto || got[0].Reason != e.Reason || !got[0].Expires.Equal(e.Expires) {
		t.Fatalf("entries %+v, want the merged ban as it was", got)
	}
	if l.BlockedIP(ip.Addr(), e.Expires) != KindNone {
		t.Error("merged ban outlives its expiry")
	}
	if err := l.Merge(Entry{Kind: KindUser, User: "u1", Expires: now.Add(-time.Second)}, now); err != nil {
		t.Fatal(err)
	}
	if l.BlockedUser([]byte("u1"), now) {
		t.Error("an expired ban was merged")
	}
	if err := l.Merge(Entry{Kind: KindUser, User: ""}, now); err == nil {
		t.Error("an empty user was merged")
	}
	if _, err := l.Sweep(now); err != nil {
		t.Fatal(err)
	}
	l2, _, err := New(Config{}, dir, now)
	if err != nil {
		t.Fatal(err)
	}
	if l2.BlockedIP(ip.Addr(), now) != KindIP {
		t.Error("the merged ban was not saved by Sweep")
	}
}
