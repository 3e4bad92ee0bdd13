// Package faultproxy is a TCP proxy for tests that sits between a client and a real server
// (edge and Redis, edge and an origin) and breaks the connection in the ways networks and
// peers break: added latency per direction, a bandwidth cap, connections reset (RST)
// mid-stream, a blackholed peer that accepts and then says nothing, new connections
// refused, existing ones cut. Faults are switched at run time, while load is running, and
// apply to connections already open as well as to new ones.
//
// It is test support: Start takes a testing.TB and everything it started ends with the
// test. It imports no edge package.
package faultproxy

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Direction names one way through the proxy.
type Direction int

const (
	// Up is client → target (requests).
	Up Direction = iota
	// Down is target → client (responses).
	Down
)

// Proxy forwards every connection accepted on Addr to its target. All methods are safe for
// concurrent use.
type Proxy struct {
	// Addr is the loopback address clients dial instead of the target's.
	Addr string

	target string
	ln     net.Listener

	latency   [2]atomic.Int64 // time.Duration added before each chunk, per Direction
	rate      [2]atomic.Int64 // bytes per second per connection, per Direction; 0 = no cap
	resetDown atomic.Int64    // reset a connection once it carried this many bytes Down; 0 = off
	refuse    atomic.Bool

	accepted, resets atomic.Int64

	mu     sync.Mutex
	stall  chan struct{} // non-nil while blackholed; closed when the blackhole ends
	links  map[*link]struct{}
	closed bool
	wg     sync.WaitGroup
}

// link is one proxied connection: the client's end and the target's end.
type link struct {
	client, server *net.TCPConn
	down           atomic.Int64 // bytes forwarded Down so far
	done           chan struct{}
	once           sync.Once
}

// Start listens on 127.0.0.1:0 and forwards to target ("host:port") until the test ends.
// No fault is on at first.
func Start(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("faultproxy: cannot listen: %v", err)
	}
	p := &Proxy{Addr: ln.Addr().String(), target: target, ln: ln, links: map[*link]struct{}{}}
	p.wg.Add(1)
	go p.acceptLoop()
	t.Cleanup(p.Close)
	return p
}

// SetLatency delays every chunk of bytes going in direction d by lat (0 removes it). Chunks
// on one connection keep their order, so a slow direction also slows what follows.
func (p *Proxy) SetLatency(d Direction, lat time.Duration) { p.latency[d].Store(int64(lat)) }

// SetBandwidth caps each connection to bytesPerSecond in direction d (0 removes the cap).
func (p *Proxy) SetBandwidth(d Direction, bytesPerSecond int) {
	p.rate[d].Store(int64(bytesPerSecond))
}

// ResetAfter makes every connection, open or new, send the client a TCP reset once it has
// carried n bytes from the target towards the client: with n smaller than a response, the
// client sees the response cut off mid-way. 0 turns it off.
func (p *Proxy) ResetAfter(n int) { p.resetDown.Store(int64(n)) }

// Blackhole, while on, stalls every connection in both directions without closing anything:
// new connections are accepted and then hear nothing, like a peer behind a route that drops
// packets. As with TCP, whose retransmissions deliver the stream late but whole, the bytes
// are held, not lost: when the fault ends, whatever was sent arrives in order, to the peers
// that are still listening.
func (p *Proxy) Blackhole(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case on && p.stall == nil:
		p.stall = make(chan struct{})
	case !on && p.stall != nil:
		close(p.stall)
		p.stall = nil
	}
}

// Refuse, while on, resets every new connection at once (the client's dial or first read
// fails with "connection reset"), as a host with no listener does. Open connections live.
func (p *Proxy) Refuse(on bool) { p.refuse.Store(on) }

// ResetAll sends a TCP reset to both ends of every open connection.
func (p *Proxy) ResetAll() { p.each(func(l *link) { l.close(true) }) }

// CutAll closes every open connection normally (FIN) on both ends.
func (p *Proxy) CutAll() { p.each(func(l *link) { l.close(false) }) }

// Heal turns every fault off. Connections already broken stay broken.
func (p *Proxy) Heal() {
	for d := range p.latency {
		p.latency[d].Store(0)
		p.rate[d].Store(0)
	}
	p.resetDown.Store(0)
	p.Blackhole(false)
	p.refuse.Store(false)
}

