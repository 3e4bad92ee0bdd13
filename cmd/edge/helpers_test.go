package main

// Helpers the binary tests of this package share; see internal/edgetest for
// those that tests of other packages use too.

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edge-gw/edge/internal/edgetest"
	"github.com/edge-gw/edge/internal/origintest"
	"github.com/valyala/fasthttp"
)

const testToken = "test-token-123"

// origin serves name as the body of every answer, after 800ms on /slow.
func origin(t *testing.T, name string) *origintest.Origin {
	return origintest.Start(t, func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/slow" {
			time.Sleep(800 * time.Millisecond)
		}
		ctx.SetBodyString(name)
	})
}

// writeConfig writes to path an edge config with an admin listener, an access log
// on stdout and one catch-all route to upstream, then extra.
func writeConfig(t *testing.T, path, upstream string, extra string) {
	t.Helper()
	src := fmt.Sprintf(`
listen = "127.0.0.1:0"
shutdown_timeout = "5s"
state_dir = "state"
admin {
  listen = "127.0.0.1:0"
  token  = env("TEST_ADMIN_TOKEN")
}
access_log {
  path = "stdout"
}
upstream "app" {
  servers = [%q]
}
route "app" {
  match { path = "/" }
  upstream = "app"
}
%s`, upstream, extra)
	edgetest.WriteConfig(t, path, src)
}

// get returns the status and body of GET url.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, body := edgetest.Do(t, "GET", url, "")
	return resp.StatusCode, body
}

// adminPost sends POST path to e's admin API with token ("": none) and returns
// the status and the JSON answer.
func adminPost(t *testing.T, e *edgetest.Edge, path, token string) (int, map[string]any) {
	t.Helper()
	code, raw := e.Admin(t, token, "POST", path, "")
	var body map[string]any
	if err := json.Unmarshal([]byte(raw), &body); err != nil {
		t.Fatalf("POST %s: answer is not JSON: %v", path, err)
	}
	return code, body
}

// grep returns the lines of s that contain sub.
func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// waitUntil polls cond every 10ms for up to 5s, failing the test with what it waited for.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// loadResult is what load counted.
type loadResult struct {
	ok, failed int64  // answered 200; failed (an error or another status)
	last       string // the last failure
}

// load runs n clients sending GET /w<client>/<i> to addr, each on its own keep-alive
// connections, until the returned stop is called; stop waits for them and says what
// they saw.
func load(addr string, n int) (stop func() loadResult) {
	var ok, failed atomic.Int64
	var last atomic.Value
	done := make(chan struct{})
	var wg sync.WaitGroup
	for w := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &fasthttp.HostClient{Addr: addr}
			for i := 0; ; i++ {
				select {
				case <-done:
					return
				default:
				}
				code, _, err := c.Get(nil, fmt.Sprintf("http://%s/w%d/%d", addr, w, i))
				if err != nil || code != 200 {
					failed.Add(1)
					last.Store(fmt.Sprintf("%d %v", code, err))
					continue
				}
				ok.Add(1)
			}
		}()
	}
	return func() loadResult {
		close(done)
		wg.Wait()
		r := loadResult{ok: ok.Load(), failed: failed.Load()}
		r.last, _ = last.Load().(string)
		return r
	}
}
