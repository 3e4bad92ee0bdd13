package soak

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/edge-gw/edge/internal/edgetest"
	"github.com/edge-gw/edge/internal/origintest"
	"github.com/valyala/fasthttp"
)

var (
	abuseFull = flag.Bool("abuse.full", false, "run TestAbuse at full size (50,000 idle connections, 10,000 slow readers, 1,000,000 keys) and hold the normal client to p99 < 100ms; make abuse")
	abuseOut  = flag.String("abuse.out", "", "write TestAbuse's measurements as abuse-<date>.md into this directory")
)

// size is n in CI, n × 10 with -abuse.full.
func size(n int) int {
	if *abuseFull {
		return 10 * n
	}
	return n
}

// abuseConfig serves four routes from one origin: /n/ plain (the normal client),
// /big/ a 4 MiB download (streamed, not cached), /page/ cached (one entry per
// path), /limited/ with a per-user limit. max_conns is raised above the 50,000
// idle connections of the full run; write_timeout is short enough for the slow
// readers to be seen cut off.
func abuseConfig(origin string) string {
	return fmt.Sprintf(`
listen          = "127.0.0.1:0"
state_dir       = "state"
cache_size      = "64MB"
max_conns       = 60000
write_timeout   = "10s"
max_header_size = "16KB"
admin {
  listen = "127.0.0.1:0"
  token  = "abuse-admin-token"
}
upstream "origin" {
  servers         = [%q]
  max_conns       = 20000
  timeout         = "60s"
  connect_timeout = "10s" # 1000 connects at once on a loaded 2-core machine: not the case under test
}
route "page" {
  match { path = "/page/" }
  upstream = "origin"
  cache { ttl = "10m" }
}
route "limited" {
  match { path = "/limited/" }
  upstream = "origin"
  limit "user" {             # a key's bucket is full again (and dropped) only after a minute:
    key   = "header:X-User-Id" # every key of the case is live at once
    rate  = "1r/m"
    burst = 1
  }
}
route "rest" {
  match { path = "/" }
  upstream = "origin"
}
`, origin)
}

// bigBody is what the origin sends for /big/: larger than 1 MiB, so edge streams it.
var bigBody = bytes.Repeat([]byte("0123456789abcdef"), 4<<20/16)

func abuseOrigin(t testing.TB) *origintest.Origin {
	page := strings.Repeat("p", 1024)
	return origintest.Start(t, func(ctx *fasthttp.RequestCtx) {
		switch p := string(ctx.Path()); {
		case strings.HasPrefix(p, "/big/"):
			// From the one shared slice, not copied per request.
			ctx.SetBodyStream(bytes.NewReader(bigBody), len(bigBody))
		case strings.HasPrefix(p, "/page/"):
			ctx.SetBodyString(page)
		default:
			ctx.SetBodyString("ok")
		}
	})
}

// nofile is the descriptor limit of this process and of edge (its child inherits
// it), raised to the hard limit by raiseNOFILE.
var nofile int

// raiseNOFILE lifts this process's soft descriptor limit to the hard one. Raising
// the hard limit itself needs CAP_SYS_RESOURCE; where it is lower than a case needs,
// the case runs as large as the limit allows and its report line says so.
func raiseNOFILE(t *testing.T) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatalf("cannot raise RLIMIT_NOFILE to its hard limit %d: %v", lim.Max, err)
	}
	nofile = int(min(lim.Max, 1<<30))
}

// fit returns n, or fewer when perConn descriptors for each of n connections (in
// edge, or in this process) would not fit under the descriptor limit, keeping
// 500 spare.
func fit(n, perConn int) int {
	return min(n, (nofile-500)/perConn)
}

// slowReaderCount is the slow readers of this run: each is two descriptors in edge and
// two here, and about 340 KiB of the kernel's TCP memory on loopback (their unread
// answers fill both socket buffers), so no more than 80 % of net.ipv4.tcp_mem's ceiling
// allows: past it the kernel refuses new connections, edge's upstream ones among them,
// which is the machine's limit and not the case under test (docs/operations.md).
func slowReaderCount() int {
	n := fit(size(1000), 2)
	if b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_mem"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 3 {
			if pages, err := strconv.ParseInt(f[2], 10, 64); err == nil {
				n = min(n, int(pages*int64(os.Getpagesize())*8/10/(340<<10)))
			}
		}
	}
	return n
}

// normal is a well-behaved client: GET /n/ every 20 ms on its own connection,
// counting answers and keeping latencies, until stopped.
type normal struct {
	stop chan struct{}
	done chan struct{}
	ds   []time.Duration
	bad  int
	last string
}

