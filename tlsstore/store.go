package tlsstore

import (
	"crypto/tls"
	"sync/atomic"
)

// Store holds the *Certs one listener serves now. It is created once per
// listener and survives reloads: a reload swaps a new *Certs in, new
// handshakes see it from then on, and connections already open are not
// touched (crypto/tls holds the certificate of a finished handshake itself).
// Its methods are safe for concurrent use.
type Store struct {
	certs atomic.Pointer[Certs]
}

// NewStore returns a Store serving c, which must not be nil.
func NewStore(c *Certs) *Store {
	s := &Store{}
	s.Swap(c)
	return s
}

// Swap makes new handshakes use c, which must not be nil.
func (s *Store) Swap(c *Certs) {
	if c == nil {
		panic("BUG: tlsstore: Store.Swap with nil *Certs")
	}
	s.certs.Store(c)
}

// Certs returns the set served now.
func (s *Store) Certs() *Certs {
	return s.certs.Load()
}

// GetCertificate is the tls.Config.GetCertificate hook: Pick on the set
// served now; see there for what it allocates.
func (s *Store) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	return s.certs.Load().Pick(hello)
}
