package tlsstore

import (
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edge-gw/edge/internal/testcert"
)

func TestLoadErrors(t *testing.T) {
	ca := testcert.NewCA(t)
	now := time.Now()
	good := ca.Leaf(t, testcert.Opts{Names: []string{"good.test"}})
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.pem")
	garbage := testcert.Garbage(t)

	// problem is one expected line: it must start with prefix and contain
	// frag.
	type problem struct{ prefix, frag string }
	certP := func(i int, file, frag string) problem {
		return problem{fmt.Sprintf("%s: cert_file %q: ", where(i), file), frag}
	}
	keyP := func(i int, file, frag string) problem {
		return problem{fmt.Sprintf("%s: key_file %q: ", where(i), file), frag}
	}
	f := func(name string, files []CertFile, want ...problem) {
		t.Helper()
		certs, err := Load(files, now)
		if certs != nil {
			t.Errorf("%s: Load returned a set along with the error", name)
		}
		var probs Problems
		if !errors.As(err, &probs) {
			t.Errorf("%s: got error %v (%T), want Problems", name, err, err)
			return
		}
		var one *Error
		if !errors.As(err, &one) || one != probs[0] {
			t.Errorf("%s: errors.As(*Error) does not yield the first problem", name)
		}
		lines := strings.Split(err.Error(), "\n")
		if len(lines) != len(want) || len(probs) != len(want) {
			t.Errorf("%s: got %d problems:\n%s\nwant %d", name, len(lines), err, len(want))
			return
		}
		for i, w := range want {
			if !strings.HasPrefix(lines[i], w.prefix) || !strings.Contains(lines[i], w.frag) {
				t.Errorf("%s: problem %d:\n got %s\nwant %s…%s…", name, i, lines[i], w.prefix, w.frag)
			}
			if probs[i].Error() != lines[i] || !strings.HasPrefix(lines[i], probs[i].Where+": ") {
				t.Errorf("%s: problem %d: Where %q and line %q disagree", name, i, probs[i].Where, lines[i])
			}
		}
	}
	block := func(i int, cert, key string) CertFile { return CertFile{CertFile: cert, KeyFile: key, Where: where(i)} }

	f("missing cert file", []CertFile{block(0, missing, good.KeyFile)},
		certP(0, missing, "cannot open: no such file or directory"))
	f("missing key file", []CertFile{block(0, good.CertFile, missing)},
		keyP(0, missing, "cannot open: no such file or directory"))
	f("unreadable: a directory", []CertFile{block(0, dir, good.KeyFile)},
		certP(0, dir, "cannot read: is a directory"))
	f("cert not PEM", []CertFile{block(0, garbage, good.KeyFile)},
		certP(0, garbage, "not a PEM file"))
	f("key not PEM", []CertFile{block(0, good.CertFile, garbage)},
		keyP(0, garbage, "not a PEM file"))
	f("cert and key swapped", []CertFile{block(0, good.KeyFile, good.CertFile)},
		certP(0, good.KeyFile, "no CERTIFICATE block (found PRIVATE KEY)"),
		keyP(0, good.CertFile, "no private key block (found CERTIFICATE, CERTIFICATE)"))
	f("not set", []CertFile{block(0, "", "")},
		problem{where(0) + ": cert_file is not set", ""},
		problem{where(0) + ": key_file is not set", ""})

	mismatch := ca.Leaf(t, testcert.Opts{Names: []string{"m.test"}, MismatchedKey: true})
	f("key mismatch", blocks(mismatch),
		keyP(0, mismatch.KeyFile, fmt.Sprintf("private key does not match the certificate in cert_file %q", mismatch.CertFile)))
	rsaMismatch := ca.Leaf(t, testcert.Opts{Names: []string{"m.test"}, Key: testcert.RSA, MismatchedKey: true})
	f("RSA key mismatch", blocks(rsaMismatch),
		keyP(0, rsaMismatch.KeyFile, "private key does not match"))

	expired := ca.Leaf(t, testcert.Opts{Names: []string{"old.test"}, NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-24 * time.Hour)})
	f("expired", blocks(expired), certP(0, expired.CertFile, "certificate expired at "))
	early := ca.Leaf(t, testcert.Opts{Names: []string{"new.test"}, NotBefore: now.Add(time.Hour)})
	f("not yet valid", blocks(early), certP(0, early.CertFile, "certificate is not valid yet"))
	cnOnly := ca.Leaf(t, testcert.Opts{CommonName: "shop.test"})
	f("CN only", blocks(cnOnly), certP(0, cnOnly.CertFile, `no DNS or IP names (subjectAltName), only the common name "shop.test"`))

	// The CA first: the key matches the second certificate.
	reversed := filepath.Join(dir, "reversed.pem")
	writePEM(t, reversed, "CERTIFICATE", ca.Cert.Raw, good.Cert.Raw)
	f("chain not leaf first", []CertFile{block(0, reversed, good.KeyFile)},
		keyP(0, good.KeyFile, "private key does not match the first certificate in cert_file "+strconv.Quote(reversed)+" but certificate 2: the leaf must come first"))

	encrypted := filepath.Join(dir, "encrypted.key")
	writePEM(t, encrypted, "ENCRYPTED PRIVATE KEY", []byte("opaque"))
	f("encrypted key", []CertFile{block(0, good.CertFile, encrypted)},
		keyP(0, encrypted, "private key is encrypted"))
	sshKey := filepath.Join(dir, "ssh.key")
	writePEM(t, sshKey, "OPENSSH PRIVATE KEY", []byte("opaque"))
	f("unsupported key block", []CertFile{block(0, good.CertFile, sshKey)},
		keyP(0, sshKey, `unsupported private key block "OPENSSH PRIVATE KEY"`))
	badKey := filepath.Join(dir, "bad.key")
	writePEM(t, badKey, "EC PRIVATE KEY", []byte("not DER"))
	f("unparsable key", []CertFile{block(0, good.CertFile, badKey)},
		keyP(0, badKey, "cannot parse EC PRIVATE KEY block: "))
	badCert := filepath.Join(dir, "bad.pem")
	writePEM(t, badCert, "CERTIFICATE", good.Cert.Raw, []byte("not DER"))
	f("unparsable intermediate", []CertFile{block(0, badCert, good.KeyFile)},
		certP(0, badCert, "cannot parse certificate 2 of the file: "))

	// Every problem of every block at once, in config order.
	f("several blocks",
		[]CertFile{
			block(0, good.CertFile, good.KeyFile),
			block(1, missing, missing),
			block(2, expired.CertFile, mismatch.KeyFile),
			block(3, cnOnly.CertFile, cnOnly.KeyFile),
		},
		certP(1, missing, "no such file"),
		keyP(1, missing, "no such file"),
		keyP(2, mismatch.KeyFile, "does not match"),
		certP(2, expired.CertFile, "expired"),
		certP(3, cnOnly.CertFile, "no DNS or IP names"))

	if _, err := Load(nil, now); err == nil {
		t.Error("Load(nil): no error")
	}
}

