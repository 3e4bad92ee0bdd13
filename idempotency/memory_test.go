package idempotency

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"
)

func TestMemoryBoundsUnderFlood(t *testing.T) {
	t.Parallel()
	opts := MemoryOptions{MaxEntries: 1000, MaxBytes: 256 << 10, MaxRecordBytes: 4 << 10}
	m := NewMemory(opts)
	ctx := context.Background()
	rec := AppendRecordBody(AppendRecordStart(nil, 200), make([]byte, 700))
	check := func(i int) {
		t.Helper()
		st := m.Stats()
		if st.Entries > opts.MaxEntries || st.Bytes > opts.MaxBytes || st.Entries < 0 || st.Bytes < 0 {
			t.Fatalf("after %d keys: %+v, bounds %d entries %d bytes", i, st, opts.MaxEntries, opts.MaxBytes)
		}
	}
	var inflight [50]Claim
	for i := range 20000 {
		key := strconv.Itoa(i)
		r, err := m.Begin(ctx, "flood", key, fpA, time.Minute)
		if err != nil || r.Outcome != Started {
			t.Fatalf("Begin of key %d: %v, %v", i, r.Outcome, err)
		}
		if i%3 == 0 {
			// A third stays in flight for a while (the last 50 of them), then aborts.
			if old := inflight[i/3%len(inflight)]; old.Key != "" {
				if err := m.Abort(ctx, old); err != nil {
					t.Fatal(err)
				}
			}
			inflight[i/3%len(inflight)] = r.Claim
			continue
		}
		if err := m.Complete(ctx, r.Claim, rec, time.Hour); err != nil {
			t.Fatalf("Complete of key %d: %v", i, err)
		}
		if i%97 == 0 {
			check(i)
		}
	}
	check(20000)
	if st := m.Stats(); st.Entries < opts.MaxEntries/2 && st.Bytes < opts.MaxBytes/2 {
		t.Fatalf("after the flood: %+v; the store never reached its bounds", st)
	}
	// The newest record survived the flood.
	if r, err := m.Begin(ctx, "flood", "19999", fpA, time.Minute); err != nil || r.Outcome != Replay {
		t.Fatalf("newest key after the flood: %v, %v", r.Outcome, err)
	}
}

func TestMemoryEvictsOldestCompletedFirst(t *testing.T) {
	t.Parallel()
	m := NewMemory(MemoryOptions{MaxEntries: 16}) // one shard of 16 entries
	if len(m.shards) != 1 {
		t.Fatalf("%d shards, want 1", len(m.shards))
	}
	ctx := context.Background()
	begin := func(key string) Result {
		t.Helper()
		r, err := m.Begin(ctx, "u", key, fpA, time.Minute)
		if err != nil {
			t.Fatalf("Begin(%s): %v", key, err)
		}
		return r
	}
	begin("inflight") // the oldest entry of all, never completed
	claims := make([]Claim, 15)
	for i := range claims {
		claims[i] = begin(strconv.Itoa(i)).Claim
	}
	// Complete in reverse order: "14" is the oldest completed record.
	for i := len(claims) - 1; i >= 0; i-- {
		if err := m.Complete(ctx, claims[i], testRecord(strconv.Itoa(i)), time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	if r := begin("new"); r.Outcome != Started {
		t.Fatalf("new key in a full store: %v", r.Outcome)
	}
	if r := begin("inflight"); r.Outcome != InProgress {
		t.Fatalf("in-flight claim after eviction: %v, want it kept", r.Outcome)
	}
	if r := begin("13"); r.Outcome != Replay {
		t.Fatalf("second-oldest record: %v, want it kept", r.Outcome)
	}
	if r := begin("14"); r.Outcome != Started { // evicts "13" in turn
		t.Fatalf("oldest completed record: %v, want it evicted", r.Outcome)
	}
}

func TestMemoryFullOfClaims(t *testing.T) {
	t.Parallel()
	m := NewMemory(MemoryOptions{MaxEntries: 16})
	ctx := context.Background()
	claims := make([]Claim, 16)
	for i := range claims {
		lease := time.Minute
		if i == 0 {
			lease = 100 * time.Millisecond
		}
		r, err := m.Begin(ctx, "u", strconv.Itoa(i), fpA, lease)
		if err != nil || r.Outcome != Started {
			t.Fatalf("Begin %d: %v, %v", i, r.Outcome, err)
		}
		claims[i] = r.Claim
	}
	_, err := m.Begin(ctx, "u", "one too many", fpA, time.Minute)
	if !errors.Is(err, ErrFull) || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Begin in a store full of claims: %v, want ErrFull and ErrUnavailable", err)
	}
	for i := 1; i < len(claims); i++ { // no claim was evicted to make room
		if r, err := m.Begin(ctx, "u", strconv.Itoa(i), fpA, time.Minute); err != nil || r.Outcome != InProgress {
			t.Fatalf("claim %d: %v, %v", i, r.Outcome, err)
		}
	}
	// Claims leave by their lease: claim 0's runs out and makes room.
	deadline := time.Now().Add(5 * time.Second)
	for {
		r, err := m.Begin(ctx, "u", "one too many", fpA, time.Minute)
		if err == nil && r.Outcome == Started {
			break
		}
		if !errors.Is(err, ErrFull) || time.Now().After(deadline) {
			t.Fatalf("Begin after a lease ran out: %v, %v", r.Outcome, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// And by Abort.
	if err := m.Abort(ctx, claims[1]); err != nil {
		t.Fatal(err)
	}
	if r, err := m.Begin(ctx, "u", "after abort", fpA, time.Minute); err != nil || r.Outcome != Started {
		t.Fatalf("Begin after Abort: %v, %v", r.Outcome, err)
	}
	if st := m.Stats(); st.Entries != 16 || st.InFlight != 16 {
		t.Fatalf("stats %+v, want 16 entries in flight", st)
	}
}
