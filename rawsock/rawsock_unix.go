//go:build unix

package rawsock

import (
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// Conn is a net.Conn whose Read and Write are raw system calls, whose reads wait for
// the poller first when an answer is awaited (poll_unix.go), whose deadlines are
// armed coarsely (DeadlineSlack), and whose Close lets calls in flight end before the
// socket is closed (life_unix.go). Addresses are the inner connection's.
//
// A deadline, or Close, ends a wait for the socket; unlike net.Conn, a call that can
// proceed without waiting does so even past its deadline (when the runtime poller's
// descriptor was found, see poll_unix.go).
//
// Like a net.Conn it allows one Read and one Write at a time, concurrently with each
// other.
type Conn struct {
	net.Conn
	raw syscall.RawConn
	r   op
	w   op

	// poll is the runtime poller's descriptor for the socket, 0 when it could not be
	// found (see pollDescOf); then every read tries the socket first, and calls go
	// through the RawConn. With it, calls use fd directly, kept open by life.
	poll uintptr
	fd   uintptr
	life life
	// drained is true when the last read left the socket empty: it returned data, less
	// than asked for. Only Read uses it.
	drained bool
	// wrote is set by Write and cleared by Read: a write came since the last read.
	wrote atomic.Bool
	// rd and wd are the deadlines armed in the runtime (deadline_unix.go).
	rd, wd deadline
	// emptyReads counts reads that found nothing to read (EAGAIN). Only the reader
	// touches it; tests read it.
	emptyReads int
}

// op is one direction's call in progress. fn is its system calls (read or write),
// bound once so that a call allocates nothing; it is also what RawConn.Read/Write get
// when the poller's descriptor is unknown.
type op struct {
	fn    func(uintptr) bool
	mode  int // 'r' or 'w', as the poller names directions
	p     []byte
	n     int
	errno syscall.Errno
	// code is the poller's answer that ended a wait: 0, or pollErrClosing/pollErrTimeout.
	code int
	// first makes a read wait for the poller before its first attempt.
	first bool
}

// Wrap returns c as a Conn, or c itself when it exposes no raw socket (a TLS
// connection, a pipe).
func Wrap(c net.Conn) net.Conn {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return c
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return c
	}
	rc := &Conn{Conn: c, raw: raw, drained: true}
	rc.poll, rc.fd = pollDescOf(c, raw)
	rc.r.fn, rc.w.fn = rc.read, rc.write
	rc.r.mode, rc.w.mode = 'r', 'w'
	rc.wrote.Store(true)
	return rc
}

// Read reads like net.Conn.Read, at most MaxChunk bytes.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	// When the socket was empty after the last read and this side has written since,
	// an answer is awaited: reading now would almost surely fail with EAGAIN, so the
	// read waits for the poller first (poll_unix.go).
	wrote := c.wrote.Load()
	if wrote {
		c.wrote.Store(false)
	}
	c.r.p, c.r.n, c.r.errno, c.r.code = p[:min(len(p), MaxChunk)], 0, 0, 0
	c.r.first = wrote && c.drained
	err := c.call(&c.r)
	c.drained = err == nil && c.r.errno == 0 && c.r.code == 0 && c.r.n > 0 && c.r.n < len(c.r.p)
	c.r.p = nil
	switch {
	case err != nil:
		return 0, err
	case c.r.code != 0 || c.r.errno != 0:
		return 0, c.opError("read", &c.r)
	case c.r.n == 0:
		return 0, io.EOF
	}
	return c.r.n, nil
}

// Write writes all of p like net.Conn.Write, MaxChunk bytes per system call.
func (c *Conn) Write(p []byte) (int, error) {
	if !c.wrote.Load() {
		c.wrote.Store(true)
	}
	c.w.p, c.w.n, c.w.errno, c.w.code = p, 0, 0, 0
	err := c.call(&c.w)
	c.w.p = nil
	switch {
	case err != nil:
		return c.w.n, err
	case c.w.code != 0 || c.w.errno != 0:
		return c.w.n, c.opError("write", &c.w)
	}
	return c.w.n, nil
}

// call runs o: with the runtime poller's descriptor, on the socket directly (system
// calls and waits), kept open by life; without it, through RawConn.Read/Write, trying
// the socket first.
func (c *Conn) call(o *op) error {
	if c.poll == 0 {
		if o.mode == 'r' {
			return c.raw.Read(o.fn)
		}
		return c.raw.Write(o.fn)
	}
	if !c.enter() {
		o.code = pollErrClosing
		return nil
	}
	c.callPolled(o)
	if o.code != 0 && c.closing() {
		o.code = pollErrClosing // woken by Close, not by a deadline
	}
	c.leave()
	return nil
}

// callPolled runs o's system calls on the socket, waiting for the poller first when
// o.first is set (reads only) and whenever the socket is not ready.
func (c *Conn) callPolled(o *op) {
	if o.first && !c.await(o) {
		return
	}
	for !o.fn(c.fd) {
		if !c.await(o) {
			return
		}
	}
}

// read is c.r's system call: false asks the poller to wait for readability.
func (c *Conn) read(fd uintptr) bool {
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(unsafe.SliceData(c.r.p))), uintptr(len(c.r.p)))
		switch e {
		case 0:
			c.r.n = int(n)
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			c.emptyReads++
			return false
		}
		c.r.errno = e
		return true
	}
}

// write is c.w's system calls: it writes what is left of c.w.p, and returns false
// (wait for writability, then call again) when the socket buffer is full.
func (c *Conn) write(fd uintptr) bool {
	for c.w.n < len(c.w.p) {
		rest := c.w.p[c.w.n:]
		rest = rest[:min(len(rest), MaxChunk)]
		n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(unsafe.SliceData(rest))), uintptr(len(rest)))
		switch e {
		case 0:
			c.w.n += int(n)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			c.w.errno = e
			return true
		}
	}
	return true
}

// opError describes a failed call the way net does: a *net.OpError around an
// *os.SyscallError, net.ErrClosed or os.ErrDeadlineExceeded, so callers' checks for
// timeouts, resets and closed connections work unchanged.
func (c *Conn) opError(op string, o *op) error {
	var err error
	switch o.code {
	case 0:
		err = os.NewSyscallError(op, o.errno)
	case pollErrTimeout:
		err = os.ErrDeadlineExceeded
	default:
		err = net.ErrClosed
	}
	return &net.OpError{Op: op, Net: c.LocalAddr().Network(), Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

// CloseWrite shuts down the writing side of the socket (a tunnel passes a client's
// half-close on this way); it fails when the inner connection cannot.
func (c *Conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}