func startNormal(addr string) *normal {
	n := &normal{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(n.done)
		c := &fasthttp.HostClient{Addr: addr, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second}
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-n.stop:
				return
			case <-tick.C:
			}
			start := time.Now()
			code, body, err := c.Get(nil, "http://"+addr+"/n/1")
			n.ds = append(n.ds, time.Since(start))
			if err != nil || code != 200 || string(body) != "ok" {
				n.bad++
				n.last = fmt.Sprintf("%d %q %v", code, body, err)
			}
		}
	}()
	return n
}

// finish stops the client and returns its p99 in milliseconds; it fails t when the
// client saw an error or a wrong answer, or (full run) missed the 100 ms target.
func (n *normal) finish(t *testing.T) float64 {
	close(n.stop)
	<-n.done
	if len(n.ds) == 0 {
		t.Fatal("the normal client sent nothing")
	}
	p := Percentiles(n.ds, 0.99)
	if n.bad > 0 {
		t.Errorf("the normal client got %d wrong answers of %d; last: %s", n.bad, len(n.ds), n.last)
	}
	if *abuseFull && p[0] > 100 {
		t.Errorf("the normal client's p99 is %.1f ms, over the 100 ms target", p[0])
	}
	return p[0]
}

// abuseResults collects one line per case for the -abuse.out report.
var abuseResults struct {
	sync.Mutex
	lines []string
}

// TestAbuse runs each abuse case against its own real edge binary and holds edge's
// peak RSS (VmHWM) to the bound docs/operations.md documents for it, while a normal
// client keeps being answered.
func TestAbuse(t *testing.T) {
	raiseNOFILE(t)
	o := abuseOrigin(t)
	cases := []struct {
		name  string
		bound func() int64 // KiB
		// run applies the abuse to edge at addr and starts the normal client (start)
		// where its latency matters: under the load for load cases, once the
		// connections are in place for the holding ones (the ramp is not the case).
		run func(t *testing.T, e *edgetest.Edge, start func()) string
	}{
		{"idle connections", func() int64 { return baseKB + int64(fit(size(5000), 1))*idleConnKB }, idleConns},
		// Each slow reader is two descriptors in edge (client and upstream) and two
		// here (client and origin).
		{"slow readers", func() int64 { return baseKB + int64(slowReaderCount())*slowReaderKB }, slowReaders},
		{"headers at the limit", func() int64 { return baseKB + headerConns*headerConnKB }, bigHeaders},
		{"distinct limiter keys", func() int64 { return baseKB + limiterKB }, limiterKeys},
		{"distinct cache keys", func() int64 { return baseKB + cacheKB }, cacheKeys},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := filepath.Join(t.TempDir(), "edge.hcl")
			edgetest.WriteConfig(t, cfg, abuseConfig(o.Addr))
			e := edgetest.Start(t, cfg)
			pid := e.Cmd.Process.Pid
			base, err := RSS(pid)
			if err != nil {
				t.Fatal(err)
			}
			var n *normal
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("edge's log:\n%s", tail(e.Log(), 20))
					if resp, body := edgetest.Do(t, "GET", "http://"+e.AdminAddr+"/metrics", ""); resp.StatusCode == 200 {
						for _, l := range strings.Split(body, "\n") {
							if strings.HasPrefix(l, "edge_upstream_errors") || strings.HasPrefix(l, "edge_requests_total") {
								t.Log(l)
							}
						}
					}
				}
			})
			// The most goroutines edge had, polled while the case runs.
			var peakG atomic.Int64
			polled := make(chan struct{})
			stopPoll := make(chan struct{})
			go func() {
				defer close(polled)
				for {
					if g, err := Metric(e.AdminAddr, "go_goroutines"); err == nil && int64(g) > peakG.Load() {
						peakG.Store(int64(g))
					}
					select {
					case <-stopPoll:
						return
					case <-time.After(500 * time.Millisecond):
					}
				}
			}()
			what := c.run(t, e, func() { n = startNormal(e.Addr) })
			close(stopPoll)
			<-polled
			g := peakG.Load()
			peak, err := PeakRSS(pid)
			if err != nil {
				t.Fatal(err)
			}
			p99 := n.finish(t)
			line := fmt.Sprintf("| %s | %s | %.1f | %.1f | %.1f | %d | %.2f |", c.name, what,
				float64(base)/1024, float64(peak)/1024, float64(c.bound())/1024, g, p99)
			t.Log(line)
			abuseResults.Lock()
			abuseResults.lines = append(abuseResults.lines, line)
			abuseResults.Unlock()
			if peak > c.bound() {
				t.Errorf("edge's peak RSS %.1f MiB is over the bound %.1f MiB", float64(peak)/1024, float64(c.bound())/1024)
			}
		})
	}
	if *abuseOut != "" {
		scale := "CI size"
		if *abuseFull {
			scale = "full size"
		}
		md := fmt.Sprintf("# Abuse bounds, %s (%s)\n\n`go test -run TestAbuse ./soak` (`make abuse` for full size). Peak RSS is VmHWM of edge's process; p99 is the normal client's (GET every 20 ms on its own connection, target < 100 ms at full size).\n\n| case | load | RSS at start (MiB) | peak RSS (MiB) | bound (MiB) | most goroutines | normal p99 (ms) |\n|---|---|---:|---:|---:|---:|---:|\n%s\n",
			time.Now().UTC().Format("2006-01-02 15:04 UTC"), scale, strings.Join(abuseResults.lines, "\n"))
		path := filepath.Join(*abuseOut, "abuse-"+time.Now().UTC().Format("2006-01-02T1504")+".md")
		if err := os.WriteFile(path, []byte(md), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("report: %s", path)
	}
}