// Accepted is the number of client connections accepted so far.
func (p *Proxy) Accepted() int64 { return p.accepted.Load() }

// Resets is the number of connections the proxy reset (ResetAfter, ResetAll, Refuse).
func (p *Proxy) Resets() int64 { return p.resets.Load() }

// Open is the number of connections open now.
func (p *Proxy) Open() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.links)
}

// Close stops listening, closes every connection and waits for the proxy's goroutines.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.ln.Close()
	p.CutAll()
	p.wg.Wait()
}

func (p *Proxy) each(fn func(*link)) {
	p.mu.Lock()
	ls := make([]*link, 0, len(p.links))
	for l := range p.links {
		ls = append(ls, l)
	}
	p.mu.Unlock()
	for _, l := range ls {
		fn(l)
	}
}

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.accepted.Add(1)
		client := c.(*net.TCPConn)
		if p.refuse.Load() {
			p.resets.Add(1)
			reset(client)
			continue
		}
		p.wg.Add(1)
		go p.serve(client)
	}
}

// reset closes c with SO_LINGER 0, which makes the kernel send RST instead of FIN.
func reset(c *net.TCPConn) {
	_ = c.SetLinger(0)
	_ = c.Close()
}

func (p *Proxy) serve(client *net.TCPConn) {
	defer p.wg.Done()
	s, err := net.DialTimeout("tcp", p.target, 2*time.Second)
	if err != nil {
		p.resets.Add(1)
		reset(client)
		return
	}
	l := &link{client: client, server: s.(*net.TCPConn), done: make(chan struct{})}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		l.close(false)
		return
	}
	p.links[l] = struct{}{}
	p.mu.Unlock()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.pipe(l, Up, client, l.server) }()
	go func() { defer wg.Done(); p.pipe(l, Down, l.server, client) }()
	wg.Wait()
	l.close(false)
	p.mu.Lock()
	delete(p.links, l)
	p.mu.Unlock()
}

// close ends both sides once; with rst the ends get a reset.
func (l *link) close(rst bool) {
	l.once.Do(func() {
		close(l.done)
		if rst {
			reset(l.client)
			reset(l.server)
			return
		}
		l.client.Close()
		l.server.Close()
	})
}

// pipe copies src to dst in direction d, applying the faults switched on at each chunk.
// When src ends cleanly, dst's write side is shut so the peer sees EOF.
func (p *Proxy) pipe(l *link, d Direction, src, dst *net.TCPConn) {
	buf := make([]byte, 16<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.forward(l, d, dst, buf[:n]) {
			return
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				_ = dst.CloseWrite()
				return
			}
			l.close(false)
			return
		}
	}
}

// forward writes b to dst under the current faults; false means the link is gone.
func (p *Proxy) forward(l *link, d Direction, dst *net.TCPConn, b []byte) bool {
	p.mu.Lock()
	stall := p.stall
	p.mu.Unlock()
	if stall != nil {
		select {
		case <-stall:
		case <-l.done:
			return false
		}
	}
	if lat := time.Duration(p.latency[d].Load()); lat > 0 && !l.sleep(lat) {
		return false
	}
	if d == Down {
		if limit := p.resetDown.Load(); limit > 0 {
			sent := l.down.Load()
			if sent+int64(len(b)) >= limit {
				if keep := limit - sent; keep > 0 {
					_, _ = dst.Write(b[:keep])
				}
				p.resets.Add(1)
				l.close(true)
				return false
			}
		}
		l.down.Add(int64(len(b)))
	}
	for len(b) > 0 {
		chunk := b
		rate := p.rate[d].Load()
		if rate > 0 {
			// Send about 50 pieces a second, each followed by the pause the cap implies.
			piece := max(rate/50, 1)
			if int64(len(chunk)) > piece {
				chunk = chunk[:piece]
			}
		}
		if _, err := dst.Write(chunk); err != nil {
			l.close(false)
			return false
		}
		b = b[len(chunk):]
		if rate > 0 && !l.sleep(time.Duration(int64(len(chunk))*int64(time.Second)/rate)) {
			return false
		}
	}
	return true
}

// sleep waits for d or until the link closes; false means it closed.
func (l *link) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-l.done:
		return false
	}
}
