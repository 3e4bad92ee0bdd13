package stream

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edge-gw/edge/proxyproto"
	"github.com/edge-gw/edge/tunnel"
)

// Spec is what one stream should be under one config. A reload passes a new Spec for
// a stream whose address stays: it applies to connections accepted from then on, and
// open connections go on as they were.
type Spec struct {
	Name     string
	Address  string // "host:port" as configured: with Protocol, the stream's identity across reloads
	Protocol string // "tcp" or "udp"

	// ProxyProtocol: each connection starts with a PROXY header, taken only from peers
	// in Trusted (others are closed before a byte is read); its address is the client.
	ProxyProtocol bool
	Trusted       []netip.Prefix

	HandshakeTimeout time.Duration // the PROXY header and a ClientHello (SNI) must arrive within
	IdleTimeout      time.Duration // no byte either way this long ends a connection (a UDP session)
	MaxConns         int           // connections (TCP) at once; one over it is closed at accept
	MaxConnsPerIP    int           // connections at once per client address; 0: none
	ConnRate         float64       // new connections per second per client address; 0: none
	ConnBurst        int           // the bucket of ConnRate
	MaxSessions      int           // UDP sessions at once

	// Where connections go: exactly one of Pool (without SNI), Cells, or SNI with its
	// Pools by target name (Pool then is the default for an unknown name, or nil).
	Pool  *Pool
	Cells *Cells
	SNI   *SNIRouter
	Pools map[string]*Pool

	// Banned says whether a client address is blacklisted: its connection is closed
	// before a byte is read (or right after the PROXY header that names it).
	Banned func(netip.Addr) bool
}

// pick returns the pool for a client (and server name, with SNI).
func (sp *Spec) pick(client netip.Addr, name string) *Pool {
	switch {
	case sp.Cells != nil:
		return sp.Cells.Pick(client)
	case sp.SNI != nil:
		if t, ok := sp.SNI.Pick(name); ok {
			return sp.Pools[t]
		}
		return nil
	}
	return sp.Pool
}

// servers returns every pool of the spec, for GET /streams.
func (sp *Spec) pools() []*Pool {
	var out []*Pool
	if sp.Pool != nil {
		out = append(out, sp.Pool)
	}
	if sp.Cells != nil {
		out = append(out, sp.Cells.pools...)
	}
	names := make([]string, 0, len(sp.Pools))
	for n := range sp.Pools {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		if p := sp.Pools[n]; p != sp.Pool {
			out = append(out, p)
		}
	}
	return out
}

// The results of a connection, the values of edge_stream_connections_total's label.
const (
	resAccepted   = iota // relayed to a server
	resOverMax           // over max_conns at accept
	resUntrusted         // a PROXY header expected from a peer not in trusted_proxies
	resBadHeader         // the PROXY header was malformed, too slow or missing
	resBanned            // blacklisted address
	resLimited           // over max_conns_per_ip or conn_rate
	resBadHello          // sni: no ClientHello within bounds
	resNoRoute           // sni: no route for the name and no default
	resNoUpstream        // no server took the connection
	numResults
)

var resultNames = [numResults]string{"accepted", "over_max_conns", "untrusted_proxy", "bad_proxy_header",
	"banned", "limited", "bad_client_hello", "no_route", "upstream_failed"}

// counts are a stream's counters; they survive reloads that keep its address.
type counts struct {
	results [numResults]atomic.Uint64
	// UDP
	sessions    atomic.Int64
	sessTotal   atomic.Uint64
	dgramsUp    atomic.Uint64
	dgramsDown  atomic.Uint64
	bytesUp     atomic.Uint64
	bytesDown   atomic.Uint64
	dropped     atomic.Uint64 // datagrams dropped: over max_sessions, banned, no server
	sessRefused atomic.Uint64
}

// tcpStream is one TCP stream's listening socket.
type tcpStream struct {
	ln    *net.TCPListener
	spec  atomic.Pointer[Spec]
	guard atomic.Pointer[guard]
	group *tunnel.Group
	n     *counts
	log   *slog.Logger

	wg       sync.WaitGroup // the accept loop
	stopping atomic.Bool
}

func (s *tcpStream) setSpec(sp *Spec) {
	s.spec.Store(sp)
	s.group.SetMax(sp.MaxConns)
	g := s.guard.Load()
	if g == nil || g.maxConns != sp.MaxConnsPerIP || g.rate != sp.ConnRate || g.burst != float64(max(sp.ConnBurst, 1)) {
		s.guard.Store(newGuard(sp.MaxConnsPerIP, sp.ConnRate, sp.ConnBurst))
	}
}

