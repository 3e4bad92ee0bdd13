// Package breaker is a sliding-window circuit breaker: closed, open and half-open.
//
// A Breaker counts the outcomes of calls over a sliding window (ten buckets of
// Window/10). While closed it lets every call through; when the window holds at
// least MinRequests calls and the share of failures reaches FailureRatio, or the
// share of calls slower than SlowThreshold reaches SlowRatio, it opens. While open
// it lets nothing through. After CoolOff it turns half-open and lets Probes calls
// through: when all of them succeed it closes with an empty window, the first one
// that fails (or is slow) opens it again for another CoolOff.
//
// The clock is the caller's: Allow and Record take the current time, so tests
// drive a Breaker with a fake clock and the hot path reads the clock once for
// several uses. Allow, Record and State only do atomic operations and never
// allocate; they are safe for concurrent use. The window is approximate under
// concurrency by design: a call recorded at the instant its bucket is recycled
// may be lost, which changes a ratio by one call in a window of many.
//
// The package imports nothing of edge.
package breaker

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// State is where a breaker is. The values are those of the edge_breaker_state
// gauge: 0 closed, 1 half-open, 2 open.
type State uint32

// The states of a Breaker.
const (
	Closed   State = 0 // calls pass; outcomes are counted
	HalfOpen State = 1 // a few probe calls pass; the rest are refused
	Open     State = 2 // every call is refused until the cool-off ends
)

var stateNames = [...]string{"closed", "half_open", "open"}

// String returns "closed", "half_open" or "open".
func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "unknown"
}

// Config says when a Breaker opens and how it recovers. The zero value of a field
// means its default (see WithDefaults).
type Config struct {
	Window        time.Duration // sliding window of counted calls; default 10s
	MinRequests   int           // calls in the window before it may open; default 20
	FailureRatio  float64       // share of failed calls that opens it, in (0, 1]; default 0.5
	SlowRatio     float64       // share of slow calls that opens it, in (0, 1]; default 0.5
	SlowThreshold time.Duration // a successful call taking at least this long is slow; 0: slowness is not counted
	CoolOff       time.Duration // how long it stays open before probing; default 5s
	Probes        int           // calls let through half-open, all must succeed to close; default 3
}

// Defaults of Config.
const (
	DefaultWindow       = 10 * time.Second
	DefaultMinRequests  = 20
	DefaultFailureRatio = 0.5
	DefaultSlowRatio    = 0.5
	DefaultCoolOff      = 5 * time.Second
	DefaultProbes       = 3
)

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	if c.Window == 0 {
		c.Window = DefaultWindow
	}
	if c.MinRequests == 0 {
		c.MinRequests = DefaultMinRequests
	}
	if c.FailureRatio == 0 {
		c.FailureRatio = DefaultFailureRatio
	}
	if c.SlowRatio == 0 {
		c.SlowRatio = DefaultSlowRatio
	}
	if c.CoolOff == 0 {
		c.CoolOff = DefaultCoolOff
	}
	if c.Probes == 0 {
		c.Probes = DefaultProbes
	}
	return c
}

// ErrInvalid is wrapped by Validate's errors.
var ErrInvalid = errors.New("invalid breaker config")

// Validate reports the first field of c (after defaults) that is out of range.
func (c Config) Validate() error {
	c = c.WithDefaults()
	switch {
	case c.Window < buckets*time.Millisecond:
		return fmt.Errorf("window %v is shorter than %v: %w", c.Window, buckets*time.Millisecond, ErrInvalid)
	case c.MinRequests < 1:
		return fmt.Errorf("min_requests %d is below 1: %w", c.MinRequests, ErrInvalid)
	case !(c.FailureRatio > 0 && c.FailureRatio <= 1):
		return fmt.Errorf("failure_ratio %v is not in (0, 1]: %w", c.FailureRatio, ErrInvalid)
	case !(c.SlowRatio > 0 && c.SlowRatio <= 1):
		return fmt.Errorf("slow_ratio %v is not in (0, 1]: %w", c.SlowRatio, ErrInvalid)
	case c.SlowThreshold < 0:
		return fmt.Errorf("slow_threshold %v is negative: %w", c.SlowThreshold, ErrInvalid)
	case c.CoolOff <= 0:
		return fmt.Errorf("cool_off %v is not positive: %w", c.CoolOff, ErrInvalid)
	case c.Probes < 1 || c.Probes > 1<<20:
		return fmt.Errorf("probes %d is not between 1 and %d: %w", c.Probes, 1<<20, ErrInvalid)
	}
	return nil
}

