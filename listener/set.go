package listener

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/edge-gw/edge/h3"
	"github.com/edge-gw/edge/handover"
	"github.com/edge-gw/edge/tlsstore"
)

// Set is the listeners of a running edge, keyed by configured address. Prepare and
// Commit are called by one goroutine at a time (the reload loop); List and the
// metrics may run concurrently with them.
type Set struct {
	mu      sync.Mutex
	live    map[string]*Listener // by key(spec)
	m       *Metrics
	log     *slog.Logger
	tickets *tlsstore.Tickets

	draining sync.WaitGroup // removed listeners still draining
}

// NewSet returns an empty set. tickets, when not nil, rotates the session-ticket keys
// of every TLS listener; m may be nil (no metrics).
func NewSet(m *Metrics, tickets *tlsstore.Tickets, log *slog.Logger) *Set {
	if m == nil {
		m = NewMetrics(nil)
	}
	s := &Set{live: map[string]*Listener{}, m: m, log: log, tickets: tickets}
	m.set = s
	return s
}

// Prepared is one config's listeners, bound but not yet serving: Commit applies it,
// Abort undoes it. Exactly one of the two must be called.
type Prepared struct {
	s     *Set
	specs []*Spec
	fresh map[string]*Listener // bound by Prepare, for keys not live before
	quic  map[string]*quicSide // HTTP/3 sides bound by Prepare, for keys that had none
}

// key is a listener's identity across reloads: its configured address, or, when
// that asks for any free port (":0", as tests do), its name and address.
func key(sp *Spec) string {
	if strings.HasSuffix(sp.Address, ":0") {
		return sp.Name + "@" + sp.Address
	}
	return sp.Address
}

// Prepare binds the addresses of specs that no listener holds yet. If one cannot be
// bound, it closes those it bound and returns an error naming the listener and the
// address; the running listeners are untouched either way.
func (s *Set) Prepare(specs []*Spec) (*Prepared, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := &Prepared{s: s, specs: specs, fresh: map[string]*Listener{}, quic: map[string]*quicSide{}}
	for _, sp := range specs {
		if sp.servesH3() {
			sp.h3TLS = h3.TLSConfig(sp.TLS)
		}
		l, ok := s.live[key(sp)]
		if !ok {
			var err error
			if l, err = bind(sp, s.m, s.tickets); err != nil {
				p.Abort()
				return nil, fmt.Errorf("listener %q: cannot listen on %s: %w", sp.Name, sp.Address, err)
			}
			p.fresh[key(sp)] = l
		}
		if sp.servesH3() && l.quic.Load() == nil {
			q, err := l.bindQUIC(sp, s.tickets)
			if err != nil {
				p.Abort()
				return nil, fmt.Errorf("listener %q: cannot listen on UDP %s for h3: %w", sp.Name, l.Addr(), err)
			}
			p.quic[key(sp)] = q
		}
	}
	return p, nil
}

// Abort closes what Prepare bound.
func (p *Prepared) Abort() {
	for _, q := range p.quic {
		q.abort(p.s.tickets)
	}
	p.quic = nil
	for _, l := range p.fresh {
		l.ln.Close()
		l.q.Close()
		l.wd.Close()
		if p.s.tickets != nil {
			p.s.tickets.Unregister(l.base)
		}
	}
	p.fresh = nil
}

