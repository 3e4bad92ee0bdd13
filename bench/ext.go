package main

import (
	"bufio"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// The outside load generators of the TLS scenarios and what their output says. Each
// parser reads the text the tool prints on stdout and fails when a line it needs is
// missing, so a new tool version that changes its output is caught, not read as zero.

var (
	toolWrk    = tool{name: "wrk", pkg: "wrk", extra: []string{"/usr/bin/wrk"}}
	toolH2load = tool{name: "h2load", pkg: "nghttp2-client", extra: []string{"/usr/bin/h2load"}}
)

// wrkOutput is what one `wrk --latency` run printed.
type wrkOutput struct {
	Requests int64   // "N requests in 5.00s": answers, whatever their status
	Seconds  float64 // the run's length as wrk measured it
	RPS      float64 // Requests/sec
	Non2xx   int64   // "Non-2xx or 3xx responses: N"
	Connect  int64   // "Socket errors: connect N, read N, write N, timeout N"
	Read     int64
	Write    int64
	Timeout  int64
	// Latency holds the "Latency Distribution" lines: 50, 75, 90 and 99 (percent).
	Latency map[int]time.Duration
}

// SocketErrors is the sum of wrk's socket error counts.
func (w wrkOutput) SocketErrors() int64 { return w.Connect + w.Read + w.Write + w.Timeout }

// parseWrk reads wrk's report. wrk prints nothing for zero socket errors and zero
// non-2xx answers.
func parseWrk(out string) (wrkOutput, error) {
	w := wrkOutput{Latency: map[int]time.Duration{}}
	var haveReqs, haveRPS, inDist bool
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		f := strings.Fields(line)
		switch {
		case line == "Latency Distribution":
			inDist = true
			continue
		case inDist && len(f) == 2 && strings.HasSuffix(f[0], "%"):
			p, err1 := strconv.Atoi(strings.TrimSuffix(f[0], "%"))
			d, err2 := time.ParseDuration(f[1])
			if err1 != nil || err2 != nil {
				return w, fmt.Errorf("wrk: bad latency line %q", line)
			}
			w.Latency[p] = d
			continue
		case len(f) >= 4 && f[1] == "requests" && f[2] == "in":
			n, err1 := strconv.ParseInt(f[0], 10, 64)
			d, err2 := time.ParseDuration(strings.TrimSuffix(f[3], ","))
			if err1 != nil || err2 != nil {
				return w, fmt.Errorf("wrk: bad line %q", line)
			}
			w.Requests, w.Seconds, haveReqs = n, d.Seconds(), true
		case strings.HasPrefix(line, "Requests/sec:") && len(f) == 2:
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return w, fmt.Errorf("wrk: bad line %q", line)
			}
			w.RPS, haveRPS = v, true
		case strings.HasPrefix(line, "Non-2xx or 3xx responses:") && len(f) == 5:
			v, err := strconv.ParseInt(f[4], 10, 64)
			if err != nil {
				return w, fmt.Errorf("wrk: bad line %q", line)
			}
			w.Non2xx = v
		case strings.HasPrefix(line, "Socket errors:"):
			// Socket errors: connect 0, read 7, write 0, timeout 0
			for i := 2; i+1 < len(f); i += 2 {
				v, err := strconv.ParseInt(strings.TrimSuffix(f[i+1], ","), 10, 64)
				if err != nil {
					return w, fmt.Errorf("wrk: bad line %q", line)
				}
				switch f[i] {
				case "connect":
					w.Connect = v
				case "read":
					w.Read = v
				case "write":
					w.Write = v
				case "timeout":
					w.Timeout = v
				}
			}
		}
		inDist = false
	}
	if !haveReqs || !haveRPS {
		return w, fmt.Errorf("wrk printed no result: %s", lastLines([]byte(out), 3))
	}
	return w, nil
}

// h2loadOutput is what one h2load run printed.
type h2loadOutput struct {
	Seconds   float64 // "finished in 5.00s"
	RPS       float64
	Total     int64 // "requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout"
	Started   int64
	Done      int64
	Succeeded int64
	Failed    int64 // errored ones and answers that were not 2xx or 3xx
	Errored   int64
	Timeout   int64
	Status    [4]int64 // "status codes: N 2xx, N 3xx, N 4xx, N 5xx"
	Protocol  string   // "Application protocol: h2"; h2load falls back to http/1.1 when ALPN does not pick h2
	TLS       string   // "TLS Protocol: TLSv1.3"
	Cipher    string
	TempKey   string        // "Server Temp Key: X25519 253 bits"
	Mean      time.Duration // mean "time for request"
}

// Answers are the requests that got a response, of any status.
func (h h2loadOutput) Answers() int64 { return max(h.Done-h.Errored-h.Timeout, 0) }

