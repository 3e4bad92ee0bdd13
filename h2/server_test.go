package h2

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edge-gw/edge/internal/testcert"
	"golang.org/x/net/http2"
)

func TestRequests(t *testing.T) {
	ts := startServer(t, Config{}, nil)
	cl := h2cClient()
	base := "http://" + ts.addr
	small := []byte("hello, h2")
	big := bytes.Repeat([]byte("0123456789abcdef"), 3<<20/16) // 3 MiB

	// f sends one request and checks the echo.
	f := func(method, path string, body []byte, want map[string]string) {
		t.Helper()
		resp, b := do(t, cl, method, base+path, body, "X-Test", "v1")
		if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
			t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, resp.Proto)
		}
		got := parseEcho(t, b)
		sum := sha256.Sum256(body)
		want["body"] = fmt.Sprint(len(body))
		want["sum"] = fmt.Sprintf("%x", sum[:8])
		want["host"] = ts.addr
		want["x-test"] = "v1"
		want["proto"] = "HTTP/1.1"
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s %s: %s=%q, want %q", method, path, k, got[k], v)
			}
		}
		if resp.Header.Get("X-Echo") != "yes" || resp.Header.Get("Server") != "edge-test" ||
			resp.Header.Get("Content-Type") != "text/plain" || resp.ContentLength != int64(len(b)) ||
			resp.Header.Get("Date") == "" {
			t.Errorf("%s %s: response headers %v, content-length %d", method, path, resp.Header, resp.ContentLength)
		}
	}
	f("GET", "/a/b?c=d", nil, map[string]string{"method": "GET", "path": "/a/b?c=d"})
	f("POST", "/small", small, map[string]string{"method": "POST", "path": "/small"})
	f("POST", "/upload", big, map[string]string{"method": "POST", "path": "/upload"})
	f("PUT", "/empty", []byte{}, map[string]string{"method": "PUT"})

	// The remote address the handler sees is the client's end of the TCP connection.
	var local net.Addr
	t1 := &http.Transport{Protocols: new(http.Protocols), DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		if err == nil {
			local = c.LocalAddr()
		}
		return c, err
	}}
	t1.Protocols.SetUnencryptedHTTP2(true)
	_, b := do(t, &http.Client{Transport: t1}, "GET", base+"/remote", nil)
	if got := parseEcho(t, b)["remote"]; got != local.String() {
		t.Errorf("remote %q, want %q", got, local)
	}
}

func TestNoBodyAnswers(t *testing.T) {
	ts := startServer(t, Config{}, nil)
	cl := h2cClient()
	resp, b := do(t, cl, "HEAD", "http://"+ts.addr+"/x", nil)
	if resp.StatusCode != 200 || len(b) != 0 || resp.ContentLength <= 0 {
		t.Errorf("HEAD: %d, body %d bytes, content-length %d", resp.StatusCode, len(b), resp.ContentLength)
	}
	resp, b = do(t, cl, "GET", "http://"+ts.addr+"/204", nil)
	if resp.StatusCode != 204 || len(b) != 0 || resp.Header.Get("Content-Length") != "" {
		t.Errorf("204: %d, body %d bytes, headers %v", resp.StatusCode, len(b), resp.Header)
	}
	// On the wire: HEAD and 204 end the stream on HEADERS.
	r := dialRaw(t, ts.addr)
	f := func(id uint32, method, path string) {
		t.Helper()
		r.headers(id, true, ":method", method, ":scheme", "http", ":path", path, ":authority", "x")
		ev := r.expect("HEADERS", func(ev event) bool { return ev.typ == http2.FrameHeaders && ev.stream == id })
		if !ev.end {
			t.Errorf("%s %s: HEADERS without END_STREAM", method, path)
		}
	}
	f(1, "HEAD", "/")
	f(3, "GET", "/204")
}