// buckets is the number of slices of the window: the window slides by Window/10.
const buckets = 10

type bucket struct {
	epoch  atomic.Int64 // now / bucket width of the calls counted here
	total  atomic.Int64
	failed atomic.Int64
	slow   atomic.Int64
}

// Breaker is one circuit breaker. Create it with New; it is safe for concurrent
// use, and its Allow and Record allocate nothing.
type Breaker struct {
	cfg      Config
	width    int64 // bucket width, ns
	minReq   int64
	probes   int32
	onChange func(from, to State, now time.Time)

	state atomic.Uint32
	// until is, while open, the end of the cool-off; while half-open, the end of
	// the probe round: a round whose probes were let through but never all
	// recorded (a call that ended without an outcome) starts again after it.
	until   atomic.Int64
	allowed atomic.Int32 // probes let through this round
	passed  atomic.Int32 // probes that succeeded this round

	mu      sync.Mutex // serialises state changes
	buckets [buckets]bucket
}

// New returns a closed Breaker for c (defaults applied; c must Validate).
// onChange, when not nil, is called after every state change with the old and new
// state, by the goroutine whose Allow or Record made it; it must not block.
func New(c Config, onChange func(from, to State, now time.Time)) (*Breaker, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	c = c.WithDefaults()
	b := &Breaker{cfg: c, width: int64(c.Window) / buckets, minReq: int64(c.MinRequests),
		probes: int32(c.Probes), onChange: onChange}
	b.clear()
	return b, nil
}

// Config returns the breaker's config with defaults applied.
func (b *Breaker) Config() Config { return b.cfg }

// State returns the state now. An open breaker whose cool-off has passed reports
// Open until the next Allow moves it to HalfOpen.
func (b *Breaker) State() State { return State(b.state.Load()) }

// Allow reports whether a call may go ahead at now. Every call allowed should be
// followed by one Record of its outcome; in the half-open state Allow hands out at
// most Probes calls per round.
func (b *Breaker) Allow(now time.Time) bool {
	switch State(b.state.Load()) {
	case Closed:
		return true
	case Open:
		t := now.UnixNano()
		if t < b.until.Load() {
			return false
		}
		b.halfOpen(Open, t, now)
	}
	// HalfOpen (or another goroutine just changed it; a stale read lets through
	// at most one call that the round's counter then accounts for).
	if b.allowed.Add(1) <= b.probes {
		return true
	}
	if t := now.UnixNano(); t >= b.until.Load() && State(b.state.Load()) == HalfOpen {
		b.halfOpen(HalfOpen, t, now) // the round stalled: probe again
		return b.allowed.Add(1) <= b.probes
	}
	return false
}

// RetryIn returns how long from now an open breaker stays open (at least 0), and
// 0 when it is not open.
func (b *Breaker) RetryIn(now time.Time) time.Duration {
	if State(b.state.Load()) != Open {
		return 0
	}
	return max(0, time.Duration(b.until.Load()-now.UnixNano()))
}

