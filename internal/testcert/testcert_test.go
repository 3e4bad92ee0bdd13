package testcert

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"testing"
	"time"
)

func TestLeaf(t *testing.T) {
	ca := NewCA(t)
	now := time.Now()
	// f makes a leaf with o and checks what a user of the files sees: the
	// key type, the PEM block of the key, that cert and key pair up (or not)
	// and that the chain verifies with ca.Pool for the first name.
	f := func(o Opts, wantAlg x509.PublicKeyAlgorithm, wantKeyBlock string) {
		t.Helper()
		l := ca.Leaf(t, o)
		if l.Cert.PublicKeyAlgorithm != wantAlg {
			t.Errorf("%+v: key %v, want %v", o, l.Cert.PublicKeyAlgorithm, wantAlg)
		}
		keyPEM, err := os.ReadFile(l.KeyFile)
		if err != nil {
			t.Fatal(err)
		}
		if b, _ := pem.Decode(keyPEM); b == nil || b.Type != wantKeyBlock {
			t.Errorf("%+v: key block %v, want %q", o, b, wantKeyBlock)
		}
		if fi, err := os.Stat(l.KeyFile); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%+v: key file mode %v (%v), want 0600", o, fi.Mode().Perm(), err)
		}
		pair, err := tls.LoadX509KeyPair(l.CertFile, l.KeyFile)
		if o.MismatchedKey != (err != nil) {
			t.Errorf("%+v: LoadX509KeyPair: %v", o, err)
		}
		if err == nil && len(pair.Certificate) != 2 {
			t.Errorf("%+v: chain of %d certificates, want leaf and CA", o, len(pair.Certificate))
		}
		if o.Serial != 0 && l.Cert.SerialNumber.Int64() != o.Serial {
			t.Errorf("%+v: serial %v", o, l.Cert.SerialNumber)
		}
		if len(o.Names) > 0 {
			_, err := l.Cert.Verify(x509.VerifyOptions{DNSName: o.Names[0], Roots: ca.Pool, CurrentTime: now})
			if expired := !o.NotAfter.IsZero() && o.NotAfter.Before(now); expired != (err != nil) {
				t.Errorf("%+v: Verify: %v", o, err)
			}
		}
	}
	f(Opts{Names: []string{"a.test", "127.0.0.1"}, Serial: 7}, x509.ECDSA, "PRIVATE KEY")
	f(Opts{Names: []string{"a.test"}, LegacyKey: true}, x509.ECDSA, "EC PRIVATE KEY")
	f(Opts{Names: []string{"a.test"}, Key: RSA}, x509.RSA, "PRIVATE KEY")
	f(Opts{Names: []string{"a.test"}, Key: RSA, LegacyKey: true}, x509.RSA, "RSA PRIVATE KEY")
	f(Opts{Names: []string{"a.test"}, Key: Ed25519}, x509.Ed25519, "PRIVATE KEY")
	f(Opts{Names: []string{"a.test"}, MismatchedKey: true}, x509.ECDSA, "PRIVATE KEY")
	f(Opts{Names: []string{"a.test"}, Key: RSA, MismatchedKey: true}, x509.RSA, "PRIVATE KEY")
	f(Opts{Names: []string{"a.test"}, NotBefore: now.Add(-2 * time.Hour), NotAfter: now.Add(-time.Hour)}, x509.ECDSA, "PRIVATE KEY")

	cnOnly := ca.Leaf(t, Opts{CommonName: "cn.test"})
	if len(cnOnly.Cert.DNSNames)+len(cnOnly.Cert.IPAddresses) != 0 || cnOnly.Cert.Subject.CommonName != "cn.test" {
		t.Errorf("CN-only leaf: SANs %v %v, CN %q", cnOnly.Cert.DNSNames, cnOnly.Cert.IPAddresses, cnOnly.Cert.Subject.CommonName)
	}
	if a, b := ca.Leaf(t, Opts{}), ca.Leaf(t, Opts{}); a.Cert.SerialNumber.Cmp(b.Cert.SerialNumber) == 0 {
		t.Errorf("two leaves share serial %v", a.Cert.SerialNumber)
	}
}

func TestGarbage(t *testing.T) {
	data, err := os.ReadFile(Garbage(t))
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := pem.Decode(data); b != nil || len(data) == 0 {
		t.Errorf("Garbage wrote PEM or nothing: %q", data)
	}
}