func TestBigResponseFlowControl(t *testing.T) {
	ts := startServer(t, Config{}, nil)
	// net/http's HTTP/2 client (the same code as x/net's) with small receive windows,
	// so the server must wait for WINDOW_UPDATEs many times.
	t1 := &http.Transport{
		Protocols: new(http.Protocols),
		HTTP2:     &http.HTTP2Config{MaxReceiveBufferPerConnection: 64 << 10, MaxReceiveBufferPerStream: 16 << 10},
	}
	t1.Protocols.SetUnencryptedHTTP2(true)
	cl := &http.Client{Transport: t1, Timeout: 30 * time.Second}
	defer t1.CloseIdleConnections()
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, b := do(t, cl, "GET", "http://"+ts.addr+"/big", nil)
			if resp.StatusCode != 200 || resp.ProtoMajor != 2 || !bytes.Equal(b, bigBody5M) ||
				resp.ContentLength != int64(len(bigBody5M)) || resp.Header.Get("Content-Type") != "application/octet-stream" {
				t.Errorf("/big: %d %s, %d bytes (equal %v), content-length %d", resp.StatusCode, resp.Proto,
					len(b), bytes.Equal(b, bigBody5M), resp.ContentLength)
			}
		}()
	}
	wg.Wait()
}

func TestHeadersBothWays(t *testing.T) {
	ts := startServer(t, Config{}, nil)
	cl := h2cClient()
	// The Go client splits Cookie into crumbs (RFC 9113 §8.2.3); the handler sees one field.
	resp, b := do(t, cl, "GET", "http://"+ts.addr+"/cookies", nil, "Cookie", "a=1; b=2", "Cookie", "c=3")
	if got := parseEcho(t, b)["cookie"]; got != "a=1; b=2; c=3" {
		t.Errorf("cookie %q, want %q", got, "a=1; b=2; c=3")
	}
	if sc := resp.Header.Values("Set-Cookie"); len(sc) != 2 || sc[0] != "a=1" || sc[1] != "b=2" {
		t.Errorf("set-cookie %q, want [a=1 b=2]", sc)
	}
	// Crumbs sent as separate fields by a raw client, and a host repeating :authority
	// (one naming another host is malformed: TestMalformed).
	r := dialRaw(t, ts.addr)
	r.headers(1, true, ":method", "GET", ":scheme", "https", ":path", "/c", ":authority", "auth.example",
		"host", "Auth.Example", "cookie", "x=1", "x-test", "t", "cookie", "y=2")
	status, body := r.expectStatus(1)
	got := parseEcho(t, body)
	if status != 200 || got["cookie"] != "x=1; y=2" || got["host"] != "auth.example" || got["x-test"] != "t" {
		t.Errorf("raw: %d %v", status, got)
	}
	// host is used when there is no :authority.
	r.headers(3, true, ":method", "GET", ":scheme", "http", ":path", "/h", "host", "host.example")
	status, body = r.expectStatus(3)
	if got := parseEcho(t, body); status != 200 || got["host"] != "host.example" {
		t.Errorf("host: %d %v", status, got)
	}
	// A host that writes out (or leaves out) the port the scheme implies names the
	// same entity; :authority is what goes on.
	id := uint32(5)
	for _, c := range [][3]string{
		{"https", "auth.example", "auth.example:443"},
		{"https", "auth.example:443", "AUTH.example"},
		{"http", "auth.example", "auth.example:80"},
		{"http", "[::1]:80", "[::1]"},
	} {
		r.headers(id, true, ":method", "GET", ":scheme", c[0], ":path", "/p", ":authority", c[1], "host", c[2])
		status, body = r.expectStatus(id)
		if got := parseEcho(t, body); status != 200 || got["host"] != c[1] {
			t.Errorf(":scheme %s :authority %s host %s: %d %v, want 200 and host %s", c[0], c[1], c[2], status, got, c[1])
		}
		id += 2
	}
}

