package seckill

import (
	"context"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edge-gw/edge/internal/redistest"
)

func BenchmarkVerify(b *testing.B) {
	s := newSigner(b)
	now := time.Now()
	tok := []byte(s.Sign("42", "user-12345", now.Add(time.Minute)))
	item, user := []byte("42"), []byte("user-12345")
	b.ReportAllocs()
	for b.Loop() {
		if s.Verify(tok, item, user, now) != nil {
			b.Fatal("rejected")
		}
	}
}

func BenchmarkSign(b *testing.B) {
	s := newSigner(b)
	exp := time.Now().Add(time.Minute)
	b.ReportAllocs()
	for b.Loop() {
		_ = s.Sign("42", "user-12345", exp)
	}
}

// BenchmarkIssueRedis issues tokens to distinct users against a real redis-server at 64 and
// 128 concurrent callers, through the Gate (batched, and with batching off) and straight
// through the store. It reports tokens/s, store (script) calls per token, and failed
// calls per token (timeouts past the default 200ms count here).
func BenchmarkIssueRedis(b *testing.B) {
	srv := redistest.Start(b)
	r, err := NewRedis(RedisOptions{Addrs: []string{srv.Addr}})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	ctx := context.Background()
	var users atomic.Int64
	run := func(b *testing.B, callers int, issue func(item, user string) error, calls func() uint64) {
		item := "bench" + strconv.Itoa(int(users.Add(1)))
		if err := r.SetStock(ctx, item, MaxStock); err != nil {
			b.Fatal(err)
		}
		var failed atomic.Int64
		calls0 := calls()
		b.SetParallelism((callers + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
		b.ReportAllocs()
		b.ResetTimer()
		start := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if issue(item, "u"+strconv.FormatInt(users.Add(1), 10)) != nil {
					failed.Add(1)
				}
			}
		})
		elapsed := time.Since(start)
		b.StopTimer()
		b.ReportMetric(float64(b.N)/elapsed.Seconds(), "tokens/s")
		b.ReportMetric(float64(calls()-calls0)/float64(b.N), "calls/token")
		b.ReportMetric(float64(failed.Load())/float64(b.N), "failed/token")
		// Free Redis memory for the next run.
		srv.Do("DEL", stockKey(item), holdersKey(item), expiryKey(item))
	}
	for _, callers := range []int{64, 128} {
		p := strconv.Itoa(callers)
		b.Run("gate/batched/callers="+p, func(b *testing.B) {
			g := newGate(b, r, GateOptions{})
			run(b, callers, func(item, user string) error {
				_, err := g.Issue(ctx, item, user, time.Now())
				return err
			}, g.ScriptCalls)
		})
		b.Run("gate/unbatched/callers="+p, func(b *testing.B) {
			g := newGate(b, r, GateOptions{BatchMax: 1})
			run(b, callers, func(item, user string) error {
				_, err := g.Issue(ctx, item, user, time.Now())
				return err
			}, g.ScriptCalls)
		})
	}
}

// BenchmarkSoldOut measures the answer for a sold-out item, which never reaches the store.
func BenchmarkSoldOut(b *testing.B) {
	srv := redistest.Start(b)
	r, err := NewRedis(RedisOptions{Addrs: []string{srv.Addr}})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	ctx := context.Background()
	g := newGate(b, r, GateOptions{SoldOutRecheck: -1})
	if err := g.SetStock(ctx, "gone", 0); err != nil {
		b.Fatal(err)
	}
	if _, err := g.Issue(ctx, "gone", "first", time.Now()); err != ErrSoldOut {
		b.Fatal(err)
	}
	calls := g.ScriptCalls()
	b.SetParallelism(64)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		now := time.Now()
		for pb.Next() {
			if _, err := g.Issue(ctx, "gone", "u", now); err != ErrSoldOut {
				b.Fatal(err)
			}
		}
	})
	if g.ScriptCalls() != calls {
		b.Fatalf("%d store calls for a sold-out item", g.ScriptCalls()-calls)
	}
}
