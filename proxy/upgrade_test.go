package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// wsOrigin is a real WebSocket server (coder/websocket on net/http): paths ending in
// /echo echo every message, /deny answers 403, anything else 200 "plain PATH". It records the
// paths of the HTTP requests it parsed.
type wsOrigin struct {
	addr  string
	mu    sync.Mutex
	paths []string
}

func (o *wsOrigin) seen() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.paths...)
}

func startWSOrigin(t testing.TB) *wsOrigin {
	o := &wsOrigin{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.mu.Lock()
		o.paths = append(o.paths, r.URL.Path)
		o.mu.Unlock()
		switch {
		case strings.HasSuffix(r.URL.Path, "/deny"):
			http.Error(w, `{"error":"origin_says_no"}`, http.StatusForbidden)
		case strings.HasSuffix(r.URL.Path, "/echo"):
			c, err := websocket.Accept(w, r, nil)
			if err != nil {
				return
			}
			defer c.CloseNow()
			c.SetReadLimit(1 << 20)
			for {
				typ, msg, err := c.Read(context.Background())
				if err != nil {
					return
				}
				if err := c.Write(context.Background(), typ, msg); err != nil {
					return
				}
			}
		default:
			fmt.Fprintf(w, "plain %s", r.URL.Path)
		}
	}))
	t.Cleanup(srv.Close)
	o.addr = strings.TrimPrefix(srv.URL, "http://")
	return o
}

func wsConfig(origin, extra string) string {
	return fmt.Sprintf(`
trusted_proxies = ["127.0.0.1/32"]
blacklist {
  ips = ["10.0.0.0/8"]
}
upstream "ws" {
  servers = [%[1]q]
  timeout = "2s"
}
cells "shop" {
  key = "header:X-User-Id"
  cell "c1" { servers = [%[1]q] }
  cell "c2" { servers = [%[1]q] }
}
route "cell-ws" {
  match { path = "/cell/" }
  cells     = "shop"
  websocket = true
}
route "limited" {
  match { path = "/limited/" }
  upstream  = "ws"
  websocket = true
  limit "user" {
    key   = "header:X-User-Id"
    rate  = "1r/m"
    burst = 1
  }
}
route "ws" {
  match { path = "/ws/" }
  upstream  = "ws"
  websocket = true
  %[2]s
}
route "plain" {
  match { path = "/" }
  upstream = "ws"
}
`, origin, extra)
}

func wsDial(t *testing.T, url string, headers ...string) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	h := http.Header{}
	for i := 0; i+1 < len(headers); i += 2 {
		h.Set(headers[i], headers[i+1])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: h})
	if c != nil {
		t.Cleanup(func() { c.CloseNow() })
	}
	return c, resp, err
}

func echo(t *testing.T, c *websocket.Conn, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := range n {
		msg := strings.Repeat(fmt.Sprintf("m%d-", i), 1+i%50)
		if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
			t.Fatalf("message %d: write: %v", i, err)
		}
		_, got, err := c.Read(ctx)
		if err != nil || string(got) != msg {
			t.Fatalf("message %d: read %q, %v", i, got, err)
		}
	}
}

func TestWebSocketTunnel(t *testing.T) {
	o := startWSOrigin(t)
	e := startEdge(t, wsConfig(o.addr, "max_tunnels = 2\n  tunnel_idle_timeout = \"300ms\""))
	active := func() int64 { return e.px.tunnelState.groups["ws"].Active() }

	c, resp, err := wsDial(t, "ws://"+e.addr+"/ws/echo")
	if err != nil {
		t.Fatalf("dial through edge: %v (%v)", err, resp)
	}
	echo(t, c, 10000)
	if active() != 1 {
		t.Errorf("edge_tunnels_active = %v with one tunnel open", active())
	}

	// A reload leaves the open tunnel alone.
	if err := e.reload(t, wsConfig(o.addr, "max_tunnels = 2\n  tunnel_idle_timeout = \"300ms\"")+"\n# changed\n"); err != nil {
		t.Fatal(err)
	}
	echo(t, c, 10)

	// max_tunnels: the third concurrent tunnel of the route gets 503.
	c2, _, err := wsDial(t, "ws://"+e.addr+"/ws/echo")
	if err != nil {
		t.Fatal(err)
	}
	_, resp, err = wsDial(t, "ws://"+e.addr+"/ws/echo")
	if err == nil || resp == nil || resp.StatusCode != 503 {
		t.Errorf("third tunnel: %v, %v; want 503", err, resp)
	} else if b, _ := io.ReadAll(resp.Body); string(b) != `{"error":"too_many_tunnels"}` {
		t.Errorf("third tunnel body %q", b)
	}
	// Closing tunnels gives their slots back; an idle one is closed by the idle timeout.
	c.Close(websocket.StatusNormalClosure, "bye")
	waitUntil(t, 5*time.Second, "one tunnel left", func() bool { return active() == 1 })
	waitUntil(t, 5*time.Second, "the idle tunnel closed", func() bool { return active() == 0 })
	if _, _, err := c2.Read(context.Background()); err == nil {
		t.Error("idle tunnel still reads")
	}
	c3, _, err := wsDial(t, "ws://"+e.addr+"/ws/echo")
	if err != nil {
		t.Fatalf("after slots came back: %v", err)
	}
	echo(t, c3, 10)
}

