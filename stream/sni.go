package stream

import (
	"errors"
	"fmt"
	"strings"
)

// SNIRoute is one sni block of a stream: connections whose server name matches
// Pattern go to Target (an upstream's name, or whatever the caller routes to).
type SNIRoute struct {
	// Pattern is a host name ("api.shop.example.com") or a wildcard that stands for
	// exactly one label before a host name ("*.shop.example.com" matches
	// "web.shop.example.com", not "shop.example.com" nor "a.b.shop.example.com").
	// Case does not matter.
	Pattern string
	// Target is what Pick returns for a match; not empty.
	Target string
}

// SNIRouter picks a target for a TLS server name. It is immutable: safe for
// concurrent use, and a reload builds a new one.
type SNIRouter struct {
	exact    map[string]string
	wildcard map[string]string // keyed by what follows "*."
	def      string
}

// NewSNIRouter builds a router from routes and a default target for a connection
// without a server name or with one no route matches ("": none, Pick says no). It
// rejects, all at once, each pattern that is neither a host name nor "*." before one,
// a pattern given twice (in any case) and an empty target; each error names its
// pattern.
func NewSNIRouter(routes []SNIRoute, def string) (*SNIRouter, error) {
	r := &SNIRouter{exact: map[string]string{}, wildcard: map[string]string{}, def: def}
	var errs []error
	seen := map[string]string{} // lowercased pattern → as given
	for _, rt := range routes {
		p := strings.ToLower(rt.Pattern)
		host, wild := strings.CutPrefix(p, "*.")
		if err := checkHost([]byte(host)); err != nil {
			what := "a host name"
			if wild {
				what = "a host name after \"*.\""
			} else if strings.Contains(p, "*") {
				what = "a host name, or \"*.\" and a host name"
			}
			errs = append(errs, fmt.Errorf("stream: sni pattern %q: not %s: %v", rt.Pattern, what, err))
			continue
		}
		if first, dup := seen[p]; dup {
			errs = append(errs, fmt.Errorf("stream: sni pattern %q: given twice (also as %q)", rt.Pattern, first))
			continue
		}
		seen[p] = rt.Pattern
		if rt.Target == "" {
			errs = append(errs, fmt.Errorf("stream: sni pattern %q: empty target", rt.Pattern))
			continue
		}
		if wild {
			r.wildcard[host] = rt.Target
		} else {
			r.exact[host] = rt.Target
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return r, nil
}

// Pick returns the target for the server name name, as PeekServerName returns it
// (lowercase; "" for none): the exact pattern's, else the wildcard's that matches its
// first label, else the default; ok is false when there is none of those. It
// allocates nothing for a lowercase name.
func (r *SNIRouter) Pick(name string) (target string, ok bool) {
	if name != "" {
		if hasUpper(name) {
			name = strings.ToLower(name)
		}
		if t, ok := r.exact[name]; ok {
			return t, true
		}
		if i := strings.IndexByte(name, '.'); i > 0 {
			if t, ok := r.wildcard[name[i+1:]]; ok {
				return t, true
			}
		}
	}
	return r.def, r.def != ""
}

func hasUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			return true
		}
	}
	return false
}
