// Package watchdog cuts off server connections that stall: a client that takes too
// long to send a request, sits idle on a keep-alive connection, or does not read its
// response.
//
// fasthttp enforces the same limits with socket deadlines, which costs three
// SetReadDeadline/SetWriteDeadline calls per request, each a lock and a timer-heap
// update in the Go runtime. A watchdog Listener instead stamps each blocking Read and
// Write with a deadline from a coarse clock (two atomic stores), and one sweeper
// goroutine per listener, ticking at a fraction of the shortest timeout, sets a socket
// deadline in the past on the connections whose stamp has expired. The blocked call then
// returns a timeout error exactly as it would have under fasthttp's own deadlines, and
// the server closes the connection.
//
// The limits, as fasthttp defines them:
//
//   - Read: from the first byte of a request until the request has been read (headers
//     and body); a new connection's first request counts from the accept.
//   - Idle: from the end of a response until the first byte of the next request.
//   - Write: one write of the response.
//
// Time spent between reads and writes (the handler at work) is not limited here. A limit
// is enforced with the sweeper's granularity: a stalled connection is cut off between
// the limit and the limit plus two ticks (a tick is a tenth of the shortest limit, at
// most 100ms).
//
// A Conn expects what fasthttp does: one goroutine reads and writes it at a time. Close
// and the deadline setters may be called from any goroutine.
package watchdog

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Timeouts are the limits a Listener enforces; a zero limit is not enforced.
type Timeouts struct {
	Read  time.Duration // whole request, from its first byte (from accept for the first)
	Idle  time.Duration // keep-alive wait for the next request's first byte
	Write time.Duration // one write of the response
}

// Tick is the sweeper period for t: a tenth of the shortest non-zero limit, between 1ms
// and 100ms.
func (t Timeouts) Tick() time.Duration {
	tick := 100 * time.Millisecond
	for _, d := range [...]time.Duration{t.Read, t.Idle, t.Write} {
		if d > 0 && d/10 < tick {
			tick = d / 10
		}
	}
	return max(tick, time.Millisecond)
}

// A Listener wraps the connections an inner listener accepts and watches them.
type Listener struct {
	net.Listener
	t    Timeouts
	base time.Time
	now  atomic.Int64 // coarse clock: nanoseconds since base, advanced by the sweeper

	mu    sync.Mutex
	conns []*Conn // live connections; Conn.slot indexes this slice

	closed atomic.Bool
}

// Listen wraps ln and starts its sweeper. The sweeper runs until the listener is closed
// and the last connection it accepted has closed: connections still being served during
// a graceful stop stay watched.
func Listen(ln net.Listener, t Timeouts) *Listener {
	l := &Listener{Listener: ln, t: t, base: time.Now()}
	go l.sweep(t.Tick())
	return l
}

// Accept waits for the next connection and returns it watched.
func (l *Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	wc := &Conn{Conn: c, l: l, reqStart: l.clock()}
	l.mu.Lock()
	wc.slot = len(l.conns)
	l.conns = append(l.conns, wc)
	l.mu.Unlock()
	return wc, nil
}

// Close closes the inner listener. The sweeper stops once no connection is left.
func (l *Listener) Close() error {
	l.closed.Store(true)
	return l.Listener.Close()
}

// Watched is the number of connections the listener watches: accepted and not closed.
func (l *Listener) Watched() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns)
}

// clock reads the coarse clock. It is never 0, which stamps reserve for "no deadline".
func (l *Listener) clock() int64 { return l.now.Load() + 1 }

func (l *Listener) sweep(tick time.Duration) {
	tk := time.NewTicker(tick)
	defer tk.Stop()
	for range tk.C {
		now := int64(time.Since(l.base))
		l.now.Store(now)
		// Stamps were taken on a clock up to one tick behind: a stamp is expired only
		// once it is a tick older than now, so no limit is ever shortened.
		l.mu.Lock()
		for _, c := range l.conns {
			c.expire(now - int64(tick))
		}
		idle := len(l.conns) == 0
		l.mu.Unlock()
		if idle && l.closed.Load() {
			return
		}
	}
}

func (l *Listener) remove(c *Conn) {
	l.mu.Lock()
	if i := c.slot; i >= 0 {
		last := len(l.conns) - 1
		l.conns[i] = l.conns[last]
		l.conns[i].slot = i
		l.conns[last] = nil
		l.conns = l.conns[:last]
		c.slot = -1
	}
	l.mu.Unlock()
}

// expired is a socket deadline long past: set on a connection whose stamp ran out, it
// makes the blocked call return a timeout error.
var expired = time.Unix(1, 0)

