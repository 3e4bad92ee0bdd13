// Package redistest starts real redis-server processes for tests: one standalone server on a
// free loopback port, or a three-master Redis Cluster. It never mocks Redis.
//
// Every process is started with persistence off (--save "" --appendonly no), lives in the
// test's temporary directory and is killed by t.Cleanup. When redis-server or redis-cli is
// missing the helpers fail the test with a one-line install hint; they never skip, so a CI
// machine without Redis cannot pass silently.
package redistest

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// installHint is the one line a test prints when a Redis binary is missing.
const installHint = "install it: apt-get install -y redis-server (Debian/Ubuntu) or brew install redis (macOS)"

// startTimeout bounds how long a server may take to answer PING after it was started.
const startTimeout = 10 * time.Second

// Server is one redis-server process started by Start. Its methods are safe for concurrent
// use; they fail the test (t.Fatal) on unexpected errors, so call them from the test
// goroutine.
type Server struct {
	// Addr is "127.0.0.1:PORT", fixed for the lifetime of the Server (Restart reuses it).
	Addr string
	// Port is the TCP port of Addr.
	Port int

	t       testing.TB
	dir     string
	cluster bool

	mu   sync.Mutex
	proc *process
}

// process is one running redis-server and the channel closed when it exits.
type process struct {
	cmd    *exec.Cmd
	exited chan struct{}
	out    *tailBuffer
}

// Start starts a standalone redis-server on a free port of 127.0.0.1 and waits until it
// answers PING. The server is killed when the test ends. It fails the test if redis-server
// is not installed or does not come up.
func Start(t testing.TB) *Server {
	t.Helper()
	return start(t, false)
}

func start(t testing.TB, cluster bool) *Server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatalf("redis-server not found in PATH: %s", installHint)
	}
	s := &Server{t: t, dir: t.TempDir(), cluster: cluster}
	t.Cleanup(s.Kill)
	var lastErr error
	// A free port can be taken between probing and binding by another process on this shared
	// machine: retry with a new one.
	for attempt := 0; attempt < 8; attempt++ {
		port, err := freePort(cluster)
		if err != nil {
			lastErr = err
			continue
		}
		s.Port = port
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if lastErr = s.launch(); lastErr == nil {
			return s
		}
	}
	t.Fatalf("cannot start redis-server: %v", lastErr)
	return nil
}

// freePort returns a loopback TCP port that was free a moment ago. For cluster nodes the
// cluster bus port (port+10000) must be free too.
func freePort(cluster bool) (int, error) {
	for i := 0; i < 50; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("cannot probe for a free port: %w", err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		if !cluster {
			ln.Close()
			return port, nil
		}
		if port+10000 > 65535 {
			ln.Close()
			continue
		}
		bus, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port+10000)))
		ln.Close()
		if err != nil {
			continue
		}
		bus.Close()
		return port, nil
	}
	return 0, fmt.Errorf("no free port pair (port, port+10000) found for a cluster node")
}

// launch starts redis-server on s.Port and waits for PING. On failure the process is gone.
func (s *Server) launch() error {
	args := []string{
		"--port", strconv.Itoa(s.Port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", s.dir,
		"--logfile", "",
		"--loglevel", "warning",
		"--daemonize", "no",
	}
	if s.cluster {
		args = append(args,
			"--cluster-enabled", "yes",
			"--cluster-config-file", "nodes-"+strconv.Itoa(s.Port)+".conf",
			"--cluster-node-timeout", "2000",
		)
	}
	cmd := exec.Command("redis-server", args...)
	out := &tailBuffer{}
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("cannot run redis-server on port %d: %w", s.Port, err)
	}
	p := &process{cmd: cmd, exited: make(chan struct{}), out: out}
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()
	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-p.exited:
			return fmt.Errorf("redis-server on port %d exited at start: %s", s.Port, strings.TrimSpace(out.String()))
		default:
		}
		if ping(s.Addr) == nil {
			s.mu.Lock()
			s.proc = p
			s.mu.Unlock()
			return nil
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-p.exited
			return fmt.Errorf("redis-server on port %d did not answer PING within %v: %s", s.Port, startTimeout, strings.TrimSpace(out.String()))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// ping sends one inline PING and expects +PONG.
func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(500 * time.Millisecond))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("redis at %s answered PING with %q", addr, strings.TrimSpace(line))
	}
	return nil
}

