package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edge-gw/edge/internal/edgetest"
	"github.com/edge-gw/edge/internal/testcert"
)

func runEdge(t *testing.T, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(edgetest.Binary(t), args...)
	cmd.Env = append(os.Environ(), "EDGE_ADMIN_TOKEN=tok", "EDGE_SECKILL_SECRET=0123456789abcdef0123456789abcdef", "TEST_ADMIN_TOKEN="+testToken)
	out, _ := cmd.Output()
	return string(out), cmd.ProcessState.ExitCode()
}

// exampleConfig copies edge.hcl into a fresh directory with the certificate that
// `make run` would create beside it, and returns the copy's path.
func exampleConfig(t *testing.T) string {
	t.Helper()
	src, err := os.ReadFile("../../edge.hcl")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	leaf := testcert.NewCA(t).Leaf(t, testcert.Opts{Names: []string{"localhost", "127.0.0.1"}})
	os.Mkdir(filepath.Join(dir, "state"), 0o755)
	for from, to := range map[string]string{leaf.CertFile: "state/dev-cert.pem", leaf.KeyFile: "state/dev-key.pem"} {
		b, _ := os.ReadFile(from)
		os.WriteFile(filepath.Join(dir, to), b, 0o600)
	}
	path := filepath.Join(dir, "edge.hcl")
	os.WriteFile(path, src, 0o644)
	return path
}

func TestCheck(t *testing.T) {
	out, code := runEdge(t, "-check", "-config", exampleConfig(t))
	if code != 0 || out != "ok\n" {
		t.Errorf("edge -check edge.hcl = %d %q, want 0 \"ok\\n\"", code, out)
	}
	// Without the certificate files the same file is refused at the certificate block.
	bare := filepath.Join(t.TempDir(), "edge.hcl")
	src, _ := os.ReadFile("../../edge.hcl")
	os.WriteFile(bare, src, 0o644)
	out, code = runEdge(t, "-check", "-config", bare)
	if code != 1 || !strings.Contains(out, `listener "https": cert_file`) {
		t.Errorf("edge -check edge.hcl without certificates = %d %q", code, out)
	}
	bad := filepath.Join(t.TempDir(), "bad.hcl")
	os.WriteFile(bad, []byte("listen = \"x\"\nroute \"r\" {\n  upstream = \"nope\"\n}\nwat = 1\n"), 0o644)
	out, code = runEdge(t, "-check", "-config", bad)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 1 || len(lines) != 3 {
		t.Fatalf("edge -check bad.hcl = %d %q, want exit 1 and 3 problems", code, out)
	}
	place := regexp.MustCompile(`^` + regexp.QuoteMeta(bad) + `:\d+,\d+: `)
	for _, l := range lines {
		if !place.MatchString(l) {
			t.Errorf("problem %q is not FILE:LINE,COL: message", l)
		}
	}
	out, code = runEdge(t, "-check", "-config", filepath.Join(t.TempDir(), "missing.hcl"))
	if code != 1 || !strings.Contains(out, "missing.hcl") {
		t.Errorf("missing file: %d %q", code, out)
	}
	out, code = runEdge(t, "-version")
	if code != 0 || !strings.HasPrefix(out, "edge ") {
		t.Errorf("edge -version = %d %q", code, out)
	}
}

// inflight starts a slow request and returns a channel with its outcome.
func inflight(addr string) chan string {
	return inflightVia(http.DefaultClient, "http://"+addr+"/slow")
}

