package tunnel

import (
	"net"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// spliceSupported says whether this platform has the splice path.
const spliceSupported = true

// pipeSize is the capacity asked for each direction's pipe, and so the most one splice
// moves; the kernel may give less (fs.pipe-max-size), which only means smaller moves.
const pipeSize = 1 << 20

// splice relays one direction between bare TCP conns with splice(2): pending with a
// write, then src into a pipe and the pipe into dst, the bytes never copied to user
// space. Each move is counted as it completes, so the idle sweeper sees a tunnel's
// progress as it does on the copy path, and a deadline set by unblock ends a wait on
// either side at once.
func (t *tun) splice(dst, src *net.TCPConn, pending []byte, n *atomic.Int64, total *atomic.Uint64) {
	if len(pending) > 0 && !t.write(dst, pending, n, total) {
		return
	}
	rc, err := src.SyscallConn()
	if err != nil {
		t.end(ReasonError, err)
		return
	}
	wc, err := dst.SyscallConn()
	if err != nil {
		t.end(ReasonError, err)
		return
	}
	pp, err := getPipe()
	if err != nil {
		t.end(ReasonError, err)
		return
	}
	empty := false // the pipe holds no byte: it may serve another tunnel
	defer func() { putPipe(pp, empty) }()
	fill := newSpliceStep(rc, false, pp.fds[1]) // socket → pipe
	drain := newSpliceStep(wc, true, pp.fds[0]) // pipe → socket
	for {
		in, err := fill.run(pp.size)
		if err != nil {
			t.end(ReasonError, err)
			return
		}
		if in == 0 { // end of file
			empty = true
			t.eof(dst)
			return
		}
		for in > 0 {
			out, err := drain.run(in)
			if err != nil {
				t.end(ReasonError, err)
				return
			}
			in -= out
			n.Add(int64(out))
			total.Add(uint64(out))
		}
	}
}

// spliceStep is one side of a direction's splices: between the socket of raw and a pipe
// end, socket to pipe (write false) or pipe to socket (write true). Made once per
// direction, so that a move allocates nothing.
type spliceStep struct {
	raw     syscall.RawConn
	write   bool
	pipeEnd int
	move    func(fd uintptr) bool // the poller's callback, bound once

	n     int // what the call asks for
	moved int
	err   error
}

func newSpliceStep(raw syscall.RawConn, write bool, pipeEnd int) *spliceStep {
	s := &spliceStep{raw: raw, write: write, pipeEnd: pipeEnd}
	s.move = func(fd uintptr) bool {
		in, out := int(fd), s.pipeEnd
		if s.write {
			in, out = s.pipeEnd, int(fd)
		}
		k, err := unix.Splice(in, nil, out, nil, s.n, unix.SPLICE_F_NONBLOCK|unix.SPLICE_F_MOVE)
		s.moved, s.err = int(k), err
		return err != syscall.EAGAIN
	}
	return s
}

// run moves up to n bytes with one splice(2), waiting in the runtime poller while the
// socket is not ready, and returns the bytes moved (0 at a socket's end of file).
func (s *spliceStep) run(n int) (int, error) {
	s.n, s.moved, s.err = n, 0, nil
	var err error
	if s.write {
		err = s.raw.Write(s.move)
	} else {
		err = s.raw.Read(s.move)
	}
	if err == nil {
		err = s.err
	}
	return s.moved, err
}

// pipe is one direction's pipe: its two ends and its capacity.
type pipe struct {
	fds  [2]int
	size int
}

// freePipes keeps empty pipes for the next tunnels, so that a short connection does not
// pay four system calls to make a pipe and two to close it. Bounded: a pipe that finds
// it full is closed.
var freePipes = make(chan *pipe, 256)

func getPipe() (*pipe, error) {
	select {
	case p := <-freePipes:
		return p, nil
	default:
	}
	p := &pipe{size: 64 << 10} // the default capacity
	if err := unix.Pipe2(p.fds[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, err
	}
	if got, err := unix.FcntlInt(uintptr(p.fds[0]), unix.F_SETPIPE_SZ, pipeSize); err == nil {
		p.size = got
	}
	return p, nil
}

// putPipe keeps p for reuse when it is empty and there is room, else closes it.
func putPipe(p *pipe, empty bool) {
	if empty {
		select {
		case freePipes <- p:
			return
		default:
		}
	}
	unix.Close(p.fds[0])
	unix.Close(p.fds[1])
}
