package limiter

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
	"golang.org/x/time/rate"
)

// t0 is an arbitrary start, like time.Now().UnixNano() in 2025.
const t0 = int64(1_750_000_000_000_000_000)

func newStore(t testing.TB, r float64, burst, maxKeys int) *Store {
	t.Helper()
	s, err := NewStore(r, burst, maxKeys)
	if err != nil {
		t.Fatalf("NewStore(%g, %d, %d): %v", r, burst, maxKeys, err)
	}
	return s
}

func TestTake(t *testing.T) {
	// f takes a token for key at t0+at and checks the answer.
	s := newStore(t, 6.0/60, 1, 0) // 6r/m burst 1
	f := func(key uint64, at time.Duration, wantOK bool, wantRetry time.Duration) {
		t.Helper()
		ok, retry, rem := s.Take(key, t0+int64(at))
		if ok != wantOK || retry != wantRetry || rem != 0 {
			t.Fatalf("Take(%d, +%v) = %v, %v, %d; want %v, %v, 0", key, at, ok, retry, rem, wantOK, wantRetry)
		}
	}
	f(1, 0, true, 0)
	f(1, time.Millisecond, false, 10*time.Second-time.Millisecond)
	f(2, time.Millisecond, true, 0) // another user is unaffected
	f(1, 10*time.Second-1, false, 1)
	f(1, 10*time.Second, true, 0)
	f(1, 10*time.Second, false, 10*time.Second)
	f(0, 0, true, 0) // hash 0 is a key like any other
	f(0, 0, false, 10*time.Second)
	f(1<<63, 0, true, 0)
}

func TestTakeRemaining(t *testing.T) {
	s := newStore(t, 100, 10, 0)
	for want := 9; want >= 0; want-- {
		ok, _, rem := s.Take(7, t0)
		if !ok || rem != want {
			t.Fatalf("Take = %v, remaining %d; want true, %d", ok, rem, want)
		}
	}
	if ok, retry, _ := s.Take(7, t0); ok || retry != 10*time.Millisecond {
		t.Fatalf("Take on empty bucket = %v, %v; want false, 10ms", ok, retry)
	}
	// 35 ms later 3.5 tokens are back: one taken leaves 2.
	if ok, _, rem := s.Take(7, t0+int64(35*time.Millisecond)); !ok || rem != 2 {
		t.Fatalf("Take after 35ms = %v, remaining %d; want true, 2", ok, rem)
	}
}

func TestRefund(t *testing.T) {
	s := newStore(t, 1.0/60, 2, 0)
	f := func(key uint64, wantOK bool) {
		t.Helper()
		if ok, _, _ := s.Take(key, t0); ok != wantOK {
			t.Fatalf("Take(%d) = %v; want %v", key, ok, wantOK)
		}
	}
	f(1, true)
	f(1, true)
	f(1, false)
	s.Refund(1, t0+int64(time.Millisecond)) // a later limit rejected the request
	f(1, true)
	f(1, false)
	// Refunds never fill past the burst.
	s.Refund(1, t0)
	s.Refund(1, t0)
	s.Refund(1, t0)
	f(1, true)
	f(1, true)
	f(1, false)
	// A key not tracked stays untracked.
	before := s.Len()
	s.Refund(99, t0)
	if got := s.Len(); got != before {
		t.Fatalf("Len after Refund of an unknown key = %d; want %d", got, before)
	}
}

func TestReserve(t *testing.T) {
	s := newStore(t, 10, 1, 0)
	f := func(maxWait, wantWait time.Duration, wantOK bool) {
		t.Helper()
		wait, ok := s.Reserve(5, t0, maxWait)
		if wait != wantWait || ok != wantOK {
			t.Fatalf("Reserve(maxWait %v) = %v, %v; want %v, %v", maxWait, wait, ok, wantWait, wantOK)
		}
	}
	ms := time.Millisecond
	f(300*ms, 0, true)
	f(300*ms, 100*ms, true)
	f(300*ms, 200*ms, true)
	f(300*ms, 300*ms, true)
	f(300*ms, 400*ms, false) // too far: takes nothing
	f(-ms, 400*ms, false)
	if ok, retry, _ := s.Take(5, t0); ok || retry != 400*ms {
		t.Fatalf("Take after reservations = %v, %v; want false, 400ms", ok, retry)
	}
	s.Refund(5, t0) // the last waiter gave up
	f(300*ms, 300*ms, true)
}

