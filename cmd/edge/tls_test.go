package main

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edge-gw/edge/internal/edgetest"
	"github.com/edge-gw/edge/internal/origintest"
	"github.com/edge-gw/edge/internal/testcert"
	"github.com/valyala/fasthttp"
)

// tlsEdge is a running edge binary with TLS listeners, and what a test needs to
// reach them.
type tlsEdge struct {
	*edgetest.Edge
	ca  *testcert.CA
	cfg string
	dir string
}

// listeners returns each listener of GET /listeners by name.
func (e *tlsEdge) listeners(t *testing.T) map[string]map[string]any {
	t.Helper()
	return adminList(t, e.Edge, "/listeners", "listeners")
}

// adminList returns the objects of the list field of GET path, by their name.
func adminList(t *testing.T, e *edgetest.Edge, path, field string) map[string]map[string]any {
	t.Helper()
	code, raw := e.Admin(t, testToken, "GET", path, "")
	var body map[string][]map[string]any
	if err := json.Unmarshal([]byte(raw), &body); code != 200 || err != nil {
		t.Fatalf("GET %s = %d %q", path, code, raw)
	}
	out := map[string]map[string]any{}
	for _, l := range body[field] {
		out[l["name"].(string)] = l
	}
	return out
}

func (e *tlsEdge) addr(t *testing.T, name string) string {
	t.Helper()
	l := e.listeners(t)[name]
	if l == nil {
		t.Fatalf("no listener %q", name)
	}
	return l["address"].(string)
}

// putCert writes a certificate for names with serial to dir/base.pem and .key.
func (e *tlsEdge) putCert(t *testing.T, base string, serial int64, o testcert.Opts) {
	t.Helper()
	o.Serial = serial
	leaf := e.ca.Leaf(t, o)
	for from, to := range map[string]string{leaf.CertFile: base + ".pem", leaf.KeyFile: base + ".key"} {
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(e.dir, to), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

const tlsListeners = `
listener "https" {
  address = "127.0.0.1:0"
  tls {
    certificate {
      cert_file = "default.pem"
      key_file  = "default.key"
    }
    certificate {
      cert_file = "a.pem"
      key_file  = "a.key"
    }
  }
  hsts = "365d"
}
listener "http" {
  address        = "127.0.0.1:0"
  https_redirect = true
}
`

const tlsOnlyRoute = `route "tls-only" {
  match {
    path     = "/only"
    listener = "https"
  }
  respond {
    status = 200
    body   = "only over https"
  }
}
`

// writeTLSConfig is writeConfig with the TLS listeners, and the route that only
// serves on https ahead of the catch-all.
func writeTLSConfig(t *testing.T, path, upstream, extra string) {
	writeConfig(t, path, upstream, tlsListeners+extra)
	src, _ := os.ReadFile(path)
	only := tlsOnlyRoute
	edgetest.WriteConfig(t, path, strings.Replace(string(src), `route "app" {`, only+`route "app" {`, 1))
}

func startTLSEdge(t *testing.T, extra string) *tlsEdge {
	t.Helper()
	o := origintest.Start(t, func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/slow" {
			time.Sleep(800 * time.Millisecond)
		}
		fmt.Fprintf(ctx, "proto=%s xfp=%s", ctx.Request.Header.Protocol(), ctx.Request.Header.Peek("X-Forwarded-Proto"))
	})
	dir := t.TempDir()
	e := &tlsEdge{ca: testcert.NewCA(t), cfg: filepath.Join(dir, "edge.hcl"), dir: dir}
	e.putCert(t, "default", 1, testcert.Opts{Names: []string{"default.test"}})
	e.putCert(t, "a", 2, testcert.Opts{Names: []string{"a.test"}})
	writeTLSConfig(t, e.cfg, o.Addr, extra)
	e.Edge = edgetest.Start(t, e.cfg, "TEST_ADMIN_TOKEN="+testToken)
	return e
}

func (e *tlsEdge) dial(t *testing.T, addr, sni string, alpn ...string) (*tls.Conn, error) {
	return tls.DialWithDialer(&net.Dialer{Timeout: 3 * time.Second}, "tcp", addr,
		&tls.Config{RootCAs: e.ca.Pool, ServerName: sni, NextProtos: alpn,
			InsecureSkipVerify: sni == "", // no SNI: check the default certificate by serial below
		})
}

