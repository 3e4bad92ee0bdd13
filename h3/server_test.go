package h3

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/quicvarint"
	"github.com/valyala/fasthttp"
)

func TestRequestsReachTheHandler(t *testing.T) {
	ts := startServer(t, Config{MaxBodySize: 1000}, nil)
	c := ts.client(t)
	f := func(method, path, body string, hdr map[string]string, wantStatus int, wantBody string, wantHdr map[string]string) {
		t.Helper()
		req, _ := http.NewRequest(method, ts.url(path), strings.NewReader(body))
		if body == "" {
			req.Body = nil
		}
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != wantStatus || string(got) != wantBody {
			t.Errorf("%s %s: %d %q, want %d %q", method, path, resp.StatusCode, got, wantStatus, wantBody)
		}
		if resp.Proto != "HTTP/3.0" {
			t.Errorf("%s %s: proto %s", method, path, resp.Proto)
		}
		for k, v := range wantHdr {
			if g := resp.Header.Get(k); g != v {
				t.Errorf("%s %s: %s = %q, want %q", method, path, k, g, v)
			}
		}
		if resp.Header.Get("Connection") != "" || resp.Header.Get("Date") == "" {
			t.Errorf("%s %s: Connection %q, Date %q", method, path, resp.Header.Get("Connection"), resp.Header.Get("Date"))
		}
	}
	f("GET", "/a?b=c", "", map[string]string{"X-Hello": "world", "Cookie": "a=1"}, 200, "GET /a?b=c ",
		map[string]string{"X-Hello": "world", "X-Method": "GET", "X-Host": ts.addr, "X-Cookie": "a=1", "Content-Type": "text/plain", "Content-Length": "11"})
	f("POST", "/order", "item=42", nil, 200, "POST /order item=42", map[string]string{"X-Method": "POST"})
	f("HEAD", "/h", "", nil, 200, "", map[string]string{"Content-Length": "8"})
	f("PUT", "/big", strings.Repeat("x", 1001), nil, 413, `{"error":"body_too_large"}`, map[string]string{"Content-Type": "application/json"})
	if got := ts.Stats(); got.Requests != 3 || got.HandshakesOK != 1 {
		t.Errorf("stats %+v: want 3 requests on one connection", got)
	}
}