func TestSetScale(t *testing.T) {
	s := newStore(t, 100, 10, 0)
	for range 3 {
		s.Take(1, t0) // level 7
	}
	if err := s.SetScaleAt(0.5, t0); err != nil {
		t.Fatal(err)
	}
	if s.Rate() != 50 || s.Burst() != 5 {
		t.Fatalf("after SetScale(0.5): Rate %g, Burst %d; want 50, 5", s.Rate(), s.Burst())
	}
	// Level 7 is clamped to the new burst 5.
	takeN(t, s, 1, t0, 5)
	if ok, retry, _ := s.Take(1, t0); ok || retry != 20*time.Millisecond {
		t.Fatalf("Take at scale 0.5 = %v, %v; want false, 20ms (rate 50)", ok, retry)
	}
	// A new key gets the scaled burst.
	takeN(t, s, 2, t0, 5)
	// Scaling up keeps the level (0), it does not refill.
	if err := s.SetScaleAt(2, t0); err != nil {
		t.Fatal(err)
	}
	if s.Rate() != 200 || s.Burst() != 20 {
		t.Fatalf("after SetScale(2): Rate %g, Burst %d; want 200, 20", s.Rate(), s.Burst())
	}
	if ok, retry, _ := s.Take(1, t0); ok || retry != 5*time.Millisecond {
		t.Fatalf("Take at scale 2 = %v, %v; want false, 5ms (rate 200)", ok, retry)
	}
	takeN(t, s, 1, t0+int64(10*time.Millisecond), 2)
	// Burst never scales below 1.
	if err := s.SetScaleAt(0.01, t0); err != nil || s.Burst() != 1 {
		t.Fatalf("SetScale(0.01) = %v, Burst %d; want nil, 1", err, s.Burst())
	}
	for _, f := range []float64{0, -1, math.NaN(), math.Inf(1)} {
		if err := s.SetScaleAt(f, t0); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "scale") {
			t.Fatalf("SetScale(%g) = %v; want an ErrInvalid naming the scale", f, err)
		}
	}
	if err := s.SetScaleAt(1e-12, t0); !errors.Is(err, ErrInvalid) {
		t.Fatalf("SetScale(1e-12) = %v; want ErrInvalid (refill too long)", err)
	}
	if s.Burst() != 1 || s.Rate() != 1 {
		t.Fatalf("failed SetScale changed Rate %g, Burst %d; want 1, 1", s.Rate(), s.Burst())
	}
}

func TestUpdate(t *testing.T) {
	s := newStore(t, 1, 5, 0)
	takeN(t, s, 1, t0, 5) // empty
	s.Take(2, t0)         // level 4
	if err := s.UpdateAt(10, 20, t0); err != nil {
		t.Fatal(err)
	}
	// Not refilled: key 1 is still empty, and now refills at 10/s.
	if ok, retry, _ := s.Take(1, t0); ok || retry != 100*time.Millisecond {
		t.Fatalf("Take after Update = %v, %v; want false, 100ms", ok, retry)
	}
	takeN(t, s, 1, t0+int64(time.Second), 10)
	// Key 2 keeps its 4 tokens.
	takeN(t, s, 2, t0, 4)
	// Shrinking the burst clamps: key 3 at level 19 drops to 2.
	s.Take(3, t0)
	if err := s.UpdateAt(10, 2, t0); err != nil {
		t.Fatal(err)
	}
	takeN(t, s, 3, t0, 2)
	// The scale survives an update.
	if err := s.SetScaleAt(0.5, t0); err != nil {
		t.Fatal(err)
	}
	if err := s.UpdateAt(20, 4, t0); err != nil || s.Rate() != 10 || s.Burst() != 2 {
		t.Fatalf("Update at scale 0.5 = %v, Rate %g, Burst %d; want nil, 10, 2", err, s.Rate(), s.Burst())
	}
	f := func(r float64, burst int, want string) {
		t.Helper()
		err := s.UpdateAt(r, burst, t0)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), want) {
			t.Fatalf("Update(%g, %d) = %v; want an ErrInvalid containing %q", r, burst, err, want)
		}
		if _, err := NewStore(r, burst, 10); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), want) {
			t.Fatalf("NewStore(%g, %d) = %v; want an ErrInvalid containing %q", r, burst, err, want)
		}
	}
	f(0, 1, "rate 0")
	f(-1, 1, "rate -1")
	f(math.NaN(), 1, "rate NaN")
	f(2e9, 1, "rate 2e+09")
	f(1, 0, "burst 0")
	f(1.0/3600, 1_000_000, "burst 1000000")
}

