package config

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/zclconf/go-cty/cty"
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

// FuzzKeyPart: key expressions never panic, a parsed one has a known kind, names are
// HTTP tokens, and writing the part back in its canonical form parses to the same part.
func FuzzKeyPart(f *testing.F) {
	for _, s := range []string{"ip", "host", "header:X-User-Id", "cookie:sid", "query:q", "path:2", "const:x", "path:99", "header:",
		"path:+2", "path:002", "const:a:b", "header:a b", "ip:", "Host"} {
		f.Add(s)
	}
	names := map[KeyKind]string{KeyHeader: "header", KeyCookie: "cookie", KeyQuery: "query", KeyConst: "const"}
	f.Fuzz(func(t *testing.T, s string) {
		k, err := ParseKeyPart(s)
		if err != nil {
			return
		}
		var canon string
		switch k.Kind {
		case KeyIP:
			canon = "ip"
		case KeyHost:
			canon = "host"
		case KeyPath:
			if k.N < 1 || k.N > 64 {
				t.Fatalf("ParseKeyPart(%q) = segment %d", s, k.N)
			}
			canon = fmt.Sprintf("path:%d", k.N)
		case KeyHeader, KeyCookie, KeyQuery, KeyConst:
			if k.Kind != KeyConst && !isToken(k.Name) || k.Name == "" {
				t.Fatalf("ParseKeyPart(%q) = name %q", s, k.Name)
			}
			canon = names[k.Kind] + ":" + k.Name
		default:
			t.Fatalf("ParseKeyPart(%q) = kind %d without error", s, k.Kind)
		}
		if again, err := ParseKeyPart(canon); err != nil || again != k {
			t.Fatalf("%q parsed to %+v, written back as %q: %+v, %v", s, k, canon, again, err)
		}
	})
}

// FuzzParsePrefix: CIDR parsing never panics and yields masked, unmapped prefixes
// without zones that print back to themselves.
func FuzzParsePrefix(f *testing.F) {
	for _, s := range []string{"10.0.0.0/8", "1.2.3.4", "::1", "2001:db8::/32", "::ffff:1.2.3.4", "1.2.3.4/33", "::ffff:10.0.0.0/100", "fe80::1%eth0", "1.2.3.4/08"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePrefix(s)
		if err != nil {
			return
		}
		if p != p.Masked() || p.Addr().Is4In6() || p.Addr().Zone() != "" {
			t.Fatalf("ParsePrefix(%q) = %v, not masked and unmapped", s, p)
		}
		if again, err := ParsePrefix(p.String()); err != nil || again != p {
			t.Fatalf("ParsePrefix(%q) = %v, which reads back as %v, %v", s, p, again, err)
		}
	})
}

// valueSlots are the places FuzzValue writes its string into a valid config, one per
// kind of value, each on a line of its own, with the unit parser that must agree with
// the config's reading of it and the field that reading lands in.
var valueSlots = []struct {
	name, valid string
	unit        func(string) (any, error)
	got         func(*Config) any
}{
	{"timeout", `"2s"`, func(s string) (any, error) {
		d, err := time.ParseDuration(s)
		if err == nil && d <= 0 {
			err = errors.New("not positive")
		}
		return d, err
	}, func(c *Config) any { return c.Upstreams[0].Timeout }},
	{"max_body_size", `"1MB"`, func(s string) (any, error) { return ParseSize(s) },
		func(c *Config) any { return c.Routes[0].MaxBodySize }},
	{"rate", `"10r/s"`, func(s string) (any, error) { r, err := ParseRate(s); return r, err },
		func(c *Config) any { return c.Routes[0].Limits[0].Rate }},
	{"key", `"ip"`, func(s string) (any, error) {
		p, err := ParseKeyPart(s)
		return Key{Parts: []KeyPart{p}, Text: s}, err
	}, func(c *Config) any { return c.Routes[0].Limits[0].Key }},
	{"trusted_proxies", `["127.0.0.1/32"]`, func(s string) (any, error) {
		p, err := ParsePrefix(s)
		return []netip.Prefix{p}, err
	}, func(c *Config) any { return c.TrustedProxies }},
}

