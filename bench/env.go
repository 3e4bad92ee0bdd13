package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// tool is an outside program bench needs and the Debian package that has it.
type tool struct {
	name, pkg string
	extra     []string // where it lives when not on PATH (sbin for non-root users)
}

var (
	toolNginx = tool{name: "nginx", pkg: "nginx-light", extra: []string{"/usr/sbin/nginx"}}
	toolRedis = tool{name: "redis-server", pkg: "redis-server", extra: []string{"/usr/bin/redis-server"}}
)

func (t tool) find() string {
	if p, err := exec.LookPath(t.name); err == nil {
		return p
	}
	for _, p := range t.extra {
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p
		}
	}
	return ""
}

// ensure returns the path of t, installing its package with apt-get when it is missing
// and we are root, or an error that says how to install it.
func (t tool) ensure(logf func(string, ...any)) (string, error) {
	if p := t.find(); p != "" {
		return p, nil
	}
	how := fmt.Sprintf("%s is missing: install it with `sudo apt-get update && sudo apt-get install -y %s`", t.name, t.pkg)
	if os.Geteuid() != 0 {
		return "", errors.New(how)
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		return "", fmt.Errorf("%s is missing and there is no apt-get: install the %s package", t.name, t.pkg)
	}
	logf("%s is missing: apt-get install -y %s", t.name, t.pkg)
	for _, args := range [][]string{{"update"}, {"install", "-y", "--no-install-recommends", t.pkg}} {
		cmd := exec.Command("apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("apt-get %s failed: %v: %s", strings.Join(args, " "), err, lastLines(out, 5))
		}
	}
	if p := t.find(); p != "" {
		return p, nil
	}
	return "", errors.New(how)
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// freePort asks the kernel for a free loopback port. Another process may take it
// before we listen on it; the callers' start-up checks catch that.
func freePort() (int, error) {
	ports, err := freePorts(1)
	if err != nil {
		return 0, err
	}
	return ports[0], nil
}

// freePorts returns n distinct free loopback ports: each is held until all are picked,
// so two picks in a row cannot return the same port (they did: edge's listen and admin
// once got one port).
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("cannot find a free port: %w", err)
		}
		defer ln.Close()
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// proc is a child process bench started and stops.
type proc struct {
	name   string
	cmd    *exec.Cmd
	log    string
	exited chan struct{}
	err    error
}

func startProc(name, logPath string, argv ...string) (*proc, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("cannot create log of %s: %w", name, err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("cannot start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.exited)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// waitPort polls until addr accepts connections, the process exits, or 15 s pass.
func (p *proc) waitPort(addr string) error {
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-p.exited:
			return fmt.Errorf("%s exited before listening on %s (%v): %s", p.name, addr, p.err, p.tail())
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("%s did not listen on %s within 15s: %s", p.name, addr, p.tail())
}

func (p *proc) tail() string {
	b, _ := os.ReadFile(p.log)
	return lastLines(b, 8)
}

// stop sends sig, waits up to 10 s, then kills.
func (p *proc) stop(sig syscall.Signal) {
	select {
	case <-p.exited:
		return
	default:
	}
	p.cmd.Process.Signal(sig)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.exited
	}
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat CPU times.
var clockTicks = func() float64 {
	if out, err := exec.Command("getconf", "CLK_TCK").Output(); err == nil {
		if v, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64); err == nil && v > 0 {
			return v
		}
	}
	return 100
}()

// statFields returns the fields of /proc/PID/stat after the command name.
func statFields(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, fmt.Errorf("cannot parse /proc/%d/stat", pid)
	}
	return strings.Fields(string(b[i+1:])), nil
}

// cpuSample is the user+system CPU seconds of each process of a group at one moment.
type cpuSample map[int]float64

// sampleCPU reads /proc/PID/stat of each pid; processes that are gone are left out.
func sampleCPU(pids []int) cpuSample {
	s := cpuSample{}
	for _, pid := range pids {
		f, err := statFields(pid)
		if err != nil || len(f) < 13 {
			continue
		}
		ut, _ := strconv.ParseFloat(f[11], 64) // field 14: utime
		st, _ := strconv.ParseFloat(f[12], 64) // field 15: stime
		s[pid] = (ut + st) / clockTicks
	}
	return s
}

// since returns the CPU seconds used between the earlier sample b and s. A process
// that started in between counts in full; one that ended in between (nginx's cache
// loader) is left out. ok is false when nothing could be read (no /proc).
func (s cpuSample) since(b cpuSample) (secs float64, ok bool) {
	for pid, v := range s {
		secs += v - b[pid]
	}
	return secs, len(s) > 0 && len(b) > 0
}

// withChildren returns pid and the pids of its children (nginx: master and workers).
func withChildren(pid int) []int {
	pids := []int{pid}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		child, err := strconv.Atoi(filepath.Base(d))
		if err != nil || child == pid {
			continue
		}
		if f, err := statFields(child); err == nil && len(f) > 1 && f[1] == strconv.Itoa(pid) {
			pids = append(pids, child)
		}
	}
	return pids
}

// Machine describes where a report was measured.
type Machine struct {
	Cores   int    `json:"cores"`
	CPU     string `json:"cpu"`
	Kernel  string `json:"kernel"`
	OS      string `json:"os"`
	Go      string `json:"go"`
	Nginx   string `json:"nginx"`
	Redis   string `json:"redis,omitempty"`
	Edge    string `json:"edge"`
	MemInfo string `json:"memory,omitempty"`
}

func readMachine(nginx, redis, edge string) Machine {
	m := Machine{Cores: runtime.NumCPU(), Go: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = "Linux " + strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if line, _, _ := strings.Cut(string(b), "\n"); strings.HasPrefix(line, "MemTotal:") {
			if kb, err := strconv.Atoi(strings.Fields(line)[1]); err == nil {
				m.MemInfo = fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
			}
		}
	}
	m.Nginx = versionOf(nginx, "-v")
	if redis != "" {
		m.Redis = versionOf(redis, "--version")
	}
	if edge != "" {
		m.Edge = versionOf(edge, "-version")
	}
	return m
}

func versionOf(bin string, flag string) string {
	out, err := exec.Command(bin, flag).CombinedOutput()
	if err != nil {
		return "unknown"
	}
	s := strings.TrimSpace(string(out))
	s = strings.TrimPrefix(s, "nginx version: ")
	s = strings.TrimPrefix(s, "edge ")
	if strings.HasPrefix(s, "Redis server v=") {
		s = "redis " + strings.Fields(strings.TrimPrefix(s, "Redis server v="))[0]
	}
	return s
}

// moduleRoot finds the directory of go.mod from the working directory up.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("cannot find go.mod above the working directory: run bench from the edge checkout")
		}
		dir = parent
	}
}
