package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// originSaw is what a framing test's origin received in its last request.
type originSaw struct {
	uri, host, body, expect, te, trailer string
	cl                                   int
}

// framingOrigin is a real fasthttp origin that counts requests and keeps what the last
// one looked like on the wire: request target, Host, body and framing headers.
type framingOrigin struct {
	addr string
	hits atomic.Int64
	mu   sync.Mutex
	last originSaw
}

func startFramingOrigin(t *testing.T) *framingOrigin {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := &framingOrigin{addr: ln.Addr().String()}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		h := &ctx.Request.Header
		o.mu.Lock()
		o.last = originSaw{
			uri: string(h.RequestURI()), host: string(h.Host()), body: string(ctx.PostBody()),
			expect: string(h.Peek("Expect")), te: string(h.Peek("Transfer-Encoding")), cl: h.ContentLength(),
			trailer: string(h.Peek("X-T")) + string(h.Peek("Trailer")),
		}
		o.mu.Unlock()
		o.hits.Add(1)
		ctx.SetBodyString("origin")
	}}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown() })
	return o
}

func (o *framingOrigin) saw() originSaw {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.last
}

// exchangeRaw writes raw to a new connection to addr and reads the answers up to the
// first final one: the interim ones' statuses, the final response and its body. When
// that response closes the connection, it also reads to the end and returns what came
// after the response (nothing, from a server that closes as it says).
func exchangeRaw(t *testing.T, addr, raw string) (interim []int, resp *http.Response, body, after string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	for {
		resp, err = http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("reading the answer: %v", err)
		}
		if resp.StatusCode >= 200 {
			break
		}
		interim = append(interim, resp.StatusCode)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the answer's body: %v", err)
	}
	if resp.Close {
		rest, err := io.ReadAll(br)
		if err != nil {
			t.Fatalf("reading to the end of the connection: %v", err)
		}
		after = string(rest)
	}
	return interim, resp, string(b), after
}

// startFramingEdge starts a framing origin and an edge in front of it: route "deny"
// answers 403 on /deny, route "app" forwards every request for host shop.example.
func startFramingEdge(t *testing.T) (*framingOrigin, *testEdge) {
	t.Helper()
	o := startFramingOrigin(t)
	e := startEdge(t, fmt.Sprintf(`
upstream "app" {
  servers = [%q]
  timeout = "5s"
}
route "deny" {
  match { path = "/deny" }
  respond {
    status = 403
    body = "{\"error\":\"denied\"}"
  }
}
route "app" {
  match { host = "shop.example" }
  upstream = "app"
}
`, o.addr))
	return o, e
}

