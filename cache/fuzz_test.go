package cache

import (
	"bytes"
	"testing"

	"github.com/valyala/fasthttp"
)

// FuzzRecord feeds arbitrary bytes as the stored record: Lookup must not panic, a
// record it accepts must replay without panicking, and what decode takes from a record
// lies within it: parts no longer than the record, the body its tail, the headers as
// many and as long as the record says.
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
		if !e.decode() {
			return
		}
		// Every decoded part is a distinct piece of the record: together they are never
		// longer than it, and a small entry's body is its tail.
		parts := len(e.tags) + len(e.key) + len(e.vary) + len(e.etag) + len(e.lastModified) + len(e.headers) + len(e.body)
		if parts > len(rec) {
			t.Fatalf("decoded %d bytes of parts from a %d-byte record", parts, len(rec))
		}
		if e.flags&flagBig == 0 && !bytes.Equal(e.body, rec[len(rec)-len(e.body):]) {
			t.Fatalf("body %q is not the record's tail", e.body)
		}
		n, size := 0, 0
		for k, v := range e.Headers() {
			n++
			size += 4 + len(k) + len(v)
		}
		if n != e.nHeaders || size != len(e.headers) {
			t.Fatalf("%d headers in %d bytes, the record says %d in %d", n, size, e.nHeaders, len(e.headers))
		}
		_ = e.varyMatches(&req.Header)
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
