package stream

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/edge-gw/edge/handover"
	"github.com/edge-gw/edge/tunnel"
)

// Set is the streams of a running edge, keyed by protocol and configured address.
// Prepare and Commit are called by one goroutine at a time (the reload loop); List and
// the metrics may run concurrently with them.
type Set struct {
	mu   sync.Mutex
	live map[string]*running
	reg  *tunnel.Registry // every TCP connection of every stream, for Shutdown
	log  *slog.Logger
}

// running is one live stream: exactly one of tcp and udp is set.
type running struct {
	tcp *tcpStream
	udp *udpStream
	n   *counts
}

func (e *running) spec() *Spec {
	if e.tcp != nil {
		return e.tcp.spec.Load()
	}
	return e.udp.spec.Load()
}

func (e *running) addr() net.Addr {
	if e.tcp != nil {
		return e.tcp.ln.Addr()
	}
	return e.udp.pc.LocalAddr()
}

// NewSet returns an empty set.
func NewSet(log *slog.Logger) *Set {
	return &Set{live: map[string]*running{}, reg: tunnel.NewRegistry(), log: log}
}

// key is a stream's identity across reloads: protocol and configured address, or, when
// that asks for any free port (":0", as tests do), its name too.
func key(sp *Spec) string {
	k := sp.Protocol + " " + sp.Address
	if strings.HasSuffix(sp.Address, ":0") {
		k = sp.Name + "@" + k
	}
	return k
}

// Prepared is one config's streams, bound but not yet serving: Commit applies it, Abort
// undoes it. Exactly one of the two must be called.
type Prepared struct {
	s     *Set
	specs []*Spec
	fresh map[string]*running
}

// Prepare binds the addresses of specs that no stream holds yet. If one cannot be
// bound, it closes those it bound and returns an error naming the stream and address;
// the running streams are untouched either way.
func (s *Set) Prepare(specs []*Spec) (*Prepared, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := &Prepared{s: s, specs: specs, fresh: map[string]*running{}}
	for _, sp := range specs {
		if _, ok := s.live[key(sp)]; ok {
			continue
		}
		e, err := s.bind(sp)
		if err != nil {
			p.Abort()
			return nil, fmt.Errorf("stream %q: cannot listen on %s %s: %w", sp.Name, sp.Protocol, sp.Address, err)
		}
		p.fresh[key(sp)] = e
	}
	return p, nil
}

func (s *Set) bind(sp *Spec) (*running, error) {
	n := &counts{}
	if sp.Protocol == "udp" {
		pc, err := handover.ListenUDP("stream "+key(sp), sp.Address)
		if err != nil {
			return nil, err
		}
		return &running{udp: newUDPStream(pc, n, s.log), n: n}, nil
	}
	ln, err := handover.Listen("stream "+key(sp), sp.Address)
	if err != nil {
		return nil, err
	}
	t := &tcpStream{ln: ln.(*net.TCPListener), group: s.reg.NewGroup(sp.MaxConns), n: n, log: s.log}
	return &running{tcp: t, n: n}, nil
}

// Abort closes what Prepare bound.
func (p *Prepared) Abort() {
	for _, e := range p.fresh {
		if e.tcp != nil {
			e.tcp.ln.Close()
		} else {
			e.udp.pc.Close()
		}
	}
	p.fresh = nil
}

// Commit makes the prepared specs the running streams: new ones start, kept ones take
// their new spec for new connections (open ones go on), and streams missing from the
// specs stop accepting; their TCP connections go on until they end (or Shutdown), their
// UDP sessions end at once.
func (p *Prepared) Commit() {
	s := p.s
	s.mu.Lock()
	defer s.mu.Unlock()
	keep := map[string]bool{}
	for _, sp := range p.specs {
		k := key(sp)
		keep[k] = true
		e, fresh := p.fresh[k]
		if !fresh {
			e = s.live[k]
		}
		if e.tcp != nil {
			e.tcp.setSpec(sp)
		} else {
			e.udp.setSpec(sp)
		}
		if fresh {
			s.live[k] = e
			if e.tcp != nil {
				e.tcp.start()
			} else {
				e.udp.start()
			}
			s.log.Info("stream started", "stream", sp.Name, "protocol", sp.Protocol, "addr", e.addr().String())
		}
	}
	for k, e := range s.live {
		if keep[k] {
			continue
		}
		delete(s.live, k)
		s.log.Info("stream removed", "stream", e.spec().Name, "addr", e.addr().String())
		e.stop()
	}
	p.fresh = nil
}