func TestStreamedResponseBody(t *testing.T) {
	const size = 200 << 10
	var closed atomic.Int64
	ts := startServer(t, Config{}, func(ctx *fasthttp.RequestCtx) {
		r := &closeCounter{Reader: bytes.NewReader(bytes.Repeat([]byte("z"), size)), n: &closed}
		ctx.SetBodyStream(r, -1)
	})
	resp, err := ts.client(t).Get(ts.url("/stream"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if len(b) != size || resp.ContentLength != -1 {
		t.Fatalf("got %d bytes, content-length %d; want %d, unknown", len(b), resp.ContentLength, size)
	}
	waitFor(t, "the body stream closed", func() bool { return closed.Load() == 1 })
}

type closeCounter struct {
	io.Reader
	n *atomic.Int64
}

func (c *closeCounter) Close() error { c.n.Add(1); return nil }

// resumed dials ts through addr (ts itself or a relay) with a TLS session from an
// earlier connection, so that the new one may send 0-RTT.
func resumed(t *testing.T, ts *testServer, addr string) *quic.Conn {
	t.Helper()
	tc := ts.tlsConfig()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	first, err := quic.DialAddr(ctx, ts.addr, tc, &quic.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := rawRequest(ctx, first, "GET", "/ticket", nil); err != nil || r.status != 200 {
		t.Fatalf("first connection: %+v %v", r, err)
	}
	first.CloseWithError(0, "")
	qc, err := quic.DialAddrEarly(ctx, addr, tc, &quic.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { qc.CloseWithError(0, "") })
	return qc
}

// A request received in 0-RTT runs at once if its method is safe; a POST waits for
// the handshake, and one whose handshake never completes (what a replayed first flight
// looks like: the attacker has no keys to finish it) never reaches the handler.
func TestEarlyDataUnsafeMethodsWaitForTheHandshake(t *testing.T) {
	ts := startServer(t, Config{EarlyData: true, HandshakeTimeout: time.Second}, nil)
	relay := newRelay(t, ts.addr)
	qc := resumed(t, ts, relay.addr())
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()

	postCtx, postCancel := context.WithCancel(ctx)
	defer postCancel()
	posted := make(chan error, 1)
	go func() { _, err := rawRequest(postCtx, qc, "POST", "/order", []byte("item=42")); posted <- err }()
	r, err := rawRequest(ctx, qc, "GET", "/early", nil)
	if err != nil || r.status != 200 || string(r.body) != "GET /early " {
		t.Fatalf("0-RTT GET: %+v %v", r, err)
	}
	if !qc.ConnectionState().Used0RTT {
		t.Fatal("the server did not accept 0-RTT")
	}
	waitFor(t, "the held POST dropped", func() bool { return ts.Stats().EarlyDropped == 1 })
	postCancel() // the client hears nothing: its packets never reach edge
	<-posted
	for _, s := range ts.requests() {
		if strings.HasPrefix(s, "POST") {
			t.Fatalf("the handler got %q from a connection whose handshake never completed", s)
		}
	}
	if st := ts.Stats(); st.EarlyHeld != 1 || st.HandshakesOK != 1 || relay.dropped.Load() == 0 {
		t.Errorf("stats %+v, relay dropped %d: want one POST held, one handshake (the first connection's)", st, relay.dropped.Load())
	}

	// Without the relay the handshake completes and the POST is served.
	qc2 := resumed(t, ts, ts.addr)
	ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	r, err = rawRequest(ctx2, qc2, "POST", "/order", []byte("item=7"))
	if err != nil || r.status != 200 || string(r.body) != "POST /order item=7" {
		t.Fatalf("0-RTT POST on a connection that completes: %+v %v", r, err)
	}
}

func TestEarlyDataOffByDefault(t *testing.T) {
	ts := startServer(t, Config{}, nil)
	qc := resumed(t, ts, ts.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if r, err := rawRequest(ctx, qc, "GET", "/x", nil); err != nil || r.status != 200 {
		t.Fatalf("%+v %v", r, err)
	}
	if qc.ConnectionState().Used0RTT || ts.Stats().EarlyConns != 0 {
		t.Fatal("0-RTT accepted without EarlyData")
	}
}

// relay forwards one client's datagrams to a server and back, dropping every
// client datagram that carries a Handshake or 1-RTT packet: the server sees the
// client's first flight (Initial and 0-RTT) and nothing after it.
type relay struct {
	pc      net.PacketConn
	dropped atomic.Int64
}

func newRelay(t *testing.T, server string) *relay {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	up, err := net.Dial("udp", server)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close(); up.Close() })
	r := &relay{pc: pc}
	var client atomic.Pointer[net.Addr]
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			client.Store(&from)
			if !firstFlight(buf[:n]) {
				r.dropped.Add(1)
				continue
			}
			up.Write(buf[:n])
		}
	}()
	go func() {
		buf := make([]byte, 65536)
		for {
			n, err := up.Read(buf)
			if err != nil {
				return
			}
			if to := client.Load(); to != nil {
				pc.WriteTo(buf[:n], *to)
			}
		}
	}()
	return r
}

func (r *relay) addr() string { return r.pc.LocalAddr().String() }

// firstFlight reports whether every packet coalesced in datagram d is an Initial or a
// 0-RTT packet (QUIC v1 long headers, RFC 9000 §17.2).
func firstFlight(d []byte) bool {
	for len(d) > 0 {
		if d[0]&0x80 == 0 || len(d) < 7 {
			return false // a short header: 1-RTT
		}
		typ := d[0] & 0x30 >> 4 // 0 Initial, 1 0-RTT, 2 Handshake, 3 Retry
		if typ > 1 {
			return false
		}
		p := d[5:]
		p = p[1+int(p[0]):] // destination connection ID
		p = p[1+int(p[0]):] // source connection ID
		if typ == 0 {
			tl, n, err := quicvarint.Parse(p)
			if err != nil {
				return false
			}
			p = p[n+int(tl):]
		}
		l, n, err := quicvarint.Parse(p)
		if err != nil || uint64(len(p)-n) < l {
			return false
		}
		d = p[n+int(l):]
	}
	return true
}

