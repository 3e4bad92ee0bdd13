package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// The testdata files are real outputs of wrk 4.1.0 and h2load 1.52.0 (Debian
// bookworm) against nginx 1.22 over TLS: a normal run, 404s, an nginx stopped in the
// middle of the run, a refused port, and h2load against a server without h2.
func testdata(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestParseWrk(t *testing.T) {
	f := func(file string, want wrkOutput) {
		t.Helper()
		got, err := parseWrk(testdata(t, file))
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		lat := got.Latency
		got.Latency, want.Latency = nil, nil
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: got %+v\nwant %+v", file, got, want)
		}
		if len(lat) != 4 || lat[50] <= 0 || lat[99] < lat[90] || lat[90] < lat[75] || lat[75] < lat[50] {
			t.Errorf("%s: latency distribution %v, want 50, 75, 90, 99 in order", file, lat)
		}
	}
	f("wrk.txt", wrkOutput{Requests: 108670, Seconds: 3.09, RPS: 35175.71})
	f("wrk-404.txt", wrkOutput{Requests: 83930, Seconds: 1.1, RPS: 76332.75, Non2xx: 83930})
	f("wrk-errors.txt", wrkOutput{Requests: 77732, Seconds: 3.05, RPS: 25452.06, Non2xx: 35373, Connect: 16636, Read: 7})

	w, _ := parseWrk(testdata(t, "wrk.txt"))
	if w.Latency[50] != 1590*time.Microsecond || w.Latency[99] != 82460*time.Microsecond {
		t.Errorf("p50 %v p99 %v, want 1.59ms and 82.46ms", w.Latency[50], w.Latency[99])
	}
	if w, _ := parseWrk(testdata(t, "wrk-404.txt")); w.Latency[50] != 88*time.Microsecond {
		t.Errorf("p50 %v, want 88us", w.Latency[50])
	}
	if _, err := parseWrk(testdata(t, "wrk-refused.txt")); err == nil || !strings.Contains(err.Error(), "Connection refused") {
		t.Errorf("refused: error %v, want one that quotes wrk", err)
	}
}

func TestParseH2load(t *testing.T) {
	f := func(file string, want h2loadOutput) {
		t.Helper()
		got, err := parseH2load(testdata(t, file))
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if got != want {
			t.Errorf("%s: got %+v\nwant %+v", file, got, want)
		}
	}
	f("h2load.txt", h2loadOutput{Seconds: 3, RPS: 44531.33, Total: 133594, Started: 133850, Done: 133594,
		Succeeded: 133594, Status: [4]int64{133594, 0, 0, 0}, Protocol: "h2", TLS: "TLSv1.3",
		Cipher: "TLS_AES_128_GCM_SHA256", TempKey: "X25519 253 bits", Mean: 5410 * time.Microsecond})
	f("h2load-404.txt", h2loadOutput{Seconds: 1, RPS: 79592, Total: 79592, Started: 79600, Done: 79592,
		Failed: 79592, Status: [4]int64{0, 0, 79592, 0}, Protocol: "h2", TLS: "TLSv1.3",
		Cipher: "TLS_AES_128_GCM_SHA256", TempKey: "X25519 253 bits", Mean: 86 * time.Microsecond})
	f("h2load-http1.txt", h2loadOutput{Seconds: 1, RPS: 32384, Total: 32384, Started: 32392, Done: 32384,
		Succeeded: 32384, Status: [4]int64{32384, 0, 0, 0}, Protocol: "http/1.1", TLS: "TLSv1.3",
		Cipher: "TLS_AES_128_GCM_SHA256", TempKey: "X25519 253 bits", Mean: 246 * time.Microsecond})
	f("h2load-refused.txt", h2loadOutput{Seconds: 1})

	if _, err := parseH2load("starting benchmark...\n"); err == nil {
		t.Error("no result: want an error")
	}
	if _, err := parseH2load(strings.Replace(testdata(t, "h2load.txt"), "133594 succeeded", "many succeeded", 1)); err == nil {
		t.Error("a count that is not a number: want an error")
	}
	h := h2loadOutput{Done: 100, Errored: 3, Timeout: 2}
	if h.Answers() != 95 {
		t.Errorf("answers %d, want done - errored - timeout = 95", h.Answers())
	}
}

func TestHandshakeCounts(t *testing.T) {
	// The first three lines are edge's own; the failed ones and the errors-by-reason
	// family (not to be counted) follow the same format.
	metrics := `# HELP edge_tls_handshakes_total TLS handshakes by listener, protocol version (1.2, 1.3; "unknown" when none was agreed) and result (ok, error).
# TYPE edge_tls_handshakes_total counter
edge_tls_handshakes_total{listener="https",result="ok",version="1.3"} 7938
edge_tls_handshakes_total{listener="https",result="ok",version="1.2"} 2
edge_tls_handshakes_total{listener="https",result="error",version="unknown"} 5
edge_tls_handshake_errors_total{listener="https",reason="eof"} 5
edge_requests_total{route="pass"} 99
`
	ok, failed := handshakeCounts(metrics)
	if ok != 7940 || failed != 5 {
		t.Errorf("ok %v failed %v, want 7940 and 5", ok, failed)
	}
	if ok, failed := handshakeCounts(""); ok != 0 || failed != 0 {
		t.Errorf("no metrics: %v %v", ok, failed)
	}
}

func TestNginxHTTP2(t *testing.T) {
	f := func(version, listen, directive string) {
		t.Helper()
		l, d := nginxHTTP2(version)
		if l != listen || d != directive {
			t.Errorf("%q: listen %q directive %q, want %q %q", version, l, d, listen, directive)
		}
	}
	f("nginx/1.22.1", " http2", "")
	f("nginx version: nginx/1.25.0", " http2", "")
	f("nginx/1.25.1", "", "http2 on;")
	f("nginx version: nginx/1.26.3 (Debian)", "", "http2 on;")
	f("nginx/2.0", "", "http2 on;")
	f("unknown", " http2", "")
}

