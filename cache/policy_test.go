package cache

import (
	"errors"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

func TestCacheControlParse(t *testing.T) {
	f := func(in string, want CacheControl) {
		t.Helper()
		var cc CacheControl
		cc.Reset()
		cc.Parse([]byte(in))
		if cc != want {
			t.Errorf("Parse(%q) = %+v, want %+v", in, cc, want)
		}
	}
	absent := func(mod func(*CacheControl)) CacheControl {
		var cc CacheControl
		cc.Reset()
		mod(&cc)
		return cc
	}
	f("", absent(func(*CacheControl) {}))
	f("max-age=60", absent(func(c *CacheControl) { c.MaxAge = 60 }))
	f("public, max-age=60, s-maxage=5", absent(func(c *CacheControl) { c.Public, c.MaxAge, c.SMaxAge = true, 60, 5 }))
	f("MAX-AGE=7 ,No-Store", absent(func(c *CacheControl) { c.MaxAge, c.NoStore = 7, true }))
	f(`max-age="30"`, absent(func(c *CacheControl) { c.MaxAge = 30 }))
	f("max-age=abc", absent(func(c *CacheControl) { c.MaxAge = 0 }))
	f("max-age", absent(func(c *CacheControl) { c.MaxAge = 0 }))
	f("max-age=10, max-age=99", absent(func(c *CacheControl) { c.MaxAge = 10 }))
	f("max-age=99999999999999999999", absent(func(c *CacheControl) { c.MaxAge = maxDelta }))
	f(`private="Set-Cookie, X-A", no-cache`, absent(func(c *CacheControl) { c.Private, c.NoCache = true, true }))
	f(`no-cache="Set-Cookie"`, absent(func(c *CacheControl) { c.NoCache = true }))
	f("must-revalidate, proxy-revalidate", absent(func(c *CacheControl) { c.MustRevalidate, c.ProxyRevalidate = true, true }))
	f("stale-while-revalidate=30, stale-if-error=600", absent(func(c *CacheControl) { c.StaleWhileRevalidate, c.StaleIfError = 30, 600 }))
	f("foo=\"a,b\", max-age=3", absent(func(c *CacheControl) { c.MaxAge = 3 }))
	f(",,, ,max-age=1,", absent(func(c *CacheControl) { c.MaxAge = 1 }))
}

func TestEvaluate(t *testing.T) {
	rule := &Rule{TTL: 2 * time.Second, Stale: 30 * time.Second}
	date := fasthttp.AppendHTTPDate(nil, t0)
	f := func(status int, hdrs []string, wantLife, wantStale time.Duration, wantErr error) {
		t.Helper()
		resp := mkResp(status, nil, hdrs...)
		fr, err := rule.Evaluate(status, &resp.Header, t0)
		if !errors.Is(err, wantErr) {
			t.Errorf("Evaluate(%d, %q) error = %v, want %v", status, hdrs, err, wantErr)
			return
		}
		if err == nil && (fr.Lifetime-fr.Age != wantLife || fr.Stale != wantStale) {
			t.Errorf("Evaluate(%d, %q) = life %s stale %s, want %s %s", status, hdrs, fr.Lifetime-fr.Age, fr.Stale, wantLife, wantStale)
		}
	}
	s := time.Second
	f(200, nil, 2*s, 30*s, nil) // route ttl
	f(200, []string{"Cache-Control", "max-age=60"}, 60*s, 30*s, nil)
	f(200, []string{"Cache-Control", "max-age=60, s-maxage=5"}, 5*s, 30*s, nil) // s-maxage wins for a shared cache
	f(200, []string{"Cache-Control", "max-age=60", "Age", "15"}, 45*s, 30*s, nil)
	f(200, []string{"Date", string(date), "Expires", string(fasthttp.AppendHTTPDate(nil, t0.Add(90*s)))}, 90*s, 30*s, nil)
	// Expires is measured against the origin's Date, not our clock.
	f(200, []string{"Date", string(fasthttp.AppendHTTPDate(nil, t0.Add(-time.Hour))), "Expires", string(fasthttp.AppendHTTPDate(nil, t0.Add(-time.Hour+20*s)))}, 20*s, 30*s, nil)
	f(200, []string{"Cache-Control", "max-age=10", "Expires", "0"}, 10*s, 30*s, nil) // max-age beats Expires
	f(200, []string{"Expires", "0"}, 0, 30*s, nil)                                   // invalid Expires: already expired, stale window remains
	f(200, []string{"Surrogate-Control", "max-age=600", "Cache-Control", "max-age=0"}, 600*s, 30*s, nil)
	f(200, []string{"Cache-Control", "max-age=60, must-revalidate"}, 60*s, 0, nil)
	f(200, []string{"Cache-Control", "no-cache", "ETag", `"v1"`}, 0, 0, nil)
	f(200, []string{"Cache-Control", "no-cache"}, 0, 0, ErrNoFreshness)
	f(200, []string{"Cache-Control", "max-age=0, must-revalidate"}, 0, 0, ErrNoFreshness)
	f(200, []string{"Cache-Control", "no-store, max-age=60"}, 0, 0, ErrNoStore)
	f(200, []string{"Surrogate-Control", "no-store"}, 0, 0, ErrNoStore)
	f(200, []string{"Cache-Control", "private, max-age=60"}, 0, 0, ErrPrivate)
	f(200, []string{"Cache-Control", "max-age=60", "Set-Cookie", "sid=1"}, 0, 0, ErrSetCookie)
	f(200, []string{"Vary", "Accept-Encoding, *"}, 0, 0, ErrVaryStar)
	f(203, nil, 2*s, 30*s, nil)
	f(301, nil, 2*s, 30*s, nil)
	f(404, nil, 2*s, 30*s, nil)
	f(500, []string{"Cache-Control", "max-age=60"}, 0, 0, ErrStatus)
	f(302, nil, 0, 0, ErrStatus)

	noTTL := &Rule{}
	resp := mkResp(200, nil)
	if _, err := noTTL.Evaluate(200, &resp.Header, t0); err != ErrNoFreshness {
		t.Errorf("no ttl, no Cache-Control: error %v, want ErrNoFreshness", err)
	}
	only500 := &Rule{TTL: s, Statuses: []int{500}}
	if _, err := only500.Evaluate(200, &resp.Header, t0); err != ErrStatus {
		t.Errorf("Statuses [500] with 200: error %v, want ErrStatus", err)
	}
	if _, err := only500.Evaluate(500, &resp.Header, t0); err != ErrNoFreshness {
		t.Errorf("Statuses [500] with a 500 without freshness: error %v, want ErrNoFreshness (500 is not heuristically cacheable)", err)
	}
	resp = mkResp(500, nil, "Cache-Control", "max-age=5")
	if _, err := only500.Evaluate(500, &resp.Header, t0); err != nil {
		t.Errorf("Statuses [500] with a 500 with max-age: error %v", err)
	}
}

// TestEvaluateRFC covers issue 27's rules: strict Expires and Age, Vary on several lines,
// targeted fields, stale-while-revalidate / stale-if-error and heuristic statuses.
func TestEvaluateRFC(t *testing.T) {
	s := time.Second
	date := string(fasthttp.AppendHTTPDate(nil, t0))
	in90 := string(fasthttp.AppendHTTPDate(nil, t0.Add(90*s)))
	all := []int{200, 204, 206, 302, 303, 307, 308, 403, 404, 410, 500, 501, 503}
	route := &Rule{TTL: 2 * s, Statuses: all, Targeted: []string{"Edge-Cache-Control", "CDN-Cache-Control"}}
	routeStale := &Rule{TTL: 2 * s, Stale: 7 * s, Statuses: all}
	type want struct {
		life, stale, errStale time.Duration
		err                   error
	}
	for _, tc := range []struct {
		name   string
		rule   *Rule
		status int
		hdrs   []string
		want   want
	}{
		{"IMF-fixdate Expires", route, 200, []string{"Date", date, "Expires", in90}, want{life: 90 * s}},
		{"RFC 850 Expires", route, 200, []string{"Date", date, "Expires", "Wednesday, 02-Jan-30 03:05:35 GMT"}, want{life: 90 * s}},
		{"asctime Expires", route, 200, []string{"Date", date, "Expires", "Wed Jan  2 03:05:35 2030"}, want{life: 90 * s}},
		{"RFC 850 Expires not in GMT", route, 200, []string{"Date", date, "Expires", "Wednesday, 02-Jan-30 03:05:35 PST"}, want{err: ErrNoFreshness}},
		{"Expires with trailing text", route, 200, []string{"Date", date, "Expires", in90 + " x"}, want{err: ErrNoFreshness}},
		{"Expires on two lines", route, 200, []string{"Date", date, "Expires", in90, "Expires", in90}, want{err: ErrNoFreshness}},
		{"bad Expires with a validator is stored stale", route, 200, []string{"Expires", "-1", "ETag", `"a"`}, want{}},
		{"Age", route, 200, []string{"Cache-Control", "max-age=60", "Age", "15"}, want{life: 45 * s}},
		{"negative Age", route, 200, []string{"Cache-Control", "max-age=60", "Age", "-5"}, want{err: ErrNoFreshness}},
		{"Age list", route, 200, []string{"Cache-Control", "max-age=60", "Age", "5, 6"}, want{err: ErrNoFreshness}},
		{"Age on two lines", route, 200, []string{"Cache-Control", "max-age=60", "Age", "5", "Age", "5"}, want{err: ErrNoFreshness}},
		{"Age not a number", route, 200, []string{"Cache-Control", "max-age=60", "Age", "1e3"}, want{err: ErrNoFreshness}},
		{"Vary * on a second line", route, 200, []string{"Cache-Control", "max-age=60", "Vary", "Accept", "Vary", "*"}, want{err: ErrVaryStar}},
		{"CDN-Cache-Control max-age wins", route, 200, []string{"Cache-Control", "max-age=5", "CDN-Cache-Control", "max-age=60"}, want{life: 60 * s}},
		{"first targeted field on the list wins", route, 200, []string{"CDN-Cache-Control", "max-age=60", "Edge-Cache-Control", "max-age=30"}, want{life: 30 * s}},
		{"targeted field beats Cache-Control private", route, 200, []string{"Cache-Control", "private", "CDN-Cache-Control", "max-age=60"}, want{life: 60 * s}},
		{"targeted field beats Expires", route, 200, []string{"Date", date, "Expires", in90, "CDN-Cache-Control", "max-age=10"}, want{life: 10 * s}},
		{"targeted no-store", route, 200, []string{"Cache-Control", "max-age=60", "CDN-Cache-Control", "no-store"}, want{err: ErrNoStore}},
		{"targeted private", route, 200, []string{"Cache-Control", "max-age=60", "Edge-Cache-Control", "private"}, want{err: ErrPrivate}},
		{"targeted no-cache", route, 200, []string{"Cache-Control", "max-age=60", "CDN-Cache-Control", "no-cache", "ETag", `"a"`}, want{}},
		{"targeted field without known directives is ignored", route, 200, []string{"Cache-Control", "max-age=5", "CDN-Cache-Control", "foo"}, want{life: 5 * s}},
		{"targeted field not on the list", &Rule{TTL: 2 * s}, 200, []string{"Cache-Control", "max-age=5", "CDN-Cache-Control", "max-age=60"}, want{life: 5 * s}},
		{"stale-while-revalidate", route, 200, []string{"Cache-Control", "max-age=5, stale-while-revalidate=30"}, want{life: 5 * s, stale: 30 * s, errStale: 30 * s}},
		{"stale-if-error", route, 200, []string{"Cache-Control", "max-age=5, stale-if-error=600"}, want{life: 5 * s, errStale: 600 * s}},
		{"stale-if-error shorter than stale-while-revalidate", route, 200, []string{"Cache-Control", "max-age=5, stale-while-revalidate=30, stale-if-error=10"}, want{life: 5 * s, stale: 30 * s, errStale: 30 * s}},
		{"must-revalidate turns both off", route, 200, []string{"Cache-Control", "max-age=5, must-revalidate, stale-while-revalidate=30, stale-if-error=60"}, want{life: 5 * s}},
		{"route stale overrides the origin", routeStale, 200, []string{"Cache-Control", "max-age=5, stale-while-revalidate=30, stale-if-error=600"}, want{life: 5 * s, stale: 7 * s, errStale: 7 * s}},
		{"stale-if-error keeps an expired answer", route, 200, []string{"Cache-Control", "max-age=0, stale-if-error=60"}, want{errStale: 60 * s}},
		{"204 heuristic", route, 204, nil, want{life: 2 * s}},
		{"410 heuristic", route, 410, nil, want{life: 2 * s}},
		{"302 with max-age", route, 302, []string{"Cache-Control", "max-age=60", "Location", "/y"}, want{life: 60 * s}},
		{"302 without freshness", route, 302, []string{"Location", "/y"}, want{err: ErrNoFreshness}},
		{"302 with only a validator", route, 302, []string{"Location", "/y", "ETag", `"a"`}, want{err: ErrNoFreshness}},
		{"403 without freshness", route, 403, nil, want{err: ErrNoFreshness}},
		{"403 with Expires", route, 403, []string{"Date", date, "Expires", in90}, want{life: 90 * s}},
		{"503 with s-maxage", route, 503, []string{"Cache-Control", "s-maxage=3"}, want{life: 3 * s}},
		{"500 not listed", &Rule{TTL: 2 * s}, 500, []string{"Cache-Control", "max-age=60"}, want{err: ErrStatus}},
	} {
		resp := mkResp(tc.status, nil, tc.hdrs...)
		f, err := tc.rule.Evaluate(tc.status, &resp.Header, t0)
		if !errors.Is(err, tc.want.err) {
			t.Errorf("%s: error %v, want %v", tc.name, err, tc.want.err)
			continue
		}
		if err != nil {
			continue
		}
		if got := (want{life: f.Lifetime - f.Age, stale: f.Stale, errStale: f.ErrorStale}); got != tc.want {
			t.Errorf("%s: got %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

func TestCheckRequest(t *testing.T) {
	f := func(rule *Rule, req *fasthttp.Request, want error) {
		t.Helper()
		if err := rule.CheckRequest(&req.Header); err != want {
			t.Errorf("CheckRequest(%s %s) = %v, want %v", req.Header.Method(), req.Header.RequestURI(), err, want)
		}
	}
	r := &Rule{TTL: time.Second}
	f(r, mkReq("GET", "h", "/"), nil)
	f(r, mkReq("HEAD", "h", "/"), nil)
	f(r, mkReq("POST", "h", "/"), ErrMethod)
	f(r, mkReq("PUT", "h", "/"), ErrMethod)
	f(r, mkReq("GET", "h", "/", "Authorization", "Bearer x"), ErrAuthorization)
	f(r, mkReq("GET", "h", "/", "Cookie", "sid=1"), ErrCookie)
	f(r, mkReq("GET", "h", "/", "Cache-Control", "no-cache", "Pragma", "no-cache"), nil)
	allow := &Rule{TTL: time.Second, AllowAuthorization: true, AllowCookie: true}
	f(allow, mkReq("GET", "h", "/", "Authorization", "Bearer x", "Cookie", "sid=1"), nil)
}

func TestKey(t *testing.T) {
	k := func(m, h, u string, parts ...string) string {
		b := AppendKey(nil, []byte(m), []byte(h), []byte(u))
		for _, p := range parts {
			b = AppendKeyPart(b, []byte(p))
		}
		return string(b)
	}
	if k("HEAD", "h", "/a") != k("GET", "h", "/a") {
		t.Error("HEAD and GET keys differ")
	}
	if k("GET", "Shop.Example", "/a") != k("GET", "shop.example", "/a") {
		t.Error("host case changes the key")
	}
	distinct := []string{
		k("GET", "h", "/a"), k("GET", "h", "/a?x=1"), k("GET", "h", "/b"), k("GET", "h2", "/a"),
		k("POST", "h", "/a"), k("GET", "h", "/a", "u1"), k("GET", "h", "/a", "u2"),
		k("GET", "h", "/a", "u1", ""), k("GET", "h", "/a", "", "u1"),
	}
	seen := map[string]int{}
	for i, d := range distinct {
		if j, ok := seen[d]; ok {
			t.Errorf("keys %d and %d collide: %q", j, i, d)
		}
		seen[d] = i
	}
}
