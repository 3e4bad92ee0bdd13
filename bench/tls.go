package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

// The front-door scenarios: TLS and HTTP/2 on both sides, driven by outside clients
// (wrk, h2load) or bench's own handshake client, and judged per CPU-second of the
// server as much as per second, since client and server share the machine.

// extScenario is how a TLS scenario loads a server; nil on the plain scenarios.
type extScenario struct {
	rsa        bool    // serve the RSA-2048 certificate (else ECDSA P-256)
	tool       *tool   // outside program it needs; nil: bench's own client
	handshakes bool    // a full handshake per request: check none was resumed, compare edge's count
	goal       float64 // wanted edge/nginx ratio of requests per CPU-second
	drive      func(x *extRun) error
}

// extRun is one run of an outside or handshake load against one server.
type extRun struct {
	// Set by the caller.
	addr, path string
	d          time.Duration
	conns      int
	bin        string // the tool's path
	prog       *Progress
	exp        Expect

	// Set by drive.
	res     *Result
	lat     map[int]time.Duration // percentiles the tool printed; nil: res.Hist has them
	mean    time.Duration         // mean latency, when the tool prints no percentiles (h2load)
	agreed  string                // protocol, group, suite as the client saw them
	resumed int64                 // handshakes the server resumed
	invalid string                // a reason the run does not count (wrong protocol)
}

const (
	hsWorkers  = 16 // handshake connections in flight
	h2Conns    = 4
	h2Streams  = 64
	wrkThreads = 2
)

// tlsListenerHCL is the edge listener of the TLS scenarios.
func tlsListenerHCL(e *env, rsaCert bool) string {
	c := e.tls.ecdsa
	if rsaCert {
		c = e.tls.rsa
	}
	return fmt.Sprintf(`listener "https" {
  address   = "127.0.0.1:0"
  protocols = ["h2", "http/1.1"]
  tls {
    certificate {
      cert_file = %q
      key_file  = %q
    }
    min_version = "1.2"
  }
}
route "pass" {
  match { path = "/pass/" }
  upstream = "origin"
}
`, c.cert, c.key)
}

// tlsScenarios run after the plain ones in a full suite (init appends them).
var tlsScenarios = []*scenario{
	{
		name: "https_pass", desc: fmt.Sprintf("HTTPS keep-alive proxied GET, HTTP/1.1 both sides, ECDSA P-256 (wrk -t%d -c<connections> --latency, fixed path)", wrkThreads),
		path: "/pass/item/1", edge: Expect{Status: 200}, nginx: Expect{Status: 200}, share: 0.99,
		edgeHCL: func(e *env) string { return tlsListenerHCL(e, false) },
		ext:     &extScenario{tool: &toolWrk, goal: 1.0, drive: driveWrk},
	},
	{
		name: "tls_handshake_ecdsa", desc: fmt.Sprintf("full TLS 1.3 handshakes, X25519, ECDSA P-256: a new connection per GET, no resumption (bench's client, %d in flight)", hsWorkers),
		path: "/pass/item/{item}", items: "1-100000", edge: Expect{Status: 200}, nginx: Expect{Status: 200}, share: 0.99,
		edgeHCL: func(e *env) string { return tlsListenerHCL(e, false) },
		ext:     &extScenario{handshakes: true, goal: 1.0, drive: driveHandshakes},
	},
	{
		name: "tls_handshake_rsa", desc: fmt.Sprintf("full TLS 1.3 handshakes, X25519, RSA-2048: a new connection per GET, no resumption (bench's client, %d in flight)", hsWorkers),
		path: "/pass/item/{item}", items: "1-100000", edge: Expect{Status: 200}, nginx: Expect{Status: 200}, share: 0.99,
		edgeHCL: func(e *env) string { return tlsListenerHCL(e, true) },
		ext:     &extScenario{rsa: true, handshakes: true, goal: 0.45, drive: driveHandshakes},
	},
	{
		name: "h2_pass", desc: fmt.Sprintf("HTTP/2 proxied GET over TLS, ECDSA P-256 (h2load -c %d -m %d -D <seconds>, fixed path)", h2Conns, h2Streams),
		path: "/pass/item/1", edge: Expect{Status: 200}, nginx: Expect{Status: 200}, share: 0.99,
		edgeHCL: func(e *env) string { return tlsListenerHCL(e, false) },
		ext:     &extScenario{tool: &toolH2load, goal: 0.8, drive: driveH2load},
	},
}

func init() { scenarios = append(scenarios, tlsScenarios...) }

