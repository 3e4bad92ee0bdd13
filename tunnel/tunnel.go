// Package tunnel relays the bytes of an upgraded connection (WebSocket, or any Upgrade
// protocol a route allows) between a client and an upstream once the upstream has
// answered 101: two copies, one per direction, until the tunnel ends.
//
// The proxy hijacks the client connection, dials the upstream, relays the handshake and
// then calls Group.Run, which blocks until the tunnel is over. Around that:
//
//   - A Group bounds and counts the tunnels of one route. The proxy asks it for a slot
//     (Acquire) before dialing the upstream and answers 503 when there is none; Run gives
//     the slot back. Groups outlive config reloads: a reload changes a bound with SetMax
//     and leaves open tunnels alone.
//   - A Registry knows every open tunnel of the process. One sweeper goroutine per
//     Registry enforces the idle timeouts, and Shutdown drains the tunnels for a graceful
//     stop, then cuts the rest.
//
// How a tunnel ends. End of file from one side is passed on as a half-close
// (CloseWrite, when the other side's conn has it) and the other direction keeps going;
// when both directions have seen end of file, the tunnel is over. When the side to
// half-close has no CloseWrite (a hijacked fasthttp conn has none), the end of file ends
// the whole tunnel instead. A read or write error in either direction (a reset, a peer
// that went away) ends both. So do the idle timeout and a forced Shutdown.
//
// A tunnel is stopped from outside its copies by setting a deadline in the past on both
// conns, never by closing them: the deadline unblocks a Read or Write at once from any
// goroutine, whereas Close on a tls.Conn may block sending close_notify, and Close on a
// hijacked fasthttp conn does nothing (fasthttp closes the conn after the hijack handler
// returns). Run closes both conns itself before returning, and no method of either conn
// is called by this package after Run has returned.
//
// The package imports nothing of edge.
package tunnel

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Reason says why a tunnel ended. Its String is the value of a metric label.
type Reason uint32

// The ways a tunnel ends.
const (
	_              Reason = iota
	ReasonClosed          // both sides ended their stream (end of file), or one did and the other cannot half-close
	ReasonIdle            // no byte copied in either direction for Options.IdleTimeout
	ReasonError           // a read or write failed on either side (reset, broken pipe, ...)
	ReasonShutdown        // Registry.Shutdown cut it at its deadline, or it was run after that
)

var reasonNames = [...]string{"", "closed", "idle", "error", "shutdown"}

// String returns "closed", "idle", "error" or "shutdown".
func (r Reason) String() string {
	if int(r) < len(reasonNames) && r != 0 {
		return reasonNames[r]
	}
	return "unknown"
}

// Result is what Run reports about a tunnel that has ended.
type Result struct {
	Up     int64  // bytes written to the upstream, Options.ClientPending included
	Down   int64  // bytes written to the client, Options.UpstreamPending included
	Reason Reason // why it ended
	Err    error  // the first error, when Reason is ReasonError; nil otherwise
}

// DefaultBufferSize is the copy buffer of one direction when Options.BufferSize is 0.
const DefaultBufferSize = 32 << 10

// Options are the settings of one tunnel.
type Options struct {
	// IdleTimeout ends the tunnel (ReasonIdle) when no byte has been copied in either
	// direction for this long. A write that stays blocked for this long (a peer that does
	// not read) counts as idle. It is enforced by the Registry's sweeper: a tunnel is cut
	// after between IdleTimeout and IdleTimeout plus two ticks of idleness (a tick is an
	// eighth of the shortest timeout of the open tunnels, within [10ms, 1s]), never
	// earlier. 0: no idle timeout.
	IdleTimeout time.Duration

	// ClientPending are bytes already read from the client (after the Upgrade request)
	// that must reach the upstream before anything else the client sends. Run only reads
	// the slice, and only until it returns.
	ClientPending []byte

	// UpstreamPending are bytes already read from the upstream (after its 101 response)
	// that must reach the client before anything else the upstream sends. Run only reads
	// the slice, and only until it returns.
	UpstreamPending []byte

	// BufferSize is the copy buffer of each direction. 0: DefaultBufferSize, taken from a
	// pool shared by the process; any other size is allocated for the tunnel.
	BufferSize int
}

