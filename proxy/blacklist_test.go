package proxy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
)

const blToken = "bl-token"

// blConfig is a config with the respond route /hello, trusted 127.0.0.1, state in
// dir and the given blacklist block body.
func blConfig(dir, trusted, block string) string {
	src := upstreamConfig("127.0.0.1:1") + fmt.Sprintf("\nstate_dir = %q\n", dir)
	src = strings.Replace(src, `["127.0.0.1/32"]`, trusted, 1)
	if block != "" {
		src += "blacklist {\n" + block + "\n}\n"
	}
	return src
}

// blStatus sends GET /hello with headers and returns status and body.
func blStatus(t *testing.T, e *testEdge, headers ...string) (int, string) {
	t.Helper()
	resp := e.do(t, "GET", "/hello", headers...)
	return resp.StatusCode(), string(resp.Body())
}

// blExpect checks the answer to GET /hello with headers: 403 blocked or 200.
func blExpect(t *testing.T, e *testEdge, blocked bool, headers ...string) {
	t.Helper()
	code, body := blStatus(t, e, headers...)
	switch {
	case blocked && (code != 403 || body != `{"error":"blocked"}`):
		t.Errorf("%q: got %d %s, want 403 {\"error\":\"blocked\"}", headers, code, body)
	case !blocked && code != 200:
		t.Errorf("%q: got %d %s, want 200", headers, code, body)
	}
}

func TestBlacklistIPsThroughTrustedXFF(t *testing.T) {
	e := startEdge(t, blConfig(t.TempDir(), `["127.0.0.1/32", "192.168.0.0/16"]`,
		`ips = ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7", "2001:db8:ffff::1/128"]`))
	xff := func(v string) []string { return []string{"X-Forwarded-For", v} }
	f := func(v string, blocked bool) {
		t.Helper()
		blExpect(t, e, blocked, xff(v)...)
	}
	f("10.1.2.3", true)              // inside a CIDR
	f("10.255.255.255", true)        // its last address
	f("11.0.0.0", false)             // just outside
	f("9.255.255.255", false)        // just below
	f("192.0.2.7", true)             // a single address
	f("192.0.2.8", false)            // its neighbour
	f("::ffff:10.9.9.9", true)       // IPv4-mapped IPv6 matches the IPv4 entry
	f("2001:db8::1", true)           // IPv6 inside
	f("2001:db8:ffff::1", true)      // also inside the /32
	f("2001:db9::1", false)          // IPv6 outside
	f("2001:db7:ffff::ffff", false)  // just below
	f("[2001:db8::5]:4711", true)    // bracketed with port
	f("10.1.1.1, 192.168.1.1", true) // trusted hops are skipped from the right
	f("10.1.1.1, 203.0.113.5", false)
	f("203.0.113.5, 10.1.1.1", true) // the right-most untrusted address is the client
	blExpect(t, e, false)            // no X-Forwarded-For: the peer 127.0.0.1

	if got := gathered(t, e.reg, "edge_blacklist_blocked_total", "kind", "cidr"); got != 8 {
		t.Errorf("edge_blacklist_blocked_total{kind=cidr} = %v, want 8", got)
	}
	if got := gathered(t, e.reg, "edge_blacklist_blocked_total", "kind", "ip"); got != 1 {
		t.Errorf("edge_blacklist_blocked_total{kind=ip} = %v, want 1", got)
	}
	if got := metricValue(t, e.reg, "edge_blacklist_entries", "kind", "cidr"); got != 2 {
		t.Errorf("edge_blacklist_entries{kind=cidr} = %v, want 2", got)
	}
	if got := metricValue(t, e.reg, "edge_blacklist_entries", "kind", "ip"); got != 2 {
		t.Errorf("edge_blacklist_entries{kind=ip} = %v, want 2", got)
	}
	// Blocked requests are counted as 403s of no route: the blacklist runs before routing.
	if got := gathered(t, e.reg, "edge_requests_total", "code", "403"); got != 9 {
		t.Errorf("edge_requests_total{code=403} = %v, want 9", got)
	}
}

