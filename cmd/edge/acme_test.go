package main

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edge-gw/edge/internal/edgetest"
	"github.com/edge-gw/edge/internal/origintest"
	"github.com/edge-gw/edge/internal/pebbletest"
	"github.com/edge-gw/edge/internal/redistest"
	"github.com/valyala/fasthttp"
)

// freeTCPPort returns a loopback port nothing listens on now.
func freeTCPPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// acmeWorld is pebble, Redis and an origin, and how to configure and query edge nodes
// that get their certificate from that pebble with Redis storage.
type acmeWorld struct {
	pb                *pebbletest.Pebble
	redis, origin     string
	httpPort, tlsPort int // where pebble validates HTTP-01 and TLS-ALPN-01
}

func newACMEWorld(t *testing.T) *acmeWorld {
	w := &acmeWorld{httpPort: freeTCPPort(t), tlsPort: freeTCPPort(t)}
	w.pb = pebbletest.Start(t, w.httpPort, w.tlsPort)
	w.redis = redistest.Start(t).Addr
	w.origin = origintest.Start(t, func(ctx *fasthttp.RequestCtx) { fmt.Fprintf(ctx, "origin %s", ctx.Path()) }).Addr
	return w
}

// node starts an edge binary with its plain listener on listen and its TLS listener,
// with an acme block for shop.test stored in Redis, on tlsAddr.
func (w *acmeWorld) node(t *testing.T, listen, tlsAddr string) *edgetest.Edge {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "edge.hcl")
	edgetest.WriteConfig(t, cfg, fmt.Sprintf(`
listen = %q
state_dir = %q
admin {
  listen = "127.0.0.1:0"
  token  = env("TEST_ADMIN_TOKEN")
}
seckill {
  store  = "redis"
  redis { addrs = [%q] }
  secret = "0123456789abcdef0123456789abcdef-acme"
}
upstream "o" { servers = [%q] }
route "all" {
  match { path = "/" }
  upstream = "o"
}
listener "https" {
  address = %q
  tls {
    acme {
      domains   = ["shop.test"]
      email     = "ops@shop.test"
      directory = %q
      ca_roots  = [%q]
      storage   = "redis"
    }
  }
}
`, listen, t.TempDir(), w.redis, w.origin, tlsAddr, w.pb.Directory, w.pb.ServerRootsFile))
	return edgetest.Start(t, cfg, "TEST_ADMIN_TOKEN="+testToken)
}

// serial waits up to d for an HTTPS answer for shop.test at addr that verifies against
// pebble's root, and returns the certificate's serial.
func (w *acmeWorld) serial(t *testing.T, addr string, d time.Duration) string {
	t.Helper()
	c := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: w.pb.Roots, ServerName: "shop.test"}}}
	deadline := time.Now().Add(d)
	for {
		resp, err := c.Get("https://" + addr + "/hello")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(b) == "origin /hello" {
				return resp.TLS.PeerCertificates[0].SerialNumber.String()
			}
			err = fmt.Errorf("answer %q", b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no HTTPS answer with pebble's certificate at %s within %v: %v", addr, d, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func addrOn(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

// Automatic HTTPS against a real ACME server (pebble, which validates every challenge):
// an edge binary with an acme block and Redis storage gets a certificate for its name
// and serves it, plain HTTP answering meanwhile; a second edge on the same Redis serves
// the same certificate without a second order.
func TestBinaryACME(t *testing.T) {
	w := newACMEWorld(t)
	a := w.node(t, addrOn(w.httpPort), addrOn(w.tlsPort))
	if code, _ := get(t, "http://"+a.Addr+"/plain"); code != 200 {
		t.Errorf("plain HTTP while the order runs: %d", code)
	}
	serial := w.serial(t, addrOn(w.tlsPort), 60*time.Second)
	if _, raw := a.Admin(t, testToken, "GET", "/listeners", ""); !strings.Contains(raw, `"shop.test"`) {
		t.Errorf("GET /listeners does not show the ACME certificate: %s", raw)
	}
	bTLS := freeTCPPort(t)
	w.node(t, "127.0.0.1:0", addrOn(bTLS))
	if s := w.serial(t, addrOn(bTLS), 20*time.Second); s != serial {
		t.Errorf("node B serves serial %s, node A %s: want one certificate", s, serial)
	}
	if n := w.pb.Orders(); n != 1 {
		t.Errorf("pebble saw %d orders, want 1 for the cluster", n)
	}
}