// wholeSeconds rounds d up to whole seconds, at least 1: wrk and h2load take seconds.
func wholeSeconds(d time.Duration) int { return max(1, int(math.Ceil(d.Seconds()))) }

func driveWrk(x *extRun) error {
	url := "https://" + x.addr + x.path
	out, err := exec.Command(x.bin, fmt.Sprintf("-t%d", wrkThreads), fmt.Sprintf("-c%d", x.conns),
		fmt.Sprintf("-d%ds", wholeSeconds(x.d)), "--latency", url).CombinedOutput()
	if err != nil {
		return fmt.Errorf("wrk %s: %v: %s", url, err, lastLines(out, 3))
	}
	w, err := parseWrk(string(out))
	if err != nil {
		return err
	}
	r := &Result{Requests: w.Requests, Errors: w.SocketErrors(), Matched: w.Requests - w.Non2xx,
		InWindow: w.Requests, Window: time.Duration(w.Seconds * float64(time.Second)), Hist: NewHistogram()}
	r.Elapsed = r.Window
	if w.Non2xx > 0 {
		r.Mismatch = fmt.Sprintf("%d answers were not 2xx or 3xx (wrk does not say which)", w.Non2xx)
	}
	if r.Errors > 0 {
		r.FirstErr = fmt.Sprintf("wrk socket errors: connect %d, read %d, write %d, timeout %d", w.Connect, w.Read, w.Write, w.Timeout)
	}
	x.res, x.lat = r, w.Latency
	return nil
}

func driveH2load(x *extRun) error {
	url := "https://" + x.addr + x.path
	out, err := exec.Command(x.bin, "-c", fmt.Sprint(h2Conns), "-m", fmt.Sprint(h2Streams), "-t", "1",
		"-D", fmt.Sprint(wholeSeconds(x.d)), url).CombinedOutput()
	if err != nil {
		return fmt.Errorf("h2load %s: %v: %s", url, err, lastLines(out, 3))
	}
	h, err := parseH2load(string(out))
	if err != nil {
		return err
	}
	answers := h.Answers()
	r := &Result{Requests: answers, Errors: h.Errored + h.Timeout, Matched: h.Status[0],
		InWindow: answers, Window: time.Duration(h.Seconds * float64(time.Second)), Hist: NewHistogram()}
	r.Elapsed = r.Window
	if h.Status[0] < answers {
		r.Mismatch = fmt.Sprintf("status classes 2xx %d, 3xx %d, 4xx %d, 5xx %d", h.Status[0], h.Status[1], h.Status[2], h.Status[3])
	}
	if r.Errors > 0 {
		r.FirstErr = fmt.Sprintf("h2load: %d errored, %d timed out", h.Errored, h.Timeout)
	}
	x.res, x.lat, x.mean = r, map[int]time.Duration{}, h.Mean
	x.agreed = fmt.Sprintf("%s, %s, %s, %s", h.TLS, h.TempKey, h.Cipher, h.Protocol)
	if h.Protocol != "h2" {
		x.invalid = fmt.Sprintf("h2load spoke %q, not h2 (ALPN)", h.Protocol)
	}
	return nil
}

func driveHandshakes(x *extRun) error {
	tpl, err := ParseTemplate(x.path)
	if err != nil {
		return err
	}
	items, _ := ParseIDs("1-100000")
	h := &Handshakes{Addr: x.addr, Path: tpl, Items: items, Workers: hsWorkers, Duration: x.d,
		Expect: x.exp, Progress: x.prog}
	r, err := h.Run()
	if err != nil {
		return err
	}
	x.res, x.agreed, x.resumed = r.Result, r.Agreed, r.Resumed
	if r.Resumed > 0 {
		x.invalid = fmt.Sprintf("%d of %d handshakes were resumed, not full", r.Resumed, r.Requests)
	}
	return nil
}

// certFiles are the PEM files of one certificate and its key.
type certFiles struct{ cert, key string }

// tlsEnv is what the TLS scenarios share within a suite: the certificates, made once
// per run, and an nginx that serves them.
type tlsEnv struct {
	ecdsa, rsa certFiles
	nginx      *proc
	ecdsaPort  int
	rsaPort    int
	err        error // why there is none
}