func TestConcurrentStreams(t *testing.T) {
	ts := startServer(t, Config{}, nil)
	cl := h2cClient()
	do(t, cl, "GET", "http://"+ts.addr+"/warm", nil) // one connection, settings known
	var wg sync.WaitGroup
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			path := fmt.Sprintf("/sleep?i=%d", i) // all 100 are in flight together
			body := bytes.Repeat([]byte{byte(i)}, i*100)
			resp, b := do(t, cl, "POST", "http://"+ts.addr+path, body, "X-Test", fmt.Sprint(i))
			got := parseEcho(t, b)
			if resp.StatusCode != 200 || got["path"] != path || got["x-test"] != fmt.Sprint(i) || got["body"] != fmt.Sprint(len(body)) {
				t.Errorf("stream %d: %d %v", i, resp.StatusCode, got)
			}
		}()
	}
	wg.Wait()
	if s := ts.srv.Stats(); s.ConnsTotal != 1 || s.StreamsTotal != 101 {
		t.Errorf("connections %d, streams %d; want 1 and 101", s.ConnsTotal, s.StreamsTotal)
	}
}

func TestLimits(t *testing.T) {
	ts := startServer(t, Config{MaxBodySize: 1 << 20}, nil)
	cl := h2cClient()
	// A body over MaxBodySize, without and with content-length.
	resp, b := do(t, cl, "POST", "http://"+ts.addr+"/up", bytes.Repeat([]byte("x"), 2<<20))
	if resp.StatusCode != 413 || string(b) != `{"error":"body_too_large"}` || resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("big body: %d %q %v", resp.StatusCode, b, resp.Header)
	}
	r := dialRaw(t, ts.addr)
	r.headers(1, false, ":method", "POST", ":scheme", "http", ":path", "/", ":authority", "x", "content-length", "5000000")
	if status, body := r.expectStatus(1); status != 413 || string(body) != `{"error":"body_too_large"}` {
		t.Errorf("declared big body: %d %q", status, body)
	}
	r.expectRST(1, http2.ErrCodeNo)

	// A header list over MaxHeaderListSize whose block is under it (Huffman): 431.
	long := strings.Repeat("a", 20000)
	r.headers(3, true, ":method", "GET", ":scheme", "http", ":path", "/", ":authority", "x", "x-long", long)
	if status, body := r.expectStatus(3); status != 431 || string(body) != `{"error":"header_too_large"}` {
		t.Errorf("big header list: %d %q", status, body)
	}
	// The connection still works, and the HPACK state is intact.
	r.headers(5, true, getFields...)
	if status, _ := r.expectStatus(5); status != 200 {
		t.Errorf("after 431: %d", status)
	}
}

func TestRefusedStream(t *testing.T) {
	ts := startServer(t, Config{MaxConcurrentStreams: 2}, nil)
	r := dialRaw(t, ts.addr)
	r.headers(1, true, ":method", "GET", ":scheme", "http", ":path", "/block", ":authority", "x")
	r.headers(3, true, ":method", "GET", ":scheme", "http", ":path", "/block", ":authority", "x")
	waitFor(t, "two handlers running", func() bool { return ts.blockedN.Load() == 2 })
	r.headers(5, true, getFields...)
	r.expectRST(5, http2.ErrCodeRefusedStream)
	// A reset stream still counts until its handler returns.
	r.fr.WriteRSTStream(1, http2.ErrCodeCancel)
	r.headers(7, true, getFields...)
	r.expectRST(7, http2.ErrCodeRefusedStream)
	ts.closeUnblock()
	if status, _ := r.expectStatus(3); status != 200 {
		t.Errorf("stream 3: %d", status)
	}
	waitFor(t, "streams done", func() bool { return ts.srv.Stats().StreamsActive == 0 })
	r.headers(9, true, getFields...)
	if status, _ := r.expectStatus(9); status != 200 {
		t.Errorf("stream 9: %d", status)
	}
	if s := ts.srv.Stats(); s.StreamsRefused != 2 || s.ResetsReceived != 1 {
		t.Errorf("refused %d, resets %d; want 2 and 1", s.StreamsRefused, s.ResetsReceived)
	}
}

