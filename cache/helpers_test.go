package cache

import (
	"bufio"
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

func newTestCache(t testing.TB, cfg Config) *Cache {
	t.Helper()
	if cfg.Size == 0 {
		cfg.Size = MinSize
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(c.fc.Reset)
	return c
}

// mkReq builds a request; hdrs are name, value pairs.
func mkReq(method, host, uri string, hdrs ...string) *fasthttp.Request {
	req := &fasthttp.Request{}
	req.Header.SetMethod(method)
	req.Header.SetHost(host)
	req.Header.SetRequestURI(uri)
	for i := 0; i+1 < len(hdrs); i += 2 {
		req.Header.Add(hdrs[i], hdrs[i+1])
	}
	return req
}

// mkResp parses an origin response from the wire, as the upstream client would see it
// (fasthttp ignores some headers, e.g. Date, when set programmatically); hdrs are name,
// value pairs.
func mkResp(status int, body []byte, hdrs ...string) *fasthttp.Response {
	var b bytes.Buffer
	fmt.Fprintf(&b, "HTTP/1.1 %d X\r\n", status)
	for i := 0; i+1 < len(hdrs); i += 2 {
		fmt.Fprintf(&b, "%s: %s\r\n", hdrs[i], hdrs[i+1])
	}
	if status != 304 {
		fmt.Fprintf(&b, "Content-Length: %d\r\n", len(body))
	}
	b.WriteString("\r\n")
	b.Write(body)
	resp := &fasthttp.Response{}
	if status == 304 {
		resp.SkipBody = true
	}
	if err := resp.Read(bufio.NewReaderSize(&b, 1<<18)); err != nil {
		panic(fmt.Sprintf("mkResp: cannot parse response: %v", err))
	}
	return resp
}

func keyOf(req *fasthttp.Request) []byte {
	return AppendKey(nil, req.Header.Method(), req.Header.Host(), req.Header.RequestURI())
}

// store stores resp for req under rule at now and fails the test on error.
func store(t testing.TB, c *Cache, req *fasthttp.Request, resp *fasthttp.Response, rule *Rule, now time.Time) {
	t.Helper()
	if err := c.Store(keyOf(req), &req.Header, resp, rule, now, c.Epoch()); err != nil {
		t.Fatalf("Store(%s): %v", req.Header.RequestURI(), err)
	}
}

// lookup returns the state for req at now and the entry (released by t.Cleanup).
func lookup(t testing.TB, c *Cache, req *fasthttp.Request, now time.Time) (State, *Entry) {
	t.Helper()
	e := AcquireEntry()
	t.Cleanup(func() { ReleaseEntry(e) })
	return c.Lookup(e, keyOf(req), &req.Header, now), e
}
