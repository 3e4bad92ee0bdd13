package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edge-gw/edge/internal/testcert"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

const h3Listener = `
listener "quic" {
  address   = "127.0.0.1:0"
  protocols = ["h2", "http/1.1", "h3"]
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
  http3 {
    max_streams      = 50
    max_conns_per_ip = 50
  }
}
`

func (e *tlsEdge) h3Client(t *testing.T) *http.Client {
	tr := &http3.Transport{TLSClientConfig: &tls.Config{RootCAs: e.ca.Pool, ServerName: "a.test"}}
	t.Cleanup(func() { tr.Close() })
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// quicSerial is the serial of the certificate a new QUIC handshake for sni gets.
func (e *tlsEdge) quicSerial(t *testing.T, addr, sni string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	qc, err := quic.DialAddr(ctx, addr, &tls.Config{RootCAs: e.ca.Pool, ServerName: sni, NextProtos: []string{"h3"}}, &quic.Config{})
	if err != nil {
		t.Fatalf("QUIC handshake with %s for %s: %v", addr, sni, err)
	}
	defer qc.CloseWithError(0, "")
	return qc.ConnectionState().TLS.PeerCertificates[0].SerialNumber.Int64()
}

// The binary serves HTTP/3 on a listener with "h3": its TCP answers advertise the UDP
// port, HTTP/3 answers match HTTP/1.1's, a reload gives new QUIC handshakes the new
// certificate, and SIGTERM lets a request in flight finish.
func TestBinaryHTTP3(t *testing.T) {
	e := startTLSEdge(t, h3Listener)
	ls := e.listeners(t)
	tcp := e.addr(t, "quic")
	u, _ := ls["quic"]["http3"].(map[string]any)
	if u == nil {
		t.Fatalf("GET /listeners shows no UDP side: %v", ls["quic"])
	}
	udp := u["udp_address"].(string)
	port := udp[strings.LastIndex(udp, ":"):]
	if udp != tcp || u["alt_svc"] != `h3="`+port+`"; ma=86400` || fmt.Sprint(ls["quic"]["protocols"]) != "[h2 http/1.1 h3]" {
		t.Fatalf("GET /listeners quic = %v", ls["quic"])
	}
	if ls["https"]["http3"] != nil {
		t.Errorf("a listener without h3 shows a UDP side: %v", ls["https"])
	}

	// HTTPS answers over HTTP/1.1 and HTTP/2 advertise HTTP/3; the same path over HTTP/3
	// gets the same answer.
	nc, err := e.dial(t, tcp, "a.test", "http/1.1")
	if err != nil {
		t.Fatal(err)
	}
	resp1, body1 := h1(t, nc, "/x")
	nc.Close()
	if got := resp1.Header.Get("Alt-Svc"); got != `h3="`+port+`"; ma=86400` {
		t.Errorf("Alt-Svc over HTTPS/1.1 = %q", got)
	}
	resp2, err := e.h2Client().Get("https://" + tcp + "/x")
	if err != nil {
		t.Fatal(err)
	}
	resp2.Body.Close()
	if resp2.ProtoMajor != 2 || resp2.Header.Get("Alt-Svc") != resp1.Header.Get("Alt-Svc") {
		t.Errorf("HTTP/%d answer Alt-Svc = %q", resp2.ProtoMajor, resp2.Header.Get("Alt-Svc"))
	}
	if nc, err := e.dial(t, tcp, "a.test", "h3"); err == nil {
		t.Errorf("TCP negotiated %q: h3 must not be offered over TCP", nc.ConnectionState().NegotiatedProtocol)
		nc.Close()
	}
	https := e.addr(t, "https")
	if nc, err := e.dial(t, https, "a.test", "http/1.1"); err == nil {
		if r, _ := h1(t, nc, "/x"); r.Header.Get("Alt-Svc") != "" {
			t.Errorf("a listener without h3 advertises %q", r.Header.Get("Alt-Svc"))
		}
		nc.Close()
	}
	c3 := e.h3Client(t)
	resp3, err := c3.Get("https://" + udp + "/x")
	if err != nil {
		t.Fatal(err)
	}
	body3, _ := io.ReadAll(resp3.Body)
	resp3.Body.Close()
	if resp3.Proto != "HTTP/3.0" || resp3.StatusCode != resp1.StatusCode || string(body3) != body1 || body1 != "proto=HTTP/1.1 xfp=https" {
		t.Errorf("HTTP/3 %s %d %q; HTTP/1.1 %d %q", resp3.Proto, resp3.StatusCode, body3, resp1.StatusCode, body1)
	}

	// A reload swaps the certificate of new QUIC handshakes.
	if s := e.quicSerial(t, udp, "a.test"); s != 2 {
		t.Fatalf("QUIC certificate serial %d, want 2", s)
	}
	e.putCert(t, "a", 7, testcert.Opts{Names: []string{"a.test"}})
	if code, body := adminPost(t, e.Edge, "/reload", testToken); code != 200 || body["ok"] != true {
		t.Fatalf("reload = %d %v", code, body)
	}
	if s := e.quicSerial(t, udp, "a.test"); s != 7 {
		t.Errorf("QUIC certificate serial after reload %d, want 7", s)
	}
	if e.addr(t, "quic") != tcp || e.listeners(t)["quic"]["http3"].(map[string]any)["udp_address"] != udp {
		t.Error("the reload moved the listener")
	}
	if r, err := c3.Get("https://" + udp + "/x"); err != nil || r.StatusCode != 200 {
		t.Errorf("the HTTP/3 connection opened before the reload: %v %v", r, err)
	} else {
		r.Body.Close()
	}

	_, metrics := get(t, "http://"+e.AdminAddr+"/metrics")
	// Three handshakes: the HTTP/3 client's and quicSerial's two. quicSerial closes as soon
	// as its own side is done, which may be before edge has read its Finished: edge then
	// counts that one as an error, so only the total is exact.
	hs := func(result string) int {
		n := 0
		fmt.Sscan(strings.TrimPrefix(grep(metrics, `edge_quic_handshakes_total{listener="quic",result="`+result+`"} `),
			`edge_quic_handshakes_total{listener="quic",result="`+result+`"} `), &n)
		return n
	}
	if ok, failed := hs("ok"), hs("error"); ok < 1 || ok+failed != 3 {
		t.Errorf("edge_quic_handshakes_total ok %d + error %d, want 3 with at least the client's ok", ok, failed)
	}
	for _, want := range []string{
		`edge_listener_requests_total{listener="quic",protocol="h3"} 2`,
		`edge_listener_connections{kind="http3",listener="quic"}`,
		`edge_quic_retries_total{listener="quic"} 0`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s:\n%s", want, grep(metrics, "quic"))
		}
	}
	if log := e.Stdout(); !strings.Contains(log, `"listener":"quic","protocol":"h3"`) {
		t.Errorf("access log does not show HTTP/3 requests:\n%s", log)
	}

	// SIGTERM during a long HTTP/3 request: GOAWAY, it finishes, edge exits 0.
	done := inflightVia(e.h3Client(t), "https://"+udp+"/slow")
	waitUntil(t, "the slow HTTP/3 request at the funnel", func() bool {
		return e.listeners(t)["quic"]["http3"].(map[string]any)["requests_total"] == 3.0
	})
	e.Signal(t, syscall.SIGTERM)
	if got := <-done; got != "200 proto=HTTP/1.1 xfp=https" {
		t.Errorf("HTTP/3 request in flight across SIGTERM = %q", got)
	}
	if code := e.Wait(t, 10*time.Second); code != 0 {
		t.Errorf("exit %d after SIGTERM\n%s", code, e.Log())
	}
}

