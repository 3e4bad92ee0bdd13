package idempotency

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edge-gw/edge/internal/redistest"
)

func TestRedisTwoEdges(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	// Two edge nodes: two clients, two stores, one Redis.
	edges := []*Redis{
		NewRedis(newClient(t, srv.Addr), suiteRedisOptions),
		NewRedis(newClient(t, srv.Addr), suiteRedisOptions),
	}
	ctx := context.Background()
	const n = 20
	var wg sync.WaitGroup
	start := make(chan struct{})
	results := make([]Result, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			<-start
			results[i], errs[i] = edges[i%2].Begin(ctx, "u1", "shared", fpA, time.Minute)
		})
	}
	close(start)
	wg.Wait()
	var owner Result
	started := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if results[i].Outcome == Started {
			started++
			owner = results[i]
		} else if results[i].Outcome != InProgress {
			t.Fatalf("edge %d: %v", i%2, results[i].Outcome)
		}
	}
	if started != 1 {
		t.Fatalf("%d of %d Begin calls on two edges started, want 1", started, n)
	}
	rec := testRecord("from one edge")
	if err := edges[0].Complete(ctx, owner.Claim, rec, time.Hour); err != nil {
		t.Fatal(err)
	}
	for _, e := range edges {
		r, err := e.Begin(ctx, "u1", "shared", fpA, time.Minute)
		if err != nil || r.Outcome != Replay || string(r.Record) != string(rec) {
			t.Fatalf("replay on an edge: %v %q, %v", r.Outcome, r.Record, err)
		}
	}
}

func TestRedisFailures(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	r := NewRedis(newClient(t, srv.Addr), RedisOptions{}) // default 200ms timeout
	ctx := context.Background()
	claim := Claim{Scope: "u1", Key: "k", Fingerprint: fpA, Token: 1}

	// unavailable runs every operation and checks each fails fast with ErrUnavailable.
	unavailable := func(how string, ctx context.Context) {
		t.Helper()
		ops := []struct {
			name string
			op   func() error
		}{
			{"begin", func() error { _, err := r.Begin(ctx, "u1", "k", fpA, time.Minute); return err }},
			{"wait", func() error { _, err := r.Wait(ctx, "u1", "k", fpA, time.Minute, time.Second); return err }},
			{"complete", func() error { return r.Complete(ctx, claim, testRecord("x"), time.Hour) }},
			{"abort", func() error { return r.Abort(ctx, claim) }},
			{"preload", func() error {
				ctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
				defer cancel()
				return r.Preload(ctx)
			}},
		}
		for _, o := range ops {
			start := time.Now()
			err := o.op()
			took := time.Since(start)
			if !errors.Is(err, ErrUnavailable) {
				t.Fatalf("%s with redis %s: %v, want ErrUnavailable", o.name, how, err)
			}
			if !strings.Contains(err.Error(), "idempotency") {
				t.Fatalf("%s with redis %s: error %q does not name what failed", o.name, how, err)
			}
			// Not a speed goal: the promise is "never a hang", an answer within the deadline.
			if took > 2*time.Second {
				t.Fatalf("%s with redis %s took %v, want a failure within the 200ms deadline", o.name, how, took)
			}
		}
	}
	healthy := func() {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			_, err := r.Begin(ctx, "probe", "probe", fpA, time.Second)
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("store still unavailable after 5s: %v", err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if err := r.Preload(ctx); err != nil {
		t.Fatal(err)
	}

	t.Run("paused", func(t *testing.T) {
		slow := NewRedis(newClient(t, srv.Addr), RedisOptions{Timeout: time.Minute})
		srv.Pause()
		unavailable("paused", ctx)
		// The caller's deadline wins when it is shorter than the store's timeout.
		cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		start := time.Now()
		_, err := slow.Begin(cctx, "u1", "k", fpA, time.Minute)
		cancel()
		if !errors.Is(err, ErrUnavailable) || time.Since(start) > 2*time.Second {
			t.Fatalf("Begin with a 50ms context on a paused redis: %v after %v", err, time.Since(start))
		}
		srv.Resume()
		healthy()
	})

	t.Run("killed and restarted", func(t *testing.T) {
		srv.Kill()
		unavailable("killed", ctx)
		srv.Restart()
		healthy()
		b, err := r.Begin(ctx, "u1", "after-restart", fpA, time.Minute)
		if err != nil || b.Outcome != Started {
			t.Fatalf("Begin after restart: %v, %v", b.Outcome, err)
		}
	})

	t.Run("script flush", func(t *testing.T) {
		// A connection from before the restart may still be pooled: its first call fails
		// (EOF), as a client told 503 would see once. Warm up on keys of their own.
		for i := 0; i < 10; i++ {
			if _, err := r.Begin(ctx, "u1", "warm-"+strconv.Itoa(i), fpA, time.Minute); err == nil {
				break
			}
		}
		b, err := r.Begin(ctx, "u1", "flush", fpA, time.Minute)
		if err != nil || b.Outcome != Started {
			t.Fatalf("Begin: %v, %v", b.Outcome, err)
		}
		srv.Do("SCRIPT", "FLUSH")
		if err := r.Complete(ctx, b.Claim, testRecord("flushed"), time.Hour); err != nil {
			t.Fatalf("Complete after SCRIPT FLUSH: %v", err)
		}
		srv.Do("SCRIPT", "FLUSH")
		if got, err := r.Begin(ctx, "u1", "flush", fpA, time.Minute); err != nil || string(got.Record.Body()) != "flushed" {
			t.Fatalf("Begin after SCRIPT FLUSH: %v %q, %v", got.Outcome, got.Record.Body(), err)
		}
	})

	t.Run("entries carry a ttl", func(t *testing.T) {
		b, err := r.Begin(ctx, "u1", "pttl", fpA, 30*time.Second)
		if err != nil || b.Outcome != Started {
			t.Fatalf("Begin: %v, %v", b.Outcome, err)
		}
		pttl := func() string { return srv.Do("PTTL", RedisKey("u1", "pttl")) }
		if got := pttl(); len(got) != 5 || got[0] < '1' { // 10000..30000 ms: the lease
			t.Fatalf("PTTL of a claim = %s, want the 30s lease", got)
		}
		if err := r.Complete(ctx, b.Claim, testRecord("x"), 2*time.Hour); err != nil {
			t.Fatal(err)
		}
		if got := pttl(); len(got) != 7 || got[0] != '7' { // ~7200000 ms: the ttl
			t.Fatalf("PTTL of a record = %s, want the 2h ttl", got)
		}
	})
}
