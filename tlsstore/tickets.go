package tlsstore

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"sync"
	"time"
)

// Defaults for NewTickets. A new key every hour, each accepted for a day: a
// client that comes back within a day resumes (no certificate, no signature,
// far less CPU on both sides than a full handshake), while a stolen key —
// from a memory dump, a core file — covers the tickets of one hour and works
// against live clients for at most a day. crypto/tls on its own rotates daily
// and keeps keys a week, a window seven times as long.
const (
	DefaultTicketEvery = time.Hour
	DefaultTicketKeep  = 24
)

// Tickets rotates session-ticket keys for every registered config: one new
// random key every `every`, the newest `keep` keys accepted for resumption,
// the newest one encrypting new tickets.
//
// Exposure: a key encrypts tickets for `every` and is accepted for
// every×keep after it was made. Whoever steals it can, within that window,
// impersonate edge to clients resuming with the tickets it encrypted, and,
// with recorded traffic, decrypt those clients' TLS 1.2 connections for good
// (a TLS 1.2 ticket holds the master secret). Recorded TLS 1.3 traffic stays
// secret: crypto/tls always resumes TLS 1.3 with a fresh (EC)DHE exchange.
//
// Keys live in memory only: a restart makes every outstanding ticket fall
// back to a full handshake, as does a client resuming on another edge
// process, which has keys of its own; unless the keys derive from a secret
// the edges share (SetSecret), which every one of them turns into the same
// key for the same period of time.
//
// Tickets survives reloads: create one per process (or per listener) and
// register the long-lived configs with it. Its methods are safe for
// concurrent use and with handshakes in flight.
type Tickets struct {
	every time.Duration
	keep  int

	mu     sync.Mutex
	keys   [][32]byte // newest first, at most keep (with a secret: the next period's second)
	secret []byte     // SetSecret's; nil: random keys
	cfgs   map[*tls.Config]struct{}
}

// NewTickets returns a Tickets holding one fresh key. every <= 0 means
// DefaultTicketEvery and keep <= 0 DefaultTicketKeep; keep 1 means a rotation
// ends every outstanding ticket. Rotation starts with Run.
func NewTickets(every time.Duration, keep int) *Tickets {
	if every <= 0 {
		every = DefaultTicketEvery
	}
	if keep <= 0 {
		keep = DefaultTicketKeep
	}
	t := &Tickets{every: every, keep: keep, cfgs: make(map[*tls.Config]struct{})}
	t.keys = [][32]byte{newTicketKey()}
	return t
}

// Register sets the current keys on cfg now and on every rotation until
// Unregister. This turns off crypto/tls's own rotation for cfg. Registering
// a config twice is the same as once.
func (t *Tickets) Register(cfg *tls.Config) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.cfgs[cfg] = struct{}{}
	cfg.SetSessionTicketKeys(t.keys)
}

// Unregister stops setting keys on cfg. The keys it has stay until it is
// dropped; an unregistered config still in use should be retired soon.
func (t *Tickets) Unregister(cfg *tls.Config) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.cfgs, cfg)
}

// MinSecret is the shortest secret SetSecret takes.
const MinSecret = 32

// SetSecret makes the keys derive from secret, so that every edge given the same secret
// has the same keys at the same time and a client resumes its session on any of them
// (behind an L4 balancer, or after a restart): the key of period n, n = ⌊Unix time /
// every⌋, is HMAC-SHA256(secret, "edge tls session ticket key" ‖ n). The current
// period's key encrypts; the next period's (an edge whose clock runs ahead may have
// moved on) and the keep−1 before are accepted. A nil secret goes back to random keys;
// one shorter than MinSecret is refused and nothing changes.
//
// Exposure: whoever learns the secret can make every key, past and future, not only
// the ones of a day; treat it as the certificates' private keys are treated, and change
// it (every edge at once) if it may have leaked.
func (t *Tickets) SetSecret(secret []byte) error {
	if secret != nil && len(secret) < MinSecret {
		return errShortSecret
	}
	t.mu.Lock()
	same := bytes.Equal(secret, t.secret) && (secret == nil) == (t.secret == nil)
	if secret != nil {
		secret = bytes.Clone(secret)
	}
	t.secret = secret
	t.mu.Unlock()
	if !same {
		t.Rotate()
	}
	return nil
}

var errShortSecret = errors.New("tlsstore: the session ticket secret must be at least 32 bytes")

// Rotate sets new keys on every registered config: with a secret, those of the present
// period; without, one new random key ahead of the keep−1 newest.
func (t *Tickets) Rotate() { t.rotateAt(time.Now()) }

func (t *Tickets) rotateAt(now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	keys := make([][32]byte, 0, t.keep+1)
	if t.secret != nil {
		n := t.period(now)
		keys = append(keys, derivedKey(t.secret, n), derivedKey(t.secret, n+1))
		for i := int64(1); i < int64(t.keep); i++ {
			keys = append(keys, derivedKey(t.secret, n-i))
		}
	} else {
		keys = append(keys, newTicketKey())
		keys = append(keys, t.keys[:min(len(t.keys), t.keep-1)]...)
	}
	t.keys = keys
	for cfg := range t.cfgs {
		cfg.SetSessionTicketKeys(keys)
	}
}

// period is the number of the rotation period now falls in.
func (t *Tickets) period(now time.Time) int64 { return now.UnixNano() / int64(t.every) }

// derivedKey is the key of period n under secret.
func derivedKey(secret []byte, n int64) (k [32]byte) {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("edge tls session ticket key"))
	m.Write(binary.BigEndian.AppendUint64(nil, uint64(n)))
	copy(k[:], m.Sum(nil))
	return k
}

// Run calls Rotate at the start of every period (periods are counted from the Unix
// epoch, so edges sharing a secret rotate together) until stop is closed.
func (t *Tickets) Run(stop <-chan struct{}) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	for {
		now := time.Now()
		next := time.Unix(0, (t.period(now)+1)*int64(t.every))
		timer.Reset(next.Sub(now))
		select {
		case <-stop:
			return
		case <-timer.C:
			t.Rotate()
		}
	}
}

func newTicketKey() [32]byte {
	var k [32]byte
	rand.Read(k[:]) // never fails since Go 1.24: it crashes the program instead
	return k
}
