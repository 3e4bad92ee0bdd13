// Command bench measures edge against nginx and sizes deployments. It is a black
// box: it builds and starts the edge binary and talks HTTP to it, and imports no
// package of edge.
//
//	go run ./bench run  [-d 5s] [-rounds 3] [-c 64] [-only pass,cells] [-out bench/results]
//	go run ./bench load -addr 127.0.0.1:8080 -path '/item/{item}' [-rate 1000] …
//	go run ./bench plan -users 100000000 -clicks 30 -factor 4 -peak-hours 5
//	go run ./bench handshake -addr 127.0.0.1:8443 -path /pass/x [-c 16] [-d 5s]
//
// run writes bench/results/<date>.md and .json (<date>_<scenarios>.md and .json with
// -only); plan reads the newest .json that has the capacity scenario for the per-node
// capacity unless -edge-capacity is given.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "run":
		err = cmdRun(os.Args[2:])
	case "load":
		err = cmdLoad(os.Args[2:])
	case "plan":
		err = cmdPlan(os.Args[2:])
	case "h3":
		err = cmdH3(os.Args[2:])
	case "handshake":
		err = cmdHandshake(os.Args[2:])
	case "help", "-h", "-help", "--help":
		usage()
		return
	default:
		fmt.Fprintf(os.Stderr, "bench: unknown command %q\n", os.Args[1])
		usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprint(os.Stderr, `usage: go run ./bench COMMAND [flags]   (COMMAND -h for its flags)
  run    the suite: every scenario against edge and nginx, report to bench/results/
  load   one load run against any HTTP server (closed loop, or open loop with -rate)
  plan   capacity plan: peak QPS from users and clicks, nodes from capacities
  handshake  full TLS handshakes (new connection, no resumption, one GET each) against any server
  h3     edge's HTTP/3 against its own HTTP/2 on a pass route: req/s and req per CPU-second
`)
}

type stringList []string

func (s *stringList) String() string { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error {
	*s = append(*s, v)
	return nil
}

func cmdRun(args []string) error {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	d := fs.Duration("d", 5*time.Second, "duration of one measured run (one side, one round)")
	warm := fs.Duration("warmup", time.Second, "warm-up per side and scenario, not measured")
	rounds := fs.Int("rounds", 3, "rounds per scenario (edge, nginx alternating)")
	conns := fs.Int("c", 64, "connections")
	only := fs.String("only", "", "comma-separated scenarios to run (default all)")
	out := fs.String("out", "", "results directory (default bench/results in the module root)")
	edgeBin := fs.String("edge", "", "edge binary to use (default: go build ./cmd/edge)")
	fs.Parse(args)

	root, err := moduleRoot()
	if err != nil {
		return err
	}
	if *out == "" {
		*out = filepath.Join(root, "bench", "results")
	}
	var run []*scenario
	if *only == "" {
		run = scenarios
	} else {
		for _, name := range strings.Split(*only, ",") {
			found := false
			for _, sc := range scenarios {
				if sc.name == strings.TrimSpace(name) {
					run, found = append(run, sc), true
				}
			}
			if !found {
				return fmt.Errorf("unknown scenario %q (have %s)", name, scenarioNames())
			}
		}
	}
	logf := func(f string, a ...any) { fmt.Printf(f+"\n", a...) }

	nginxBin, err := toolNginx.ensure(logf)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "edge-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	e := &env{dir: dir, nginxBin: nginxBin, logf: logf}
	defer e.close()
	// Stop the children on Ctrl-C or kill too, not only on a normal return.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		sig := <-sigs
		e.close()
		os.RemoveAll(dir)
		fmt.Fprintf(os.Stderr, "\nbench: stopped by %v\n", sig)
		os.Exit(130)
	}()
	needRedis := false
	for _, sc := range run {
		needRedis = needRedis || sc.needsRedis
	}
	redisBin := ""
	if needRedis {
		if redisBin, err = toolRedis.ensure(logf); err != nil {
			e.redisErr = err.Error()
			logf("seckill scenarios will be INVALID: %v", err)
		} else if err := e.startRedis(redisBin); err != nil {
			e.redisErr = err.Error()
			logf("seckill scenarios will be INVALID: %v", err)
		}
	}
	e.edgeBin = *edgeBin
	if e.edgeBin == "" {
		e.edgeBin = filepath.Join(dir, "edge")
		version := "dev"
		if out, err := exec.Command("git", "-C", root, "describe", "--always", "--dirty").Output(); err == nil {
			version = strings.TrimSpace(string(out))
		}
		logf("building edge %s: go build -o %s ./cmd/edge", version, e.edgeBin)
		cmd := exec.Command("go", "build", "-ldflags", "-X main.version="+version, "-o", e.edgeBin, "./cmd/edge")
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build ./cmd/edge failed: %v: %s", err, lastLines(b, 10))
		}
	}
	if err := e.startNginx(); err != nil {
		return err
	}
	st := Settings{Duration: *d, Warmup: *warm, Seconds: d.Seconds(), WarmupS: warm.Seconds(),
		Rounds: *rounds, Conns: *conns}
	if *only != "" {
		st.Only = strings.Split(*only, ",")
	}
	now := time.Now().UTC()
	rep := &Report{Date: now.Format(time.RFC3339), Machine: readMachine(nginxBin, redisBin, e.edgeBin), Settings: st}
	logf("bench: %d scenarios, %d rounds × %s per side, %d connections; %d cores, %s",
		len(run), *rounds, *d, *conns, rep.Machine.Cores, rep.Machine.CPU)
	prog := NewProgress()
	for _, sc := range run {
		res := e.runScenario(sc, st, prog)
		rep.Scenarios = append(rep.Scenarios, res)
		for _, sd := range []*Side{res.Edge, res.Nginx} {
			if sd != nil && !sd.Valid {
				logf("  %-16s %-5s INVALID: %s", sc.name, sd.Target, sd.Invalid)
			}
		}
	}
	e.close()
	jp, mp, err := rep.write(*out, reportName(now, run, len(run) == len(scenarios)))
	if err != nil {
		return err
	}
	fmt.Println()
	fmt.Print(rep.Markdown())
	fmt.Printf("\nwrote %s and %s\n", mp, jp)
	return nil
}