// TestMalformed: RFC 9113 §8.2 and §8.3 requests get a stream error, and the connection
// serves the next stream.
func TestMalformed(t *testing.T) {
	ts := startServer(t, Config{}, nil)
	r := dialRaw(t, ts.addr)
	id := uint32(1)
	f := func(name string, end bool, kv ...string) {
		t.Helper()
		r.headers(id, end, kv...)
		r.expectRST(id, http2.ErrCodeProtocol)
		id += 2
	}
	g := []string{":method", "GET", ":scheme", "http", ":path", "/", ":authority", "x"}
	with := func(kv ...string) []string { return append(append([]string{}, g...), kv...) }
	f("uppercase name", true, with("X-Upper", "1")...)
	f("connection", true, with("connection", "keep-alive")...)
	f("keep-alive", true, with("keep-alive", "1")...)
	f("transfer-encoding", true, with("transfer-encoding", "chunked")...)
	f("upgrade", true, with("upgrade", "websocket")...)
	f("te gzip", true, with("te", "gzip")...)
	f("no :path", true, ":method", "GET", ":scheme", "http", ":authority", "x")
	f("no :method", true, ":scheme", "http", ":path", "/", ":authority", "x")
	f("no :scheme", true, ":method", "GET", ":path", "/", ":authority", "x")
	f("empty :path", true, ":method", "GET", ":scheme", "http", ":path", "", ":authority", "x")
	f("pseudo after regular", true, ":method", "GET", ":scheme", "http", "x-a", "1", ":path", "/")
	f("duplicate :path", true, with(":path", "/again")...)
	f("unknown pseudo", true, with(":foo", "1")...)
	f("newline in value", true, with("x-a", "a\nb")...)
	f("host other than :authority", true, with("host", "other.example")...)
	f("host with another port", true, with("host", "x:8080")...)
	f("host with the other scheme's port", true, with("host", "x:443")...)
	f("content-length with END_STREAM", true, with("content-length", "3")...)
	// content-length not matching DATA.
	r.headers(id, false, with("content-length", "3")...)
	r.fr.WriteData(id, true, []byte("ab"))
	r.expectRST(id, http2.ErrCodeProtocol)
	id += 2
	r.headers(id, false, with("content-length", "3")...)
	r.fr.WriteData(id, true, []byte("abcd"))
	r.expectRST(id, http2.ErrCodeProtocol)
	id += 2
	// te: trailers is fine; CONNECT is not served.
	r.headers(id, true, with("te", "trailers")...)
	if status, _ := r.expectStatus(id); status != 200 {
		t.Errorf("te trailers: %d", status)
	}
	id += 2
	r.headers(id, true, ":method", "CONNECT", ":authority", "x:443")
	if status, body := r.expectStatus(id); status != 405 || string(body) != `{"error":"method_not_allowed"}` {
		t.Errorf("CONNECT: %d %q", status, body)
	}
	id += 2
	// Trailers are accepted (and dropped); the request completes.
	r.headers(id, false, g...)
	r.fr.WriteData(id, false, []byte("abc"))
	r.headers(id, true, "x-trailer", "1")
	if status, body := r.expectStatus(id); status != 200 || parseEcho(t, body)["body"] != "3" {
		t.Errorf("trailers: %d %q", status, body)
	}
}

