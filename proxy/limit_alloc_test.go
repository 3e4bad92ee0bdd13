//go:build !race

package proxy

import (
	"net/netip"
	"testing"

	"github.com/valyala/fasthttp"
)

const raceEnabled = false

// A limit decision allocates nothing: passes and rejections, with and without the
// RateLimit-* headers, with several limits and a refund, and key extraction itself.
func TestLimitZeroAllocs(t *testing.T) {
	px := benchProxy(t, limitConfig("127.0.0.1:1", "", `
  limit "user" {
    key     = ["header:X-User-Id", "ip"]
    rate    = "1000000000r/s"
    burst   = 1000000000
    headers = true
  }
  limit "item" {
    key   = "path:2"
    rate  = "1r/h"
  }
  limit "host" {
    key   = "host"
    rate  = "1r/s"
    burst = 1000000
  }`))
	f := func(name string, ctx *fasthttp.RequestCtx, status int) {
		t.Helper()
		if status == 429 { // the first request of a key passes: take it first
			var req fasthttp.Request
			ctx.Request.CopyTo(&req)
			serveOnce(px, ctx, &req)
		}
		if n := allocs(t, px, ctx, status); n != 0 {
			t.Errorf("%s: %v allocs per request, want 0", name, n)
		}
	}
	// The first request of an item takes its only token: later ones are rejected by
	// the item limit after the user limit took a token (refunded).
	f("limit pass", handlerCtx("GET", "/r/?a=1", "X-User-Id", "u1"), 200)
	f("limit reject with refund", handlerCtx("GET", "/r/42", "X-User-Id", "u1"), 429)

	px = benchProxy(t, limitConfig("127.0.0.1:1", "", `
  limit "user" {
    key         = "cookie:sid"
    rate        = "1r/h"
    missing_key = "reject"
  }`))
	f("missing key reject", handlerCtx("GET", "/r/x"), 429)
	f("reject", handlerCtx("GET", "/r/x", "Cookie", "sid=abc"), 429)
}

func TestKeyZeroAllocs(t *testing.T) {
	ctx := handlerCtx("GET", "/item/42/x?q=1", "X-User-Id", "u1", "Cookie", "sid=s")
	client := netip.MustParseAddr("2001:db8::1")
	k := mustKey(t, "ip", "host", "header:X-User-Id", "cookie:sid", "query:q", "path:2", "const:c")
	buf := make([]byte, 0, 256)
	if n := testing.AllocsPerRun(100, func() {
		buf, _ = k.appendKey(buf[:0], ctx, client)
		k.hashKey(ctx, client, 1)
	}); n != 0 {
		t.Errorf("key extraction: %v allocs, want 0", n)
	}
}

func BenchmarkLimitReject(b *testing.B) {
	px := benchProxy(b, limitConfig("127.0.0.1:1", "", `
  limit "user" {
    key  = "header:X-User-Id"
    rate = "1r/h"
  }`))
	benchServe(b, px, "GET", "/r/x", "X-User-Id", "u1")
}

func BenchmarkLimitPass(b *testing.B) {
	px := benchProxy(b, limitConfig("127.0.0.1:1", "", `
  limit "user" {
    key   = "header:X-User-Id"
    rate  = "1000000000r/s"
    burst = 1000000000
  }`))
	benchServe(b, px, "GET", "/r/x", "X-User-Id", "u1")
}
