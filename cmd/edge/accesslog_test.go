package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/edge-gw/edge/internal/edgetest"
)

// logrotate under load: the log file is moved away and edge gets SIGUSR1 in the middle
// of a run; every request of the run is a line in the old file or the new one, none
// lost, none split.
func TestBinaryAccessLogRotation(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, "access.log")
	cfg := filepath.Join(dir, "edge.hcl")
	edgetest.WriteConfig(t, cfg, fmt.Sprintf(`
listen = "127.0.0.1:0"
admin {
  listen = "127.0.0.1:0"
}
access_log {
  path   = %q
  format = "combined"
  buffer = 200000 # a line dropped because the writer fell behind would look like a lost one
}
route "hello" {
  match { path = "/" }
  respond {
    status = 200
    body   = "hello"
  }
}
`, logPath))
	e := edgetest.Start(t, cfg)
	stop := load(e.Addr, 8)
	time.Sleep(time.Second)
	if err := os.Rename(logPath, logPath+".1"); err != nil {
		t.Fatal(err)
	}
	e.Signal(t, syscall.SIGUSR1)
	time.Sleep(time.Second)
	res := stop()
	n := res.ok
	count := func() (old, cur int64) {
		a, _ := os.ReadFile(logPath + ".1")
		b, _ := os.ReadFile(logPath)
		return int64(bytes.Count(a, []byte("\n"))), int64(bytes.Count(b, []byte("\n")))
	}
	waitUntil(t, "every request in the logs", func() bool { o, c := count(); return o+c >= n })
	time.Sleep(1500 * time.Millisecond) // the writer flushes every second: nothing more must come
	old, cur := count()
	t.Logf("%d requests (%d failed): %d lines in the rotated file, %d in the new one", n, res.failed, old, cur)
	if old+cur != n || old == 0 || cur == 0 || res.failed != 0 {
		t.Errorf("%d requests, %d failed (%s), %d + %d lines: want every request once, in both files", n, res.failed, res.last, old, cur)
	}
	for _, f := range []string{logPath + ".1", logPath} {
		b, _ := os.ReadFile(f)
		for i, line := range bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n")) {
			if !bytes.HasPrefix(line, []byte("127.0.0.1 - - [")) || !bytes.HasSuffix(line, []byte(`200 5 "-" "fasthttp"`)) {
				t.Fatalf("%s line %d is not a whole combined line: %q", f, i+1, line)
			}
		}
	}
	if !bytes.Contains([]byte(e.Log()), []byte("access log reopened")) {
		t.Error("edge did not log the reopen")
	}
}