// A peer that is not a trusted proxy cannot choose its address with
// X-Forwarded-For: not to dodge a ban, and not to be taken for a banned address.
func TestBlacklistSpoofedXFF(t *testing.T) {
	// 127.0.0.1 (the test client) is not trusted here.
	e := startEdge(t, blConfig(t.TempDir(), `["10.0.0.0/8"]`, `ips = ["127.0.0.1"]`))
	blExpect(t, e, true)
	blExpect(t, e, true, "X-Forwarded-For", "198.51.100.1")
	blExpect(t, e, true, "X-Forwarded-For", "10.0.0.1, 198.51.100.1")

	e2 := startEdge(t, blConfig(t.TempDir(), `["10.0.0.0/8"]`, `ips = ["203.0.113.9"]`))
	blExpect(t, e2, false, "X-Forwarded-For", "203.0.113.9")

	// Nor can it frame another address for auto-ban: rejections count for the peer.
	e3 := startEdge(t, blConfig(t.TempDir(), `["10.0.0.0/8"]`, `auto_ban {
    rejects = 2
    window  = "1m"
    ban     = "1h"
  }`))
	peer := netip.MustParseAddr("127.0.0.1")
	var req fasthttp.Request
	req.SetRequestURI("/hello")
	req.Header.Set("X-Forwarded-For", "203.0.113.9")
	ctx := &fasthttp.RequestCtx{}
	ctx.Init(&req, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}, nil)
	s := e3.px.Current()
	for range 2 {
		e3.px.onLimitReject(s, s.trusted.clientAddr(ctx, peerAddr(ctx)))
	}
	if k := s.blacklist.list.BlockedIP(netip.MustParseAddr("203.0.113.9"), time.Now()); k != 0 {
		t.Errorf("spoofed address got auto-banned (%v)", k)
	}
	if k := s.blacklist.list.BlockedIP(peer, time.Now()); k == 0 {
		t.Errorf("the peer that collected the rejections is not banned")
	}
}

func TestBlacklistUsers(t *testing.T) {
	e := startEdge(t, blConfig(t.TempDir(), `["127.0.0.1/32"]`, `users = ["u-banned", "u#2"]`))
	blExpect(t, e, true, "X-User-Id", "u-banned")
	blExpect(t, e, true, "X-User-Id", "u#2")
	blExpect(t, e, false, "X-User-Id", "u-ok")
	blExpect(t, e, false, "X-User-Id", "u-banned2")
	blExpect(t, e, false)
	if got := gathered(t, e.reg, "edge_blacklist_blocked_total", "kind", "user"); got != 2 {
		t.Errorf("edge_blacklist_blocked_total{kind=user} = %v, want 2", got)
	}

	f := func(key string, blocked bool, uri string, headers ...string) {
		t.Helper()
		e := startEdge(t, blConfig(t.TempDir(), `["127.0.0.1/32"]`, `users = ["u-banned"]
  user_key = "`+key+`"`))
		resp := e.do(t, "GET", uri, headers...)
		if want := map[bool]int{true: 403, false: 200}[blocked]; resp.StatusCode() != want {
			t.Errorf("user_key %s, %s %q: %d, want %d", key, uri, headers, resp.StatusCode(), want)
		}
	}
	f("cookie:uid", true, "/hello", "Cookie", "a=1; uid=u-banned")
	f("cookie:uid", false, "/hello", "Cookie", "uid=u-ok", "X-User-Id", "u-banned")
	f("query:user", true, "/hello?user=u-banned")
	f("query:user", false, "/hello?user=u-ok")
	f("header:X-Customer", true, "/hello", "x-customer", "u-banned")

	f("path:2", true, "/hello/u-banned/x")
	f("path:2", false, "/hello/u-ok/x")
	f("path:2", false, "/hello")
}

type blListing struct {
	Count   int `json:"count"`
	Entries []struct {
		IP      string     `json:"ip"`
		User    string     `json:"user"`
		Kind    string     `json:"kind"`
		Source  string     `json:"source"`
		Reason  string     `json:"reason"`
		Created *time.Time `json:"created_at"`
		Expires *time.Time `json:"expires_at"`
	} `json:"entries"`
}

