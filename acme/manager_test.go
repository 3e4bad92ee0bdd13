package acme

import (
	"crypto/x509"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edge-gw/edge/internal/pebbletest"
	"github.com/edge-gw/edge/internal/redistest"
	"github.com/redis/rueidis"
)

// TestHTTP01 obtains a certificate through a real HTTP-01 validation, serves it, keeps the key
// 0600 on disk, survives an OCSP responder that is down, and is served at once by a new
// Manager on the same state while the CA is unreachable.
func TestHTTP01(t *testing.T) {
	t.Parallel()
	const name = "http01.edge.test"
	httpSrv := newChallengeHTTP(t)
	tlsSrv := newTLSServer(t)
	// The certificates name an OCSP responder that is down (answers 503).
	var ocspHits atomic.Int64
	ocsp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ocspHits.Add(1)
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	t.Cleanup(ocsp.Close)
	p := pebbletest.New(t, pebbletest.Options{
		HTTPPort: httpSrv.Port, TLSPort: closedPort(t), OCSPResponderURL: ocsp.URL,
	})
	p.Start()

	dir := t.TempDir()
	o := baseOptions(p, name, httpSrv.Port, tlsSrv.Port)
	o.StateDir = dir
	o.DisableTLSALPN01 = true
	o.ocspCheckInterval = 100 * time.Millisecond
	log, _ := newRecorder(t)
	m := mustNew(t, o, log)
	tlsSrv.set(m)
	httpSrv.add(m)
	noCert(t, m, name) // before Start
	m.Start()

	leaf := waitCert(t, tlsSrv.Addr, name, p.Roots, nil)
	if !slices.Equal(leaf.DNSNames, []string{name}) {
		t.Fatalf("certificate names %v, want [%s]", leaf.DNSNames, name)
	}
	if len(leaf.OCSPServer) == 0 {
		t.Fatalf("certificate names no OCSP responder; the down-responder case is not exercised")
	}
	infos := m.Certificates()
	if len(infos) != 1 || infos[0].Serial != leaf.SerialNumber.Text(16) || !infos[0].NotAfter.Equal(leaf.NotAfter) ||
		!strings.Contains(infos[0].Issuer, "Pebble") {
		t.Fatalf("Certificates() = %+v, want the served certificate (serial %x)", infos, leaf.SerialNumber)
	}
	if got := p.Orders(); got != 1 {
		t.Fatalf("pebble saw %d orders, want 1", got)
	}

	// The maintenance asks the responder for a staple, fails, and handshakes go on without.
	deadline := time.Now().Add(waitFor)
	for ocspHits.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the OCSP responder was never asked")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if again, err := handshake(tlsSrv.Addr, name, p.Roots); err != nil || !again.Equal(leaf) {
		t.Fatalf("handshake after a failed OCSP fetch: %v", err)
	}

	// Private keys on disk are 0600, directories 0700.
	var keys int
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir() && path != dir && fi.Mode().Perm()&0o077 != 0:
			t.Errorf("directory %s has mode %v", path, fi.Mode().Perm())
		case strings.HasSuffix(path, ".key") || strings.HasSuffix(path, ".json"):
			keys++
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("%s has mode %v, want 0600", path, fi.Mode().Perm())
			}
		}
		return nil
	})
	if err != nil || keys < 2 {
		t.Fatalf("walking %s: %v; %d key/json files, want the certificate key and the account key", dir, err, keys)
	}

	// A node starting on the same state with the CA down serves the stored certificate at
	// once.
	p.Stop()
	m2 := mustNew(t, o, log)
	tls2 := newTLSServer(t)
	tls2.set(m2)
	m2.Start()
	start := time.Now()
	leaf2 := waitCert(t, tls2.Addr, name, p.Roots, nil)
	if !leaf2.Equal(leaf) {
		t.Fatalf("restarted node serves serial %x, want the stored %x", leaf2.SerialNumber, leaf.SerialNumber)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("stored certificate served after %v", d)
	}
	if got := p.Orders(); got != 1 {
		t.Fatalf("pebble saw %d orders after the restart, want 1", got)
	}
}

