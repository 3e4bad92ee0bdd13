package h2up

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edge-gw/edge/internal/grpctest"
	"github.com/edge-gw/edge/internal/testcert"
	"github.com/valyala/fasthttp"
)

// do runs c.Do with a 10s bound (no test waits that long) and fails on error.
func do(t *testing.T, c *Client, req *fasthttp.Request) (*Exchange, *fasthttp.Response) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	resp := &fasthttp.Response{}
	x, err := c.Do(ctx, req, resp)
	if err != nil {
		t.Fatalf("Do: %v", err)
	}
	t.Cleanup(func() { _ = resp.CloseBodyStream() })
	return x, resp
}

// doBare is do without cleanups: for TestNoGoroutineLeak, which must see everything
// end before it returns.
func doBare(t *testing.T, c *Client, req *fasthttp.Request) (*Exchange, *fasthttp.Response) {
	t.Helper()
	resp := &fasthttp.Response{}
	x, err := c.Do(context.Background(), req, resp)
	if err != nil {
		t.Fatalf("Do: %v", err)
	}
	return x, resp
}

func TestUnary(t *testing.T) {
	c := startClient(t)
	for i := range 3 { // the later calls reuse the connection
		msg := "hello " + strconv.Itoa(i)
		x, resp := do(t, c, grpcRequest("Echo", msg))
		if resp.StatusCode() != 200 || string(resp.Header.ContentType()) != "application/grpc" {
			t.Fatalf("status %d, content-type %q", resp.StatusCode(), resp.Header.ContentType())
		}
		if !resp.IsBodyStream() {
			t.Fatal("the body is not a stream")
		}
		wantMessage(t, resp, "echo:"+msg)
		wantTrailer(t, x, resp, "grpc-status", "0")
		if x.Err() != nil {
			t.Fatalf("Err() = %v", x.Err())
		}
	}
}

func TestUnaryErrorTrailersOnly(t *testing.T) {
	// A unary handler failing before any message: grpc-go answers "Trailers-Only",
	// grpc-status and friends in the only HEADERS frame, which resp mirrors.
	c := startClient(t)
	x, resp := do(t, c, grpcRequest("Echo", "fail"))
	if resp.IsBodyStream() || len(resp.Body()) != 0 {
		t.Fatalf("Trailers-Only answer got a body (stream %v, %q)", resp.IsBodyStream(), resp.Body())
	}
	for name, want := range map[string]string{"grpc-status": "8", "grpc-message": "custom", "x-custom": "v"} {
		if got := string(resp.Header.Peek(name)); got != want {
			t.Fatalf("header %s = %q; want %q", name, got, want)
		}
	}
	if tr := trailers(x); tr != "" || x.Err() != nil {
		t.Fatalf("trailers %q, Err %v; want none, nil", tr, x.Err())
	}
}

func TestStreamErrorTrailers(t *testing.T) {
	// A failure after a message: status and trailer metadata come as real trailers.
	c := startClient(t)
	x, resp := do(t, c, grpcRequest("Count", "fail"))
	wantMessage(t, resp, "msg 0")
	wantTrailer(t, x, resp, "grpc-status", "8")
	wantTrailer(t, x, resp, "grpc-message", "custom")
	wantTrailer(t, x, resp, "x-custom", "v")
	if x.Err() != nil {
		t.Fatalf("Err() = %v", x.Err())
	}
}

func TestHeadersForwarded(t *testing.T) {
	c := startClient(t)
	req := grpcRequest("Echo", "meta")
	req.Header.Set("X-Forward", "yes")
	req.Header.Set("Connection", "keep-alive, X-Hop")
	req.Header.Set("X-Hop", "no")
	req.Header.Set("Keep-Alive", "timeout=5")
	req.Header.Set("Proxy-Authorization", "secret")
	x, resp := do(t, c, req)
	md := readOne(t, resp)
	for _, want := range []string{":authority=upstream.test\n", "x-forward=yes\n", "user-agent=grpc-go-test"} {
		if !strings.Contains(md, want) {
			t.Errorf("upstream metadata lacks %q:\n%s", want, md)
		}
	}
	for _, bad := range []string{"x-hop", "keep-alive", "proxy-authorization", "Go-http-client"} {
		if strings.Contains(md, bad) {
			t.Errorf("upstream metadata has %q:\n%s", bad, md)
		}
	}
	wantTrailer(t, x, resp, "grpc-status", "0")
}

