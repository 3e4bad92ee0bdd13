package stream

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edge-gw/edge/internal/testcert"
	"github.com/edge-gw/edge/proxyproto"
)

// tcpServer serves each connection with serve on a fresh loopback port until the test
// ends, and returns its address.
func tcpServer(t testing.TB, serve func(c *net.TCPConn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				serve(c.(*net.TCPConn))
			}()
		}
	}()
	return ln.Addr().String()
}

// echo copies what it reads back, and half-closes at the client's end of file.
func echo(c *net.TCPConn) {
	io.Copy(c, c)
	c.CloseWrite()
}

// startSet runs specs (with their addresses as given) and returns the set.
func startSet(t testing.TB, specs ...*Spec) *Set {
	t.Helper()
	s := NewSet(slog.New(slog.DiscardHandler))
	p, err := s.Prepare(specs)
	if err != nil {
		t.Fatal(err)
	}
	p.Commit()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		s.Shutdown(ctx)
	})
	return s
}

func tcpSpec(name string, pool *Pool) *Spec {
	return &Spec{Name: name, Address: "127.0.0.1:0", Protocol: "tcp", Pool: pool,
		HandshakeTimeout: time.Second, IdleTimeout: time.Minute, MaxConns: 100, MaxSessions: 100}
}

func dial(t testing.TB, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	return c.(*net.TCPConn)
}

// refused dials addr, sends first, and reports whether the stream refused the
// connection: reset at once (the dial itself may see it) or closed with no byte.
func refused(t testing.TB, addr string, first []byte) bool {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return true
	}
	defer c.Close()
	c.Write(first)
	return closed(c)
}

