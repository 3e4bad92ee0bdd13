// Package tlsstore holds the certificates a TLS listener serves and the TLS
// settings around them.
//
// Load reads the certificate blocks of one listener's tls block, checks every
// file and builds an immutable *Certs whose Pick chooses a certificate for a
// ClientHello by SNI with map reads only. A Store holds the *Certs a listener
// serves now: a reload builds a new *Certs with Load and swaps it in with one
// atomic store, so new handshakes get the new certificates while open
// connections carry on untouched. A failed Load changes nothing: the caller
// keeps serving the old *Certs.
//
// ServerConfig builds the *tls.Config of a listener and Tickets rotates the
// session-ticket keys of the configs registered with it.
//
// The package imports nothing of edge.
package tlsstore

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"
)

// CertFile is one certificate block of a listener's tls block.
type CertFile struct {
	// CertFile is a PEM file with the certificate chain, leaf first. Any
	// non-CERTIFICATE block in it is ignored. The path is opened as given:
	// the caller resolves it against the config file's directory.
	CertFile string
	// KeyFile is a PEM file with the leaf's unencrypted private key: PKCS#1
	// ("RSA PRIVATE KEY"), PKCS#8 ("PRIVATE KEY") or SEC 1 ("EC PRIVATE
	// KEY"). The first block whose type ends in "PRIVATE KEY" is used.
	KeyFile string
	// Where is the block's position, e.g. "edge.hcl:12,5". It starts every
	// error about this block; empty means the messages start with the file.
	Where string
}

// Error is one problem with one certificate block. Msg names the file at
// fault, e.g. `cert_file "shop.pem": certificate expired at …`.
type Error struct {
	Where string // CertFile.Where of the block
	Msg   string
}

// Error returns "Where: Msg".
func (e *Error) Error() string {
	if e.Where == "" {
		return e.Msg
	}
	return e.Where + ": " + e.Msg
}

// Problems is every problem Load found, in config order. Its Error is one
// line per problem; Unwrap yields each *Error, so errors.As(err, &probs) or
// errors.As(err, &oneError) both work.
type Problems []*Error