// TestRequestFraming is docs/security.md's table: each request head a proxy in front of
// edge and edge could read two ways gets the answer RFC 9112 asks of a server, reaches the
// origin only when it is unambiguous, and then reaches it in one plain form.
func TestRequestFraming(t *testing.T) {
	o, e := startFramingEdge(t)

	const host = "Host: shop.example\r\n"
	get := func(headers string) string { return "GET /p HTTP/1.1\r\n" + host + headers + "\r\n" }
	post := func(headers, body string) string { return "POST /p HTTP/1.1\r\n" + host + headers + "\r\n" + body }
	// want is a forwarded request as the origin must see it; nil: the request must not
	// reach the origin.
	type want struct{ uri, host, body string }
	plain := &want{"/p", "shop.example", ""}
	hello := &want{"/p", "shop.example", "hello"}
	chunked := "Transfer-Encoding: chunked\r\n"

	for _, c := range []struct {
		name   string
		raw    string
		status int
		fwd    *want
		// interim is the number of 1xx answers before the final one.
		interim int
	}{
		{"plain GET", get(""), 200, plain, 0},
		{"plain POST", post("Content-Length: 5\r\n", "hello"), 200, hello, 0},
		{"chunked POST", post(chunked, "5\r\nhello\r\n0\r\n\r\n"), 200, hello, 0},
		{"chunked in any case", post("Transfer-Encoding: Chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"), 200, hello, 0},
		{"chunk extension dropped", post(chunked, "5;name=value\r\nhello\r\n0\r\n\r\n"), 200, hello, 0},

		// Line folding and line endings (RFC 9112 §2.2, §5.2).
		{"obs-fold with space", get("X-A: a\r\n b\r\n"), 400, nil, 0},
		{"obs-fold with tab", get("X-A: a\r\n\tb\r\n"), 400, nil, 0},
		{"obs-fold of Content-Length", post("Content-Length:\r\n 5\r\n", "hello"), 400, nil, 0},
		{"first header line folded", "GET /p HTTP/1.1\r\n " + host + "\r\n", 400, nil, 0},
		{"bare LF ends a header line", get("X-A: 1\nX-B: 2\r\n"), 400, nil, 0},
		{"bare LF before Transfer-Encoding", post("X-A: 1\n"+chunked, "5\r\nhello\r\n0\r\n\r\n"), 400, nil, 0},
		{"bare CR in a value", get("X-A: a\rb\r\n"), 400, nil, 0},

		// Field names and values (RFC 9110 §5.1, §5.5; RFC 9112 §5.1).
		{"space before colon", get("X-A : 1\r\n"), 400, nil, 0},
		{"space before colon of Content-Length", post("Content-Length : 5\r\n", "hello"), 400, nil, 0},
		{"tab before colon", get("X-A\t: 1\r\n"), 400, nil, 0},
		{"space inside a name", get("X A: 1\r\n"), 400, nil, 0},
		{"NUL in a value", get("X-A: a\x00b\r\n"), 400, nil, 0},
		{"NUL in a name", get("X-\x00A: 1\r\n"), 400, nil, 0},
		{"control character in a value", get("X-A: a\x01b\r\n"), 400, nil, 0},
		{"DEL in a value", get("X-A: a\x7fb\r\n"), 400, nil, 0},
		{"empty name", get(": 1\r\n"), 400, nil, 0},
		{"line without colon", get("X-A\r\n"), 400, nil, 0},

		// Content-Length and Transfer-Encoding (RFC 9112 §6.1, §6.3).
		{"two equal Content-Lengths", post("Content-Length: 5\r\nContent-Length: 5\r\n", "hello"), 400, nil, 0},
		{"two different Content-Lengths", post("Content-Length: 5\r\nContent-Length: 3\r\n", "hello"), 400, nil, 0},
		{"Content-Length list", post("Content-Length: 5, 5\r\n", "hello"), 400, nil, 0},
		{"Content-Length with sign", post("Content-Length: +5\r\n", "hello"), 400, nil, 0},
		{"Content-Length not a number", post("Content-Length: 5x\r\n", "hello"), 400, nil, 0},
		{"Transfer-Encoding and Content-Length", post(chunked+"Content-Length: 3\r\n", "5\r\nhello\r\n0\r\n\r\n"), 400, nil, 0},
		{"smuggling with CL.TE", post("Content-Length: 4\r\n"+chunked, "0\r\n\r\nGET /smuggled HTTP/1.1\r\n"+host+"\r\n"), 400, nil, 0},
		{"Content-Length and Transfer-Encoding", post("Content-Length: 3\r\n"+chunked, "5\r\nhello\r\n0\r\n\r\n"), 400, nil, 0},
		{"chunked not last", post("Transfer-Encoding: chunked, gzip\r\n", "5\r\nhello\r\n0\r\n\r\n"), 400, nil, 0},
		{"coding before chunked", post("Transfer-Encoding: gzip, chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"), 400, nil, 0},
		{"chunked twice in one line", post("Transfer-Encoding: chunked, chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"), 400, nil, 0},
		{"two Transfer-Encoding lines", post(chunked+chunked, "5\r\nhello\r\n0\r\n\r\n"), 400, nil, 0},
		{"Transfer-Encoding identity", post("Transfer-Encoding: identity\r\n", "hello"), 400, nil, 0},
		{"Transfer-Encoding empty", post("Transfer-Encoding:\r\n", "hello"), 400, nil, 0},
		{"Transfer-Encoding in HTTP/1.0", "POST /p HTTP/1.0\r\n" + host + chunked + "\r\n5\r\nhello\r\n0\r\n\r\n", 400, nil, 0},
		{"chunk size line ends in bare LF", post(chunked, "5\nhello\r\n0\r\n\r\n"), 400, nil, 0},
		{"chunk size not hex", post(chunked, "5g\r\nhello\r\n0\r\n\r\n"), 400, nil, 0},
		{"chunk data longer than its size", post(chunked, "3\r\nhello\r\n0\r\n\r\n"), 400, nil, 0},
		{"trailer fields dropped", post(chunked, "5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n"), 200, hello, 0},
		{"folded trailer field dropped", post(chunked, "5\r\nhello\r\n0\r\nX-T: 1\r\n 2\r\n\r\n"), 200, hello, 0},
		{"long chunk extension dropped", post(chunked, "5;x="+strings.Repeat("a", 64<<10)+"\r\nhello\r\n0\r\n\r\n"), 200, hello, 0},

		// Expect (RFC 9110 §10.1.1).
		{"Expect: 100-continue", post("Expect: 100-continue\r\nContent-Length: 5\r\n", "hello"), 200, hello, 1},
		{"Expect: 100-continue refused", "POST /deny HTTP/1.1\r\n" + host + "Expect: 100-continue\r\nContent-Length: 5\r\n\r\nhello", 403, nil, 1},
		{"Expect: 100-continue without a route", "POST /p HTTP/1.1\r\nHost: other.example\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello", 404, nil, 1},
		{"Expect other than 100-continue", post("Expect: something\r\nContent-Length: 5\r\n", "hello"), 417, nil, 0},

		// Request line and Host (RFC 9112 §3, §3.2).
		{"absolute-form: its authority is the host", "GET http://shop.example/p?q=1 HTTP/1.1\r\nHost: other.example\r\n\r\n", 200, &want{"/p?q=1", "shop.example", ""}, 0},
		{"absolute-form: Host is ignored", "GET http://other.example/p HTTP/1.1\r\n" + host + "\r\n", 404, nil, 0},
		{"no Host in HTTP/1.1", "GET /p HTTP/1.1\r\n\r\n", 400, nil, 0},
		{"empty Host in HTTP/1.1", "GET /p HTTP/1.1\r\nHost:\r\n\r\n", 400, nil, 0},
		{"absolute-form with userinfo", "GET http://u@shop.example/p HTTP/1.1\r\n" + host + "\r\n", 400, nil, 0},
		{"two Host lines", get(host), 400, nil, 0},
		{"Host with a path", "GET /p HTTP/1.1\r\nHost: shop.example/x\r\n\r\n", 400, nil, 0},
		{"Host with a space", "GET /p HTTP/1.1\r\nHost: shop.example x\r\n\r\n", 400, nil, 0},
		{"Host with userinfo", "GET /p HTTP/1.1\r\nHost: u@shop.example\r\n\r\n", 400, nil, 0},
		{"space inside the target", "GET /p q HTTP/1.1\r\n" + host + "\r\n", 400, nil, 0},
		{"control character in the target", "GET /p\x01 HTTP/1.1\r\n" + host + "\r\n", 400, nil, 0},
		{"unknown version", "GET /p HTTP/2.5x\r\n" + host + "\r\n", 400, nil, 0},
		{"CONNECT", "CONNECT shop.example:443 HTTP/1.1\r\n" + host + "\r\n", 405, nil, 0},
		{"asterisk-form", "OPTIONS * HTTP/1.1\r\n" + host + "\r\n", 200, &want{"*", "shop.example", ""}, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := o.hits.Load()
			interim, resp, body, after := exchangeRaw(t, e.addr, c.raw)
			if resp.StatusCode != c.status {
				t.Errorf("status %d %q, want %d", resp.StatusCode, body, c.status)
			}
			if len(interim) != c.interim {
				t.Errorf("interim answers %v, want %d", interim, c.interim)
			}
			hits := o.hits.Load() - before
			if c.fwd == nil {
				if hits != 0 {
					t.Errorf("the origin got %d requests, want none", hits)
				}
				if c.status != 403 && c.status != 404 && (!resp.Close || !strings.HasPrefix(body, `{"error":`)) {
					t.Errorf("answer %q with Connection close %v; want a JSON error and the connection closed", body, resp.Close)
				}
				if after != "" {
					t.Errorf("after the answer, the connection carried %q", after)
				}
				return
			}
			if hits != 1 {
				t.Fatalf("the origin got %d requests, want 1", hits)
			}
			s := o.saw()
			if s.uri != c.fwd.uri || s.host != c.fwd.host || s.body != c.fwd.body {
				t.Errorf("origin saw %s with Host %q and body %q; want %s, %q, %q", s.uri, s.host, s.body, c.fwd.uri, c.fwd.host, c.fwd.body)
			}
			if s.te != "" || s.cl != len(c.fwd.body) && (c.fwd.body != "" || s.cl > 0) {
				t.Errorf("origin saw Transfer-Encoding %q, Content-Length %d; want none and %d", s.te, s.cl, len(c.fwd.body))
			}
			if s.expect != "" || s.trailer != "" {
				t.Errorf("origin saw Expect %q, X-T and Trailer %q; want neither: edge answers the expectation, drops trailers", s.expect, s.trailer)
			}
		})
	}
}