// closed reports whether the stream closed c without a byte: a read ends at once with
// end of file or a reset.
func closed(c net.Conn) bool {
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, err := c.Read(make([]byte, 1))
	return n == 0 && err != nil && !errors.Is(err, context.DeadlineExceeded) && !isTimeout(err)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// A TCP stream relays 1 GB both ways intact (each direction hashed), and passes a
// half-close on: the client's end of file reaches the server, which still answers.
func TestTCPRelay(t *testing.T) {
	size := int64(1 << 30)
	if testing.Short() || raceEnabled {
		size = 64 << 20
	}
	s := startSet(t, tcpSpec("echo", NewPool("echo", []string{tcpServer(t, echo)}, PoolOptions{})))
	c := dial(t, s.Addr("echo"))
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	sent, got := sha256.New(), sha256.New()
	done := make(chan int64)
	go func() {
		n, _ := io.Copy(got, c)
		done <- n
	}()
	buf := make([]byte, 256<<10)
	for left := size; left > 0; left -= int64(len(buf)) {
		rand.Read(buf)
		sent.Write(buf)
		if _, err := c.Write(buf); err != nil {
			t.Fatal(err)
		}
	}
	c.CloseWrite() // the echo ends its side only after this end of file
	if n := <-done; n != size || !bytes.Equal(sent.Sum(nil), got.Sum(nil)) {
		t.Fatalf("echoed %d of %d bytes, equal %v", n, size, bytes.Equal(sent.Sum(nil), got.Sum(nil)))
	}
	in := s.List()[0]
	if in.BytesUp != uint64(size) || in.BytesDown != uint64(size) || in.Results["accepted"] != 1 {
		t.Errorf("GET /streams: %+v", in)
	}
}

// A half-close from the server side: it says goodbye and ends its side; the client's
// bytes still reach it.
func TestTCPHalfCloseFromServer(t *testing.T) {
	got := make(chan string, 1)
	addr := tcpServer(t, func(c *net.TCPConn) {
		io.WriteString(c, "bye")
		c.CloseWrite()
		b, err := io.ReadAll(c)
		got <- fmt.Sprintf("%s %v", b, err)
	})
	s := startSet(t, tcpSpec("hc", NewPool("hc", []string{addr}, PoolOptions{})))
	c := dial(t, s.Addr("hc"))
	if b, err := io.ReadAll(c); string(b) != "bye" || err != nil {
		t.Fatalf("read %q, %v", b, err)
	}
	io.WriteString(c, "still here")
	c.CloseWrite()
	if s := <-got; s != "still here <nil>" {
		t.Errorf("server read %q", s)
	}
}

// A banned address is closed before a byte is read or relayed; max_conns_per_ip holds;
// conn_rate refuses a burst past its bucket.
func TestTCPGuards(t *testing.T) {
	var reached atomic.Int64
	addr := tcpServer(t, func(c *net.TCPConn) { reached.Add(1); echo(c) })
	banned := atomic.Bool{}
	sp := tcpSpec("g", NewPool("g", []string{addr}, PoolOptions{}))
	sp.Banned = func(ip netip.Addr) bool { return banned.Load() && ip == netip.MustParseAddr("127.0.0.1") }
	sp.MaxConnsPerIP = 2
	s := startSet(t, sp)

	banned.Store(true)
	if !refused(t, s.Addr("g"), []byte("hello")) {
		t.Error("banned client not closed")
	}
	if n := reached.Load(); n != 0 {
		t.Errorf("banned client reached the server (%d connections)", n)
	}
	banned.Store(false)

	a, b := dial(t, s.Addr("g")), dial(t, s.Addr("g"))
	for _, x := range []*net.TCPConn{a, b} { // both relayed
		x.Write([]byte("x"))
		if _, err := io.ReadFull(x, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
	}
	if !refused(t, s.Addr("g"), nil) {
		t.Error("third connection from one address not closed (max_conns_per_ip = 2)")
	}
	a.Close()
	waitFor(t, "a slot freed", func() bool { return s.List()[0].Connections == 1 })
	fourth := dial(t, s.Addr("g"))
	fourth.Write([]byte("y"))
	if _, err := io.ReadFull(fourth, make([]byte, 1)); err != nil {
		t.Errorf("after a close, a new connection: %v", err)
	}
	res := s.List()[0].Results
	if res["banned"] != 1 || res["limited"] != 1 || res["accepted"] != 3 {
		t.Errorf("results %v", res)
	}

	// conn_rate: a burst of 3, then refused until the bucket refills.
	rp := tcpSpec("rate", NewPool("rate", []string{addr}, PoolOptions{}))
	rp.ConnRate, rp.ConnBurst = 1, 3
	rs := startSet(t, rp)
	var ok, no int
	for range 5 {
		if refused(t, rs.Addr("rate"), []byte("z")) {
			no++
		} else {
			ok++
		}
	}
	if ok != 3 || no != 2 {
		t.Errorf("conn_rate 1r/s burst 3: %d relayed, %d refused; want 3 and 2", ok, no)
	}
}

// PROXY protocol in: v1 and v2 headers from a trusted peer make their address the
// client (a ban inside the header is enforced); the same header from an untrusted peer
// is refused; a slow header is cut by handshake_timeout. Out: the pool's v1/v2 header
// reaches a server that parses it, with the client's address.
func TestTCPProxyProtocol(t *testing.T) {
	type seen struct {
		src, dst string
		first    string
		err      error
	}
	saw := make(chan seen, 10)
	origin := tcpServer(t, func(c *net.TCPConn) {
		pc, err := proxyproto.Read(c, proxyproto.Options{})
		if err != nil {
			saw <- seen{err: err}
			return
		}
		buf := make([]byte, 5)
		_, err = io.ReadFull(pc, buf)
		saw <- seen{src: pc.RemoteAddr().String(), dst: pc.Header().Destination.String(), first: string(buf), err: err}
		pc.Write(buf)
	})
	for _, out := range []string{"v1", "v2"} {
		t.Run("in and out "+out, func(t *testing.T) {
			sp := tcpSpec("pp", NewPool("o", []string{origin}, PoolOptions{ProxyProtocol: out}))
			sp.ProxyProtocol = true
			sp.Trusted = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
			sp.HandshakeTimeout = 300 * time.Millisecond
			sp.Banned = func(ip netip.Addr) bool { return ip == netip.MustParseAddr("203.0.113.66") }
			s := startSet(t, sp)
			addr := s.Addr("pp")
			client := &net.TCPAddr{IP: net.ParseIP("203.0.113.7"), Port: 40000}
			dst := &net.TCPAddr{IP: net.ParseIP("198.51.100.1"), Port: 3306}
			for _, hdr := range [][]byte{proxyproto.AppendV1(nil, client, dst), proxyproto.AppendV2(nil, client, dst)} {
				c := dial(t, addr)
				c.Write(append(append([]byte(nil), hdr...), "hello"...))
				if _, err := io.ReadFull(c, make([]byte, 5)); err != nil {
					t.Fatalf("relay after a PROXY header: %v", err)
				}
				sw := <-saw
				if sw.err != nil || sw.src != "203.0.113.7:40000" || sw.first != "hello" {
					t.Errorf("origin saw %+v, want the client 203.0.113.7:40000 and hello", sw)
				}
				c.Close()
			}
			// A banned address inside the header.
			if !refused(t, addr, proxyproto.AppendV2(nil, &net.TCPAddr{IP: net.ParseIP("203.0.113.66"), Port: 1}, dst)) {
				t.Error("banned address in the PROXY header not closed")
			}
			// A slow header.
			start := time.Now()
			if !refused(t, addr, []byte("PROXY TCP4 203.0.113.7 ")) || time.Since(start) > 2*time.Second {
				t.Errorf("slow PROXY header not cut by handshake_timeout (%v)", time.Since(start))
			}
			res := s.List()[0].Results
			if res["banned"] != 1 || res["bad_proxy_header"] != 1 || res["accepted"] != 2 {
				t.Errorf("results %v", res)
			}
		})
	}
	t.Run("untrusted peer", func(t *testing.T) {
		sp := tcpSpec("pp", NewPool("o", []string{origin}, PoolOptions{}))
		sp.ProxyProtocol = true
		sp.Trusted = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
		s := startSet(t, sp)
		if !refused(t, s.Addr("pp"), proxyproto.AppendV1(nil, &net.TCPAddr{IP: net.ParseIP("203.0.113.7"), Port: 1}, &net.TCPAddr{IP: net.ParseIP("198.51.100.1"), Port: 2})) {
			t.Error("PROXY header from an untrusted peer not refused")
		}
		if res := s.List()[0].Results; res["untrusted_proxy"] != 1 {
			t.Errorf("results %v", res)
		}
	})
}

// SNI passthrough: two names go to two TLS servers whose certificates the client sees
// unchanged (edge holds no key), an unknown name to the default, and with no default an
// unknown name is closed.
func TestTCPSNIPassthrough(t *testing.T) {
	ca := testcert.NewCA(t)
	tlsServer := func(name string) string {
		leaf := ca.Leaf(t, testcert.Opts{Names: []string{name}})
		cert, err := tls.LoadX509KeyPair(leaf.CertFile, leaf.KeyFile)
		if err != nil {
			t.Fatal(err)
		}
		cfg := &tls.Config{Certificates: []tls.Certificate{cert}}
		return tcpServer(t, func(c *net.TCPConn) {
			tc := tls.Server(c, cfg)
			if tc.Handshake() != nil {
				return
			}
			fmt.Fprintf(tc, "server %s, asked for %s", name, tc.ConnectionState().ServerName)
			tc.Close()
		})
	}
	api, web, def := tlsServer("api.shop.test"), tlsServer("web.shop.test"), tlsServer("default.test")
	router, err := NewSNIRouter([]SNIRoute{{Pattern: "api.shop.test", Target: "api"}, {Pattern: "*.shop.test", Target: "web"}}, "def")
	if err != nil {
		t.Fatal(err)
	}
	sp := tcpSpec("sni", nil)
	sp.SNI = router
	sp.Pool = NewPool("def", []string{def}, PoolOptions{})
	sp.Pools = map[string]*Pool{"api": NewPool("api", []string{api}, PoolOptions{}),
		"web": NewPool("web", []string{web}, PoolOptions{}), "def": sp.Pool}
	s := startSet(t, sp)
	try := func(sni string) (string, string, error) {
		c := dial(t, s.Addr("sni"))
		tc := tls.Client(c, &tls.Config{ServerName: sni, RootCAs: ca.Pool, InsecureSkipVerify: sni == ""})
		b, err := io.ReadAll(tc)
		if err != nil {
			return "", "", err
		}
		return string(b), tc.ConnectionState().PeerCertificates[0].DNSNames[0], nil
	}
	for _, c := range []struct{ sni, want, cert string }{
		{"api.shop.test", "server api.shop.test, asked for api.shop.test", "api.shop.test"},
		{"www.shop.test", "server web.shop.test, asked for www.shop.test", "web.shop.test"},
		{"other.test", "server default.test, asked for other.test", "default.test"},
	} {
		got, cert, err := try(c.sni)
		if c.sni == "www.shop.test" || c.sni == "other.test" {
			// The certificate does not name what was asked: the client's check fails,
			// which proves the server's own certificate came through unchanged.
			if err == nil || cert != "" {
				var ce *tls.CertificateVerificationError
				if !errors.As(err, &ce) || ce.UnverifiedCertificates[0].DNSNames[0] != c.cert {
					t.Errorf("%s: %q, cert %q, %v", c.sni, got, cert, err)
				}
			}
			continue
		}
		if err != nil || got != c.want || cert != c.cert {
			t.Errorf("%s: %q, cert %q, %v; want %q from %q", c.sni, got, cert, err, c.want, c.cert)
		}
	}

	// Without a default, an unknown name is closed.
	sp2 := tcpSpec("strict", nil)
	sp2.SNI, _ = NewSNIRouter([]SNIRoute{{Pattern: "api.shop.test", Target: "api"}}, "")
	sp2.Pools = map[string]*Pool{"api": NewPool("api", []string{api}, PoolOptions{})}
	s2 := startSet(t, sp2)
	c := dial(t, s2.Addr("strict"))
	tc := tls.Client(c, &tls.Config{ServerName: "nobody.test", RootCAs: ca.Pool})
	if err := tc.Handshake(); err == nil {
		t.Error("unknown name without a default: handshake succeeded")
	}
	if res := s2.List()[0].Results; res["no_route"] != 1 {
		t.Errorf("results %v", res)
	}
}

// A UDP stream answers each client with its own replies, and ends idle sessions.
func TestUDPRelay(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(append([]byte("re:"), buf[:n]...), from)
		}
	}()
	sp := &Spec{Name: "u", Address: "127.0.0.1:0", Protocol: "udp", IdleTimeout: 300 * time.Millisecond, MaxSessions: 2,
		Pool: NewPool("u", []string{pc.LocalAddr().String()}, PoolOptions{})}
	s := startSet(t, sp)
	clients := make([]*net.UDPConn, 3)
	for i := range clients {
		c, err := net.Dial("udp", s.Addr("u"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		clients[i] = c.(*net.UDPConn)
	}
	ask := func(c *net.UDPConn, msg string) (string, error) {
		c.SetDeadline(time.Now().Add(time.Second))
		c.Write([]byte(msg))
		buf := make([]byte, 2048)
		n, err := c.Read(buf)
		return string(buf[:n]), err
	}
	for round := range 3 {
		for i, c := range clients[:2] {
			msg := fmt.Sprintf("c%d-%d", i, round)
			if got, err := ask(c, msg); got != "re:"+msg {
				t.Errorf("client %d: %q %v", i, got, err)
			}
		}
	}
	if got, err := ask(clients[2], "third"); err == nil {
		t.Errorf("a third session past max_sessions = 2 answered %q", got)
	}
	waitFor(t, "idle sessions ended", func() bool { return s.List()[0].Sessions == 0 })
	if got, err := ask(clients[2], "third"); got != "re:third" {
		t.Errorf("after the idle sessions ended: %q %v", got, err)
	}
	in := s.List()[0]
	if in.Results["over_max_sessions"] == 0 || in.Datagrams["up"] != 7 || in.Datagrams["down"] != 7 {
		t.Errorf("GET /streams: %+v", in)
	}
}

// A reload keeps open connections and applies its spec to new ones; a stream left out
// stops accepting while its connections go on.
func TestReloadKeepsConnections(t *testing.T) {
	a, b := tcpServer(t, echo), tcpServer(t, func(c *net.TCPConn) { io.WriteString(c, "B"); c.CloseWrite() })
	s := NewSet(slog.New(slog.DiscardHandler))
	t.Cleanup(func() { s.Shutdown(context.Background()) })
	sp := tcpSpec("r", NewPool("a", []string{a}, PoolOptions{}))
	sp.Address = freeAddr(t)
	apply := func(specs ...*Spec) {
		p, err := s.Prepare(specs)
		if err != nil {
			t.Fatal(err)
		}
		p.Commit()
	}
	apply(sp)
	long := dial(t, sp.Address)
	long.Write([]byte("1"))
	io.ReadFull(long, make([]byte, 1))

	sp2 := *sp
	sp2.Pool = NewPool("b", []string{b}, PoolOptions{})
	apply(&sp2)
	if got, _ := io.ReadAll(dial(t, sp.Address)); string(got) != "B" {
		t.Errorf("new connection after the reload: %q, want the new upstream's B", got)
	}
	long.Write([]byte("2"))
	if _, err := io.ReadFull(long, make([]byte, 1)); err != nil {
		t.Errorf("connection open across the reload: %v", err)
	}
	apply() // the stream is removed
	if c, err := net.DialTimeout("tcp", sp.Address, time.Second); err == nil {
		c.Close()
		t.Error("a removed stream still accepts")
	}
	long.Write([]byte("3"))
	if _, err := io.ReadFull(long, make([]byte, 1)); err != nil {
		t.Errorf("connection of a removed stream: %v", err)
	}
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