// Conn is a watched connection.
type Conn struct {
	net.Conn
	l *Listener

	// stamp is the deadline of the Read or Write in progress on the coarse clock,
	// shifted left by one, the low bit set for a Write; 0 when none is in progress.
	stamp atomic.Int64

	reqStart int64 // clock at the first byte of the request being read; 0 between requests
	slot     int   // index in l.conns, -1 once removed (guarded by l.mu)

	// free is set by Unwatch: reads and writes then go straight to the inner connection
	// and may run concurrently (a tunnel copies both ways at once).
	free atomic.Bool
	// streaming is set by StreamBody and cleared by the next Write: reads are then each
	// under the idle limit instead of the request's read limit.
	streaming bool
	// limited is set by LimitRead and cleared by the next Write: reads then take at most
	// left more bytes off the connection.
	limited bool
	left    int64
}

// ErrReadLimit is what a Read returns once the request being read has taken the bytes
// LimitRead allowed it.
var ErrReadLimit = errors.New("request read past its byte limit")

// Read reads like the inner connection, under the idle limit when no request has begun,
// else under the read limit counted from the request's first byte.
func (c *Conn) Read(p []byte) (int, error) {
	if c.free.Load() {
		return c.Conn.Read(p)
	}
	if c.limited {
		if c.left == 0 {
			return 0, ErrReadLimit
		}
		if int64(len(p)) > c.left {
			p = p[:c.left] // what lies past the limit (a pipelined request) waits
		}
	}
	var dl int64
	if c.reqStart == 0 || c.streaming {
		if c.l.t.Idle > 0 {
			dl = c.l.clock() + int64(c.l.t.Idle)
		}
	} else if c.l.t.Read > 0 {
		dl = c.reqStart + int64(c.l.t.Read)
	}
	if dl != 0 {
		c.stamp.Store(dl << 1)
	}
	n, err := c.Conn.Read(p)
	if dl != 0 {
		c.stamp.Store(0)
	}
	if n > 0 && c.reqStart == 0 {
		c.reqStart = c.l.clock()
	}
	if c.limited {
		c.left -= int64(n)
	}
	return n, err
}

// Write writes like the inner connection, under the write limit. It ends the request
// being read: the next Read waits under the idle limit.
func (c *Conn) Write(p []byte) (int, error) {
	if c.free.Load() {
		return c.Conn.Write(p)
	}
	c.reqStart, c.streaming, c.limited = 0, false, false
	if c.l.t.Write <= 0 {
		return c.Conn.Write(p)
	}
	c.stamp.Store((c.l.clock()+int64(c.l.t.Write))<<1 | 1)
	n, err := c.Conn.Write(p)
	c.stamp.Store(0)
	return n, err
}

// StreamBody says the rest of the request being read is a body streamed on as it
// arrives (an upload larger than edge holds): until the response is written, each read
// is bounded by the idle limit, so a long upload that keeps sending is never cut by the
// read limit, and one that stalls still is. Called by the goroutine reading c.
func (c *Conn) StreamBody() { c.streaming = true }

// LimitRead says the rest of the request being read may take at most n more bytes off
// the connection (n < 0: no limit); a Read past them returns ErrReadLimit, and bytes
// past them that a Read could have taken (the next, pipelined request) stay for after
// the response. Writing the response ends the limit. A bound for what a parser consumes
// without handing it on, such as chunk extensions. Called by the goroutine reading c.
func (c *Conn) LimitRead(n int64) { c.limited, c.left = n >= 0, n }

// ReadLimited reports whether the request being read has taken all the bytes LimitRead
// allowed it.
func (c *Conn) ReadLimited() bool { return c.limited && c.left == 0 }

// Unwatch stops watching c: its reads and writes are no longer cut off, and from then
// on one Read and one Write may run at once. A connection handed over to something
// with timeouts of its own (a tunnel after a hijack) is unwatched first, by the
// goroutine that reads and writes it.
func (c *Conn) Unwatch() {
	c.free.Store(true)
	c.l.remove(c)
}

// CloseWrite shuts down the writing side of the inner connection; it fails when the
// inner connection cannot.
func (c *Conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// Close closes the connection and stops watching it.
func (c *Conn) Close() error {
	c.l.remove(c)
	return c.Conn.Close()
}

// expire cuts off the call in progress when its deadline is before now. The CAS makes
// sure the call is still the one whose stamp was read: one that finished in between
// cleared or replaced the stamp.
func (c *Conn) expire(now int64) {
	s := c.stamp.Load()
	if s == 0 || s>>1 >= now || !c.stamp.CompareAndSwap(s, 0) {
		return
	}
	if s&1 != 0 {
		c.Conn.SetWriteDeadline(expired)
	} else {
		c.Conn.SetReadDeadline(expired)
	}
}