// SIGUSR2 hands the UDP socket to the new process with the TCP one: after the old
// process exited, HTTP/3 is answered at the same address.
func TestBinaryHTTP3Upgrade(t *testing.T) {
	e := startTLSEdge(t, h3Listener)
	udp := e.listeners(t)["quic"]["http3"].(map[string]any)["udp_address"].(string)
	if r, err := e.h3Client(t).Get("https://" + udp + "/x"); err != nil || r.StatusCode != 200 {
		t.Fatalf("before the upgrade: %v %v", r, err)
	} else {
		r.Body.Close()
	}
	e.Signal(t, syscall.SIGUSR2)
	if code := e.Wait(t, 30*time.Second); code != 0 {
		t.Errorf("the old process exited %d\n%s", code, e.Log())
	}
	m := upgradedPID.FindStringSubmatch(e.Log())
	if m == nil {
		t.Fatalf("no upgrade in the log:\n%s", e.Log())
	}
	pid, _ := strconv.Atoi(m[1])
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	r, err := e.h3Client(t).Get("https://" + udp + "/x")
	if err != nil {
		t.Fatalf("HTTP/3 after the upgrade: %v\n%s", err, e.Log())
	}
	b, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if r.StatusCode != 200 || string(b) != "proto=HTTP/1.1 xfp=https" {
		t.Errorf("HTTP/3 after the upgrade: %d %q", r.StatusCode, b)
	}
}
