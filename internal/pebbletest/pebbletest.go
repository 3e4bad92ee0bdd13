// Package pebbletest runs Let's Encrypt's pebble ACME test server and its DNS companion
// pebble-challtestsrv as child processes, for tests that obtain certificates for real: pebble
// validates every HTTP-01 and TLS-ALPN-01 challenge by connecting to the test's own servers
// (no PEBBLE_VA_ALWAYS_VALID shortcut).
//
// The binaries are built once per machine from the module proxy (`go install
// github.com/letsencrypt/pebble/v2/cmd/...@Version`) into a directory under os.TempDir() and
// reused by later test runs. The go command must be in PATH and the module proxy reachable
// on first use; when not, the helpers fail the test with what to do (they never skip).
//
// Names: challtestsrv answers every A query with 127.0.0.1 and no AAAA, so pebble connects
// to 127.0.0.1:HTTPPort (HTTP-01, with Host "name:port") and 127.0.0.1:TLSPort (TLS-ALPN-01,
// SNI name) for any name. The ACME client never resolves the names itself; only pebble
// does, through DNS.
package pebbletest

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Version is the pebble release the helpers build and run.
const Version = "v2.10.3"

const module = "github.com/letsencrypt/pebble/v2"

// startTimeout bounds how long pebble may take to answer on its directory.
const startTimeout = 20 * time.Second

// Options configures a Pebble. Zero values take the defaults named on each field.
type Options struct {
	// HTTPPort and TLSPort are where pebble connects to validate HTTP-01 and TLS-ALPN-01
	// challenges (on 127.0.0.1): the ports of the test's own challenge servers. Required.
	HTTPPort, TLSPort int
	// Validity is the lifetime of issued certificates, at least 2 s. Default 90 days.
	Validity time.Duration
	// OCSPResponderURL is written into issued certificates as their OCSP responder (pebble
	// does not run one: point it at a closed port to test a responder that is down). Empty:
	// certificates name no responder.
	OCSPResponderURL string
}

// Pebble is a pebble ACME server and its challtestsrv DNS server, killed when the test ends.
// Its methods fail the test on errors, so call them from the test goroutine.
type Pebble struct {
	// Directory is the ACME directory URL, fixed for the Pebble's lifetime (Stop and Start
	// keep the port).
	Directory string
	// ServerRoots trusts pebble's own HTTPS (its test minica): the ACME client's CA roots.
	ServerRoots *x509.CertPool
	// ServerRootsFile is the PEM file of ServerRoots, for a config's ca_roots.
	ServerRootsFile string
	// Roots trusts the certificates pebble issues. pebble makes a new root at every start, so
	// Start replaces it; nil before the first Start.
	Roots *x509.CertPool
	// DNS is challtestsrv's DNS address ("127.0.0.1:port", UDP), the resolver pebble uses.
	DNS string
	// Management is pebble's management address ("127.0.0.1:port", HTTPS).
	Management string

	t       testing.TB
	bins    binaries
	cfgPath string
	orders  atomic.Int64
	out     *tailWriter

	mu   sync.Mutex
	proc *proc
}

// proc is a running child process and the channel closed when it exits.
type proc struct {
	cmd    *exec.Cmd
	exited chan struct{}
}

// Start starts challtestsrv and pebble validating on httpPort and tlsPort, with default
// options, and waits until pebble answers.
func Start(t testing.TB, httpPort, tlsPort int) *Pebble {
	t.Helper()
	p := New(t, Options{HTTPPort: httpPort, TLSPort: tlsPort})
	p.Start()
	return p
}

