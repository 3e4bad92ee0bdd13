package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParse: any input either parses or yields Problems that each name a place in
// the file; nothing panics. Run with: go test -fuzz FuzzParse ./config
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*/*.hcl")
	for _, name := range files {
		src, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(src)
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		cfg, err := Parse("fuzz.hcl", src, testEnv)
		if err == nil {
			if cfg == nil || cfg.Listen == "" && len(cfg.Listeners) == 0 {
				t.Fatal("nil error without a config")
			}
			return
		}
		var ps Problems
		if !errors.As(err, &ps) || len(ps) == 0 {
			t.Fatalf("error is not Problems: %v", err)
		}
		for _, p := range ps {
			if !strings.HasPrefix(p.String(), "fuzz.hcl:") || p.Range.Start.Line < 1 {
				t.Fatalf("problem without a place: %q", p.String())
			}
		}
	})
}

// FuzzKeyPart: key expressions never panic, and a parsed one round-trips its kind.
func FuzzKeyPart(f *testing.F) {
	for _, s := range []string{"ip", "host", "header:X-User-Id", "cookie:sid", "query:q", "path:2", "const:x", "path:99", "header:"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		k, err := ParseKeyPart(s)
		if err == nil && (k.Kind < KeyIP || k.Kind > KeyConst) {
			t.Fatalf("ParseKeyPart(%q) = kind %d without error", s, k.Kind)
		}
	})
}

// FuzzParsePrefix: CIDR parsing never panics and yields masked prefixes.
func FuzzParsePrefix(f *testing.F) {
	for _, s := range []string{"10.0.0.0/8", "1.2.3.4", "::1", "2001:db8::/32", "::ffff:1.2.3.4", "1.2.3.4/33"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePrefix(s)
		if err == nil && p != p.Masked() {
			t.Fatalf("ParsePrefix(%q) = %v, not masked", s, p)
		}
	})
}
