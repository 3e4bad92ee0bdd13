package stream

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/edge-gw/edge/proxyproto"
	"github.com/edge-gw/edge/shard"
)

// DefaultFailTimeout is how long a server that refused a connection is skipped.
const DefaultFailTimeout = 10 * time.Second

// Pool is the servers of one upstream (or one cell) as a stream dials them: round
// robin, skipping for FailTimeout a server whose connect failed; when every server is
// skipped, each is tried anyway. It is immutable but for its counters: a reload builds
// new Pools. Safe for concurrent use.
type Pool struct {
	name    string
	servers []*Server
	next    atomic.Uint32
	o       PoolOptions
}

// PoolOptions are the settings of a Pool.
type PoolOptions struct {
	ConnectTimeout time.Duration // a connect must succeed within; default 1s
	FailTimeout    time.Duration // a server whose connect failed is skipped this long; default DefaultFailTimeout
	// ProxyProtocol "v1" or "v2" writes a PROXY protocol header with the client's and
	// the stream's addresses first on every connection; "": none.
	ProxyProtocol string
}

// Server is one server of a Pool and its counters.
type Server struct {
	Addr      string
	downUntil atomic.Int64 // unix nanoseconds until which it is skipped; 0: up
	active    atomic.Int64
	total     atomic.Uint64
	failed    atomic.Uint64
}

// NewPool returns a pool of servers ("host:port" each, at least one) named name (the
// upstream's or cell's name, for errors and GET /streams).
func NewPool(name string, servers []string, o PoolOptions) *Pool {
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = time.Second
	}
	if o.FailTimeout <= 0 {
		o.FailTimeout = DefaultFailTimeout
	}
	p := &Pool{name: name, o: o}
	for _, s := range servers {
		p.servers = append(p.servers, &Server{Addr: s})
	}
	return p
}

// Name returns the pool's name.
func (p *Pool) Name() string { return p.name }

// ErrNoServer is what Dial returns when no server of the pool took the connection.
var ErrNoServer = errors.New("no server accepted the connection")

// Dial connects to the next server that takes a connection, starting after the one
// the previous Dial started with, and writes the PROXY header when the pool sends one
// (client is the address it carries as the source, local as the destination). Every
// server is tried at most once, those skipped after a failure last.
func (p *Pool) Dial(client, local net.Addr) (*net.TCPConn, *Server, error) {
	n := len(p.servers)
	start := int(p.next.Add(1)-1) % n
	now := time.Now().UnixNano()
	var errs []error
	for pass := 0; pass < 2; pass++ {
		for i := range n {
			s := p.servers[(start+i)%n]
			if down := s.downUntil.Load() > now; down != (pass == 1) {
				continue
			}
			c, err := p.dialOne(s, client, local)
			if err == nil {
				return c, s, nil
			}
			errs = append(errs, err)
		}
	}
	return nil, nil, fmt.Errorf("%s %q: %w: %w", "upstream", p.name, ErrNoServer, errors.Join(errs...))
}

func (p *Pool) dialOne(s *Server, client, local net.Addr) (*net.TCPConn, error) {
	c, err := net.DialTimeout("tcp", s.Addr, p.o.ConnectTimeout)
	if err != nil {
		s.failed.Add(1)
		s.downUntil.Store(time.Now().Add(p.o.FailTimeout).UnixNano())
		return nil, fmt.Errorf("cannot connect to %s: %w", s.Addr, err)
	}
	tc := c.(*net.TCPConn)
	if p.o.ProxyProtocol != "" {
		var buf [proxyHeaderMax]byte
		hdr := buf[:0]
		if p.o.ProxyProtocol == "v1" {
			hdr = proxyproto.AppendV1(hdr, client, local)
		} else {
			hdr = proxyproto.AppendV2(hdr, client, local)
		}
		tc.SetWriteDeadline(time.Now().Add(p.o.ConnectTimeout))
		_, err := tc.Write(hdr)
		tc.SetWriteDeadline(time.Time{})
		if err != nil {
			tc.Close()
			s.failed.Add(1)
			return nil, fmt.Errorf("cannot send the PROXY header to %s: %w", s.Addr, err)
		}
	}
	s.downUntil.Store(0)
	s.total.Add(1)
	return tc, nil
}

// proxyHeaderMax holds a v1 line (107 bytes) or a v2 header with IPv6 addresses (52).
const proxyHeaderMax = 108

// Cells is a cells block as a stream uses it: the client's address picks the cell, by
// the same consistent hash HTTP requests of a cells block keyed by "ip" use, so an L4
// client lands in the cell its HTTP requests go to.
type Cells struct {
	name  string
	ring  *shard.Ring
	pools []*Pool // by ring index
}

// NewCells returns the cells of ring, whose cell i dials pools[i].
func NewCells(name string, ring *shard.Ring, pools []*Pool) (*Cells, error) {
	if ring.Len() != len(pools) {
		return nil, fmt.Errorf("cells %q: %d cells in the ring, %d pools", name, ring.Len(), len(pools))
	}
	return &Cells{name: name, ring: ring, pools: pools}, nil
}

// Pick returns the pool of the cell of client.
func (c *Cells) Pick(client netip.Addr) *Pool {
	var buf [48]byte
	return c.pools[c.ring.LookupHash(shard.Hash(client.AppendTo(buf[:0])))]
}
