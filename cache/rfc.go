package cache

import (
	"bytes"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/valyala/fasthttp"
)

// Freshness rules added for issue 27: targeted cache control (RFC 9213), strict Expires
// and Age (RFC 9111 §5.1, §5.3) and the statuses RFC 9110 §15.1 lets a cache give
// heuristic freshness.

// MaxTargeted is the most targeted field names (Rule.Targeted) a route may list.
const MaxTargeted = 4

// DefaultTargeted is the targeted field edge obeys unless the route lists its own.
var DefaultTargeted = []string{"CDN-Cache-Control"}

// targetedControls collects the values of the fields on a route's target list, in list
// order, without allocating.
type targetedControls struct {
	cc  [MaxTargeted]CacheControl
	has [MaxTargeted]bool
}

// add parses header k: v into its slot when k is on the target list.
func (t *targetedControls) add(list []string, k, v []byte) {
	for i, name := range list {
		if i == MaxTargeted {
			return
		}
		if len(k) == len(name) && bytes.EqualFold(k, s2b(name)) {
			if !t.has[i] {
				t.cc[i].Reset()
				t.has[i] = true
			}
			t.cc[i].Parse(v)
			return
		}
	}
}

// chosen is the first field on the list that was present with a directive edge knows
// (RFC 9213 §2.1: the first field with a valid value), or nil.
func (t *targetedControls) chosen() *CacheControl {
	var absent CacheControl
	absent.Reset()
	for i := range t.cc {
		if t.has[i] && t.cc[i] != absent {
			return &t.cc[i]
		}
	}
	return nil
}

// IsTargeted reports whether header name k is on the rule's target list, so that it is
// neither stored nor shown to clients (unless Rule.KeepTargeted).
func (r *Rule) IsTargeted(k []byte) bool {
	for _, name := range r.Targeted {
		if len(k) == len(name) && bytes.EqualFold(k, s2b(name)) {
			return true
		}
	}
	return false
}

// StripTargeted removes the rule's targeted fields from a response going to the client,
// unless Rule.KeepTargeted.
func (r *Rule) StripTargeted(h *fasthttp.ResponseHeader) {
	if r.KeepTargeted {
		return
	}
	for _, name := range r.Targeted {
		h.Del(name)
	}
}

// parseHTTPDate parses an HTTP-date: an IMF-fixdate or one of the two obsolete formats
// RFC 9110 §5.6.7 says a recipient must accept (RFC 850 and asctime), always in GMT.
// Anything else (a number, another zone, trailing text) is not a date.
func parseHTTPDate(b []byte) (time.Time, bool) {
	if len(b) == 0 {
		return time.Time{}, false
	}
	t, err := fasthttp.ParseHTTPDate(b) // IMF-fixdate fast, else net/http's three layouts
	if err != nil {
		return time.Time{}, false
	}
	// net/http accepts any zone name in the RFC 850 form ("Sunday, 06-Nov-94 … PST").
	if bytes.IndexByte(b, '-') >= 0 && !bytes.HasSuffix(b, []byte(" GMT")) {
		return time.Time{}, false
	}
	return t, true
}

// parseAge parses an Age value: one non-negative integer of delta-seconds (capped at
// 2^31), nothing else.
func parseAge(b []byte) (int64, bool) {
	b = trimRightOWS(trimLeftOWS(b))
	if len(b) == 0 {
		return 0, false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	return parseDelta(b, true), true
}

// heuristicStatus reports whether RFC 9110 §15.1 marks status heuristically cacheable:
// only these may be stored without explicit freshness (under the route's ttl).
func heuristicStatus(status int) bool {
	switch status {
	case 200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501:
		return true
	}
	return false
}

// InvalidateURI invalidates, in O(1) and without allocating, the entries stored for
// exactly this request URI (path and query; an absolute URI is reduced to them) on every
// host and method: what RFC 9111 §4.4 asks after an unsafe request. Unlike PurgeURL, a
// URI without a query does not reach the same path with a query.
func (c *Cache) InvalidateURI(uri []byte) {
	c.bump(slotOf(xxhash.Sum64(originForm(uri)), saltURI))
}