// Registry knows every open tunnel of the process: it runs the idle sweeper and the
// graceful stop. Create one with NewRegistry and its Groups with Registry.NewGroup; a
// process normally has one Registry, kept for its whole life (it survives reloads). Its
// methods are safe for concurrent use.
//
// The sweeper is one goroutine that runs only while a tunnel with an idle timeout is open.
type Registry struct {
	mu       sync.Mutex
	tuns     []*tun        // open tunnels; tun.slot indexes this slice
	slots    int           // slots acquired from any Group and not yet given back (open tunnels included)
	timed    int           // open tunnels with an idle timeout
	changed  chan struct{} // closed (and cleared) when slots or len(tuns) goes down; nil until someone waits
	draining bool          // Shutdown has begun: Acquire refuses
	stopped  bool          // Shutdown's deadline has passed: Run ends at once

	sweeping bool          // the sweeper goroutine runs
	tick     time.Duration // the sweeper's current period
	wake     chan struct{} // asks the sweeper to sweep now and recompute its tick (buffered, 1)

	active atomic.Int64 // len(tuns), for Active without the lock
}

// NewRegistry returns an empty Registry.
func NewRegistry() *Registry {
	return &Registry{wake: make(chan struct{}, 1)}
}

// Active returns the number of open tunnels, all Groups together.
func (r *Registry) Active() int {
	return int(r.active.Load())
}

// Group is the set of tunnels of one route (or of anything that has its own bound) and
// what counts them. It survives reloads: the proxy keys Groups by route name in state
// that outlives a config, and a reload only calls SetMax. Its methods are safe for
// concurrent use and do not allocate; Acquire and Release take a lock of the Registry
// for a few instructions, the counters are atomic loads.
type Group struct {
	r     *Registry
	max   atomic.Int64 // 0: unbounded
	slots atomic.Int64 // acquired and not given back; changed under r.mu only

	active atomic.Int64
	total  atomic.Uint64
	up     atomic.Uint64
	down   atomic.Uint64
}

// NewGroup returns a Group of r that allows max open tunnels (slots) at a time; max 0
// means no bound.
func (r *Registry) NewGroup(max int) *Group {
	g := &Group{r: r}
	g.SetMax(max)
	return g
}

// SetMax changes the bound to n; 0 means none, a negative n counts as 0. Open tunnels and
// slots already acquired stay: a lower bound only refuses new slots until enough have
// been given back.
func (g *Group) SetMax(n int) {
	g.max.Store(int64(max(n, 0)))
}

// Acquire takes a slot for a tunnel about to be opened, or returns false when the Group
// already holds its maximum (the proxy answers 503) or its Registry is shutting down.
// A slot taken must be given back exactly once: by Run, or by Release when the tunnel is
// not run after all (the dial failed, the upstream did not answer 101).
func (g *Group) Acquire() bool {
	r := g.r
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.draining {
		return false
	}
	if m := g.max.Load(); m > 0 && g.slots.Load() >= m {
		return false
	}
	g.slots.Add(1)
	r.slots++
	return true
}

// Release gives back a slot taken with Acquire that was not passed to Run.
// Releasing a slot that was not acquired panics.
func (g *Group) Release() {
	r := g.r
	r.mu.Lock()
	defer r.mu.Unlock()
	g.releaseLocked()
	r.notifyLocked()
}

func (g *Group) releaseLocked() {
	if g.slots.Add(-1) < 0 || g.r.slots <= 0 {
		panic("BUG: tunnel.Group: a slot released that was not acquired")
	}
	g.r.slots--
}

