// Package handover passes listening sockets from a running edge to the new binary that
// replaces it, so that an upgrade drops no connection: the old process starts the new
// one with its sockets as inherited file descriptors, the new one serves on them at once
// and says when it is ready, and only then does the old one stop accepting and drain.
// A new process that fails before it is ready leaves the old one serving.
//
// Sockets are named by a key the caller chooses (a listener's identity, "admin", …).
// The parent lists them in the EDGE_INHERIT environment variable of the child as
// "key=fd" pairs; the child's Listen and ListenPacket take an inherited socket by key
// before they would bind a new one. The readiness pipe is EDGE_READY_FD.
//
// The package imports nothing of edge.
package handover

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The environment variables between a parent and its child.
const (
	envInherit = "EDGE_INHERIT"
	envReady   = "EDGE_READY_FD"
)

var (
	mu        sync.Mutex
	inherited map[string]*os.File // sockets passed to this process, until taken
	readyFile *os.File            // the pipe to tell the parent this process serves
)

func init() {
	inherited = map[string]*os.File{}
	for _, kv := range strings.Split(os.Getenv(envInherit), ",") {
		k, v, ok := strings.Cut(kv, "=")
		if fd, err := strconv.Atoi(v); ok && err == nil && fd > 2 {
			inherited[k] = os.NewFile(uintptr(fd), k)
		}
	}
	if fd, err := strconv.Atoi(os.Getenv(envReady)); err == nil && fd > 2 {
		readyFile = os.NewFile(uintptr(fd), "handover-ready")
	}
	os.Unsetenv(envInherit)
	os.Unsetenv(envReady)
}

// take returns the inherited socket of key, once.
func take(key string) *os.File {
	mu.Lock()
	defer mu.Unlock()
	f := inherited[key]
	delete(inherited, key)
	return f
}

// Listen returns the TCP listener this process inherited under key, or a new one on
// addr.
func Listen(key, addr string) (net.Listener, error) {
	if f := take(key); f != nil {
		ln, err := net.FileListener(f)
		f.Close()
		if err == nil {
			return ln, nil
		}
	}
	return net.Listen("tcp", addr)
}

// ListenUDP returns the UDP socket this process inherited under key, or a new one on
// addr.
func ListenUDP(key, addr string) (*net.UDPConn, error) {
	if f := take(key); f != nil {
		pc, err := net.FilePacketConn(f)
		f.Close()
		if uc, ok := pc.(*net.UDPConn); err == nil && ok {
			return uc, nil
		}
	}
	a, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	return net.ListenUDP("udp", a)
}

// Inherited reports whether this process was started by a handover.
func Inherited() bool { return readyFile != nil }

// Ready tells the parent of a handover that this process serves, and closes the sockets
// it inherited and did not take (a listener the new config dropped). Without a parent
// it does nothing.
func Ready() {
	mu.Lock()
	for k, f := range inherited {
		f.Close()
		delete(inherited, k)
	}
	f := readyFile
	readyFile = nil
	mu.Unlock()
	if f != nil {
		f.Write([]byte("ready\n"))
		f.Close()
	}
}

// Socket is one socket to pass on: its key and a file of it (File() of a listener).
type Socket struct {
	Key  string
	File *os.File
}

// ErrNotReady is what Start returns when the new process exits, or does not say it is
// ready within the timeout (it is then killed).
var ErrNotReady = errors.New("the new process did not become ready")

// Start runs path with args (and this process's environment and output) as the new
// process, passing it socks, and waits until it says it is ready. On success the caller
// stops accepting and drains; the child runs on. On failure the child is gone and the
// caller goes on serving. The files of socks are closed either way.
func Start(path string, args []string, socks []Socket, timeout time.Duration) (*os.Process, error) {
	defer func() {
		for _, s := range socks {
			s.File.Close()
		}
	}()
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("handover: %w", err)
	}
	defer r.Close()
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	pairs := make([]string, len(socks))
	for i, s := range socks {
		cmd.ExtraFiles = append(cmd.ExtraFiles, s.File)
		pairs[i] = fmt.Sprintf("%s=%d", s.Key, 3+i)
	}
	cmd.ExtraFiles = append(cmd.ExtraFiles, w)
	cmd.Env = append(os.Environ(), envInherit+"="+strings.Join(pairs, ","), fmt.Sprintf("%s=%d", envReady, 3+len(socks)))
	if err := cmd.Start(); err != nil {
		w.Close()
		return nil, fmt.Errorf("handover: cannot start %s: %w", path, err)
	}
	w.Close() // the child holds its end
	// Passing a file to a child makes its descriptor blocking (os.File.Fd), and a dup
	// shares that flag with this process's listeners, whose accept loops need it
	// non-blocking: set it back at once, before the child can accept anything.
	for _, s := range socks {
		if rc, err := s.File.SyscallConn(); err == nil {
			rc.Control(func(fd uintptr) { syscall.SetNonblock(int(fd), true) })
		}
	}
	got := make(chan error, 1)
	go func() {
		buf := make([]byte, 16)
		n, err := r.Read(buf)
		if n > 0 && strings.HasPrefix(string(buf[:n]), "ready") {
			got <- nil
			return
		}
		got <- fmt.Errorf("%w: %v", ErrNotReady, err) // it exited (or closed the pipe) first
	}()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-got:
		if err == nil {
			go func() { <-exited }() // reap the child if it ends while we drain
			return cmd.Process, nil
		}
		cmd.Process.Kill()
		<-exited
		return nil, err
	case <-time.After(timeout):
		cmd.Process.Kill()
		<-exited
		return nil, fmt.Errorf("%w within %v", ErrNotReady, timeout)
	}
}