// TestRequestFramingH2: the HTTP/2 forms of the same faults are malformed (RFC 9113
// §8.2.1, §8.2.2, §8.3): the stream is reset with PROTOCOL_ERROR and nothing reaches the
// origin; a well-formed request reaches it in HTTP/1.1 with :authority as Host.
func TestRequestFramingH2(t *testing.T) {
	o, e := startFramingEdge(t)
	addr := serveH2C(t, e.px.ListenerHandler("default", ProtoH2))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	id := uint32(1)
	// send sends one request of fields (name, value pairs) and returns the stream's
	// :status, or 0 and the error code of the RST_STREAM that ended it.
	send := func(fields ...string) (int, http2.ErrCode) {
		t.Helper()
		block.Reset()
		for i := 0; i+1 < len(fields); i += 2 {
			enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
		}
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
			t.Fatal(err)
		}
		defer func() { id += 2 }()
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				t.Fatalf("stream %d: %v", id, err)
			}
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if !f.IsAck() {
					fr.WriteSettingsAck()
				}
			case *http2.GoAwayFrame:
				t.Fatalf("stream %d: GOAWAY %v", id, f.ErrCode)
			case *http2.RSTStreamFrame:
				if f.StreamID == id {
					return 0, f.ErrCode
				}
			case *http2.MetaHeadersFrame:
				if f.StreamID == id {
					var status int
					fmt.Sscan(f.PseudoValue("status"), &status)
					return status, 0
				}
			}
		}
	}
	req := func(kv ...string) []string {
		return append([]string{":method", "GET", ":scheme", "http", ":path", "/p", ":authority", "shop.example"}, kv...)
	}
	for _, c := range []struct {
		name   string
		fields []string
	}{
		{"CR in a value", req("x-a", "a\rb")},
		{"LF in a value", req("x-a", "a\nb")},
		{"NUL in a value", req("x-a", "a\x00b")},
		{"leading space in a value", req("x-a", " a")},
		{"trailing tab in a value", req("x-a", "a\t")},
		{"space in a name", req("x a", "1")},
		{"uppercase name", req("X-A", "1")},
		{"CR in :authority", []string{":method", "GET", ":scheme", "http", ":path", "/p", ":authority", "shop.example\r\nx: 1"}},
		{"LF in :path", []string{":method", "GET", ":scheme", "http", ":path", "/p\nx", ":authority", "shop.example"}},
		{"space in :path", []string{":method", "GET", ":scheme", "http", ":path", "/p HTTP/1.1", ":authority", "shop.example"}},
		{"DEL in :path", []string{":method", "GET", ":scheme", "http", ":path", "/p\x7f", ":authority", "shop.example"}},
		{"userinfo in :authority", []string{":method", "GET", ":scheme", "http", ":path", "/p", ":authority", "u@shop.example"}},
		{"space in :authority", []string{":method", "GET", ":scheme", "http", ":path", "/p", ":authority", "shop.example x"}},
		{"transfer-encoding", req("transfer-encoding", "chunked")},
		{"connection", req("connection", "close")},
		{"te other than trailers", req("te", "gzip")},
		{"content-length with no body", req("content-length", "5")},
		{"host other than :authority", req("host", "other.example")},
	} {
		before := o.hits.Load()
		status, code := send(c.fields...)
		if status != 0 || code != http2.ErrCodeProtocol {
			t.Errorf("%s: status %d, reset %v; want a PROTOCOL_ERROR reset", c.name, status, code)
		}
		if n := o.hits.Load() - before; n != 0 {
			t.Errorf("%s: the origin got %d requests, want none", c.name, n)
		}
	}
	before := o.hits.Load()
	if status, code := send(req("host", "Shop.Example")...); status != 200 || code != 0 {
		t.Fatalf("well-formed request: status %d, reset %v", status, code)
	}
	if n := o.hits.Load() - before; n != 1 {
		t.Fatalf("well-formed request: the origin got %d requests, want 1", n)
	}
	if s := o.saw(); s.uri != "/p" || s.host != "shop.example" {
		t.Errorf("origin saw %s with Host %q; want /p with the :authority, shop.example", s.uri, s.host)
	}
}

