package config

import (
	"fmt"
	"strconv"
	"strings"
)

// ParseSize reads a byte size: a whole number with an optional unit KB, MB or GB
// (powers of 1024; "B" and lower case accepted), e.g. "16KB", "8MB", "4096".
func ParseSize(s string) (int64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"GB", 1 << 30}, {"MB", 1 << 20}, {"KB", 1 << 10}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}, {"B", 1}} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n <= 0 || n > (1<<50)/mult {
		return 0, fmt.Errorf("%q is not a size like \"16KB\", \"8MB\" or \"1GB\"", s)
	}
	return n * mult, nil
}

// Rate is a request rate, written nginx style: "<n>r/s", "<n>r/m" or "<n>r/h".
type Rate struct {
	PerSecond float64 // tokens added per second
	Text      string  // as written, for messages and metrics
}

// ParseRate reads "<n>r/s", "<n>r/m" or "<n>r/h"; n is a positive number.
func ParseRate(s string) (Rate, error) {
	bad := fmt.Errorf("%q is not a rate like \"100r/s\", \"6r/m\" or \"10r/h\"", s)
	num, unit, ok := strings.Cut(strings.TrimSpace(s), "r/")
	if !ok {
		return Rate{}, bad
	}
	n, err := strconv.ParseFloat(num, 64)
	if err != nil || !(n > 0) || n > 1e9 { // !(n > 0) also refuses NaN
		return Rate{}, bad
	}
	switch unit {
	case "s":
	case "m":
		n /= 60
	case "h":
		n /= 3600
	default:
		return Rate{}, bad
	}
	if n == 0 { // a denormal divided down to nothing: a bucket that never refills
		return Rate{}, bad
	}
	return Rate{PerSecond: n, Text: s}, nil
}

// KeyKind is the source of one part of a key expression.
type KeyKind uint8

// The key sources of SPEC.md.
const (
	KeyIP     KeyKind = iota + 1 // client address (after trusted_proxies)
	KeyHost                      // Host header
	KeyHeader                    // request header Name
	KeyCookie                    // cookie Name
	KeyQuery                     // query argument Name
	KeyPath                      // N-th path segment, 1-based
	KeyConst                     // fixed text: one shared bucket
)

// KeyPart is one element of a key expression.
type KeyPart struct {
	Kind KeyKind
	Name string // header, cookie or query name; constant text
	N    int    // path segment, 1-based
}

// Key is a parsed key expression; several parts are joined. The zero Key has no parts.
type Key struct {
	Parts []KeyPart
	Text  string // as written, joined with "+"
}

// IsZero reports whether no key was configured.
func (k Key) IsZero() bool { return len(k.Parts) == 0 }

// ParseKeyPart reads one key expression: ip, host, header:NAME, cookie:NAME, query:NAME,
// path:N or const:TEXT.
func ParseKeyPart(s string) (KeyPart, error) {
	kind, arg, hasArg := strings.Cut(s, ":")
	need := func(k KeyKind) (KeyPart, error) {
		if !hasArg || arg == "" {
			return KeyPart{}, fmt.Errorf("key %q needs a name: %s:NAME", s, kind)
		}
		if k != KeyConst && !isToken(arg) {
			return KeyPart{}, fmt.Errorf("key %q: %q is not a valid name", s, arg)
		}
		return KeyPart{Kind: k, Name: arg}, nil
	}
	switch kind {
	case "ip", "host":
		if hasArg {
			return KeyPart{}, fmt.Errorf("key %q: %s takes no argument", s, kind)
		}
		if kind == "ip" {
			return KeyPart{Kind: KeyIP}, nil
		}
		return KeyPart{Kind: KeyHost}, nil
	case "header":
		return need(KeyHeader)
	case "cookie":
		return need(KeyCookie)
	case "query":
		return need(KeyQuery)
	case "const":
		return need(KeyConst)
	case "path":
		n, err := strconv.Atoi(arg)
		if !hasArg || err != nil || n < 1 || n > 64 {
			return KeyPart{}, fmt.Errorf("key %q: path takes a segment number from 1 to 64, like path:2", s)
		}
		return KeyPart{Kind: KeyPath, N: n}, nil
	}
	return KeyPart{}, fmt.Errorf("unknown key %q; use ip, host, header:NAME, cookie:NAME, query:NAME, path:N or const:TEXT", s)
}

// isToken reports whether s is an HTTP token (RFC 9110), the form of header names.
func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			continue
		}
		if !strings.ContainsRune("!#$%&'*+-.^_`|~", rune(c)) {
			return false
		}
	}
	return s != ""
}