func TestServerStreaming(t *testing.T) {
	s, addr := grpctest.StartService(t, grpctest.Options{})
	c := newClient(t, Options{Addr: addr})
	x, resp := do(t, c, grpcRequest("Count", "100"))
	// The server sends the rest only once release is closed: reading the first message
	// now proves the body streams as DATA arrives.
	first, err := readFrame(resp.BodyStream())
	if err != nil || first != "msg 0" {
		t.Fatalf("first message %q, %v", first, err)
	}
	s.Release()
	rest := readAll(t, resp)
	if len(rest) != 99 {
		t.Fatalf("%d more messages; want 99", len(rest))
	}
	for i, m := range rest {
		if want := "msg " + strconv.Itoa(i+1); m != want {
			t.Fatalf("message %d is %q; want %q", i+1, m, want)
		}
	}
	wantTrailer(t, x, resp, "grpc-status", "0")
}

func TestClientStreaming(t *testing.T) {
	c := startClient(t)
	req, pw := pipeRequest("Sum")
	go func() {
		for _, m := range []string{"a", "bb", "ccc"} {
			if _, err := pw.Write(appendFrame(nil, m)); err != nil {
				return
			}
		}
		_ = pw.Close()
	}()
	x, resp := do(t, c, req)
	wantMessage(t, resp, "3 messages, 6 bytes")
	wantTrailer(t, x, resp, "grpc-status", "0")
}

func TestBidirectional(t *testing.T) {
	c := startClient(t)
	req, pw := pipeRequest("Chat")
	// Nothing has been written yet: Do returns on the response headers alone.
	x, resp := do(t, c, req)
	if got := string(resp.Header.Peek("x-chat")); got != "open" {
		t.Fatalf("x-chat header %q", got)
	}
	for i := range 5 {
		msg := "ping " + strconv.Itoa(i)
		if _, err := pw.Write(appendFrame(nil, msg)); err != nil {
			t.Fatal(err)
		}
		// The answer arrives while the request is still open.
		got, err := readFrame(resp.BodyStream())
		if err != nil || got != "re:"+msg {
			t.Fatalf("answer %q, %v; want re:%s", got, err, msg)
		}
	}
	_ = pw.Close()
	if rest := readAll(t, resp); len(rest) != 0 {
		t.Fatalf("unexpected messages %q", rest)
	}
	wantTrailer(t, x, resp, "grpc-status", "0")
}

func TestEarlyCloseCancelsUpstream(t *testing.T) {
	s, addr := grpctest.StartService(t, grpctest.Options{})
	c := newClient(t, Options{Addr: addr})
	x, resp := do(t, c, grpcRequest("Count", "100"))
	if m, err := readFrame(resp.BodyStream()); err != nil || m != "msg 0" {
		t.Fatalf("first message %q, %v", m, err)
	}
	if err := resp.CloseBodyStream(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Canceled(): // the handler saw its call canceled: RST_STREAM reached it
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream call was not canceled")
	}
	if !errors.Is(x.Err(), ErrCanceled) {
		t.Fatalf("Err() = %v; want ErrCanceled", x.Err())
	}
}

func TestGRPCTimeoutBeforeHeaders(t *testing.T) {
	// The handler sleeps 2s and grpc-go does not answer an expired deadline with a
	// status (it resets the stream): edge's own deadline ends Do with ErrTimeout, for
	// the proxy to answer WriteStatus(DeadlineExceeded).
	c := startClient(t)
	req := grpcRequest("Echo", "sleep")
	req.Header.Set("grpc-timeout", "200m")
	start := time.Now()
	_, err := c.Do(context.Background(), req, &fasthttp.Response{})
	if !errors.Is(err, ErrTimeout) || Classify(err) != "timeout" {
		t.Fatalf("Do error %v (%s); want ErrTimeout", err, Classify(err))
	}
	if took := time.Since(start); took > 1500*time.Millisecond {
		t.Fatalf("Do took %v: grpc-timeout 200m was not the deadline", took)
	}
}

func TestGRPCTimeoutMidStream(t *testing.T) {
	// Headers and a message have gone out when the deadline passes: the body ends in
	// io.EOF with edge's grpc-status 4, as the caller can no longer answer otherwise.
	c := startClient(t)
	req := grpcRequest("Stall", "x")
	req.Header.Set("grpc-timeout", "200m")
	start := time.Now()
	x, resp := do(t, c, req)
	wantMessage(t, resp, "first")
	if took := time.Since(start); took > 1500*time.Millisecond {
		t.Fatalf("the exchange took %v: grpc-timeout 200m was not the deadline", took)
	}
	wantTrailer(t, x, resp, "grpc-status", "4")
	wantTrailer(t, x, resp, "grpc-message", "edge: upstream deadline exceeded")
	if !errors.Is(x.Err(), ErrTimeout) {
		t.Fatalf("Err() = %v; want ErrTimeout", x.Err())
	}
}