func (s *tcpStream) start() {
	s.wg.Add(1)
	go s.acceptLoop()
}

// stop closes the listening socket; open connections go on.
func (s *tcpStream) stop() {
	s.stopping.Store(true)
	s.ln.Close()
	s.wg.Wait()
}

func (s *tcpStream) acceptLoop() {
	defer s.wg.Done()
	var delay time.Duration
	for {
		c, err := s.ln.AcceptTCP()
		if err != nil {
			if s.stopping.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off, as net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.log.Warn("stream accept failed", "stream", s.spec.Load().Name, "error", err, "retry_in", delay.String())
			time.Sleep(delay)
			continue
		}
		delay = 0
		if !s.group.Acquire() {
			s.n.results[resOverMax].Add(1)
			c.SetLinger(0)
			c.Close()
			continue
		}
		go s.handle(c)
	}
}

// handle runs one connection through the stream's checks and relays it. It owns the
// group slot acquire took.
func (s *tcpStream) handle(c *net.TCPConn) {
	sp := s.spec.Load()
	if res, ok := s.relay(sp, c); !ok {
		s.n.results[res].Add(1)
		c.SetLinger(0) // a refused connection is reset, not left in TIME_WAIT
		c.Close()
		s.group.Release()
	}
}

// relay does the work of handle: it counts a connection it relays and returns once the
// relay is over; false: the connection was refused (res says why), and the caller
// counts it, closes it and releases the slot.
func (s *tcpStream) relay(sp *Spec, c *net.TCPConn) (res int, ok bool) {
	peer := addrOf(c.RemoteAddr())
	client := peer
	var clientAddr net.Addr = c.RemoteAddr()
	var early []byte
	if sp.ProxyProtocol {
		if !trusted(sp.Trusted, peer) {
			return resUntrusted, false
		}
		pc, err := proxyproto.Read(c, proxyproto.Options{Timeout: sp.HandshakeTimeout})
		if err != nil {
			s.log.Debug("stream: bad PROXY header", "stream", sp.Name, "peer", peer.String(), "error", err)
			return resBadHeader, false
		}
		clientAddr = pc.RemoteAddr()
		client = addrOf(clientAddr)
		early = append(early, pc.Pending()...)
	}
	if sp.Banned != nil && sp.Banned(client) {
		return resBanned, false
	}
	g := s.guard.Load()
	if g.active() {
		if ok, _ := g.admit(client, time.Now()); !ok {
			return resLimited, false
		}
		defer g.done(client)
	}
	var name string
	if sp.SNI != nil {
		var hello []byte
		var err error
		src := net.Conn(c)
		if len(early) > 0 {
			src = &prefixConn{TCPConn: c, pre: early}
		}
		name, hello, err = PeekServerName(src, 0, sp.HandshakeTimeout)
		if err != nil {
			s.log.Debug("stream: no ClientHello", "stream", sp.Name, "client", client.String(), "error", err)
			return resBadHello, false
		}
		early = hello
	}
	pool := sp.pick(client, name)
	if pool == nil {
		return resNoRoute, false
	}
	up, srv, err := pool.Dial(clientAddr, c.LocalAddr())
	if err != nil {
		s.log.Warn("stream: no server took a connection", "stream", sp.Name, "error", err)
		return resNoUpstream, false
	}
	s.n.results[resAccepted].Add(1)
	srv.active.Add(1)
	s.group.Run(c, up, tunnel.Options{IdleTimeout: sp.IdleTimeout, ClientPending: early})
	srv.active.Add(-1)
	return resAccepted, true
}

// prefixConn reads pre before the connection's own bytes.
type prefixConn struct {
	*net.TCPConn
	pre []byte
}

func (p *prefixConn) Read(b []byte) (int, error) {
	if len(p.pre) > 0 {
		n := copy(b, p.pre)
		p.pre = p.pre[n:]
		return n, nil
	}
	return p.TCPConn.Read(b)
}

// addrOf returns the IP of a TCP or UDP address (unmapped), or the zero Addr.
func addrOf(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.TCPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	case *net.UDPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	}
	return netip.Addr{}
}

func trusted(prefixes []netip.Prefix, ip netip.Addr) bool {
	for _, p := range prefixes {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}