// The generated nginx config is valid for the nginx on this machine (skipped without one).
func TestNginxTLSConfigIsValid(t *testing.T) {
	bin := toolNginx.find()
	if bin == "" {
		t.Skip("no nginx")
	}
	dir := t.TempDir()
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecf, err := writeCert(dir, "ecdsa", ec)
	if err != nil {
		t.Fatal(err)
	}
	rsf, err := writeCert(dir, "rsa", rk)
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(dir, "tmp"), 0o777)
	conf := filepath.Join(dir, "nginx.conf")
	os.WriteFile(conf, []byte(nginxTLSConfig(dir, versionOf(bin, "-v"), 1, 2, 3, ecf, rsf)), 0o644)
	if out, err := exec.Command(bin, "-t", "-p", dir, "-c", conf, "-e", filepath.Join(dir, "err.log")).CombinedOutput(); err != nil {
		t.Fatalf("nginx -t: %v: %s", err, out)
	}
}

// The handshake client does full handshakes only, even against a server that issues
// session tickets, and counts each connection's answer.
func TestHandshakesAreFull(t *testing.T) {
	dir := t.TempDir()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	files, err := writeCert(dir, "ecdsa", key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(files.cert, files.key)
	if err != nil {
		t.Fatal(err)
	}
	var conns, resumed, notX25519 atomic.Int64
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		st := ctx.Conn().(*tls.Conn).ConnectionState()
		conns.Add(1)
		if st.DidResume {
			resumed.Add(1)
		}
		if st.CurveID != tls.X25519 {
			notX25519.Add(1)
		}
		if strings.HasPrefix(string(ctx.Path()), "/item/") {
			ctx.SetBodyString("ok")
			return
		}
		ctx.SetStatusCode(404)
	}}
	go srv.Serve(tls.NewListener(ln, cfg))
	t.Cleanup(func() { srv.Shutdown() })

	tpl, _ := ParseTemplate("/item/{item}")
	items, _ := ParseIDs("1-10")
	h := &Handshakes{Addr: ln.Addr().String(), Path: tpl, Items: items, Workers: 4, Duration: 300 * time.Millisecond,
		Expect: Expect{Status: 200}}
	r, err := h.Run()
	if err != nil {
		t.Fatal(err)
	}
	if r.Requests < 4 || r.Errors != 0 || r.Matched != r.Requests || r.Status[200] != r.Requests {
		t.Fatalf("answers %d, errors %d (%s), matched %d, status %v", r.Requests, r.Errors, r.FirstErr, r.Matched, r.Status)
	}
	if r.Resumed != 0 || resumed.Load() != 0 || notX25519.Load() != 0 {
		t.Errorf("resumed: client %d, server %d; %d not X25519", r.Resumed, resumed.Load(), notX25519.Load())
	}
	if conns.Load() != r.Requests {
		t.Errorf("server answered %d connections, client counted %d", conns.Load(), r.Requests)
	}
	if r.Agreed != "TLS 1.3, X25519, TLS_AES_128_GCM_SHA256" && r.Agreed != "TLS 1.3, X25519, TLS_CHACHA20_POLY1305_SHA256" {
		t.Errorf("agreed %q", r.Agreed)
	}

	h.Path, _ = ParseTemplate("/nope")
	r, _ = h.Run()
	if r.Requests == 0 || r.Matched != 0 || !strings.HasPrefix(r.Mismatch, "404") {
		t.Errorf("wrong answers: %d answers, %d matched, sample %q", r.Requests, r.Matched, r.Mismatch)
	}

	srv.Shutdown()
	h.Duration = 100 * time.Millisecond
	r, _ = h.Run()
	if r.Requests != 0 || r.Errors == 0 || r.FirstErr == "" {
		t.Errorf("server gone: %d answers, %d errors, first %q", r.Requests, r.Errors, r.FirstErr)
	}
}

func TestSetRatios(t *testing.T) {
	round := func(reqs int64, secs float64) *Result {
		return &Result{Requests: reqs, InWindow: reqs, Window: time.Duration(secs * float64(time.Second))}
	}
	var edge, nginx sideRun
	// Round 1: same throughput, edge uses half the CPU; round 2: edge slower, same CPU.
	edge.add(round(1000, 1), 0.5, true)
	nginx.add(round(1000, 1), 1.0, true)
	edge.add(round(500, 1), 1.0, true)
	nginx.add(round(1000, 1), 1.0, true)
	edge.add(round(900, 1), 0.9, true)
	nginx.add(round(1000, 1), 1.0, true)
	var out ScenarioResult
	setRatios(&out, &edge, &nginx)
	if out.Ratio != 0.9 || len(out.RoundRatios) != 3 {
		t.Errorf("throughput ratio %v of %v, want median 0.9", out.Ratio, out.RoundRatios)
	}
	if out.CPURatio != 1 || !slices.Equal(out.CPURoundRatios, []float64{2, 0.5, 1}) {
		t.Errorf("CPU ratio %v of %v, want median 1 of [2 0.5 1]", out.CPURatio, out.CPURoundRatios)
	}

	var unknown sideRun
	unknown.add(round(1000, 1), 0, false)
	var one sideRun
	one.add(round(1000, 1), 1, true)
	out = ScenarioResult{}
	setRatios(&out, &unknown, &one)
	if out.CPURatio != 0 || out.CPURoundRatios != nil || out.Ratio != 1 {
		t.Errorf("unknown CPU: ratio %v, CPU ratio %v %v", out.Ratio, out.CPURatio, out.CPURoundRatios)
	}
}
