package listener

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/edge-gw/edge/internal/testcert"
	"github.com/edge-gw/edge/proxyproto"
	"github.com/edge-gw/edge/tlsstore"
	"github.com/edge-gw/edge/watchdog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/valyala/fasthttp"
)

// echo answers "NAME PROTO PATH" so a test sees which spec and protocol served it;
// /slow waits 300ms first.
func echo(name, proto string) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/slow" {
			time.Sleep(300 * time.Millisecond)
		}
		fmt.Fprintf(ctx, "%s %s %s", name, proto, ctx.Path())
	}
}

func spec(name, addr string, protos ...string) *Spec {
	return &Spec{
		Name: name, Address: addr, Protocols: protos, HandshakeTimeout: 2 * time.Second,
		Handler:   echo(name, "h1"),
		H2Handler: echo(name, "h2"),
		NewHTTP1:  func() *fasthttp.Server { return &fasthttp.Server{} },
		Timeouts:  watchdog.Timeouts{Read: 5 * time.Second, Idle: 5 * time.Second, Write: 5 * time.Second},
	}
}

// tlsSpec makes sp a TLS listener serving a fresh certificate for "edge.test".
func tlsSpec(t *testing.T, ca *testcert.CA, sp *Spec, serial int64) *Spec {
	t.Helper()
	leaf := ca.Leaf(t, testcert.Opts{Names: []string{"edge.test"}, Serial: serial})
	certs, err := tlsstore.Load([]tlsstore.CertFile{{CertFile: leaf.CertFile, KeyFile: leaf.KeyFile, Where: "test"}}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	sp.Certs = certs
	sp.TLS = tlsstore.ServerConfig(tlsstore.NewStore(certs), tls.VersionTLS12, sp.Protocols)
	return sp
}

func newSet(t *testing.T) (*Set, *prometheus.Registry) {
	reg := prometheus.NewRegistry()
	s := NewSet(NewMetrics(reg), tlsstore.NewTickets(0, 0), slog.New(slog.NewTextHandler(io.Discard, nil)))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		s.Shutdown(ctx)
	})
	return s, reg
}

func apply(t *testing.T, s *Set, specs ...*Spec) {
	t.Helper()
	p, err := s.Prepare(specs)
	if err != nil {
		t.Fatal(err)
	}
	p.Commit(2 * time.Second)
}

// freeAddr returns a loopback address nothing listens on (a listener's identity
// must be a fixed address for reload tests).
func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func h1Get(t *testing.T, c *http.Client, url string) string {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return fmt.Sprintf("%d %s", resp.StatusCode, b)
}

func tlsClient(ca *testcert.CA, h2 bool) *http.Client {
	var p http.Protocols
	if h2 {
		p.SetHTTP2(true)
	} else {
		p.SetHTTP1(true)
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Protocols: &p,
		TLSClientConfig: &tls.Config{RootCAs: ca.Pool, ServerName: "edge.test"}}}
}

// h2cClient speaks HTTP/2 by prior knowledge on plain TCP.
func h2cClient() *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Protocols: &p}}
}

