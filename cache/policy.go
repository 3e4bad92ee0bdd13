package cache

import (
	"bytes"
	"errors"
	"time"

	"github.com/valyala/fasthttp"
)

// Reasons a request or response is not cached. They are sentinels: compare with errors.Is
// (or ==) and map them to a BYPASS answer or a metric label; none of them is an outage.
var (
	ErrMethod         = errors.New("cache: method is not GET or HEAD")
	ErrAuthorization  = errors.New("cache: request carries Authorization")
	ErrCookie         = errors.New("cache: request carries Cookie")
	ErrStatus         = errors.New("cache: response status is not cacheable")
	ErrNoStore        = errors.New("cache: response has Cache-Control no-store")
	ErrPrivate        = errors.New("cache: response has Cache-Control private")
	ErrSetCookie      = errors.New("cache: response sets a cookie")
	ErrVaryStar       = errors.New("cache: response has Vary: *")
	ErrNoFreshness    = errors.New("cache: response has no freshness, no stale window and no validator")
	ErrTooLarge       = errors.New("cache: response body exceeds max_entry")
	ErrHeadersTooBig  = errors.New("cache: response headers and key exceed the 64 KiB record limit")
	ErrTooManyTags    = errors.New("cache: response has more Surrogate-Key tags than MaxTags")
	ErrBodyStream     = errors.New("cache: response body is a stream")
	ErrNotFound       = errors.New("cache: no stored entry to renew")
	ErrValidatorMatch = errors.New("cache: 304 validators do not match the stored entry")
)

// DefaultStatuses are the response statuses cached when Rule.Statuses is nil.
var DefaultStatuses = []int{200, 203, 301, 404}

// MaxTags is the largest number of Surrogate-Key tags an entry may carry; a response with
// more is not cached (ErrTooManyTags) rather than cached with tags a purge would miss.
const MaxTags = 64

// Rule is the per-route cache policy. Build it once per config snapshot and share it
// read-only between goroutines; the cache never modifies or retains it beyond a call.
type Rule struct {
	// Route is the route name entries are stored under; PurgeRoute(Route) invalidates them.
	Route string
	// TTL is the freshness lifetime used when the origin gives none (no s-maxage, max-age or
	// Expires). Zero means such responses are not cached.
	TTL time.Duration
	// Stale is how long after expiry an entry may still be served (STALE) while one
	// background refresh runs, or while the origin fails. It overrides the origin's
	// stale-while-revalidate and stale-if-error; zero leaves stale serving to them.
	Stale time.Duration
	// Statuses lists cacheable response statuses; nil means DefaultStatuses.
	Statuses []int
	// AllowAuthorization caches requests carrying Authorization (the operator asserts the
	// answer is the same for every caller, or keys on the credential). Default false.
	AllowAuthorization bool
	// AllowCookie caches requests carrying Cookie. Default false.
	AllowCookie bool
	// Targeted lists targeted cache-control fields (RFC 9213), most preferred first, at
	// most MaxTargeted: the first present governs the cache instead of Cache-Control,
	// Surrogate-Control and Expires. nil means none; proxies pass DefaultTargeted.
	Targeted []string
	// KeepTargeted stores and forwards the targeted fields; by default they are consumed:
	// neither stored nor shown to clients.
	KeepTargeted bool
}

func (r *Rule) statusOK(code int) bool {
	s := r.Statuses
	if s == nil {
		s = DefaultStatuses
	}
	for _, c := range s {
		if c == code {
			return true
		}
	}
	return false
}

// CheckRequest reports whether req may be answered from, and stored into, the cache:
// nil, or ErrMethod, ErrAuthorization or ErrCookie. Request Cache-Control and Pragma are
// deliberately ignored (see the package doc). It does not allocate.
func (r *Rule) CheckRequest(req *fasthttp.RequestHeader) error {
	m := req.Method()
	if string(m) != fasthttp.MethodGet && string(m) != fasthttp.MethodHead {
		return ErrMethod
	}
	if !r.AllowAuthorization && len(req.Peek(fasthttp.HeaderAuthorization)) > 0 {
		return ErrAuthorization
	}
	if !r.AllowCookie && hasCookie(req) {
		return ErrCookie
	}
	return nil
}

