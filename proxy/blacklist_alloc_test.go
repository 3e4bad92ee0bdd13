//go:build !race

package proxy

import (
	"net/netip"
	"testing"
	"time"
)

func blAllocConfig(tb testing.TB) string {
	return blConfig(tb.TempDir(), `["127.0.0.1/32"]`, `ips = ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"]
  users = ["u-banned"]
  auto_ban {
    rejects = 1000000
    window  = "1m"
    ban     = "1m"
  }`)
}

// The blacklist check allocates nothing, for a blocked and a passing request, with
// static and dynamic bans present.
func TestBlacklistZeroAllocs(t *testing.T) {
	px := benchProxy(t, blAllocConfig(t))
	list := px.Current().blacklist.list
	now := time.Now()
	if _, err := list.BanIP(netip.MustParsePrefix("198.51.100.0/24"), time.Hour, "", now); err != nil {
		t.Fatal(err)
	}
	if _, err := list.BanIP(netip.MustParsePrefix("198.51.101.1/32"), time.Hour, "", now); err != nil {
		t.Fatal(err)
	}
	if _, err := list.BanUser("u-dyn", time.Hour, "", now); err != nil {
		t.Fatal(err)
	}
	f := func(name string, status int, headers ...string) {
		t.Helper()
		if n := allocs(t, px, handlerCtx("GET", "/hello", headers...), status); n != 0 {
			t.Errorf("%s: %v allocs per request, want 0", name, n)
		}
	}
	f("blocked CIDR", 403, "X-Forwarded-For", "10.1.1.1")
	f("blocked IPv6", 403, "X-Forwarded-For", "2001:db8::1")
	f("blocked dynamic", 403, "X-Forwarded-For", "198.51.101.1")
	f("blocked user", 403, "X-Forwarded-For", "203.0.113.1", "X-User-Id", "u-banned")
	f("blocked dynamic user", 403, "X-User-Id", "u-dyn")
	f("passing", 200, "X-Forwarded-For", "203.0.113.1", "X-User-Id", "u-ok")
	f("passing without user", 200)

	s := px.Current()
	client := netip.MustParseAddr("203.0.113.9")
	if n := testing.AllocsPerRun(200, func() { px.onLimitReject(s, client) }); n != 0 {
		t.Errorf("onLimitReject: %v allocs, want 0", n)
	}
}

func BenchmarkBlacklistReject(b *testing.B) {
	px := benchProxy(b, blAllocConfig(b))
	benchServe(b, px, "GET", "/hello", "X-Forwarded-For", "10.1.1.1")
}

func BenchmarkBlacklistPass(b *testing.B) {
	px := benchProxy(b, blAllocConfig(b))
	benchServe(b, px, "GET", "/hello", "X-Forwarded-For", "203.0.113.1", "X-User-Id", "u-ok")
}