// reportName is the base name of a run's report files: the UTC day of a full suite,
// the day and the scenarios of a partial one ("2026-12-06_l4_bulk+l4_connect"), so that
// a run of a few scenarios does not overwrite the day's full report. The names sort by
// day, the partial ones of a day after its full one.
func reportName(now time.Time, run []*scenario, all bool) string {
	day := now.UTC().Format("2006-01-02")
	if all {
		return day
	}
	names := make([]string, len(run))
	for i, sc := range run {
		names[i] = sc.name
	}
	return day + "_" + strings.Join(names, "+")
}

func scenarioNames() string {
	var s []string
	for _, sc := range scenarios {
		s = append(s, sc.name)
	}
	return strings.Join(s, ", ")
}

// idsHelp describes an id spec flag (ParseIDs), after the placeholder it fills.
const idsHelp = "values: N, LO-HI (random), cycle:LO-HI, seq or seq:N (distinct)"

// loadFlags are the flags the load and handshake commands share.
type loadFlags struct {
	path, items *string
	d           *time.Duration
	expect      *int
}

// addLoadFlags registers -path (pathHelp says what it is), -items, -d and -expect on fs.
func addLoadFlags(fs *flag.FlagSet, pathHelp string) loadFlags {
	return loadFlags{
		path:   fs.String("path", "/", pathHelp),
		items:  fs.String("items", "0", "{item} "+idsHelp),
		d:      fs.Duration("d", 5*time.Second, "duration"),
		expect: fs.Int("expect", 0, "count answers with this status (0: any)"),
	}
}

// parse parses args with fs and returns the -path template and the Expect of -expect.
func (f loadFlags) parse(fs *flag.FlagSet, args []string) (Template, Expect, error) {
	fs.Parse(args)
	tpl, err := ParseTemplate(*f.path)
	return tpl, Expect{Status: *f.expect}, err
}

