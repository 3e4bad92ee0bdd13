package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/quic-go/quic-go/http3"
	"github.com/valyala/fasthttp"
)

// cmdH3 is `go run ./bench h3`: edge's HTTP/3 against its own HTTP/2 on one pass
// route, same machine, same client style (Go clients: quic-go's http3.Transport and
// net/http's HTTP/2 transport, conns connections × streams requests in flight each),
// judged by requests per second and per CPU-second of edge (/proc/PID/stat).
func cmdH3(args []string) error {
	fs := flag.NewFlagSet("h3", flag.ExitOnError)
	d := fs.Duration("d", 10*time.Second, "duration of each protocol's run")
	conns := fs.Int("c", 4, "connections")
	streams := fs.Int("s", 32, "requests in flight per connection")
	size := fs.Int("size", 1024, "bytes of the origin's answer")
	bin := fs.String("edge", "", "edge binary (default: go build ./cmd/edge)")
	profile := fs.String("profile", "", "write edge's CPU profile of the HTTP/3 run to this file")
	fs.Parse(args)

	dir, err := os.MkdirTemp("", "edge-bench-h3-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if *bin == "" {
		root, err := moduleRoot()
		if err != nil {
			return err
		}
		*bin = filepath.Join(dir, "edge")
		cmd := exec.Command("go", "build", "-o", *bin, "./cmd/edge")
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build ./cmd/edge failed: %v: %s", err, lastLines(b, 10))
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	cert, err := writeCert(dir, "ecdsa", key)
	if err != nil {
		return err
	}
	body := make([]byte, *size)
	origin := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) { ctx.SetBody(body) }}
	oln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go origin.Serve(oln)
	defer origin.Shutdown()
	ports, err := freePorts(2)
	if err != nil {
		return err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", ports[0])
	cfg := filepath.Join(dir, "edge.hcl")
	src := fmt.Sprintf(`listen = ""
admin {
  listen = "127.0.0.1:%d"
  pprof  = true
}
listener "https" {
  address   = %q
  protocols = ["h2", "http/1.1", "h3"]
  tls {
    certificate {
      cert_file = %q
      key_file  = %q
    }
  }
  http3 {
    max_conns_per_ip = 1000
  }
}
upstream "app" { servers = [%q] }
route "pass" {
  match { path = "/" }
  upstream = "app"
}
`, ports[1], addr, cert.cert, cert.key, oln.Addr().String())
	if err := os.WriteFile(cfg, []byte(src), 0o644); err != nil {
		return err
	}
	p, err := startProc("edge", filepath.Join(dir, "edge.log"), *bin, "-config", cfg)
	if err != nil {
		return err
	}
	defer p.stop(syscall.SIGTERM)
	if err := p.waitPort(addr); err != nil {
		return err
	}
	tc := &tls.Config{InsecureSkipVerify: true}
	url := "https://" + addr + "/pass"
	fmt.Printf("edge %s, pass route to a fasthttp origin (%d B answers), %d connections × %d streams, %s each\n",
		addr, *size, *conns, *streams, *d)
	var res [2]h3Result
	for i, proto := range []string{"h2", "h3"} {
		clients := make([]*http.Client, *conns)
		for j := range clients {
			var rt http.RoundTripper
			if proto == "h3" {
				rt = &http3.Transport{TLSClientConfig: tc.Clone()}
			} else {
				var ps http.Protocols
				ps.SetHTTP2(true)
				rt = &http.Transport{Protocols: &ps, TLSClientConfig: tc.Clone(), MaxConnsPerHost: 1}
			}
			clients[j] = &http.Client{Transport: rt, Timeout: 10 * time.Second}
		}
		var prof chan error
		if proto == "h3" && *profile != "" {
			prof = make(chan error, 1)
			go func() { prof <- fetchProfile(ports[1], *d, *profile) }()
		}
		r, err := h3Drive(p.pid(), clients, url, *streams, *d)
		if prof != nil {
			if err := <-prof; err != nil {
				return err
			}
		}
		if err != nil {
			return fmt.Errorf("%s: %w", proto, err)
		}
		for _, c := range clients {
			if cl, ok := c.Transport.(io.Closer); ok {
				cl.Close()
			}
			if t, ok := c.Transport.(*http.Transport); ok {
				t.CloseIdleConnections()
			}
		}
		res[i] = r
		fmt.Printf("%s: %d answers, %d errors, %.0f req/s, edge CPU %.2f s, %.0f req per CPU-second of edge, protocol %s\n",
			proto, r.ok, r.errs, r.rps(), r.cpu, r.perCPU(), r.proto)
	}
	fmt.Printf("HTTP/3 ÷ HTTP/2: throughput %.2f×, requests per CPU-second %.2f× (goal ≥ 0.6×)\n",
		res[1].rps()/res[0].rps(), res[1].perCPU()/res[0].perCPU())
	return nil
}

type h3Result struct {
	ok, errs int64
	elapsed  time.Duration
	cpu      float64
	proto    string
}

func (r h3Result) rps() float64    { return float64(r.ok) / r.elapsed.Seconds() }
func (r h3Result) perCPU() float64 { return float64(r.ok) / r.cpu }

// h3Drive runs streams loops per client for d, after a one-second warm-up whose
// requests are not counted, and samples edge's CPU over the counted part.
func h3Drive(pid int, clients []*http.Client, url string, streams int, d time.Duration) (h3Result, error) {
	var ok, errs atomic.Int64
	var counting atomic.Bool
	var proto atomic.Value
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, c := range clients {
		for range streams {
			wg.Go(func() {
				for ctx.Err() == nil {
					resp, err := c.Get(url)
					if err == nil {
						_, err = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if resp.StatusCode != 200 {
							err = fmt.Errorf("status %d", resp.StatusCode)
						}
						proto.Store(resp.Proto)
					}
					if !counting.Load() {
						continue
					}
					if err != nil {
						errs.Add(1)
					} else {
						ok.Add(1)
					}
				}
			})
		}
	}
	time.Sleep(time.Second)
	before := sampleCPU([]int{pid})
	counting.Store(true)
	t0 := time.Now()
	time.Sleep(d)
	counting.Store(false)
	elapsed := time.Since(t0)
	after := sampleCPU([]int{pid})
	cancel()
	wg.Wait()
	cpu, good := after.since(before)
	if !good {
		return h3Result{}, fmt.Errorf("cannot read edge's CPU time from /proc")
	}
	pr, _ := proto.Load().(string)
	return h3Result{ok: ok.Load(), errs: errs.Load(), elapsed: elapsed, cpu: cpu, proto: pr}, nil
}

// fetchProfile saves edge's CPU profile over d, from its admin listener on port.
func fetchProfile(port int, d time.Duration, path string) error {
	time.Sleep(time.Second) // past the warm-up
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=%d", port, int(d.Seconds())-1))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(f, resp.Body)
	return err
}