// TestConnectionErrors: RFC 9113 connection errors end in GOAWAY with their code.
func TestConnectionErrors(t *testing.T) {
	ts := startServer(t, Config{}, nil)
	f := func(name string, code http2.ErrCode, send func(r *rawClient)) {
		t.Helper()
		r := dialRaw(t, ts.addr)
		send(r)
		ev := r.expectGoAway(code)
		_ = ev
	}
	f("even stream id", http2.ErrCodeProtocol, func(r *rawClient) { r.headers(2, true, getFields...) })
	f("decreasing stream id", http2.ErrCodeProtocol, func(r *rawClient) {
		r.headers(5, true, getFields...)
		r.headers(3, true, getFields...)
	})
	f("HEADERS on a closed stream", http2.ErrCodeStreamClosed, func(r *rawClient) {
		r.headers(1, true, getFields...)
		r.expectStatus(1)
		r.headers(1, true, getFields...)
	})
	f("DATA on an idle stream", http2.ErrCodeProtocol, func(r *rawClient) { r.fr.WriteData(3, true, []byte("x")) })
	f("PUSH_PROMISE", http2.ErrCodeProtocol, func(r *rawClient) {
		r.headers(1, false, getFields...)
		r.fr.WritePushPromise(http2.PushPromiseParam{StreamID: 1, PromiseID: 2, BlockFragment: r.block(getFields...), EndHeaders: true})
	})
	f("connection WINDOW_UPDATE overflow", http2.ErrCodeFlowControl, func(r *rawClient) {
		r.fr.WriteWindowUpdate(0, 1<<31-1)
	})
	f("connection WINDOW_UPDATE of 0", http2.ErrCodeProtocol, func(r *rawClient) { r.fr.WriteWindowUpdate(0, 0) })
	f("frame over MaxFrameSize", http2.ErrCodeFrameSize, func(r *rawClient) {
		r.headers(1, false, getFields...)
		r.fr.WriteData(1, true, make([]byte, 20000))
	})
	f("CONTINUATION without HEADERS", http2.ErrCodeProtocol, func(r *rawClient) {
		r.fr.WriteContinuation(1, true, r.block(getFields...))
	})
	f("HEADERS interrupted", http2.ErrCodeProtocol, func(r *rawClient) {
		r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: r.block(getFields...)})
		r.fr.WritePing(false, [8]byte{})
	})
	f("bad HPACK", http2.ErrCodeCompression, func(r *rawClient) {
		r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0xff, 0xff, 0xff, 0xff}, EndHeaders: true, EndStream: true})
	})

	// Stream errors that keep the connection.
	r := dialRaw(t, ts.addr)
	r.headers(1, true, getFields...)
	r.expectStatus(1)
	r.fr.WriteData(1, true, []byte("late"))
	r.expectRST(1, http2.ErrCodeStreamClosed)
	r.headers(3, false, ":method", "POST", ":scheme", "http", ":path", "/", ":authority", "x")
	r.fr.WriteWindowUpdate(3, 1<<31-1)
	r.expectRST(3, http2.ErrCodeFlowControl)
	r.headers(5, true, getFields...)
	if status, _ := r.expectStatus(5); status != 200 {
		t.Errorf("after stream errors: %d", status)
	}
}

func TestPrefaceAndIdle(t *testing.T) {
	ts := startServer(t, Config{ReadTimeout: 200 * time.Millisecond, IdleTimeout: 300 * time.Millisecond}, nil)
	// No preface: closed after ReadTimeout.
	c, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatalf("read %d bytes from a connection that sent no preface", n)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("silent connection closed after %v", d)
	}
	if err := <-ts.errs; err != ErrTimeout {
		t.Errorf("ServeConn: %v, want ErrTimeout", err)
	}
	// A bad preface: closed.
	c2, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c2.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c2.Read(make([]byte, 1)); err == nil {
		t.Fatalf("read %d bytes after a bad preface", n)
	}
	if err := <-ts.errs; err != ErrBadPreface {
		t.Errorf("ServeConn: %v, want ErrBadPreface", err)
	}
	// Idle: GOAWAY(NO_ERROR), then closed.
	r := dialRaw(t, ts.addr)
	r.headers(1, true, getFields...)
	r.expectStatus(1)
	r.expectGoAway(http2.ErrCodeNo)
	if n := ts.srv.Stats().GoAwayByReason[ReasonIdle]; n != 1 {
		t.Errorf("idle GOAWAYs %d, want 1", n)
	}
}