func serial(c *tls.Conn) int64 { return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64() }

// h1 sends GET path on an open HTTP/1.1 connection and returns the response.
func h1(t *testing.T, c net.Conn, path string, headers ...string) (*http.Response, string) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\n", path)
	if len(headers) == 0 || headers[0] != "Host" {
		b.WriteString("Host: a.test\r\n")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		fmt.Fprintf(&b, "%s: %s\r\n", headers[i], headers[i+1])
	}
	b.WriteString("\r\n")
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, b.String()); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

func (e *tlsEdge) h2Client() *http.Client {
	var p http.Protocols
	p.SetHTTP2(true)
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Protocols: &p,
		TLSClientConfig: &tls.Config{RootCAs: e.ca.Pool, ServerName: "a.test"}}}
}

func TestBinaryTLSListeners(t *testing.T) {
	e := startTLSEdge(t, "")
	https, plain := e.addr(t, "https"), e.addr(t, "http")

	// SNI picks the certificate; no SNI gets the first one.
	c, err := e.dial(t, https, "a.test", "http/1.1")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if s := serial(c); s != 2 {
		t.Errorf("SNI a.test: serial %d, want 2", s)
	}
	resp, body := h1(t, c, "/x")
	if resp.StatusCode != 200 || body != "proto=HTTP/1.1 xfp=https" {
		t.Errorf("GET over TLS = %d %q", resp.StatusCode, body)
	}
	if v := resp.Header.Get("Strict-Transport-Security"); v != "max-age=31536000" {
		t.Errorf("HSTS = %q", v)
	}
	if nc, err := e.dial(t, https, ""); err != nil || serial(nc) != 1 {
		t.Errorf("no SNI: %v", err)
	} else {
		nc.Close()
	}
	// TLS 1.1 is refused (min_version defaults to 1.2).
	if old, err := tls.Dial("tcp", https, &tls.Config{RootCAs: e.ca.Pool, ServerName: "a.test", MaxVersion: tls.VersionTLS11}); err == nil {
		old.Close()
		t.Error("a TLS 1.1 handshake succeeded")
	}

	// HTTP/2 over ALPN: the same answer; upstreams still get HTTP/1.1.
	h2c := e.h2Client()
	r2, err := h2c.Get("https://" + https + "/y")
	if err != nil {
		t.Fatal(err)
	}
	b2, _ := io.ReadAll(r2.Body)
	r2.Body.Close()
	if r2.Proto != "HTTP/2.0" || r2.StatusCode != 200 || string(b2) != "proto=HTTP/1.1 xfp=https" || r2.Header.Get("Strict-Transport-Security") == "" {
		t.Errorf("h2 GET = %s %d %q %v", r2.Proto, r2.StatusCode, b2, r2.Header)
	}

	// Routes may match a listener.
	if code, body := get(t, "http://"+e.Addr+"/only"); code != 200 || body != "proto=HTTP/1.1 xfp=http" {
		t.Errorf("/only on the default listener = %d %q, want the catch-all route", code, body)
	}
	if _, body := h1(t, c, "/only"); body != "only over https" {
		t.Errorf("/only over https = %q", body)
	}
	// The plain listener redirects to https, keeping host and target.
	pc, err := net.Dial("tcp", plain)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if resp, _ := h1(t, pc, "/item/42?x=1"); resp.StatusCode != 308 || resp.Header.Get("Location") != "https://a.test/item/42?x=1" {
		t.Errorf("redirect = %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp, _ := h1(t, pc, "/a", "Host", "a.test/evil"); resp.StatusCode != 400 {
		t.Errorf("redirect with a bad host = %d, want 400", resp.StatusCode)
	}

	// Certificates reload without a restart: the open connection goes on.
	e.putCert(t, "a", 9, testcert.Opts{Names: []string{"a.test"}})
	if code, body := adminPost(t, e.Edge, "/reload", testToken); code != 200 || body["ok"] != true {
		t.Fatalf("reload with a new certificate = %d %v", code, body)
	}
	if nc, err := e.dial(t, https, "a.test"); err != nil || serial(nc) != 9 {
		t.Errorf("after reload: %v, want serial 9", err)
	} else {
		nc.Close()
	}
	if resp, body := h1(t, c, "/z"); resp.StatusCode != 200 || body != "proto=HTTP/1.1 xfp=https" || serial(c) != 2 {
		t.Errorf("connection opened before the reload = %d %q", resp.StatusCode, body)
	}

	// A key that does not match refuses the reload at the certificate block; the
	// running certificate keeps serving, and edge -check says the same.
	e.putCert(t, "a", 10, testcert.Opts{Names: []string{"a.test"}, MismatchedKey: true})
	code, rb := adminPost(t, e.Edge, "/reload", testToken)
	place := regexp.MustCompile(`^` + regexp.QuoteMeta(e.cfg) + `:\d+,\d+: listener "https": .*a\.(pem|key)`)
	if code != 400 || !place.MatchString(fmt.Sprint(rb["error"])) {
		t.Errorf("reload with a bad key = %d %v", code, rb)
	}
	if nc, err := e.dial(t, https, "a.test"); err != nil || serial(nc) != 9 {
		t.Errorf("after a refused reload: %v, want serial 9 still", err)
	} else {
		nc.Close()
	}
	out, exit := runEdge(t, "-check", "-config", e.cfg)
	if exit != 1 || !place.MatchString(out) {
		t.Errorf("edge -check with a bad key = %d %q", exit, out)
	}
	os.WriteFile(filepath.Join(e.dir, "a.pem"), []byte("not pem"), 0o600)
	if code, rb := adminPost(t, e.Edge, "/reload", testToken); code != 400 || !place.MatchString(fmt.Sprint(rb["error"])) {
		t.Errorf("reload with a non-PEM file = %d %v", code, rb)
	}
	// SIGHUP re-reads certificate files too, with edge.hcl unchanged.
	e.putCert(t, "a", 11, testcert.Opts{Names: []string{"a.test"}})
	before := strings.Count(e.Log(), "certificates re-read")
	e.Signal(t, syscall.SIGHUP)
	for deadline := time.Now().Add(5 * time.Second); strings.Count(e.Log(), "certificates re-read") == before; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("SIGHUP did not re-read certificates:\n%s", e.Log())
		}
	}
	if nc, err := e.dial(t, https, "a.test"); err != nil || serial(nc) != 11 {
		t.Errorf("after SIGHUP: %v, want serial 11", err)
	} else {
		nc.Close()
	}

	// What the admin API, the metrics and the access log say.
	ls := e.listeners(t)
	certs, _ := ls["https"]["certificates"].([]any)
	if len(certs) != 2 || ls["https"]["tls"] != true || fmt.Sprint(ls["https"]["protocols"]) != "[h2 http/1.1]" {
		t.Errorf("GET /listeners https = %v", ls["https"])
	} else if c0 := certs[1].(map[string]any); fmt.Sprint(c0["names"]) != "[a.test]" || c0["not_after"] == "" {
		t.Errorf("certificate = %v", c0)
	}
	_, metrics := get(t, "http://"+e.AdminAddr+"/metrics")
	for _, want := range []string{
		`edge_tls_handshakes_total{listener="https",result="ok",version="1.3"}`,
		`edge_tls_handshakes_total{listener="https",result="error",version="unknown"}`,
		`edge_tls_certificate_expiry_seconds{listener="https",name="a.test"}`,
		`edge_listener_requests_total{listener="https",protocol="h2"} 1`,
		`edge_listener_requests_total{listener="http",protocol="http/1.1"} 1`,
		`edge_listener_connections{kind="http1",listener="https"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s:\n%s", want, grep(metrics, "edge_tls")+grep(metrics, "edge_listener"))
		}
	}
	if log := e.Stdout(); !strings.Contains(log, `"listener":"https","protocol":"h2"`) || !strings.Contains(log, `"listener":"http","protocol":"http/1.1"`) {
		t.Errorf("access log does not name listeners:\n%s", log)
	}
}

func TestBinaryListenerReloadAndStop(t *testing.T) {
	e := startTLSEdge(t, "")
	o := origin(t, "o")
	extra := `
listener "extra" {
  address   = "127.0.0.1:0"
  protocols = ["h2c", "http/1.1"]
}
`
	// A reload adds a listener, which serves at once; the others keep their sockets.
	https := e.addr(t, "https")
	writeTLSConfig(t, e.cfg, o.Addr, extra)
	if code, body := adminPost(t, e.Edge, "/reload", testToken); code != 200 {
		t.Fatalf("reload adding a listener = %d %v", code, body)
	}
	if got := e.addr(t, "https"); got != https {
		t.Errorf("https moved from %s to %s", https, got)
	}
	ex := e.addr(t, "extra")
	if code, body := get(t, "http://"+ex+"/x"); code != 200 || body != "o" {
		t.Errorf("new listener = %d %q", code, body)
	}

	// A reload removing it stops accepting and lets the request in flight finish.
	slow := inflight(ex)
	time.Sleep(200 * time.Millisecond)
	writeTLSConfig(t, e.cfg, o.Addr, "")
	if code, body := adminPost(t, e.Edge, "/reload", testToken); code != 200 {
		t.Fatalf("reload removing a listener = %d %v", code, body)
	}
	if got := <-slow; got != "200 o" {
		t.Errorf("in-flight request on a removed listener = %q", got)
	}
	if c, err := net.DialTimeout("tcp", ex, time.Second); err == nil {
		c.Close()
		t.Error("removed listener still accepts")
	}
	if _, ok := e.listeners(t)["extra"]; ok {
		t.Error("GET /listeners still shows the removed listener")
	}

	// SIGTERM during a long HTTP/2 request: it finishes, then edge exits 0.
	done := inflightVia(e.h2Client(), "https://"+https+"/slow")
	time.Sleep(200 * time.Millisecond)
	e.Signal(t, syscall.SIGTERM)
	if got := <-done; got != "200 o" {
		t.Errorf("h2 request in flight across SIGTERM = %q", got)
	}
	if code := e.Wait(t, 10*time.Second); code != 0 {
		t.Errorf("exit %d after SIGTERM\n%s", code, e.Log())
	}
}

// Edges given the same tls_tickets secret resume each other's TLS sessions: a client
// that got its ticket from one resumes on the other (behind an L4 balancer, say); an
// edge with keys of its own does not take the ticket.
func TestBinarySharedTicketSecret(t *testing.T) {
	const shared = `
tls_tickets {
  secret = "a test secret, 32 bytes or longer, shared"
}
`
	e1, e2, alone := startTLSEdge(t, shared), startTLSEdge(t, shared), startTLSEdge(t, "")
	for _, version := range []uint16{tls.VersionTLS13, tls.VersionTLS12} {
		// resumes gets a ticket from the first edge, then reports whether the second
		// resumes the session. Each edge has its own CA: only the session is checked.
		resumes := func(from, to *tlsEdge) bool {
			t.Helper()
			cfg := &tls.Config{ServerName: "a.test", InsecureSkipVerify: true, MinVersion: version, MaxVersion: version,
				NextProtos: []string{"http/1.1"}, ClientSessionCache: tls.NewLRUClientSessionCache(1)}
			c, err := tls.Dial("tcp", from.addr(t, "https"), cfg)
			if err != nil {
				t.Fatal(err)
			}
			h1(t, c, "/x") // reading the answer takes the TLS 1.3 ticket in
			c.Close()
			c, err = tls.Dial("tcp", to.addr(t, "https"), cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if resp, body := h1(t, c, "/x"); resp.StatusCode != 200 || body != "proto=HTTP/1.1 xfp=https" {
				t.Errorf("GET on the resumed connection = %d %q", resp.StatusCode, body)
			}
			return c.ConnectionState().DidResume
		}
		name := tls.VersionName(version)
		if !resumes(e1, e2) || !resumes(e2, e1) {
			t.Errorf("%s: edges sharing a ticket secret did not resume each other's sessions", name)
		}
		if resumes(e1, alone) || resumes(alone, e1) {
			t.Errorf("%s: a session resumed between edges that share no secret", name)
		}
	}
}
