// Package workers sizes the Go scheduler (GOMAXPROCS) to the CPUs edge really gets.
//
// Slots beyond the cores edge gets add nothing but thread wake-ups, work stealing and
// context switches, whatever edge does with a request. On the 2-core bench machine,
// shared with the load generator and the origin, 1 slot answered cache hits about 15 %
// faster than 2; and since reads that await an answer wait for the poller instead of
// failing with EAGAIN (package rawsock), 1 slot also forwarded 3.8 % more requests per
// second than 2 at the same CPU per request (eight alternating 4-second rounds, every
// one in favour), and as many next to bench's Go load generator.
//
// "The cores edge really gets" is measured, not assumed: the CPUs other processes (and
// interrupt work) left idle over the interval, from /proc/stat. For answers edge makes
// itself it is corrected by whether edge's threads had to wait for a CPU (their
// run-queue delay, from /proc/self/task/*/schedstat): a heavy neighbour, such as a load
// generator that takes whatever CPU is free, would otherwise talk edge down to one
// starved slot. Forwarding is not corrected so: there the delay was as high at the
// better count as at the worse one.
//
// A Controller samples every interval and picks a count with Policy.Choose; a choice is
// applied once it has been made Confirm times in a row, so one odd interval changes
// nothing. Changing GOMAXPROCS stops the world for tens of microseconds; with the
// defaults it happens at most once a second.
//
// The package is a leaf: the caller supplies the request counts as a function.
package workers

import (
	"log/slog"
	"runtime"
	"sync/atomic"
	"time"
)

// Load is what happened over one interval.
type Load struct {
	Served    uint64  // requests finished
	Forwarded uint64  // requests sent to an upstream
	Self      float64 // CPU seconds this process used
	Others    float64 // CPU seconds every other process (and interrupt work) used; <0 unknown
	Delay     float64 // seconds this process's threads were runnable but waited for a CPU; <0 unknown
	Wall      float64 // length of the interval in seconds
}

// Policy turns an interval's Load into a slot count.
type Policy struct {
	// CPUs is how many CPUs the process may use: GOMAXPROCS as Go chose it at start,
	// which follows the CPU affinity and a cgroup CPU limit.
	CPUs int
	// Local is the share of forwarded requests under which edge counts as answering
	// locally, and a starved count is raised. Default 0.1.
	Local float64
	// Starved is the run-queue delay per CPU second above which edge's threads count
	// as starved of CPU: measured at 1 slot on 2 cores, answering cache hits, 0.02–0.05
	// next to wrk (one thread), 0.35–0.5 next to a two-thread Go load generator.
	// Default 0.25.
	Starved float64
}

// starved reports whether edge's threads waited for a CPU for more than the Starved
// share of the CPU time they got, while busy (a fifth of a CPU or more: the interval in
// which a load starts says little).
func (p Policy) starved(l Load) bool {
	s := p.Starved
	if s <= 0 {
		s = 0.25
	}
	return l.Delay >= 0 && l.Self >= 0.2*l.Wall && l.Delay > s*l.Self
}

// raise reports whether edge, answering locally at cur slots (fewer than CPUs), was
// starved at them: it should run one more.
func (p Policy) raise(l Load, cur int) bool {
	share := p.Local
	if share <= 0 {
		share = 0.1
	}
	local := float64(l.Forwarded) < share*float64(l.Served)
	return local && cur < p.CPUs && p.starved(l)
}

// Choose returns the slot count for l given the current count cur and a floor below
// which it must not go (see Controller):
//
//   - no request finished: cur, unchanged (nothing was learned);
//   - else the CPUs other processes left idle over the interval, rounded (all CPUs when
//     Others is unknown); one more than cur when edge answered locally, at fewer slots
//     than CPUs, and was starved at them; never below floor or 1, never above CPUs.
func (p Policy) Choose(l Load, cur, floor int) int {
	if l.Served == 0 || l.Wall <= 0 {
		return cur
	}
	n := p.CPUs
	if l.Others >= 0 {
		n = int(float64(p.CPUs) - l.Others/l.Wall + 0.5)
	}
	if p.raise(l, cur) {
		n = max(n, cur+1)
	}
	return min(max(n, floor, 1), p.CPUs)
}

// Controller applies a Policy to the running process.
type Controller struct {
	Policy  Policy
	Traffic func() (served, forwarded uint64) // cumulative counts
	Every   time.Duration                     // sampling interval; default 500ms
	Confirm int                               // intervals a new choice must hold; default 2
	// Hold is how long a count found starved stays ruled out: after edge was starved
	// at n slots, it runs at least n+1 for Hold, then tries lower again. Default 1 minute.
	Hold time.Duration
	Log  *slog.Logger // where changes are reported; nil: silent

	on atomic.Bool
}

// Enable turns the controller on or off. Off, it leaves GOMAXPROCS alone; the caller
// sets it. Turned on, it steers from the current value.
func (c *Controller) Enable(on bool) { c.on.Store(on) }

// Enabled reports whether the controller is steering GOMAXPROCS.
func (c *Controller) Enabled() bool { return c.on.Load() }

// Run samples and steers until stop is closed.
func (c *Controller) Run(stop <-chan struct{}) {
	every := c.Every
	if every <= 0 {
		every = 500 * time.Millisecond
	}
	confirm := c.Confirm
	if confirm <= 0 {
		confirm = 2
	}
	hold := c.Hold
	if hold <= 0 {
		hold = time.Minute
	}
	tk := time.NewTicker(every)
	defer tk.Stop()
	prev := sample(c.Traffic, c.Policy.CPUs)
	st := steer{policy: c.Policy, confirm: confirm, hold: hold}
	for {
		select {
		case <-stop:
			return
		case <-tk.C:
		}
		cur := sample(c.Traffic, c.Policy.CPUs)
		l := cur.since(prev)
		prev = cur
		if !c.on.Load() {
			st.streak = 0
			continue
		}
		now := runtime.GOMAXPROCS(0)
		n := st.next(l, now, cur.at)
		if n == now {
			continue
		}
		runtime.GOMAXPROCS(n)
		if c.Log != nil {
			c.Log.Info("workers changed", "from", now, "to", n, "served", l.Served, "forwarded", l.Forwarded,
				"cpu_self", round2(l.Self/l.Wall), "cpu_others", round2(l.Others/l.Wall), "run_delay", round2(l.Delay/l.Wall))
		}
	}
}

// steer is the controller's memory between intervals: the choice waiting for
// confirmation and the floor left by a starved count.
type steer struct {
	policy  Policy
	confirm int
	hold    time.Duration

	want, streak int       // the pending choice and how many intervals in a row made it
	floor        int       // at least this many slots ...
	until        time.Time // ... until then
}

// next returns the count to run after an interval with load l at count cur, ending at
// at: cur until a different choice has been made confirm times in a row.
func (s *steer) next(l Load, cur int, at time.Time) int {
	if at.After(s.until) {
		s.floor = 1
	}
	p := s.policy
	n := p.Choose(l, cur, s.floor)
	if n == cur {
		s.streak = 0
		return cur
	}
	if n != s.want {
		s.want, s.streak = n, 0
	}
	if s.streak++; s.streak < s.confirm {
		return cur
	}
	s.streak = 0
	if n > cur && p.raise(l, cur) {
		// Starved at cur slots, interval after interval: rule the count out for a
		// while, so that the estimate of idle CPUs (which falls as soon as edge takes
		// more) does not talk it back down at the next interval.
		s.floor, s.until = n, at.Add(s.hold)
	}
	return n
}

func round2(f float64) float64 { return float64(int(f*100+0.5)) / 100 }
