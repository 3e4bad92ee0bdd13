package main

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/edge-gw/edge/internal/edgetest"
	"github.com/edge-gw/edge/internal/origintest"
	"github.com/valyala/fasthttp"
)

var upgradedPID = regexp.MustCompile(`upgrade: the new binary serves; draining.* pid=(\d+)`)

// An upgrade under load (30 s, the upgrade at 10 s): SIGUSR2 starts the binary again on
// the same sockets; the old
// process drains and exits, no request fails, and the new one starts with the old one's
// cache (a cached item is a HIT without a new origin request). A new binary that cannot
// start (a bad config) leaves the old one serving.
func TestBinaryUpgrade(t *testing.T) {
	var originHits atomic.Int64
	o := origintest.Start(t, func(ctx *fasthttp.RequestCtx) {
		originHits.Add(1)
		ctx.Response.Header.Set("Cache-Control", "max-age=600")
		fmt.Fprintf(ctx, "item %s", ctx.Path())
	})
	dir := t.TempDir()
	cfg := filepath.Join(dir, "edge.hcl")
	good := fmt.Sprintf(`
listen = "127.0.0.1:0"
state_dir = %q
shutdown_timeout = "3s"
admin {
  listen = "127.0.0.1:0"
}
upstream "o" { servers = [%q] }
route "item" {
  match { path = "/item/" }
  upstream = "o"
  cache { ttl = "10m" }
}
route "plain" {
  match { path = "/" }
  upstream = "o"
}
`, filepath.Join(dir, "state"), o.Addr)
	edgetest.WriteConfig(t, cfg, good)
	e := edgetest.Start(t, cfg)
	c := &fasthttp.HostClient{Addr: e.Addr, MaxIdemponentCallAttempts: 1}
	get := func(path string) (int, string, error) {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.SetRequestURI("http://" + e.Addr + path)
		err := c.DoTimeout(req, resp, 5*time.Second)
		return resp.StatusCode(), string(resp.Header.Peek("X-Cache")), err
	}
	if code, xc, err := get("/item/1"); code != 200 || xc != "MISS" || err != nil {
		t.Fatalf("first item: %d %s %v", code, xc, err)
	}

	// A new binary that cannot start: the old one goes on.
	edgetest.WriteConfig(t, cfg, good+"\nroute {\n")
	e.Signal(t, syscall.SIGUSR2)
	e.WaitLog(t, "did not come up; still serving", 40*time.Second)
	if code, _, err := get("/plain"); code != 200 || err != nil {
		t.Fatalf("after a failed upgrade: %d %v", code, err)
	}
	edgetest.WriteConfig(t, cfg, good)

	// The real one, under load.
	stop := load(e.Addr, 4)
	// 30 s of load with the upgrade at 10 s (6 s and 2 s under the race detector).
	before, after := 10*time.Second, 20*time.Second
	if raceEnabled || testing.Short() {
		before, after = 2*time.Second, 4*time.Second
	}
	time.Sleep(before)
	upgradeAt := time.Now()
	e.Signal(t, syscall.SIGUSR2)
	if code := e.Wait(t, 30*time.Second); code != 0 {
		t.Errorf("the old process exited %d", code)
	}
	m := upgradedPID.FindStringSubmatch(e.Log())
	if m == nil {
		t.Fatalf("no upgrade in the log:\n%s", e.Log())
	}
	pid, _ := strconv.Atoi(m[1])
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	time.Sleep(time.Until(upgradeAt.Add(after))) // the new process alone serves
	res := stop()
	t.Logf("%d requests through the upgrade, %d failed (last: %s)", res.ok, res.failed, res.last)
	if res.failed != 0 || res.ok == 0 {
		t.Errorf("%d of %d requests failed during the upgrade", res.failed, res.ok+res.failed)
	}
	hits := originHits.Load()
	c = &fasthttp.HostClient{Addr: e.Addr, MaxIdemponentCallAttempts: 1} // the old one's connections are gone
	if code, xc, err := get("/item/1"); code != 200 || xc != "HIT" || err != nil {
		t.Errorf("the cached item after the upgrade: %d %q %v, want a HIT from the handed-over cache", code, xc, err)
	}
	if originHits.Load() != hits {
		t.Error("the new process asked the origin for an item the old one had cached")
	}
}