// Active returns the number of open tunnels of the Group (the edge_tunnels_active gauge).
// Slots acquired for a tunnel not yet running are not counted.
func (g *Group) Active() int64 { return g.active.Load() }

// Total returns the number of tunnels the Group has run since it was created.
func (g *Group) Total() uint64 { return g.total.Load() }

// Bytes returns the bytes copied by the Group's tunnels since it was created, client to
// upstream (up) and upstream to client (down), pending bytes included. They grow as the
// bytes are written, except on the splice path (see Run), where they grow every 4 MiB
// and at the end of each direction.
func (g *Group) Bytes() (up, down uint64) { return g.up.Load(), g.down.Load() }

// tun is one open tunnel.
type tun struct {
	g        *Group
	client   net.Conn
	upstream net.Conn
	idle     time.Duration

	reason atomic.Uint32 // the first Reason set wins
	err    error         // written by the winner of reason when it is ReasonError, before Run reads it

	up, down atomic.Int64 // bytes written so far; the sweeper reads them as the activity signal

	// Under r.mu:
	slot   int       // index in r.tuns
	seen   int64     // up+down at the last sweep
	seenAt time.Time // when seen last changed (or the tunnel was opened)
}

// Run relays bytes between client and upstream until the tunnel ends, then closes both
// conns and gives back the slot taken with g.Acquire, which must have succeeded (Run
// takes the slot over; do not Release it). It blocks: the proxy calls it from the hijack
// handler's goroutine. Run owns both conns from the call on: the caller must not use
// them afterwards, and Run calls no method of either after it has returned.
//
// First UpstreamPending is written to the client and ClientPending to the upstream, then
// each direction copies until its end of file, which is passed on as a half-close (see
// the package doc), or until the tunnel ends: both directions at end of file
// (ReasonClosed), an error on either side (ReasonError), the idle timeout (ReasonIdle) or
// Registry.Shutdown (ReasonShutdown). If the Registry has already passed its Shutdown
// deadline, Run closes both conns and returns ReasonShutdown at once. Run clears any
// deadline the caller left on the conns (a server's read timeout): the tunnel has its
// own timeout.
//
// Copying. Run copies one direction on a goroutine it starts and the other on the
// caller's; neither outlives Run. Each direction reads into a buffer of
// Options.BufferSize and writes what it read. Memory per open tunnel, with the default
// size: 64 KiB of pooled buffers, the stack of the goroutine Run starts (about 3 KiB
// measured) and about 300 bytes of state, besides the conns themselves.
//
// When both conns are *net.TCPConn (L4 streams) on Linux, Run copies with splice(2)
// instead: each direction moves the bytes from one socket into a pipe of its own and
// from the pipe into the other socket, never through user space, and no buffer is
// taken; each direction holds a pipe (two file descriptors, up to 1 MiB of kernel
// pages while bytes are in it) for the tunnel's life. Each move is counted as it
// completes, so the byte counters and the idle timeout work as on the copy path. The
// conns the proxy passes for WebSocket are wrapped (a hijacked fasthttp conn, a
// tls.Conn): they take the read/write copy.
func (g *Group) Run(client, upstream net.Conn, o Options) Result {
	t := &tun{g: g, client: client, upstream: upstream, idle: max(o.IdleTimeout, 0)}
	// fasthttp clears its deadlines before a hijack, but not every caller is fasthttp.
	// Cleared before the tunnel is registered: from then on a stop may set one.
	_ = client.SetDeadline(time.Time{})
	_ = upstream.SetDeadline(time.Time{})
	r := g.r
	if !r.open(t) {
		client.Close()
		upstream.Close()
		r.close(t)
		return Result{Reason: ReasonShutdown}
	}

	done := make(chan struct{})
	if cc, uc, ok := spliceable(client, upstream); ok {
		go func() {
			t.splice(uc, cc, o.ClientPending, &t.up, &g.up)
			close(done)
		}()
		t.splice(cc, uc, o.UpstreamPending, &t.down, &g.down)
	} else {
		go func() {
			t.copy(upstream, client, o.ClientPending, o.BufferSize, &t.up, &g.up)
			close(done)
		}()
		t.copy(client, upstream, o.UpstreamPending, o.BufferSize, &t.down, &g.down)
	}
	<-done
	t.reason.CompareAndSwap(0, uint32(ReasonClosed)) // both directions reached end of file

	client.Close()
	upstream.Close()
	r.close(t)
	res := Result{Up: t.up.Load(), Down: t.down.Load(), Reason: Reason(t.reason.Load())}
	if res.Reason == ReasonError {
		res.Err = t.err
	}
	return res
}