// Kill stops the server with SIGKILL and waits until the process is gone. Killing a stopped
// server does nothing. The data set is lost (persistence is off).
func (s *Server) Kill() {
	s.mu.Lock()
	p := s.proc
	s.proc = nil
	s.mu.Unlock()
	if p == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGCONT) // a paused process must still die promptly
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// Restart kills the server if it runs and starts a new, empty one on the same port. It fails
// the test if the port was taken in between or the server does not come up.
func (s *Server) Restart() {
	s.t.Helper()
	s.Kill()
	if err := s.launch(); err != nil {
		s.t.Fatalf("cannot restart redis-server: %v", err)
	}
}

// Pause stops the process with SIGSTOP: connections stay open but nothing is answered, which
// is how a slow or hung Redis looks to a client. Resume undoes it; Kill works on a paused
// server.
func (s *Server) Pause() { s.signal(syscall.SIGSTOP) }

// Resume continues a server stopped by Pause.
func (s *Server) Resume() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) {
	s.t.Helper()
	s.mu.Lock()
	p := s.proc
	s.mu.Unlock()
	if p == nil {
		s.t.Fatalf("redis-server on port %d is not running", s.Port)
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		s.t.Fatalf("cannot send %v to redis-server on port %d: %v", sig, s.Port, err)
	}
}

// Do runs one command through redis-cli against the server and returns its trimmed output,
// failing the test when redis-cli fails or answers with an error. Meant for setup and
// fault injection (SCRIPT FLUSH, DEBUG SLEEP), not for hot paths.
func (s *Server) Do(args ...string) string {
	s.t.Helper()
	out, err := cli(append([]string{"-h", "127.0.0.1", "-p", strconv.Itoa(s.Port)}, args...)...)
	if err != nil {
		s.t.Fatalf("redis-cli %s on port %d: %v", strings.Join(args, " "), s.Port, err)
	}
	return out
}

// cli runs redis-cli and returns its trimmed output; an "ERR …" answer is an error.
func cli(args ...string) (string, error) {
	if _, err := exec.LookPath("redis-cli"); err != nil {
		return "", fmt.Errorf("redis-cli not found in PATH: %s", installHint)
	}
	out, err := exec.Command("redis-cli", args...).CombinedOutput()
	text := strings.TrimSpace(string(out))
	if err != nil {
		return text, fmt.Errorf("%w: %s", err, text)
	}
	if strings.HasPrefix(text, "ERR") || strings.HasPrefix(text, "(error)") {
		return text, fmt.Errorf("redis answered %s", text)
	}
	return text, nil
}

// Cluster is a Redis Cluster of three masters, all on loopback, with the replicas
// AddReplica added (none at first).
type Cluster struct {
	// Addrs are the masters' addresses, for a client's list of seed addresses.
	Addrs []string
	// Servers are the three processes, in the order of Addrs.
	Servers []*Server
	// Replicas are the servers AddReplica started, in order.
	Replicas []*Server
}