func (e *running) stop() {
	if e.tcp != nil {
		e.tcp.stop()
	} else {
		e.udp.stopAll()
	}
}

// Sockets returns a file of every stream's socket, keyed as Prepare finds them again in
// a process started by a handover (package handover). The caller closes the files.
func (s *Set) Sockets() ([]handover.Socket, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []handover.Socket
	for k, e := range s.live {
		var f *os.File
		var err error
		if e.tcp != nil {
			f, err = e.tcp.ln.File()
		} else {
			f, err = e.udp.pc.File()
		}
		if err != nil {
			for _, o := range out {
				o.File.Close()
			}
			return nil, fmt.Errorf("stream %q: %w", e.spec().Name, err)
		}
		out = append(out, handover.Socket{Key: "stream " + k, File: f})
	}
	return out, nil
}

// Addr returns the bound address of the stream named name, or "".
func (s *Set) Addr(name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.live {
		if e.spec().Name == name {
			return e.addr().String()
		}
	}
	return ""
}

// Shutdown stops accepting on every stream and ends UDP sessions, then lets open TCP
// connections finish until ctx ends, when the rest are cut.
func (s *Set) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	all := s.live
	s.live = map[string]*running{}
	s.mu.Unlock()
	for _, e := range all {
		e.stop()
	}
	return s.reg.Shutdown(ctx)
}

// Info is one stream as GET /streams shows it.
type Info struct {
	Name        string            `json:"name"`
	Protocol    string            `json:"protocol"`
	Address     string            `json:"address"` // bound address (the real port when configured as 0)
	Configured  string            `json:"configured_address"`
	Connections int64             `json:"connections"` // TCP: relayed now
	Sessions    int64             `json:"sessions"`    // UDP: open now
	Results     map[string]uint64 `json:"connections_total"`
	BytesUp     uint64            `json:"bytes_up"` // client to server
	BytesDown   uint64            `json:"bytes_down"`
	Datagrams   map[string]uint64 `json:"datagrams_total,omitempty"`
	Servers     []ServerInfo      `json:"servers"`
}

// ServerInfo is one server of a stream.
type ServerInfo struct {
	Pool        string    `json:"pool"` // the upstream's or cell's name
	Address     string    `json:"address"`
	Connections int64     `json:"connections"` // open now (UDP: sessions)
	Total       uint64    `json:"connections_total"`
	Failed      uint64    `json:"failed_total"`
	DownUntil   time.Time `json:"down_until,omitzero"` // skipped after a failed connect until then
}

// List describes the running streams, sorted by name.
func (s *Set) List() []Info {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Info, 0, len(s.live))
	for _, e := range s.live {
		out = append(out, e.info())
	}
	slices.SortFunc(out, func(a, b Info) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func (e *running) info() Info {
	sp := e.spec()
	in := Info{Name: sp.Name, Protocol: sp.Protocol, Address: e.addr().String(), Configured: sp.Address,
		Results: map[string]uint64{}}
	if e.tcp != nil {
		in.Connections = e.tcp.group.Active()
		in.BytesUp, in.BytesDown = e.tcp.group.Bytes()
		for i, name := range resultNames {
			in.Results[name] = e.n.results[i].Load()
		}
	} else {
		in.Sessions = e.n.sessions.Load()
		in.BytesUp, in.BytesDown = e.n.bytesUp.Load(), e.n.bytesDown.Load()
		in.Results["sessions"] = e.n.sessTotal.Load()
		in.Results["over_max_sessions"] = e.n.sessRefused.Load()
		in.Datagrams = map[string]uint64{"up": e.n.dgramsUp.Load(), "down": e.n.dgramsDown.Load(), "dropped": e.n.dropped.Load()}
	}
	for _, p := range sp.pools() {
		for _, sv := range p.servers {
			si := ServerInfo{Pool: p.name, Address: sv.Addr, Connections: sv.active.Load(),
				Total: sv.total.Load(), Failed: sv.failed.Load()}
			if d := sv.downUntil.Load(); d > time.Now().UnixNano() {
				si.DownUntil = time.Unix(0, d).UTC()
			}
			in.Servers = append(in.Servers, si)
		}
	}
	return in
}
