//go:build !race

package proxy

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edge-gw/edge/seckill"
	"github.com/valyala/fasthttp"
)

// TestSeckillZeroAllocs: the answers that need no store call allocate nothing — a
// sold-out answer from the local flag, a missing user, and an order with a token that
// fails local verification. (Issuing and consuming allocate: the Gate keeps the user
// and item as strings, and the store call allocates.)
func TestSeckillZeroAllocs(t *testing.T) {
	old := seckillFlagFor
	seckillFlagFor = time.Hour // the flag must not lapse during the run
	t.Cleanup(func() { seckillFlagFor = old })
	px := benchProxy(t, seckillConfig(memoryStore(), "127.0.0.1:1"))
	g := px.Current().seckill.backend.current()
	if err := g.SetStock(context.Background(), "gone", 0); err != nil {
		t.Fatal(err)
	}
	if err := g.SetStock(context.Background(), "42", 10); err != nil {
		t.Fatal(err)
	}
	// A valid token of u1 for item 42, presented by another user.
	grant, err := g.Issue(context.Background(), "42", "u1", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	f := func(name string, ctx *fasthttp.RequestCtx, status int) {
		t.Helper()
		if n := allocs(t, px, ctx, status); n != 0 {
			t.Errorf("%s: %v allocs per request, want 0", name, n)
		}
	}
	f("sold out from the local flag", handlerCtx("POST", "/seckill/gone/token", "X-User-Id", "u-12345"), 410)
	f("missing user", handlerCtx("POST", "/seckill/gone/token"), 400)
	f("order without token", handlerCtx("POST", "/order/42", "X-User-Id", "u1"), 403)
	f("order with another user's token", handlerCtx("POST", "/order/42", "X-User-Id", "u2",
		"X-Seckill-Token", grant.Token), 403)
	f("order with a forged token", handlerCtx("POST", "/order/42", "X-User-Id", "u1",
		"X-Seckill-Token", grant.Token[:40]+"AAAAAAAAAAAA"), 403)
}

// BenchmarkSeckillSoldOut measures the sold-out answer from the local flag through
// the handler.
func BenchmarkSeckillSoldOut(b *testing.B) {
	px := benchProxy(b, seckillConfig(memoryStore(), "127.0.0.1:1"))
	g := px.Current().seckill.backend.current()
	if err := g.SetStock(context.Background(), "gone", 0); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		ctx := handlerCtx("POST", "/seckill/gone/token", "X-User-Id", "u-12345")
		var req fasthttp.Request
		ctx.Request.CopyTo(&req)
		for pb.Next() {
			serveOnce(px, ctx, &req)
			if ctx.Response.StatusCode() != 410 {
				b.Fatalf("status %d", ctx.Response.StatusCode())
			}
		}
	})
}

// BenchmarkSeckillIssueMemory measures issuing to distinct users through the handler
// on the memory store.
func BenchmarkSeckillIssueMemory(b *testing.B) {
	px := benchProxy(b, seckillConfig(memoryStore(), "127.0.0.1:1"))
	g := px.Current().seckill.backend.current()
	if err := g.SetStock(context.Background(), "big", seckill.MaxStock); err != nil {
		b.Fatal(err)
	}
	var n atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		ctx := handlerCtx("POST", "/seckill/big/token")
		var req fasthttp.Request
		ctx.Request.CopyTo(&req)
		var buf []byte
		for pb.Next() {
			buf = append(buf[:0], 'u')
			buf = strconv.AppendInt(buf, n.Add(1), 10)
			req.Header.SetBytesV("X-User-Id", buf)
			serveOnce(px, ctx, &req)
			if ctx.Response.StatusCode() != 200 {
				b.Fatalf("status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
			}
		}
	})
}