func TestProtocolsDispatch(t *testing.T) {
	ca := testcert.NewCA(t)
	s, reg := newSet(t)
	plain := spec("plain", "127.0.0.1:0", "http/1.1")
	h2cSpec := spec("inner", "127.0.0.1:0", "h2c", "http/1.1")
	secure := tlsSpec(t, ca, spec("secure", "127.0.0.1:0", "h2", "http/1.1"), 1)
	apply(t, s, plain, h2cSpec, secure)
	addr := map[string]string{}
	for _, in := range s.List() {
		addr[in.Name] = in.Address
	}

	f := func(c *http.Client, url, want string) {
		t.Helper()
		if got := h1Get(t, c, url); got != want {
			t.Errorf("GET %s = %q, want %q", url, got, want)
		}
	}
	f(http.DefaultClient, "http://"+addr["plain"]+"/a", "200 plain h1 /a")
	f(http.DefaultClient, "http://"+addr["inner"]+"/b", "200 inner h1 /b")
	f(h2cClient(), "http://"+addr["inner"]+"/c", "200 inner h2 /c")
	f(tlsClient(ca, false), "https://"+addr["secure"]+"/d", "200 secure h1 /d")
	f(tlsClient(ca, true), "https://"+addr["secure"]+"/e", "200 secure h2 /e")

	// A plain listener without h2c does not speak HTTP/2: the preface is a bad request.
	if _, err := h2cClient().Get("http://" + addr["plain"] + "/"); err == nil {
		t.Error("h2c preface on an http/1.1-only listener was served")
	}
	// Upgrade: h2c is never honoured: the answer is HTTP/1.1 on the same connection.
	c, err := net.Dial("tcp", addr["inner"])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /up HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || resp.Proto != "HTTP/1.1" || string(b) != "inner h1 /up" {
		t.Errorf("Upgrade: h2c answered %d %s %q", resp.StatusCode, resp.Proto, b)
	}

	// Handshakes are counted by version and result; a non-TLS client is an error.
	raw, _ := net.Dial("tcp", addr["secure"])
	fmt.Fprintf(raw, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	io.Copy(io.Discard, raw)
	raw.Close()
	waitFor(t, func() bool {
		return testutil.ToFloat64(s.m.hsErrors.WithLabelValues("secure", "not_tls")) == 1
	})
	if n := testutil.ToFloat64(s.m.handshakes.WithLabelValues("secure", "1.3", "ok")); n != 2 {
		t.Errorf("ok TLS 1.3 handshakes = %v, want 2", n)
	}
	if n, err := testutil.GatherAndCount(reg, "edge_tls_certificate_expiry_seconds"); err != nil || n != 1 {
		t.Errorf("expiry series = %d, %v", n, err)
	}
}

func TestReloadKeepsConnections(t *testing.T) {
	ca := testcert.NewCA(t)
	s, _ := newSet(t)
	addr := freeAddr(t)
	apply(t, s, tlsSpec(t, ca, spec("web", addr, "h2", "http/1.1"), 1))

	serial := func(conn *tls.Conn) int64 { return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64() }
	dial := func() *tls.Conn {
		c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.Pool, ServerName: "edge.test", NextProtos: []string{"http/1.1"}})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	get := func(c *tls.Conn, path string) string {
		t.Helper()
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path)
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("GET %s on an open connection: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	old := dial()
	defer old.Close()
	if serial(old) != 1 || get(old, "/1") != "web h1 /1" {
		t.Fatal("first connection")
	}
	// A reload with a new certificate and a renamed listener at the same address.
	apply(t, s, tlsSpec(t, ca, spec("www", addr, "h2", "http/1.1"), 2))
	fresh := dial()
	defer fresh.Close()
	if serial(fresh) != 2 {
		t.Errorf("new handshake serial = %d, want 2", serial(fresh))
	}
	if got := get(fresh, "/2"); got != "www h1 /2" {
		t.Errorf("new connection = %q", got)
	}
	if serial(old) != 1 {
		t.Error("old connection changed certificate")
	}
	if got := get(old, "/3"); got != "www h1 /3" { // the connection stays; requests see the new spec
		t.Errorf("old connection after reload = %q", got)
	}

	// Sessions resume with tickets, across a reload too: the keys live in the
	// listener's long-lived base config, not in the per-reload one.
	cache := tls.NewLRUClientSessionCache(4)
	resume := func() bool {
		c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.Pool, ServerName: "edge.test", ClientSessionCache: cache})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		get(c, "/r") // TLS 1.3 tickets arrive after the handshake
		return c.ConnectionState().DidResume
	}
	if resume() || !resume() {
		t.Error("second connection did not resume")
	}
	apply(t, s, tlsSpec(t, ca, spec("www", addr, "h2", "http/1.1"), 3))
	if !resume() {
		t.Error("a session from before the reload did not resume after it")
	}
}

func TestPrepareFailureLeavesRunning(t *testing.T) {
	s, _ := newSet(t)
	a := freeAddr(t)
	apply(t, s, spec("a", a, "http/1.1"))
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	b := freeAddr(t)
	_, err = s.Prepare([]*Spec{spec("a2", a, "http/1.1"), spec("b", b, "http/1.1"), spec("c", busy.Addr().String(), "http/1.1")})
	if err == nil || !strings.Contains(err.Error(), `listener "c": cannot listen on `+busy.Addr().String()) {
		t.Fatalf("err = %v", err)
	}
	// b was bound by the failed Prepare and released again; a still serves its old spec.
	if ln, err := net.Listen("tcp", b); err != nil {
		t.Errorf("address of the aborted listener is still held: %v", err)
	} else {
		ln.Close()
	}
	if got := h1Get(t, http.DefaultClient, "http://"+a+"/x"); got != "200 a h1 /x" {
		t.Errorf("running listener = %q", got)
	}
	if n := len(s.List()); n != 1 {
		t.Errorf("%d listeners, want 1", n)
	}
}

