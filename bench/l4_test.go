package main

import (
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// The strace testdata are real `strace -f -c -o FILE -e trace=splice,read,write,
// recvfrom,sendto,readv,writev -p …` summaries (strace 6.1, Debian bookworm) of edge,
// nginx 1.22 (stream, master and workers) and HAProxy 2.6 during a bulk run, one of
// `ls` with failed calls, and the empty file strace leaves when none of the traced
// calls was made.
func TestParseStraceSummary(t *testing.T) {
	f := func(file string, want syscallCounts) {
		t.Helper()
		got, err := parseStraceSummary(testdata(t, file))
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: got %v, want %v", file, got, want)
		}
	}
	f("strace-edge.txt", syscallCounts{"read": 28090, "write": 27972})
	f("strace-nginx.txt", syscallCounts{"recvfrom": 33409, "writev": 33402})
	f("strace-haproxy.txt", syscallCounts{"recvfrom": 48262, "sendto": 48253})
	f("strace-errors.txt", syscallCounts{"read": 7, "write": 4, "openat": 39})
	f("strace-empty.txt", syscallCounts{})

	c, _ := parseStraceSummary(testdata(t, "strace-nginx.txt"))
	if c.reads() != 33409 || c.writes() != 33402 || c["splice"] != 0 {
		t.Errorf("nginx reads %d writes %d splice %d", c.reads(), c.writes(), c["splice"])
	}

	bad := func(name, out, wantErr string) {
		t.Helper()
		if _, err := parseStraceSummary(out); err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("%s: err %v, want one containing %q", name, err, wantErr)
		}
	}
	full := testdata(t, "strace-edge.txt")
	header, _, _ := strings.Cut(full, "100.00")
	bad("no total line", header, "no summary")
	bad("not a summary", "strace: attach: ptrace(PTRACE_SEIZE, 1): Operation not permitted\n", "no summary")
	bad("rows and total disagree", strings.Replace(full, "28090", "28091", 1), "sum to")
	bad("garbled row", strings.Replace(full, "28090", "many", 1), "bad summary line")
}

func TestNginxStreamModule(t *testing.T) {
	f := func(v string, wantHas bool, wantModule string) {
		t.Helper()
		has, module := nginxStreamModule(v)
		if has != wantHas || module != wantModule {
			t.Errorf("nginxStreamModule(%.60q…) = %v, %q; want %v, %q", v, has, module, wantHas, wantModule)
		}
	}
	debian := testdata(t, "nginx-V-debian.txt")
	f(debian, true, "/usr/lib/nginx/modules/ngx_stream_module.so")
	f(strings.Replace(debian, "--modules-path=/usr/lib/nginx/modules", "--modules-path=/opt/ngx/mods", 1), true, "/opt/ngx/mods/ngx_stream_module.so")
	f("configure arguments: --prefix=/etc/nginx --with-stream --with-http_ssl_module", true, "")
	f("configure arguments: --prefix=/etc/nginx --with-stream_ssl_module --with-http_ssl_module", false, "")
}

func TestReportName(t *testing.T) {
	now := time.Date(2026, 12, 6, 23, 59, 0, 0, time.UTC)
	if got := reportName(now, scenarios, true); got != "2026-12-06" {
		t.Errorf("full suite: %q", got)
	}
	if got := reportName(now, l4Scenarios, false); got != "2026-12-06_l4_bulk+l4_connect" {
		t.Errorf("partial: %q", got)
	}
}