// takeN takes n tokens of key at now, expecting all to pass and the next to fail.
func takeN(t *testing.T, s *Store, key uint64, now int64, n int) {
	t.Helper()
	for i := range n {
		if ok, _, _ := s.Take(key, now); !ok {
			t.Fatalf("Take %d of %d for key %d rejected", i+1, n, key)
		}
	}
	if ok, _, _ := s.Take(key, now); ok {
		t.Fatalf("Take %d for key %d passed; want the bucket empty after %d", n+1, key, n)
	}
}

func TestEviction(t *testing.T) {
	const maxKeys = 1000
	s := newStore(t, 1.0/3600, 1, maxKeys)
	// 2×maxKeys distinct keys, each left with an empty bucket: half must go.
	for k := uint64(1); k <= 2*maxKeys; k++ {
		if ok, _, _ := s.Take(k, t0); !ok {
			t.Fatalf("first Take of key %d rejected", k)
		}
		if n := s.Len(); n > maxKeys {
			t.Fatalf("Len = %d after %d keys; want ≤ %d", n, k, maxKeys)
		}
	}
	n, ev := s.Len(), s.Evictions()
	if n < maxKeys*9/10 || ev != uint64(2*maxKeys-n) {
		t.Fatalf("Len %d, Evictions %d; want ≥ %d tracked and every other key counted as evicted", n, ev, maxKeys*9/10)
	}
	// The newest key is tracked: it is still limited.
	if ok, _, _ := s.Take(2*maxKeys, t0); ok {
		t.Fatal("newest key's second Take passed; want it tracked and limited")
	}
	// Once every bucket has refilled, new keys take their place without evictions.
	later := t0 + int64(2*time.Hour)
	for k := uint64(1e6); k < 1e6+maxKeys*8/10; k++ {
		s.Take(k, later)
	}
	if got := s.Evictions(); got != ev {
		t.Fatalf("Evictions = %d after keys replaced full buckets; want %d", got, ev)
	}
	if n := s.Len(); n > maxKeys {
		t.Fatalf("Len = %d; want ≤ %d", n, maxKeys)
	}
}

func TestSweep(t *testing.T) {
	s := newStore(t, 10, 1, 100_000)
	for k := uint64(1); k <= 50_000; k++ {
		s.Take(k, t0)
	}
	if n := s.Len(); n != 50_000 {
		t.Fatalf("Len = %d; want 50000", n)
	}
	if d := s.Sweep(t0 + int64(50*time.Millisecond)); d != 0 || s.Len() != 50_000 {
		t.Fatalf("Sweep before refill dropped %d, Len %d; want 0, 50000", d, s.Len())
	}
	if d := s.Sweep(t0 + int64(100*time.Millisecond)); d != 50_000 || s.Len() != 0 {
		t.Fatalf("Sweep after refill dropped %d, Len %d; want 50000, 0", d, s.Len())
	}
	var slots int
	for i := range s.shards {
		slots += len(s.shards[i].slots)
	}
	if slots != len(s.shards)<<minSlotsLog {
		t.Fatalf("tables hold %d slots after sweeping everything; want %d", slots, len(s.shards)<<minSlotsLog)
	}
}

