package idempotency

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edge-gw/edge/internal/redistest"
	"github.com/valyala/fasthttp"
)

// benchKeys gives (scope, key) pairs that do not repeat for 2^24 calls, without building
// strings inside the measured loop.
type benchKeys struct {
	n      atomic.Uint64
	scopes [256]string
	keys   [1 << 16]string
}

func newBenchKeys() *benchKeys {
	k := &benchKeys{}
	for i := range k.scopes {
		k.scopes[i] = "user-" + strconv.Itoa(i)
	}
	for i := range k.keys {
		k.keys[i] = "0b2c7f4e-idem-" + strconv.Itoa(i)
	}
	return k
}

func (k *benchKeys) next() (scope, key string) {
	i := k.n.Add(1)
	return k.scopes[(i>>16)&255], k.keys[i&(1<<16-1)]
}

// benchBeginComplete measures the life of a first request: Begin (Started) and Complete
// with a 300-byte record.
func benchBeginComplete(b *testing.B, s Store) {
	ctx := context.Background()
	keys := newBenchKeys()
	rec := testRecord(`{"order":42,"status":"created","items":[{"sku":"A-1","qty":1}],"padding":"` + string(make([]byte, 160)) + `"}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(rec)))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			scope, key := keys.next()
			r, err := s.Begin(ctx, scope, key, fpA, time.Minute)
			if err != nil || r.Outcome != Started {
				b.Fatalf("Begin: %v, %v", r.Outcome, err)
			}
			if err := s.Complete(ctx, r.Claim, rec, time.Hour); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// benchReplay measures a repeat: Begin of a completed key.
func benchReplay(b *testing.B, s Store) {
	ctx := context.Background()
	r, err := s.Begin(ctx, "u1", "replayed", fpA, time.Minute)
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Complete(ctx, r.Claim, testRecord(`{"order":42}`), time.Hour); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r, err := s.Begin(ctx, "u1", "replayed", fpA, time.Minute)
			if err != nil || r.Outcome != Replay {
				b.Fatalf("Begin: %v, %v", r.Outcome, err)
			}
		}
	})
}

func BenchmarkMemoryBeginComplete(b *testing.B) { benchBeginComplete(b, NewMemory(MemoryOptions{})) }
func BenchmarkMemoryReplay(b *testing.B)        { benchReplay(b, NewMemory(MemoryOptions{})) }

// The Redis benchmarks run 16 callers per core: an edge has many requests in flight, and
// rueidis pipelines them on one connection.
func BenchmarkRedisBeginComplete(b *testing.B) {
	srv := redistest.Start(b)
	b.SetParallelism(16)
	benchBeginComplete(b, NewRedis(newClient(b, srv.Addr), RedisOptions{Timeout: 10 * time.Second}))
}

func BenchmarkRedisReplay(b *testing.B) {
	srv := redistest.Start(b)
	b.SetParallelism(16)
	benchReplay(b, NewRedis(newClient(b, srv.Addr), RedisOptions{Timeout: 10 * time.Second}))
}

func BenchmarkFingerprint4KiB(b *testing.B) {
	req := &fasthttp.Request{}
	req.Header.SetMethod("POST")
	req.SetRequestURI("/orders?item=1")
	req.SetBody(make([]byte, 4096))
	b.ReportAllocs()
	b.SetBytes(4096)
	for b.Loop() {
		_ = RequestFingerprint(req)
	}
}

func BenchmarkAppendResponse(b *testing.B) {
	resp := testResponse(`{"order":42}`)
	dst := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		dst = AppendResponse(dst[:0], resp, nil)
	}
}

func BenchmarkWriteResponse(b *testing.B) {
	rec := testRecord(`{"order":42}`)
	resp := &fasthttp.Response{}
	b.ReportAllocs()
	for b.Loop() {
		_ = rec.WriteResponse(resp)
	}
}
