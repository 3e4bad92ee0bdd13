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

// Automatic HTTPS against a real ACME server (pebble, which validates every challenge):
// an edge binary with an acme block and Redis storage gets a certificate for its name
// and serves it; a second edge on the same Redis serves the same certificate without a
// second order.
func TestBinaryACME(t *testing.T) {
	httpPort, tlsPort := freeTCPPort(t), freeTCPPort(t)
	pb := pebbletest.Start(t, httpPort, tlsPort)
	srv := redistest.Start(t)
	o := origintest.Start(t, func(ctx *fasthttp.RequestCtx) { fmt.Fprintf(ctx, "origin %s", ctx.Path()) })
	config := func(listen, tlsAddr string) string {
		return fmt.Sprintf(`
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
`, listen, t.TempDir(), srv.Addr, o.Addr, tlsAddr, pb.Directory, pb.ServerRootsFile)
	}
	getTLS := func(addr string) (string, string, error) {
		c := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pb.Roots, ServerName: "shop.test"}}}
		resp, err := c.Get("https://" + addr + "/hello")
		if err != nil {
			return "", "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b), resp.TLS.PeerCertificates[0].SerialNumber.String(), nil
	}

	cfgA := filepath.Join(t.TempDir(), "edge.hcl")
	edgetest.WriteConfig(t, cfgA, config("127.0.0.1:"+strconv.Itoa(httpPort), "127.0.0.1:"+strconv.Itoa(tlsPort)))
	a := edgetest.Start(t, cfgA, "TEST_ADMIN_TOKEN="+testToken)
	if code, _ := get(t, "http://"+a.Addr+"/plain"); code != 200 {
		t.Errorf("plain HTTP while the order runs: %d", code)
	}
	var serial string
	deadline := time.Now().Add(60 * time.Second)
	for {
		body, s, err := getTLS("127.0.0.1:" + strconv.Itoa(tlsPort))
		if err == nil && body == "origin /hello" {
			serial = s
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no certificate from pebble within 60s: %v\n%s", err, a.Log())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if _, raw := a.Admin(t, testToken, "GET", "/listeners", ""); !strings.Contains(raw, `"shop.test"`) {
		t.Errorf("GET /listeners does not show the ACME certificate: %s", raw)
	}

	// A second node on the same Redis: it serves the stored certificate, no new order.
	cfgB := filepath.Join(t.TempDir(), "edge.hcl")
	bTLS := freeTCPPort(t)
	edgetest.WriteConfig(t, cfgB, config("127.0.0.1:0", "127.0.0.1:"+strconv.Itoa(bTLS)))
	edgetest.Start(t, cfgB, "TEST_ADMIN_TOKEN="+testToken)
	deadline = time.Now().Add(20 * time.Second)
	for {
		body, s, err := getTLS("127.0.0.1:" + strconv.Itoa(bTLS))
		if err == nil && body == "origin /hello" {
			if s != serial {
				t.Errorf("node B serves serial %s, node A %s: want one certificate", s, serial)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node B never served the stored certificate: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if n := pb.Orders(); n != 1 {
		t.Errorf("pebble saw %d orders, want 1 for the cluster", n)
	}
}
