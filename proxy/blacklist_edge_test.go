package proxy

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edge-gw/edge/internal/edgetest"
)

// The built binary: a ban made through the admin API survives SIGHUP and a
// restart; a bad line of the list file is logged as FILE:LINE and skipped.
func TestBlacklistBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs cmd/edge")
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "edge.hcl")
	src := `
listen          = "127.0.0.1:0"
trusted_proxies = ["127.0.0.1/32"]
state_dir       = "state"
admin {
  listen = "127.0.0.1:0"
  token  = env("TEST_ADMIN_TOKEN")
}
route "limited" {
  match { path = "/limited" }
  respond {
    status = 200
    body   = "ok"
  }
  limit "all" {
    key   = "const:all"
    rate  = "1r/m"
    burst = 1
  }
}
route "hello" {
  match { path = "/" }
  respond {
    status = 200
    body   = "hi"
  }
}
blacklist {
  ips  = ["10.0.0.0/8"]
  file = "banned.txt"
  auto_ban {
    rejects = 2
    window  = "1m"
    ban     = "1h"
  }
}
`
	edgetest.WriteConfig(t, cfg, src)
	os.WriteFile(filepath.Join(dir, "banned.txt"), []byte("172.16.0.0/12\n172.16.0.0/99\nuser:u-file\n"), 0o644)
	env := "TEST_ADMIN_TOKEN=" + blToken
	var getPath func(e *edgetest.Edge, path, xff, user string) int

	get := func(e *edgetest.Edge, xff, user string) int {
		t.Helper()
		return getPath(e, "/", xff, user)
	}
	getPath = func(e *edgetest.Edge, path, xff, user string) int {
		t.Helper()
		var h []string
		if xff != "" {
			h = append(h, "X-Forwarded-For", xff)
		}
		if user != "" {
			h = append(h, "X-User-Id", user)
		}
		resp, b := edgetest.Do(t, "GET", "http://"+e.Addr+path, "", h...)
		if resp.StatusCode == 403 && b != `{"error":"blocked"}` {
			t.Errorf("403 body %q", b)
		}
		return resp.StatusCode
	}
	expect := func(e *edgetest.Edge, when, xff, user string, want int) {
		t.Helper()
		if got := get(e, xff, user); got != want {
			t.Errorf("%s: X-Forwarded-For %q X-User-Id %q = %d, want %d", when, xff, user, got, want)
		}
	}

	e := edgetest.Start(t, cfg, env)
	e.WaitLog(t, "banned.txt:2: ", 5*time.Second)
	expect(e, "config entry", "10.1.1.1", "", 403)
	expect(e, "file entry", "172.16.5.5", "", 403)
	expect(e, "file user", "", "u-file", 403)
	expect(e, "not banned", "198.51.100.7", "", 200)
	if code, out := e.Admin(t, blToken, "POST", "/blacklist", `{"ip":"198.51.100.7","reason":"fraud"}`); code != 200 {
		t.Fatalf("POST /blacklist = %d %s", code, out)
	}
	if code, out := e.Admin(t, blToken, "POST", "/blacklist", `{"user":"u9","ttl":"1h"}`); code != 200 {
		t.Fatalf("POST /blacklist = %d %s", code, out)
	}
	var codes []int
	for range 4 {
		codes = append(codes, getPath(e, "/limited", "198.51.100.99", ""))
	}
	if fmt.Sprint(codes) != "[200 429 429 403]" {
		t.Errorf("limited route: %v, want [200 429 429 403] (auto-ban after 2 rejections)", codes)
	}
	expect(e, "API ban", "198.51.100.7", "", 403)
	expect(e, "API user ban", "", "u9", 403)

	os.WriteFile(cfg, []byte(src+"# edited\n"), 0o644)
	e.Signal(t, syscall.SIGHUP)
	e.WaitLog(t, "config reloaded", 10*time.Second)
	expect(e, "after SIGHUP", "198.51.100.7", "", 403)
	expect(e, "after SIGHUP", "", "u9", 403)
	expect(e, "after SIGHUP", "10.1.1.1", "", 403)

	e.Signal(t, syscall.SIGTERM)
	if code := e.Wait(t, 10*time.Second); code != 0 {
		t.Fatalf("exit code %d\n%s", code, e.Log())
	}
	e2 := edgetest.Start(t, cfg, env)
	expect(e2, "after restart", "198.51.100.7", "", 403)
	expect(e2, "after restart", "", "u9", 403)
	expect(e2, "after restart", "198.51.100.8", "", 200)
	expect(e2, "auto-ban after restart", "198.51.100.99", "", 403)
	code, out := e2.Admin(t, blToken, "GET", "/blacklist", "")
	if code != 200 || !strings.Contains(out, `{"ip":"198.51.100.7","kind":"ip","source":"api","reason":"fraud"`) ||
		!strings.Contains(out, `"user":"u9","kind":"user","source":"api"`) ||
		!strings.Contains(out, `{"ip":"198.51.100.99","kind":"ip","source":"auto","reason":"auto-ban: 2 rejects in 1m0s"`) || !strings.Contains(out, `"expires_at"`) {
		t.Errorf("GET /blacklist after restart = %d %s", code, out)
	}
	if code, out := e2.Admin(t, blToken, "DELETE", "/blacklist?ip=172.16.0.0/12", ""); code != 409 {
		t.Errorf("DELETE of a file entry = %d %s, want 409", code, out)
	}
}