func cmdLoad(args []string) error {
	fs := flag.NewFlagSet("load", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:8080", "server host:port")
	method := fs.String("method", "GET", "request method")
	lf := addLoadFlags(fs, "path template; {user}, {item} and {seq} are filled per request")
	var headers stringList
	fs.Var(&headers, "H", "header \"Name: value-template\" (repeatable)")
	users := fs.String("users", "0", "{user} "+idsHelp)
	conns := fs.Int("c", 64, "connections")
	rate := fs.Float64("rate", 0, "open loop: requests per second, latency from the intended send time (0: closed loop)")
	tpl, expect, err := lf.parse(fs, args)
	if err != nil {
		return err
	}
	l := &Load{Addr: *addr, Method: *method, Path: tpl, Conns: *conns, Rate: *rate, Duration: *lf.d,
		Expect: expect, Progress: NewProgress()}
	if l.Users, err = ParseIDs(*users); err != nil {
		return err
	}
	if l.Items, err = ParseIDs(*lf.items); err != nil {
		return err
	}
	for _, h := range headers {
		hh, err := ParseHeader(h)
		if err != nil {
			return err
		}
		l.Headers = append(l.Headers, hh)
	}
	mode := "closed loop"
	if *rate > 0 {
		mode = fmt.Sprintf("open loop at %g req/s", *rate)
	}
	l.Progress.Label = fmt.Sprintf("%s %s", *method, *addr)
	r, err := l.Run()
	if err != nil {
		return err
	}
	h := r.Hist
	fmt.Printf("%s, %d connections, %s: %d answers, %d errors", mode, *conns, r.Elapsed.Round(time.Millisecond), r.Requests, r.Errors)
	if r.Unsent > 0 {
		fmt.Printf(", %d never sent", r.Unsent)
	}
	fmt.Printf("\n%.0f req/s\nlatency p50 %s  p90 %s  p99 %s  p99.9 %s  max %s  mean %s\nstatus %s\n",
		r.RPS(), fmtDur(h.Percentile(50)), fmtDur(h.Percentile(90)), fmtDur(h.Percentile(99)),
		fmtDur(h.Percentile(99.9)), fmtDur(h.Max()), fmtDur(h.Mean()), fmtStatus(statusKeys(r.Status)))
	if expect.Status != 0 {
		fmt.Printf("as expected (%d): %d of %d\n", expect.Status, r.Matched, r.Requests)
		if r.Mismatch != "" {
			fmt.Printf("first other answer: %s\n", r.Mismatch)
		}
	}
	if r.FirstErr != "" {
		fmt.Printf("first error: %s\n", r.FirstErr)
	}
	return nil
}

func cmdPlan(args []string) error {
	fs := flag.NewFlagSet("plan", flag.ExitOnError)
	users := fs.Float64("users", 0, "registered users (required)")
	clicks := fs.Float64("clicks", 0, "page views per active user per day (required)")
	factor := fs.Float64("factor", 3, "redundancy factor, 2 to 5")
	peak := fs.Float64("peak-hours", defaultPeakHours, "length of the peak window in hours (default 20% of the day)")
	edgeCap := fs.Float64("edge-capacity", 0, "requests/s of one edge node (default: edge req/s of -capacity-scenario in the newest bench/results/*.json)")
	capScenario := fs.String("capacity-scenario", "pass", "scenario of the report whose edge req/s is the per-node capacity")
	results := fs.String("results", "", "results directory (default bench/results in the module root)")
	var layers layerFlags
	fs.Var(&layers, "layer", "a layer behind edge as NAME=REQUESTS_PER_SECOND per node (repeatable), e.g. -layer app=2000 -layer redis=80000")
	fs.Parse(args)

	p := &Plan{Users: *users, Clicks: *clicks, Factor: *factor, PeakHours: *peak, EdgeCapacity: *edgeCap, Layers: layers}
	if err := p.Compute(); err != nil {
		return err
	}
	if p.EdgeCapacity == 0 {
		dir := *results
		if dir == "" {
			if root, err := moduleRoot(); err == nil {
				dir = filepath.Join(root, "bench", "results")
			}
		}
		if r, path, err := latestReport(dir, *capScenario); err != nil {
			fmt.Fprintln(os.Stderr, "bench plan:", err)
		} else if c, from, err := capacityFromReport(r, relPath(path), *capScenario); err != nil {
			fmt.Fprintln(os.Stderr, "bench plan:", err)
		} else {
			p.EdgeCapacity, p.CapacityFrom = c, from
		}
	}
	p.Print(os.Stdout)
	return nil
}

// relPath shows path relative to the working directory when it is below it.
func relPath(path string) string {
	if wd, err := os.Getwd(); err == nil {
		if rel, err := filepath.Rel(wd, path); err == nil && !strings.HasPrefix(rel, "..") {
			return rel
		}
	}
	return path
}