func TestDeadlineForwarded(t *testing.T) {
	c := startClient(t)
	// f calls "deadline" with grpc-timeout gt (none if empty) and ctx bounded by ctxT
	// (none if 0) and checks the time left the upstream saw is in (lo, hi] ms.
	f := func(gt string, ctxT time.Duration, lo, hi int) {
		t.Helper()
		ctx := context.Background()
		if ctxT > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, ctxT)
			defer cancel()
		}
		req := grpcRequest("Echo", "deadline")
		if gt != "" {
			req.Header.Set("grpc-timeout", gt)
		}
		resp := &fasthttp.Response{}
		if _, err := c.Do(ctx, req, resp); err != nil {
			t.Fatal(err)
		}
		got := readOne(t, resp)
		if lo < 0 {
			if got != "none" {
				t.Fatalf("grpc-timeout %q, ctx %v: upstream saw a deadline %sms; want none", gt, ctxT, got)
			}
			return
		}
		ms, err := strconv.Atoi(got)
		if err != nil || ms <= lo || ms > hi {
			t.Fatalf("grpc-timeout %q, ctx %v: upstream had %sms left; want (%d, %d]", gt, ctxT, got, lo, hi)
		}
	}
	f("", 0, -1, 0)                  // no deadline anywhere
	f("3S", 0, 2000, 3000)           // grpc-timeout as given
	f("5S", time.Second, 0, 1000)    // ctx is shorter: the upstream hears of it
	f("", 2*time.Second, 1000, 2000) // gRPC call without grpc-timeout: edge's budget
	f("500m", 5*time.Second, 0, 500) // grpc-timeout is shorter
	f("bogus", time.Second, 0, 1000) // malformed: replaced by edge's budget
}

func TestTLS(t *testing.T) {
	ca := testcert.NewCA(t)
	leaf := ca.Leaf(t, testcert.Opts{Names: []string{"localhost", "127.0.0.1"}})
	cert, err := tls.LoadX509KeyPair(leaf.CertFile, leaf.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	_, addr := grpctest.StartService(t, grpctest.Options{Cert: &cert})

	c := newClient(t, Options{Addr: addr, TLS: true, ServerName: "localhost", RootCAs: ca.Pool})
	x, resp := do(t, c, grpcRequest("Echo", "over tls"))
	wantMessage(t, resp, "echo:over tls")
	wantTrailer(t, x, resp, "grpc-status", "0")

	// Default ServerName: Addr's host, an IP SAN of the leaf.
	c = newClient(t, Options{Addr: addr, TLS: true, RootCAs: ca.Pool})
	_, resp = do(t, c, grpcRequest("Echo", "by ip"))
	wantMessage(t, resp, "echo:by ip")

	// A name the certificate does not carry, or an unknown CA: never connected.
	for _, o := range []Options{
		{Addr: addr, TLS: true, ServerName: "other.test", RootCAs: ca.Pool},
		{Addr: addr, TLS: true, ServerName: "localhost", RootCAs: testcert.NewCA(t).Pool},
	} {
		c = newClient(t, o)
		if err := echoErr(context.Background(), c); !errors.Is(err, ErrConnect) {
			t.Fatalf("Do with ServerName %q: %v; want ErrConnect", o.ServerName, err)
		}
	}
}

func TestConnectRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	for _, tlsOn := range []bool{false, true} {
		c := newClient(t, Options{Addr: addr, TLS: tlsOn})
		err = echoErr(context.Background(), c)
		if Classify(err) != "connect" || !strings.Contains(err.Error(), addr) {
			t.Fatalf("TLS %v: Do error %v (%q); want connect naming %s", tlsOn, err, Classify(err), addr)
		}
	}
}

func TestClosedClient(t *testing.T) {
	addr := grpctest.Start(t)
	c := New(Options{Addr: addr})
	c.Close()
	err := echoErr(context.Background(), c)
	if Classify(err) != "connect" {
		t.Fatalf("Do after Close: %v; want connect", err)
	}
}