// end records why the tunnel ends, if no reason was recorded before, and unblocks both
// directions. It is called by the copies; the Registry uses stop.
func (t *tun) end(reason Reason, err error) {
	if t.reason.CompareAndSwap(0, uint32(reason)) {
		t.err = err
	}
	t.unblock()
}

// aLongTimeAgo is a deadline in the past: a Read or Write blocked on a conn with it
// returns at once with a timeout error.
var aLongTimeAgo = time.Unix(1, 0)

// unblock makes every Read and Write on both conns, blocked or to come, fail at once.
// A conn that does not support deadlines is closed instead.
func (t *tun) unblock() {
	if t.client.SetDeadline(aLongTimeAgo) != nil {
		t.client.Close()
	}
	if t.upstream.SetDeadline(aLongTimeAgo) != nil {
		t.upstream.Close()
	}
}

type closeWriter interface{ CloseWrite() error }

// eof passes on the end of file read from the other side of dst: a half-close of dst,
// or the end of the tunnel when dst cannot half-close.
func (t *tun) eof(dst net.Conn) {
	cw, ok := dst.(closeWriter)
	if !ok {
		t.end(ReasonClosed, nil)
		return
	}
	if err := cw.CloseWrite(); err != nil {
		t.end(ReasonError, err)
	}
}

var bufPool = sync.Pool{New: func() any {
	b := make([]byte, DefaultBufferSize)
	return &b
}}

// copy relays one direction with reads and writes: pending first, then src to dst.
func (t *tun) copy(dst, src net.Conn, pending []byte, size int, n *atomic.Int64, total *atomic.Uint64) {
	if len(pending) > 0 && !t.write(dst, pending, n, total) {
		return
	}
	var buf []byte
	if size <= 0 || size == DefaultBufferSize {
		p := bufPool.Get().(*[]byte)
		defer bufPool.Put(p)
		buf = *p
	} else {
		buf = make([]byte, size)
	}
	for {
		nr, rerr := src.Read(buf)
		if nr > 0 && !t.write(dst, buf[:nr], n, total) {
			return
		}
		if rerr == io.EOF {
			t.eof(dst)
			return
		}
		if rerr != nil {
			t.end(ReasonError, rerr)
			return
		}
	}
}

// write writes all of b to dst and counts it; false when the tunnel must end.
func (t *tun) write(dst net.Conn, b []byte, n *atomic.Int64, total *atomic.Uint64) bool {
	nw, err := dst.Write(b)
	if nw > 0 {
		n.Add(int64(nw))
		total.Add(uint64(nw))
	}
	if err == nil && nw < len(b) {
		err = io.ErrShortWrite
	}
	if err != nil {
		t.end(ReasonError, err)
		return false
	}
	return true
}

// spliceable returns the bare TCP conns of a tunnel that copies with splice (see Run).
func spliceable(client, upstream net.Conn) (cc, uc *net.TCPConn, ok bool) {
	cc, cok := client.(*net.TCPConn)
	uc, uok := upstream.(*net.TCPConn)
	return cc, uc, cok && uok && spliceSupported
}