// TestMatchesRate checks that a Store admits exactly what a rate.Limiter per key
// admits (AllowN(now, 1)) for random rates, bursts and arrival sequences, with
// Reserve (ReserveN, then CancelAt when the delay is too long), Take+Refund at one
// instant (must change nothing) and SetScale (SetLimitAt and SetBurstAt) mixed in.
// Remaining tokens, retryAfter and Reserve's wait are compared too.
//
// The Store keeps the emission interval in 1/16 ns, rounded, so every token taken or
// refilled can move its bucket's level by up to (1/32 ns)/interval tokens from the
// exact one; rate.Limiter's float arithmetic drifts too (much less). So waits and
// remaining counts are compared within that accumulated drift, and a differing
// decision is accepted only when the model's wait for the token at that moment is
// within it too; the sequence stops there (the states differ by a token from then
// on), and at most 1% of sequences may stop so. Over a million decisions none does.
func TestMatchesRate(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	trials, events := 3000, 400
	if testing.Short() {
		trials = 300
	}
	var decisions, nearMisses int
	for trial := range trials {
		r := math.Pow(10, -2+8*rng.Float64()) // 0.01 .. 1e6 per second
		if rng.IntN(4) == 0 {
			r = float64(1 + rng.IntN(100)) // whole rates, as configs write them
		}
		burst := 1 + rng.IntN(20)
		if rng.IntN(10) == 0 {
			burst = 1 + rng.IntN(1000)
		}
		s := newStore(t, r, burst, 10)
		ref := rate.NewLimiter(rate.Limit(r), burst)
		effRate, effBurst := r, burst
		interval := 1e9 / r // ns
		now := t0 + rng.Int64N(int64(time.Hour))
		const key = 42
		errTok := 0.0 // drift in tokens accumulated so far
		var trace []string
	sequence:
		for ev := range events {
			switch rng.IntN(8) {
			case 0: // simultaneous
			case 1:
				now += rng.Int64N(int64(interval*float64(effBurst))*3 + 1)
			case 2:
				now += rng.Int64N(int64(interval/float64(effBurst)) + 1)
			default:
				now += int64(rng.ExpFloat64() * interval * (0.3 + rng.Float64()))
			}
			tm := time.Unix(0, now)
			trace = append(trace, fmt.Sprintf("now %d level %.6f", now-t0, ref.TokensAt(tm)))
			level := ref.TokensAt(tm)
			waitNS := (1 - level) / effRate * 1e9 // model's wait for one token
			// The Store's interval is off by dI ns: each token taken or refilled moves
			// the bucket's level by up to dI/interval tokens from the exact one. Refills
			// are bounded by takes plus a burst per (re)start.
			dI := math.Abs(float64(s.shards[0].interval)/unitsPerNS - interval)
			tolNS := 2 + 2*(errTok+float64(effBurst)*dI/interval)*interval
			mismatch := func(what string, got, want any) {
				if math.Abs(waitNS) <= tolNS {
					nearMisses++
					return
				}
				t.Fatalf("trial %d (rate %g burst %d) event %d: %s = %v, rate.Limiter says %v (level %.12f, wait %.3f ns) %v",
					trial, effRate, effBurst, ev, what, got, want, level, waitNS, trace[max(0, len(trace)-12):])
			}
			switch op := rng.IntN(20); {
			case op == 0: // scale
				f := 0.1 + 3*rng.Float64()
				trace = append(trace, fmt.Sprintf("scale %g", f))
				if err := s.SetScaleAt(f, now); err != nil {
					continue
				}
				oldBurst := effBurst
				errTok += float64(oldBurst) * dI / interval
				effRate, effBurst = s.Rate(), s.Burst()
				interval = 1e9 / effRate
				if level >= float64(oldBurst) {
					// A full bucket counts as absent, so it is full at the new burst.
					ref = rate.NewLimiter(rate.Limit(effRate), effBurst)
				} else {
					ref.SetLimitAt(tm, rate.Limit(effRate))
					ref.SetBurstAt(tm, effBurst)
				}
			case op < 4: // reserve
				maxWait := time.Duration(rng.Int64N(int64(interval*3) + 1))
				wait, ok := s.Reserve(key, now, maxWait)
				res := ref.ReserveN(tm, 1)
				want := res.DelayFrom(tm)
				wantOK := want <= maxWait
				if !wantOK {
					res.CancelAt(tm)
				}
				decisions++
				if ok != wantOK {
					mismatch("Reserve ok", ok, wantOK)
					break sequence
				}
				if ok {
					errTok += 2 * dI / interval
					if d := float64(wait - want); math.Abs(d) > tolNS {
						mismatch("Reserve wait", wait, want)
						break sequence
					}
				}
			case op < 6: // take and refund at once: nothing changes
				if ok, _, _ := s.Take(key, now); ok {
					s.Refund(key, now)
				}
			default:
				ok, retry, rem := s.Take(key, now)
				wantOK := ref.AllowN(tm, 1)
				decisions++
				if ok != wantOK {
					mismatch("Take ok", ok, wantOK)
					break sequence
				}
				if ok {
					errTok += 2 * dI / interval
					after := ref.TokensAt(tm)
					if fl := max(0, math.Floor(after)); rem != int(fl) && math.Abs(after-math.Round(after)) > tolNS*effRate/1e9 {
						t.Fatalf("trial %d (rate %g burst %d) event %d: remaining %d, rate.Limiter has %.9f tokens; %v", trial, effRate, effBurst, ev, rem, after, trace[max(0, len(trace)-8):])
					}
				} else if d := float64(retry) - waitNS; math.Abs(d) > tolNS {
					mismatch("retryAfter", retry, time.Duration(waitNS))
					break sequence
				}
			}
		}
	}
	t.Logf("%d decisions compared, %d sequences stopped at a rounding-level difference", decisions, nearMisses)
	if nearMisses > trials/100 {
		t.Fatalf("%d sequences of %d differ at rounding level; want ≤ 1%%", nearMisses, trials)
	}
}