func parseH2load(out string) (h2loadOutput, error) {
	var h h2loadOutput
	var haveFinished, haveReqs, haveStatus bool
	bad := func(line string) error { return fmt.Errorf("h2load: bad line %q", line) }
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		k, v, _ := strings.Cut(line, ":")
		v = strings.TrimSpace(v)
		switch {
		case strings.HasPrefix(line, "finished in "):
			// finished in 3.00s, 44531.33 req/s, 93.30MB/s
			f := strings.Fields(strings.ReplaceAll(line, ",", ""))
			if len(f) < 5 {
				return h, bad(line)
			}
			d, err1 := time.ParseDuration(f[2])
			rps, err2 := strconv.ParseFloat(f[3], 64)
			if err1 != nil || err2 != nil {
				return h, bad(line)
			}
			h.Seconds, h.RPS, haveFinished = d.Seconds(), rps, true
		case k == "requests":
			dst := map[string]*int64{"total": &h.Total, "started": &h.Started, "done": &h.Done,
				"succeeded": &h.Succeeded, "failed": &h.Failed, "errored": &h.Errored, "timeout": &h.Timeout}
			if err := countList(v, dst); err != nil {
				return h, bad(line)
			}
			haveReqs = true
		case k == "status codes":
			dst := map[string]*int64{"2xx": &h.Status[0], "3xx": &h.Status[1], "4xx": &h.Status[2], "5xx": &h.Status[3]}
			if err := countList(v, dst); err != nil {
				return h, bad(line)
			}
			haveStatus = true
		case k == "Application protocol":
			h.Protocol = v
		case k == "TLS Protocol":
			h.TLS = v
		case k == "Cipher":
			h.Cipher = v
		case k == "Server Temp Key":
			h.TempKey = v
		case k == "time for request":
			f := strings.Fields(v) // min max mean sd +/-sd
			if len(f) < 3 {
				return h, bad(line)
			}
			d, err := time.ParseDuration(f[2])
			if err != nil {
				return h, bad(line)
			}
			h.Mean = d
		}
	}
	if !haveFinished || !haveReqs || !haveStatus {
		return h, fmt.Errorf("h2load printed no result: %s", lastLines([]byte(out), 3))
	}
	return h, nil
}

// countList reads "N name, N name, …" into the counters named in dst; every name of
// dst must be there.
func countList(s string, dst map[string]*int64) error {
	seen := 0
	for _, part := range strings.Split(s, ",") {
		f := strings.Fields(part)
		if len(f) != 2 {
			return fmt.Errorf("bad count %q", part)
		}
		p, ok := dst[f[1]]
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return fmt.Errorf("bad count %q", part)
		}
		*p = n
		seen++
	}
	if seen != len(dst) {
		return fmt.Errorf("want %d counts in %q", len(dst), s)
	}
	return nil
}

// handshakeCounts sums edge's edge_tls_handshakes_total by result ("ok", "error")
// over every listener and version, from its /metrics text.
func handshakeCounts(metrics string) (ok, failed float64) {
	for _, line := range strings.Split(metrics, "\n") {
		if !strings.HasPrefix(line, "edge_tls_handshakes_total{") {
			continue
		}
		i := strings.LastIndexByte(line, '}')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(line[i+1:]), 64)
		if err != nil {
			continue
		}
		switch {
		case strings.Contains(line[:i], `result="ok"`):
			ok += v
		case strings.Contains(line[:i], `result="error"`):
			failed += v
		}
	}
	return ok, failed
}

// nginxVersion reads "1.22.1" from `nginx -v` output such as "nginx/1.22.1" or
// "nginx version: nginx/1.22.1 (Debian)"; zeros when there is none.
func nginxVersion(s string) [3]int {
	var v [3]int
	_, rest, ok := strings.Cut(s, "nginx/")
	if !ok {
		return v
	}
	if i := strings.IndexFunc(rest, func(r rune) bool { return r != '.' && (r < '0' || r > '9') }); i >= 0 {
		rest = rest[:i]
	}
	for i, p := range strings.SplitN(rest, ".", 3) {
		v[i], _ = strconv.Atoi(p)
	}
	return v
}

// nginxHTTP2 returns how this nginx turns on HTTP/2 for a TLS server: 1.25.1 added the
// http2 directive and deprecated `listen … http2`; before it (Debian bookworm has 1.22)
// only the listen parameter exists.
func nginxHTTP2(version string) (listenParam, directive string) {
	v := nginxVersion(version)
	if v[0] > 1 || (v[0] == 1 && (v[1] > 25 || (v[1] == 25 && v[2] >= 1))) {
		return "", "http2 on;"
	}
	return " http2", ""
}
