package proxy

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"
)

// Item 4 of issue 27: stored answers keep their Date. edge adds Age and never rewrites
// the origin's Date, over HTTP/1.1 and HTTP/2, on a hit, a 304 or 206 made from the
// entry, and after a revalidation (the 304's Date); an answer that came without a Date
// keeps the time edge received it. Answers edge makes itself carry its own clock.
func TestCacheKeepsDate(t *testing.T) {
	const (
		d1 = "Tue, 01 Dec 2026 10:00:00 GMT"
		d2 = "Wed, 02 Dec 2026 11:00:00 GMT"
	)
	// A net/http origin: it sends the Date it is told to, or none.
	var mu sync.Mutex
	fetches := map[string]int{}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		fetches[r.URL.Path]++
		n := fetches[r.URL.Path]
		mu.Unlock()
		h := w.Header()
		h.Set("Content-Type", "text/plain")
		switch r.URL.Path {
		case "/dated", "/pass/dated":
			h.Set("Date", d1)
			h.Set("Cache-Control", "max-age=600")
			h.Set("ETag", `"v1"`)
		case "/undated":
			h["Date"] = nil // net/http then sends none
			h.Set("Cache-Control", "max-age=600")
		case "/reval":
			h.Set("ETag", `"r1"`)
			if r.Header.Get("If-None-Match") == `"r1"` {
				h.Set("Date", d2)
				h.Set("Cache-Control", "max-age=600")
				w.WriteHeader(http.StatusNotModified)
				return
			}
			h.Set("Date", d1)
			h.Set("Cache-Control", "max-age=1")
		}
		fmt.Fprintf(w, "%s #%d", r.URL.Path, n)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	origin := &http.Server{Handler: mux}
	go origin.Serve(ln) //nolint:errcheck
	t.Cleanup(func() { origin.Close() })

	e := startEdge(t, fmt.Sprintf(`
upstream "app" {
  servers = [%q]
  timeout = "2s"
}
route "pass" {
  match { path = "/pass/" }
  upstream = "app"
}
route "teapot" {
  match { path = "/own" }
  respond {
    status = 418
    body   = "edge's own"
  }
}
route "cached" {
  match { path = "/" }
  upstream = "app"
  cache { ttl = "1m" }
}
`, ln.Addr().String()))
	h2addr := serveH2C(t, e.px.ListenerHandler("", ProtoH2))
	h1 := &http.Client{Timeout: 5 * time.Second}
	h2 := h2cClient()

	var received string // the Date /undated went out with on its miss
	now := func() string { return "now" }

	rows := []struct {
		name    string
		h2      bool
		path    string
		headers []string
		wait    time.Duration // before the request
		status  int
		xcache  string
		date    func() string // the Date the client must see; now: edge's clock
	}{
		{"a miss forwards the origin's Date", false, "/dated", nil, 0, 200, "MISS", func() string { return d1 }},
		{"a hit replays it", false, "/dated", nil, 0, 200, "HIT", func() string { return d1 }},
		{"a hit over HTTP/2 too", true, "/dated", nil, 0, 200, "HIT", func() string { return d1 }},
		{"a 304 made from the entry", false, "/dated", []string{"If-None-Match", `"v1"`}, 0, 304, "HIT", func() string { return d1 }},
		{"a 206 made from the entry", false, "/dated", []string{"Range", "bytes=0-2"}, 0, 206, "HIT", func() string { return d1 }},
		{"an answer without a Date gets the time it arrived", false, "/undated", nil, 0, 200, "MISS", now},
		{"and its hits keep that time as the clock moves on", false, "/undated", nil, 1100 * time.Millisecond, 200, "HIT", func() string { return received }},
		{"over HTTP/2 too", true, "/undated", nil, 0, 200, "HIT", func() string { return received }},
		{"a revalidated entry: before", false, "/reval", nil, 0, 200, "MISS", func() string { return d1 }},
		{"a revalidated entry takes the 304's Date", false, "/reval", nil, 1100 * time.Millisecond, 200, "HIT", func() string { return d2 }},
		{"and keeps it", true, "/reval", nil, 0, 200, "HIT", func() string { return d2 }},
		{"an uncached route forwards the origin's Date", false, "/pass/dated", nil, 0, 200, "", func() string { return d1 }},
		{"over HTTP/2 too", true, "/pass/dated", nil, 0, 200, "", func() string { return d1 }},
		{"edge's own answer has edge's clock", false, "/own", nil, 0, 418, "", now},
		{"over HTTP/2 too", true, "/own", nil, 0, 418, "", now},
	}
	for _, r := range rows {
		time.Sleep(r.wait)
		c, base := h1, "http://"+e.addr
		if r.h2 {
			c, base = h2, "http://"+h2addr
		}
		req, _ := http.NewRequest("GET", base+r.path, nil)
		req.Host = e.addr // one cache key whichever listener answers
		for i := 0; i+1 < len(r.headers); i += 2 {
			req.Header.Set(r.headers[i], r.headers[i+1])
		}
		before := time.Now().Add(-time.Second)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s: GET %s: %v", r.name, r.path, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != r.status || resp.Header.Get("X-Cache") != r.xcache {
			t.Fatalf("%s: GET %s = %d X-Cache %q, want %d %q", r.name, r.path, resp.StatusCode, resp.Header.Get("X-Cache"), r.status, r.xcache)
		}
		dates := resp.Header.Values("Date")
		if len(dates) != 1 {
			t.Fatalf("%s: Date fields %q, want exactly one", r.name, dates)
		}
		want := r.date()
		if want == "now" {
			d, err := http.ParseTime(dates[0])
			if err != nil || d.Before(before.Truncate(time.Second)) || d.After(time.Now().Add(time.Second)) {
				t.Fatalf("%s: Date %q is not edge's clock", r.name, dates[0])
			}
			if r.path == "/undated" {
				received = dates[0]
			}
		} else if dates[0] != want {
			t.Fatalf("%s: Date %q, want %q", r.name, dates[0], want)
		}
		if r.xcache == "HIT" && resp.Header.Get("Age") == "" {
			t.Errorf("%s: a hit without Age", r.name)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if fetches["/dated"] != 1 || fetches["/undated"] != 1 || fetches["/reval"] != 2 {
		t.Errorf("origin fetches %v, want /dated 1, /undated 1, /reval 2 (fill and revalidation)", fetches)
	}
}
