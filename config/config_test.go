package config

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the .golden files of testdata/bad")

// testEnv is the environment the test files see.
func testEnv(name string) (string, bool) {
	switch name {
	case "EDGE_ADMIN_TOKEN":
		return "test-admin-token", true
	case "EDGE_SECKILL_SECRET":
		return "0123456789abcdef0123456789abcdef", true
	}
	return "", false
}

func parseFile(t *testing.T, path string) (*Config, error) {
	t.Helper()
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return Parse(filepath.ToSlash(path), src, testEnv)
}

// Every bad file reports all of its problems, in file order, as FILE:LINE,COL.
func TestBadGolden(t *testing.T) {
	files, _ := filepath.Glob("testdata/bad/*.hcl")
	if len(files) == 0 {
		t.Fatal("no testdata/bad files")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			_, err := parseFile(t, f)
			if err == nil {
				t.Fatal("parsed without error")
			}
			got := err.Error() + "\n"
			golden := strings.TrimSuffix(f, ".hcl") + ".golden"
			if *update {
				os.WriteFile(golden, []byte(got), 0o644)
			}
			want, _ := os.ReadFile(golden)
			if got != string(want) {
				t.Errorf("problems differ from %s:\n--- got\n%s--- want\n%s", golden, got, want)
			}
			for _, line := range strings.Split(strings.TrimSpace(got), "\n") {
				if !strings.HasPrefix(line, f+":") {
					t.Errorf("problem %q does not start with %s:LINE,COL", line, f)
				}
			}
		})
	}
}

func TestGoodFiles(t *testing.T) {
	files, _ := filepath.Glob("testdata/good/*.hcl")
	files = append(files, "../edge.hcl")
	for _, f := range files {
		if _, err := parseFile(t, f); err != nil {
			t.Errorf("%s:\n%v", f, err)
		}
	}
}

