package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The L4 scenarios: edge's TCP streams against nginx's stream module (and HAProxy in
// mode tcp when it can be had) in front of the same origins, which run in the bench
// process with the clients. Judged per CPU-second of the proxy as much as per second,
// since clients, origins and proxy share the machine.

// l4Scenario makes a scenario an L4 one; nil on the HTTP scenarios.
type l4Scenario struct {
	bulk bool // l4_bulk (bytes through a sink); else l4_connect (new connections to an echo)
	// goal is the wanted edge/nginx ratio: of bytes per CPU-second when goalOnCPU,
	// else of connections per second.
	goal      float64
	goalOnCPU bool
}

const (
	l4BulkConns      = 4               // connections of l4_bulk
	l4ConnectWorkers = 32              // connections in flight in l4_connect
	l4StraceRun      = 2 * time.Second // the bulk run under strace (not timed)
	l4Upstream       = "l4_origin"     // edge's upstream of the L4 origin
	mb               = 1e6             // bytes in the MB of MB/s
)

var l4Scenarios = []*scenario{
	{
		name: "l4_bulk", desc: fmt.Sprintf("TCP stream, bulk upload: %d connections each writing 256 KiB blocks through the proxy "+
			"to a sink origin for the run, then a half-close answered with the sink's byte count (checked); MB/s the sink received, MB per CPU-second of the proxy", l4BulkConns),
		edgeHCL: func(e *env) string { return e.l4EdgeHCL("l4_bulk") },
		l4:      &l4Scenario{bulk: true, goal: 1.0, goalOnCPU: true},
	},
	{
		name: "l4_connect", desc: fmt.Sprintf("TCP stream, new connections: %d closed-loop clients each doing connect, write %d bytes, "+
			"read them back from an echo origin, close; connections/s, and per CPU-second of the proxy", l4ConnectWorkers, l4EchoSize),
		edgeHCL: func(e *env) string { return e.l4EdgeHCL("l4_connect") },
		l4:      &l4Scenario{goal: 0.8},
	},
}

func init() { scenarios = append(scenarios, l4Scenarios...) }

// l4Ports are the listening ports of one L4 scenario on each proxy.
type l4Ports struct{ edge, nginx, haproxy int }

// l4Env is what the L4 scenarios share within a suite: the origins, and nginx and
// HAProxy configured with one server per scenario; made by the first L4 scenario.
type l4Env struct {
	sink       *sinkServer
	echo       *echoServer
	ports      map[string]l4Ports
	origins    map[string]string // origin address by scenario
	nginx      *proc
	haproxy    *proc
	haproxyErr string // why there is no HAProxy
	err        error  // why there is no L4 environment
}

// origin returns the address of sc's origin.
func (l *l4Env) origin(sc *scenario) string {
	if sc.l4.bulk {
		return l.sink.addr()
	}
	return l.echo.addr()
}

// l4EdgeHCL is the edge.hcl blocks of the L4 scenario name, once startL4 has run.
func (e *env) l4EdgeHCL(name string) string {
	origin, ok := e.l4.origins[name]
	if !ok {
		panic("BUG: no L4 scenario " + name)
	}
	return l4EdgeBlocks(name, origin, e.l4.ports[name].edge)
}

// l4EdgeBlocks are the blocks of edge.hcl of an L4 scenario: its origin as an
// upstream, and a stream with the defaults an operator gets.
func l4EdgeBlocks(name, origin string, port int) string {
	return fmt.Sprintf(`upstream %q {
  servers = [%q]
}
stream %q {
  listen   = "127.0.0.1:%d"
  upstream = %q
}
`, l4Upstream, origin, name, port, l4Upstream)
}

// nginxStreamConfig is the nginx the L4 scenarios measure edge against: one stream
// server per scenario, the workers of the HTTP nginx (one per core), half-closes passed
// on as edge does (nginx's default ends the session at the first end of file).
func nginxStreamConfig(dir, loadModule string, servers map[string][2]string) string {
	var b strings.Builder
	if loadModule != "" {
		b.WriteString(loadModule + "\n")
	}
	fmt.Fprintf(&b, `worker_processes auto; pid %[1]s/nginx-l4.pid; error_log %[1]s/nginx-l4.err;
events { worker_connections 8192; }
stream {
`, dir)
	for _, name := range sortedKeys(servers) {
		s := servers[name]
		fmt.Fprintf(&b, `  upstream %[1]s { server %[3]s; }
  server { listen %[2]s reuseport backlog=4096; proxy_pass %[1]s; proxy_half_close on; }
`, name, s[0], s[1])
	}
	b.WriteString("}\n")
	return b.String()
}

// haproxyConfig is HAProxy in mode tcp with as many threads as nginx has workers and
// its defaults otherwise (no splice: that takes option splice-auto).
func haproxyConfig(dir string, threads int, servers map[string][2]string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `global
    nbthread %d
    maxconn 8192
    pidfile %s/haproxy.pid
defaults
    mode tcp
    timeout connect 5s
    timeout client 10m
    timeout server 10m
`, threads, dir)
	for _, name := range sortedKeys(servers) {
		s := servers[name]
		fmt.Fprintf(&b, `frontend %[1]s
    bind %[2]s
    default_backend %[1]s
backend %[1]s
    server origin %[3]s
`, name, s[0], s[1])
	}
	return b.String()
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// startL4 starts the origins, nginx's stream servers and HAProxy, once; later calls
// return the first call's outcome. HAProxy is optional: without it, haproxyErr says why.
func (e *env) startL4() error {
	if e.l4 != nil {
		return e.l4.err
	}
	l := &l4Env{ports: map[string]l4Ports{}, origins: map[string]string{}}
	e.mu.Lock()
	e.l4 = l
	e.mu.Unlock()
	l.err = func() error {
		var err error
		if l.sink, err = newSink(); err != nil {
			return err
		}
		if l.echo, err = newEcho(); err != nil {
			return err
		}
		loadModule, err := ensureStreamModule(e.nginxBin, e.logf)
		if err != nil {
			return err
		}
		ngx, hap := map[string][2]string{}, map[string][2]string{}
		for _, sc := range l4Scenarios {
			p, err := freePorts(3)
			if err != nil {
				return err
			}
			l.ports[sc.name] = l4Ports{edge: p[0], nginx: p[1], haproxy: p[2]}
			l.origins[sc.name] = l.origin(sc)
			ngx[sc.name] = [2]string{fmt.Sprintf("127.0.0.1:%d", p[1]), l.origin(sc)}
			hap[sc.name] = [2]string{fmt.Sprintf("127.0.0.1:%d", p[2]), l.origin(sc)}
		}
		conf := filepath.Join(e.dir, "nginx-l4.conf")
		if err := os.WriteFile(conf, []byte(nginxStreamConfig(e.dir, loadModule, ngx)), 0o644); err != nil {
			return err
		}
		errLog := filepath.Join(e.dir, "nginx-l4.err")
		p, err := startProc("nginx (stream)", filepath.Join(e.dir, "nginx-l4.log"),
			e.nginxBin, "-p", e.dir, "-c", conf, "-e", errLog, "-g", "daemon off;")
		if err != nil {
			return err
		}
		e.mu.Lock()
		l.nginx = p
		e.mu.Unlock()
		for _, s := range ngx {
			if err := p.waitPort(s[0]); err != nil {
				return fmt.Errorf("%w (%s)", err, readTail(errLog))
			}
		}
		l.haproxyErr = e.startHAProxy(l, hap)
		if l.haproxyErr != "" {
			e.logf("l4: HAProxy left out: %s", l.haproxyErr)
		}
		return nil
	}()
	return l.err
}

// startHAProxy starts HAProxy for the L4 scenarios; it returns why not, or "".
func (e *env) startHAProxy(l *l4Env, servers map[string][2]string) string {
	bin, err := toolHAProxy.ensure(e.logf)
	if err != nil {
		return err.Error()
	}
	conf := filepath.Join(e.dir, "haproxy.cfg")
	if err := os.WriteFile(conf, []byte(haproxyConfig(e.dir, runtime.NumCPU(), servers)), 0o644); err != nil {
		return err.Error()
	}
	p, err := startProc("haproxy", filepath.Join(e.dir, "haproxy.log"), bin, "-f", conf, "-db")
	if err != nil {
		return err.Error()
	}
	e.mu.Lock()
	l.haproxy = p
	e.mu.Unlock()
	for _, s := range servers {
		if err := p.waitPort(s[0]); err != nil {
			p.stop(syscall.SIGTERM)
			e.mu.Lock()
			l.haproxy = nil
			e.mu.Unlock()
			return err.Error()
		}
	}
	return ""
}

// close stops what startL4 started.
func (l *l4Env) close() {
	for _, p := range []*proc{l.nginx, l.haproxy} {
		if p != nil {
			p.stop(syscall.SIGTERM)
		}
	}
	if l.sink != nil {
		l.sink.close()
	}
	if l.echo != nil {
		l.echo.close()
	}
}

// l4Target is one proxy of an L4 scenario.
type l4Target struct {
	name string
	addr string
	pids func() []int
	runs []*l4Run
}

// runL4 measures an L4 scenario: warm-up of each proxy, then rounds of edge, nginx,
// HAProxy, edge, …, the proxy's CPU sampled around each round's window; then, for
// l4_bulk, a separate short run under strace per proxy for the splice check.
func (e *env) runL4(sc *scenario, st Settings, prog *Progress) ScenarioResult {
	x := sc.l4
	res := &L4Result{Unit: "conn/s", PerCPUUnit: "conn/CPU-s"}
	if x.bulk {
		res.Unit, res.PerCPUUnit = "MB/s", "MB/CPU-s"
	}
	out := ScenarioResult{Name: sc.name, Desc: sc.desc, L4: res}
	invalid := func(why string) ScenarioResult {
		res.Sides = []*L4Side{{Target: "edge", Invalid: why}, {Target: "nginx", Invalid: "not run: " + why}}
		e.logf("  %-16s INVALID: %s", sc.name, why)
		return out
	}
	if err := e.startL4(); err != nil {
		return invalid("no L4 environment: " + err.Error())
	}
	l, ports := e.l4, e.l4.ports[sc.name]
	ep, _, _, err := e.startEdge(sc)
	if err != nil {
		return invalid("edge did not start with this scenario's config: " + err.Error())
	}
	defer ep.stop(syscall.SIGTERM)
	edgeAddr := fmt.Sprintf("127.0.0.1:%d", ports.edge)
	if err := ep.waitPort(edgeAddr); err != nil {
		return invalid("edge's stream: " + err.Error())
	}
	targets := []*l4Target{
		{name: "edge", addr: edgeAddr, pids: func() []int { return []int{ep.pid()} }},
		{name: "nginx", addr: fmt.Sprintf("127.0.0.1:%d", ports.nginx), pids: func() []int { return withChildren(l.nginx.pid()) }},
	}
	if l.haproxy != nil {
		targets = append(targets, &l4Target{name: "haproxy", addr: fmt.Sprintf("127.0.0.1:%d", ports.haproxy),
			pids: func() []int { return []int{l.haproxy.pid()} }})
	} else {
		out.Notes = append(out.Notes, "HAProxy not measured: "+l.haproxyErr)
	}
	load := func(t *l4Target, d time.Duration, label string) *l4Run {
		prog.Label = label
		var c0, self0 cpuSample
		var cpu, self, busy0, busy float64
		var ok bool
		window := func(start bool) {
			if start {
				c0, self0, busy0 = sampleCPU(t.pids()), sampleCPU([]int{os.Getpid()}), machineBusy()
			} else {
				cpu, ok = sampleCPU(t.pids()).since(c0)
				self, _ = sampleCPU([]int{os.Getpid()}).since(self0)
				busy = machineBusy() - busy0
			}
		}
		var r *l4Run
		if x.bulk {
			r = bulkLoad(t.addr, l4BulkConns, d, l.sink, window)
		} else {
			r = connectLoad(t.addr, l4ConnectWorkers, d, window)
		}
		r.cpu, r.cpuOK, r.loadCPU = cpu, ok, self
		r.otherCPU = max(busy-cpu-self, 0)
		return r
	}
	for _, t := range targets {
		load(t, st.Warmup, fmt.Sprintf("%s %s warm-up", sc.name, t.name))
	}
	for round := 1; round <= st.Rounds; round++ {
		for _, t := range targets {
			r := load(t, st.Duration, fmt.Sprintf("%s %-7s %d/%d", sc.name, t.name, round, st.Rounds))
			t.runs = append(t.runs, r)
			e.logf("  %-16s %-7s round %d: %s", sc.name, t.name, round, l4Line(x, r))
		}
	}
	for _, t := range targets {
		res.Sides = append(res.Sides, summarizeL4(t, x, l4BulkConns))
	}
	edge := res.Sides[0]
	for i, t := range targets[1:] {
		side := res.Sides[i+1]
		if edge.Valid && side.Valid {
			side.Ratio, side.RoundRatios, side.CPURatio, side.CPURoundRatios = l4Ratios(targets[0].runs, t.runs)
		}
	}
	for _, s := range res.Sides {
		if !s.Valid {
			e.logf("  %-16s %-7s INVALID: %s", sc.name, s.Target, s.Invalid)
		}
	}
	var bench, other float64
	for _, t := range targets {
		for _, r := range t.runs {
			bench = max(bench, r.loadCPU/r.Window.Seconds())
			other = max(other, r.otherCPU/r.Window.Seconds())
		}
	}
	note := fmt.Sprintf("CPU per measured second besides the proxy's, the most of any round: bench's clients and origin %.2f, other processes %.2f", bench, other)
	if other > 0.1 {
		note += " (the machine was not quiet: the figures are disturbed)"
	}
	out.Notes = append(out.Notes, note)
	if ngx := res.Sides[1]; x.goal > 0 && edge.Valid && ngx.Valid {
		what, got := "connections per second", ngx.Ratio
		if x.goalOnCPU {
			what, got = "MB per CPU-second", ngx.CPURatio
		}
		verdict := "met"
		if got < x.goal {
			verdict = "NOT met"
		}
		out.Notes = append(out.Notes, fmt.Sprintf("goal: edge/nginx %s ≥ %.2f: %s (%.2f)", what, x.goal, verdict, got))
	}
	if x.bulk {
		out.Notes = append(out.Notes, e.spliceCheck(res, targets)...)
	}
	return out
}

// spliceCheck runs l4_bulk once more per proxy, l4StraceRun long and not timed, under
// `strace -f -c`, and says how each moved the bytes: splice(2), or read and write.
func (e *env) spliceCheck(res *L4Result, targets []*l4Target) []string {
	bin, err := toolStrace.ensure(e.logf)
	if err != nil {
		return []string{"splice check not run: " + err.Error()}
	}
	var notes []string
	for _, t := range targets {
		var r *l4Run
		counts, err := straceCount(bin, e.dir, t.pids(), func() {
			r = bulkLoad(t.addr, l4BulkConns, l4StraceRun, e.l4.sink, func(bool) {})
		})
		if err != nil {
			notes = append(notes, fmt.Sprintf("%s splice check failed: %v", t.name, err))
			continue
		}
		sc := L4Syscalls{Target: t.name, Splice: counts["splice"], Reads: counts.reads(), Writes: counts.writes(),
			Calls: counts, MB: round1(r.Amount / mb), Seconds: l4StraceRun.Seconds()}
		res.Syscalls = append(res.Syscalls, sc)
		line := sc.String()
		e.logf("  l4_bulk under strace: %s", line)
		notes = append(notes, line)
	}
	return notes
}

// String is the report's line for one proxy's splice check.
func (s L4Syscalls) String() string {
	used := "no"
	if s.Splice > 0 {
		used = "yes"
	}
	var parts []string
	for _, name := range straceSyscalls {
		if n := s.Calls[name]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", name, n))
		}
	}
	detail := "none of " + strings.Join(straceSyscalls, ", ")
	if len(parts) > 0 {
		detail = strings.Join(parts, ", ")
	}
	return fmt.Sprintf("%s under strace -f -c (a separate %g s bulk run, not timed, %s MB through): splice used: %s; "+
		"splice calls: %d, read: %d, write: %d (%s)", s.Target, s.Seconds, thousands(s.MB), used, s.Splice, s.Reads, s.Writes, detail)
}

