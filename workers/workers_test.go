package workers

import (
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestChoose(t *testing.T) {
	p := Policy{CPUs: 4}
	for _, c := range []struct {
		name       string
		l          Load
		cur, floor int
		want       int
	}{
		{"idle keeps the count", Load{Wall: 1}, 3, 1, 3},
		{"no interval keeps the count", Load{Served: 10}, 3, 1, 3},
		{"machine to itself: the CPUs", Load{Served: 100, Others: 0.1, Delay: -1, Wall: 1}, 8, 1, 4},
		{"others take 2.6 of 4", Load{Served: 100, Others: 2.6, Wall: 1}, 8, 1, 1},
		{"forwarding follows the same rule", Load{Served: 100, Forwarded: 100, Others: 2.6, Wall: 1}, 4, 1, 1},
		{"others take 1.4 of 4", Load{Served: 100, Others: 1.4, Wall: 1}, 8, 1, 3},
		{"others over a 2s interval", Load{Served: 100, Others: 2.8, Wall: 2}, 8, 1, 3},
		{"others take everything: still 1", Load{Served: 100, Others: 9, Wall: 1}, 8, 1, 1},
		{"others unknown: the CPUs", Load{Served: 100, Others: -1, Wall: 1}, 8, 1, 4},
		{"floor holds", Load{Served: 100, Others: 3.5, Wall: 1}, 2, 2, 2},
		{"floor above CPUs is capped", Load{Served: 100, Others: 3.5, Wall: 1}, 4, 9, 4},
		{"starved below the CPUs: one more", Load{Served: 100, Others: 3.5, Self: 0.6, Delay: 0.3, Wall: 1}, 1, 1, 2},
		{"starved, but idle CPUs say more", Load{Served: 100, Others: 0.5, Self: 0.6, Delay: 0.3, Wall: 1}, 1, 1, 4},
		{"not starved: stays low, even with every slot busy", Load{Served: 100, Others: 3.5, Self: 1, Delay: 0.05, Wall: 1}, 1, 1, 1},
		{"forwarding starved: idle CPUs decide", Load{Served: 100, Forwarded: 100, Others: 3.5, Self: 0.6, Delay: 0.3, Wall: 1}, 1, 1, 1},
		{"a tenth forwarded counts as forwarding", Load{Served: 100, Forwarded: 10, Others: 3.5, Self: 0.6, Delay: 0.3, Wall: 1}, 1, 1, 1},
		{"under a tenth forwarded counts as local", Load{Served: 100, Forwarded: 9, Others: 3.5, Self: 0.6, Delay: 0.3, Wall: 1}, 1, 1, 2},
		{"starved at the CPUs means nothing: idle CPUs decide", Load{Served: 100, Others: 3.5, Self: 1, Delay: 2, Wall: 1}, 4, 1, 1},
		{"starved above the CPUs: idle CPUs decide", Load{Served: 100, Others: 3.5, Self: 1, Delay: 2, Wall: 1}, 8, 1, 1},
		{"delay unknown: not starved", Load{Served: 100, Others: 3.5, Self: 0.5, Delay: -1, Wall: 1}, 1, 1, 1},
	} {
		if got := p.Choose(c.l, c.cur, c.floor); got != c.want {
			t.Errorf("%s: Choose(%+v, %d, %d) = %d, want %d", c.name, c.l, c.cur, c.floor, got, c.want)
		}
	}
	if got := (Policy{CPUs: 4, Starved: 0.9}).Choose(Load{Served: 100, Others: 3.5, Self: 0.8, Delay: 0.5, Wall: 1}, 1, 1); got != 1 {
		t.Errorf("Starved 0.9, delay 0.5 per 0.8 CPU second: %d, want 1", got)
	}
	if got := (Policy{CPUs: 4, Local: 0.5}).Choose(Load{Served: 100, Forwarded: 40, Others: 3.5, Self: 0.6, Delay: 0.3, Wall: 1}, 1, 1); got != 2 {
		t.Errorf("Local 0.5, 40%% forwarded, starved at 1: %d, want 2", got)
	}
}

func TestMachineBusy(t *testing.T) {
	stat := "cpu  100 20 30 1000 50 5 15 10 0 0\ncpu0 50 10 15 500 25 2 7 5 0 0\ncpu1 50 10 15 500 25 3 8 5 0 0\nintr 1 2 3\nctxt 99\n"
	// user+nice+system+irq+softirq+steal = 100+20+30+5+15+10 = 180 ticks
	if got := machineBusy([]byte(stat), 2); got != 1.8 {
		t.Errorf("busy = %v, want 1.8", got)
	}
	if got := machineBusy([]byte(stat), 4); got != -1 {
		t.Errorf("2 CPUs in the file, 4 usable: %v, want -1 (unknown)", got)
	}
	for _, bad := range []string{"", "cpu 1 2 3\ncpu0 1 2 3\n", "cpu  1 2 x 4 5 6 7 8\ncpu0 1\n", "intr 1\n"} {
		if got := machineBusy([]byte(bad), 1); got != -1 {
			t.Errorf("machineBusy(%q) = %v, want -1", bad, got)
		}
	}
	real, err := os.ReadFile("/proc/stat")
	if err != nil {
		t.Fatalf("this test runs on Linux: %v", err)
	}
	n := strings.Count(string(real), "\ncpu")
	if got := machineBusy(real, n); got <= 0 {
		t.Errorf("busy seconds of this machine (%d CPUs) = %v, want > 0", n, got)
	}
}

// The sampler measures this process's CPU: spinning for 300ms shows up as Self.
func TestSampleSelf(t *testing.T) {
	var served atomic.Uint64
	traffic := func() (uint64, uint64) { return served.Load(), 0 }
	a := sample(traffic, runtime.NumCPU())
	// Spin until this process has had 300ms of CPU (on a busy machine that takes longer
	// than 300ms of wall time), for at most 5s.
	cpu0 := processCPU(t)
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end) && processCPU(t)-cpu0 < 0.3; {
		for range 10000 {
			served.Add(1)
		}
	}
	l := sample(traffic, runtime.NumCPU()).since(a)
	if l.Self < 0.2 || l.Self > l.Wall*float64(runtime.NumCPU())+0.05 {
		t.Errorf("Self = %.3fs over %.3fs of spinning", l.Self, l.Wall)
	}
	if l.Served == 0 || l.Forwarded != 0 {
		t.Errorf("served %d forwarded %d", l.Served, l.Forwarded)
	}
	if l.Others < 0 || l.Delay < 0 {
		t.Errorf("Others or Delay unknown on Linux with all CPUs usable: %+v", l)
	}
}

