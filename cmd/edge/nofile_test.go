package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/edge-gw/edge/internal/edgetest"
)

// A config whose max_conns cannot be reached under the descriptor limit edge runs
// with is served, with a warning that names both numbers; one that fits says nothing.
func TestBinaryWarnsWhenMaxConnsExceedsNOFILE(t *testing.T) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	// The child inherits this process's limit, which the Go runtime raised to the
	// hard one as it will in edge.
	o := origin(t, "o")
	f := func(maxConns int, warn bool) {
		t.Helper()
		cfg := filepath.Join(t.TempDir(), "edge.hcl")
		writeConfig(t, cfg, o.Addr, fmt.Sprintf("max_conns = %d\n", maxConns))
		e := edgetest.Start(t, cfg, "TEST_ADMIN_TOKEN="+testToken)
		if code, body := get(t, "http://"+e.Addr+"/x"); code != 200 || body != "o" {
			t.Errorf("max_conns %d: GET answered %d %q", maxConns, code, body)
		}
		line := grep(e.Log(), "descriptor limit")
		if got := line != ""; got != warn {
			t.Errorf("max_conns %d under nofile %d: warning %q, want one: %v", maxConns, lim.Cur, line, warn)
		}
		if warn && !strings.Contains(line, fmt.Sprintf("nofile=%d", lim.Cur)) {
			t.Errorf("the warning does not name the limit %d: %s", lim.Cur, line)
		}
	}
	f(int(lim.Cur), true)
	f(100, false)
}