// Commit makes the prepared specs the running listeners: new ones start serving,
// kept ones take their new spec for new connections and requests (open connections
// go on), and listeners missing from the specs stop accepting and drain for up to
// drain in the background.
func (p *Prepared) Commit(drain time.Duration) {
	s := p.s
	s.mu.Lock()
	defer s.mu.Unlock()
	keep := map[string]bool{}
	for _, sp := range p.specs {
		k := key(sp)
		keep[k] = true
		if l, ok := p.fresh[k]; ok {
			s.live[k] = l
			l.start(s.log)
			s.log.Info("listener started", "listener", sp.Name, "addr", l.Addr().String(), "protocols", sp.Protocols, "tls", sp.TLS != nil)
		} else {
			l := s.live[k]
			l.spec.Store(sp)
			l.h2.SetConfig(sp.H2Config) // for connections accepted from now on
		}
		p.commitQUIC(s.live[k], sp, drain)
	}
	for addr, l := range s.live {
		if keep[addr] {
			continue
		}
		delete(s.live, addr)
		s.draining.Add(1)
		go func() {
			defer s.draining.Done()
			name := l.spec.Load().Name
			s.log.Info("listener removed: draining", "listener", name, "addr", addr, "timeout", drain.String())
			ctx, cancel := context.WithTimeout(context.Background(), drain)
			defer cancel()
			if err := l.drain(ctx, s.tickets); err != nil {
				s.log.Warn("listener drained with requests cut", "listener", name, "error", err)
			}
			if s.tickets != nil {
				s.tickets.Unregister(l.base)
			}
		}()
	}
	p.fresh, p.quic = nil, nil
}

// commitQUIC starts, updates or stops l's HTTP/3 side as sp says.
func (p *Prepared) commitQUIC(l *Listener, sp *Spec, drain time.Duration) {
	s := p.s
	cur := l.quic.Load()
	switch {
	case sp.servesH3() && cur == nil:
		q := p.quic[key(sp)]
		q.start(l, s.log)
		l.quic.Store(q)
		s.log.Info("listener serves HTTP/3", "listener", sp.Name, "udp", q.pc.LocalAddr().String())
	case sp.servesH3():
		cur.srv.SetConfig(sp.H3Config)
	case cur != nil:
		l.quic.Store(nil) // TCP answers stop advertising it at once
		s.draining.Add(1)
		go func() {
			defer s.draining.Done()
			ctx, cancel := context.WithTimeout(context.Background(), drain)
			defer cancel()
			if err := cur.drain(ctx, s.tickets); err != nil {
				s.log.Warn("listener's HTTP/3 side drained with requests cut", "listener", sp.Name, "error", err)
			}
		}()
	}
}

// Sockets returns a file of every listening socket, keyed as Prepare finds them again
// in a process started by a handover (package handover). The caller closes the files.
func (s *Set) Sockets() ([]handover.Socket, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []handover.Socket
	for k, l := range s.live {
		f, err := l.ln.(*net.TCPListener).File()
		if err != nil {
			for _, o := range out {
				o.File.Close()
			}
			return nil, fmt.Errorf("listener %q: %w", l.spec.Load().Name, err)
		}
		out = append(out, handover.Socket{Key: "listener " + k, File: f})
		if q := l.quic.Load(); q != nil {
			f, err := q.pc.File()
			if err != nil {
				for _, o := range out {
					o.File.Close()
				}
				return nil, fmt.Errorf("listener %q udp: %w", l.spec.Load().Name, err)
			}
			out = append(out, handover.Socket{Key: udpKey(l.spec.Load()), File: f})
		}
	}
	return out, nil
}

// Addr returns the bound address of the listener named name, or "".
func (s *Set) Addr(name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.live {
		if l.spec.Load().Name == name {
			return l.Addr().String()
		}
	}
	return ""
}

// Shutdown drains every listener at once (stop accepting, GOAWAY to HTTP/2
// clients, requests in flight finish) until ctx ends, and waits for listeners
// removed by reloads to finish draining too.
func (s *Set) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	all := s.live
	s.live = map[string]*Listener{}
	s.mu.Unlock()
	errs := make(chan error, len(all))
	for _, l := range all {
		go func() { errs <- l.drain(ctx, s.tickets) }()
	}
	var err error
	for range all {
		err = errors.Join(err, <-errs)
	}
	s.draining.Wait()
	return err
}

