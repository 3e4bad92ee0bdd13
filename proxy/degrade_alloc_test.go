//go:build !race

package proxy

import (
	"fmt"
	"testing"
	"time"

	"github.com/edge-gw/edge/internal/origintest"
	"github.com/valyala/fasthttp"
)

func guardedConfig(dir, ok, bad string) string {
	return fmt.Sprintf(`
state_dir = %q
overload {
  max_inflight = 1000
}
upstream "app" {
  servers      = [%q]
  max_inflight = 100
  breaker {
    min_requests = 1000
  }
}
upstream "bad" {
  servers = [%q]
  breaker {
    min_requests = 1
    cool_off     = "1h"
  }
}
route "app" {
  match { path = "/app/" }
  upstream     = "app"
  priority     = "core"
  max_inflight = 100
}
route "low" {
  match { path = "/low/" }
  upstream = "app"
  priority = "low"
}
route "off" {
  match { path = "/off/" }
  upstream = "app"
}
route "full" {
  match { path = "/full/" }
  upstream     = "app"
  max_inflight = 1
}
route "bad" {
  match { path = "/bad/" }
  upstream = "bad"
}
`, dir, ok, bad)
}

// The admission path allocates nothing: a request that passes every guard, and
// each kind of fallback answer.
func TestDegradeZeroAllocs(t *testing.T) {
	o := origintest.Start(t, func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("hello") })
	bad := origintest.Start(t, func(ctx *fasthttp.RequestCtx) { ctx.SetStatusCode(500) })
	px := benchProxy(t, guardedConfig(t.TempDir(), o.Addr, bad.Addr))
	f := func(name string, ctx *fasthttp.RequestCtx, status int) {
		t.Helper()
		if n := allocs(t, px, ctx, status); n != 0 {
			t.Errorf("%s: %v allocs per request, want 0", name, n)
		}
	}
	route := func(name string) *route {
		for _, rt := range px.Current().routes {
			if rt.name == name {
				return rt
			}
		}
		t.Fatalf("no route %s", name)
		return nil
	}
	f("guarded route, bulkhead and breaker upstream", handlerCtx("GET", "/app/1"), 200)

	if err := px.SetDegraded("off", true, "test", time.Time{}); err != nil {
		t.Fatal(err)
	}
	f("degraded", handlerCtx("GET", "/off/1"), 503)
	if err := px.SetDegraded("off", true, "test", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	f("degraded with ttl", handlerCtx("GET", "/off/1"), 503)

	route("full").guard.rg.inflight.Store(1) // one request held
	f("route bulkhead full", handlerCtx("GET", "/full/1"), 503)
	route("full").guard.rg.inflight.Store(0)

	pl := px.Current().pools["app"]
	pl.guard.inflight.Store(100)
	f("upstream bulkhead full", handlerCtx("GET", "/app/1"), 503)
	pl.guard.inflight.Store(0)

	px.Handler(handlerCtx("GET", "/bad/1")) // the origin's 500 opens the breaker (min_requests 1)
	f("breaker open", handlerCtx("GET", "/bad/1"), 503)

	px.metrics.inflight.Store(600) // above low's bound (500), below core's (1000)
	f("overload: low shed", handlerCtx("GET", "/low/1"), 503)
	f("overload: core served", handlerCtx("GET", "/app/1"), 200)
	px.metrics.inflight.Store(0)
}

// BenchmarkGuardedGET is BenchmarkProxyGET through a route with every guard: an
// overload block, route and upstream max_inflight and a breaker.
func BenchmarkGuardedGET(b *testing.B) {
	o := origintest.Start(b, func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("hello") })
	px := benchProxy(b, guardedConfig(b.TempDir(), o.Addr, "127.0.0.1:1"))
	benchServe(b, px, "GET", "/app/item/42")
}

// BenchmarkFallback measures the answer of a degraded route: edge time only, the
// upstream is never asked.
func BenchmarkFallback(b *testing.B) {
	px := benchProxy(b, guardedConfig(b.TempDir(), "127.0.0.1:1", "127.0.0.1:1"))
	if err := px.SetDegraded("off", true, "bench", time.Time{}); err != nil {
		b.Fatal(err)
	}
	benchServe(b, px, "GET", "/off/1")
}