// TestTLSALPN01 obtains a certificate with only a TLS listener: pebble validates on it with
// acme-tls/1.
func TestTLSALPN01(t *testing.T) {
	t.Parallel()
	const name = "alpn.edge.test"
	tlsSrv := newTLSServer(t)
	p := pebbletest.Start(t, closedPort(t), tlsSrv.Port)
	o := baseOptions(p, name, closedPort(t), tlsSrv.Port)
	o.StateDir = t.TempDir()
	o.DisableHTTP01 = true
	log, _ := newRecorder(t)
	m := mustNew(t, o, log)
	tlsSrv.set(m)
	m.Start()
	leaf := waitCert(t, tlsSrv.Addr, name, p.Roots, nil)
	if !slices.Equal(leaf.DNSNames, []string{name}) {
		t.Fatalf("certificate names %v, want [%s]", leaf.DNSNames, name)
	}
	if tlsSrv.alpn.Load() == 0 {
		t.Fatal("no handshake negotiated acme-tls/1: the certificate was not validated with TLS-ALPN-01")
	}
}

// TestRenewal replaces a short-lived certificate before it expires.
func TestRenewal(t *testing.T) {
	t.Parallel()
	const name = "renew.edge.test"
	httpSrv := newChallengeHTTP(t)
	tlsSrv := newTLSServer(t)
	p := pebbletest.New(t, pebbletest.Options{HTTPPort: httpSrv.Port, TLSPort: closedPort(t), Validity: 20 * time.Second})
	p.Start()
	o := baseOptions(p, name, httpSrv.Port, tlsSrv.Port)
	o.StateDir = t.TempDir()
	o.DisableTLSALPN01 = true
	o.RenewWindow = 0.7 // renew 6 s after issuance at the latest
	o.RenewCheckInterval = 500 * time.Millisecond
	log, _ := newRecorder(t)
	m := mustNew(t, o, log)
	tlsSrv.set(m)
	httpSrv.add(m)
	m.Start()
	first := waitCert(t, tlsSrv.Addr, name, p.Roots, nil)
	if life := first.NotAfter.Sub(first.NotBefore); life > 21*time.Second {
		t.Fatalf("certificate lives %v, want 20s", life)
	}
	second := waitCert(t, tlsSrv.Addr, name, p.Roots, func(c *x509.Certificate) bool {
		return c.SerialNumber.Cmp(first.SerialNumber) != 0
	})
	if now := time.Now(); !now.Before(first.NotAfter) {
		t.Fatalf("renewed certificate seen at %v, after the first expired at %v", now, first.NotAfter)
	}
	if !second.NotAfter.After(first.NotAfter) {
		t.Fatalf("renewed certificate expires %v, not after the first (%v)", second.NotAfter, first.NotAfter)
	}
	if infos := m.Certificates(); len(infos) != 1 || infos[0].Serial != second.SerialNumber.Text(16) {
		t.Fatalf("Certificates() = %+v, want the renewed serial %x", infos, second.SerialNumber)
	}
}

