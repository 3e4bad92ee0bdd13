//go:build !race

package tlsstore

import (
	"crypto/tls"
	"sync"
	"testing"
	"time"

	"github.com/edge-gw/edge/internal/testcert"
)

// TestPickZeroAllocs runs Pick on ClientHellos captured from real
// handshakes, so SupportsCertificate sees what it sees in production.
func TestPickZeroAllocs(t *testing.T) {
	ca := testcert.NewCA(t)
	certs := mustLoad(t,
		ca.Leaf(t, testcert.Opts{Names: []string{"default.test"}}),
		ca.Leaf(t, testcert.Opts{Names: []string{"a.test"}}),
		ca.Leaf(t, testcert.Opts{Names: []string{"*.wild.test"}}),
		ca.Leaf(t, testcert.Opts{Names: []string{"dual.test"}, Key: testcert.RSA}),
		ca.Leaf(t, testcert.Opts{Names: []string{"dual.test"}}),
	)
	store := NewStore(certs)
	cfg := ServerConfig(store, tls.VersionTLS12, nil)
	var (
		mu    sync.Mutex
		hello *tls.ClientHelloInfo
	)
	cfg.GetCertificate = func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
		mu.Lock()
		hello = h
		mu.Unlock()
		return store.GetCertificate(h)
	}
	addr := serve(t, cfg)
	capture := func(sni string, max uint16, suites ...uint16) *tls.ClientHelloInfo {
		t.Helper()
		if _, err := handshake(t, addr, &tls.Config{ServerName: sni, InsecureSkipVerify: true, MaxVersion: max, CipherSuites: suites}); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		return hello
	}

	f := func(name string, h *tls.ClientHelloInfo) {
		t.Helper()
		want, _ := certs.Pick(h)
		n := testing.AllocsPerRun(200, func() {
			if got, _ := store.GetCertificate(h); got != want {
				t.Fatalf("%s: Pick is not stable", name)
			}
		})
		if n != 0 {
			t.Errorf("%s: %v allocs per Pick, want 0", name, n)
		}
	}
	f("exact", capture("a.test", 0))
	f("upper case, trailing dot", &tls.ClientHelloInfo{ServerName: "A.TEST."})
	f("wildcard", capture("x.wild.test", 0))
	f("unknown name", capture("nope.test", 0))
	f("no SNI", capture("", 0))

	// Where a name has an ECDSA and an RSA certificate, Pick asks
	// hello.SupportsCertificate, which allocates in crypto/tls (Go 1.26: the
	// version, curve, cipher suite and signature scheme lists it builds, and
	// the error for a rejected certificate). Pick adds nothing to that.
	dual := certs.candidates("dual.test")
	g := func(name string, h *tls.ClientHelloInfo) {
		t.Helper()
		cryptoTLS := testing.AllocsPerRun(200, func() {
			h2 := *h
			h2.ServerName = ""
			for _, c := range dual {
				if h2.SupportsCertificate(c) == nil {
					break
				}
			}
		})
		n := testing.AllocsPerRun(200, func() { _, _ = store.GetCertificate(h) })
		if n != cryptoTLS {
			t.Errorf("%s: %v allocs per Pick, want %v (those of SupportsCertificate)", name, n, cryptoTLS)
		}
		t.Logf("%s: %v allocs per Pick, all in SupportsCertificate", name, n)
	}
	g("ECDSA and RSA, TLS 1.3 client", capture("dual.test", 0))
	g("ECDSA and RSA, TLS 1.2 client", capture("dual.test", tls.VersionTLS12))
	g("ECDSA and RSA, RSA-only client", capture("dual.test", tls.VersionTLS12, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256))
}

func BenchmarkPick(b *testing.B) {
	ca := testcert.NewCA(b)
	var leaves []testcert.Leaf
	for _, n := range []string{"default.test", "a.test", "b.test", "c.test", "*.wild.test"} {
		leaves = append(leaves, ca.Leaf(b, testcert.Opts{Names: []string{n}}))
	}
	files := make([]CertFile, len(leaves))
	for i, l := range leaves {
		files[i] = CertFile{CertFile: l.CertFile, KeyFile: l.KeyFile}
	}
	certs, err := Load(files, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	hello := &tls.ClientHelloInfo{ServerName: "x.wild.test"}
	b.ReportAllocs()
	for b.Loop() {
		_, _ = certs.Pick(hello)
	}
}
