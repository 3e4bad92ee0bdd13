package acme

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edge-gw/edge/internal/pebbletest"
)

// waitFor bounds every poll in these tests.
const waitFor = 30 * time.Second

// challengeHTTP is a plain HTTP server on 127.0.0.1 answering HTTP-01 through the managers
// it is given, as edge's plain listeners do; ask the first that answers.
type challengeHTTP struct {
	Port int

	mu       sync.Mutex
	managers []*Manager
}

func newChallengeHTTP(t *testing.T) *challengeHTTP {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &challengeHTTP{Port: ln.Addr().(*net.TCPAddr).Port}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		ms := s.managers
		s.mu.Unlock()
		for _, m := range ms {
			if body, ok := m.HTTPChallenge(r.Host, r.URL.Path); ok {
				w.Header().Set("Content-Type", "text/plain")
				_, _ = w.Write(body)
				return
			}
		}
		http.NotFound(w, r)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return s
}

func (s *challengeHTTP) add(m ...*Manager) {
	s.mu.Lock()
	s.managers = append(s.managers, m...)
	s.mu.Unlock()
}

// tlsServer is a TLS listener on 127.0.0.1 using m.GetCertificate and offering ALPNProto, as
// edge's TLS listeners do; it completes handshakes and closes.
type tlsServer struct {
	Port int
	Addr string
	m    atomic.Pointer[Manager]
	// alpn counts completed handshakes that negotiated ALPNProto (the CA's validations).
	alpn atomic.Int64
}

// set makes the server use m.
func (s *tlsServer) set(m *Manager) { s.m.Store(m) }

func newTLSServer(t *testing.T) *tlsServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &tlsServer{Port: ln.Addr().(*net.TCPAddr).Port, Addr: ln.Addr().String()}
	cfg := &tls.Config{
		GetCertificate: func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
			mm := s.m.Load()
			if mm == nil {
				return nil, ErrNoCertificate
			}
			return mm.GetCertificate(h)
		},
		NextProtos: []string{"h2", "http/1.1", ALPNProto},
	}
	var wg sync.WaitGroup
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				tc := tls.Server(c, cfg)
				_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
				if tc.Handshake() == nil && tc.ConnectionState().NegotiatedProtocol == ALPNProto {
					s.alpn.Add(1)
				}
				_ = tc.Close()
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return s
}

// handshake connects to addr for name, verifying against roots, and returns the leaf.
func handshake(addr, name string, roots *x509.CertPool) (*x509.Certificate, error) {
	d := &net.Dialer{Timeout: 2 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{ServerName: name, RootCAs: roots})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0], nil
}

// waitCert polls handshakes until one verifies (and ok accepts the leaf), failing the test
// after waitFor.
func waitCert(t *testing.T, addr, name string, roots *x509.CertPool, ok func(*x509.Certificate) bool) *x509.Certificate {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	var lastErr error
	for time.Now().Before(deadline) {
		leaf, err := handshake(addr, name, roots)
		if err == nil && (ok == nil || ok(leaf)) {
			return leaf
		}
		lastErr = err
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no verified certificate for %s at %s within %v (last error: %v)", name, addr, waitFor, lastErr)
	return nil
}

// closedPort returns a loopback port nothing listens on.
func closedPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// recorder is a slog.Handler keeping messages, to poll for what the Manager logged; with
// -v it also prints them.
type recorder struct {
	t    *testing.T
	mu   *sync.Mutex
	msgs *[]string
}

func newRecorder(t *testing.T) (*slog.Logger, *recorder) {
	r := &recorder{t: t, mu: &sync.Mutex{}, msgs: new([]string)}
	return slog.New(r), r
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *recorder) WithGroup(string) slog.Handler            { return r }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	var b strings.Builder
	b.WriteString(rec.Level.String() + " " + rec.Message)
	rec.Attrs(func(a slog.Attr) bool {
		b.WriteString(" " + a.String())
		return true
	})
	r.mu.Lock()
	*r.msgs = append(*r.msgs, b.String())
	r.mu.Unlock()
	if testing.Verbose() {
		r.t.Log(b.String())
	}
	return nil
}

// has reports whether a logged line contains s.
func (r *recorder) has(s string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range *r.msgs {
		if strings.Contains(m, s) {
			return true
		}
	}
	return false
}

// baseOptions are the Options of a Manager talking to p for name.
func baseOptions(p *pebbletest.Pebble, name string, httpPort, tlsPort int) Options {
	return Options{
		Domains:   []string{name},
		Email:     "ops@edge.test",
		Directory: p.Directory,
		CARoots:   p.ServerRoots,
		HTTPPort:  httpPort,
		TLSPort:   tlsPort,
		RetryMax:  time.Second,
	}
}

func mustNew(t *testing.T, o Options, log *slog.Logger) *Manager {
	t.Helper()
	m, err := New(o, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

// noCert asserts that m has nothing to serve for name.
func noCert(t *testing.T, m *Manager, name string) {
	t.Helper()
	// certmagic logs hello.Conn's addresses: give it a connection, as crypto/tls does.
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	c, err := m.GetCertificate(&tls.ClientHelloInfo{ServerName: name, Conn: a})
	if c != nil || !errors.Is(err, ErrNoCertificate) {
		t.Fatalf("GetCertificate(%s) = %v, %v; want nil, ErrNoCertificate", name, c, err)
	}
	if got := m.Certificates(); len(got) != 0 {
		t.Fatalf("Certificates() = %+v, want none", got)
	}
}
