package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edge-gw/edge/internal/edgetest"
	"github.com/edge-gw/edge/internal/origintest"
	"github.com/edge-gw/edge/proxyproto"
	"github.com/valyala/fasthttp"
)

// proxyDial connects to addr and sends a PROXY v2 header naming client as the source.
func proxyDial(t *testing.T, addr, client string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	src := &net.TCPAddr{IP: net.ParseIP(client), Port: 50000}
	c.Write(proxyproto.AppendV2(nil, src, c.RemoteAddr()))
	return c
}

// httpOver sends GET path on c and returns the status, the X-Edge-Cell header and the body.
func httpOver(t *testing.T, c net.Conn, path string) (int, string, string) {
	t.Helper()
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n", path)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("X-Edge-Cell"), string(b)
}

// The edge binary behind an L4 balancer and as one: a listener with proxy_protocol
// takes the client address from the PROXY header for bans and limits; a stream with
// cells sends a client to the cell its HTTP requests go to; a TCP stream's long
// connection survives a reload; GET /streams and the metrics show the streams.
func TestBinaryStreams(t *testing.T) {
	cellOrigin := func(name string) string {
		return origintest.Start(t, func(ctx *fasthttp.RequestCtx) { fmt.Fprintf(ctx, "served by %s", name) }).Addr
	}
	a, b := cellOrigin("a"), cellOrigin("b")
	echoLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { echoLn.Close() })
	go func() {
		for {
			c, err := echoLn.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	cfg := filepath.Join(t.TempDir(), "edge.hcl")
	src := func(idle string) string {
		return fmt.Sprintf(`
trusted_proxies  = ["127.0.0.1/32"]
shutdown_timeout = "1s"
admin {
  listen = "127.0.0.1:0"
  token  = env("TEST_ADMIN_TOKEN")
}
blacklist {
  ips = ["203.0.113.66/32"]
}
listen = "127.0.0.1:0"
listener "lb" {
  address        = "127.0.0.1:0"
  proxy_protocol = true
}
cells "shop" {
  key = "ip"
  cell "a" { servers = [%q] }
  cell "b" { servers = [%q] }
}
upstream "echo" { servers = [%q] }
route "limited" {
  match { path = "/limited" }
  cells = "shop"
  limit "ip" {
    key   = "ip"
    rate  = "1r/m"
    burst = 1
  }
}
route "shop" {
  match { path = "/" }
  cells = "shop"
}
stream "shop-l4" {
  listen         = "127.0.0.1:0"
  cells          = "shop"
  proxy_protocol = true
}
stream "echo" {
  listen       = "127.0.0.1:0"
  upstream     = "echo"
  idle_timeout = %q
}
`, a, b, echoLn.Addr().String(), idle)
	}
	edgetest.WriteConfig(t, cfg, src("10m"))
	e := &tlsEdge{Edge: edgetest.Start(t, cfg, "TEST_ADMIN_TOKEN="+testToken)}
	lb := e.addr(t, "lb")
	streams := func() map[string]map[string]any { return adminList(t, e.Edge, "/streams", "streams") }
	ls := streams()
	l4, echo := ls["shop-l4"]["address"].(string), ls["echo"]["address"].(string)

	// The PROXY header's address is the client: bans and limits key on it.
	if code, _, _ := httpOver(t, proxyDial(t, lb, "203.0.113.66"), "/x"); code != 403 {
		t.Errorf("banned address in the PROXY header: %d, want 403", code)
	}
	for i, want := range []int{200, 429} {
		if code, _, _ := httpOver(t, proxyDial(t, lb, "203.0.113.7"), "/limited"); code != want {
			t.Errorf("request %d from 203.0.113.7 to a 1r/m route: %d, want %d", i+1, code, want)
		}
	}
	if code, _, _ := httpOver(t, proxyDial(t, lb, "203.0.113.8"), "/limited"); code != 200 {
		t.Errorf("another address behind the same balancer: %d, want 200 (limits key on the header's address)", code)
	}

	// Cells by address: the stream sends each client to the cell of its HTTP requests.
	cells := map[string]int{}
	for i := range 16 {
		client := fmt.Sprintf("198.51.100.%d", i+1)
		code, cell, _ := httpOver(t, proxyDial(t, lb, client), "/who")
		if code != 200 || cell == "" {
			t.Fatalf("%s over HTTP: %d, cell %q", client, code, cell)
		}
		_, _, body := httpOver(t, proxyDial(t, l4, client), "/who")
		if body != "served by "+cell {
			t.Errorf("%s: HTTP went to cell %s, the stream to %q", client, cell, body)
		}
		cells[cell]++
	}
	if len(cells) != 2 {
		t.Errorf("16 clients all in one cell: %v", cells)
	}

	// A long TCP connection through a stream survives a reload that changes the stream.
	long, err := net.Dial("tcp", echo)
	if err != nil {
		t.Fatal(err)
	}
	defer long.Close()
	long.SetDeadline(time.Now().Add(10 * time.Second))
	roundTrip := func(msg string) error {
		if _, err := io.WriteString(long, msg); err != nil {
			return err
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(long, buf); err != nil || string(buf) != msg {
			return fmt.Errorf("echo %q, %v", buf, err)
		}
		return nil
	}
	if err := roundTrip("before"); err != nil {
		t.Fatal(err)
	}
	edgetest.WriteConfig(t, cfg, src("5m"))
	if code, body := adminPost(t, e.Edge, "/reload", testToken); code != 200 {
		t.Fatalf("reload: %d %v", code, body)
	}
	if err := roundTrip("after the reload"); err != nil {
		t.Errorf("long connection across a reload: %v", err)
	}
	if got := streams()["echo"]["address"]; got != echo {
		t.Errorf("the stream moved from %s to %v across the reload", echo, got)
	}

	st := streams()
	res := st["shop-l4"]["connections_total"].(map[string]any)
	if res["accepted"].(float64) != 16 || st["echo"]["connections"].(float64) != 1 {
		t.Errorf("GET /streams: %v", st)
	}
	_, metrics := e.Admin(t, "", "GET", "/metrics", "")
	for _, m := range []string{`edge_stream_connections_total{result="accepted",stream="shop-l4"} 16`,
		`edge_stream_connections{stream="echo"} 1`, `edge_listener_proxy_refused_total{listener="lb"} 0`} {
		if !strings.Contains(metrics, m) {
			t.Errorf("metrics lack %s", m)
		}
	}

	// SIGTERM: the stream stops accepting at once, the open connection goes on until
	// shutdown_timeout, then it is cut and edge exits 0.
	stopped := time.Now()
	e.Signal(t, syscall.SIGTERM)
	e.WaitLog(t, "edge stopping", 5*time.Second)
	waitUntil(t, "the stream stops accepting", func() bool {
		c, err := net.DialTimeout("tcp", echo, time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	if err := roundTrip("while stopping"); err != nil {
		t.Errorf("open connection during the shutdown: %v", err)
	}
	if n, err := long.Read(make([]byte, 1)); err == nil {
		t.Errorf("read %d bytes after shutdown_timeout", n)
	}
	if code := e.Wait(t, 5*time.Second); code != 0 {
		t.Errorf("exit %d", code)
	}
	if d := time.Since(stopped); d < 900*time.Millisecond || d > 4*time.Second {
		t.Errorf("stopped in %v with a connection open, want about shutdown_timeout (1s)", d)
	}
}
