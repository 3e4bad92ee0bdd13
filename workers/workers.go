// Package workers sizes the Go scheduler (GOMAXPROCS) to the work edge is doing.
//
// The right number of scheduler slots depends on where a request spends its time, and
// edge serves two kinds that pull opposite ways:
//
//   - Answers edge makes itself (cache hits, limit, blacklist and shed rejects, respond
//     routes) are CPU work from the request's first byte to the response's last. Slots
//     beyond the cores edge really gets add nothing but thread wake-ups and context
//     switches: on the 2-core bench machine, shared with the load generator, 1 slot
//     answered cache hits at 1.52× nginx per CPU-second where 4 slots managed 1.27×.
//   - Requests forwarded to an upstream spend much of their life waiting on another
//     process; spare slots keep the cores busy meanwhile (there, 4 slots proxied at
//     0.87–0.91× nginx where 1 slot reached 0.63×).
//
// A Controller samples the traffic and the machine every interval and picks a count with
// Policy.Choose; a choice is applied once it has been made Confirm times in a row, so
// one odd interval changes nothing. Changing GOMAXPROCS stops the world for tens of
// microseconds; with the defaults it happens at most once a second.
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
	Wall      float64 // length of the interval in seconds
}

// Policy turns an interval's Load into a slot count.
type Policy struct {
	// CPUs is how many CPUs the process may use: GOMAXPROCS as Go chose it at start,
	// which follows the CPU affinity and a cgroup CPU limit.
	CPUs int
	// Forward is the share of forwarded requests at or above which edge counts as a
	// proxy and runs twice the CPUs; below half of it, it counts as answering locally.
	// In between, the previous mode holds. Default 0.2.
	Forward float64
}

func (p Policy) forward() float64 {
	if p.Forward > 0 {
		return p.Forward
	}
	return 0.2
}

// Choose returns the slot count for l given the current one:
//
//   - no request finished: cur, unchanged (nothing was learned);
//   - forwarding (see Forward): 2 × CPUs;
//   - answering locally: the CPUs left over by other processes during the interval,
//     rounded, between 1 and CPUs; all CPUs when Others is unknown.
func (p Policy) Choose(l Load, cur int) int {
	if l.Served == 0 || l.Wall <= 0 {
		return cur
	}
	share := float64(l.Forwarded) / float64(l.Served)
	switch {
	case share >= p.forward():
		return 2 * p.CPUs
	case share >= p.forward()/2 && cur > p.CPUs:
		return cur // between the thresholds a proxy stays a proxy
	}
	if l.Others < 0 {
		return p.CPUs
	}
	free := float64(p.CPUs) - l.Others/l.Wall
	return min(max(int(free+0.5), 1), p.CPUs)
}

// Controller applies a Policy to the running process.
type Controller struct {
	Policy  Policy
	Traffic func() (served, forwarded uint64) // cumulative counts
	Every   time.Duration                     // sampling interval; default 500ms
	Confirm int                               // intervals a new choice must hold; default 2
	Log     *slog.Logger                      // where changes are reported; nil: silent

	on atomic.Bool
}

// Enable turns the controller on or off. Off, it leaves GOMAXPROCS alone; the caller
// sets it. Turned on, it starts from the current value.
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
	tk := time.NewTicker(every)
	defer tk.Stop()
	prev := sample(c.Traffic, c.Policy.CPUs)
	want, streak := 0, 0
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
			streak = 0
			continue
		}
		now := runtime.GOMAXPROCS(0)
		n := c.Policy.Choose(l, now)
		if n == now {
			streak = 0
			continue
		}
		if n != want {
			want, streak = n, 0
		}
		if streak++; streak < confirm {
			continue
		}
		runtime.GOMAXPROCS(n)
		streak = 0
		if c.Log != nil {
			c.Log.Info("workers changed", "from", now, "to", n, "served", l.Served,
				"forwarded", l.Forwarded, "cpu_self", round2(l.Self/l.Wall), "cpu_others", round2(l.Others/l.Wall))
		}
	}
}

func round2(f float64) float64 { return float64(int(f*100+0.5)) / 100 }
