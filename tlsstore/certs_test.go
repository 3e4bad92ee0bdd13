package tlsstore

import (
	"crypto/tls"
	"crypto/x509"
	"math/big"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edge-gw/edge/internal/testcert"
)

// TestSNI runs real handshakes and checks which certificate each server
// name gets.
func TestSNI(t *testing.T) {
	ca := testcert.NewCA(t)
	certs := mustLoad(t,
		ca.Leaf(t, testcert.Opts{Names: []string{"default.test", "127.0.0.1"}, Serial: 1}),
		ca.Leaf(t, testcert.Opts{Names: []string{"a.test"}, Serial: 2}),
		ca.Leaf(t, testcert.Opts{Names: []string{"b.test"}, Serial: 3}),
		ca.Leaf(t, testcert.Opts{Names: []string{"*.wild.test"}, Serial: 4}),
		ca.Leaf(t, testcert.Opts{Names: []string{"exact.wild.test"}, Serial: 5}),
	)
	addr := serve(t, ServerConfig(NewStore(certs), tls.VersionTLS12, nil))

	// f checks that server name sni gets serial want. verify says whether
	// the certificate must also verify for sni: an unknown name gets the
	// default, which does not.
	f := func(sni string, verify bool, want int64) {
		t.Helper()
		cfg := &tls.Config{ServerName: sni, RootCAs: ca.Pool, InsecureSkipVerify: !verify}
		if sni == "" {
			cfg.ServerName = "127.0.0.1" // verified against the IP SAN; crypto/tls sends no SNI for an IP
		}
		st, err := handshake(t, addr, cfg)
		if err != nil {
			t.Errorf("SNI %q: %v", sni, err)
			return
		}
		if got := served(st); got != want {
			t.Errorf("SNI %q: got serial %d, want %d", sni, got, want)
		}
	}
	f("a.test", true, 2)
	f("b.test", true, 3)
	f("A.Test", true, 2) // names compare case-insensitively
	f("", true, 1)       // no SNI
	f("unknown.test", false, 1)
	f("x.wild.test", true, 4)
	f("X.WILD.test", true, 4)
	f("a.b.wild.test", false, 1) // a wildcard covers one label
	f("wild.test", false, 1)     // and not the bare domain
	f("exact.wild.test", true, 5)
}

// TestPickNames checks name normalisation on Pick itself, including
// names crypto/tls never delivers (a trailing dot).
func TestPickNames(t *testing.T) {
	ca := testcert.NewCA(t)
	certs := mustLoad(t,
		ca.Leaf(t, testcert.Opts{Names: []string{"default.test"}, Serial: 1}),
		ca.Leaf(t, testcert.Opts{Names: []string{"A.test", "10.0.0.1"}, Serial: 2}),
		ca.Leaf(t, testcert.Opts{Names: []string{"*.Wild.Test."}, Serial: 3}),
		ca.Leaf(t, testcert.Opts{Names: []string{"com"}, Serial: 4}),
	)
	f := func(name string, want int64) {
		t.Helper()
		c, err := certs.Pick(&tls.ClientHelloInfo{ServerName: name})
		if err != nil {
			t.Fatalf("Pick(%q): %v", name, err)
		}
		if got := c.Leaf.SerialNumber.Int64(); got != want {
			t.Errorf("Pick(%q): got serial %d, want %d", name, got, want)
		}
	}
	f("a.test", 2)
	f("A.TEST.", 2)
	f("x.wild.test", 3)
	f("x.wild.test.", 3)
	f("X.Wild.TEST", 3)
	f(".wild.test", 1) // empty first label
	f("wild.test", 1)
	f("a.b.wild.test", 1)
	f("a.com", 1) // "com" is exact, not a wildcard
	f("com", 4)
	f("", 1)
	f(".", 1)
	f("10.0.0.1", 1)
	f("127.0.0.1", 1)
	f(strings.Repeat("a", 300)+".test", 1)
	if c, _ := certs.Pick(nil); c.Leaf.SerialNumber.Int64() != 1 {
		t.Errorf("Pick(nil): got serial %d, want 1", c.Leaf.SerialNumber.Int64())
	}

	// A first certificate with IP names only, or with an IP written as a
	// DNS name (which testcert cannot make, hence the hand-built leaves),
	// is still the default, and the IP-like DNS name is never looked up.
	leaf := func(serial int64, dns []string, ips ...net.IP) tls.Certificate {
		return tls.Certificate{Leaf: &x509.Certificate{SerialNumber: big.NewInt(serial), DNSNames: dns, IPAddresses: ips}}
	}
	for _, first := range []tls.Certificate{
		leaf(1, nil, net.IPv4(10, 0, 0, 9)),
		leaf(1, []string{"10.0.0.9"}),
		leaf(1, []string{"10.0.0.9", "first.test"}),
	} {
		certs = newCerts(make([]CertFile, 2), []tls.Certificate{first, leaf(2, []string{"other.test", "10.0.0.8"})})
		f("nope.test", 1)
		f("10.0.0.9", 1)
		f("10.0.0.8", 1)
		f("other.test", 2)
	}
}

