// Package edgetest builds the edge binary and runs it as a child process for
// tests: start, find its ports in its log, signal it, read its output.
package edgetest

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// Binary builds ./cmd/edge once per test process and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..")
		dir, err := os.MkdirTemp("", "edgetest")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "edge")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/edge")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/edge: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// Edge is a running edge process.
type Edge struct {
	Addr      string // public listener, from the log
	AdminAddr string // admin listener, from the log
	Cmd       *exec.Cmd

	mu     sync.Mutex
	log    bytes.Buffer // stderr
	stdout bytes.Buffer
	exited chan struct{}
	err    error
}

var listening = regexp.MustCompile(`msg="edge listening" addr=(\S+) admin=(\S+)`)

// Start runs edge -config cfgPath with extra environment entries ("K=V") and waits
// until it listens. The process is killed when the test ends.
func Start(t testing.TB, cfgPath string, env ...string) *Edge {
	t.Helper()
	e := &Edge{exited: make(chan struct{})}
	e.Cmd = exec.Command(Binary(t), "-config", cfgPath)
	e.Cmd.Dir = filepath.Dir(cfgPath)
	e.Cmd.Env = append(os.Environ(), env...)
	// A pipe of our own rather than StderrPipe: Wait closes that one when edge exits,
	// while a process an upgrade started writes to the same stderr after it.
	stderr, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	e.Cmd.Stderr = w
	// stdout too: Wait would otherwise wait for every writer of a pipe it made, the new
	// process of an upgrade included.
	stdout, wo, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	e.Cmd.Stdout = wo
	if err := e.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	wo.Close()
	go io.Copy(&lockedWriter{mu: &e.mu, w: &e.stdout}, stdout)
	found := make(chan [2]string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			e.mu.Lock()
			e.log.WriteString(line + "\n")
			e.mu.Unlock()
			if m := listening.FindStringSubmatch(line); m != nil {
				select {
				case found <- [2]string{m[1], m[2]}:
				default: // a later process (an upgrade) listening on the same addresses
				}
			}
		}
	}()
	go func() {
		e.err = e.Cmd.Wait()
		close(e.exited)
	}()
	t.Cleanup(func() {
		e.Cmd.Process.Kill()
		<-e.exited
		stderr.Close()
		stdout.Close()
	})
	select {
	case addrs := <-found:
		e.Addr, e.AdminAddr = addrs[0], addrs[1]
	case <-e.exited:
		t.Fatalf("edge exited before listening: %v\n%s", e.err, e.Log())
	case <-time.After(20 * time.Second):
		t.Fatalf("edge did not listen within 20s\n%s", e.Log())
	}
	return e
}

// Log returns what edge wrote to stderr so far.
func (e *Edge) Log() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.log.String()
}

// Stdout returns what edge wrote to stdout so far (the access log by default).
func (e *Edge) Stdout() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.stdout.String()
}

// Signal sends sig to the process.
func (e *Edge) Signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	if err := e.Cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v: %v", sig, err)
	}
}

// Wait waits for the process to exit and returns its exit code.
func (e *Edge) Wait(t testing.TB, timeout time.Duration) int {
	t.Helper()
	select {
	case <-e.exited:
	case <-time.After(timeout):
		t.Fatalf("edge did not exit within %v\n%s", timeout, e.Log())
	}
	return e.Cmd.ProcessState.ExitCode()
}

// WaitLog polls the log until it contains s.
func (e *Edge) WaitLog(t testing.TB, s string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(e.Log(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("log never said %q:\n%s", s, e.Log())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// WriteConfig writes src to path, failing the test when it cannot.
func WriteConfig(t testing.TB, path, src string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Do sends method url with body and the given header name/value pairs, and
// returns the response (its body read and closed) and the body. A client error
// fails the test.
func Do(t testing.TB, method, url, body string, headers ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// Bearer returns the Authorization header pair for token, or none for "".
func Bearer(token string) []string {
	if token == "" {
		return nil
	}
	return []string{"Authorization", "Bearer " + token}
}

// Admin sends a request to the admin listener with token ("": none) and returns
// the status and the body as sent.
func (e *Edge) Admin(t testing.TB, token, method, path, body string) (int, string) {
	t.Helper()
	resp, out := Do(t, method, "http://"+e.AdminAddr+path, body, Bearer(token)...)
	return resp.StatusCode, out
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
