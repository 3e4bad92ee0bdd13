package tlsstore

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Certs is the immutable set of certificates of one listener, built by Load.
// It is safe for concurrent use; nothing in it changes after Load returns,
// including the *tls.Certificate values Pick hands to crypto/tls.
type Certs struct {
	certs []tls.Certificate // config order; Leaf set
	info  []Info

	// exact maps a lower-case DNS name without trailing dot to the
	// certificates naming it; wild maps "example.com" to those naming
	// "*.example.com". Each list is ordered ECDSA, Ed25519, RSA, then config
	// order, so the first one a client supports is the cheapest to serve.
	exact map[string][]*tls.Certificate
	wild  map[string][]*tls.Certificate
	// def answers a missing or unknown name: the certificates that serve
	// the first certificate's first name (the first certificate is one of
	// them), so an RSA-only client still gets the RSA twin of an ECDSA
	// default.
	def []*tls.Certificate
}

// Info describes one loaded certificate, for the admin API and the expiry
// metric.
type Info struct {
	Names     []string  // DNS names, then IP addresses, as in the certificate
	NotBefore time.Time // validity start
	NotAfter  time.Time // validity end
	Serial    string    // lower-case hex, no separators
	KeyType   string    // "ECDSA P-256", "RSA 2048", "Ed25519"
	Issuer    string    // the issuer's distinguished name, RFC 2253 style
	CertFile  string    // CertFile.CertFile as given to Load
}

// maxName is the longest DNS name (RFC 1035); longer server names cannot be
// in a certificate and go to the default.
const maxName = 253

func newCerts(files []CertFile, certs []tls.Certificate) *Certs {
	c := &Certs{
		certs: certs,
		info:  make([]Info, len(certs)),
		exact: make(map[string][]*tls.Certificate),
		wild:  make(map[string][]*tls.Certificate),
	}
	for i := range certs {
		cert := &certs[i]
		leaf := cert.Leaf
		names := slices.Clone(leaf.DNSNames)
		for _, ip := range leaf.IPAddresses {
			names = append(names, ip.String())
		}
		c.info[i] = Info{
			Names:     names,
			NotBefore: leaf.NotBefore,
			NotAfter:  leaf.NotAfter,
			Serial:    leaf.SerialNumber.Text(16),
			KeyType:   keyType(leaf),
			Issuer:    leaf.Issuer.String(),
			CertFile:  files[i].CertFile,
		}
		for _, n := range leaf.DNSNames {
			if net.ParseIP(n) != nil {
				continue // an IP in a DNS SAN: SNI never carries an IP
			}
			m, key := c.exact, normalize(n)
			if rest, ok := strings.CutPrefix(key, "*."); ok {
				m, key = c.wild, rest
			}
			if l := m[key]; len(l) == 0 || l[len(l)-1] != cert { // a name listed twice
				m[key] = append(l, cert)
			}
		}
	}
	for _, m := range []map[string][]*tls.Certificate{c.exact, c.wild} {
		for _, l := range m {
			slices.SortStableFunc(l, func(a, b *tls.Certificate) int { return keyRank(a) - keyRank(b) })
		}
	}
	c.def = []*tls.Certificate{&certs[0]}
	for _, n := range certs[0].Leaf.DNSNames {
		if l := c.lookupName(normalize(n)); len(l) > 0 { // not an IP-like name, skipped above
			c.def = l
			break
		}
	}
	return c
}

// lookupName returns the list a normalised certificate name was filed under.
func (c *Certs) lookupName(name string) []*tls.Certificate {
	if rest, ok := strings.CutPrefix(name, "*."); ok {
		return c.wild[rest]
	}
	return c.exact[name]
}

// Pick returns the certificate for hello.ServerName: the certificates naming
// it exactly, else those with a matching wildcard ("*.example.com" matches
// "a.example.com", not "a.b.example.com" nor "example.com"), else the default
// ones (those serving the first certificate's first name). Names compare
// ASCII case-insensitively and a trailing dot is ignored; an empty name or an
// IP address gets the default.
//
// Among several candidates (an ECDSA and an RSA certificate for one name) it
// returns the first, ECDSA before Ed25519 before RSA, that
// hello.SupportsCertificate accepts, else the first candidate. The name is
// not checked again there: it already matched, and the default candidates
// must be told apart by key type alone.
//
// The error is always nil; the signature is that of tls.Config.GetCertificate.
// Pick is safe for concurrent use. The lookup is map reads on a stack copy of
// the name and does not allocate, so a name with one candidate costs no
// allocation. With several candidates SupportsCertificate allocates inside
// crypto/tls (Go 1.26: 2 objects for a TLS 1.3 client, 5 for TLS 1.2, 10 when
// it rejects the ECDSA certificate), against several hundred for the
// handshake itself.
func (c *Certs) Pick(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if hello == nil {
		return c.def[0], nil
	}
	l := c.candidates(hello.ServerName)
	if len(l) == 1 {
		return l[0], nil
	}
	h := *hello
	h.ServerName = ""
	for _, cert := range l {
		if h.SupportsCertificate(cert) == nil {
			return cert, nil
		}
	}
	return l[0], nil
}

func (c *Certs) candidates(name string) []*tls.Certificate {
	if n := len(name); n > 0 && name[n-1] == '.' {
		name = name[:n-1]
	}
	if name == "" || len(name) > maxName {
		return c.def
	}
	var buf [maxName]byte
	b := buf[:len(name)]
	for i := 0; i < len(name); i++ {
		ch := name[i]
		if 'A' <= ch && ch <= 'Z' {
			ch += 'a' - 'A'
		}
		b[i] = ch
	}
	// m[string(b)] does not allocate.
	if l, ok := c.exact[string(b)]; ok {
		return l
	}
	for i, ch := range b {
		if ch == '.' {
			if i > 0 {
				if l, ok := c.wild[string(b[i+1:])]; ok {
					return l
				}
			}
			break
		}
	}
	return c.def
}

// List describes every certificate in config order. The caller owns the
// returned slice and its Names.
func (c *Certs) List() []Info {
	out := make([]Info, len(c.info))
	for i, in := range c.info {
		in.Names = slices.Clone(in.Names)
		out[i] = in
	}
	return out
}

// Earliest is the earliest NotAfter of all certificates: when this set first
// serves an expired certificate unless a reload replaces it.
func (c *Certs) Earliest() time.Time {
	t := c.info[0].NotAfter
	for _, in := range c.info[1:] {
		if in.NotAfter.Before(t) {
			t = in.NotAfter
		}
	}
	return t
}

// normalize lower-cases a certificate name and drops a trailing dot.
func normalize(name string) string {
	return strings.ToLower(strings.TrimSuffix(name, "."))
}

// keyRank orders candidates for one name: ECDSA is the cheapest to serve and
// what current clients prefer; Ed25519 next (few clients take it, and
// SupportsCertificate says which); RSA last, for the clients that need it.
func keyRank(c *tls.Certificate) int {
	switch c.Leaf.PublicKey.(type) {
	case *ecdsa.PublicKey:
		return 0
	case ed25519.PublicKey:
		return 1
	}
	return 2
}

func keyType(leaf *x509.Certificate) string {
	switch k := leaf.PublicKey.(type) {
	case *ecdsa.PublicKey:
		return "ECDSA " + k.Curve.Params().Name
	case *rsa.PublicKey:
		return "RSA " + strconv.Itoa(k.N.BitLen())
	case ed25519.PublicKey:
		return "Ed25519"
	}
	return leaf.PublicKeyAlgorithm.String()
}