// TestKeyTypes serves an ECDSA and an RSA certificate for the same names
// (RSA first in the file order) and checks that each client gets one it
// supports, ECDSA when it supports both.
func TestKeyTypes(t *testing.T) {
	ca := testcert.NewCA(t)
	certs := mustLoad(t,
		ca.Leaf(t, testcert.Opts{Names: []string{"default.test"}, Serial: 1}),
		ca.Leaf(t, testcert.Opts{Names: []string{"dual.test"}, Key: testcert.RSA, Serial: 12}),
		ca.Leaf(t, testcert.Opts{Names: []string{"dual.test"}, Serial: 11}),
		ca.Leaf(t, testcert.Opts{Names: []string{"default.test"}, Key: testcert.RSA, Serial: 2}),
	)
	addr := serve(t, ServerConfig(NewStore(certs), tls.VersionTLS12, nil))

	tls13 := func(sni string) *tls.Config {
		return &tls.Config{ServerName: sni, RootCAs: ca.Pool, MinVersion: tls.VersionTLS13}
	}
	tls12 := func(sni string) *tls.Config {
		return &tls.Config{ServerName: sni, RootCAs: ca.Pool, MaxVersion: tls.VersionTLS12}
	}
	rsaOnly := func(sni string) *tls.Config {
		cfg := tls12(sni)
		cfg.CipherSuites = []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256}
		return cfg
	}
	f := func(name string, cfg *tls.Config, want int64, wantAlg x509.PublicKeyAlgorithm) {
		t.Helper()
		st, err := handshake(t, addr, cfg)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			return
		}
		leaf := st.PeerCertificates[0]
		if served(st) != want || leaf.PublicKeyAlgorithm != wantAlg {
			t.Errorf("%s: got serial %d (%v), want %d (%v)", name, served(st), leaf.PublicKeyAlgorithm, want, wantAlg)
		}
	}
	f("TLS 1.3", tls13("dual.test"), 11, x509.ECDSA)
	f("TLS 1.2", tls12("dual.test"), 11, x509.ECDSA)
	f("TLS 1.2 RSA suites only", rsaOnly("dual.test"), 12, x509.RSA)
	// An unknown name gets the default's twin of the right type, not a
	// certificate the client cannot use.
	unknown := func(cfg *tls.Config) *tls.Config { cfg.InsecureSkipVerify = true; return cfg }
	f("unknown name, TLS 1.3", unknown(tls13("nope.test")), 1, x509.ECDSA)
	f("unknown name, RSA suites only", unknown(rsaOnly("nope.test")), 2, x509.RSA)
}