func TestSpecExample(t *testing.T) {
	c, err := parseFile(t, "testdata/good/spec.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:8080" || c.ShutdownTimeout != 10*time.Second || c.StateDir != "./state" {
		t.Errorf("top level: %q %v %q", c.Listen, c.ShutdownTimeout, c.StateDir)
	}
	if c.Admin.Token != "test-admin-token" {
		t.Errorf("env() token = %q", c.Admin.Token)
	}
	if len(c.Routes) != 4 || c.Routes[0].Name != "detail" || c.Routes[3].Name != "orders" {
		t.Fatalf("routes in file order: got %d", len(c.Routes))
	}
	d := c.Routes[0]
	if d.Upstream != "catalog" || d.Cache.TTL != 2*time.Second || d.Cache.Stale != 30*time.Second ||
		len(d.Limits) != 2 || d.Limits[1].Rate.PerSecond != 0.1 || d.Limits[1].Burst != 1 ||
		d.Limits[0].Key.Parts[0] != (KeyPart{Kind: KeyPath, N: 2}) || d.Reject.Status != 429 ||
		d.Reject.Body != `{"code":429,"msg":"busy, please retry"}` {
		t.Errorf("route detail: %+v", d)
	}
	if cs := c.Cells[0]; cs.Name != "shop" || len(cs.Cells) != 3 || cs.MissingKey != "reject" ||
		cs.Key.Parts[0] != (KeyPart{Kind: KeyHeader, Name: "X-User-Id"}) {
		t.Errorf("cells: %+v", cs)
	}
	if c.Blacklist.AutoBan.Rejects != 20 || c.Blacklist.IPs[0].String() != "10.0.0.0/8" {
		t.Errorf("blacklist: %+v", c.Blacklist)
	}
	if c.Seckill.Store != "redis" || c.Seckill.Redis.Addrs[0] != "127.0.0.1:6379" || c.Seckill.TokenTTL != 5*time.Minute {
		t.Errorf("seckill: %+v", c.Seckill)
	}
	o := c.Routes[3]
	if o.Priority != "core" || o.MaxInflight != 2000 || o.Fallback.Status != 503 || o.Idempotency.TTL != 24*time.Hour {
		t.Errorf("route orders: %+v", o)
	}
	if c.Cluster.Name != "edge-prod" || c.Cluster.NodeName != "" || c.Cluster.Bind != "10.0.0.5:7946" || len(c.Cluster.Join) != 2 {
		t.Errorf("cluster: %+v", c.Cluster)
	}
}

func TestDefaults(t *testing.T) {
	c, err := parseFile(t, "testdata/good/minimal.hcl")
	if err != nil {
		t.Fatal(err)
	}
	want := Config{Listen: "127.0.0.1:8080", ShutdownTimeout: 10 * time.Second, StateDir: "./state",
		CacheSize: 256 << 20, ReadTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second,
		IdleTimeout: 60 * time.Second, MaxHeaderSize: 16 << 10, MaxBodySize: 4 << 20, MaxConns: 20000}
	if c.Listen != want.Listen || c.ShutdownTimeout != want.ShutdownTimeout || c.StateDir != want.StateDir ||
		c.CacheSize != want.CacheSize || c.ReadTimeout != want.ReadTimeout || c.WriteTimeout != want.WriteTimeout ||
		c.IdleTimeout != want.IdleTimeout || c.MaxHeaderSize != want.MaxHeaderSize ||
		c.MaxBodySize != want.MaxBodySize || c.MaxConns != want.MaxConns {
		t.Errorf("defaults: %+v", c)
	}
	if c.Admin.Listen != "127.0.0.1:9901" || c.AccessLog.Enabled {
		t.Errorf("admin/access log defaults: %+v %+v", c.Admin, c.AccessLog)
	}
	r := c.Routes[0]
	if r.Match.Path != "/" || r.Priority != "normal" || r.Reject.Status != 429 || r.Fallback.Status != 503 ||
		r.Respond.ContentType != "application/json" {
		t.Errorf("route defaults: %+v", r)
	}
}

func TestUnits(t *testing.T) {
	size := func(in string, want int64) {
		t.Helper()
		got, err := ParseSize(in)
		if want < 0 {
			if err == nil {
				t.Errorf("ParseSize(%q) = %d, want error", in, got)
			}
			return
		}
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	size("16KB", 16<<10)
	size("8MB", 8<<20)
	size("1GB", 1<<30)
	size("4096", 4096)
	size("2 mb", 2<<20)
	size("0", -1)
	size("-1KB", -1)
	size("1.5MB", -1)
	size("KB", -1)

	rate := func(in string, want float64) {
		t.Helper()
		got, err := ParseRate(in)
		if want < 0 {
			if err == nil {
				t.Errorf("ParseRate(%q) = %v, want error", in, got)
			}
			return
		}
		if err != nil || got.PerSecond != want {
			t.Errorf("ParseRate(%q) = %v, %v; want %v", in, got.PerSecond, err, want)
		}
	}
	rate("100r/s", 100)
	rate("6r/m", 0.1)
	rate("36r/h", 0.01)
	rate("0.5r/s", 0.5)
	rate("0r/s", -1)
	rate("10/s", -1)
	rate("10r/d", -1)
	rate("r/s", -1)
	rate("NaNr/s", -1)    // NaN passed "n <= 0" (found by FuzzValue)
	rate("5e-324r/h", -1) // divides down to 0 per second (found by FuzzValue)

	key := func(in string, want KeyPart, wantErr bool) {
		t.Helper()
		got, err := ParseKeyPart(in)
		if (err != nil) != wantErr || (!wantErr && got != want) {
			t.Errorf("ParseKeyPart(%q) = %+v, %v", in, got, err)
		}
	}
	key("ip", KeyPart{Kind: KeyIP}, false)
	key("host", KeyPart{Kind: KeyHost}, false)
	key("header:X-User-Id", KeyPart{Kind: KeyHeader, Name: "X-User-Id"}, false)
	key("cookie:sid", KeyPart{Kind: KeyCookie, Name: "sid"}, false)
	key("query:item", KeyPart{Kind: KeyQuery, Name: "item"}, false)
	key("path:2", KeyPart{Kind: KeyPath, N: 2}, false)
	key("const:all of us", KeyPart{Kind: KeyConst, Name: "all of us"}, false)
	key("ip:1", KeyPart{}, true)
	key("header:", KeyPart{}, true)
	key("header:bad name", KeyPart{}, true)
	key("path:x", KeyPart{}, true)
	key("path:0", KeyPart{}, true)
	key("user", KeyPart{}, true)
	key("", KeyPart{}, true)
}

func TestParsePrefix(t *testing.T) {
	f := func(in, want string) {
		t.Helper()
		p, err := ParsePrefix(in)
		got := p.String()
		if err != nil {
			got = "error"
		}
		if got != want {
			t.Errorf("ParsePrefix(%q) = %s, want %s", in, got, want)
		}
	}
	f("10.0.0.0/8", "10.0.0.0/8")
	f("10.1.2.3/8", "10.0.0.0/8")
	f("1.2.3.4", "1.2.3.4/32")
	f("::1", "::1/128")
	f("2001:db8::/32", "2001:db8::/32")
	f("::ffff:1.2.3.4", "1.2.3.4/32")
	f("::ffff:10.0.0.0/104", "10.0.0.0/8")
	f("1.2.3.4/33", "error")
	f("fe80::1%eth0", "error")
	f("banana", "error")
}

func TestStreams(t *testing.T) {
	c, err := parseFile(t, "testdata/good/streams.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Streams) != 4 {
		t.Fatalf("%d streams, want 4", len(c.Streams))
	}
	my, tp, mq, dns := c.Streams[0], c.Streams[1], c.Streams[2], c.Streams[3]
	if my.Name != "mysql" || my.Protocol != StreamTCP || my.Upstream != "db" || !my.ProxyProtocol ||
		my.IdleTimeout != 10*time.Minute || my.MaxConnsPerIP != 100 || my.ConnRate.PerSecond != 20 || my.ConnBurst != 40 ||
		my.HandshakeTimeout != 5*time.Second || my.MaxConns != 10000 {
		t.Errorf("mysql: %+v", my)
	}
	if len(tp.SNI) != 2 || tp.SNI[0] != (SNIRoute{"api.shop.example.com", "api-tls", tp.SNI[0].Pos}) ||
		tp.SNI[1].Pattern != "*.shop.example.com" || tp.Upstream != "default-tls" || tp.ProxyProtocol {
		t.Errorf("tls-passthrough: %+v", tp)
	}
	if mq.Cells != "shop" || mq.Upstream != "" {
		t.Errorf("mqtt: %+v", mq)
	}
	if dns.Protocol != StreamUDP || dns.IdleTimeout != time.Minute || dns.MaxSessions != 5000 {
		t.Errorf("dns: %+v", dns)
	}
	if c.Upstreams[0].Proto.ProxyProtocol != "v2" || c.Upstreams[1].Proto.ProxyProtocol != "" {
		t.Errorf("upstream proxy_protocol: %q %q", c.Upstreams[0].Proto.ProxyProtocol, c.Upstreams[1].Proto.ProxyProtocol)
	}
	if !c.Listeners[0].ProxyProtocol {
		t.Error("listener proxy_protocol not read")
	}
}
