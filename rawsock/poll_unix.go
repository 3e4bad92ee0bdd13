//go:build unix

package rawsock

import (
	"net"
	"syscall"
	"unsafe"
)

// Waiting before reading.
//
// A proxy reads right after it writes: the next request after a response, the
// upstream's answer after a request. Go's net package always tries read(2) first, and
// at that moment the answer is almost never there, so every such read costs a system
// call that fails with EAGAIN (about 0.4 µs here, two per proxied request) before the
// goroutine parks in the poller. Nginx skips it: a read that returned less than it
// asked for left the socket empty, so it waits for the next epoll event. A Conn does
// the same, through the runtime poller Go already runs for the socket (edge-triggered
// epoll), using the hook internal/poll itself uses.
//
// Waiting first is only correct when the poller will report whatever comes next: the
// last read must have emptied the socket (it returned data, less than asked for), so
// any later data raises a fresh event. Waiting also needs this side to have written
// since that read: a peer may send its last data and its FIN together, the read returns
// the data and swallows the FIN, and no event follows. Where nothing was written in
// between (a body read to EOF) the read goes first and sees the EOF. Where something
// was (a client that half-closes after its request), the connection waits until its
// idle timeout or deadline instead of closing at once; HTTP clients do not do that
// with keep-alive connections.
//
// The runtime's descriptor is not exported: pollDescOf finds it in the net.Conn by
// the layout of net.conn → *netFD → poll.FD (Go 1.21 onwards), and checks what it
// found against the socket's file descriptor, in poll.FD and in the runtime's
// descriptor, before using it. When the check fails (a future Go moved a field) the
// Conn reads first, as net does: slower, never wrong.

// runtimePollWait parks the goroutine until the poller reports the socket ready for
// mode ('r' or 'w'), a deadline passes or the descriptor is closed (returning non-zero).
//
//go:linkname runtimePollWait internal/poll.runtime_pollWait
func runtimePollWait(ctx uintptr, mode int) int

// netFDHead is the start of net's *netFD: poll.FD's fdMutex, Sysfd, SysFile and
// pollDesc.
type netFDHead struct {
	_       uint64         // fdMutex.state
	_       [2]uint32      // fdMutex.rsema, wsema
	sysfd   int            // Sysfd
	_       unsafe.Pointer // SysFile.iovecs
	pollCtx unsafe.Pointer // pollDesc.runtimeCtx: the runtime's *pollDesc, as a uintptr
}

// runtimePollDescHead is the start of the runtime's pollDesc: a list link, then the fd.
type runtimePollDescHead struct {
	_  unsafe.Pointer // link
	fd uintptr
}

// pollDescOf returns the runtime poller descriptor of c, a *net.TCPConn or
// *net.UnixConn, and its file descriptor, or 0s when c is something else or the layout
// check fails.
func pollDescOf(c net.Conn, raw syscall.RawConn) (pd, fd uintptr) {
	// Both types are a struct holding only net.conn, which holds only fd *netFD.
	var conn unsafe.Pointer
	switch c := c.(type) {
	case *net.TCPConn:
		conn = unsafe.Pointer(c)
	case *net.UnixConn:
		conn = unsafe.Pointer(c)
	default:
		return 0, 0
	}
	fd = ^uintptr(0)
	if raw.Control(func(s uintptr) { fd = s }) != nil {
		return 0, 0
	}
	nfd := *(**netFDHead)(conn)
	if nfd == nil || uintptr(nfd.sysfd) != fd || nfd.pollCtx == nil {
		return 0, 0
	}
	if (*runtimePollDescHead)(nfd.pollCtx).fd != fd {
		return 0, 0
	}
	return uintptr(nfd.pollCtx), fd
}

// The runtime poller's answers (runtime/netpoll.go).
const (
	pollErrClosing = 1 // the descriptor is being closed
	pollErrTimeout = 2 // the deadline passed
)

// await parks until the poller reports the socket ready for o's direction, and records
// in o why a wait ended otherwise. It runs inside a call registered with life, which holds
// the descriptor open: Close wakes the wait instead of freeing what it waits on.
func (c *Conn) await(o *op) bool {
	o.code = runtimePollWait(c.poll, o.mode)
	return o.code == 0
}