// l4Line is a round's log line.
func l4Line(x *l4Scenario, r *l4Run) string {
	var s string
	if x.bulk {
		s = fmt.Sprintf("%8.1f MB/s", r.Rate()/mb)
		if r.cpuOK && r.cpu > 0 {
			s += fmt.Sprintf("  %8.1f MB/CPU-s  (%.2f CPU-s)", r.Amount/mb/r.cpu, r.cpu)
		}
		s += fmt.Sprintf(", %d connections checked", r.Checked)
	} else {
		s = fmt.Sprintf("%8.0f conn/s", r.Rate())
		if r.cpuOK && r.cpu > 0 {
			s += fmt.Sprintf("  %8.0f conn/CPU-s  (%.2f CPU-s)", r.Amount/r.cpu, r.cpu)
		}
		s += fmt.Sprintf("  p50 %s  p99 %s", fmtDur(r.Hist.Percentile(50)), fmtDur(r.Hist.Percentile(99)))
	}
	s += fmt.Sprintf(", %d errors; bench (clients+origin) %.2f CPU-s, other processes %.2f CPU-s", r.Errors, r.loadCPU, r.otherCPU)
	if r.FirstErr != "" {
		s += " (first: " + r.FirstErr + ")"
	}
	return s
}

// summarizeL4 turns a proxy's rounds into its report entry and judges them: bulk runs
// must have had every connection's byte count confirmed and no error; connect runs at
// most 1% failed connections.
func summarizeL4(t *l4Target, x *l4Scenario, bulkConns int) *L4Side {
	s := &L4Side{Target: t.name}
	scale := 1.0
	if x.bulk {
		scale = mb
	}
	var amount, cpu float64
	cpuKnown := true
	hist := NewHistogram()
	var why []string
	for i, r := range t.runs {
		s.RoundsRate = append(s.RoundsRate, round1(r.Rate()/scale))
		amount += r.Amount
		cpu += r.cpu
		cpuKnown = cpuKnown && r.cpuOK
		s.Errors += r.Errors
		hist.Merge(r.Hist)
		switch {
		case r.Amount == 0:
			why = append(why, fmt.Sprintf("round %d: nothing went through: %s", i+1, r.FirstErr))
		case x.bulk && (r.Errors > 0 || r.Checked != int64(bulkConns)):
			why = append(why, fmt.Sprintf("round %d: %d of %d connections confirmed by the sink: %s", i+1, r.Checked, bulkConns, r.FirstErr))
		case !x.bulk && float64(r.Errors) > 0.01*(r.Amount+float64(r.Errors)):
			why = append(why, fmt.Sprintf("round %d: %d of %.0f connections failed: %s", i+1, r.Errors, r.Amount+float64(r.Errors), r.FirstErr))
		}
	}
	s.Rate = round1(median(s.RoundsRate))
	s.Amount = amount
	s.CPU = float64(int64(cpu*1000+0.5)) / 1000
	if cpuKnown && cpu > 0 {
		v := round1(amount / scale / cpu)
		s.PerCPU = &v
	}
	if !x.bulk {
		s.P50, s.P99 = ms(hist.Percentile(50)), ms(hist.Percentile(99))
	}
	if len(t.runs) == 0 {
		why = append(why, "no rounds")
	}
	if len(why) > 0 {
		s.Invalid = strings.Join(why, "; ")
	} else {
		s.Valid = true
	}
	return s
}