// Error returns one "Where: Msg" line per problem.
func (p Problems) Error() string {
	var b strings.Builder
	for i, e := range p {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// Unwrap returns each *Error.
func (p Problems) Unwrap() []error {
	errs := make([]error, len(p))
	for i, e := range p {
		errs[i] = e
	}
	return errs
}

// Load reads and checks every file and builds an immutable set of
// certificates, in the order of files; the first one answers a ClientHello
// with a missing or unknown server name (see Certs.Pick).
//
// It reports every problem at once and never returns a partial set: the error
// is a Problems with one *Error per problem. A block may have several: a
// missing or unreadable file, a file that is not PEM or has no CERTIFICATE /
// private key block, an encrypted or unparsable key, a key that does not
// match the leaf, a leaf not valid at now (expired or not yet valid), a leaf
// with no DNS or IP subjectAltName (a CN-only certificate: no client accepts
// it for a host name and SNI cannot select it).
//
// Load does not verify the chain up to a root: clients do that, and an
// internal CA the machine does not trust is legitimate. It parses each leaf
// once and sets tls.Certificate.Leaf. It is safe for concurrent use and
// touches nothing but the files it reads, so `edge -check` can call it too.
func Load(files []CertFile, now time.Time) (*Certs, error) {
	if len(files) == 0 {
		return nil, errors.New("tlsstore: no certificate block: a tls block needs at least one")
	}
	var probs Problems
	certs := make([]tls.Certificate, 0, len(files))
	for _, f := range files {
		c, p := loadOne(f, now)
		probs = append(probs, p...)
		if c != nil {
			certs = append(certs, *c)
		}
	}
	if len(probs) > 0 {
		return nil, probs
	}
	return newCerts(files, certs), nil
}

// loadOne checks one block and returns its certificate or every problem.
func loadOne(f CertFile, now time.Time) (*tls.Certificate, Problems) {
	var probs Problems
	bad := func(format string, args ...any) {
		probs = append(probs, &Error{Where: f.Where, Msg: fmt.Sprintf(format, args...)})
	}
	certAttr := fmt.Sprintf("cert_file %q", f.CertFile)
	keyAttr := fmt.Sprintf("key_file %q", f.KeyFile)

	var (
		chain  [][]byte
		leaves []*x509.Certificate
		key    crypto.Signer
		err    error
	)
	if f.CertFile == "" {
		bad("cert_file is not set")
	} else if chain, leaves, err = readChain(f.CertFile); err != nil {
		bad("%s: %v", certAttr, err)
	}
	if f.KeyFile == "" {
		bad("key_file is not set")
	} else if key, err = readKey(f.KeyFile); err != nil {
		bad("%s: %v", keyAttr, err)
	}
	if len(leaves) == 0 {
		return nil, probs
	}
	leaf := leaves[0]
	if key != nil && !samePublicKey(leaf.PublicKey, key.Public()) {
		for i, c := range leaves[1:] {
			if samePublicKey(c.PublicKey, key.Public()) {
				// The chain is out of order: checking the first certificate
				// as the leaf would only add noise.
				bad("%s: private key does not match the first certificate in %s but certificate %d: "+
					"the leaf must come first", keyAttr, certAttr, i+2)
				return nil, probs
			}
		}
		bad("%s: private key does not match the certificate in %s", keyAttr, certAttr)
	}
	const stamp = "2006-01-02 15:04:05 MST"
	if now.Before(leaf.NotBefore) {
		bad("%s: certificate is not valid yet: valid from %s, now is %s",
			certAttr, leaf.NotBefore.UTC().Format(stamp), now.UTC().Format(stamp))
	}
	if now.After(leaf.NotAfter) {
		bad("%s: certificate expired at %s, now is %s",
			certAttr, leaf.NotAfter.UTC().Format(stamp), now.UTC().Format(stamp))
	}
	if len(leaf.DNSNames) == 0 && len(leaf.IPAddresses) == 0 {
		bad("%s: certificate has no DNS or IP names (subjectAltName), only the common name %q: "+
			"clients do not accept a common name alone and SNI cannot select it", certAttr, leaf.Subject.CommonName)
	}
	if len(probs) > 0 {
		return nil, probs
	}
	return &tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf}, nil
}

// readChain returns the DER of every CERTIFICATE block of the file at path
// and the parsed certificates, leaf first.
func readChain(path string) ([][]byte, []*x509.Certificate, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, nil, err
	}
	var (
		chain  [][]byte
		others []string
	)
	for rest := data; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if b.Type == "CERTIFICATE" {
			chain = append(chain, b.Bytes)
		} else {
			others = append(others, b.Type)
		}
	}
	if len(chain) == 0 {
		if len(others) == 0 {
			return nil, nil, errors.New("not a PEM file")
		}
		return nil, nil, fmt.Errorf("no CERTIFICATE block (found %s)", strings.Join(others, ", "))
	}
	certs := make([]*x509.Certificate, len(chain))
	for i, der := range chain {
		if certs[i], err = x509.ParseCertificate(der); err != nil {
			return nil, nil, fmt.Errorf("cannot parse certificate %d of the file: %w", i+1, err)
		}
	}
	return chain, certs, nil
}

// readKey returns the private key of the file at path.
func readKey(path string) (crypto.Signer, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	var (
		block  *pem.Block
		others []string
	)
	for rest := data; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if b.Type == "PRIVATE KEY" || strings.HasSuffix(b.Type, " PRIVATE KEY") {
			block = b
			break
		}
		others = append(others, b.Type)
	}
	switch {
	case block == nil && len(others) == 0:
		return nil, errors.New("not a PEM file")
	case block == nil:
		return nil, fmt.Errorf("no private key block (found %s)", strings.Join(others, ", "))
	case block.Type == "ENCRYPTED PRIVATE KEY" || strings.Contains(block.Headers["Proc-Type"], "ENCRYPTED"):
		return nil, errors.New("private key is encrypted: edge needs an unencrypted key file (readable by edge only)")
	}
	var key any
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("unsupported private key block %q: want PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("cannot parse %s block: %w", block.Type, err)
	}
	switch k := key.(type) {
	case *rsa.PrivateKey, *ecdsa.PrivateKey, ed25519.PrivateKey:
		return k.(crypto.Signer), nil
	}
	return nil, fmt.Errorf("unsupported private key type %T: want RSA, ECDSA or Ed25519", key)
}

// readFile reads path; its errors do not repeat the path, which the caller's
// message already names.
func readFile(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return nil, fmt.Errorf("cannot %s: %w", pe.Op, pe.Err)
	}
	return data, err
}

func samePublicKey(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}