// lineLog is a fasthttp.Logger that keeps what it is given.
type lineLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *lineLog) Printf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
}

func (l *lineLog) text() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// TestMalformedRequestNotLogged: the line fasthttp logs for a request it cannot read
// names the error but not the request's bytes, which carry cookies and credentials.
func TestMalformedRequestNotLogged(t *testing.T) {
	cfg := mustParse(t, `
route "hello" {
  respond { status = 200 }
}
`)
	px := New(NewMetrics(prometheus.NewRegistry()))
	if _, err := px.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := px.NewServer(cfg)
	logs := &lineLog{}
	srv.Logger = logs
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown(); px.Close() })

	_, resp, _, _ := exchangeRaw(t, ln.Addr().String(), "GET / HTTP/1.1\r\nHost: shop.example\r\n"+
		"Cookie: session=s3cr3t-cookie\r\nAuthorization: Bearer s3cr3t-token\r\nX-A : 1\r\n\r\n")
	if resp.StatusCode != 400 {
		t.Fatalf("status %d, want 400", resp.StatusCode)
	}
	eventually(t, "the error logged", func() bool { return strings.Contains(logs.text(), "invalid header key") })
	if text := logs.text(); strings.Contains(text, "s3cr3t") {
		t.Errorf("the log has the request's secrets: %s", text)
	}
}