func TestLoadKeyFormats(t *testing.T) {
	ca := testcert.NewCA(t)
	f := func(o testcert.Opts, wantType string) {
		t.Helper()
		o.Names = []string{"k.test"}
		l := ca.Leaf(t, o)
		certs, err := Load(blocks(l), time.Now())
		if err != nil {
			t.Errorf("%+v: %v", o, err)
			return
		}
		if got := certs.List()[0].KeyType; got != wantType {
			t.Errorf("%+v: KeyType %q, want %q", o, got, wantType)
		}
	}
	f(testcert.Opts{}, "ECDSA P-256")                                   // PKCS#8
	f(testcert.Opts{LegacyKey: true}, "ECDSA P-256")                    // SEC 1
	f(testcert.Opts{Key: testcert.RSA}, "RSA 2048")                     // PKCS#8
	f(testcert.Opts{Key: testcert.RSA, LegacyKey: true}, "RSA 2048")    // PKCS#1
	f(testcert.Opts{Key: testcert.Ed25519}, "Ed25519")                  // PKCS#8
	f(testcert.Opts{Key: testcert.Ed25519, LegacyKey: true}, "Ed25519") // PKCS#8 still
}

func writePEM(t *testing.T, path, typ string, ders ...[]byte) {
	t.Helper()
	var out []byte
	for _, d := range ders {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: d})...)
	}
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
}