// The handshake runs the funnel: a ban is 403, a limit counts handshakes, a cell route
// tunnels to the user's cell and says which.
func TestWebSocketFunnel(t *testing.T) {
	o := startWSOrigin(t)
	e := startEdge(t, wsConfig(o.addr, ""))
	if _, resp, err := wsDial(t, "ws://"+e.addr+"/ws/echo", "X-Forwarded-For", "10.1.1.1"); err == nil || resp == nil || resp.StatusCode != 403 {
		t.Errorf("banned client: %v %v", err, resp)
	}
	if c, _, err := wsDial(t, "ws://"+e.addr+"/limited/echo", "X-User-Id", "u1"); err != nil {
		t.Fatalf("first handshake: %v", err)
	} else {
		echo(t, c, 3)
	}
	if _, resp, err := wsDial(t, "ws://"+e.addr+"/limited/echo", "X-User-Id", "u1"); err == nil || resp == nil || resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" {
		t.Errorf("second handshake over the limit: %v %v", err, resp)
	}
	c, resp, err := wsDial(t, "ws://"+e.addr+"/cell/echo", "X-User-Id", "u7")
	if err != nil {
		t.Fatalf("cell tunnel: %v", err)
	}
	if cell := resp.Header.Get("X-Edge-Cell"); cell != "c1" && cell != "c2" {
		t.Errorf("X-Edge-Cell = %q on the 101", cell)
	}
	echo(t, c, 3)
	// A cell route without the user key is refused before any tunnel.
	if _, resp, err := wsDial(t, "ws://"+e.addr+"/cell/echo"); err == nil || resp == nil || resp.StatusCode != 400 {
		t.Errorf("cell tunnel without key: %v %v", err, resp)
	}
	// Upgrade on a route without websocket = true is stripped: the origin sees a plain GET.
	if _, resp, err := wsDial(t, "ws://"+e.addr+"/other/echo"); err == nil || resp == nil || resp.StatusCode == 101 {
		t.Errorf("upgrade on a plain route: %v %v", err, resp)
	}
}

// An origin that refuses the upgrade: its answer is relayed, the connection is not
// tunnelled, and a request the client pipelined behind the upgrade request is served
// by edge as a request of its own, through the funnel.
func TestUpgradeRefused(t *testing.T) {
	o := startWSOrigin(t)
	e := startEdge(t, wsConfig(o.addr, ""))
	conn := upgradeThenGet(t, e.addr, "/ws/deny", "/after")
	br := bufio.NewReader(conn)
	r1, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b1, _ := io.ReadAll(r1.Body)
	r2, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("pipelined request after a refused upgrade: %v", err)
	}
	b2, _ := io.ReadAll(r2.Body)
	if r1.StatusCode != 403 || !strings.Contains(string(b1), "origin_says_no") || r2.StatusCode != 200 || string(b2) != "plain /after" {
		t.Errorf("answers %d %q, %d %q", r1.StatusCode, b1, r2.StatusCode, b2)
	}
}

// A request the client sends right behind its upgrade request, before the 101, is
// tunnel bytes after the 101: it never reaches the origin as an HTTP request.
func TestUpgradeNoSmuggling(t *testing.T) {
	o := startWSOrigin(t)
	e := startEdge(t, wsConfig(o.addr, ""))
	conn := upgradeThenGet(t, e.addr, "/ws/echo", "/smuggled")
	r, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil || r.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", err, r)
	}
	io.Copy(io.Discard, conn) // the origin reads garbage frames and closes
	for _, p := range o.seen() {
		if p == "/smuggled" {
			t.Errorf("the origin served a smuggled request: %v", o.seen())
		}
	}
}

