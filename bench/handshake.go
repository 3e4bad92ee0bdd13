package main

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// Handshakes is a closed-loop load of full TLS handshakes: each worker dials a new
// connection, does a full handshake (no session ticket is kept, none is offered), sends
// one GET with Connection: close, reads the answer and closes. Fill it, then call Run
// once.
//
// Why our own client and not `openssl s_time -new -www`: against the same nginx
// (TLS 1.3, X25519, ECDSA P-256, one GET each), 16 goroutines of this client cost
// 0.44 ms of client CPU per connection and got 1,140 handshakes/s, while four s_time
// processes cost 0.73 ms each and got 660/s (s_time is one connection at a time per
// process). On a 2-core box shared by client and server, the cheaper client leaves
// more CPU to the server under test. It also checks every answer's status and proves
// from its own side that no handshake was resumed (ConnectionState.DidResume) and
// which group was agreed. nginx's $ssl_session_reused showed no reuse for either
// client.
type Handshakes struct {
	Addr     string   // "host:port" of the TLS server
	Path     Template // path of the one GET per connection
	Items    *IDs     // values of {item}; nil: 0
	Workers  int      // connections in flight at once; default 16
	Duration time.Duration
	Timeout  time.Duration // per connection (dial, handshake, answer); default 5s
	Expect   Expect
	// Curves are the groups the client offers, in order; nil: X25519 only, the group
	// OpenSSL 3.0 servers (and so nginx on Debian bookworm) and Go servers both agree
	// on. Go's default would offer X25519MLKEM768 first, which only a Go server takes.
	Curves   []tls.CurveID
	Progress *Progress // nil: silent
}

// HandshakeResult is a Result whose answers are connections, one full handshake and
// one request each, plus what the handshakes agreed.
type HandshakeResult struct {
	*Result
	Resumed int64  // handshakes the server resumed: must stay 0
	Agreed  string // version, group and suite of the first handshake, e.g. "TLS 1.3, X25519, TLS_AES_128_GCM_SHA256"
}

// Run sends the load. It returns an error only when the Handshakes is malformed;
// failed connections are counted in the Result.
func (h *Handshakes) Run() (*HandshakeResult, error) {
	if h.Addr == "" || h.Duration <= 0 {
		return nil, errors.New("handshake load needs an address and a positive duration")
	}
	workers := h.Workers
	if workers <= 0 {
		workers = 16
	}
	timeout := h.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	curves := h.Curves
	if curves == nil {
		curves = []tls.CurveID{tls.X25519}
	}
	host, _, err := net.SplitHostPort(h.Addr)
	if err != nil {
		return nil, fmt.Errorf("bad address %q: %w", h.Addr, err)
	}
	cfg := &tls.Config{
		ServerName:             host,
		InsecureSkipVerify:     true, // the server's work is the same; the client's is smaller
		SessionTicketsDisabled: true,
		ClientSessionCache:     nil,
		CurvePreferences:       curves,
		NextProtos:             []string{"http/1.1"},
	}
	var (
		resumed atomic.Int64
		agreed  string // guarded by r.mu
	)
	r := newRun(h.Duration, h.Expect)
	res := r.work(workers, h.Progress, func(w int, wk *worker, rng *rand.Rand) {
		resp := fasthttp.AcquireResponse()
		defer fasthttp.ReleaseResponse(resp)
		br := bufio.NewReaderSize(nil, 16<<10)
		var req []byte
		for n := uint64(w); ; n += uint64(workers) {
			t0 := time.Now()
			if !t0.Before(r.end) {
				return
			}
			req = append(req[:0], "GET "...)
			req = h.Path.Append(req, 0, h.Items.pick(rng), n)
			req = append(req, " HTTP/1.1\r\nHost: "...)
			req = append(req, h.Addr...)
			req = append(req, "\r\nConnection: close\r\n\r\n"...)
			st, err := exchange(h.Addr, cfg, req, br, resp, t0.Add(timeout))
			if err == nil && st.DidResume {
				resumed.Add(1)
			}
			wk.record(t0, time.Now(), resp, err)
			if err == nil && wk.reqs == 1 {
				r.mu.Lock()
				if agreed == "" {
					agreed = fmt.Sprintf("%s, %s, %s", tls.VersionName(st.Version), st.CurveID, tls.CipherSuiteName(st.CipherSuite))
				}
				r.mu.Unlock()
			}
		}
	})
	return &HandshakeResult{Result: res, Resumed: resumed.Load(), Agreed: agreed}, nil
}

// exchange is one connection: dial, full handshake, one request, its answer, close.
func exchange(addr string, cfg *tls.Config, req []byte, br *bufio.Reader, resp *fasthttp.Response, deadline time.Time) (tls.ConnectionState, error) {
	raw, err := net.DialTimeout("tcp", addr, time.Until(deadline))
	if err != nil {
		return tls.ConnectionState{}, err
	}
	c := tls.Client(raw, cfg)
	defer c.Close()
	c.SetDeadline(deadline)
	if err := c.Handshake(); err != nil {
		return tls.ConnectionState{}, fmt.Errorf("handshake: %w", err)
	}
	st := c.ConnectionState()
	if _, err := c.Write(req); err != nil {
		return st, fmt.Errorf("write: %w", err)
	}
	br.Reset(c)
	resp.Reset()
	if err := resp.Read(br); err != nil {
		return st, fmt.Errorf("read answer: %w", err)
	}
	return st, nil
}