func TestConcurrent(t *testing.T) {
	s := newStore(t, 1e-3, 100, 5000)
	var clock atomic.Int64
	clock.Store(t0)
	var passed atomic.Int64
	var wg sync.WaitGroup
	workers := 4
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 9))
			for range 20_000 {
				now := clock.Add(1)
				// One hot key shared by everyone: exactly its burst passes.
				if ok, _, _ := s.Take(1, t0); ok {
					passed.Add(1)
				}
				// Take and give back on a warm key: never changes its level.
				if ok, _, _ := s.Take(2, now); ok {
					s.Refund(2, now)
				}
				// Churn through far more keys than the store holds.
				k := 3 + rng.Uint64N(20_000)
				s.Take(k, now)
				s.Reserve(k, now, time.Second)
			}
		})
	}
	wg.Go(func() {
		for range 50 {
			_ = s.Len()
			_ = s.Evictions()
			s.Sweep(clock.Load())
			runtime.Gosched()
		}
	})
	wg.Wait()
	if p := passed.Load(); p != 100 {
		t.Fatalf("hot key passed %d of %d takes; want exactly its burst 100", p, workers*20_000)
	}
	takeN(t, s, 2, clock.Load(), 100)
	if n := s.Len(); n > 5000 {
		t.Fatalf("Len = %d; want ≤ 5000", n)
	}
	if s.Evictions() == 0 {
		t.Fatal("Evictions = 0 after churning 20000 keys through 5000 slots")
	}
}

// heapPerKey fills a store with keys distinct, non-full buckets and returns the heap
// bytes it holds per key.
func heapPerKey(keys int) float64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	s, err := NewStore(1.0/3600, 1, keys)
	if err != nil {
		panic(err)
	}
	var b [8]byte
	for k := range uint64(keys) {
		binary.LittleEndian.PutUint64(b[:], k)
		s.Take(xxhash.Sum64(b[:]), t0)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if n := s.Len(); n < keys*99/100 {
		panic("heapPerKey: store lost keys")
	}
	runtime.KeepAlive(s)
	return float64(after.HeapAlloc-before.HeapAlloc) / float64(keys)
}

func TestMemoryPerKey(t *testing.T) {
	if testing.Short() {
		t.Skip("fills a million keys")
	}
	perKey := heapPerKey(1 << 20)
	t.Logf("%.1f bytes per key at 1M keys", perKey)
	if perKey > 64 {
		t.Fatalf("%.1f bytes per key at 1M keys; want ≤ 64", perKey)
	}
}