// New starts challtestsrv and prepares pebble (ports, config) without starting it, so a test
// can bring the CA up later with Start. Everything is killed when the test ends.
func New(t testing.TB, o Options) *Pebble {
	t.Helper()
	if o.HTTPPort <= 0 || o.TLSPort <= 0 {
		t.Fatalf("pebbletest: HTTPPort and TLSPort are required (got %d, %d)", o.HTTPPort, o.TLSPort)
	}
	if o.Validity == 0 {
		o.Validity = 90 * 24 * time.Hour
	}
	if o.Validity < 2*time.Second {
		t.Fatalf("pebbletest: validity %v is shorter than 2s", o.Validity)
	}
	bins := build(t)
	p := &Pebble{t: t, bins: bins, out: &tailWriter{}}
	p.out.onLine = func(line []byte) {
		if bytes.Contains(line, []byte("Added order")) {
			p.orders.Add(1)
		}
	}
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("pebbletest: last output of pebble and challtestsrv:\n%s", p.out.String())
		}
	})

	pool := x509.NewCertPool()
	ca, err := os.ReadFile(filepath.Join(bins.certs, "pebble.minica.pem"))
	if err != nil || !pool.AppendCertsFromPEM(ca) {
		t.Fatalf("pebbletest: cannot read pebble's minica: %v", err)
	}
	p.ServerRoots, p.ServerRootsFile = pool, filepath.Join(bins.certs, "pebble.minica.pem")

	// challtestsrv: DNS only; its own challenge servers and DoH are off. A port taken between
	// probing and binding makes it exit: retry with new ports.
	for attempt := 0; ; attempt++ {
		p.DNS = net.JoinHostPort("127.0.0.1", strconv.Itoa(freeDNSPort(t)))
		mgmt := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
		dns := exec.Command(bins.challtestsrv,
			"-dnsserver", p.DNS, "-management", mgmt,
			"-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", "",
			"-defaultIPv4", "127.0.0.1", "-defaultIPv6", "")
		dnsProc := p.spawn(dns, "challtestsrv")
		t.Cleanup(func() { kill(dnsProc) })
		err := waitTCP(mgmt, dnsProc)
		if err == nil {
			err = waitTCP(p.DNS, dnsProc) // DNS over TCP; UDP is bound before it
		}
		if err == nil {
			break
		}
		kill(dnsProc)
		if attempt == 4 {
			t.Fatalf("pebbletest: challtestsrv: %v\n%s", err, p.out.String())
		}
	}

	listen := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	p.Management = net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	p.Directory = "https://" + listen + "/dir"
	cfg := map[string]any{"pebble": map[string]any{
		"listenAddress":                  listen,
		"managementListenAddress":        p.Management,
		"certificate":                    filepath.Join(bins.certs, "localhost", "cert.pem"),
		"privateKey":                     filepath.Join(bins.certs, "localhost", "key.pem"),
		"httpPort":                       o.HTTPPort,
		"tlsPort":                        o.TLSPort,
		"ocspResponderURL":               o.OCSPResponderURL,
		"externalAccountBindingRequired": false,
		"retryAfter":                     map[string]int{"authz": 1, "order": 1},
		"keyAlgorithm":                   "ecdsa",
		"profiles": map[string]any{"default": map[string]any{
			"description":    "pebbletest",
			"validityPeriod": int64(o.Validity / time.Second),
		}},
	}}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	p.cfgPath = filepath.Join(t.TempDir(), "pebble-config.json")
	if err := os.WriteFile(p.cfgPath, b, 0o600); err != nil {
		t.Fatalf("pebbletest: cannot write pebble's config: %v", err)
	}
	return p
}