// writeCert makes a self-signed certificate for 127.0.0.1 and localhost with key and
// writes dir/name.pem and dir/name.key.
func writeCert(dir, name string, key crypto.Signer) (certFiles, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return certFiles{}, err
	}
	now := time.Now()
	tpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "edge bench " + name},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(30 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	if _, ok := key.(*rsa.PrivateKey); ok {
		tpl.KeyUsage |= x509.KeyUsageKeyEncipherment
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, key.Public(), key)
	if err != nil {
		return certFiles{}, fmt.Errorf("cannot create the %s certificate: %w", name, err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return certFiles{}, err
	}
	f := certFiles{cert: filepath.Join(dir, name+".pem"), key: filepath.Join(dir, name+".key")}
	if err := os.WriteFile(f.cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return certFiles{}, err
	}
	// nginx reads keys as root before its workers drop to nobody: 0600 is enough.
	if err := os.WriteFile(f.key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}), 0o600); err != nil {
		return certFiles{}, err
	}
	return f, nil
}

// startTLS makes the certificates and starts the TLS nginx, once; later calls return
// the first call's outcome.
func (e *env) startTLS() error {
	if e.tls != nil {
		return e.tls.err
	}
	t := &tlsEnv{}
	e.tls = t
	t.err = func() error {
		ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		if t.ecdsa, err = writeCert(e.dir, "ecdsa", ec); err != nil {
			return err
		}
		rk, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return err
		}
		if t.rsa, err = writeCert(e.dir, "rsa", rk); err != nil {
			return err
		}
		for _, p := range []*int{&t.ecdsaPort, &t.rsaPort} {
			if *p, err = freePort(); err != nil {
				return err
			}
		}
		conf := nginxTLSConfig(e.dir, versionOf(e.nginxBin, "-v"), e.originPrt, t.ecdsaPort, t.rsaPort, t.ecdsa, t.rsa)
		path := filepath.Join(e.dir, "nginx-tls.conf")
		if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
			return err
		}
		errLog := filepath.Join(e.dir, "nginx-tls.err")
		p, err := startProc("nginx (TLS)", filepath.Join(e.dir, "nginx-tls.log"),
			e.nginxBin, "-p", e.dir, "-c", path, "-e", errLog, "-g", "daemon off;")
		if err != nil {
			return err
		}
		e.mu.Lock()
		t.nginx = p
		e.mu.Unlock()
		for _, port := range []int{t.ecdsaPort, t.rsaPort} {
			if err := p.waitPort(fmt.Sprintf("127.0.0.1:%d", port)); err != nil {
				return fmt.Errorf("%w (%s)", err, readTail(errLog))
			}
		}
		return nil
	}()
	return t.err
}

// nginxTLSConfig is the nginx the TLS scenarios measure edge against: TLS 1.2 and 1.3,
// HTTP/2 and HTTP/1.1 by ALPN, the same origin with keep-alive as in pass. Sessions:
// nginx's usual production setting (a shared cache and tickets, as edge issues
// tickets too); the handshake clients never resume, so neither side saves work by it.
func nginxTLSConfig(dir, version string, origin, ecdsaPort, rsaPort int, ec, rs certFiles) string {
	h2Listen, h2Directive := nginxHTTP2(version)
	server := func(port int, c certFiles) string {
		if h2Directive != "" {
			h2Directive = "\n    " + h2Directive
		}
		return fmt.Sprintf(`  server { listen 127.0.0.1:%d ssl%s reuseport backlog=4096;%s
    ssl_certificate %s; ssl_certificate_key %s;
    keepalive_requests 1000000; proxy_http_version 1.1; proxy_set_header Connection "";
    location /pass/ { proxy_pass http://origin; }
  }
`, port, h2Listen, h2Directive, c.cert, c.key)
	}
	return fmt.Sprintf(`worker_processes auto; pid %[1]s/nginx-tls.pid; error_log %[1]s/nginx-tls.err;
events { worker_connections 8192; }
http { access_log off; client_body_temp_path %[1]s/tmp; proxy_temp_path %[1]s/tmp;
  upstream origin { server 127.0.0.1:%[2]d; keepalive 256; }
  ssl_protocols TLSv1.2 TLSv1.3;
  ssl_session_cache shared:SSL:10m;
`, dir, origin) + server(ecdsaPort, ec) + server(rsaPort, rs) + "}\n"
}

// adminGet fetches an admin path of edge with the bench token.
func adminGet(admin, path string) (int, []byte, error) {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + admin + path)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	if err := fasthttp.DoTimeout(req, resp, 5*time.Second); err != nil {
		return 0, nil, err
	}
	return resp.StatusCode(), append([]byte(nil), resp.Body()...), nil
}