// startSilent accepts TCP connections and never says anything.
func startSilent(t *testing.T) string {
	t.Helper()
	conns := make(chan net.Conn, 16)
	t.Cleanup(func() { // after the accept loop's end
		close(conns)
		for conn := range conns {
			_ = conn.Close()
		}
	})
	return serveLoopback(t, func(ln net.Listener) error {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return err
			}
			conns <- conn
			go func() { _, _ = io.Copy(io.Discard, conn) }()
		}
	}, nil)
}

func TestSilentServerTimeout(t *testing.T) {
	addr := startSilent(t)
	c := newClient(t, Options{Addr: addr})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := echoErr(ctx, c)
	if !errors.Is(err, ErrTimeout) || Classify(err) != "timeout" {
		t.Fatalf("Do error %v (%q); want timeout", err, Classify(err))
	}

	// A canceled ctx is the caller's doing, not the upstream's.
	ctx, cancel = context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel) // while the request is in flight
	err = echoErr(ctx, c)
	if Classify(err) != "canceled" {
		t.Fatalf("Do error %v (%q); want canceled", err, Classify(err))
	}

	// TLS to a server that never answers the handshake: ConnectTimeout, connect.
	c = newClient(t, Options{Addr: addr, TLS: true, ConnectTimeout: 200 * time.Millisecond})
	err = echoErr(context.Background(), c)
	if Classify(err) != "connect" {
		t.Fatalf("TLS Do error %v (%q); want connect", err, Classify(err))
	}
}

func TestHTTP1FrontWritesTrailers(t *testing.T) {
	// fasthttp's own HTTP/1.1 server writes the streamed body chunked and the
	// upstream's trailers after it.
	c := startClient(t)
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		// The body streams after the handler returns: the exchange's context must
		// outlive it, and is released by the exchange's end.
		if _, err := c.Do(context.Background(), &ctx.Request, &ctx.Response); err != nil {
			WriteStatus(&ctx.Response, Unavailable, err.Error())
		}
	}}
	addr := serveLoopback(t, srv.Serve, func() { _ = srv.Shutdown() })

	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	body := appendFrame(nil, "via http/1.1")
	_, err = conn.Write(append([]byte("POST "+grpctest.Echo+" HTTP/1.1\r\nHost: upstream.test\r\n"+
		"Content-Type: application/grpc\r\nTE: trailers\r\nConnection: close\r\n"+
		"Content-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"), body...))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(bufio.NewReader(conn))
	if err != nil {
		t.Fatal(err)
	}
	head, chunked, ok := strings.Cut(string(raw), "\r\n\r\n")
	if !ok || !strings.HasPrefix(head, "HTTP/1.1 200 OK\r\n") ||
		!strings.Contains(head, "\r\nTransfer-Encoding: chunked") ||
		!strings.Contains(head, "\r\nTrailer: Grpc-Status, Grpc-Message") {
		t.Fatalf("response head:\n%s", head)
	}
	// One chunk holding the message, the last chunk, the trailer section (grpc-go
	// sends grpc-message even when it is empty).
	msg := string(appendFrame(nil, "echo:via http/1.1"))
	want := strconv.FormatInt(int64(len(msg)), 16) + "\r\n" + msg + "\r\n0\r\n" +
		"Grpc-Message: \r\nGrpc-Status: 0\r\n\r\n"
	if chunked != want {
		t.Fatalf("chunked body and trailers:\n%q\nwant\n%q", chunked, want)
	}
}

func TestNoGoroutineLeak(t *testing.T) {
	// The server's goroutines per connection end only when the client's connection
	// closes: counting against a baseline taken with the server idle checks the
	// client's side.
	addr := grpctest.Start(t)
	base := runtime.NumGoroutine()
	c := New(Options{Addr: addr})

	x, resp := doBare(t, c, grpcRequest("Echo", "one"))
	readAll(t, resp)
	if x.Err() != nil {
		t.Fatal(x.Err())
	}
	_, resp = doBare(t, c, grpcRequest("Count", "100"))
	if _, err := readFrame(resp.BodyStream()); err != nil {
		t.Fatal(err)
	}
	_ = resp.CloseBodyStream() // canceled midway
	req, pw := pipeRequest("Chat")
	_, resp = doBare(t, c, req)
	_, _ = pw.Write(appendFrame(nil, "hi"))
	if _, err := readFrame(resp.BodyStream()); err != nil {
		t.Fatal(err)
	}
	c.Close() // with the Chat exchange in flight: its connection closes at its end
	if err := echoErr(context.Background(), c); !errors.Is(err, ErrConnect) {
		t.Fatalf("Do after Close: %v; want ErrConnect", err)
	}
	_ = resp.CloseBodyStream() // the request body is still open: closed for us
	if _, err := pw.Write([]byte("x")); err == nil {
		t.Fatal("the request body pipe is still read after the exchange ended")
	}

	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			_ = pprof.Lookup("goroutine").WriteTo(os.Stderr, 1)
			t.Fatalf("%d goroutines after Close; %d before", runtime.NumGoroutine(), base)
		}
		time.Sleep(10 * time.Millisecond) // polling, not waiting for an event
	}
}

