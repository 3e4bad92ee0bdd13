package main

import (
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/edge-gw/edge/internal/edgetest"
)

// A kill switch made through the admin API of the built binary survives a
// restart: the new process reads it from state_dir.
func TestBinaryKillSwitchSurvivesRestart(t *testing.T) {
	o := origin(t, "a")
	cfg := filepath.Join(t.TempDir(), "edge.hcl")
	writeConfig(t, cfg, o.Addr, "")
	get := func(e *edgetest.Edge) (int, string, string) {
		t.Helper()
		resp, body := edgetest.Do(t, "GET", "http://"+e.Addr+"/item/1", "")
		return resp.StatusCode, body, resp.Header.Get("Retry-After")
	}
	degrade := func(e *edgetest.Edge, body string) {
		t.Helper()
		if code, out := e.Admin(t, testToken, "POST", "/routes/app/degrade", body); code != 200 {
			t.Fatalf("POST /routes/app/degrade %s: %d %s", body, code, out)
		}
	}
	stop := func(e *edgetest.Edge) {
		t.Helper()
		e.Signal(t, syscall.SIGTERM)
		if code := e.Wait(t, 10*time.Second); code != 0 {
			t.Fatalf("exit %d\n%s", code, e.Log())
		}
	}

	e := edgetest.Start(t, cfg, "TEST_ADMIN_TOKEN="+testToken)
	if code, body, _ := get(e); code != 200 || body != "a" {
		t.Fatalf("before: %d %q", code, body)
	}
	degrade(e, `{"on":true,"reason":"sale melting"}`)
	fallback := func(e *edgetest.Edge, when string) {
		t.Helper()
		if code, body, ra := get(e); code != 503 || body != `{"error":"unavailable"}` || ra != "30" {
			t.Fatalf("%s: %d %q Retry-After %q, want the default fallback", when, code, body, ra)
		}
	}
	fallback(e, "degraded")
	seen := o.Requests.Load()
	stop(e)

	e = edgetest.Start(t, cfg, "TEST_ADMIN_TOKEN="+testToken)
	fallback(e, "after restart")
	if o.Requests.Load() != seen {
		t.Error("the origin saw a request of the degraded route")
	}
	degrade(e, `{"on":false}`)
	if code, body, _ := get(e); code != 200 || body != "a" {
		t.Fatalf("switched back on: %d %q", code, body)
	}
	stop(e)
}
