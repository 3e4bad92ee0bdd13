//go:build !race

package proxy

import (
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/edge-gw/edge/internal/redistest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
)

// BenchmarkLimitRedis is a whole request through the handler with one redis-scoped limit
// that passes, against a real redis-server on loopback (one round trip each).
func BenchmarkLimitRedis(b *testing.B) {
	rs := redistest.Start(b)
	px := New(NewMetrics(prometheus.NewRegistry()))
	if _, err := px.Apply(mustParse(b, redisLimitConfig([]string{rs.Addr}, "1s", "", `
  limit "user" {
    key   = "header:X-User-Id"
    rate  = "1000000000r/s"
    burst = 1000000000
    scope = "redis"
  }`))); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(px.Close)
	var n atomic.Int64
	b.SetParallelism(32)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		ctx := handlerCtx("GET", "/r/x", "X-User-Id", "u"+strconv.FormatInt(n.Add(1), 10))
		var req fasthttp.Request
		ctx.Request.CopyTo(&req)
		for pb.Next() {
			serveOnce(px, ctx, &req)
			if ctx.Response.StatusCode() != 200 {
				b.Fatalf("status %d %q", ctx.Response.StatusCode(), ctx.Response.Body())
			}
		}
	})
}
