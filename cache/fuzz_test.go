package cache

import (
	"testing"

	"github.com/valyala/fasthttp"
)

// FuzzRecord feeds arbitrary bytes as the stored record: Lookup must not panic, and a
// record it accepts must replay without panicking.
func FuzzRecord(f *testing.F) {
	c := newTestCache(f, Config{})
	req := mkReq("GET", "shop", "/f", "Accept-Encoding", "gzip")
	key := keyOf(req)
	store(f, c, req, mkResp(200, []byte("seed"), "Cache-Control", "max-age=60", "ETag", `"e"`, "Surrogate-Key", "a"), rule, t0)
	pk, n := makeKey(fkPrimary, KeyHash(key), 0)
	f.Add(c.fc.Get(nil, pk[:n]))
	store(f, c, req, mkResp(200, []byte("seed"), "Cache-Control", "max-age=60", "Vary", "Accept-Encoding"), rule, t0)
	f.Add(c.fc.Get(nil, pk[:n]))
	f.Add([]byte{recVersion, kindVary, 0, 0, 1, 200})
	e := AcquireEntry()
	var out fasthttp.Response
	f.Fuzz(func(t *testing.T, rec []byte) {
		c.fc.Set(pk[:n], rec)
		if c.Lookup(e, key, &req.Header, t0) != Miss {
			out.Reset()
			e.WriteTo(&out, t0)
			_ = e.NotModified(&req.Header)
		}
		e.meta = append(e.meta[:0], rec...)
		if e.decode() {
			for range e.Headers() {
			}
			_ = e.varyMatches(&req.Header)
		}
	})
}

func FuzzCacheControl(f *testing.F) {
	for _, s := range []string{"max-age=60", `private="a,b", s-maxage=1`, "no-cache=\"", "max-age=\"1", ",=,", "a=\"\\"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var cc CacheControl
		cc.Reset()
		cc.Parse([]byte(s))
		if cc.MaxAge < -1 || cc.MaxAge > maxDelta || cc.SMaxAge < -1 || cc.SMaxAge > maxDelta {
			t.Fatalf("Parse(%q) = %+v", s, cc)
		}
	})
}
