package cluster

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// countingTransport wraps memberlist's NetTransport to count the bytes this node
// sends: UDP packets (probes, gossip, piggybacked broadcasts) and TCP streams
// (push/pull, joins, reliable sends) in both directions of the connections it
// writes to. Received bytes are the other nodes' sent bytes, so they are not
// counted twice.
type countingTransport struct {
	*memberlist.NetTransport

	udpBytes, udpPackets, tcpBytes atomic.Uint64

	// blocked, when set, says which peer addresses ("ip:port") this node cannot reach, as
	// a network partition would: packets to them are dropped as if lost on the way and
	// connections to them fail. Tests partition nodes with it (Cluster.partition); it is
	// nil in production, where it costs one atomic load per packet.
	blocked atomic.Pointer[func(addr string) bool]

	streams  chan net.Conn
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

var _ memberlist.NodeAwareTransport = (*countingTransport)(nil)

func newCountingTransport(nt *memberlist.NetTransport) *countingTransport {
	t := &countingTransport{NetTransport: nt, streams: make(chan net.Conn), stop: make(chan struct{})}
	t.wg.Add(1)
	go t.relayStreams()
	return t
}

// relayStreams hands accepted connections to memberlist, wrapped so the bytes it
// answers with are counted.
func (t *countingTransport) relayStreams() {
	defer t.wg.Done()
	in := t.NetTransport.StreamCh()
	for {
		select {
		case c := <-in:
			select {
			case t.streams <- &countingConn{Conn: c, n: &t.tcpBytes}:
			case <-t.stop:
				c.Close()
				return
			}
		case <-t.stop:
			return
		}
	}
}

func (t *countingTransport) count(n int) {
	t.udpBytes.Add(uint64(n))
	t.udpPackets.Add(1)
}

// errPartitioned is the dial error to a peer behind a partition (countingTransport.blocked).
var errPartitioned = errors.New("cluster: peer unreachable (partitioned)")

func (t *countingTransport) cut(addr string) bool {
	f := t.blocked.Load()
	return f != nil && (*f)(addr)
}

func (t *countingTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	if t.cut(addr) {
		return time.Now(), nil
	}
	ts, err := t.NetTransport.WriteTo(b, addr)
	if err == nil {
		t.count(len(b))
	}
	return ts, err
}

func (t *countingTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	if t.cut(a.Addr) {
		return time.Now(), nil
	}
	ts, err := t.NetTransport.WriteToAddress(b, a)
	if err == nil {
		t.count(len(b))
	}
	return ts, err
}

func (t *countingTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if t.cut(addr) {
		return nil, errPartitioned
	}
	c, err := t.NetTransport.DialTimeout(addr, timeout)
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, n: &t.tcpBytes}, nil
}

func (t *countingTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	if t.cut(a.Addr) {
		return nil, errPartitioned
	}
	c, err := t.NetTransport.DialAddressTimeout(a, timeout)
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, n: &t.tcpBytes}, nil
}

func (t *countingTransport) StreamCh() <-chan net.Conn { return t.streams }

func (t *countingTransport) Shutdown() error {
	err := t.NetTransport.Shutdown()
	t.stopOnce.Do(func() { close(t.stop) })
	t.wg.Wait()
	return err
}

type countingConn struct {
	net.Conn
	n *atomic.Uint64
}

func (c *countingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.n.Add(uint64(n))
	return n, err
}