// Initials from many source ports, faster than RetryThreshold, get Retry packets:
// small stateless answers, no connection state, no TLS work.
func TestInitialFloodGetsRetry(t *testing.T) {
	ts := startServer(t, Config{RetryThreshold: 5}, nil)
	initials := captureInitials(t, ts, 100)
	var sent, received, retries int // retries: ports that got a Retry
	socks := make([]net.PacketConn, len(initials))
	srv, _ := net.ResolveUDPAddr("udp", ts.addr)
	for i, p := range initials {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		socks[i] = pc
		pc.WriteTo(p, srv)
		sent += len(p)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	deadline := time.Now().Add(3 * time.Second)
	for i, pc := range socks {
		wg.Go(func() {
			buf := make([]byte, 65536)
			pc.SetReadDeadline(deadline)
			got, retried, other := 0, false, false
			for {
				n, _, err := pc.ReadFrom(buf)
				if err != nil {
					break
				}
				got += n
				if buf[0]&0xb0 == 0xb0 { // long header, type Retry
					retried = true
				} else {
					other = true
				}
			}
			mu.Lock()
			received += got
			if retried {
				retries++
			}
			mu.Unlock()
			// A port that was asked to Retry got nothing else, and less than it sent.
			if retried && (other || got >= len(initials[i])) {
				t.Errorf("port %d: a Retry and %d bytes in all for %d sent (other packets: %v)", i, got, len(initials[i]), other)
			}
		})
	}
	wg.Wait()
	st := ts.Stats()
	t.Logf("%d Initials (%d bytes) from %d ports: %d Retry packets back, %d bytes in all; stats %+v", len(initials), sent, len(socks), retries, received, st)
	if st.Handshakes > 10 {
		t.Errorf("%d connections started: the flood was not held back by Retry", st.Handshakes)
	}
	// quic-go queues at most 8 Retries and drops the Initials beyond (a real client
	// sends its Initial again): sending Retries costs bounded work too.
	if st.Retries < uint64(len(initials))-10 || retries == 0 {
		t.Errorf("%d Retries asked, %d received: want one asked per Initial past the threshold", st.Retries, retries)
	}
	// The few connections let through before the threshold get a handshake (and its
	// retransmissions), the rest one Retry at most: far less than the flood's bytes.
	if received > sent/2 {
		t.Errorf("edge sent %d bytes for %d received", received, sent)
	}
	// A real client still gets through: it answers the Retry.
	resp, err := ts.client(t).Get(ts.url("/after"))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("a client after the flood: %v %v", resp, err)
	}
	resp.Body.Close()
}

// captureInitials collects the first datagram of n real client connection attempts,
// each with its own connection IDs and ClientHello.
func captureInitials(t *testing.T, ts *testServer, n int) [][]byte {
	t.Helper()
	sink, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	var out [][]byte
	buf := make([]byte, 65536)
	for range n {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			quic.DialAddr(ctx, sink.LocalAddr().String(), ts.tlsConfig(), &quic.Config{})
		}()
		sink.SetReadDeadline(time.Now().Add(10 * time.Second))
		k, _, err := sink.ReadFrom(buf)
		cancel()
		<-done
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, bytes.Clone(buf[:k]))
	}
	return out
}

func TestConnectionLimits(t *testing.T) {
	ts := startServer(t, Config{MaxConnsPerIP: 2}, nil)
	dial := func() (*quic.Conn, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return quic.DialAddr(ctx, ts.addr, ts.tlsConfig(), &quic.Config{})
	}
	var conns []*quic.Conn
	for range 2 {
		qc, err := dial()
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, qc)
	}
	if _, err := dial(); err == nil {
		t.Fatal("a third connection from one address was accepted over MaxConnsPerIP 2")
	}
	if st := ts.Stats(); st.Refused == 0 || st.ConnsOpen != 2 {
		t.Fatalf("stats %+v: want the third refused (each of its Initials), 2 open", st)
	}
	conns[0].CloseWithError(0, "")
	waitFor(t, "a closed connection no longer counted", func() bool { return ts.Stats().ConnsOpen == 1 })
	qc, err := dial()
	if err != nil {
		t.Fatalf("after one closed: %v (stats %+v)", err, ts.Stats())
	}
	qc.CloseWithError(0, "")
	conns[1].CloseWithError(0, "")
}

func TestShutdownSendsGoawayAndDrains(t *testing.T) {
	release := make(chan struct{})
	ts := startServer(t, Config{}, func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/slow" {
			<-release
		}
		ctx.WriteString("done")
	})
	c := ts.client(t)
	got := make(chan string, 1)
	go func() {
		resp, err := c.Get(ts.url("/slow"))
		if err != nil {
			got <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got <- string(b)
	}()
	waitFor(t, "the slow request running", func() bool { return len(ts.requests()) == 1 })
	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		stopped <- ts.Shutdown(ctx)
	}()
	time.Sleep(100 * time.Millisecond) // let the GOAWAY go out before the answer
	close(release)
	if g := <-got; g != "done" {
		t.Fatalf("the request in flight during Shutdown got %q", g)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := quic.DialAddr(ctx, ts.addr, ts.tlsConfig(), &quic.Config{}); err == nil {
		t.Fatal("a new connection was accepted after Shutdown")
	}
}

var _ = tls.VersionTLS13