// StartCluster starts three cluster-enabled redis-servers, joins them with
// `redis-cli --cluster create … --cluster-replicas 0 --cluster-yes` and waits until every
// node reports cluster_state:ok. Everything is killed when the test ends.
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	if _, err := exec.LookPath("redis-cli"); err != nil {
		t.Fatalf("redis-cli not found in PATH: %s", installHint)
	}
	c := &Cluster{}
	for i := 0; i < 3; i++ {
		s := start(t, true)
		c.Servers = append(c.Servers, s)
		c.Addrs = append(c.Addrs, s.Addr)
	}
	args := append([]string{"--cluster", "create"}, c.Addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := cli(args...); err != nil {
		t.Fatalf("cannot create redis cluster of %v: %v\n%s", c.Addrs, err, out)
	}
	deadline := time.Now().Add(startTimeout)
	for _, s := range c.Servers {
		for {
			out, err := cli("-h", "127.0.0.1", "-p", strconv.Itoa(s.Port), "cluster", "info")
			if err == nil && strings.Contains(out, "cluster_state:ok") && strings.Contains(out, "cluster_slots_ok:16384") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("redis cluster node %s not ok within %v: %s", s.Addr, startTimeout, out)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return c
}

// tailBuffer keeps the last few KiB a process wrote, for error messages.
type tailBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

const tailMax = 4 << 10

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	if b.buf.Len() > 2*tailMax {
		rest := append([]byte(nil), b.buf.Bytes()[b.buf.Len()-tailMax:]...)
		b.buf.Reset()
		b.buf.Write(rest)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// AddReplica starts one more cluster-enabled redis-server, joins it to the cluster as a
// replica of Servers[i] (`redis-cli --cluster add-node … --cluster-slave`) and waits until
// its link to the master is up, so that a failover of that master has a replica to
// promote. The replica is appended to Replicas and killed when the test ends.
func (c *Cluster) AddReplica(t testing.TB, i int) *Server {
	t.Helper()
	master := c.Servers[i]
	id := master.Do("CLUSTER", "MYID")
	r := start(t, true)
	if out, err := cli("--cluster", "add-node", r.Addr, master.Addr, "--cluster-slave", "--cluster-master-id", id); err != nil {
		t.Fatalf("cannot add %s as a replica of %s: %v\n%s", r.Addr, master.Addr, err, out)
	}
	deadline := time.Now().Add(4 * startTimeout)
	for {
		out, err := cli("-h", "127.0.0.1", "-p", strconv.Itoa(r.Port), "info", "replication")
		if err == nil && strings.Contains(out, "role:slave") && strings.Contains(out, "master_link_status:up") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica %s of %s not in sync within %v: %s", r.Addr, master.Addr, 4*startTimeout, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.Replicas = append(c.Replicas, r)
	return r
}

// MasterOf returns the server that is master of key's slot now, as the cluster's first
// live node sees it (a master among Servers or a promoted replica among Replicas), or nil.
func (c *Cluster) MasterOf(t testing.TB, key string) *Server {
	t.Helper()
	all := append(append([]*Server(nil), c.Servers...), c.Replicas...)
	for _, s := range all {
		s.mu.Lock()
		up := s.proc != nil
		s.mu.Unlock()
		if !up {
			continue
		}
		slot, err := strconv.Atoi(s.Do("CLUSTER", "KEYSLOT", key))
		if err != nil {
			t.Fatalf("CLUSTER KEYSLOT %s: %v", key, err)
		}
		// CLUSTER NODES: "<id> <ip:port@bus> <flags> <master> … <slot ranges>"
		for _, line := range strings.Split(s.Do("CLUSTER", "NODES"), "\n") {
			f := strings.Fields(line)
			if len(f) < 9 || !strings.Contains(f[2], "master") || strings.Contains(f[2], "fail") {
				continue
			}
			addr, _, _ := strings.Cut(f[1], "@")
			for _, r := range f[8:] {
				lo, hi, ok := strings.Cut(r, "-")
				if !ok {
					hi = lo
				}
				a, err1 := strconv.Atoi(lo)
				b, err2 := strconv.Atoi(hi)
				if err1 == nil && err2 == nil && a <= slot && slot <= b {
					for _, m := range all {
						if m.Addr == addr {
							return m
						}
					}
				}
			}
		}
		return nil
	}
	return nil
}