// TestChunkFramingBounded: the bytes a chunked body's framing takes (sizes, extensions)
// are bounded by twice max_body_size plus max_header_size and 64 KiB: an endless chunk
// extension is answered 413 and its connection closed; tiny chunks and a long extension
// within the bound go through.
func TestChunkFramingBounded(t *testing.T) {
	o := startFramingOrigin(t)
	e := startEdge(t, fmt.Sprintf(`
max_body_size   = "1KB"
max_header_size = "4KB"
upstream "app" {
  servers = [%q]
}
route "app" {
  upstream = "app"
}
`, o.addr))
	head := "POST /p HTTP/1.1\r\nHost: shop.example\r\nTransfer-Encoding: chunked\r\n\r\n"

	// 1000 one-byte chunks: 6 bytes of framing per byte of data.
	var tiny strings.Builder
	for range 1000 {
		tiny.WriteString("1\r\nx\r\n")
	}
	tiny.WriteString("0\r\n\r\n")
	if _, resp, body, _ := exchangeRaw(t, e.addr, head+tiny.String()); resp.StatusCode != 200 || o.saw().body != strings.Repeat("x", 1000) {
		t.Fatalf("1000 one-byte chunks: %d %q, origin got %d bytes", resp.StatusCode, body, len(o.saw().body))
	}
	// A 32 KiB extension is within the bound (2 KiB + 4 KiB + 64 KiB).
	ext := "5;x=" + strings.Repeat("a", 32<<10) + "\r\nhello\r\n0\r\n\r\n"
	if _, resp, body, _ := exchangeRaw(t, e.addr, head+ext); resp.StatusCode != 200 || o.saw().body != "hello" {
		t.Fatalf("32 KiB extension: %d %q, origin got %q", resp.StatusCode, body, o.saw().body)
	}

	// An endless extension: the client keeps writing until edge closes.
	before := o.hits.Load()
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	go func() {
		io.WriteString(c, head+"5;x=")
		chunk := []byte(strings.Repeat("a", 16<<10))
		for range 1024 { // 16 MiB at most, then the test's deadline
			if _, err := c.Write(chunk); err != nil {
				return // edge answered and closed
			}
		}
	}()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 413 || string(body) != `{"error":"body_too_large"}` || !resp.Close {
		t.Errorf("endless extension: %d %q close %v; want 413 body_too_large and the connection closed", resp.StatusCode, body, resp.Close)
	}
	if n := o.hits.Load() - before; n != 0 {
		t.Errorf("the origin got %d requests, want none", n)
	}
}