// BenchmarkUnary measures a unary call through h2up to an in-process grpc-go server;
// the allocations counted include the server's.
func BenchmarkUnary(b *testing.B) {
	addr := grpctest.Start(b)
	c := New(Options{Addr: addr})
	defer c.Close()
	req := grpcRequest("Echo", "bench")
	var resp fasthttp.Response
	b.ReportAllocs()
	for b.Loop() {
		x, err := c.Do(context.Background(), req, &resp)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, resp.BodyStream()); err != nil {
			b.Fatal(err)
		}
		if err := x.Err(); err != nil {
			b.Fatal(err)
		}
	}
}

func TestPlainHTTP2Upstream(t *testing.T) {
	// Not gRPC: a net/http h2c server shows what goes upstream, declared trailers and
	// how a broken body ends.
	mux := http.NewServeMux()
	mux.HandleFunc("/headers", func(w http.ResponseWriter, r *http.Request) {
		var lines []string
		for k, vv := range r.Header {
			lines = append(lines, strings.ToLower(k)+"="+strings.Join(vv, ","))
		}
		sort.Strings(lines)
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %s host=%s len=%d body=%s\n%s\n", r.Proto, r.Method, r.RequestURI, r.Host, r.ContentLength, body, strings.Join(lines, "\n"))
	})
	mux.HandleFunc("/trailer", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Sum")
		_, _ = io.WriteString(w, "data")
		w.Header().Set("X-Sum", "42")
	})
	mux.HandleFunc("/broken", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "partial")
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // RST_STREAM
	})
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: mux, Protocols: &p, ErrorLog: log.New(io.Discard, "", 0)}
	c := newClient(t, Options{Addr: serveLoopback(t, srv.Serve, func() { _ = srv.Close() })})

	req := &fasthttp.Request{}
	req.Header.SetMethod(fasthttp.MethodPut)
	req.SetRequestURI("/headers?a=1&b=%2F")
	req.Header.SetHost("app.test:8443")
	req.Header.Set("X-Keep", "1")
	req.Header.Set("TE", "gzip") // not "trailers": dropped
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Transfer-Encoding", "chunked")
	req.SetBodyString("hello")
	_, resp := do(t, c, req)
	if ct := string(resp.Header.ContentType()); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("content-type %q", ct)
	}
	got, err := io.ReadAll(resp.BodyStream())
	if err != nil {
		t.Fatal(err)
	}
	want := "HTTP/2.0 PUT /headers?a=1&b=%2F host=app.test:8443 len=5 body=hello\n" +
		"content-length=5\nx-keep=1\n"
	if string(got) != want {
		t.Fatalf("upstream saw:\n%s\nwant:\n%s", got, want)
	}

	req = &fasthttp.Request{}
	req.SetRequestURI("/headers")
	req.Header.Set("Te", "trailers")
	_, resp = do(t, c, req)
	if got, _ := io.ReadAll(resp.BodyStream()); !strings.Contains(string(got), "\nte=trailers\n") {
		t.Fatalf("te: trailers was not forwarded:\n%s", got)
	}

	req = &fasthttp.Request{}
	req.SetRequestURI("/trailer")
	x, resp := do(t, c, req)
	if got, err := io.ReadAll(resp.BodyStream()); err != nil || string(got) != "data" {
		t.Fatalf("body %q, %v", got, err)
	}
	wantTrailer(t, x, resp, "x-sum", "42")

	req = &fasthttp.Request{}
	req.SetRequestURI("/broken")
	x, resp = do(t, c, req)
	got, err = io.ReadAll(resp.BodyStream())
	if string(got) != "partial" || !errors.Is(err, ErrBroken) || !errors.Is(x.Err(), ErrBroken) {
		t.Fatalf("body %q, error %v, Err %v; want partial, ErrBroken", got, err, x.Err())
	}
}