// The configs bench writes are accepted by the installed nginx and HAProxy (skipped
// when they are not installed).
func TestL4ConfigsValid(t *testing.T) {
	servers := map[string][2]string{"l4_bulk": {"127.0.0.1:1", "127.0.0.1:2"}, "l4_connect": {"127.0.0.1:3", "127.0.0.1:4"}}
	dir := t.TempDir()
	if bin := toolNginx.find(); bin == "" {
		t.Log("no nginx: its stream config is not checked")
	} else if out, err := exec.Command(bin, "-V").CombinedOutput(); err != nil {
		t.Fatalf("nginx -V: %v", err)
	} else if has, module := nginxStreamModule(string(out)); !has {
		t.Log("nginx has no stream module")
	} else if _, err := os.Stat(module); module != "" && err != nil {
		t.Logf("no %s (libnginx-mod-stream): the stream config is not checked", module)
	} else {
		load := ""
		if module != "" {
			load = "load_module " + module + ";"
		}
		conf := filepath.Join(dir, "nginx-l4.conf")
		os.WriteFile(conf, []byte(nginxStreamConfig(dir, load, servers)), 0o644)
		if out, err := exec.Command(bin, "-t", "-p", dir, "-c", conf, "-e", filepath.Join(dir, "err")).CombinedOutput(); err != nil {
			t.Errorf("nginx -t: %v: %s", err, out)
		}
	}
	if bin := toolHAProxy.find(); bin == "" {
		t.Log("no haproxy: its config is not checked")
	} else {
		conf := filepath.Join(dir, "haproxy.cfg")
		os.WriteFile(conf, []byte(haproxyConfig(dir, 2, servers)), 0o644)
		if out, err := exec.Command(bin, "-c", "-f", conf).CombinedOutput(); err != nil {
			t.Errorf("haproxy -c: %v: %s", err, out)
		}
	}
}

// relay is a minimal TCP proxy for the load tests: it copies both ways and passes a
// half-close on, or, with halfClose false, ends the whole connection at the client's
// end of file as nginx's stream module does by default.
func relay(t *testing.T, to string, halfClose bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go serveConns(ln, func(c net.Conn) {
		defer c.Close()
		u, err := net.Dial("tcp", to)
		if err != nil {
			return
		}
		defer u.Close()
		done := make(chan struct{})
		go func() {
			io.Copy(c, u)
			close(done)
		}()
		io.Copy(u, c)
		if !halfClose {
			return
		}
		u.(*net.TCPConn).CloseWrite()
		<-done
	})
	return ln.Addr().String()
}

func TestBulkLoad(t *testing.T) {
	sink, err := newSink()
	if err != nil {
		t.Fatal(err)
	}
	defer sink.close()
	windows := 0
	r := bulkLoad(relay(t, sink.addr(), true), 3, 200*time.Millisecond, sink, func(bool) { windows++ })
	if r.Errors != 0 || r.Checked != 3 || r.Amount <= 0 || r.Window < 200*time.Millisecond || windows != 2 {
		t.Errorf("through a relay: %d errors (%s), %d of 3 checked, %.0f bytes in %s, %d window calls",
			r.Errors, r.FirstErr, r.Checked, r.Amount, r.Window, windows)
	}
	// A proxy that does not pass the half-close on loses the sink's count: not valid.
	r = bulkLoad(relay(t, sink.addr(), false), 2, 100*time.Millisecond, sink, func(bool) {})
	if r.Errors != 2 || r.Checked != 0 || !strings.Contains(r.FirstErr, "no byte count") {
		t.Errorf("without half-close: %d errors (%s), %d checked", r.Errors, r.FirstErr, r.Checked)
	}
	side := summarizeL4(&l4Target{name: "x", runs: []*l4Run{r}}, &l4Scenario{bulk: true}, 2)
	if side.Valid || !strings.Contains(side.Invalid, "0 of 2 connections confirmed") {
		t.Errorf("a run without counts is valid: %+v", side)
	}
	r = bulkLoad("127.0.0.1:1", 2, 50*time.Millisecond, sink, func(bool) {})
	if r.Errors != 2 || r.Amount != 0 || !strings.Contains(r.FirstErr, "dial") {
		t.Errorf("refused: %d errors (%s), %.0f bytes", r.Errors, r.FirstErr, r.Amount)
	}
}

