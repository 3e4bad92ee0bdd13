//go:build unix

package rawsock

import (
	"io"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// Conn is a net.Conn whose Read and Write are raw system calls, whose reads wait for
// the poller first when an answer is awaited (poll_unix.go), and whose deadlines are
// armed coarsely (DeadlineSlack). Addresses and Close are the inner connection's.
//
// Like a net.Conn it allows one Read and one Write at a time, concurrently with each
// other.
type Conn struct {
	net.Conn
	raw syscall.RawConn
	r   op
	w   op

	// poll is the runtime poller's descriptor for the socket, 0 when it could not be
	// found (see pollDescOf); then every read tries the socket first.
	poll uintptr
	// wait is awaitReadable bound once, for RawConn.Control.
	wait func(uintptr)
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

// op is one direction's call in progress. fn is the method value handed to
// RawConn.Read/Write, bound once so that a call allocates nothing.
type op struct {
	fn    func(uintptr) bool
	p     []byte
	n     int
	errno syscall.Errno
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
	rc := &Conn{Conn: c, raw: raw, poll: pollDescOf(c, raw), drained: true}
	rc.r.fn, rc.w.fn, rc.wait = rc.read, rc.write, rc.awaitReadable
	rc.wrote.Store(true)
	return rc
}

// Read reads like net.Conn.Read, at most MaxChunk bytes.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if c.wrote.Load() {
		c.wrote.Store(false)
		if c.drained && c.poll != 0 {
			// The socket was empty after the last read, and this side has written since:
			// an answer is awaited. Reading now would almost surely fail with EAGAIN, so
			// wait for the poller first. Errors (closed, deadline) are left to the read.
			_ = c.raw.Control(c.wait)
		}
	}
	c.r.p, c.r.n, c.r.errno = p[:min(len(p), MaxChunk)], 0, 0
	err := c.raw.Read(c.r.fn)
	c.drained = err == nil && c.r.errno == 0 && c.r.n > 0 && c.r.n < len(c.r.p)
	c.r.p = nil
	switch {
	case err != nil:
		return 0, err
	case c.r.errno != 0:
		return 0, c.opError("read", c.r.errno)
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
	c.w.p, c.w.n, c.w.errno = p, 0, 0
	err := c.raw.Write(c.w.fn)
	c.w.p = nil
	switch {
	case err != nil:
		return c.w.n, err
	case c.w.errno != 0:
		return c.w.n, c.opError("write", c.w.errno)
	}
	return c.w.n, nil
}

// read is the RawConn.Read callback: false asks the poller to wait for readability.
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

// write is the RawConn.Write callback: it writes what is left of c.w.p, and returns
// false (wait for writability, then call again) when the socket buffer is full.
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

// opError describes a failed call the way net does (*net.OpError around an
// *os.SyscallError), so callers' checks for timeouts and resets work unchanged.
func (c *Conn) opError(op string, e syscall.Errno) error {
	return &net.OpError{Op: op, Net: c.LocalAddr().Network(), Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.NewSyscallError(op, e)}
}
