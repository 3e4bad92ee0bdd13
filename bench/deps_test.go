package main

import (
	"os/exec"
	"strings"
	"testing"
)

// bench is a black box: it may build the edge binary, never link edge's packages.
func TestImportsNoEdgePackage(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v: %s", err, out)
	}
	for _, p := range strings.Fields(string(out)) {
		if strings.HasPrefix(p, "github.com/edge-gw/edge/") && p != "github.com/edge-gw/edge/bench" {
			t.Errorf("bench imports %s: it must talk HTTP to edge only", p)
		}
	}
}
