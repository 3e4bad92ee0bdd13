package tlsstore

import (
	"crypto/rand"
	"crypto/tls"
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
// process, which has keys of its own.
//
// Tickets survives reloads: create one per process (or per listener) and
// register the long-lived configs with it. Its methods are safe for
// concurrent use and with handshakes in flight.
type Tickets struct {
	every time.Duration
	keep  int

	mu   sync.Mutex
	keys [][32]byte // newest first, at most keep
	cfgs map[*tls.Config]struct{}
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

// Rotate makes one new key the encrypting one, drops the oldest beyond keep
// and sets the keys on every registered config.
func (t *Tickets) Rotate() {
	k := newTicketKey()
	t.mu.Lock()
	defer t.mu.Unlock()
	keys := make([][32]byte, 0, t.keep)
	keys = append(keys, k)
	keys = append(keys, t.keys[:min(len(t.keys), t.keep-1)]...)
	t.keys = keys
	for cfg := range t.cfgs {
		cfg.SetSessionTicketKeys(keys)
	}
}

// Run calls Rotate every `every` until stop is closed.
func (t *Tickets) Run(stop <-chan struct{}) {
	tick := time.NewTicker(t.every)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
			t.Rotate()
		}
	}
}

func newTicketKey() [32]byte {
	var k [32]byte
	rand.Read(k[:]) // never fails since Go 1.24: it crashes the program instead
	return k
}