func TestShutdown(t *testing.T) {
	ts := startServer(t, Config{}, nil)
	r := dialRaw(t, ts.addr)
	r.headers(1, true, ":method", "GET", ":scheme", "http", ":path", "/sleep", ":authority", "x")
	waitFor(t, "handler running", func() bool { return ts.handled.Load() == 1 })
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		done <- ts.srv.Shutdown(ctx)
	}()
	ev := r.expect("GOAWAY", func(ev event) bool { return ev.typ == http2.FrameGoAway })
	if ev.code != http2.ErrCodeNo || ev.last != 1 {
		t.Errorf("GOAWAY %v last %d, want NO_ERROR 1", ev.code, ev.last)
	}
	if status, body := r.expectStatus(1); status != 200 || parseEcho(t, body)["path"] != "/sleep" {
		t.Errorf("in-flight request: %d %q", status, body)
	}
	r.expectClosed()
	if err := <-done; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	// A connection arriving afterwards gets GOAWAY at once.
	r2 := dialRaw(t, ts.addr)
	r2.expectGoAway(http2.ErrCodeNo)
	if n := ts.srv.Stats().GoAwayByReason[ReasonShutdown]; n != 2 {
		t.Errorf("shutdown GOAWAYs %d, want 2", n)
	}
}

func TestTLS(t *testing.T) {
	ca := testcert.NewCA(t)
	leaf := ca.Leaf(t, testcert.Opts{Names: []string{"127.0.0.1"}})
	cert, err := tls.LoadX509KeyPair(leaf.CertFile, leaf.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	ts := startServerTLS(t, Config{}, nil, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"}})
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool}, Protocols: new(http.Protocols)}
	tr.Protocols.SetHTTP2(true) // ALPN "h2" only
	cl := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	resp, b := do(t, cl, "POST", "https://"+ts.addr+"/tls", []byte("secret"))
	if resp.StatusCode != 200 || resp.TLS == nil || resp.TLS.NegotiatedProtocol != "h2" {
		t.Fatalf("%d %v", resp.StatusCode, resp.TLS)
	}
	if got := parseEcho(t, b); got["path"] != "/tls" || got["body"] != "6" {
		t.Errorf("echo %v", got)
	}
	resp, b = do(t, cl, "GET", "https://"+ts.addr+"/big", nil)
	if resp.StatusCode != 200 || !bytes.Equal(b, bigBody5M) {
		t.Errorf("/big over TLS: %d, %d bytes", resp.StatusCode, len(b))
	}
}

// TestCurl: curl (nghttp2) with prior knowledge, a second independent client.
func TestCurl(t *testing.T) {
	out, err := exec.Command("curl", "-V").Output()
	if err != nil || !bytes.Contains(out, []byte("HTTP2")) {
		t.Skip("curl with HTTP/2 is not installed")
	}
	ts := startServer(t, Config{}, nil)
	out, err = exec.Command("curl", "-sS", "-i", "--http2-prior-knowledge", "-H", "X-Test: curl",
		"-b", "a=1; b=2", "--data-binary", "body!", "http://"+ts.addr+"/curl").CombinedOutput()
	if err != nil {
		t.Fatalf("curl: %v\n%s", err, out)
	}
	head, body, _ := strings.Cut(strings.ReplaceAll(string(out), "\r\n", "\n"), "\n\n")
	if !strings.HasPrefix(head, "HTTP/2 200") || !strings.Contains(head, "x-echo: yes") {
		t.Fatalf("curl head:\n%s", head)
	}
	got := parseEcho(t, []byte(body))
	if got["method"] != "POST" || got["path"] != "/curl" || got["x-test"] != "curl" || got["body"] != "5" || got["cookie"] != "a=1; b=2" {
		t.Errorf("curl echo %v", got)
	}
}