// A graceful stop gives open tunnels until its deadline, then closes them.
func TestCloseTunnels(t *testing.T) {
	o := startWSOrigin(t)
	e := startEdge(t, wsConfig(o.addr, ""))
	c, _, err := wsDial(t, "ws://"+e.addr+"/ws/echo")
	if err != nil {
		t.Fatal(err)
	}
	echo(t, c, 5)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := e.px.CloseTunnels(ctx); err == nil {
		t.Error("CloseTunnels with a tunnel still open at the deadline returned nil")
	}
	if d := time.Since(start); d < 250*time.Millisecond || d > 3*time.Second {
		t.Errorf("CloseTunnels took %v, want about the 300ms deadline", d)
	}
	if _, _, err := c.Read(context.Background()); err == nil {
		t.Error("tunnel still open after CloseTunnels")
	}
	if n := e.px.tunnelState.groups["ws"].Active(); n != 0 {
		t.Errorf("%d tunnels active after CloseTunnels", n)
	}
}

// BenchmarkWebSocketEcho: round trips of a 64-byte message through edge (/edge) and
// straight to the origin (/direct), with the same client and origin.
// BenchmarkWebSocketEcho measures 64-byte WebSocket echo round trips from one client
// connection (sequential: latency) and from 16 connections per core (parallel:
// throughput on the shared cores), to the origin directly, through edge, and through
// nginx (when installed) proxying the same origin, so the cost of the extra hop can be
// read against the reference proxy's.
func BenchmarkWebSocketEcho(b *testing.B) {
	o := startWSOrigin(b)
	e := startEdge(b, wsConfig(o.addr, ""))
	msg := []byte(strings.Repeat("x", 64))
	targets := []struct{ name, url string }{{"direct", "ws://" + o.addr + "/ws/echo"}, {"edge", "ws://" + e.addr + "/ws/echo"}}
	if addr := startWSNginx(b, o.addr); addr != "" {
		targets = append(targets, struct{ name, url string }{"nginx", "ws://" + addr + "/ws/echo"})
	}
	echo := func(b *testing.B, c *websocket.Conn) bool {
		ctx := context.Background()
		if err := c.Write(ctx, websocket.MessageBinary, msg); err != nil {
			b.Error(err)
			return false
		}
		if _, _, err := c.Read(ctx); err != nil {
			b.Error(err)
			return false
		}
		return true
	}
	dial := func(b *testing.B, url string) *websocket.Conn {
		c, _, err := websocket.Dial(context.Background(), url, nil)
		if err != nil {
			b.Fatal(err)
		}
		return c
	}
	for _, target := range targets {
		b.Run("sequential/"+target.name, func(b *testing.B) {
			c := dial(b, target.url)
			defer c.CloseNow()
			b.ResetTimer()
			for range b.N {
				if !echo(b, c) {
					return
				}
			}
		})
	}
	for _, target := range targets {
		b.Run("parallel/"+target.name, func(b *testing.B) {
			b.SetParallelism(16)
			b.RunParallel(func(pb *testing.PB) {
				c := dial(b, target.url)
				defer c.CloseNow()
				for pb.Next() {
					if !echo(b, c) {
						return
					}
				}
			})
		})
	}
}

// startWSNginx starts nginx proxying WebSocket upgrades to origin, as its documentation
// configures it, and returns its address; "" when nginx is not installed.
func startWSNginx(b *testing.B, origin string) string {
	bin, err := exec.LookPath("nginx")
	if err != nil {
		bin = "/usr/sbin/nginx"
		if _, err := os.Stat(bin); err != nil {
			return ""
		}
	}
	dir := b.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	conf := fmt.Sprintf(`worker_processes 1; daemon off; pid %[1]s/nginx.pid; error_log %[1]s/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path %[1]s; proxy_temp_path %[1]s; fastcgi_temp_path %[1]s; uwsgi_temp_path %[1]s; scgi_temp_path %[1]s;
  server {
    listen %[2]s;
    location / {
      proxy_pass http://%[3]s;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_read_timeout 60s;
    }
  }
}
`, dir, addr, origin)
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o600); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, "-p", dir, "-c", filepath.Join(dir, "nginx.conf"))
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return addr
		}
		if time.Now().After(deadline) {
			b.Fatalf("nginx did not listen on %s", addr)
		}
	}
}

// upgradeThenGet sends a WebSocket upgrade request for path and, in the same write, a
// GET of next right behind it (before any answer), and returns the connection.
func upgradeThenGet(t *testing.T, addr, path, next string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"+
		"GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path, next)
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	return conn
}