// The controller moves GOMAXPROCS with the traffic it is shown, only while enabled, and
// only once a choice has held for Confirm intervals.
func TestControllerSteers(t *testing.T) {
	orig := runtime.GOMAXPROCS(0)
	defer runtime.GOMAXPROCS(orig)
	cpus := runtime.NumCPU()

	var served, forwarded atomic.Uint64
	c := &Controller{
		Policy:  Policy{CPUs: cpus},
		Traffic: func() (uint64, uint64) { return served.Load(), forwarded.Load() },
		Every:   20 * time.Millisecond,
		Confirm: 2,
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { c.Run(stop); close(done) }()
	defer func() { close(stop); <-done }()

	// feed shows the controller traffic until until holds or d has passed.
	feed := func(fwd bool, d time.Duration, until func(int) bool) int {
		t.Helper()
		deadline := time.Now().Add(d)
		for time.Now().Before(deadline) {
			served.Add(100)
			if fwd {
				forwarded.Add(100)
			}
			time.Sleep(2 * time.Millisecond)
			if n := runtime.GOMAXPROCS(0); until(n) {
				return n
			}
		}
		return runtime.GOMAXPROCS(0)
	}

	runtime.GOMAXPROCS(cpus + 3)
	if n := feed(false, 300*time.Millisecond, func(n int) bool { return n != cpus+3 }); n != cpus+3 {
		t.Fatalf("disabled controller changed GOMAXPROCS to %d", n)
	}
	c.Enable(true)
	for _, fwd := range []bool{true, false} {
		runtime.GOMAXPROCS(cpus + 3)
		if n := feed(fwd, 5*time.Second, func(n int) bool { return n <= cpus }); n > cpus || n < 1 {
			t.Fatalf("traffic (forwarded %v) from %d slots: GOMAXPROCS %d, want 1..%d", fwd, cpus+3, n, cpus)
		}
	}
	// Idle intervals teach nothing: the count stays.
	runtime.GOMAXPROCS(cpus + 2)
	time.Sleep(100 * time.Millisecond)
	if n := runtime.GOMAXPROCS(0); n != cpus+2 {
		t.Fatalf("idle: GOMAXPROCS moved to %d", n)
	}
	c.Enable(false)
	runtime.GOMAXPROCS(cpus + 1)
	if n := feed(false, 300*time.Millisecond, func(n int) bool { return n != cpus+1 }); n != cpus+1 {
		t.Fatalf("disabled again, the controller changed GOMAXPROCS to %d", n)
	}
}

// steer: a choice applies after confirm intervals; a count found starved is ruled out
// for hold, then tried again.
func TestSteer(t *testing.T) {
	s := steer{policy: Policy{CPUs: 2}, confirm: 2, hold: time.Minute}
	t0 := time.Unix(1000, 0)
	local := Load{Served: 100, Others: 1, Self: 0.3, Delay: 0.01, Wall: 0.5}  // idle CPUs: 2-2 = 0 → 1
	starved := Load{Served: 100, Others: 1, Self: 0.4, Delay: 0.2, Wall: 0.5} // waited half its CPU time
	fwdStarved := Load{Served: 100, Forwarded: 100, Others: 1, Self: 0.4, Delay: 0.2, Wall: 0.5}
	alone := Load{Served: 100, Forwarded: 100, Others: 0.1, Self: 0.5, Wall: 0.5}
	steps := []struct {
		l    Load
		cur  int
		at   time.Duration
		want int
	}{
		{local, 4, 0, 4},                         // first vote for 1
		{alone, 4, time.Second, 4},               // the machine to itself: a vote for 2 resets it
		{local, 4, 2 * time.Second, 4},           // vote 1
		{local, 4, 3 * time.Second, 1},           // confirmed
		{starved, 1, 3200 * time.Millisecond, 1}, // one starved interval: a vote for 2 ...
		{local, 1, 3500 * time.Millisecond, 1},   // ... that the next one does not confirm
		{starved, 1, 4 * time.Second, 1},         // starved at 1: vote for 2, floor 2 for a minute
		{starved, 1, 5 * time.Second, 2},         // confirmed
		{local, 2, 6 * time.Second, 2},           // idle CPUs say 1, the floor says 2
		{local, 2, 50 * time.Second, 2},          // still within the hold
		{local, 2, 65 * time.Second, 2},          // a minute from the last starved interval (5s)
		{local, 2, 66 * time.Second, 2},          // hold over: vote for 1
		{local, 2, 67 * time.Second, 1},          // tried again
		{local, 1, 68 * time.Second, 1},          // not starved this time: stays
		{fwdStarved, 1, 69 * time.Second, 1},     // forwarding: the delay is not acted on
		{fwdStarved, 1, 70 * time.Second, 1},
		{alone, 1, 80 * time.Second, 1},           // the machine to itself: vote for 2
		{alone, 1, 81 * time.Second, 2},           // confirmed
		{Load{Wall: 0.5}, 2, 82 * time.Second, 2}, // idle: unchanged
	}
	for i, st := range steps {
		if got := s.next(st.l, st.cur, t0.Add(st.at)); got != st.want {
			t.Fatalf("step %d (at %v, cur %d): %d, want %d", i, st.at, st.cur, got, st.want)
		}
	}
}

// runDelay reads the run-queue wait of this process's threads: more runnable threads
// than CPUs make it grow.
func TestRunDelay(t *testing.T) {
	orig := runtime.GOMAXPROCS(0)
	defer runtime.GOMAXPROCS(orig)
	n := 2*runtime.NumCPU() + 2
	runtime.GOMAXPROCS(n)
	d0 := runDelay("/proc/self/task")
	if d0 < 0 {
		t.Fatal("no /proc/self/task/*/schedstat on this Linux")
	}
	var wg sync.WaitGroup
	end := time.Now().Add(300 * time.Millisecond)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) {
			}
		}()
	}
	wg.Wait()
	if d := runDelay("/proc/self/task") - d0; d < 0.05 {
		t.Errorf("%d spinning threads on %d CPUs for 300ms: run delay grew by %.3fs", n, runtime.NumCPU(), d)
	}
	if d := runDelay(t.TempDir()); d != 0 {
		t.Errorf("no threads: %v", d)
	}
	if d := runDelay("/nonexistent"); d != -1 {
		t.Errorf("unreadable: %v, want -1", d)
	}
}

// processCPU returns this process's user and system CPU seconds.
func processCPU(t *testing.T) float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}