// list is GET /blacklist, checked for a 200 and a consistent count.
func (a *adminAPI) list(t *testing.T) blListing {
	t.Helper()
	code, body := a.call(t, "GET", "/blacklist", "")
	var l blListing
	if err := json.Unmarshal([]byte(body), &l); code != 200 || err != nil || l.Count != len(l.Entries) {
		t.Fatalf("GET /blacklist = %d %s (%v)", code, body, err)
	}
	return l
}

// find returns the listing's line for value (ip or user) as "kind source reason",
// with " expires" when it has an expiry, or "".
func (l blListing) find(value string) string {
	for _, e := range l.Entries {
		if e.IP == value || e.User == value {
			s := e.Kind + " " + e.Source + " " + e.Reason
			if e.Expires != nil {
				s += " expires"
			}
			return s
		}
	}
	return ""
}

func TestBlacklistAdminAPI(t *testing.T) {
	dir := t.TempDir()
	src := blConfig(dir, `["127.0.0.1/32"]`, `ips = ["10.0.0.0/8"]
  users = ["u-static"]`)
	e := startEdge(t, src)
	a := startAdmin(t, prometheus.NewRegistry(), blToken, e.px.adminBlacklist)
	xff := func(ip string) []string { return []string{"X-Forwarded-For", ip} }

	// Mutating calls need the token.
	resp, err := http.Post(a.url+"/blacklist", "application/json", strings.NewReader(`{"ip":"1.2.3.4"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Errorf("POST without token = %d, want 401", resp.StatusCode)
	}

	// Bad input is a 400 naming the problem.
	bad := func(method, path, body, code, detail string) {
		t.Helper()
		got, out := a.call(t, method, path, body)
		if got != 400 || !strings.Contains(out, `"error":"`+code+`"`) || !strings.Contains(out, detail) {
			t.Errorf("%s %s %s = %d %s, want 400 %s naming %q", method, path, body, got, out, code, detail)
		}
	}
	bad("POST", "/blacklist", `{"ip":"1.2.3.300"}`, "bad_ip", "1.2.3.300")
	bad("POST", "/blacklist", `{"ip":"1.2.3.0/33"}`, "bad_ip", "1.2.3.0/33")
	bad("POST", "/blacklist", `{"ip":"1.2.3.4","ttl":"ten minutes"}`, "bad_ttl", "ten minutes")
	bad("POST", "/blacklist", `{"ip":"1.2.3.4","ttl":"-1m"}`, "bad_ttl", "-1m")
	bad("POST", "/blacklist", `{"ip":"1.2.3.4","user":"u1"}`, "bad_ban", "exactly one")
	bad("POST", "/blacklist", `{}`, "bad_ban", "exactly one")
	bad("POST", "/blacklist", `{"ip":`, "bad_json", "JSON")
	bad("POST", "/blacklist", `{"ip":]`, "bad_json", "JSON")
	bad("POST", "/blacklist", `{"ip":"1.2.3.4","tll":"1m"}`, "bad_json", "tll")
	bad("POST", "/blacklist", `{"user":" u1"}`, "bad_user", "spaces")
	bad("DELETE", "/blacklist", "", "bad_unban", "exactly one")
	bad("DELETE", "/blacklist?ip=nope", "", "bad_ip", "nope")
	if n := a.list(t).Count; n != 2 {
		t.Errorf("after refused calls the listing has %d entries, want the 2 of the config", n)
	}

	// A ban with a short TTL blocks, is listed with its expiry, then expires.
	blExpect(t, e, false, xff("1.2.3.4")...)
	if code, out := a.call(t, "POST", "/blacklist", `{"ip":"1.2.3.9/24","ttl":"300ms","reason":"scraper"}`); code != 200 ||
		!strings.Contains(out, `"ip":"1.2.3.0/24"`) || !strings.Contains(out, `"expires_at"`) {
		t.Fatalf("POST ban = %d %s", code, out)
	}
	blExpect(t, e, true, xff("1.2.3.4")...)
	blExpect(t, e, false, xff("1.2.4.1")...)
	if got := a.list(t).find("1.2.3.0/24"); got != "cidr api scraper expires" {
		t.Errorf("listing of the ban: %q", got)
	}
	waitUntil(t, 5*time.Second, "TTL ban expires", func() bool {
		code, _ := blStatus(t, e, xff("1.2.3.4")...)
		return code == 200
	})
	if got := a.list(t).find("1.2.3.0/24"); got != "" {
		t.Errorf("expired ban still listed: %q", got)
	}

	// A ban without TTL holds until DELETE; DELETE of what is not there is a 404.
	if code, out := a.call(t, "POST", "/blacklist", `{"ip":"2001:db8::7"}`); code != 200 {
		t.Fatalf("POST = %d %s", code, out)
	}
	if code, out := a.call(t, "POST", "/blacklist", `{"user":"u1","ttl":"1h"}`); code != 200 || !strings.Contains(out, `"user":"u1"`) {
		t.Fatalf("POST user = %d %s", code, out)
	}
	blExpect(t, e, true, xff("2001:db8::7")...)
	blExpect(t, e, true, "X-User-Id", "u1")
	if got := a.list(t).find("2001:db8::7"); got != "ip api " {
		t.Errorf("listing of a ban without ttl: %q", got)
	}
	if got := metricValue(t, e.reg, "edge_blacklist_entries", "kind", "user"); got != 2 {
		t.Errorf("edge_blacklist_entries{kind=user} = %v, want 2", got)
	}

	// Reloads keep API bans; a restart (a new Proxy on the same state_dir) too.
	if err := e.reload(t, src+"\n# edited\n"); err != nil {
		t.Fatal(err)
	}
	blExpect(t, e, true, xff("2001:db8::7")...)
	e2 := startEdge(t, src)
	blExpect(t, e2, true, xff("2001:db8::7")...)
	blExpect(t, e2, true, "X-User-Id", "u1")

	f := func(query string, want int, code string) {
		t.Helper()
		got, out := a.call(t, "DELETE", "/blacklist?"+query, "")
		if got != want || !strings.Contains(out, code) {
			t.Errorf("DELETE ?%s = %d %s, want %d %s", query, got, out, want, code)
		}
	}
	f("ip=2001:db8::7", 200, `"removed":true`)
	blExpect(t, e, false, xff("2001:db8::7")...)
	f("ip=2001:db8::7", 404, `"error":"not_found"`)
	f("user=u1", 200, `"removed":true`)
	blExpect(t, e, false, "X-User-Id", "u1")
	f("user=u1", 404, `"error":"not_found"`)
	f("ip=10.0.0.0/8", 409, `"error":"static_entry"`)
	f("user=u-static", 409, `"error":"static_entry"`)
	f("ip=10.1.1.1", 404, `"error":"not_found"`) // inside a static range, but not an entry
	blExpect(t, e, true, xff("10.0.0.1")...)

	// The removal is durable too.
	e3 := startEdge(t, src)
	blExpect(t, e3, false, xff("2001:db8::7")...)

	// Without a blacklist block the endpoints say so.
	e4 := startEdge(t, blConfig(t.TempDir(), `[]`, ""))
	a4 := startAdmin(t, prometheus.NewRegistry(), blToken, e4.px.adminBlacklist)
	if code, out := a4.call(t, "GET", "/blacklist", ""); code != 404 || !strings.Contains(out, "no_blacklist") {
		t.Errorf("GET without a blacklist block = %d %s", code, out)
	}
}

// blCaptureLog sends slog's default logger to a buffer for the test.
type blLogBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *blLogBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *blLogBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func blCaptureLog(t *testing.T) *blLogBuf {
	buf := &blLogBuf{}
	old := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(buf, nil)))
	t.Cleanup(func() { slog.SetDefault(old) })
	return buf
}

func TestBlacklistFile(t *testing.T) {
	defer func(d time.Duration) { blacklistWatchEvery = d }(blacklistWatchEvery)
	blacklistWatchEvery = 20 * time.Millisecond
	logs := blCaptureLog(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "banned.txt")
	os.WriteFile(file, []byte("# banned by ops\n10.9.0.0/16\nnot-an-ip\nuser:u-file   # a comment\n300.1.1.1\n2001:db8::/48\n"), 0o644)
	src := blConfig(dir, `["127.0.0.1/32"]`, fmt.Sprintf("file = %q", file))
	e := startEdge(t, src)
	blExpect(t, e, true, "X-Forwarded-For", "10.9.1.1")
	blExpect(t, e, true, "X-Forwarded-For", "2001:db8:0:1::1")
	blExpect(t, e, true, "X-User-Id", "u-file")
	blExpect(t, e, false, "X-Forwarded-For", "10.8.1.1")
	for _, want := range []string{file + ":3: ", file + ":5: "} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log does not name the bad line %q:\n%s", want, logs.String())
		}
	}

	// A change of the file is picked up without a reload.
	os.WriteFile(file, []byte("10.8.0.0/16\n"), 0o644)
	waitUntil(t, 5*time.Second, "changed file applied", func() bool {
		code, _ := blStatus(t, e, "X-Forwarded-For", "10.8.1.1")
		return code == 403
	})
	blExpect(t, e, false, "X-Forwarded-For", "10.9.1.1")

	// A reload pointing at a missing file is refused and the running list stays.
	err := e.reload(t, blConfig(dir, `["127.0.0.1/32"]`, fmt.Sprintf("file = %q", file+".missing")))
	if err == nil || !strings.Contains(err.Error(), "banned.txt.missing") {
		t.Errorf("reload with a missing file: err = %v, want a refusal naming it", err)
	}
	blExpect(t, e, true, "X-Forwarded-For", "10.8.1.1")
	if v := e.px.Current().Version; v != 1 {
		t.Errorf("version %d after a refused reload, want 1", v)
	}
}

func TestBlacklistReload(t *testing.T) {
	dir := t.TempDir()
	e := startEdge(t, blConfig(dir, `["127.0.0.1/32"]`, `ips = ["10.0.0.0/8"]`))
	a := startAdmin(t, prometheus.NewRegistry(), blToken, e.px.adminBlacklist)
	if code, out := a.call(t, "POST", "/blacklist", `{"ip":"198.51.100.1"}`); code != 200 {
		t.Fatalf("POST = %d %s", code, out)
	}
	list := e.px.Current().blacklist.list

	// A reload that fails after the snapshot was built (here: the access log cannot
	// be opened) changes nothing.
	broken := blConfig(dir, `["127.0.0.1/32"]`, `ips = ["11.0.0.0/8"]`) + fmt.Sprintf(`
access_log {
  path = %q
}`, filepath.Join(dir, "no-such-dir", "access.log"))
	if err := e.reload(t, broken); err == nil || !strings.Contains(err.Error(), "access log") {
		t.Fatalf("reload with an unopenable access log: err = %v", err)
	}
	blExpect(t, e, true, "X-Forwarded-For", "10.0.0.1")
	blExpect(t, e, false, "X-Forwarded-For", "11.0.0.1")
	// So does edge -check of another config.
	if err := Check(mustParse(t, blConfig(dir, `["127.0.0.1/32"]`, `ips = ["12.0.0.0/8"]`))); err != nil {
		t.Fatal(err)
	}
	blExpect(t, e, false, "X-Forwarded-For", "12.0.0.1")

	// A good reload replaces the static entries and keeps the List and its bans.
	if err := e.reload(t, blConfig(dir, `["127.0.0.1/32"]`, `ips = ["11.0.0.0/8"]`)); err != nil {
		t.Fatal(err)
	}
	blExpect(t, e, false, "X-Forwarded-For", "10.0.0.1")
	blExpect(t, e, true, "X-Forwarded-For", "11.0.0.1")
	blExpect(t, e, true, "X-Forwarded-For", "198.51.100.1")
	if e.px.Current().blacklist.list != list {
		t.Error("reload replaced the long-lived List")
	}

	// Without the block nothing is blocked; with it back, the API ban is there again.
	if err := e.reload(t, blConfig(dir, `["127.0.0.1/32"]`, "")); err != nil {
		t.Fatal(err)
	}
	blExpect(t, e, false, "X-Forwarded-For", "198.51.100.1")
	if err := e.reload(t, blConfig(dir, `["127.0.0.1/32"]`, `users = ["x"]`)); err != nil {
		t.Fatal(err)
	}
	blExpect(t, e, true, "X-Forwarded-For", "198.51.100.1")
	blExpect(t, e, false, "X-Forwarded-For", "11.0.0.1")
}

// Auto-ban is fed by onLimitReject; this drives it directly, as the limits do.
func TestBlacklistAutoBan(t *testing.T) {
	dir := t.TempDir()
	src := blConfig(dir, `["127.0.0.1/32"]`, `auto_ban {
    rejects = 3
    window  = "10s"
    ban     = "400ms"
  }`)
	e := startEdge(t, src)
	a := startAdmin(t, prometheus.NewRegistry(), blToken, e.px.adminBlacklist)
	bad := netip.MustParseAddr("203.0.113.50")
	other := netip.MustParseAddr("203.0.113.51")
	s := e.px.Current()
	e.px.onLimitReject(s, bad)
	e.px.onLimitReject(s, bad)
	e.px.onLimitReject(s, other)
	blExpect(t, e, false, "X-Forwarded-For", "203.0.113.50")
	e.px.onLimitReject(s, bad)
	blExpect(t, e, true, "X-Forwarded-For", "203.0.113.50")
	blExpect(t, e, false, "X-Forwarded-For", "203.0.113.51")
	if got := metricValue(t, e.reg, "edge_autoban_bans_total"); got != 1 {
		t.Errorf("edge_autoban_bans_total = %v, want 1", got)
	}
	if got := a.list(t).find("203.0.113.50"); got != "ip auto auto-ban: 3 rejects in 10s expires" {
		t.Errorf("listing of the auto-ban: %q", got)
	}
	waitUntil(t, 5*time.Second, "auto-ban expires", func() bool {
		code, _ := blStatus(t, e, "X-Forwarded-For", "203.0.113.50")
		return code == 200
	})

	// Without auto_ban, rejections ban nobody.
	e2 := startEdge(t, blConfig(t.TempDir(), `["127.0.0.1/32"]`, `ips = []`))
	for range 50 {
		e2.px.onLimitReject(e2.px.Current(), bad)
	}
	blExpect(t, e2, false, "X-Forwarded-For", "203.0.113.50")
}

// End to end: limit rejections on a limited route lead to an auto-ban of the client,
// which ends after the ban time.
func TestBlacklistAutoBanThroughLimits(t *testing.T) {
	src := blConfig(t.TempDir(), `["127.0.0.1/32"]`, `auto_ban {
    rejects = 3
    window  = "10s"
    ban     = "500ms"
  }`) + `
route "limited" {
  match { path = "/limited" }
  respond {
    status = 200
    body   = "ok"
  }
  limit "user" {
    key   = "header:X-User-Id"
    rate  = "1r/m"
    burst = 1
  }
}`
	e := startEdge(t, src)
	get := func(ip string) int {
		return e.do(t, "GET", "/limited", "X-Forwarded-For", ip, "X-User-Id", "u1").StatusCode()
	}
	var codes []int
	for range 5 {
		codes = append(codes, get("203.0.113.70"))
	}
	if fmt.Sprint(codes) != "[200 429 429 429 403]" {
		t.Fatalf("statuses %v, want [200 429 429 429 403]: allowed, 3 rejections, banned", codes)
	}
	blExpect(t, e, true, "X-Forwarded-For", "203.0.113.70")  // banned everywhere, not only on the route
	blExpect(t, e, false, "X-Forwarded-For", "203.0.113.71") // another client is not
	if got := metricValue(t, e.reg, "edge_autoban_bans_total"); got != 1 {
		t.Errorf("edge_autoban_bans_total = %v, want 1", got)
	}
	waitUntil(t, 5*time.Second, "auto-ban expires", func() bool { return get("203.0.113.70") == 429 })
}
