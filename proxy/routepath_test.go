package proxy

import (
	"math/rand/v2"
	"testing"

	"github.com/valyala/fasthttp"
)

// For every target plainPath accepts, the path equals the one fasthttp's URI parser
// produces; targets that need normalizing are refused.
func TestPlainPathMatchesParser(t *testing.T) {
	parsed := func(target string) string {
		var req fasthttp.Request
		req.Header.SetHost("x")
		req.Header.SetRequestURI(target)
		return string(req.URI().Path())
	}
	check := func(target string) bool {
		p, ok := plainPath([]byte(target))
		if ok && string(p) != parsed(target) {
			t.Errorf("plainPath(%q) = %q, parser says %q", target, p, parsed(target))
		}
		return ok
	}
	for _, c := range []struct {
		target string
		plain  bool
	}{
		{"/", true}, {"/pass/x", true}, {"/item/42?x=1&y=/../z", true}, {"/a:b@c/~d_e-f.g", true},
		{"/a//b", false}, {"/a/./b", false}, {"/a/../b", false}, {"/a/..", false}, {"/.hidden", false},
		{"/a%2Fb", false}, {"/a%41", false}, {"/a b", false}, {"/a#f", false}, {`/a\b`, false},
		{"/caf\xc3\xa9", false}, {"http://h/a", false}, {"*", false}, {"", false},
	} {
		if got := check(c.target); got != c.plain {
			t.Errorf("plainPath(%q) ok = %v, want %v", c.target, got, c.plain)
		}
	}
	const alphabet = "ab/.%2F?#~:@ \\\x80+"
	r := rand.New(rand.NewPCG(1, 2))
	accepted := 0
	for range 20000 {
		b := []byte{'/'}
		for n := r.IntN(12); n > 0; n-- {
			b = append(b, alphabet[r.IntN(len(alphabet))])
		}
		if check(string(b)) {
			accepted++
		}
	}
	if accepted < 1000 {
		t.Errorf("only %d of 20000 random targets were plain; the comparison proves little", accepted)
	}
}

func TestMethodBit(t *testing.T) {
	bits := map[string]uint16{}
	for _, m := range []string{"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"} {
		b := methodBit([]byte(m))
		if b == 0 || b&(b-1) != 0 {
			t.Errorf("methodBit(%s) = %d, want a single bit", m, b)
		}
		for other, ob := range bits {
			if ob == b {
				t.Errorf("%s and %s share bit %d", m, other, b)
			}
		}
		bits[m] = b
	}
	for _, m := range []string{"", "get", "GETX", "PROPFIND"} {
		if got := methodBit([]byte(m)); got != 0 {
			t.Errorf("methodBit(%q) = %d, want 0", m, got)
		}
	}
}
