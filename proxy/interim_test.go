package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// interimOrigin is a raw-TCP origin (keep-alive) that answers every request with
// interim answers before the final one, as the query asks:
//
//	processing=N       N 102 Processing first, as a long operation's keep-alive
//	codes=100.102.103  then these interim statuses (103 carries two Link headers)
//	wait=1             then wait for a token on release (at most 10 s) before the final
//
// The final answer is 200 "final PATH #n", cacheable for a minute on /item/, and
// no-store elsewhere. The waiting makes "the interim answer reached the client before
// the final one" a fact the test observes, never a matter of timing: the final answer
// does not exist until the client has read the interim one.
type interimOrigin struct {
	addr    string
	release chan struct{}
	mu      sync.Mutex
	count   map[string]int
}

func startInterimOrigin(t *testing.T) *interimOrigin {
	o := &interimOrigin{release: make(chan struct{}, 4), count: map[string]int{}}
	o.addr, _ = rawOrigin(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.Copy(io.Discard, req.Body)
			o.mu.Lock()
			o.count[req.URL.Path]++
			n := o.count[req.URL.Path]
			o.mu.Unlock()
			q := req.URL.Query()
			var b strings.Builder
			for range atoiOr0(q.Get("processing")) {
				b.WriteString("HTTP/1.1 102 Processing\r\n\r\n")
			}
			for _, code := range strings.Split(q.Get("codes"), ".") {
				switch code {
				case "100":
					b.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
				case "102":
					b.WriteString("HTTP/1.1 102 Processing\r\n\r\n")
				case "103":
					b.WriteString("HTTP/1.1 103 Early Hints\r\nLink: </app.css>; rel=preload; as=style\r\nLink: </app.js>; rel=preload; as=script\r\n\r\n")
				}
			}
			if _, err := io.WriteString(c, b.String()); err != nil {
				return
			}
			if q.Get("wait") == "1" {
				select {
				case <-o.release:
				case <-time.After(10 * time.Second):
				}
			}
			cc := "no-store"
			if strings.HasPrefix(req.URL.Path, "/item/") {
				cc = "max-age=60"
			}
			body := fmt.Sprintf("final %s #%d", req.URL.Path, n)
			if _, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nCache-Control: %s\r\nContent-Length: %d\r\n\r\n%s", cc, len(body), body); err != nil {
				return
			}
		}
	})
	return o
}