// Info is one listener as GET /listeners shows it.
type Info struct {
	Name         string     `json:"name"`
	Address      string     `json:"address"` // bound address (the real port when configured as 0)
	Configured   string     `json:"configured_address"`
	Protocols    []string   `json:"protocols"`
	TLS          bool       `json:"tls"`
	MinVersion   string     `json:"min_version,omitempty"`
	Connections  int64      `json:"connections"` // open now: HTTP/1.1, HTTP/2 and handshaking
	HTTP2Conns   int64      `json:"http2_connections"`
	Handshaking  int64      `json:"handshaking"`
	Accepted     uint64     `json:"accepted_total"`
	Refused      uint64     `json:"refused_total"`       // closed at accept: over max_conns
	ProxyRefused uint64     `json:"proxy_refused_total"` // closed for their PROXY header
	ProxyProto   bool       `json:"proxy_protocol"`
	Certificates []CertInfo `json:"certificates,omitempty"`
	HTTP3        *UDPInfo   `json:"http3,omitempty"` // the UDP side, when "h3" is served
}

// UDPInfo is a listener's HTTP/3 side as GET /listeners shows it.
type UDPInfo struct {
	Address          string `json:"udp_address"` // bound UDP address
	AltSvc           string `json:"alt_svc"`     // what TCP answers advertise
	Connections      int    `json:"connections"` // QUIC connections open now, handshaking included
	Handshakes       uint64 `json:"handshakes_total"`
	HandshakesFailed uint64 `json:"handshakes_failed_total"`
	Refused          uint64 `json:"refused_total"` // over max_conns or max_conns_per_ip
	Retries          uint64 `json:"retries_total"` // Initials answered with Retry
	EarlyHeld        uint64 `json:"early_held_total"`
	EarlyDropped     uint64 `json:"early_dropped_total"`
	Requests         uint64 `json:"requests_total"`
}

// CertInfo is one certificate a TLS listener serves.
type CertInfo struct {
	Names    []string  `json:"names"`
	NotAfter time.Time `json:"not_after"`
	Serial   string    `json:"serial"`
	KeyType  string    `json:"key_type"`
	Issuer   string    `json:"issuer"`
	File     string    `json:"cert_file"`
}

// List describes the running listeners, sorted by name.
func (s *Set) List() []Info {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Info, 0, len(s.live))
	for _, l := range s.live {
		out = append(out, l.info())
	}
	slices.SortFunc(out, func(a, b Info) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func (l *Listener) info() Info {
	sp := l.spec.Load()
	in := Info{Name: sp.Name, Address: l.Addr().String(), Configured: sp.Address, Protocols: sp.Protocols,
		TLS: sp.TLS != nil, Connections: l.Open(), HTTP2Conns: int64(l.h2.Stats().ConnsOpen),
		Handshaking: l.handshaking.Load(), Accepted: l.stats.accepted.Load(), Refused: l.stats.refused.Load(),
		ProxyRefused: l.stats.proxyRefused.Load(), ProxyProto: sp.ProxyProtocol}
	if sp.TLS != nil {
		in.MinVersion = versionName(sp.TLS.MinVersion)
	}
	if q := l.quic.Load(); q != nil {
		st := q.srv.Stats()
		in.HTTP3 = &UDPInfo{Address: q.pc.LocalAddr().String(), AltSvc: string(q.altSvc), Connections: st.ConnsOpen,
			Handshakes: st.HandshakesOK, HandshakesFailed: st.HandshakesFailed, Refused: st.Refused, Retries: st.Retries,
			EarlyHeld: st.EarlyHeld, EarlyDropped: st.EarlyDropped, Requests: st.Requests}
	}
	for _, c := range sp.certList() {
		in.Certificates = append(in.Certificates, CertInfo{Names: c.Names, NotAfter: c.NotAfter.UTC(),
			Serial: c.Serial, KeyType: c.KeyType, Issuer: c.Issuer, File: c.CertFile})
	}
	return in
}