// inflightVia starts GET url with c and returns a channel with "STATUS BODY" or the error.
func inflightVia(c *http.Client, url string) chan string {
	out := make(chan string, 1)
	go func() {
		resp, err := c.Get(url)
		if err != nil {
			out <- "error: " + err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		out <- fmt.Sprintf("%d %s", resp.StatusCode, b)
	}()
	return out
}

func TestBinaryReloadAndStop(t *testing.T) {
	a, b := origin(t, "a"), origin(t, "b")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "edge.hcl")
	writeConfig(t, cfg, a.Addr, "")
	e := edgetest.Start(t, cfg, "TEST_ADMIN_TOKEN="+testToken)

	if code, body := get(t, "http://"+e.Addr+"/x"); code != 200 || body != "a" {
		t.Fatalf("GET = %d %q", code, body)
	}
	if code, body := get(t, "http://"+e.AdminAddr+"/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("healthz = %d %q", code, body)
	}

	// SIGHUP with a request in flight: it finishes on the old config.
	slow := inflight(e.Addr)
	time.Sleep(100 * time.Millisecond) // the request must be at the origin before the reload
	writeConfig(t, cfg, b.Addr, "")
	e.Signal(t, syscall.SIGHUP)
	e.WaitLog(t, "config reloaded", 5*time.Second)
	if got := <-slow; got != "200 a" {
		t.Errorf("in-flight request across SIGHUP = %q, want 200 a", got)
	}
	if code, body := get(t, "http://"+e.Addr+"/x"); code != 200 || body != "b" {
		t.Errorf("after SIGHUP GET = %d %q, want b", code, body)
	}

	// POST /reload: token required; a bad file keeps the running config.
	if code, body := adminPost(t, e, "/reload", ""); code != 401 || body["error"] != "unauthorized" {
		t.Errorf("reload without token = %d %v", code, body)
	}
	os.WriteFile(cfg, []byte("listen = \"127.0.0.1:0\"\nroute \"r\" {\n  upstream = \"gone\"\n}\n"), 0o644)
	code, body := adminPost(t, e, "/reload", testToken)
	if code != 400 || body["ok"] != false || !strings.HasPrefix(fmt.Sprint(body["error"]), cfg+":2,1: ") {
		t.Errorf("bad reload = %d %v, want 400 with %s:2,1", code, body, cfg)
	}
	if code, body := get(t, "http://"+e.Addr+"/x"); code != 200 || body != "b" {
		t.Errorf("after bad reload GET = %d %q, want the old config's b", code, body)
	}
	if _, metrics := get(t, "http://"+e.AdminAddr+"/metrics"); !strings.Contains(metrics, "edge_config_last_reload_successful 0") ||
		!strings.Contains(metrics, `edge_config_reloads_total{result="failure"} 1`) {
		t.Errorf("metrics after failed reload:\n%s", grep(metrics, "edge_config"))
	}
	writeConfig(t, cfg, a.Addr, "")
	if code, body := adminPost(t, e, "/reload", testToken); code != 200 || body["ok"] != true || body["version"] != 3.0 {
		t.Errorf("good reload = %d %v, want 200 version 3", code, body)
	}
	if code, body := get(t, "http://"+e.Addr+"/x"); code != 200 || body != "a" {
		t.Errorf("after reload GET = %d %q", code, body)
	}
	// A listen change is refused with a clear message.
	src, _ := os.ReadFile(cfg)
	os.WriteFile(cfg, []byte(strings.Replace(string(src), `listen = "127.0.0.1:0"`, `listen = "127.0.0.1:1"`, 1)), 0o644)
	if code, body := adminPost(t, e, "/reload", testToken); code != 400 || !strings.Contains(fmt.Sprint(body["error"]), "listen changed") {
		t.Errorf("listen change = %d %v", code, body)
	}

	// SIGTERM with a request in flight: it finishes, then edge exits 0.
	slow = inflight(e.Addr)
	time.Sleep(100 * time.Millisecond)
	e.Signal(t, syscall.SIGTERM)
	if got := <-slow; got != "200 a" {
		t.Errorf("in-flight request across SIGTERM = %q, want 200 a", got)
	}
	if code := e.Wait(t, 10*time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0\n%s", code, e.Log())
	}
	if _, err := http.Get("http://" + e.Addr + "/x"); err == nil {
		t.Errorf("edge still accepts after stopping")
	}
	if lines := strings.Count(e.Stdout(), "\n"); lines < 6 || !strings.Contains(e.Stdout(), `"uri":"/slow","status":200`) {
		t.Errorf("access log has %d lines, want one per request:\n%s", lines, e.Stdout())
	}
}

func TestRefusesOpenAdmin(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "edge.hcl")
	os.WriteFile(cfg, []byte("admin {\n  listen = \"0.0.0.0:0\"\n}\n"), 0o644)
	out, code := runEdge(t, "-check", "-config", cfg)
	if code != 1 || !strings.Contains(out, "needs a token") {
		t.Errorf("non-loopback admin without token: %d %q", code, out)
	}
}

// workers sets GOMAXPROCS: a fixed count, or by default (0) the workers controller,
// which starts at one slot per CPU; a GOMAXPROCS in the environment wins. edge_workers
// and edge_workers_auto say which.
func TestWorkers(t *testing.T) {
	o := origin(t, "a")
	t.Setenv("GOMAXPROCS", "")
	os.Unsetenv("GOMAXPROCS")
	f := func(extra string, env []string, want int, auto bool) {
		t.Helper()
		cfg := filepath.Join(t.TempDir(), "edge.hcl")
		writeConfig(t, cfg, o.Addr, extra)
		e := edgetest.Start(t, cfg, append([]string{"TEST_ADMIN_TOKEN=" + testToken}, env...)...)
		if line := fmt.Sprintf(" workers_auto=%v workers=%d\n", auto, want); !strings.Contains(e.Log(), line) {
			t.Errorf("workers %q env %v: want%s in\n%s", extra, env, line, e.Log())
		}
		if n := workersMetric(t, e, "edge_workers_auto"); n != map[bool]int{true: 1}[auto] {
			t.Errorf("workers %q env %v: edge_workers_auto %d", extra, env, n)
		}
	}
	f("workers = 3\n", nil, 3, false)
	f("", nil, runtime.GOMAXPROCS(0), true)
	f("workers = 3\n", []string{"GOMAXPROCS=1"}, 1, false)
}

