package workers

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"time"
)

// snapshot is the cumulative state the controller compares between intervals.
type snapshot struct {
	at        time.Time
	served    uint64
	forwarded uint64
	self      float64 // CPU seconds of this process
	machine   float64 // busy CPU seconds of the machine; <0 unknown
	delay     float64 // run-queue wait of this process's threads in seconds; <0 unknown
}

func (s snapshot) since(p snapshot) Load {
	l := Load{
		Served:    s.served - p.served,
		Forwarded: s.forwarded - p.forwarded,
		Self:      s.self - p.self,
		Others:    -1,
		Delay:     -1,
		Wall:      s.at.Sub(p.at).Seconds(),
	}
	if s.machine >= 0 && p.machine >= 0 {
		l.Others = max(s.machine-p.machine-l.Self, 0)
	}
	// A thread that exited took its share of the sum along: unknown then.
	if s.delay >= 0 && p.delay >= 0 && s.delay >= p.delay {
		l.Delay = s.delay - p.delay
	}
	return l
}

func sample(traffic func() (uint64, uint64), cpus int) snapshot {
	s := snapshot{at: time.Now(), machine: -1, delay: runDelay("/proc/self/task")}
	if traffic != nil {
		s.served, s.forwarded = traffic()
	}
	s.self = selfCPU()
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		s.machine = machineBusy(b, cpus)
	}
	return s
}

// clockTick is USER_HZ, the unit of /proc/stat; 100 on every Linux architecture Go runs on.
const clockTick = 100

// machineBusy returns the busy CPU seconds in a /proc/stat text (user, nice, system, irq,
// softirq and steal of the aggregate "cpu" line), or -1 when the text cannot be read or
// counts other than cpus CPUs: busy time of CPUs the process may not use says nothing
// about the ones it may.
func machineBusy(stat []byte, cpus int) float64 {
	busy, n := -1.0, 0
	sc := bufio.NewScanner(bytes.NewReader(stat))
	for sc.Scan() {
		f := bytes.Fields(sc.Bytes())
		if len(f) == 0 || !bytes.HasPrefix(f[0], []byte("cpu")) {
			continue
		}
		if len(f[0]) > 3 {
			n++
			continue
		}
		if len(f) < 9 {
			return -1
		}
		var t [8]uint64
		for i := range t {
			v, err := strconv.ParseUint(string(f[i+1]), 10, 64)
			if err != nil {
				return -1
			}
			t[i] = v
		}
		// user nice system idle iowait irq softirq steal
		busy = float64(t[0]+t[1]+t[2]+t[5]+t[6]+t[7]) / clockTick
	}
	if n != cpus {
		return -1
	}
	return busy
}

// runDelay sums the run-queue delay (the second field of schedstat, in nanoseconds) of
// the threads under dir, in seconds; -1 when it cannot be read (a kernel without
// schedstats).
func runDelay(dir string) float64 {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return -1
	}
	var ns uint64
	for _, e := range ents {
		b, err := os.ReadFile(dir + "/" + e.Name() + "/schedstat")
		if err != nil {
			continue // the thread exited since the listing
		}
		f := bytes.Fields(b)
		if len(f) < 2 {
			return -1
		}
		v, err := strconv.ParseUint(string(f[1]), 10, 64)
		if err != nil {
			return -1
		}
		ns += v
	}
	return float64(ns) / 1e9
}