func TestConnectLoad(t *testing.T) {
	echo, err := newEcho()
	if err != nil {
		t.Fatal(err)
	}
	defer echo.close()
	r := connectLoad(relay(t, echo.addr(), true), 4, 200*time.Millisecond, func(bool) {})
	if r.Errors != 0 || r.Amount <= 0 || r.Hist.Count() < uint64(r.Amount) {
		t.Errorf("through a relay: %.0f connections, %d errors (%s), %d latencies", r.Amount, r.Errors, r.FirstErr, r.Hist.Count())
	}
	side := summarizeL4(&l4Target{name: "x", runs: []*l4Run{r, r}}, &l4Scenario{}, 0)
	if !side.Valid || side.Rate != round1(r.Rate()) || side.P50 <= 0 {
		t.Errorf("summary of a good run: %+v", side)
	}
	// An origin that answers something else is caught.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go serveConns(ln, func(c net.Conn) {
		defer c.Close()
		var b [l4EchoSize]byte
		io.ReadFull(c, b[:])
		b[0] ^= 1
		c.Write(b[:])
	})
	r = connectLoad(ln.Addr().String(), 2, 100*time.Millisecond, func(bool) {})
	if r.Amount != 0 || r.Errors == 0 || !strings.Contains(r.FirstErr, "echo answered") {
		t.Errorf("wrong echo: %.0f connections, %d errors (%s)", r.Amount, r.Errors, r.FirstErr)
	}
}

func TestL4Ratios(t *testing.T) {
	run := func(amount, cpu float64) *l4Run {
		return &l4Run{Amount: amount, Window: time.Second, cpu: cpu, cpuOK: true}
	}
	edge := []*l4Run{run(100, 1), run(120, 1), run(90, 0.5)}
	ngx := []*l4Run{run(100, 2), run(100, 1), run(100, 1)}
	ratio, rounds, cpuRatio, cpuRounds := l4Ratios(edge, ngx)
	if ratio != 1 || !reflect.DeepEqual(rounds, []float64{1, 1.2, 0.9}) ||
		cpuRatio != 1.8 || !reflect.DeepEqual(cpuRounds, []float64{2, 1.2, 1.8}) {
		t.Errorf("ratio %g %v, cpu %g %v", ratio, rounds, cpuRatio, cpuRounds)
	}
}

func TestMarkdownL4(t *testing.T) {
	per := func(v float64) *float64 { return &v }
	r := fixedReport()
	r.Scenarios = append(r.Scenarios[:1], ScenarioResult{Name: "l4_bulk", Desc: "bulk",
		Notes: []string{"edge … splice used: no; splice calls: 0, read: 10, write: 9 (read 10, write 9)"},
		L4: &L4Result{Unit: "MB/s", PerCPUUnit: "MB/CPU-s", Sides: []*L4Side{
			{Target: "edge", Valid: true, Rate: 2500.4, RoundsRate: []float64{2500.4, 2400}, PerCPU: per(2600)},
			{Target: "nginx", Valid: true, Rate: 2400, RoundsRate: []float64{2400, 2500}, PerCPU: per(2500), Ratio: 1.04, CPURatio: 1.02},
			{Target: "haproxy", Invalid: "round 1: nothing went through"},
		}}})
	md := r.Markdown()
	for _, want := range []string{
		"| pass | 12,346 | 15,200 | 0.81 |",
		"\n\nL4 (TCP streams): edge's `stream`",
		"| l4_bulk | edge | 2,500 MB/s | 2,600 MB/CPU-s | — | — | — | 2,500 2,400 |\n" +
			"| l4_bulk | nginx | 2,400 MB/s | 2,500 MB/CPU-s | 1.04 | 1.02 | — | 2,400 2,500 |\n" +
			"| l4_bulk | haproxy | INVALID | — | — | — | — | |\n",
		"- `l4_bulk`: bulk.\n  - edge … splice used: no; splice calls: 0, read: 10, write: 9",
		"- **l4_bulk, haproxy: INVALID**: round 1: nothing went through",
		"need libnginx-mod-stream and strace",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	if strings.Contains(md, "| l4_bulk | INVALID") || strings.Contains(md, "| l4_bulk | — |") {
		t.Errorf("an L4 scenario is in the HTTP table:\n%s", md)
	}
	r.Scenarios = r.Scenarios[1:]
	if md := r.Markdown(); strings.Contains(md, "Load: bench's own") || !strings.Contains(md, ".\n\nL4 (TCP streams)") {
		t.Errorf("an L4-only report:\n%s", md)
	}
}