// TestClusterOneOrder runs two Managers ("nodes") on one Redis: one order reaches pebble and
// both nodes serve the certificate.
func TestClusterOneOrder(t *testing.T) {
	t.Parallel()
	const name = "cluster.edge.test"
	rs := redistest.Start(t)
	client := func() rueidis.Client {
		c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{rs.Addr}, DisableCache: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		return c
	}
	ca, cb := client(), client()

	httpSrv := newChallengeHTTP(t) // one port for pebble: asks both nodes
	tlsA := newTLSServer(t)
	tlsB := newTLSServer(t)
	p := pebbletest.Start(t, httpSrv.Port, closedPort(t))
	log, _ := newRecorder(t)
	o := baseOptions(p, name, httpSrv.Port, closedPort(t))
	o.DisableTLSALPN01 = true
	oa, ob := o, o
	oa.Redis = func() rueidis.Client { return ca }
	ob.Redis = func() rueidis.Client { return cb }
	a := mustNew(t, oa, log.With("node", "a"))
	b := mustNew(t, ob, log.With("node", "b"))
	tlsA.set(a)
	tlsB.set(b)
	httpSrv.add(a, b)
	a.Start()
	b.Start()
	la := waitCert(t, tlsA.Addr, name, p.Roots, nil)
	lb := waitCert(t, tlsB.Addr, name, p.Roots, nil)
	if !la.Equal(lb) {
		t.Fatalf("nodes serve different certificates: %x and %x", la.SerialNumber, lb.SerialNumber)
	}
	if got := p.Orders(); got != 1 {
		t.Fatalf("pebble saw %d orders, want 1", got)
	}
	if n := rs.Do("ZCARD", "{"+DefaultRedisPrefix+"}:idx"); n == "0" {
		t.Fatalf("nothing stored in Redis")
	}
}

// TestCADownAtStart starts a Manager while pebble is not running: Start returns, nothing is
// served, attempts fail and are retried; once pebble runs the certificate arrives.
func TestCADownAtStart(t *testing.T) {
	t.Parallel()
	const name = "late.edge.test"
	httpSrv := newChallengeHTTP(t)
	tlsSrv := newTLSServer(t)
	p := pebbletest.New(t, pebbletest.Options{HTTPPort: httpSrv.Port, TLSPort: closedPort(t)})
	o := baseOptions(p, name, httpSrv.Port, tlsSrv.Port)
	o.StateDir = t.TempDir()
	o.DisableTLSALPN01 = true
	log, rec := newRecorder(t)
	m := mustNew(t, o, log)
	tlsSrv.set(m)
	httpSrv.add(m)
	done := make(chan struct{})
	go func() { m.Start(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Start blocked with the CA down")
	}
	deadline := time.Now().Add(waitFor)
	for !rec.has("will retry") {
		if time.Now().After(deadline) {
			t.Fatal("no failed attempt logged with the CA down")
		}
		time.Sleep(20 * time.Millisecond)
	}
	noCert(t, m, name)
	if _, err := handshake(tlsSrv.Addr, name, p.ServerRoots); err == nil {
		t.Fatal("handshake succeeded without a certificate")
	}
	p.Start()
	waitCert(t, tlsSrv.Addr, name, p.Roots, nil)
	if got := p.Orders(); got != 1 {
		t.Fatalf("pebble saw %d orders, want 1", got)
	}
}

func TestNewValidates(t *testing.T) {
	ok := Options{Domains: []string{"a.example.com"}, Email: "a@b.c", StateDir: os.TempDir()}
	f := func(mod func(*Options), want string) {
		t.Helper()
		o := ok
		o.Domains = slices.Clone(ok.Domains)
		mod(&o)
		_, err := New(o, nil)
		if want == "" {
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			return
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("New error %v, want one containing %q", err, want)
		}
	}
	f(func(*Options) {}, "")
	f(func(o *Options) { o.Domains = []string{"A.Example.com."} }, "")
	f(func(o *Options) { o.Domains = nil }, "no domains")
	f(func(o *Options) { o.Domains = []string{"*.example.com"} }, "wildcard")
	f(func(o *Options) { o.Domains = []string{"10.0.0.1"} }, "IP")
	f(func(o *Options) { o.Domains = []string{"localhost"} }, "two labels")
	f(func(o *Options) { o.Domains = []string{"a_b.example.com"} }, "bad character")
	f(func(o *Options) { o.Domains = []string{"a.example.com", "A.example.com"} }, "twice")
	f(func(o *Options) { o.Email = "" }, "email")
	f(func(o *Options) { o.Directory = "ftp://x" }, "not an http(s) URL")
	f(func(o *Options) { o.RenewWindow = 1 }, "renew window")
	f(func(o *Options) { o.StateDir = "" }, "neither")
	f(func(o *Options) { o.DisableHTTP01, o.DisableTLSALPN01 = true, true }, "both challenge types")
}
