//go:build unix

// Package rawsock reads and writes sockets with raw system calls.
//
// Go's net package wraps every read(2) and write(2) in entersyscall/exitsyscall: the
// scheduler slot (P) running the goroutine is parked in "syscall" state for the call,
// sysmon may hand it to another thread when the call takes a while (on a busy machine a
// thread is often descheduled mid-call), and exitsyscall must then win a slot back,
// waking and parking threads on the way. A proxy makes four to six such calls per
// request, each over in a microsecond because the socket is non-blocking. A Conn makes
// them raw: the goroutine keeps its slot throughout, like any short function call.
// Waiting when the socket is not ready stays with the runtime's poller
// (syscall.RawConn), so deadlines, Close and the scheduler work as for any net.Conn.
//
// On the bench machine (2 cores shared with the load generator) this took proxied
// requests from ~53k to ~59k per CPU-second.
//
// A raw call holds its slot for the whole call, so each one moves at most MaxChunk
// bytes: a large response is written in pieces of that size, each a short copy into the
// socket buffer, and a large read returns at most that much.
package rawsock

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// MaxChunk is the most one raw read or write moves: 256 KiB, tens of microseconds of
// copying into or out of the kernel.
const MaxChunk = 256 << 10

// Conn is a net.Conn whose Read and Write are raw system calls. Everything else
// (deadlines, addresses, Close) is the inner connection's.
//
// Like a net.Conn it allows one Read and one Write at a time, concurrently with each
// other.
type Conn struct {
	net.Conn
	raw syscall.RawConn
	r   op
	w   op
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
	rc := &Conn{Conn: c, raw: raw}
	rc.r.fn, rc.w.fn = rc.read, rc.write
	return rc
}

// Listener wraps the connections an inner listener accepts.
type Listener struct{ net.Listener }

// Accept waits for the next connection and returns it wrapped.
func (l Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return Wrap(c), nil
}

// Read reads like net.Conn.Read, at most MaxChunk bytes.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.r.p, c.r.n, c.r.errno = p[:min(len(p), MaxChunk)], 0, 0
	err := c.raw.Read(c.r.fn)
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