// Start starts pebble (again) on its ports and waits until its directory answers, then
// fetches its new root into Roots. It fails the test when pebble runs already or does not
// come up.
func (p *Pebble) Start() {
	p.t.Helper()
	p.mu.Lock()
	running := p.proc != nil
	p.mu.Unlock()
	if running {
		p.t.Fatalf("pebbletest: pebble is running already")
	}
	cmd := exec.Command(p.bins.pebble, "-config", p.cfgPath, "-dnsserver", p.DNS)
	cmd.Env = append(os.Environ(),
		"PEBBLE_VA_NOSLEEP=1",
		"PEBBLE_WFE_NONCEREJECT=0",
		"PEBBLE_AUTHZREUSE=0",
	)
	pr := p.spawn(cmd, "pebble")
	p.mu.Lock()
	p.proc = pr
	p.mu.Unlock()

	client := &http.Client{
		Timeout:   2 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.ServerRoots}},
	}
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-pr.exited:
			p.t.Fatalf("pebbletest: pebble exited at start:\n%s", p.out.String())
		default:
		}
		if _, err := get(client, p.Directory); err == nil {
			if root, err := get(client, "https://"+p.Management+"/roots/0"); err == nil {
				pool := x509.NewCertPool()
				if !pool.AppendCertsFromPEM(root) {
					p.t.Fatalf("pebbletest: pebble's /roots/0 is not PEM: %q", root)
				}
				p.Roots = pool
				return
			}
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("pebbletest: pebble did not answer on %s within %v:\n%s", p.Directory, startTimeout, p.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop kills pebble (not challtestsrv) and waits until it is gone; its state (accounts,
// orders, root) is lost. Stopping a stopped pebble does nothing.
func (p *Pebble) Stop() {
	p.mu.Lock()
	pr := p.proc
	p.proc = nil
	p.mu.Unlock()
	kill(pr)
}

// Orders counts the orders pebble created (its "Added order" log lines) since New, across
// restarts.
func (p *Pebble) Orders() int { return int(p.orders.Load()) }

// Output returns the last lines pebble and challtestsrv wrote, for error messages.
func (p *Pebble) Output() string { return p.out.String() }

func (p *Pebble) spawn(cmd *exec.Cmd, name string) *proc {
	p.t.Helper()
	cmd.Stdout = p.out
	cmd.Stderr = p.out
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("pebbletest: cannot run %s: %v", name, err)
	}
	pr := &proc{cmd: cmd, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(pr.exited)
	}()
	return pr
}

func kill(pr *proc) {
	if pr == nil {
		return
	}
	_ = pr.cmd.Process.Kill()
	<-pr.exited
}

func get(c *http.Client, url string) ([]byte, error) {
	resp, err := c.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: status %d", url, resp.StatusCode)
	}
	return b, nil
}

// waitTCP waits until addr accepts connections; it fails when pr exits first.
func waitTCP(addr string, pr *proc) error {
	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-pr.exited:
			return fmt.Errorf("exited before listening on %s", addr)
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			_ = pr.cmd.Process.Kill()
			return fmt.Errorf("did not listen on %s within %v", addr, startTimeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// freeDNSPort returns a loopback port free for both UDP and TCP a moment ago (DNS serves
// both; the two port spaces are separate, so a free UDP port may be taken for TCP).
func freeDNSPort(t testing.TB) int {
	t.Helper()
	for i := 0; i < 50; i++ {
		u, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("pebbletest: cannot probe for a free UDP port: %v", err)
		}
		port := u.LocalAddr().(*net.UDPAddr).Port
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		u.Close()
		if err == nil {
			l.Close()
			return port
		}
	}
	t.Fatal("pebbletest: no port free for both UDP and TCP")
	return 0
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("pebbletest: cannot probe for a free TCP port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// binaries are the built programs and pebble's test certificates.
type binaries struct {
	pebble, challtestsrv string
	certs                string // pebble's test/certs directory
}

var (
	buildOnce sync.Once
	built     binaries
	buildErr  error
)

// build returns the binaries, building them into os.TempDir()/edge-pebbletest-<Version> the
// first time on this machine.
func build(t testing.TB) binaries {
	t.Helper()
	buildOnce.Do(func() { built, buildErr = buildBinaries() })
	if buildErr != nil {
		t.Fatalf("pebbletest: %v", buildErr)
	}
	return built
}

func buildBinaries() (binaries, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return binaries{}, fmt.Errorf("the go command is not in PATH; it builds pebble %s", Version)
	}
	dir := filepath.Join(os.TempDir(), "edge-pebbletest-"+Version)
	b := binaries{pebble: filepath.Join(dir, "pebble"), challtestsrv: filepath.Join(dir, "pebble-challtestsrv")}
	env := append(os.Environ(), "GOFLAGS=", "GOWORK=off", "CGO_ENABLED=0")

	out, err := goCmd(goBin, env, "mod", "download", "-json", module+"@"+Version)
	if err != nil {
		return b, fmt.Errorf("cannot download %s@%s (needs the module proxy): %v\n%s", module, Version, err, out)
	}
	var info struct{ Dir string }
	if err := json.Unmarshal(out, &info); err != nil || info.Dir == "" {
		return b, fmt.Errorf("cannot parse go mod download's answer: %v\n%s", err, out)
	}
	b.certs = filepath.Join(info.Dir, "test", "certs")

	if exe(b.pebble) && exe(b.challtestsrv) {
		return b, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return b, fmt.Errorf("cannot create %s: %v", dir, err)
	}
	// Build into a private directory and rename, so concurrent test processes never run a
	// half-written binary.
	tmp, err := os.MkdirTemp(dir, "build-")
	if err != nil {
		return b, fmt.Errorf("cannot create a build directory in %s: %v", dir, err)
	}
	defer os.RemoveAll(tmp)
	out, err = goCmd(goBin, append(env, "GOBIN="+tmp), "install",
		module+"/cmd/pebble@"+Version, module+"/cmd/pebble-challtestsrv@"+Version)
	if err != nil {
		return b, fmt.Errorf("cannot build pebble %s (needs the module proxy): %v\n%s", Version, err, out)
	}
	for _, name := range []string{"pebble", "pebble-challtestsrv"} {
		if err := os.Rename(filepath.Join(tmp, name), filepath.Join(dir, name)); err != nil {
			return b, fmt.Errorf("cannot install %s into %s: %v", name, dir, err)
		}
	}
	return b, nil
}

func goCmd(goBin string, env []string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, args...)
	cmd.Env = env
	cmd.Dir = os.TempDir() // outside any module: @version mode
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return append(out, stderr.Bytes()...), err
	}
	return out, nil
}

func exe(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// tailWriter keeps the last lines written and calls onLine for every complete line.
type tailWriter struct {
	mu      sync.Mutex
	partial []byte
	lines   []string
	onLine  func([]byte)
}

const tailLines = 200

func (w *tailWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.partial = append(w.partial, b...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		line := w.partial[:i]
		if w.onLine != nil {
			w.onLine(line)
		}
		w.lines = append(w.lines, string(line))
		if len(w.lines) > tailLines {
			w.lines = w.lines[len(w.lines)-tailLines:]
		}
		w.partial = w.partial[i+1:]
	}
	return len(b), nil
}

func (w *tailWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Join(w.lines, "\n")
}
