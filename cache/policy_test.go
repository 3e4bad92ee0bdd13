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
	if _, err := only500.Evaluate(500, &resp.Header, t0); err != nil {
		t.Errorf("Statuses [500] with 500: error %v", err)
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