// dialFrom connects to addr from loopback source address 127.0.0.(2+i/25000): one
// source address has fewer than 30,000 ephemeral ports.
func dialFrom(addr string, i int) (net.Conn, error) {
	d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i/25000))}}
	return d.Dial("tcp", addr)
}

// parallel runs f(i) for i in [0, n) on workers goroutines and returns the first error.
func parallel(n, workers int, f func(i int) error) error {
	var next atomic.Int64
	var first atomic.Value
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				if err := f(i); err != nil {
					first.CompareAndSwap(nil, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	err, _ := first.Load().(error)
	return err
}

// idleConns opens keep-alive connections, each asking once and then staying idle.
func idleConns(t *testing.T, e *edgetest.Edge, start func()) string {
	addr := e.Addr
	n := fit(size(5000), 1)
	conns := make([]net.Conn, n)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	req := []byte("GET /n/idle HTTP/1.1\r\nHost: edge\r\n\r\n")
	err := parallel(n, 64, func(i int) error {
		c, err := dialFrom(addr, i)
		if err != nil {
			return err
		}
		conns[i] = c
		if _, err := c.Write(req); err != nil {
			return err
		}
		buf := make([]byte, 512)
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		k, err := c.Read(buf)
		if err != nil || !bytes.HasPrefix(buf[:k], []byte("HTTP/1.1 200")) {
			return fmt.Errorf("connection %d: %q %v", i, buf[:k], err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if fds, err := FDs(e.Cmd.Process.Pid); err != nil || fds < n {
		t.Fatalf("edge holds %d descriptors (%v), fewer than the %d idle connections", fds, err, n)
	}
	start()
	time.Sleep(5 * time.Second) // the normal client meanwhile, with every connection idle
	return fmt.Sprintf("%d idle keep-alive connections", n)
}

// slowReaders asks for the 4 MiB download on each connection (64 connecting at a
// time, as a crowd arrives, not one SYN flood) and then reads 1 KiB a second, with a
// small receive buffer so the kernel cannot absorb the answer.
func slowReaders(t *testing.T, e *edgetest.Edge, start func()) string {
	addr := e.Addr
	n := slowReaderCount()
	conns := make([]net.Conn, n)
	readers := make([]*bufio.Reader, n)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	err := parallel(n, 64, func(i int) error {
		c, err := dialFrom(addr, i)
		if err != nil {
			return err
		}
		conns[i] = c
		c.(*net.TCPConn).SetReadBuffer(4096)
		fmt.Fprintf(c, "GET /big/%d HTTP/1.1\r\nHost: edge\r\n\r\n", i)
		readers[i] = bufio.NewReaderSize(c, 1024)
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		line, err := readers[i].ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "HTTP/1.1 200") {
			return fmt.Errorf("slow reader %d: %q %v", i, line, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Nine readers in ten read 1 KiB a second: each write of edge's makes progress,
	// and write_timeout bounds one write (docs/config.md), so they stay connected,
	// bounded in number by max_conns. The tenth reads nothing at all: once the socket
	// buffers are full edge's write blocks and write_timeout (10s here) cuts the
	// connection, and its upstream connection with it (or edge has handed the whole
	// answer to the kernel and is done with it anyway). Either way edge lets go of two
	// descriptors per stalled reader.
	pid := e.Cmd.Process.Pid
	before, err := FDs(pid)
	if err != nil {
		t.Fatal(err)
	}
	stalled := (n + 9) / 10
	start()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i, r := range readers {
		if i%10 == 0 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 1024)
			for {
				select {
				case <-stop:
					return
				case <-time.After(time.Second):
				}
				conns[i].SetReadDeadline(time.Now().Add(10 * time.Second))
				if _, err := io.ReadFull(r, buf); err != nil {
					return
				}
			}
		}()
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		fds, err := FDs(pid)
		if err != nil {
			t.Fatal(err)
		}
		if fds <= before-2*stalled {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("edge holds %d descriptors, %d before; the %d readers that read nothing should have been let go (write_timeout 10s)", fds, before, stalled)
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(5 * time.Second) // the normal client, the slow readers still connected
	close(stop)
	wg.Wait()
	return fmt.Sprintf("%d connections reading a 4 MiB answer at 1 KiB/s (one in ten reading nothing, cut at write_timeout)", n)
}

// bigHeaders finds the largest request head edge accepts (max_header_size: one
// byte more is answered 431) and sends requests with that head on headerConns
// connections.
func bigHeaders(t *testing.T, e *edgetest.Edge, start func()) string {
	addr := e.Addr
	n := size(20000)
	headOf := func(size int) string {
		const start, end = "GET /n/big-headers HTTP/1.1\r\nHost: edge\r\nX-Pad: ", "\r\n\r\n"
		return start + strings.Repeat("h", size-len(start)-len(end)) + end
	}
	status := func(head string) int {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		res := fasthttp.AcquireResponse()
		defer fasthttp.ReleaseResponse(res)
		if _, err := io.WriteString(c, head); err != nil {
			t.Fatal(err)
		}
		if err := res.Read(bufio.NewReader(c)); err != nil {
			t.Fatalf("a %d-byte head: %v", len(head), err)
		}
		return res.StatusCode()
	}
	lo, hi := 1024, 64<<10 // 200 at lo, 431 at hi
	if status(headOf(lo)) != 200 || status(headOf(hi)) != 431 {
		t.Fatalf("a %d-byte head should pass and a %d-byte one get 431", lo, hi)
	}
	for hi-lo > 1 {
		mid := (lo + hi) / 2
		if status(headOf(mid)) == 200 {
			lo = mid
		} else {
			hi = mid
		}
	}
	if lo < 15<<10 {
		t.Errorf("edge takes heads up to %d bytes only, with max_header_size = 16KB", lo)
	}
	head := headOf(lo)
	start()
	var next atomic.Int64
	err := parallel(headerConns, headerConns, func(int) error {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		r := bufio.NewReader(c)
		res := fasthttp.AcquireResponse()
		defer fasthttp.ReleaseResponse(res)
		for next.Add(1) <= int64(n) {
			if _, err := io.WriteString(c, head); err != nil {
				return err
			}
			if err := res.Read(r); err != nil || res.StatusCode() != 200 {
				return fmt.Errorf("request with a %d-byte head: %d %v", len(head), res.StatusCode(), err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%d requests with %d-byte heads on %d connections", n, len(head), headerConns)
}

// limiterKeys sends one request per distinct user id to the per-user limited route.
func limiterKeys(t *testing.T, e *edgetest.Edge, start func()) string {
	addr := e.Addr
	n := size(100_000)
	start()
	keyed(t, addr, n, func(i int) (string, string) { return "/limited/x", fmt.Sprintf("user-%d", i) })
	return fmt.Sprintf("%d distinct X-User-Id on a per-user limit", n)
}

// cacheKeys asks for n distinct cacheable paths.
func cacheKeys(t *testing.T, e *edgetest.Edge, start func()) string {
	addr := e.Addr
	n := size(100_000)
	start()
	keyed(t, addr, n, func(i int) (string, string) { return fmt.Sprintf("/page/%d", i), "u" })
	return fmt.Sprintf("%d distinct cached paths of 1 KiB", n)
}

// keyed sends n requests, request i to the path and X-User-Id key(i) gives, on 32
// connections, each answered 200.
func keyed(t *testing.T, addr string, n int, key func(i int) (path, user string)) {
	c := &fasthttp.HostClient{Addr: addr, MaxConns: 32}
	err := parallel(n, 32, func(i int) error {
		req, res := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(res)
		path, user := key(i)
		req.SetRequestURI("http://" + addr + path)
		req.Header.Set("X-User-Id", user)
		if err := c.DoTimeout(req, res, 10*time.Second); err != nil || res.StatusCode() != 200 {
			return fmt.Errorf("request %d (%s, %s): %d %v", i, path, user, res.StatusCode(), err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// The bounds, in KiB, that docs/operations.md ("Resource bounds") documents.
const (
	baseKB       = 64 << 10 // edge at rest with this config, with room for the Go heap's growth
	idleConnKB   = 40       // per idle keep-alive connection
	slowReaderKB = 80       // per connection streaming a large answer to a slow reader
	headerConns  = 64
	headerConnKB = 256      // per connection carrying 16 KiB heads (buffers, the forwarded copy, GC headroom)
	limiterKB    = 64 << 10 // max_keys (1,048,576) × 64 B (measured 49 B a live key, heap headroom included)
	cacheKB      = 80 << 10 // cache_size (64 MiB) and the index
)

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