func hasCookie(req *fasthttp.RequestHeader) bool {
	for range req.Cookies() {
		return true
	}
	return false
}

// CacheControl is the parsed form of Cache-Control (or Surrogate-Control) directives. The
// zero value is not "absent": use ParseCacheControl, which starts from Reset.
type CacheControl struct {
	// MaxAge and SMaxAge are delta-seconds; -1 when absent. An invalid value counts as 0
	// (RFC 9111 §4.2.1: treat as stale). The first occurrence of a directive wins.
	MaxAge, SMaxAge int64
	// StaleWhileRevalidate and StaleIfError are parsed for callers; -1 when absent.
	StaleWhileRevalidate, StaleIfError int64

	NoStore, NoCache, Private, Public, MustRevalidate, ProxyRevalidate bool
}

// Reset marks every directive absent.
func (cc *CacheControl) Reset() {
	*cc = CacheControl{MaxAge: -1, SMaxAge: -1, StaleWhileRevalidate: -1, StaleIfError: -1}
}

// maxDelta caps delta-seconds at 2^31 as RFC 9111 §1.2.2 says.
const maxDelta = 1 << 31

// Parse adds the directives of one Cache-Control field value to cc (call Reset first; call
// Parse once per field line to merge several lines). Directive names are case-insensitive;
// quoted arguments are accepted; unknown directives are ignored. It does not allocate.
func (cc *CacheControl) Parse(b []byte) {
	for len(b) > 0 {
		// One directive: name[=value], up to an unquoted comma.
		b = trimLeftOWS(b)
		i := 0
		for i < len(b) && b[i] != ',' && b[i] != '=' {
			i++
		}
		name := trimRightOWS(b[:i])
		var val []byte
		hasVal := false
		b = b[i:]
		if len(b) > 0 && b[0] == '=' {
			hasVal = true
			b = trimLeftOWS(b[1:])
			if len(b) > 0 && b[0] == '"' {
				j := 1
				for j < len(b) && b[j] != '"' {
					if b[j] == '\\' {
						j++
					}
					j++
				}
				if j > len(b) {
					j = len(b)
				}
				val = b[1:j]
				if j < len(b) {
					j++ // closing quote
				}
				b = b[j:]
				k := 0
				for k < len(b) && b[k] != ',' {
					k++
				}
				b = b[k:]
			} else {
				j := 0
				for j < len(b) && b[j] != ',' {
					j++
				}
				val = trimRightOWS(b[:j])
				b = b[j:]
			}
		}
		if len(b) > 0 && b[0] == ',' {
			b = b[1:]
		}
		cc.apply(name, val, hasVal)
	}
}

func (cc *CacheControl) apply(name, val []byte, hasVal bool) {
	switch {
	case bytes.EqualFold(name, strMaxAge):
		if cc.MaxAge < 0 {
			cc.MaxAge = parseDelta(val, hasVal)
		}
	case bytes.EqualFold(name, strSMaxAge):
		if cc.SMaxAge < 0 {
			cc.SMaxAge = parseDelta(val, hasVal)
		}
	case bytes.EqualFold(name, strNoStore):
		cc.NoStore = true
	case bytes.EqualFold(name, strNoCache):
		// A qualified no-cache="field" is treated like the unqualified form: stricter.
		cc.NoCache = true
	case bytes.EqualFold(name, strPrivate):
		cc.Private = true
	case bytes.EqualFold(name, strPublic):
		cc.Public = true
	case bytes.EqualFold(name, strMustRevalidate):
		cc.MustRevalidate = true
	case bytes.EqualFold(name, strProxyRevalidate):
		cc.ProxyRevalidate = true
	case bytes.EqualFold(name, strSWR):
		if cc.StaleWhileRevalidate < 0 {
			cc.StaleWhileRevalidate = parseDelta(val, hasVal)
		}
	case bytes.EqualFold(name, strSIE):
		if cc.StaleIfError < 0 {
			cc.StaleIfError = parseDelta(val, hasVal)
		}
	}
}

