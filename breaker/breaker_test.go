package breaker

import (
	"errors"
	"sync"
	"testing"
	"time"
)

// clock is a fake clock the tests move by hand.
type clock struct{ t time.Time }

func (c *clock) now() time.Time                { return c.t }
func (c *clock) add(d time.Duration) time.Time { c.t = c.t.Add(d); return c.t }

type change struct{ from, to State }

func newTest(t *testing.T, c Config) (*Breaker, *clock, *[]change) {
	t.Helper()
	var changes []change
	var mu sync.Mutex
	b, err := New(c, func(from, to State, _ time.Time) {
		mu.Lock()
		changes = append(changes, change{from, to})
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	return b, &clock{t: time.Unix(1_700_000_000, 0)}, &changes
}

// call lets one call through (when allowed) and records its outcome.
func call(b *Breaker, c *clock, failed bool, elapsed time.Duration) bool {
	if !b.Allow(c.now()) {
		return false
	}
	b.Record(c.now(), failed, elapsed)
	return true
}

func TestOpensOnFailureRatio(t *testing.T) {
	b, c, changes := newTest(t, Config{Window: 10 * time.Second, MinRequests: 10, FailureRatio: 0.5, CoolOff: 5 * time.Second, Probes: 2})
	// 9 failures: below min_requests, stays closed however bad.
	for i := 0; i < 9; i++ {
		call(b, c, true, time.Millisecond)
	}
	if b.State() != Closed {
		t.Fatalf("state %v after 9 calls, want closed (min_requests 10)", b.State())
	}
	// The 10th call, a failure: 10/10 failed.
	call(b, c, true, time.Millisecond)
	if b.State() != Open {
		t.Fatalf("state %v, want open", b.State())
	}
	if b.Allow(c.now()) {
		t.Fatal("open breaker let a call through")
	}
	if d := b.RetryIn(c.now()); d != 5*time.Second {
		t.Errorf("RetryIn = %v, want 5s", d)
	}
	c.add(4999 * time.Millisecond)
	if b.Allow(c.now()) {
		t.Fatal("let a call through before the cool-off ended")
	}
	c.add(time.Millisecond)
	// Half-open: two probes, then nothing until they are recorded.
	for i := 0; i < 2; i++ {
		if !b.Allow(c.now()) {
			t.Fatalf("half-open breaker refused probe %d", i+1)
		}
	}
	if b.State() != HalfOpen {
		t.Fatalf("state %v, want half_open", b.State())
	}
	if b.Allow(c.now()) {
		t.Fatal("half-open breaker let a third call through with probes = 2")
	}
	b.Record(c.now(), false, time.Millisecond)
	if b.State() != HalfOpen {
		t.Fatalf("closed after 1 of 2 probes")
	}
	b.Record(c.now(), false, time.Millisecond)
	if b.State() != Closed {
		t.Fatalf("state %v after 2 good probes, want closed", b.State())
	}
	// Closed with an empty window: one failure does not reopen it.
	call(b, c, true, time.Millisecond)
	if b.State() != Closed {
		t.Fatal("reopened on one failure after closing: window not cleared")
	}
	want := []change{{Closed, Open}, {Open, HalfOpen}, {HalfOpen, Closed}}
	if len(*changes) != len(want) {
		t.Fatalf("changes %v, want %v", *changes, want)
	}
	for i := range want {
		if (*changes)[i] != want[i] {
			t.Errorf("change %d = %v, want %v", i, (*changes)[i], want[i])
		}
	}
}

func TestRatioBelowLimitStaysClosed(t *testing.T) {
	b, c, _ := newTest(t, Config{MinRequests: 10, FailureRatio: 0.5})
	for i := 0; i < 100; i++ {
		call(b, c, i%3 == 0, time.Millisecond) // 34% failures
		c.add(10 * time.Millisecond)
	}
	if b.State() != Closed {
		t.Fatalf("state %v at 34%% failures, want closed (ratio 0.5)", b.State())
	}
	if total, failed, _ := b.Counts(c.now()); total != 100 || failed != 34 {
		t.Errorf("counts %d/%d, want 100/34", total, failed)
	}
}

func TestWindowSlides(t *testing.T) {
	b, c, _ := newTest(t, Config{Window: 10 * time.Second, MinRequests: 10, FailureRatio: 0.5})
	// 8 failures, then 11 s pass: they left the window.
	for i := 0; i < 8; i++ {
		call(b, c, true, 0)
	}
	c.add(11 * time.Second)
	for i := 0; i < 4; i++ {
		call(b, c, false, 0)
	}
	for i := 0; i < 4; i++ {
		call(b, c, true, 0) // 4 of 8 in the window: under min_requests
	}
	if b.State() != Closed {
		t.Fatalf("opened on failures older than the window")
	}
	if total, failed, _ := b.Counts(c.now()); total != 8 || failed != 4 {
		t.Errorf("window counts %d/%d, want 8/4", total, failed)
	}
	call(b, c, true, 0)
	call(b, c, true, 0) // 10 calls, 6 failed
	if b.State() != Open {
		t.Fatalf("state %v, want open at 6/10", b.State())
	}
}

func TestOpensOnSlowCalls(t *testing.T) {
	b, c, _ := newTest(t, Config{MinRequests: 5, SlowThreshold: 100 * time.Millisecond, SlowRatio: 0.6})
	for i := 0; i < 2; i++ {
		call(b, c, false, time.Millisecond)
	}
	for i := 0; i < 2; i++ {
		call(b, c, false, 150*time.Millisecond)
	}
	if b.State() != Closed {
		t.Fatal("opened before min_requests")
	}
	call(b, c, false, 100*time.Millisecond) // 3/5 slow = 0.6
	if b.State() != Open {
		t.Fatalf("state %v, want open at 3/5 slow", b.State())
	}
	if _, _, slow := b.Counts(c.now()); slow != 3 {
		t.Errorf("slow = %d, want 3", slow)
	}
}

func TestSlowNotCountedWithoutThreshold(t *testing.T) {
	b, c, _ := newTest(t, Config{MinRequests: 5})
	for i := 0; i < 50; i++ {
		call(b, c, false, time.Hour)
	}
	if b.State() != Closed {
		t.Fatal("opened on slow calls with no slow_threshold")
	}
}

func TestFailedProbeReopens(t *testing.T) {
	b, c, changes := newTest(t, Config{MinRequests: 1, CoolOff: time.Second, Probes: 3})
	call(b, c, true, 0)
	if b.State() != Open {
		t.Fatal("not open")
	}
	c.add(time.Second)
	if !call(b, c, false, 0) || !b.Allow(c.now()) {
		t.Fatal("probe refused")
	}
	b.Record(c.now(), true, 0) // second probe fails
	if b.State() != Open {
		t.Fatalf("state %v after a failed probe, want open", b.State())
	}
	if b.Allow(c.now()) {
		t.Fatal("reopened breaker let a call through")
	}
	if d := b.RetryIn(c.now()); d != time.Second {
		t.Errorf("RetryIn = %v, want a fresh 1s cool-off", d)
	}
	want := []change{{Closed, Open}, {Open, HalfOpen}, {HalfOpen, Open}}
	for i := range want {
		if i >= len(*changes) || (*changes)[i] != want[i] {
			t.Fatalf("changes %v, want %v", *changes, want)
		}
	}
}

func TestSlowProbeReopens(t *testing.T) {
	b, c, _ := newTest(t, Config{MinRequests: 1, CoolOff: time.Second, SlowThreshold: 50 * time.Millisecond})
	call(b, c, true, 0)
	c.add(time.Second)
	call(b, c, false, 80*time.Millisecond)
	if b.State() != Open {
		t.Fatalf("state %v after a slow probe, want open", b.State())
	}
}

// A probe round whose calls never report (a caller that dropped its outcome) does
// not leave the breaker half-open and refusing for ever.
func TestStalledProbeRoundRestarts(t *testing.T) {
	b, c, _ := newTest(t, Config{MinRequests: 1, CoolOff: time.Second, Probes: 1})
	call(b, c, true, 0)
	c.add(time.Second)
	if !b.Allow(c.now()) { // probe let through, outcome never recorded
		t.Fatal("probe refused")
	}
	if b.Allow(c.now()) {
		t.Fatal("second call in a one-probe round")
	}
	c.add(time.Second)
	if !b.Allow(c.now()) {
		t.Fatal("stalled round did not restart after cool_off")
	}
	b.Record(c.now(), false, 0)
	if b.State() != Closed {
		t.Fatalf("state %v, want closed", b.State())
	}
}

func TestValidate(t *testing.T) {
	f := func(c Config, ok bool) {
		t.Helper()
		err := c.Validate()
		if ok != (err == nil) {
			t.Errorf("Validate(%+v) = %v, want ok=%v", c, err, ok)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("error %v does not wrap ErrInvalid", err)
		}
	}
	f(Config{}, true)
	f(Config{Window: time.Second, MinRequests: 1, FailureRatio: 1, SlowRatio: 1, CoolOff: time.Millisecond, Probes: 1}, true)
	f(Config{Window: time.Millisecond}, false)
	f(Config{MinRequests: -1}, false)
	f(Config{FailureRatio: 1.5}, false)
	f(Config{FailureRatio: -0.1}, false)
	f(Config{SlowRatio: 2}, false)
	f(Config{SlowThreshold: -time.Second}, false)
	f(Config{CoolOff: -time.Second}, false)
	f(Config{Probes: -3}, false)
	if _, err := New(Config{Probes: -1}, nil); err == nil {
		t.Error("New accepted a bad config")
	}
}

func TestStateString(t *testing.T) {
	for s, want := range map[State]string{Closed: "closed", HalfOpen: "half_open", Open: "open", 7: "unknown"} {
		if s.String() != want {
			t.Errorf("%d.String() = %q, want %q", s, s.String(), want)
		}
	}
}

// Many goroutines recording failures open the breaker once, and every caller then
// sees it open.
func TestConcurrent(t *testing.T) {
	var opens sync.WaitGroup
	opens.Add(1)
	var once sync.Once
	b, err := New(Config{MinRequests: 100, FailureRatio: 0.5}, func(from, to State, _ time.Time) {
		if to == Open {
			once.Do(opens.Done)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_700_000_000, 0)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 1000; i++ {
				if b.Allow(now) {
					b.Record(now, true, 0)
				}
			}
		}()
	}
	wg.Wait()
	opens.Wait()
	if b.State() != Open || b.Allow(now) {
		t.Fatalf("state %v after 8000 failures, want open", b.State())
	}
}
