//go:build !race

package proxy

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/edge-gw/edge/idempotency"
	"github.com/edge-gw/edge/internal/origintest"
	"github.com/valyala/fasthttp"
)

// TestIdempotencyAllocs: requests on an idempotent route that need no key, or are
// refused before the store, allocate nothing; answers from the memory store (replay,
// 409, 422) allocate only the scope and key string the store keys its map with.
func TestIdempotencyAllocs(t *testing.T) {
	o := origintest.Start(t, func(ctx *fasthttp.RequestCtx) {
		ctx.SetStatusCode(201)
		ctx.Response.Header.Set("X-Order-Id", "1")
		ctx.SetBodyString(`{"order":1}`)
	})
	px := benchProxy(t, idemConfig(o.Addr, "", ""))
	req := func(body string, headers ...string) *fasthttp.RequestCtx {
		ctx := handlerCtx("POST", "/orders/new", headers...)
		ctx.Request.SetBodyString(body)
		return ctx
	}
	f := func(name string, ctx *fasthttp.RequestCtx, status int, want float64) {
		t.Helper()
		if n := allocs(t, px, ctx, status); n > want {
			t.Errorf("%s: %v allocs per request, want at most %v", name, n, want)
		}
	}
	f("GET on an idempotent route", handlerCtx("GET", "/orders/1"), 201, 0)
	f("POST without a key", req("x", "X-User-Id", "u1"), 201, 0)
	f("over-long key", req("x", "X-User-Id", "u1", "Idempotency-Key", string(make([]byte, 300))), 400, 0)
	f("replay", req("x", "X-User-Id", "u1", "Idempotency-Key", "k1"), 201, 1) // warm-up run records it
	f("key reused", req("y", "X-User-Id", "u1", "Idempotency-Key", "k1"), 422, 1)

	ri := px.Current().routes[0].idem
	fp := idempotency.NewFingerprint([]byte("POST"), []byte("/orders/new"), []byte("x"))
	if _, err := ri.mem.Begin(context.Background(), "orders\x00uu1", "k2", fp, 0); err != nil {
		t.Fatal(err)
	}
	f("in progress", req("x", "X-User-Id", "u1", "Idempotency-Key", "k2"), 409, 1)

	required := benchProxy(t, idemConfig(o.Addr, "", "required = true"))
	ctx := req("x", "X-User-Id", "u1")
	if n := allocs(t, required, ctx, 400); n != 0 {
		t.Errorf("missing key: %v allocs per request, want 0", n)
	}
}

// createdOrigin answers every request 201 with a small JSON order.
func createdOrigin(b *testing.B) *origintest.Origin {
	return origintest.Start(b, func(ctx *fasthttp.RequestCtx) {
		ctx.SetStatusCode(201)
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`{"order":1,"status":"created"}`)
	})
}

// BenchmarkIdempotencyReplay measures a repeat answered from the memory store through
// the handler.
func BenchmarkIdempotencyReplay(b *testing.B) {
	px := benchProxy(b, idemConfig(createdOrigin(b).Addr, "", ""))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		ctx := handlerCtx("POST", "/orders/new", "X-User-Id", "u1", "Idempotency-Key", "k")
		ctx.Request.SetBodyString(`{"item":42}`)
		var req fasthttp.Request
		ctx.Request.CopyTo(&req)
		for pb.Next() {
			serveOnce(px, ctx, &req)
		}
	})
}

// BenchmarkIdempotencyFirst measures first requests (a new key each) through the handler
// to a local origin: claim, forward, record.
func BenchmarkIdempotencyFirst(b *testing.B) {
	px := benchProxy(b, idemConfig(createdOrigin(b).Addr, "", ""))
	b.ReportAllocs()
	var n uint64
	b.RunParallel(func(pb *testing.PB) {
		ctx := handlerCtx("POST", "/orders/new", "X-User-Id", "u1")
		ctx.Request.SetBodyString(`{"item":42}`)
		var req fasthttp.Request
		ctx.Request.CopyTo(&req)
		var key [20]byte
		for pb.Next() {
			req.Header.SetBytesV("Idempotency-Key", strconv.AppendUint(key[:0], atomic.AddUint64(&n, 1), 10))
			serveOnce(px, ctx, &req)
		}
	})
}
