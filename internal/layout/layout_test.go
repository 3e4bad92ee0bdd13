package layout

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/edge-gw/edge"

// allowed lists, per package, the edge packages it may import directly. A package
// not listed is a leaf: it may import no edge package at all.
var allowed = map[string][]string{
	"cmd/edge":        {"proxy", "config", "admin", "cluster", "workers", "listener", "tlsstore", "h2", "h3", "stream", "shard", "acme", "handover", "admin/status"},
	"listener":        {"h2", "h3", "rawsock", "tlsstore", "watchdog", "proxyproto", "handover"},
	"stream":          {"proxyproto", "shard", "tunnel", "handover"},
	"proxy":           {"config", "admin", "limiter", "cache", "shard", "blacklist", "seckill", "cluster", "breaker", "idempotency", "watchdog", "rawsock", "tunnel", "h2up", "waitroom", "proxyproto", "compress", "keepdate"},
	"h3":              {"h2"},       // h2.SkipResponseHeader: one list of connection-specific fields
	"cache":           {"keepdate"}, // stored answers go out with their own Date
	"bench":           {},
	"internal/layout": {},
}

func TestImportDirection(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}} {{join .Imports " "}}`, module+"/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg := strings.TrimPrefix(strings.TrimPrefix(fields[0], module), "/")
		for _, imp := range fields[1:] {
			if !strings.HasPrefix(imp, module+"/") {
				continue
			}
			dep := strings.TrimPrefix(imp, module+"/")
			if !contains(allowed[pkg], dep) {
				t.Errorf("%s imports %s: not allowed (see DESIGN.md: leaves import no edge package)", pkg, dep)
			}
		}
	}
}

// No package named util, common or helpers.
func TestNoGrabBagPackages(t *testing.T) {
	out, err := exec.Command("go", "list", module+"/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, p := range strings.Fields(string(out)) {
		base := p[strings.LastIndex(p, "/")+1:]
		if base == "util" || base == "utils" || base == "common" || base == "helpers" {
			t.Errorf("package %s: name says nothing; name it for what it does", p)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