// listenerAddr asks edge's admin GET /listeners for the bound address of listener
// name, polling until the admin listener answers (it starts after the listeners).
func listenerAddr(admin, name string) (string, error) {
	deadline := time.Now().Add(15 * time.Second)
	last := errors.New("no answer")
	for time.Now().Before(deadline) {
		code, body, err := adminGet(admin, "/listeners")
		switch {
		case err != nil:
			last = err
		case code != 200:
			last = fmt.Errorf("status %d: %.200s", code, body)
		default:
			var v struct {
				Listeners []struct {
					Name    string `json:"name"`
					Address string `json:"address"`
				} `json:"listeners"`
			}
			if err := json.Unmarshal(body, &v); err != nil {
				return "", fmt.Errorf("admin GET /listeners: %w: %.200s", err, body)
			}
			for _, l := range v.Listeners {
				if l.Name == name {
					return l.Address, nil
				}
			}
			return "", fmt.Errorf("admin GET /listeners has no listener %q: %.200s", name, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return "", fmt.Errorf("admin GET /listeners: %w", last)
}

// edgeHandshakes reads edge's handshake counters; ok is false when they cannot be read.
func edgeHandshakes(admin string) (hs, failed float64, ok bool) {
	code, body, err := adminGet(admin, "/metrics")
	if err != nil || code != 200 {
		return 0, 0, false
	}
	hs, failed = handshakeCounts(string(body))
	return hs, failed, true
}

// runExternal measures a TLS scenario the way runScenario measures the plain ones:
// warm-up, then alternating rounds of edge and nginx, CPU of each server process
// sampled around each round.
func (e *env) runExternal(sc *scenario, st Settings, prog *Progress) ScenarioResult {
	out := ScenarioResult{Name: sc.name, Desc: sc.desc}
	invalid := func(why string) ScenarioResult {
		out.Edge = &Side{Target: "edge", Invalid: why, Expect: sc.edge.String()}
		out.Nginx = &Side{Target: "nginx", Invalid: "not run: " + why, Expect: sc.nginx.String()}
		return out
	}
	x := sc.ext
	bin := ""
	if x.tool != nil {
		var err error
		if bin, err = x.tool.ensure(e.logf); err != nil {
			return invalid(err.Error())
		}
	}
	if err := e.startTLS(); err != nil {
		return invalid("no TLS nginx: " + err.Error())
	}
	ep, _, admin, err := e.startEdge(sc)
	if err != nil {
		return invalid("edge did not start with this scenario's config: " + err.Error())
	}
	defer ep.stop(syscall.SIGTERM)
	edgeAddr, err := listenerAddr(admin, "https")
	if err != nil {
		return invalid(err.Error())
	}
	nginxPort := e.tls.ecdsaPort
	if x.rsa {
		nginxPort = e.tls.rsaPort
	}
	nginxAddr := fmt.Sprintf("127.0.0.1:%d", nginxPort)

	run := func(addr string, exp Expect, d time.Duration, label string) *extRun {
		prog.Label = label
		r := &extRun{addr: addr, path: sc.path, d: d, conns: st.Conns, bin: bin, prog: prog, exp: exp}
		if err := x.drive(r); err != nil {
			r.res = &Result{Hist: NewHistogram(), FirstErr: err.Error(), Errors: 1}
		}
		return r
	}
	run(edgeAddr, sc.edge, st.Warmup, sc.name+" edge warm-up ")
	run(nginxAddr, sc.nginx, st.Warmup, sc.name+" nginx warm-up")

	edgePIDs := func() []int { return []int{ep.pid()} }
	nginxPIDs := func() []int { return withChildren(e.tls.nginx.pid()) }
	var edgeRun, nginxRun sideRun
	var edgeExt, nginxExt []*extRun
	var hsClient, hsEdge, hsFailed float64
	hsKnown := true
	measure := func(target, addr string, exp Expect, pids func() []int, sr *sideRun, xs *[]*extRun, round int) {
		var h0, f0 float64
		ok0 := false
		if target == "edge" {
			h0, f0, ok0 = edgeHandshakes(admin)
		}
		c0 := sampleCPU(pids())
		r := run(addr, exp, st.Duration, fmt.Sprintf("%s %-5s %d/%d", sc.name, target, round, st.Rounds))
		cpu, ok := sampleCPU(pids()).since(c0)
		if target == "edge" {
			h1, f1, ok1 := edgeHandshakes(admin)
			hsKnown = hsKnown && ok0 && ok1
			hsEdge += h1 - h0
			hsFailed += f1 - f0
			hsClient += float64(r.res.Requests + r.res.Errors)
		}
		sr.add(r.res, cpu, ok)
		*xs = append(*xs, r)
		line := oneLine(r.res)
		if r.lat != nil { // no histogram: show what the tool printed
			lat := fmt.Sprintf("p50 %s  p99 %s", latOf(r.lat, 50), latOf(r.lat, 99))
			if len(r.lat) == 0 {
				lat = "mean " + fmtDur(r.mean)
			}
			line = fmt.Sprintf("%8.0f req/s  %s  %d answers, %d errors, %.1f%% as expected",
				r.res.RPS(), lat, r.res.Requests, r.res.Errors, 100*float64(r.res.Matched)/float64(max(r.res.Requests, 1)))
		}
		if ok && cpu > 0 {
			line += fmt.Sprintf(", %.0f req/CPU-s", float64(r.res.Requests)/cpu)
		}
		if r.agreed != "" {
			line += " [" + r.agreed + "]"
		}
		if r.invalid != "" {
			line += " INVALID: " + r.invalid
		}
		e.logf("  %-16s %-5s round %d: %s", sc.name, target, round, line)
	}
	for round := 1; round <= st.Rounds; round++ {
		measure("edge", edgeAddr, sc.edge, edgePIDs, &edgeRun, &edgeExt, round)
		measure("nginx", nginxAddr, sc.nginx, nginxPIDs, &nginxRun, &nginxExt, round)
	}
	out.Edge = summarizeExt("edge", &edgeRun, edgeExt, sc)
	out.Nginx = summarizeExt("nginx", &nginxRun, nginxExt, sc)
	if out.Edge.Valid && out.Nginx.Valid {
		setRatios(&out, &edgeRun, &nginxRun)
	}
	for _, side := range []struct {
		name string
		xs   []*extRun
	}{{"edge", edgeExt}, {"nginx", nginxExt}} {
		if len(side.xs) > 0 && side.xs[0].agreed != "" {
			out.Notes = append(out.Notes, fmt.Sprintf("%s agreed %s", side.name, side.xs[0].agreed))
		}
	}
	if len(edgeExt) > 0 && edgeExt[0].mean > 0 {
		means := func(xs []*extRun) float64 {
			var v []float64
			for _, r := range xs {
				v = append(v, ms(r.mean))
			}
			return median(v)
		}
		out.Notes = append(out.Notes, fmt.Sprintf("mean time per request (h2load prints no percentiles; median of rounds): edge %.2f ms, nginx %.2f ms",
			means(edgeExt), means(nginxExt)))
	}
	if x.handshakes {
		var resumed [2]int64
		for i, xs := range [][]*extRun{edgeExt, nginxExt} {
			for _, r := range xs {
				resumed[i] += r.resumed
			}
		}
		out.Notes = append(out.Notes, fmt.Sprintf("resumed handshakes seen by the client: edge %d, nginx %d", resumed[0], resumed[1]))
		if hsKnown {
			note := fmt.Sprintf("edge_tls_handshakes_total over the measured rounds: %.0f ok, %.0f failed, for %.0f client connections", hsEdge, hsFailed, hsClient)
			if math.Abs(hsEdge-hsClient) > 0.01*hsClient+float64(hsWorkers) {
				note += " (MISMATCH)"
			}
			out.Notes = append(out.Notes, note)
		}
	}
	if out.CPURatio > 0 && x.goal > 0 {
		verdict := "met"
		if out.CPURatio < x.goal {
			verdict = "NOT met"
		}
		out.Notes = append(out.Notes, fmt.Sprintf("goal: edge/nginx requests per CPU-second ≥ %.2f: %s (%.2f)", x.goal, verdict, out.CPURatio))
	}
	return out
}

func latOf(lat map[int]time.Duration, p int) string {
	if d, ok := lat[p]; ok {
		return fmtDur(d)
	}
	return "?"
}

// summarizeExt is summarize plus what only outside tools know: the latency
// percentiles they printed and reasons a run does not count.
func summarizeExt(target string, sr *sideRun, xs []*extRun, sc *scenario) *Side {
	exp := sc.edge
	if target == "nginx" {
		exp = sc.nginx
	}
	side := summarize(target, sr, exp, sc.share)
	var why []string
	for i, x := range xs {
		if x.invalid != "" {
			why = append(why, fmt.Sprintf("round %d: %s", i+1, x.invalid))
		}
	}
	if len(why) > 0 && side.Valid {
		side.Valid, side.Invalid = false, strings.Join(why, "; ")
	}
	if len(xs) > 0 && xs[0].lat != nil {
		pct := func(p int) float64 {
			var v []float64
			for _, x := range xs {
				if d, ok := x.lat[p]; ok {
					v = append(v, ms(d))
				}
			}
			return median(v)
		}
		side.P50, side.P90, side.P99, side.P999 = pct(50), pct(90), pct(99), 0
	}
	return side
}
