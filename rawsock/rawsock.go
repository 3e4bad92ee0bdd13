// Package rawsock reads and writes sockets with raw system calls.
//
// Go's net package wraps every read(2) and write(2) in entersyscall/exitsyscall: the
// scheduler slot (P) running the goroutine is parked in "syscall" state for the call,
// sysmon may hand it to another thread when the call takes a while (on a busy machine a
// thread is often descheduled mid-call), and exitsyscall must then win a slot back,
// waking and parking threads on the way. A proxy makes four to six such calls per
// request, each over in a microsecond because the socket is non-blocking. A Conn makes
// them raw: the goroutine keeps its slot throughout, like any short function call.
// Waiting when the socket is not ready stays with the runtime's poller, so deadlines,
// Close and the scheduler work as for any net.Conn.
//
// On the bench machine (2 cores shared with the load generator) this took proxied
// requests from ~53k to ~59k per CPU-second.
//
// More of a proxy's per-exchange costs are cut on Unix, where the runtime poller's
// descriptor is used directly (poll_unix.go). A read that follows a write (the
// upstream's answer, the client's next request) waits for the poller first instead of
// failing with EAGAIN, as nginx does. A call keeps the socket open with the Conn's own
// count of calls in flight, two atomic adds, instead of net's per-call reference
// (life_unix.go). And deadlines are armed coarsely, once per DeadlineSlack rather than
// twice per request (deadline_unix.go). A proxied request then costs 4 system calls
// (nginx makes 5) and a few per cent less CPU than with raw calls alone.
//
// A raw call holds its slot for the whole call, so each one moves at most MaxChunk
// bytes: a large response is written in pieces of that size, each a short copy into the
// socket buffer, and a large read returns at most that much.
package rawsock

import "net"

// MaxChunk is the most one raw read or write moves: 256 KiB, tens of microseconds of
// copying into or out of the kernel.
const MaxChunk = 256 << 10

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
