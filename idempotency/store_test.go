package idempotency

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edge-gw/edge/internal/redistest"
	"github.com/redis/rueidis"
	"github.com/valyala/fasthttp"
)

// suiteMaxRecord is the MaxRecordBytes every store of the conformance suite is built with.
const suiteMaxRecord = 64 << 10

func TestMemoryStore(t *testing.T) {
	t.Parallel()
	testStore(t, NewMemory(MemoryOptions{MaxRecordBytes: suiteMaxRecord}))
}

func TestRedisStore(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	testStore(t, NewRedis(newClient(t, srv.Addr), suiteRedisOptions))
}

func TestRedisClusterStore(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t)
	client := newClient(t, c.Addrs...)
	testStore(t, NewRedis(client, suiteRedisOptions))

	// Every key of one (scope, key) is in the slot of its hash tag, whatever the scope and
	// key contain (braces included), and the keys of the suite spread over the masters.
	ctx := context.Background()
	f := func(scope, key string) {
		t.Helper()
		name := RedisKey(scope, key)
		tag := name[strings.IndexByte(name, '{')+1 : strings.IndexByte(name, '}')]
		slotOf := func(k string) int64 {
			n, err := client.Do(ctx, client.B().ClusterKeyslot().Key(k).Build()).AsInt64()
			if err != nil {
				t.Fatalf("CLUSTER KEYSLOT %q: %v", k, err)
			}
			return n
		}
		if a, b := slotOf(name), slotOf(tag); a != b {
			t.Fatalf("key %q is in slot %d, its tag %q in slot %d", name, a, tag, b)
		}
	}
	f("user-1", "k1")
	f("{evil}", "{x}")
	f("", "}{")
	f("10.0.0.1", "a:b:c")

	// The suite's keys did not all land on one master: the scripts ran on several nodes.
	withKeys := 0
	for addr, node := range client.Nodes() {
		n, err := node.Do(ctx, node.B().Dbsize().Build()).AsInt64()
		if err != nil {
			t.Fatalf("DBSIZE on %s: %v", addr, err)
		}
		if n > 0 {
			withKeys++
		}
	}
	if withKeys < 2 {
		t.Fatalf("the suite's keys are on %d of 3 masters, want at least 2", withKeys)
	}
}

// suiteRedisOptions: a timeout long enough for a loaded 2-core machine, since the suite
// checks semantics, not latency.
var suiteRedisOptions = RedisOptions{Timeout: 10 * time.Second, MaxRecordBytes: suiteMaxRecord, PollInterval: 5 * time.Millisecond}

// newClient connects a rueidis client the way the edge does (no client-side cache) and
// closes it when the test ends.
func newClient(t testing.TB, addrs ...string) rueidis.Client {
	t.Helper()
	client, err := rueidis.NewClient(rueidis.ClientOption{
		InitAddress:      addrs,
		DisableCache:     true,
		Dialer:           net.Dialer{Timeout: time.Second},
		ConnWriteTimeout: 2 * time.Second,
	})
	if err != nil {
		t.Fatalf("cannot connect to redis %v: %v", addrs, err)
	}
	t.Cleanup(client.Close)
	return client
}

// testResponse is the origin's answer the suite records: a 201 with end-to-end headers worth
// replaying, hop-by-hop ones and a cookie that must not be.
func testResponse(body string) *fasthttp.Response {
	resp := fasthttp.AcquireResponse()
	resp.SetStatusCode(201)
	resp.Header.SetContentType("application/json")
	resp.Header.Set("Location", "/orders/42")
	resp.Header.Set("ETag", `"v1"`)
	resp.Header.Set("X-Order-Id", "42")
	resp.Header.Set("Keep-Alive", "timeout=5")
	resp.Header.Set("Set-Cookie", "session=secret")
	resp.SetBodyString(body)
	return resp
}

func testRecord(body string) Record {
	resp := testResponse(body)
	defer fasthttp.ReleaseResponse(resp)
	return AppendResponse(nil, resp, nil)
}

var (
	fpA = NewFingerprint([]byte("POST"), []byte("/orders?item=1"), []byte(`{"qty":1}`))
	fpB = NewFingerprint([]byte("POST"), []byte("/orders?item=1"), []byte(`{"qty":2}`))
)

