package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The outside programs of the L4 scenarios: nginx's stream module, HAProxy, and strace
// for the splice check.

var (
	toolStrace  = tool{name: "strace", pkg: "strace", extra: []string{"/usr/bin/strace"}}
	toolHAProxy = tool{name: "haproxy", pkg: "haproxy", extra: []string{"/usr/sbin/haproxy"}}
)

// nginxStreamModule reads `nginx -V` output: whether this nginx has the stream module
// at all, and when it is built as a dynamic module (Debian: --with-stream=dynamic,
// shipped in libnginx-mod-stream), the file a load_module directive must name ("":
// built in, nothing to load).
func nginxStreamModule(v string) (has bool, module string) {
	modules := "/usr/lib/nginx/modules"
	if _, rest, ok := strings.Cut(v, "--modules-path="); ok {
		if f := strings.Fields(rest); len(f) > 0 {
			modules = strings.Trim(f[0], `'"`)
		}
	}
	for _, arg := range strings.Fields(v) {
		switch arg {
		case "--with-stream":
			return true, ""
		case "--with-stream=dynamic":
			return true, filepath.Join(modules, "ngx_stream_module.so")
		}
	}
	return false, ""
}

// ensureStreamModule returns the load_module line nginx needs for stream blocks (""
// when built in), installing libnginx-mod-stream when the module file is missing and
// we are root.
func ensureStreamModule(nginxBin string, logf func(string, ...any)) (string, error) {
	out, err := exec.Command(nginxBin, "-V").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s -V: %v: %s", nginxBin, err, lastLines(out, 2))
	}
	has, module := nginxStreamModule(string(out))
	switch {
	case !has:
		return "", fmt.Errorf("%s is built without the stream module (no --with-stream in nginx -V)", nginxBin)
	case module == "":
		return "", nil
	}
	t := tool{name: filepath.Base(module), pkg: "libnginx-mod-stream", extra: []string{module}}
	if _, err := t.ensure(logf); err != nil {
		return "", fmt.Errorf("nginx's stream module %s: %w", module, err)
	}
	return fmt.Sprintf("load_module %s;", module), nil
}

// syscallCounts are the calls per system call name of one `strace -c` run.
type syscallCounts map[string]int64

// parseStraceSummary reads the table `strace -c -o FILE` writes when it detaches:
//
//	% time     seconds  usecs/call     calls    errors syscall
//	------ ----------- ----------- --------- --------- ----------------
//	 63.64    0.000007           0        12           read
//	------ ----------- ----------- --------- --------- ----------------
//	100.00    0.000011           0        23         1 total
//
// An empty text is a run in which none of the traced calls was made (strace writes
// nothing then); any other text must have the header and the total line, and the total
// must be the sum of the rows.
func parseStraceSummary(out string) (syscallCounts, error) {
	counts := syscallCounts{}
	if strings.TrimSpace(out) == "" {
		return counts, nil
	}
	var header, haveTotal bool
	var sum, total int64
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		f := strings.Fields(line)
		switch {
		case strings.HasPrefix(line, "% time"):
			header = true
			continue
		case !header || line == "" || strings.HasPrefix(line, "---"):
			continue
		}
		// % time, seconds, usecs/call, calls, [errors,] name
		if len(f) != 5 && len(f) != 6 {
			return nil, fmt.Errorf("strace: bad summary line %q", line)
		}
		n, err := strconv.ParseInt(f[3], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("strace: bad summary line %q", line)
		}
		name := f[len(f)-1]
		if name == "total" {
			total, haveTotal = n, true
			continue
		}
		counts[name] += n
		sum += n
	}
	switch {
	case !header || !haveTotal:
		return nil, fmt.Errorf("strace printed no summary: %s", lastLines([]byte(out), 3))
	case sum != total:
		return nil, fmt.Errorf("strace summary: the rows sum to %d calls, the total says %d", sum, total)
	}
	return counts, nil
}

// straceSyscalls are the calls the splice check counts: splice, and the ways a proxy
// moves bytes through user space (Go uses read and write; nginx recv and send, which are
// recvfrom and sendto; readv and writev for chains).
var straceSyscalls = []string{"splice", "read", "write", "recvfrom", "sendto", "readv", "writev"}

// reads and writes sum the user-space copies of c: read, recvfrom, readv; write, sendto, writev.
func (c syscallCounts) reads() int64  { return c["read"] + c["recvfrom"] + c["readv"] }
func (c syscallCounts) writes() int64 { return c["write"] + c["sendto"] + c["writev"] }

// strace counts the system calls of pids (every thread) while during runs: it attaches,
// waits until strace says every process is attached, calls during, then detaches with
// SIGINT and reads the summary.
func straceCount(bin, dir string, pids []int, during func()) (syscallCounts, error) {
	out := filepath.Join(dir, "strace.out")
	errPath := filepath.Join(dir, "strace.err")
	os.Remove(out)
	args := []string{"-f", "-c", "-o", out, "-e", "trace=" + strings.Join(straceSyscalls, ",")}
	for _, p := range pids {
		args = append(args, "-p", strconv.Itoa(p))
	}
	p, err := startProc("strace", errPath, append([]string{bin}, args...)...)
	if err != nil {
		return nil, err
	}
	// strace says "Process N attached" for every thread on stderr.
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(errPath)
		attached := 0
		for _, pid := range pids {
			if strings.Contains(string(b), fmt.Sprintf("Process %d attached", pid)) {
				attached++
			}
		}
		if attached == len(pids) {
			break
		}
		select {
		case <-p.exited:
			return nil, fmt.Errorf("strace ended before attaching (%v): %s", p.err, p.tail())
		default:
		}
		if time.Now().After(deadline) {
			p.stop(syscall.SIGKILL)
			return nil, fmt.Errorf("strace did not attach within 5s: %s", p.tail())
		}
		time.Sleep(20 * time.Millisecond)
	}
	during()
	p.stop(syscall.SIGINT)
	b, err := os.ReadFile(out)
	if err != nil {
		return nil, fmt.Errorf("strace wrote no summary: %v (%s)", err, p.tail())
	}
	return parseStraceSummary(string(b))
}
