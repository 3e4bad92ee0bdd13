//go:build !race

package proxy

import (
	"testing"

	"github.com/edge-gw/edge/internal/origintest"
	"github.com/valyala/fasthttp"
)

// A proxied cell request allocates nothing: key hash, ring lookup, health, the
// forward (with its retry loop) and X-Edge-Cell; so do its refusals and a spill.
func TestCellsZeroAllocs(t *testing.T) {
	var defs []cellDef
	for _, name := range []string{"c1", "c2", "c3"} {
		o := origintest.Start(t, cellHandler(name))
		defs = append(defs, cellDef{name: name, servers: []string{o.Addr}})
	}
	f := func(px *Proxy, name string, ctx *fasthttp.RequestCtx, status int) {
		t.Helper()
		if n := allocs(t, px, ctx, status); n != 0 {
			t.Errorf("%s: %v allocs per request, want 0", name, n)
		}
		if len(ctx.Response.Header.Peek("X-Edge-Cell")) == 0 && status != 400 {
			t.Errorf("%s: no X-Edge-Cell", name)
		}
	}
	px := benchProxy(t, cellsConfig(defs, ""))
	f(px, "cell GET", handlerCtx("GET", "/shop/cart", "X-User-Id", "user-42"), 200)
	f(px, "cell POST", handlerCtx("POST", "/shop/order", "X-User-Id", "user-7"), 200)
	f(px, "missing key", handlerCtx("GET", "/shop/cart"), 400)

	// Every cell's server marked down by its checks: 503, and with spill the
	// walk over the ring.
	down := func(px *Proxy, except string) {
		for _, c := range px.Current().cells["shop"].cells {
			if c.name != except {
				c.pool.servers[0].health.activeDown.Store(true)
			}
		}
	}
	px = benchProxy(t, cellsConfig(defs, ""))
	down(px, "")
	f(px, "cell unavailable", handlerCtx("GET", "/shop/cart", "X-User-Id", "user-42"), 503)
	px = benchProxy(t, cellsConfig(defs, `spill = true`))
	down(px, "c3")
	f(px, "spill", handlerCtx("GET", "/shop/cart", "X-User-Id", "user-42"), 200)
}

func BenchmarkProxyCellGET(b *testing.B) {
	var defs []cellDef
	for _, name := range []string{"c1", "c2", "c3"} {
		o := origintest.Start(b, cellHandler(name))
		defs = append(defs, cellDef{name: name, servers: []string{o.Addr}})
	}
	px := benchProxy(b, cellsConfig(defs, ""))
	benchServe(b, px, "GET", "/shop/cart", "X-User-Id", "user-42")
}