// l4Ratios are edge's figures over another proxy's, each the median of the per-round
// ratios: rate, and amount per CPU-second when both CPUs are known.
func l4Ratios(edge, other []*l4Run) (ratio float64, rounds []float64, cpuRatio float64, cpuRounds []float64) {
	for i := range min(len(edge), len(other)) {
		e, o := edge[i], other[i]
		if o.Rate() > 0 {
			rounds = append(rounds, float64(int64(e.Rate()/o.Rate()*1000+0.5))/1000)
		}
		if e.cpuOK && o.cpuOK && e.cpu > 0 && o.cpu > 0 && o.Amount > 0 {
			v := (e.Amount / e.cpu) / (o.Amount / o.cpu)
			cpuRounds = append(cpuRounds, float64(int64(v*1000+0.5))/1000)
		}
	}
	return median(rounds), rounds, median(cpuRounds), cpuRounds
}

// machineBusy returns the CPU seconds all CPUs have spent busy since boot (the first
// line of /proc/stat: user, nice, system, irq, softirq, steal); 0 when unknown.
func machineBusy() float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0
	}
	var ticks float64
	for _, i := range []int{1, 2, 3, 6, 7, 8} {
		v, _ := strconv.ParseFloat(f[i], 64)
		ticks += v
	}
	return ticks / clockTicks
}
