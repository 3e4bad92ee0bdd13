package limiter

import (
	"context"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edge-gw/edge/internal/redistest"
	"github.com/redis/rueidis"
)

func redisClient(t testing.TB, addrs ...string) rueidis.Client {
	t.Helper()
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: addrs, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func newBucket(t testing.TB, name string, rate float64, burst int, maxWait time.Duration) *RedisBucket {
	t.Helper()
	b, err := NewRedisBucket(name, rate, burst, maxWait)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Random takes and refunds on a few keys at slow rates, where the seconds a test takes
// refill nothing that shows: the Redis bucket and the local store agree on every answer,
// and on retry-after to the time the test took.
func TestRedisMatchesStore(t *testing.T) {
	srv := redistest.Start(t)
	c := redisClient(t, srv.Addr)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 2))
	start := time.Now()
	for round, cfg := range []struct {
		rate  float64
		burst int
	}{{1.0 / 3600, 1}, {1.0 / 3600, 5}, {3.0 / 3600, 7}, {1.0 / 60, 3}} {
		b := newBucket(t, "conf"+strconv.Itoa(round), cfg.rate, cfg.burst, 0)
		s := newStore(t, cfg.rate, cfg.burst, 0)
		for i := 0; i < 300; i++ {
			h := rng.Uint64N(4)
			now := time.Now().UnixNano()
			if rng.IntN(4) == 0 {
				s.Refund(h, now)
				if _, err := b.Refund(ctx, c, h); err != nil {
					t.Fatal(err)
				}
				continue
			}
			ok, retry, left := s.Take(h, now)
			rok, rwait, rleft, err := b.Take(ctx, c, h)
			if err != nil {
				t.Fatal(err)
			}
			if ok != rok || left != rleft {
				t.Fatalf("rate %g burst %d op %d key %d: redis ok=%v remaining=%d, store ok=%v remaining=%d",
					cfg.rate, cfg.burst, i, h, rok, rleft, ok, left)
			}
			if d := rwait - retry; !ok && (d < -time.Since(start)-time.Millisecond || d > time.Since(start)+time.Millisecond) {
				t.Fatalf("rate %g burst %d op %d: redis retry-after %v, store %v", cfg.rate, cfg.burst, i, rwait, retry)
			}
		}
	}
}