var (
	strMaxAge          = []byte("max-age")
	strSMaxAge         = []byte("s-maxage")
	strNoStore         = []byte("no-store")
	strNoCache         = []byte("no-cache")
	strPrivate         = []byte("private")
	strPublic          = []byte("public")
	strMustRevalidate  = []byte("must-revalidate")
	strProxyRevalidate = []byte("proxy-revalidate")
	strSWR             = []byte("stale-while-revalidate")
	strSIE             = []byte("stale-if-error")
)

// parseDelta parses delta-seconds; invalid or missing values are 0, large ones are capped.
func parseDelta(b []byte, hasVal bool) int64 {
	if !hasVal || len(b) == 0 {
		return 0
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0
		}
		if n < maxDelta {
			n = n*10 + int64(c-'0')
		}
	}
	if n > maxDelta {
		n = maxDelta
	}
	return n
}

func isOWS(c byte) bool { return c == ' ' || c == '\t' }

func trimLeftOWS(b []byte) []byte {
	for len(b) > 0 && isOWS(b[0]) {
		b = b[1:]
	}
	return b
}

func trimRightOWS(b []byte) []byte {
	for len(b) > 0 && isOWS(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	return b
}

// Freshness is the outcome of evaluating a response for storage.
type Freshness struct {
	// Lifetime is the freshness lifetime (targeted field > Surrogate-Control > s-maxage >
	// max-age > Expires−Date > Rule.TTL for a heuristically cacheable status).
	Lifetime time.Duration
	// Age is the age the response already had when received (its Age header).
	Age time.Duration
	// Stale is the window after expiry in which the entry may be served stale while one
	// background refresh runs (the route's stale, else the origin's stale-while-revalidate);
	// 0 when the origin said no-cache, must-revalidate or proxy-revalidate.
	Stale time.Duration
	// ErrorStale is the window after expiry in which an origin error (500, 502, 503, 504
	// or no answer) is replaced by the entry (the route's stale, else the origin's
	// stale-if-error, never shorter than Stale); 0 under the same directives as Stale.
	ErrorStale time.Duration
	// NoCache marks an entry that must be revalidated before every use.
	NoCache bool
	// Explicit is true when the origin gave the lifetime (not Rule.TTL).
	Explicit bool
}

// Evaluate decides whether a response (status and header) may be stored under r, and for
// how long. It follows RFC 9111's rules for a shared cache with the deviations in the
// package doc. A response with a validator (ETag, Last-Modified) is storable even with
// no freshness left, for revalidation. It does not allocate for well-formed headers (RFC
// 1123 dates); it runs on the miss path only.
func (r *Rule) Evaluate(status int, h *fasthttp.ResponseHeader, now time.Time) (f Freshness, err error) {
	if !r.statusOK(status) {
		return f, ErrStatus
	}
	var cc, sc CacheControl
	var tc targetedControls
	cc.Reset()
	sc.Reset()
	hasSC, setCookie, vary := false, false, false
	var expires, age []byte
	nExpires, nAge := 0, 0
	for k, v := range h.All() {
		switch {
		case bytes.EqualFold(k, strHCacheControl):
			cc.Parse(v)
		case bytes.EqualFold(k, strHSurrogateControl):
			sc.Parse(v)
			hasSC = true
		case bytes.EqualFold(k, strHSetCookie):
			setCookie = true
		case bytes.EqualFold(k, strHExpires):
			expires, nExpires = v, nExpires+1
		case bytes.EqualFold(k, strHAge):
			age, nAge = v, nAge+1
		case bytes.EqualFold(k, strHVary):
			vary = vary || varyStar(v) // "*" on any of the Vary lines
		default:
			tc.add(r.Targeted, k, v)
		}
	}
	// RFC 9213: the first targeted field on the route's list governs, and Cache-Control,
	// Expires and Surrogate-Control are then ignored.
	targeted := tc.chosen()
	if targeted != nil {
		cc, hasSC, nExpires = *targeted, false, 0
	}
	if cc.NoStore || (hasSC && sc.NoStore) {
		return f, ErrNoStore
	}
	if cc.Private {
		return f, ErrPrivate
	}
	if setCookie {
		return f, ErrSetCookie
	}
	if vary {
		return f, ErrVaryStar
	}
	switch {
	case hasSC && sc.MaxAge >= 0:
		f.Lifetime, f.Explicit = time.Duration(sc.MaxAge)*time.Second, true
	case cc.SMaxAge >= 0:
		f.Lifetime, f.Explicit = time.Duration(cc.SMaxAge)*time.Second, true
	case cc.MaxAge >= 0:
		f.Lifetime, f.Explicit = time.Duration(cc.MaxAge)*time.Second, true
	case nExpires > 0:
		// Several Expires lines, or one that is not an HTTP-date, mean already expired
		// (RFC 9111 §5.3): Lifetime stays 0.
		f.Explicit = true
		if t, ok := parseHTTPDate(expires); ok && nExpires == 1 {
			base := now
			if dt, ok := parseHTTPDate(h.Peek(fasthttp.HeaderDate)); ok {
				base = dt
			}
			if l := t.Sub(base); l > 0 {
				f.Lifetime = l
			}
		}
	case heuristicStatus(status):
		f.Lifetime = r.TTL // the route's ttl stands in for heuristic freshness
	}
	if nAge > 0 {
		// An Age that is not one non-negative integer makes the response stale (§5.1).
		if a, ok := parseAge(age); ok && nAge == 1 {
			f.Age = time.Duration(a) * time.Second
		} else {
			f.Lifetime, f.Age = 0, 0
		}
	}
	f.NoCache = cc.NoCache
	f.Stale, f.ErrorStale = r.Stale, r.Stale
	if r.Stale == 0 { // the route leaves stale serving to the origin (RFC 5861)
		f.Stale = delta(cc.StaleWhileRevalidate)
		f.ErrorStale = max(f.Stale, delta(cc.StaleIfError))
	}
	if cc.NoCache || cc.MustRevalidate || cc.ProxyRevalidate {
		f.Stale, f.ErrorStale = 0, 0
	}
	if f.NoCache {
		f.Lifetime = 0
	}
	hasValidator := len(h.Peek(fasthttp.HeaderETag)) > 0 || len(h.Peek(fasthttp.HeaderLastModified)) > 0
	if !f.Explicit && !heuristicStatus(status) {
		return f, ErrNoFreshness // only heuristically cacheable statuses go without freshness
	}
	if f.Lifetime-f.Age <= 0 && f.ErrorStale == 0 && !hasValidator {
		return f, ErrNoFreshness
	}
	if !f.Explicit && r.TTL == 0 && !hasValidator {
		return f, ErrNoFreshness
	}
	return f, nil
}

// delta is a parsed delta-seconds directive as a duration; absent (-1) is 0.
func delta(secs int64) time.Duration {
	if secs <= 0 {
		return 0
	}
	return time.Duration(secs) * time.Second
}

var (
	strHCacheControl     = []byte(fasthttp.HeaderCacheControl)
	strHSurrogateControl = []byte("Surrogate-Control")
	strHSurrogateKey     = []byte("Surrogate-Key")
	strHDate             = []byte("Date")
	strHSetCookie        = []byte(fasthttp.HeaderSetCookie)
	strHExpires          = []byte(fasthttp.HeaderExpires)
	strHAge              = []byte(fasthttp.HeaderAge)
	strHVary             = []byte(fasthttp.HeaderVary)
)

// varyStar reports whether a Vary value lists "*".
func varyStar(v []byte) bool {
	for len(v) > 0 {
		var tok []byte
		tok, v = nextToken(v)
		if len(tok) == 1 && tok[0] == '*' {
			return true
		}
	}
	return false
}

// nextToken returns the next comma-separated, OWS-trimmed element of a list and the rest.
func nextToken(b []byte) (tok, rest []byte) {
	i := bytes.IndexByte(b, ',')
	if i < 0 {
		return trimRightOWS(trimLeftOWS(b)), nil
	}
	return trimRightOWS(trimLeftOWS(b[:i])), b[i+1:]
}