// Record counts the outcome of a call that ended at now after elapsed: failed for
// an error of the callee (connect error, timeout, 5xx), otherwise a success that is
// slow when elapsed reaches SlowThreshold.
func (b *Breaker) Record(now time.Time, failed bool, elapsed time.Duration) {
	bad := failed || b.cfg.SlowThreshold > 0 && elapsed >= b.cfg.SlowThreshold
	switch State(b.state.Load()) {
	case Closed:
		t := now.UnixNano()
		bk := b.bucketAt(t)
		bk.total.Add(1)
		if !bad {
			return // a success cannot open the breaker
		}
		if failed {
			bk.failed.Add(1)
		} else {
			bk.slow.Add(1)
		}
		if b.tripped(t) {
			b.open(Closed, t, now)
		}
	case HalfOpen:
		if bad {
			b.open(HalfOpen, now.UnixNano(), now)
		} else if b.passed.Add(1) >= b.probes {
			b.close(now)
		}
	}
	// Open: outcomes of calls let through before it opened say nothing new.
}

// Counts returns the calls, failures and slow calls in the window at now.
func (b *Breaker) Counts(now time.Time) (total, failed, slow int64) {
	e := now.UnixNano() / b.width
	for i := range b.buckets {
		bk := &b.buckets[i]
		if be := bk.epoch.Load(); be > e-buckets && be <= e {
			total += bk.total.Load()
			failed += bk.failed.Load()
			slow += bk.slow.Load()
		}
	}
	return total, failed, slow
}

// bucketAt returns the bucket for time t (ns), recycling it when it last counted
// an older slice of time.
func (b *Breaker) bucketAt(t int64) *bucket {
	e := t / b.width
	bk := &b.buckets[e%buckets]
	for {
		old := bk.epoch.Load()
		if old >= e {
			return bk // current (or, for a clock that went back, a newer slice)
		}
		if bk.epoch.CompareAndSwap(old, e) {
			bk.total.Store(0)
			bk.failed.Store(0)
			bk.slow.Store(0)
			return bk
		}
	}
}

// tripped reports whether the window at t calls for opening.
func (b *Breaker) tripped(t int64) bool {
	total, failed, slow := b.Counts(time.Unix(0, t))
	if total < b.minReq {
		return false
	}
	n := float64(total)
	return float64(failed)/n >= b.cfg.FailureRatio ||
		b.cfg.SlowThreshold > 0 && float64(slow)/n >= b.cfg.SlowRatio
}

func (b *Breaker) open(from State, t int64, now time.Time) {
	b.mu.Lock()
	if State(b.state.Load()) != from {
		b.mu.Unlock()
		return
	}
	b.until.Store(t + int64(b.cfg.CoolOff))
	b.state.Store(uint32(Open))
	b.mu.Unlock()
	b.changed(from, Open, now)
}

// halfOpen starts a probe round, coming from Open after the cool-off or from a
// HalfOpen round that stalled.
func (b *Breaker) halfOpen(from State, t int64, now time.Time) {
	b.mu.Lock()
	if State(b.state.Load()) != from || t < b.until.Load() {
		b.mu.Unlock()
		return
	}
	b.allowed.Store(0)
	b.passed.Store(0)
	b.until.Store(t + int64(b.cfg.CoolOff))
	b.state.Store(uint32(HalfOpen))
	b.mu.Unlock()
	if from != HalfOpen {
		b.changed(from, HalfOpen, now)
	}
}

func (b *Breaker) close(now time.Time) {
	b.mu.Lock()
	if State(b.state.Load()) != HalfOpen {
		b.mu.Unlock()
		return
	}
	b.clear()
	b.state.Store(uint32(Closed))
	b.mu.Unlock()
	b.changed(HalfOpen, Closed, now)
}

// clear empties the window: a closed breaker starts counting afresh.
func (b *Breaker) clear() {
	for i := range b.buckets {
		bk := &b.buckets[i]
		bk.epoch.Store(-1 << 62)
		bk.total.Store(0)
		bk.failed.Store(0)
		bk.slow.Store(0)
	}
}

func (b *Breaker) changed(from, to State, now time.Time) {
	if b.onChange != nil {
		b.onChange(from, to, now)
	}
}