// Burst, then rejections with retry-after about one interval; a token comes back after
// it; the key expires once the bucket is full again.
func TestRedisBucketRefill(t *testing.T) {
	srv := redistest.Start(t)
	c := redisClient(t, srv.Addr)
	ctx := context.Background()
	b := newBucket(t, "refill", 10, 3, 0) // 100ms interval
	for i := 0; i < 3; i++ {
		if ok, _, left, err := b.Take(ctx, c, 1); err != nil || !ok || left != 2-i {
			t.Fatalf("take %d: ok=%v remaining=%d err=%v, want ok remaining %d", i, ok, left, err, 2-i)
		}
	}
	ok, wait, _, err := b.Take(ctx, c, 1)
	if err != nil || ok || wait <= 0 || wait > 100*time.Millisecond {
		t.Fatalf("4th take: ok=%v wait=%v err=%v, want rejected with retry-after in (0, 100ms]", ok, wait, err)
	}
	if ttl := srv.Do("PTTL", b.Key(1)); ttl == "-1" || ttl == "-2" {
		t.Fatalf("bucket key has no expiry (PTTL %s)", ttl)
	} else if ms, _ := strconv.Atoi(ttl); ms > 300 || ms < 100 {
		t.Errorf("PTTL %d ms of an empty bucket of 3 at 10/s, want about 300", ms)
	}
	time.Sleep(wait) // let the interval pass: the point of the test
	if ok, _, left, err := b.Take(ctx, c, 1); err != nil || !ok || left != 0 {
		t.Fatalf("take after retry-after: ok=%v remaining=%d err=%v, want ok remaining 0", ok, left, err)
	}
	// Full again after 3 intervals: the key is gone.
	deadline := time.Now().Add(5 * time.Second)
	for srv.Do("EXISTS", b.Key(1)) != "0" {
		if time.Now().After(deadline) {
			t.Fatal("a full bucket's key still exists after 5s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRedisBucketWaitAndRefund(t *testing.T) {
	srv := redistest.Start(t)
	c := redisClient(t, srv.Addr)
	ctx := context.Background()
	b := newBucket(t, "wait", 1, 1, 1500*time.Millisecond)
	if ok, wait, _, err := b.Take(ctx, c, 7); err != nil || !ok || wait != 0 {
		t.Fatalf("first: ok=%v wait=%v err=%v", ok, wait, err)
	}
	if ok, wait, _, err := b.Take(ctx, c, 7); err != nil || !ok || wait < 900*time.Millisecond || wait > time.Second {
		t.Fatalf("second: ok=%v wait=%v err=%v, want reserved with a wait of about 1s", ok, wait, err)
	}
	if ok, wait, _, err := b.Take(ctx, c, 7); err != nil || ok || wait < 1900*time.Millisecond || wait > 2*time.Second {
		t.Fatalf("third: ok=%v wait=%v err=%v, want rejected with about 2s", ok, wait, err)
	}
	// Refunds give back the reservation, then the first token; a full bucket takes none.
	for i, want := range []bool{true, true, false} {
		if got, err := b.Refund(ctx, c, 7); err != nil || got != want {
			t.Fatalf("refund %d = %v %v, want %v", i, got, err, want)
		}
	}
	if n := srv.Do("EXISTS", b.Key(7)); n != "0" {
		t.Errorf("a bucket refunded to full still has a key")
	}
}

// A bucket read with another rate or burst keeps its tokens, clamped, as Store.Update.
func TestRedisBucketParamsChange(t *testing.T) {
	srv := redistest.Start(t)
	c := redisClient(t, srv.Addr)
	ctx := context.Background()
	s := newStore(t, 1.0/60, 10, 0)
	b := newBucket(t, "change", 1.0/60, 10, 0)
	for i := 0; i < 4; i++ {
		s.Take(1, time.Now().UnixNano())
		if _, _, _, err := b.Take(ctx, c, 1); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []struct {
		rate  float64
		burst int
	}{{1.0 / 60, 5}, {1.0 / 6, 5}, {1.0 / 6, 20}, {1.0 / 60, 10}} {
		if err := s.Update(p.rate, p.burst); err != nil {
			t.Fatal(err)
		}
		ok, _, left := s.Take(1, time.Now().UnixNano())
		rok, _, rleft, err := newBucket(t, "change", p.rate, p.burst, 0).Take(ctx, c, 1)
		if err != nil || ok != rok || left != rleft {
			t.Fatalf("rate %g burst %d: redis ok=%v remaining=%d err=%v, store ok=%v remaining=%d",
				p.rate, p.burst, rok, rleft, err, ok, left)
		}
	}
}

// Many callers on one bucket: exactly burst tokens are taken.
func TestRedisBucketConcurrent(t *testing.T) {
	srv := redistest.Start(t)
	c := redisClient(t, srv.Addr)
	b := newBucket(t, "conc", 1.0/60, 25, 0)
	var passed atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				ok, _, _, err := b.Take(context.Background(), c, 99)
				if err != nil {
					t.Error(err)
					return
				}
				if ok {
					passed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if n := passed.Load(); n != 25 {
		t.Errorf("%d of 320 takes passed, want exactly the burst, 25", n)
	}
}

// On a Redis Cluster every bucket is one key in one slot: no CROSSSLOT, buckets on every
// master.
func TestRedisBucketCluster(t *testing.T) {
	cl := redistest.StartCluster(t)
	c := redisClient(t, cl.Addrs...)
	ctx := context.Background()
	b := newBucket(t, "route:limit", 1.0/60, 2, 0)
	for h := uint64(0); h < 64; h++ {
		for i, want := range []bool{true, true, false} {
			ok, _, _, err := b.Take(ctx, c, h)
			if err != nil {
				t.Fatalf("key %d take %d: %v", h, i, err)
			}
			if ok != want {
				t.Fatalf("key %d take %d: ok=%v, want %v", h, i, ok, want)
			}
		}
		if _, err := b.Refund(ctx, c, h); err != nil {
			t.Fatalf("key %d refund: %v", h, err)
		}
	}
	used := 0
	for _, s := range cl.Servers {
		if n, _ := strconv.Atoi(strings.TrimSpace(s.Do("DBSIZE"))); n > 0 {
			used++
		}
	}
	if used != 3 {
		t.Errorf("buckets on %d of 3 masters, want all 3", used)
	}
}

func TestRedisBucketInvalid(t *testing.T) {
	for _, c := range []struct {
		rate  float64
		burst int
		wait  time.Duration
	}{{0, 1, 0}, {1, 0, 0}, {1, 1, -time.Second}} {
		if _, err := NewRedisBucket("x", c.rate, c.burst, c.wait); err == nil {
			t.Errorf("NewRedisBucket(%g, %d, %v) = nil error", c.rate, c.burst, c.wait)
		}
	}
}

// BenchmarkRedisTake is the cost of one decision against a real redis-server on loopback,
// 32 callers per CPU (rueidis pipelines them): throughput.
func BenchmarkRedisTake(b *testing.B) {
	srv := redistest.Start(b)
	c := redisClient(b, srv.Addr)
	bk := newBucket(b, "bench", 1e9, 1e9, 0)
	var n atomic.Uint64
	b.SetParallelism(32)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		h := n.Add(1)
		for pb.Next() {
			if _, _, _, err := bk.Take(context.Background(), c, h); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkRedisTakeSerial is the latency of one decision: one caller, one round trip
// at a time.
func BenchmarkRedisTakeSerial(b *testing.B) {
	srv := redistest.Start(b)
	c := redisClient(b, srv.Addr)
	bk := newBucket(b, "bench", 1e9, 1e9, 0)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, _, err := bk.Take(context.Background(), c, 1); err != nil {
			b.Fatal(err)
		}
	}
}