// workersMetric reads a gauge of the workers controller from edge's /metrics.
func workersMetric(t *testing.T, e *edgetest.Edge, name string) int {
	t.Helper()
	_, body := e.Admin(t, "", "GET", "/metrics", "")
	m := regexp.MustCompile(`(?m)^` + name + ` (\d+)$`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no %s in /metrics", name)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// With workers at 0, the controller steers: from a count set before (7, by a reload
// from a fixed config), answering locally or forwarding brings it to at most one slot
// per CPU; a reload to a fixed count stops the steering.
func TestWorkersAuto(t *testing.T) {
	o := origin(t, "a")
	t.Setenv("GOMAXPROCS", "")
	os.Unsetenv("GOMAXPROCS")
	cfg := filepath.Join(t.TempDir(), "edge.hcl")
	src := `
listen = "127.0.0.1:0"
state_dir = "state"
admin {
  listen = "127.0.0.1:0"
  token  = env("TEST_ADMIN_TOKEN")
}
upstream "app" {
  servers = ["` + o.Addr + `"]
}
route "local" {
  match { path = "/local" }
  respond {
    status = 200
    body   = "here"
  }
}
route "app" {
  match { path = "/" }
  upstream = "app"
}
`
	edgetest.WriteConfig(t, cfg, src)
	e := edgetest.Start(t, cfg, "TEST_ADMIN_TOKEN="+testToken)
	cpus := runtime.GOMAXPROCS(0)

	// load sends requests to path from 8 keep-alive clients until the gauge satisfies ok
	// or d has passed, and returns the gauge's last value.
	load := func(path, want string, d time.Duration, ok func(int) bool) int {
		t.Helper()
		stop := make(chan struct{})
		done := make(chan struct{})
		for range 8 {
			go func() {
				defer func() { done <- struct{}{} }()
				c := &http.Client{}
				for {
					select {
					case <-stop:
						return
					default:
					}
					resp, err := c.Get("http://" + e.Addr + path)
					if err != nil {
						t.Errorf("GET %s: %v", path, err)
						return
					}
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 || string(b) != want {
						t.Errorf("GET %s: %d %q", path, resp.StatusCode, b)
						return
					}
				}
			}()
		}
		defer func() {
			close(stop)
			for range 8 {
				<-done
			}
		}()
		n := 0
		for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
			if n = workersMetric(t, e, "edge_workers"); ok(n) {
				break
			}
		}
		return n
	}
	reload := func(workers string) {
		t.Helper()
		edgetest.WriteConfig(t, cfg, workers+src)
		if code, body := e.Admin(t, testToken, "POST", "/reload", ""); code != 200 {
			t.Fatalf("reload with %q: %d %s", workers, code, body)
		}
	}
	reload("workers = 7\n")
	if n := workersMetric(t, e, "edge_workers"); n != 7 {
		t.Fatalf("workers = 7: edge_workers %d", n)
	}
	reload("")
	if n := load("/local", "here", 10*time.Second, func(n int) bool { return n <= cpus }); n > cpus || n < 1 {
		t.Errorf("answering locally from 7 slots: edge_workers %d, want 1..%d", n, cpus)
	}
	reload("workers = 7\n")
	reload("")
	if n := load("/x", "a", 10*time.Second, func(n int) bool { return n <= cpus }); n > cpus || n < 1 {
		t.Errorf("forwarding from 7 slots: edge_workers %d, want 1..%d", n, cpus)
	}
	if !strings.Contains(e.Log(), `msg="workers changed" from=7`) {
		t.Errorf("no workers change logged:\n%s", e.Log())
	}

	reload("workers = 3\n")
	// Six controller intervals of local answers: a steering controller would have moved.
	if n := load("/local", "here", 3*time.Second, func(n int) bool { return n != 3 }); n != 3 {
		t.Errorf("workers = 3 after reload, under local load: edge_workers %d", n)
	}
	if n := workersMetric(t, e, "edge_workers_auto"); n != 0 {
		t.Errorf("edge_workers_auto %d with workers = 3", n)
	}
}
