//go:build unix

package rawsock

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Keeping the socket open while a call uses it.
//
// A Conn with the poller's descriptor calls read(2), write(2) and the poller on its file
// descriptor directly. net guards such use with a reference count in poll.FD, taken and
// dropped per call (RawConn.Control: two compare-and-swap loops, a deferred call and a
// closure, a measurable share of a proxied request). A Conn keeps its own count, two
// atomic adds per call, and takes over Close: the socket is closed when Close has been
// called and no call is using it, so a call never reads or writes a descriptor number
// that was closed and handed to another connection meanwhile.

// closingBit marks a Conn whose Close has begun; the bits below count calls in flight.
const closingBit = 1 << 62

// life is a Conn's count of calls in flight and its closing state.
type life struct {
	refs atomic.Int64
	once sync.Once
	err  error // the inner Close's result
}

// longAgo is a deadline in the past: set by Close, it wakes the calls waiting in the
// poller.
var longAgo = time.Unix(1, 0)

// enter registers a call; it returns false once Close has begun.
func (c *Conn) enter() bool {
	if c.life.refs.Add(1)&closingBit != 0 {
		c.leave()
		return false
	}
	return true
}

// leave ends a call; the last call to leave a closing Conn closes the socket.
func (c *Conn) leave() {
	if c.life.refs.Add(-1) == closingBit {
		c.release()
	}
}

// closing reports whether Close has begun.
func (c *Conn) closing() bool { return c.life.refs.Load()&closingBit != 0 }

// release closes the inner connection, once.
func (c *Conn) release() {
	c.life.once.Do(func() { c.life.err = c.Conn.Close() })
}

// Close closes the connection like net.Conn.Close: calls blocked in Read or Write
// return an error wrapping net.ErrClosed, and so does every later call. The socket
// itself is closed once no call is using it.
func (c *Conn) Close() error {
	if c.poll == 0 {
		return c.Conn.Close()
	}
	for {
		old := c.life.refs.Load()
		if old&closingBit != 0 {
			return &net.OpError{Op: "close", Net: c.LocalAddr().Network(), Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: net.ErrClosed}
		}
		if !c.life.refs.CompareAndSwap(old, old|closingBit) {
			continue
		}
		if old == 0 {
			c.release()
			return c.life.err
		}
		// Calls in flight: wake those waiting in the poller; the last to leave closes.
		c.Conn.SetDeadline(longAgo)
		return nil
	}
}