// TestStoreSwap checks that a swap reaches new handshakes only.
func TestStoreSwap(t *testing.T) {
	ca := testcert.NewCA(t)
	one := mustLoad(t, ca.Leaf(t, testcert.Opts{Names: []string{"swap.test"}, Serial: 1}))
	two := mustLoad(t, ca.Leaf(t, testcert.Opts{Names: []string{"swap.test"}, Serial: 2}))
	store := NewStore(one)
	addr := serve(t, ServerConfig(store, tls.VersionTLS12, nil))
	client := &tls.Config{ServerName: "swap.test", RootCAs: ca.Pool}

	before, err := open(t, addr, client)
	if err != nil {
		t.Fatal(err)
	}
	if got := served(before.ConnectionState()); got != 1 {
		t.Fatalf("before the swap: got serial %d, want 1", got)
	}
	store.Swap(two)
	if store.Certs() != two {
		t.Error("Certs() is not the swapped-in set")
	}
	st, err := handshake(t, addr, client)
	if err != nil {
		t.Fatal(err)
	}
	if got := served(st); got != 2 {
		t.Errorf("after the swap: got serial %d, want 2", got)
	}
	echo(t, before) // the connection opened before the swap goes on
	if got := served(before.ConnectionState()); got != 1 {
		t.Errorf("old connection: got serial %d, want 1", got)
	}
}

func TestStoreNil(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("NewStore(nil) did not panic")
		}
	}()
	NewStore(nil)
}

func TestListEarliest(t *testing.T) {
	ca := testcert.NewCA(t)
	now := time.Now().Truncate(time.Second)
	a := ca.Leaf(t, testcert.Opts{Names: []string{"a.test", "127.0.0.1"}, Serial: 0xabc, NotAfter: now.Add(48 * time.Hour)})
	b := ca.Leaf(t, testcert.Opts{Names: []string{"b.test"}, Key: testcert.RSA, Serial: 2, NotAfter: now.Add(24 * time.Hour)})
	c := ca.Leaf(t, testcert.Opts{Names: []string{"c.test"}, Key: testcert.Ed25519, Serial: 3, NotAfter: now.Add(72 * time.Hour)})
	certs := mustLoad(t, a, b, c)

	list := certs.List()
	want := []Info{
		{Names: []string{"a.test", "127.0.0.1"}, NotBefore: a.Cert.NotBefore, NotAfter: now.Add(48 * time.Hour), Serial: "abc", KeyType: "ECDSA P-256", Issuer: "CN=edge test CA,O=edge", CertFile: a.CertFile},
		{Names: []string{"b.test"}, NotBefore: b.Cert.NotBefore, NotAfter: now.Add(24 * time.Hour), Serial: "2", KeyType: "RSA 2048", Issuer: "CN=edge test CA,O=edge", CertFile: b.CertFile},
		{Names: []string{"c.test"}, NotBefore: c.Cert.NotBefore, NotAfter: now.Add(72 * time.Hour), Serial: "3", KeyType: "Ed25519", Issuer: "CN=edge test CA,O=edge", CertFile: c.CertFile},
	}
	if len(list) != len(want) {
		t.Fatalf("List: got %d entries, want %d", len(list), len(want))
	}
	for i := range want {
		g, w := list[i], want[i]
		if !slices.Equal(g.Names, w.Names) || !g.NotBefore.Equal(w.NotBefore) || !g.NotAfter.Equal(w.NotAfter) ||
			g.Serial != w.Serial || g.KeyType != w.KeyType || g.Issuer != w.Issuer || g.CertFile != w.CertFile {
			t.Errorf("List()[%d]:\n got %+v\nwant %+v", i, g, w)
		}
	}
	list[0].Names[0] = "changed"
	if certs.List()[0].Names[0] != "a.test" {
		t.Error("changing the result of List changed the Certs")
	}
	if got := certs.Earliest(); !got.Equal(now.Add(24 * time.Hour)) {
		t.Errorf("Earliest: got %v, want %v", got, now.Add(24*time.Hour))
	}
	for i, c := range certs.certs {
		if c.Leaf == nil || len(c.Certificate) != 2 {
			t.Errorf("certificate %d: Leaf %v, chain of %d, want a Leaf and a chain of 2", i, c.Leaf, len(c.Certificate))
		}
	}
}