// testStore is the conformance suite: every Store implementation must pass it. Subtests use
// distinct keys so one store serves all of them.
func testStore(t *testing.T, s Store) {
	ctx := context.Background()

	begin := func(t *testing.T, scope, key string, fp Fingerprint, lease time.Duration) Result {
		t.Helper()
		r, err := s.Begin(ctx, scope, key, fp, lease)
		if err != nil {
			t.Fatalf("Begin(%q, %q): %v", scope, key, err)
		}
		return r
	}
	want := func(t *testing.T, r Result, o Outcome) {
		t.Helper()
		if r.Outcome != o {
			t.Fatalf("outcome %v, want %v", r.Outcome, o)
		}
	}
	complete := func(t *testing.T, c Claim, rec Record, ttl time.Duration) {
		t.Helper()
		if err := s.Complete(ctx, c, rec, ttl); err != nil {
			t.Fatalf("Complete(%q): %v", c.Key, err)
		}
	}
	// pollUntil begins every few milliseconds until the outcome is o (at most 5 s).
	pollUntil := func(t *testing.T, scope, key string, fp Fingerprint, o Outcome) Result {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			r := begin(t, scope, key, fp, time.Minute)
			if r.Outcome == o {
				return r
			}
			if time.Now().After(deadline) {
				t.Fatalf("key %q still %v after 5s, want %v", key, r.Outcome, o)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	t.Run("concurrent begin starts once", func(t *testing.T) {
		const n = 20
		var (
			wg      sync.WaitGroup
			start   = make(chan struct{})
			results = make([]Result, n)
			errs    = make([]error, n)
		)
		for i := range n {
			wg.Go(func() {
				<-start
				results[i], errs[i] = s.Begin(ctx, "u1", "conc", fpA, time.Minute)
			})
		}
		close(start)
		wg.Wait()
		started, inProgress := 0, 0
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("Begin %d: %v", i, errs[i])
			}
			switch results[i].Outcome {
			case Started:
				started++
			case InProgress:
				inProgress++
			}
		}
		if started != 1 || inProgress != n-1 {
			t.Fatalf("%d started, %d in progress; want 1 and %d", started, inProgress, n-1)
		}
	})

	t.Run("replay after complete", func(t *testing.T) {
		r := begin(t, "u1", "replay", fpA, time.Minute)
		want(t, r, Started)
		rec := testRecord(`{"order":42}`)
		complete(t, r.Claim, rec, time.Hour)
		for range 20 {
			r := begin(t, "u1", "replay", fpA, time.Minute)
			want(t, r, Replay)
			if !bytes.Equal(r.Record, rec) {
				t.Fatalf("replayed record %q, want %q", r.Record, rec)
			}
		}
		// What the client gets: the recorded answer, cookie-less, hop-by-hop-less.
		resp := fasthttp.AcquireResponse()
		defer fasthttp.ReleaseResponse(resp)
		if err := begin(t, "u1", "replay", fpA, 0).Record.WriteResponse(resp); err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode() != 201 || string(resp.Body()) != `{"order":42}` ||
			string(resp.Header.ContentType()) != "application/json" ||
			string(resp.Header.Peek("Location")) != "/orders/42" ||
			string(resp.Header.Peek("ETag")) != `"v1"` || string(resp.Header.Peek("X-Order-Id")) != "42" ||
			len(resp.Header.Peek("Keep-Alive")) != 0 || len(resp.Header.Peek("Set-Cookie")) != 0 {
			t.Fatalf("replayed response:\n%s", resp.String())
		}
	})

	t.Run("reused key", func(t *testing.T) {
		r := begin(t, "u1", "reuse", fpA, time.Minute)
		want(t, r, Started)
		want(t, begin(t, "u1", "reuse", fpB, time.Minute), Reused) // while in flight
		complete(t, r.Claim, testRecord("a"), time.Hour)
		want(t, begin(t, "u1", "reuse", fpB, time.Minute), Reused) // after completion
		want(t, begin(t, "u1", "reuse", fpA, time.Minute), Replay)
	})

	t.Run("scopes are independent", func(t *testing.T) {
		a := begin(t, "alice", "same", fpA, time.Minute)
		b := begin(t, "bob", "same", fpA, time.Minute)
		want(t, a, Started)
		want(t, b, Started)
		want(t, begin(t, "", "same", fpB, time.Minute), Started) // the empty scope is one more
		complete(t, a.Claim, testRecord("alice's"), time.Hour)
		want(t, begin(t, "bob", "same", fpA, time.Minute), InProgress)
		complete(t, b.Claim, testRecord("bob's"), time.Hour)
		ra := begin(t, "alice", "same", fpA, time.Minute)
		rb := begin(t, "bob", "same", fpA, time.Minute)
		if string(ra.Record.Body()) != "alice's" || string(rb.Record.Body()) != "bob's" {
			t.Fatalf("alice replays %q, bob %q", ra.Record.Body(), rb.Record.Body())
		}
		// Scope and key are length-delimited: ("ab","c") is not ("a","bc").
		want(t, begin(t, "ab", "c", fpA, time.Minute), Started)
		want(t, begin(t, "a", "bc", fpA, time.Minute), Started)
	})

	t.Run("abort lets the next begin start", func(t *testing.T) {
		r := begin(t, "u1", "abort", fpA, time.Minute)
		want(t, r, Started)
		if err := s.Abort(ctx, r.Claim); err != nil {
			t.Fatal(err)
		}
		r2 := begin(t, "u1", "abort", fpB, time.Minute) // a new request may take the key
		want(t, r2, Started)
		if r2.Claim.Token == r.Claim.Token {
			t.Fatal("two claims share a token")
		}
		// A repeated abort of the old claim leaves the new one alone.
		if err := s.Abort(ctx, r.Claim); err != nil {
			t.Fatal(err)
		}
		want(t, begin(t, "u1", "abort", fpB, time.Minute), InProgress)
		complete(t, r2.Claim, testRecord("b"), time.Hour)
		// Abort after completion leaves the record.
		if err := s.Abort(ctx, r2.Claim); err != nil {
			t.Fatal(err)
		}
		want(t, begin(t, "u1", "abort", fpB, time.Minute), Replay)
		// Completing the same claim twice is a no-op.
		complete(t, r2.Claim, testRecord("other"), time.Hour)
		if got := begin(t, "u1", "abort", fpB, time.Minute).Record.Body(); string(got) != "b" {
			t.Fatalf("second Complete replaced the record: %q", got)
		}
	})

	t.Run("records expire after ttl", func(t *testing.T) {
		r := begin(t, "u1", "ttl", fpA, time.Minute)
		complete(t, r.Claim, testRecord("short"), 150*time.Millisecond)
		want(t, begin(t, "u1", "ttl", fpA, time.Minute), Replay)
		pollUntil(t, "u1", "ttl", fpA, Started)
	})

	t.Run("lease of a crashed owner expires", func(t *testing.T) {
		crashed := begin(t, "u1", "lease", fpA, 150*time.Millisecond)
		want(t, crashed, Started)
		want(t, begin(t, "u1", "lease", fpA, time.Minute), InProgress)
		next := pollUntil(t, "u1", "lease", fpA, Started)
		// The crashed owner comes back late: it neither records over nor releases the
		// successor's claim.
		if err := s.Complete(ctx, crashed.Claim, testRecord("late"), time.Hour); !errors.Is(err, ErrClaimLost) {
			t.Fatalf("late Complete: %v, want ErrClaimLost", err)
		}
		if err := s.Abort(ctx, crashed.Claim); err != nil {
			t.Fatal(err)
		}
		want(t, begin(t, "u1", "lease", fpA, time.Minute), InProgress)
		complete(t, next.Claim, testRecord("next"), time.Hour)
		if got := begin(t, "u1", "lease", fpA, time.Minute).Record.Body(); string(got) != "next" {
			t.Fatalf("replayed %q, want the successor's record", got)
		}
	})

	t.Run("complete after the lease ran out records", func(t *testing.T) {
		r := begin(t, "u1", "late", fpA, 100*time.Millisecond)
		// Wait until the claim is gone (by beginning with another fingerprint: Reused while
		// the claim lives, Started, then aborted, once it is gone).
		deadline := time.Now().Add(5 * time.Second)
		for {
			probe := begin(t, "u1", "late", fpB, time.Minute)
			if probe.Outcome == Started {
				if err := s.Abort(ctx, probe.Claim); err != nil {
					t.Fatal(err)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("claim did not expire within 5s")
			}
			time.Sleep(5 * time.Millisecond)
		}
		complete(t, r.Claim, testRecord("late"), time.Hour)
		if got := begin(t, "u1", "late", fpA, time.Minute); got.Outcome != Replay || string(got.Record.Body()) != "late" {
			t.Fatalf("after a late Complete: %v %q", got.Outcome, got.Record.Body())
		}
	})

	t.Run("too large", func(t *testing.T) {
		r := begin(t, "u1", "big", fpA, time.Minute)
		big := AppendRecordBody(AppendRecordStart(nil, 200), make([]byte, suiteMaxRecord))
		if err := s.Complete(ctx, r.Claim, big, time.Hour); !errors.Is(err, ErrTooLarge) {
			t.Fatalf("Complete of %d bytes: %v, want ErrTooLarge", len(big), err)
		}
		want(t, begin(t, "u1", "big", fpA, time.Minute), Started) // the claim was released
	})

	t.Run("invalid keys", func(t *testing.T) {
		for _, c := range []struct{ scope, key string }{
			{"u1", ""},
			{"u1", strings.Repeat("k", MaxKeyLen+1)},
			{strings.Repeat("s", MaxScopeLen+1), "k"},
		} {
			if _, err := s.Begin(ctx, c.scope, c.key, fpA, time.Minute); !errors.Is(err, ErrInvalid) {
				t.Fatalf("Begin(%d-byte scope, %d-byte key): %v, want ErrInvalid", len(c.scope), len(c.key), err)
			}
		}
		long := begin(t, strings.Repeat("s", MaxScopeLen), strings.Repeat("k\x00{}", MaxKeyLen/4), fpA, time.Minute)
		want(t, long, Started)
		complete(t, long.Claim, testRecord("long"), time.Hour)
		want(t, begin(t, strings.Repeat("s", MaxScopeLen), strings.Repeat("k\x00{}", MaxKeyLen/4), fpA, time.Minute), Replay)
	})

	t.Run("wait", func(t *testing.T) {
		// Completion wakes the waiters with the record.
		first := begin(t, "u1", "wait", fpA, time.Minute)
		want(t, first, Started)
		const n = 5
		var wg sync.WaitGroup
		results := make([]Result, n)
		errs := make([]error, n)
		for i := range n {
			wg.Go(func() { results[i], errs[i] = s.Wait(ctx, "u1", "wait", fpA, time.Minute, 10*time.Second) })
		}
		rec := testRecord("waited")
		complete(t, first.Claim, rec, time.Hour)
		wg.Wait()
		for i := range n {
			if errs[i] != nil || results[i].Outcome != Replay || !bytes.Equal(results[i].Record, rec) {
				t.Fatalf("waiter %d: %v %q, %v", i, results[i].Outcome, results[i].Record, errs[i])
			}
		}

		// Bounded: nothing completes, the waiter gives up with InProgress.
		held := begin(t, "u1", "wait2", fpA, time.Minute)
		r, err := s.Wait(ctx, "u1", "wait2", fpA, time.Minute, 30*time.Millisecond)
		if err != nil || r.Outcome != InProgress {
			t.Fatalf("Wait on a held key: %v, %v; want InProgress", r.Outcome, err)
		}
		// A cancelled caller stops waiting with its context's error.
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := s.Wait(cctx, "u1", "wait2", fpA, time.Minute, 10*time.Second); !errors.Is(err, context.Canceled) {
			t.Fatalf("Wait with a cancelled context: %v", err)
		}
		// The first aborts: exactly one waiter takes the key over and forwards; the others
		// wait for it and replay its answer.
		takeover := testRecord("takeover")
		for i := range n {
			wg.Go(func() {
				results[i], errs[i] = s.Wait(ctx, "u1", "wait2", fpA, time.Minute, 10*time.Second)
				if errs[i] == nil && results[i].Outcome == Started {
					errs[i] = s.Complete(ctx, results[i].Claim, takeover, time.Hour)
				}
			})
		}
		if err := s.Abort(ctx, held.Claim); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		owners := 0
		for i := range n {
			switch {
			case errs[i] != nil:
				t.Fatalf("waiter %d: %v", i, errs[i])
			case results[i].Outcome == Started:
				owners++
			case results[i].Outcome != Replay || !bytes.Equal(results[i].Record, takeover):
				t.Fatalf("waiter %d: %v %q, want the new owner's record", i, results[i].Outcome, results[i].Record)
			}
		}
		if owners != 1 {
			t.Fatalf("%d waiters took the key over after Abort, want 1", owners)
		}
	})

	t.Run("racing waiters forward once", func(t *testing.T) {
		// Callers racing with the same key, each waiting for the record: exactly one
		// forwards and all end with its answer.
		const n = 8
		var wg sync.WaitGroup
		var mu sync.Mutex
		forwarded := 0
		got := make([][]byte, n)
		for i := range n {
			wg.Go(func() {
				r, err := s.Wait(ctx, "u1", "race", fpA, time.Minute, 10*time.Second)
				if err != nil {
					t.Error(err)
					return
				}
				if r.Outcome == Started {
					mu.Lock()
					forwarded++
					mu.Unlock()
					rec := testRecord("once")
					if err := s.Complete(ctx, r.Claim, rec, time.Hour); err != nil {
						t.Error(err)
					}
					got[i] = rec
					return
				}
				got[i] = r.Record
			})
		}
		wg.Wait()
		for i := range n {
			if forwarded != 1 || !bytes.Equal(got[i], got[0]) {
				t.Fatalf("forwarded %d times; answer %d %q, answer 0 %q", forwarded, i, got[i], got[0])
			}
		}
	})
}