// valueConfig is a valid config with one line per entry of valueSlots, in order, from
// line 2 on; vals holds the right-hand sides.
func valueConfig(vals []string) []byte {
	return fmt.Appendf(nil, `listen = "127.0.0.1:8080"
trusted_proxies = %s
upstream "u" {
  timeout = %s
  servers = ["127.0.0.1:9001"]
}
route "r" {
  max_body_size = %s
  match { path = "/" }
  upstream = "u"
  limit "l" {
    rate = %s
    key = %s
  }
}
`, vals[4], vals[0], vals[1], vals[2], vals[3])
}

// valueLines are the lines of valueConfig that hold each slot's value.
var valueLines = []int{4, 8, 12, 13, 2}

// hclString writes s as an HCL quoted string whose value is s: quotes, backslashes
// and control characters escaped, and the "${" and "%{" that would start a template
// doubled.
func hclString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\u%04x`, r)
		case (r == '$' || r == '%') && strings.HasPrefix(s[i+1:], "{"):
			b.WriteRune(r)
			b.WriteRune(r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// FuzzValue writes any string as one value of a valid config file (a duration, a size,
// a rate, a key expression, a trusted_proxies entry) and checks that the config agrees
// with the value's own parser: it loads exactly when that parser accepts the string,
// with the same result, and otherwise every problem it reports points at the value's
// line.
func FuzzValue(f *testing.F) {
	for _, s := range []string{"250ms", "1h30m", "-5s", "0s", "16KB", "8 mb", "0", "9223372036854775807",
		"100r/s", "6r/m", "10r/h", "0.5r/s", "NaNr/s", "5e-324r/h", "Infr/s", "ip", "header:X-User-Id",
		"path:2", "const:a b", "cookie:", "10.0.0.0/8", "::ffff:10.0.0.1/104", "fe80::1%eth0", "${x}", `a"b\`} {
		for slot := range valueSlots {
			f.Add(uint8(slot), s)
		}
	}
	f.Fuzz(func(t *testing.T, slot uint8, s string) {
		if !utf8.ValidString(s) || cty.StringVal(s).AsString() != s {
			return // HCL reads UTF-8 only and normalizes strings to NFC
		}
		i := int(slot) % len(valueSlots)
		sl := valueSlots[i]
		vals := make([]string, len(valueSlots))
		for j := range valueSlots {
			vals[j] = valueSlots[j].valid
		}
		vals[i] = hclString(s)
		if i == 4 {
			vals[i] = "[" + vals[i] + "]"
		}
		want, uerr := sl.unit(s)
		cfg, err := Parse("fuzz.hcl", valueConfig(vals), testEnv)
		switch {
		case uerr == nil && err != nil:
			t.Fatalf("%s = %q: the parser accepts it, the config does not: %v", sl.name, s, err)
		case uerr != nil && err == nil:
			t.Fatalf("%s = %q: the parser says %v, the config loads", sl.name, s, uerr)
		case err == nil:
			checkValue(t, sl.name, s, want)
			if got := sl.got(cfg); !reflect.DeepEqual(got, want) {
				t.Fatalf("%s = %q: config has %#v, the parser %#v", sl.name, s, got, want)
			}
		default:
			var ps Problems
			if !errors.As(err, &ps) {
				t.Fatalf("error is not Problems: %v", err)
			}
			for _, p := range ps {
				if p.Range.Start.Line != valueLines[i] {
					t.Fatalf("%s = %q: problem on line %d, the value is on line %d: %s", sl.name, s, p.Range.Start.Line, valueLines[i], p)
				}
			}
		}
	})
}

// checkValue asserts what any accepted value of each kind must be.
func checkValue(t *testing.T, name, s string, v any) {
	switch v := v.(type) {
	case int64:
		if v <= 0 || v > 1<<50 {
			t.Fatalf("%s %q = %d bytes", name, s, v)
		}
	case Rate:
		if !(v.PerSecond > 0) || math.IsInf(v.PerSecond, 0) || v.PerSecond > 1e9 {
			t.Fatalf("%s %q = %v per second", name, s, v.PerSecond)
		}
	}
}
