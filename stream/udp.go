package stream

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// udpStream is one UDP stream: the datagrams of each client address form a session
// with its own socket to a server, whose replies go back to that client. A session ends
// after IdleTimeout without a datagram either way; MaxSessions bounds them (a new
// client's datagrams beyond it are dropped and counted).
type udpStream struct {
	pc   *net.UDPConn
	spec atomic.Pointer[Spec]
	n    *counts
	log  *slog.Logger

	mu       sync.Mutex
	sessions map[netip.AddrPort]*session

	wg       sync.WaitGroup // the read loop, the sweeper and every session's reply loop
	stop     chan struct{}
	stopping atomic.Bool
}

type session struct {
	client netip.AddrPort
	up     *net.UDPConn
	srv    *Server
	last   atomic.Int64 // unix nanoseconds of the last datagram either way
}

// maxDatagram is the largest UDP payload.
const maxDatagram = 64 << 10

func newUDPStream(pc *net.UDPConn, n *counts, log *slog.Logger) *udpStream {
	return &udpStream{pc: pc, n: n, log: log, sessions: map[netip.AddrPort]*session{}, stop: make(chan struct{})}
}

func (s *udpStream) setSpec(sp *Spec) { s.spec.Store(sp) }

func (s *udpStream) start() {
	s.wg.Add(2)
	go s.readLoop()
	go s.sweepLoop()
}

// stopAll closes the socket and every session.
func (s *udpStream) stopAll() {
	if s.stopping.Swap(true) {
		return
	}
	close(s.stop)
	s.pc.Close()
	s.mu.Lock()
	for k, ss := range s.sessions {
		ss.up.Close()
		delete(s.sessions, k)
		s.n.sessions.Add(-1)
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *udpStream) readLoop() {
	defer s.wg.Done()
	buf := make([]byte, maxDatagram)
	for {
		n, from, err := s.pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			if s.stopping.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			continue // an ICMP error reported on the socket, and the like
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		ss := s.session(from)
		if ss == nil {
			s.n.dropped.Add(1)
			continue
		}
		s.n.dgramsUp.Add(1)
		s.n.bytesUp.Add(uint64(n))
		ss.last.Store(time.Now().UnixNano())
		if _, err := ss.up.Write(buf[:n]); err != nil {
			s.n.dropped.Add(1)
		}
	}
}

// session returns the session of client, opening one if the stream allows it; nil:
// the datagram is dropped (banned, over max_sessions, no server).
func (s *udpStream) session(client netip.AddrPort) *session {
	s.mu.Lock()
	ss := s.sessions[client]
	s.mu.Unlock()
	if ss != nil {
		return ss
	}
	sp := s.spec.Load()
	if sp.Banned != nil && sp.Banned(client.Addr()) {
		return nil
	}
	s.mu.Lock()
	full := len(s.sessions) >= sp.MaxSessions
	s.mu.Unlock()
	if full {
		s.n.sessRefused.Add(1)
		return nil
	}
	pool := sp.pick(client.Addr(), "")
	if pool == nil {
		return nil
	}
	up, srv, err := pool.dialUDP()
	if err != nil {
		s.log.Warn("stream: cannot open a UDP session", "stream", sp.Name, "error", err)
		return nil
	}
	ss = &session{client: client, up: up, srv: srv}
	ss.last.Store(time.Now().UnixNano())
	s.mu.Lock()
	if s.stopping.Load() {
		s.mu.Unlock()
		up.Close()
		return nil
	}
	s.sessions[client] = ss
	s.mu.Unlock()
	s.n.sessions.Add(1)
	s.n.sessTotal.Add(1)
	srv.active.Add(1)
	s.wg.Add(1)
	go s.replies(ss)
	return ss
}

// replies relays a session's answers to its client until the session is closed.
func (s *udpStream) replies(ss *session) {
	defer s.wg.Done()
	defer ss.srv.active.Add(-1)
	buf := make([]byte, maxDatagram)
	for {
		n, err := ss.up.Read(buf)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				// A refused port (ICMP) ends the session; the next datagram opens another.
				s.end(ss)
			}
			return
		}
		ss.last.Store(time.Now().UnixNano())
		s.n.dgramsDown.Add(1)
		s.n.bytesDown.Add(uint64(n))
		if _, err := s.pc.WriteToUDPAddrPort(buf[:n], ss.client); err != nil && s.stopping.Load() {
			return
		}
	}
}

// end closes ss unless it was closed already.
func (s *udpStream) end(ss *session) {
	s.mu.Lock()
	if s.sessions[ss.client] == ss {
		delete(s.sessions, ss.client)
		s.n.sessions.Add(-1)
	}
	s.mu.Unlock()
	ss.up.Close()
}

// sweepLoop ends the sessions idle for IdleTimeout, checking every eighth of it
// (within 10ms and 1s).
func (s *udpStream) sweepLoop() {
	defer s.wg.Done()
	for {
		idle := s.spec.Load().IdleTimeout
		tick := min(max(idle/8, 10*time.Millisecond), time.Second)
		select {
		case <-s.stop:
			return
		case <-time.After(tick):
		}
		cut := time.Now().Add(-idle).UnixNano()
		var old []*session
		s.mu.Lock()
		for _, ss := range s.sessions {
			if ss.last.Load() < cut {
				old = append(old, ss)
			}
		}
		s.mu.Unlock()
		for _, ss := range old {
			s.end(ss)
		}
	}
}

// dialUDP opens a socket connected to the pool's next server (round robin; UDP has no
// connect to fail, so no server is skipped).
func (p *Pool) dialUDP() (*net.UDPConn, *Server, error) {
	s := p.servers[int(p.next.Add(1)-1)%len(p.servers)]
	c, err := net.DialTimeout("udp", s.Addr, p.o.ConnectTimeout)
	if err != nil {
		s.failed.Add(1)
		return nil, nil, err
	}
	s.total.Add(1)
	return c.(*net.UDPConn), s, nil
}
