// Package testcert makes real X.509 certificates for tests: a throwaway CA,
// leaves signed by it written as PEM files into t.TempDir(), and the CA pool a
// client needs to verify them.
//
// Everything here is for tests only: keys sit unencrypted in temporary files
// and RSA keys are shared across the test process (see Opts.Key). The files go
// away with t.TempDir.
//
// The package imports nothing of edge.
package testcert

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// KeyType is the kind of key a leaf gets.
type KeyType int

// The key types a leaf can have.
const (
	ECDSA   KeyType = iota // ECDSA P-256, the zero value
	RSA                    // RSA 2048
	Ed25519                // Ed25519
)

// Opts describes one leaf certificate. The zero value is a valid ECDSA P-256
// leaf with no names, valid from an hour ago to a day from now.
type Opts struct {
	// Names become subjectAltNames: a name that parses as an IP address is an
	// IP SAN, anything else (wildcards included) a DNS SAN. Empty means a
	// certificate with no SAN at all (CN-only).
	Names []string
	// CommonName is the subject CN. Empty means the first of Names, or
	// "edge test leaf" when there is none.
	CommonName string
	// Key is the key type. RSA keys are generated once per test process and
	// shared by every RSA leaf (RSA 2048 generation takes a noticeable time);
	// ECDSA and Ed25519 keys are fresh per leaf. Use MismatchedKey, not two
	// RSA leaves, to get a key that does not match a certificate.
	Key KeyType
	// LegacyKey writes the private key as PKCS#1 ("RSA PRIVATE KEY") or
	// SEC 1 ("EC PRIVATE KEY") instead of PKCS#8 ("PRIVATE KEY"). Ed25519
	// has no legacy form and ignores it.
	LegacyKey bool
	// MismatchedKey writes a freshly generated key of the same type into the
	// key file instead of the certificate's own key.
	MismatchedKey bool
	// NotBefore and NotAfter bound the validity. Zero means an hour before
	// now and a day after now; set them in the past to get an expired leaf.
	NotBefore, NotAfter time.Time
	// Serial is the serial number. Zero means the next of a per-CA counter,
	// which starts above any small serial a test would pick by hand.
	Serial int64
}

// CA is a self-signed ECDSA P-256 certificate authority. Its methods are safe
// for concurrent use.
type CA struct {
	Pool *x509.CertPool    // holds Cert only: set it as a client's RootCAs
	Cert *x509.Certificate // the CA certificate

	der    []byte
	key    crypto.Signer
	serial atomic.Int64
}

// NewCA makes a CA valid from an hour ago for ten years.
func NewCA(t testing.TB) *CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("testcert: cannot generate CA key: %v", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "edge test CA", Organization: []string{"edge"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatalf("testcert: cannot create CA certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("testcert: cannot parse CA certificate: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	ca := &CA{Pool: pool, Cert: cert, der: der, key: key}
	ca.serial.Store(1 << 32)
	return ca
}

// Leaf is a certificate written to disk by CA.Leaf.
type Leaf struct {
	CertFile string            // PEM: the leaf, then the CA certificate
	KeyFile  string            // PEM private key, mode 0600
	Cert     *x509.Certificate // the parsed leaf
}

// Leaf makes a server certificate (ExtKeyUsage serverAuth) signed by ca and
// writes it into a fresh t.TempDir(): "cert.pem" holds the chain, leaf first,
// and "key.pem" the private key. It fails the test on any error.
func (ca *CA) Leaf(t testing.TB, o Opts) Leaf {
	t.Helper()
	key := newKey(t, o.Key, false)
	now := time.Now()
	serial := o.Serial
	if serial == 0 {
		serial = ca.serial.Add(1)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: o.CommonName},
		NotBefore:    o.NotBefore,
		NotAfter:     o.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if o.Key == RSA {
		tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment
	}
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = now.Add(-time.Hour)
	}
	if tmpl.NotAfter.IsZero() {
		tmpl.NotAfter = now.Add(24 * time.Hour)
	}
	for _, n := range o.Names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	if tmpl.Subject.CommonName == "" {
		tmpl.Subject.CommonName = "edge test leaf"
		if len(o.Names) > 0 {
			tmpl.Subject.CommonName = o.Names[0]
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.key)
	if err != nil {
		t.Fatalf("testcert: cannot create leaf %v: %v", o.Names, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("testcert: cannot parse leaf %v: %v", o.Names, err)
	}
	if o.MismatchedKey {
		key = newKey(t, o.Key, true)
	}
	dir := t.TempDir()
	l := Leaf{CertFile: filepath.Join(dir, "cert.pem"), KeyFile: filepath.Join(dir, "key.pem"), Cert: cert}
	chain := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.der})...)
	write(t, l.CertFile, chain, 0o644)
	write(t, l.KeyFile, keyPEM(t, key, o.LegacyKey), 0o600)
	return l
}

// Garbage writes a file that is not PEM at all into a fresh t.TempDir() and
// returns its path.
func Garbage(t testing.TB) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "garbage.pem")
	write(t, p, []byte("this is not a certificate\n\x00\x01\x02"), 0o644)
	return p
}

var (
	rsaOnce sync.Once
	rsaKey  *rsa.PrivateKey
	rsaErr  error
)

// newKey returns a key of type k. fresh forces a new RSA key instead of the
// shared one.
func newKey(t testing.TB, k KeyType, fresh bool) crypto.Signer {
	t.Helper()
	var (
		key crypto.Signer
		err error
	)
	switch k {
	case ECDSA:
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case RSA:
		if fresh {
			key, err = rsa.GenerateKey(rand.Reader, 2048)
			break
		}
		rsaOnce.Do(func() { rsaKey, rsaErr = rsa.GenerateKey(rand.Reader, 2048) })
		key, err = rsaKey, rsaErr
	case Ed25519:
		_, key, err = ed25519.GenerateKey(rand.Reader)
	default:
		t.Fatalf("testcert: unknown key type %d", k)
	}
	if err != nil {
		t.Fatalf("testcert: cannot generate key: %v", err)
	}
	return key
}

func keyPEM(t testing.TB, key crypto.Signer, legacy bool) []byte {
	t.Helper()
	var (
		b   pem.Block
		err error
	)
	switch k := key.(type) {
	case *rsa.PrivateKey:
		if legacy {
			b = pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}
		}
	case *ecdsa.PrivateKey:
		if legacy {
			b.Type = "EC PRIVATE KEY"
			b.Bytes, err = x509.MarshalECPrivateKey(k)
		}
	}
	if b.Type == "" && err == nil {
		b.Type = "PRIVATE KEY"
		b.Bytes, err = x509.MarshalPKCS8PrivateKey(key)
	}
	if err != nil {
		t.Fatalf("testcert: cannot marshal private key: %v", err)
	}
	return pem.EncodeToMemory(&b)
}

func write(t testing.TB, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatalf("testcert: %v", err)
	}
}
