package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edge-gw/edge/internal/edgetest"
)

// Limiter buckets survive a SIGHUP that keeps their limit: a user who used up their
// allowance is still limited after the reload.
func TestBinaryLimitSurvivesSIGHUP(t *testing.T) {
	o := origin(t, "a")
	cfg := filepath.Join(t.TempDir(), "edge.hcl")
	limit := `
route "item" {
  match { path = "/item/" }
  upstream = "app"
  limit "user" {
    key   = "header:X-User-Id"
    rate  = "6r/m"
    burst = 1
  }
  reject {
    status = 429
    body   = "{\"code\":429,\"msg\":\"busy, please retry\"}"
  }
}
`
	// route "item" must come before the catch-all "/" route of writeConfig.
	write := func(comment string) {
		writeConfig(t, cfg, o.Addr, "")
		src, err := os.ReadFile(cfg)
		if err != nil {
			t.Fatal(err)
		}
		out := []byte(comment + "\n" + limit)
		out = append(out, src...)
		edgetest.WriteConfig(t, cfg, string(out))
	}
	write("# first")
	e := edgetest.Start(t, cfg, "TEST_ADMIN_TOKEN="+testToken)
	do := func(user string) (int, string, string) {
		t.Helper()
		resp, body := edgetest.Do(t, "GET", "http://"+e.Addr+"/item/42", "", "X-User-Id", user)
		return resp.StatusCode, body, resp.Header.Get("Retry-After")
	}
	if code, body, _ := do("u1"); code != 200 || body != "a" {
		t.Fatalf("first request = %d %q, want 200 a", code, body)
	}
	code, body, retry := do("u1")
	if code != 429 || body != `{"code":429,"msg":"busy, please retry"}` || retry != "10" {
		t.Fatalf("second request = %d %q Retry-After %q, want 429, the reject body and 10", code, body, retry)
	}

	write("# second")
	e.Signal(t, syscall.SIGHUP)
	e.WaitLog(t, "config reloaded", 5*time.Second)
	if code, _, retry := do("u1"); code != 429 || retry == "" || retry == "0" {
		t.Errorf("after SIGHUP u1 = %d Retry-After %q, want 429: the bucket did not survive", code, retry)
	}
	if code, body, _ := do("u2"); code != 200 || body != "a" {
		t.Errorf("after SIGHUP another user = %d %q, want 200", code, body)
	}
	_, metrics := get(t, "http://"+e.AdminAddr+"/metrics")
	for _, want := range []string{
		`edge_limit_decisions_total{limit="user",result="pass",route="item"} 2`,
		`edge_limit_decisions_total{limit="user",result="reject",route="item"} 2`,
		`edge_limit_keys{limit="user",route="item"} 2`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s:\n%s", want, grep(metrics, "edge_limit"))
		}
	}
}