func atoiOr0(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

func (o *interimOrigin) fetches(path string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.count[path]
}

func interimConfig(origin string) string {
	return cacheConfig(origin, `ttl = "1m"`, `
route "plain" {
  match { path = "/plain/" }
  upstream = "app"
}`)
}

// TestInterimHTTP1: a raw HTTP/1.1 client through edge reads the origin's 1xx answers,
// Link headers included, before the final answer, on one keep-alive connection; a
// later GET of the cached answer is a HIT with the 200 only; an HTTP/1.0 client gets
// no 1xx.
func TestInterimHTTP1(t *testing.T) {
	o := startInterimOrigin(t)
	e := startEdge(t, interimConfig(o.addr))
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	read := func(what string) *http.Response {
		t.Helper()
		c.SetReadDeadline(time.Now().Add(15 * time.Second))
		r, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		body, _ := io.ReadAll(r.Body)
		r.Body.Close()
		r.Body = io.NopCloser(strings.NewReader(string(body)))
		return r
	}
	twenty102 := make([]int, 20)
	for i := range twenty102 {
		twenty102[i] = 102
	}
	cases := []struct {
		name, uri string
		interim   []int  // statuses expected before the final answer
		xcache    string // of the final answer
		body      string
	}{
		{"103 on a cache miss", "/item/eh?codes=103&wait=1", []int{103}, "MISS", "final /item/eh #1"},
		{"a hit has no 103", "/item/eh?codes=103&wait=1", nil, "HIT", "final /item/eh #1"},
		{"100, 102 and 103 in order", "/plain/three?codes=100.102.103&wait=1", []int{100, 102, 103}, "", "final /plain/three #1"},
		{"no interim answer", "/plain/none", nil, "", "final /plain/none #1"},
		{"twenty 102 Processing", "/plain/long?processing=20&wait=1", twenty102, "", "final /plain/long #1"},
	}
	for _, tc := range cases {
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: shop\r\n\r\n", tc.uri)
		for i, code := range tc.interim {
			r := read(tc.name)
			if r.StatusCode != code {
				t.Fatalf("%s: answer %d is %d, want %d", tc.name, i+1, r.StatusCode, code)
			}
			if code == 103 {
				if links := r.Header.Values("Link"); len(links) != 2 || links[0] != "</app.css>; rel=preload; as=style" || links[1] != "</app.js>; rel=preload; as=script" {
					t.Errorf("%s: 103 Link headers %q", tc.name, links)
				}
			}
			for _, name := range []string{"Content-Length", "Content-Type"} {
				if v := r.Header.Get(name); v != "" {
					t.Errorf("%s: %d with %s %q", tc.name, code, name, v)
				}
			}
		}
		if len(tc.interim) > 0 {
			o.release <- struct{}{} // the origin may answer now
		}
		r := read(tc.name)
		got, _ := io.ReadAll(r.Body)
		if r.StatusCode != 200 || string(got) != tc.body || r.Header.Get("X-Cache") != tc.xcache {
			t.Errorf("%s: final %d X-Cache %q body %q, want 200 %q %q", tc.name, r.StatusCode, r.Header.Get("X-Cache"), got, tc.xcache, tc.body)
		}
	}
	if n := o.fetches("/item/eh"); n != 1 {
		t.Errorf("origin fetched /item/eh %d times, want 1", n)
	}

	// HTTP/1.0: no 1xx may be sent (RFC 9110 §15.2); the final answer only.
	c10, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c10.Close()
	fmt.Fprintf(c10, "GET /plain/old?codes=103 HTTP/1.0\r\nHost: shop\r\n\r\n")
	c10.SetReadDeadline(time.Now().Add(15 * time.Second))
	r, err := http.ReadResponse(bufio.NewReader(c10), nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.StatusCode != 200 {
		t.Errorf("HTTP/1.0 client: first answer %d, want 200", r.StatusCode)
	}
}

// TestInterimH2: over HTTP/2 the 103 is a HEADERS frame before the final answer's; the
// final answer is stored and served as a HIT without it.
// Over HTTP/2 and HTTP/3 interim answers are HEADERS frames ahead of the final one.
func TestInterimH2H3(t *testing.T) {
	o := startInterimOrigin(t)
	e := startEdge(t, interimConfig(o.addr))
	h2c := h2cClient()
	h2c.Timeout = 15 * time.Second
	h3addr, h3c := serveH3(t, e.px.ListenerHandler("", ProtoH3))
	h3c.Timeout = 15 * time.Second
	for _, p := range []struct {
		name  string
		major int
		base  string
		c     *http.Client
	}{
		{"h2", 2, "http://" + serveH2C(t, e.px.ListenerHandler("", ProtoH2)), h2c},
		{"h3", 3, "https://" + h3addr, h3c},
	} {
		t.Run(p.name, func(t *testing.T) { testInterimMultiplexed(t, o, p.name, p.major, p.base, p.c) })
	}
}

func testInterimMultiplexed(t *testing.T, o *interimOrigin, proto string, major int, base string, client *http.Client) {
	get := func(uri string) (codes []int, links []string, resp *http.Response, body string) {
		t.Helper()
		var mu sync.Mutex
		var released atomic.Bool
		trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			mu.Lock()
			codes = append(codes, code)
			links = append(links, h.Values("Link")...)
			mu.Unlock()
			if code == 103 && released.CompareAndSwap(false, true) {
				o.release <- struct{}{}
			}
			return nil
		}}
		req, _ := http.NewRequest("GET", base+uri, nil)
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("GET %s over %s: %v", uri, proto, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.ProtoMajor != major {
			t.Fatalf("GET %s: protocol %s, want %s", uri, resp.Proto, proto)
		}
		mu.Lock()
		defer mu.Unlock()
		return codes, links, resp, string(b)
	}
	item, plain := "/item/"+proto, "/plain/"+proto
	cases := []struct {
		name, uri string
		codes     []int
		xcache    string
		body      string
	}{
		{"103 on a cache miss", item + "?codes=103&wait=1", []int{103}, "MISS", "final " + item + " #1"},
		{"a hit has no 103", item + "?codes=103&wait=1", nil, "HIT", "final " + item + " #1"},
		{"100, 102 and 103", plain + "?codes=100.102.103&wait=1", []int{100, 102, 103}, "", "final " + plain + " #1"},
	}
	for _, tc := range cases {
		codes, links, resp, body := get(tc.uri)
		if fmt.Sprint(codes) != fmt.Sprint(tc.codes) {
			t.Errorf("%s: interim answers %v, want %v", tc.name, codes, tc.codes)
		}
		if len(tc.codes) > 0 && fmt.Sprint(links) != "[</app.css>; rel=preload; as=style </app.js>; rel=preload; as=script]" {
			t.Errorf("%s: 103 Link headers %q", tc.name, links)
		}
		if resp.StatusCode != 200 || body != tc.body || resp.Header.Get("X-Cache") != tc.xcache {
			t.Errorf("%s: final %d X-Cache %q body %q, want 200 %q %q", tc.name, resp.StatusCode, resp.Header.Get("X-Cache"), body, tc.xcache, tc.body)
		}
	}
	if n := o.fetches(item); n != 1 {
		t.Errorf("origin fetched %s %d times, want 1", item, n)
	}
}