func TestRemovedListenerDrains(t *testing.T) {
	ca := testcert.NewCA(t)
	s, _ := newSet(t)
	keep, gone, goneTLS := freeAddr(t), freeAddr(t), freeAddr(t)
	apply(t, s, spec("keep", keep, "http/1.1"), spec("gone", gone, "http/1.1"),
		tlsSpec(t, ca, spec("gonetls", goneTLS, "h2"), 1))

	slow := make(chan string, 2)
	go func() { slow <- "h1: " + h1Get(t, http.DefaultClient, "http://"+gone+"/slow") }()
	go func() { slow <- "h2: " + h1Get(t, tlsClient(ca, true), "https://"+goneTLS+"/slow") }()
	time.Sleep(100 * time.Millisecond) // both requests reach the handler
	apply(t, s, spec("keep", keep, "http/1.1"))

	for range 2 {
		if got := <-slow; !strings.HasSuffix(got, "200 gone h1 /slow") && !strings.HasSuffix(got, "200 gonetls h2 /slow") {
			t.Errorf("in-flight request on a removed listener = %q", got)
		}
	}
	waitFor(t, func() bool {
		c, err := net.DialTimeout("tcp", gone, time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	if got := h1Get(t, http.DefaultClient, "http://"+keep+"/k"); got != "200 keep h1 /k" {
		t.Errorf("kept listener = %q", got)
	}
	if n := len(s.List()); n != 1 {
		t.Errorf("%d listeners, want 1", n)
	}
}

func TestMaxConns(t *testing.T) {
	s, _ := newSet(t)
	sp := spec("small", "127.0.0.1:0", "http/1.1")
	sp.MaxConns = 2
	apply(t, s, sp)
	addr := s.List()[0].Address
	var open []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		open = append(open, c)
	}
	waitFor(t, func() bool { return s.List()[0].Connections == 2 })
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err == nil {
		t.Errorf("third connection read %d bytes, want it closed", n)
	}
	if got := s.List()[0].Refused; got != 1 {
		t.Errorf("refused = %d, want 1", got)
	}
	fmt.Fprintf(open[0], "GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(open[0]), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Errorf("open connection after refusal: %v", err)
	}
}

// waitFor polls cond for up to 5 seconds.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// proxy_protocol: a trusted peer's PROXY header makes its address the connection's
// RemoteAddr, on plain HTTP/1.1 and under TLS; an untrusted peer, a bad or a slow header
// is closed and counted.
func TestProxyProtocol(t *testing.T) {
	s, _ := newSet(t)
	who := func(name string) fasthttp.RequestHandler {
		return func(ctx *fasthttp.RequestCtx) { fmt.Fprintf(ctx, "%s %s", name, ctx.RemoteAddr()) }
	}
	plain := spec("pp", "127.0.0.1:0", "http/1.1")
	plain.ProxyProtocol, plain.Trusted = true, []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	plain.HandshakeTimeout = 300 * time.Millisecond
	plain.Handler = who("pp")
	ca := testcert.NewCA(t)
	secure := tlsSpec(t, ca, spec("pps", "127.0.0.1:0", "http/1.1"), 7)
	secure.ProxyProtocol, secure.Trusted, secure.Handler = true, plain.Trusted, who("pps")
	untrusted := spec("pu", "127.0.0.1:0", "http/1.1")
	untrusted.ProxyProtocol, untrusted.Trusted = true, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	apply(t, s, plain, secure, untrusted)
	addrs := map[string]string{}
	for _, in := range s.List() {
		addrs[in.Name] = in.Address
	}
	client := &net.TCPAddr{IP: net.ParseIP("203.0.113.9"), Port: 4242}
	header := func(c net.Conn) { c.Write(proxyproto.AppendV1(nil, client, c.RemoteAddr())) }
	dial := func(addr string) net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(5 * time.Second))
		return c
	}

	c := dial(addrs["pp"])
	header(c)
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if string(b) != "pp 203.0.113.9:4242" {
		t.Errorf("plain: %q, want the header's address", b)
	}

	c = dial(addrs["pps"])
	header(c)
	tc := tls.Client(c, &tls.Config{ServerName: "edge.test", RootCAs: ca.Pool})
	fmt.Fprintf(tc, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err = http.ReadResponse(bufio.NewReader(tc), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	if string(b) != "pps 203.0.113.9:4242" {
		t.Errorf("TLS: %q, want the header's address", b)
	}

	closedWithout := func(addr string, first []byte) bool {
		c := dial(addr)
		c.Write(first)
		n, err := c.Read(make([]byte, 1))
		return n == 0 && err != nil && !os.IsTimeout(err)
	}
	if !closedWithout(addrs["pu"], proxyproto.AppendV1(nil, client, client)) {
		t.Error("untrusted peer not closed")
	}
	if !closedWithout(addrs["pp"], []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")) {
		t.Error("no PROXY header: not closed")
	}
	if !closedWithout(addrs["pp"], []byte("PROXY TCP4 203.0.113.9 ")) { // and then silence
		t.Error("slow PROXY header: not closed")
	}
	for name, want := range map[string]uint64{"pp": 2, "pu": 1, "pps": 0} {
		for _, in := range s.List() {
			if in.Name == name && in.ProxyRefused != want {
				t.Errorf("%s: proxy_refused_total %d, want %d", name, in.ProxyRefused, want)
			}
		}
	}
}
