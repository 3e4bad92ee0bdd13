package proxy

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edge-gw/edge/h2up"
	"github.com/edge-gw/edge/rawsock"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
)

// poolSettings are the connection settings of one upstream server. Two servers
// with equal settings and address share one keep-alive pool across reloads.
type poolSettings struct {
	addr            string
	connectTimeout  time.Duration
	timeout         time.Duration
	maxConns        int
	keepalive       time.Duration
	maxResponseSize int64
	// protocol is "http1", "h2c" or "h2" (grpc.go), with the TLS settings of "h2".
	protocol, serverName, caFile string
	// proxyProto is "v1" or "v2" when each connection starts with a PROXY header for the
	// client it serves (proxyproto.go); "": none.
	proxyProto string
}

// server is one upstream address with its keep-alive pool. It outlives snapshots:
// the registry hands the same *server to every snapshot whose settings match.
type server struct {
	addr       string
	proxyProto string // "v1" | "v2": connections carry one client each, after a PROXY header
	hc         *fasthttp.HostClient
	h2         *h2up.Client // set instead of hc's use for protocol "h2c" and "h2" (grpc.go)
	health     *health      // shared by every server of this address
	refs       int          // snapshots using it; guarded by registry.mu
}

// health is what edge believes about one upstream address: the verdict of active
// checks (health.go) and of passive detection on real traffic. It is keyed by
// address alone, so it survives reloads, also reloads that change a server's
// timeouts (which give it a new connection pool). Safe for concurrent use; its
// hot-path methods only do atomics.
type health struct {
	addr string
	// activeDown is set by active checks after `fall` failures and cleared after
	// `rise` passes, or when no check watches the address any more.
	activeDown atomic.Bool
	// fails counts consecutive passive failures (connect errors, timeouts, broken
	// responses, 5xx); ejectedUntil (unix ns, 0: none) is the end of the cool-off
	// that passiveFails of them start.
	fails        atomic.Int32
	ejectedUntil atomic.Int64

	refs     int // servers using it; guarded by registry.mu
	checkers int // active checkers running; guarded by healthState.mu
}

// Passive detection defaults (see docs/cells.md). Five in a row, so one slow or
// failed request never takes a server out; ten seconds, as nginx's fail_timeout.
const (
	passiveFails   = 5
	passiveCooloff = 10 * time.Second
)

// up reports whether requests should go to the address. It reads the clock only
// while a cool-off is set.
func (h *health) up() bool {
	if h.activeDown.Load() {
		return false
	}
	if u := h.ejectedUntil.Load(); u != 0 && time.Now().UnixNano() < u {
		return false
	}
	return true
}

// ejected reports whether a passive cool-off is running now.
func (h *health) ejected() bool {
	u := h.ejectedUntil.Load()
	return u != 0 && time.Now().UnixNano() < u
}

// success records a good exchange: it ends the failure streak and any cool-off.
// Loads first, so the steady state writes no shared cache line.
func (h *health) success() {
	if h.fails.Load() != 0 {
		h.fails.Store(0)
	}
	if h.ejectedUntil.Load() != 0 {
		h.ejectedUntil.Store(0)
	}
}

// failure records a failed exchange. The passiveFails-th failure in a row starts
// a cool-off; after it the server gets traffic again, and since the streak is
// only reset by a success, one more failure ejects it again at once.
func (h *health) failure() {
	if h.fails.Add(1) >= passiveFails {
		h.ejectedUntil.Store(time.Now().Add(passiveCooloff).UnixNano())
	}
}

// registry keeps upstream servers (and their connection pools) across reloads,
// keyed by identity: address plus settings; and their health, keyed by address.
type registry struct {
	mu      sync.Mutex
	servers map[poolSettings]*server
	health  map[string]*health
}

func newRegistry() *registry {
	return &registry{servers: map[poolSettings]*server{}, health: map[string]*health{}}
}

// acquire returns the server for s, creating it when new. Each acquire is matched
// by one release when the snapshot holding it is retired.
func (r *registry) acquire(s poolSettings) *server {
	r.mu.Lock()
	defer r.mu.Unlock()
	srv := r.servers[s]
	if srv == nil {
		h := r.health[s.addr]
		if h == nil {
			h = &health{addr: s.addr}
			r.health[s.addr] = h
		}
		h.refs++
		srv = &server{addr: s.addr, hc: newHostClient(s), health: h, proxyProto: s.proxyProto}
		if s.protocol == "h2c" || s.protocol == "h2" {
			srv.h2 = newH2Client(s)
		}
		r.servers[s] = srv
	}
	srv.refs++
	return srv
}

// release drops one reference; a server no snapshot uses closes its idle connections.
func (r *registry) release(s poolSettings) {
	r.mu.Lock()
	defer r.mu.Unlock()
	srv := r.servers[s]
	if srv == nil {
		return
	}
	if srv.refs--; srv.refs <= 0 {
		delete(r.servers, s)
		srv.hc.CloseIdleConnections()
		if srv.h2 != nil {
			srv.h2.Close()
		}
		if srv.health.refs--; srv.health.refs <= 0 {
			delete(r.health, s.addr)
		}
	}
}

func newHostClient(s poolSettings) *fasthttp.HostClient {
	dialer := &fasthttp.TCPDialer{Concurrency: 0, DNSCacheDuration: time.Minute}
	connect := s.connectTimeout
	return &fasthttp.HostClient{
		Addr: s.addr,
		Dial: func(addr string) (net.Conn, error) {
			c, err := dialer.DialTimeout(addr, connect)
			if err != nil {
				return nil, err
			}
			return rawsock.Wrap(c), nil // raw reads and writes, as for clients
		},
		MaxConns:            s.maxConns,
		MaxConnWaitTimeout:  s.timeout,
		MaxIdleConnDuration: s.keepalive,
		// No ReadTimeout/WriteTimeout: exchange (exchange.go) sets the request's one
		// upstream deadline on each connection it uses.
		MaxResponseBodySize:           int(s.maxResponseSize),
		ReadBufferSize:                16 << 10,
		WriteBufferSize:               8 << 10,
		NoDefaultUserAgentHeader:      true,
		DisableHeaderNamesNormalizing: false, // the cache and hop-by-hop checks look names up canonically
		// Requests go through exchange, not Do: its retry on the same server (once,
		// on a fresh connection, after a failure on a reused one, for GET, HEAD and PUT
		// only, within the one budget) replaces fasthttp's. Dial failures are not
		// retried there: forward moves them to another server. So one forward attempt
		// is at most 2 sends of such a request and 1 of any other; forward bounds the
		// attempts (maxTries) and the total time.
	}
}

// pool is a set of servers balanced round robin, as seen by one snapshot.
type pool struct {
	name     string
	settings []poolSettings
	servers  []*server
	timeout  time.Duration
	next     atomic.Uint32
	errs     *upstreamErrors

	// strict pools (the servers of one cell) never send to a down server: when
	// none is up, forward answers unavailable. Plain upstreams fail open instead.
	strict      bool
	unavailable *answer            // strict pools' answer when no server is up
	retries     prometheus.Counter // edge_upstream_retries_total child; nil: not counted
	guard       *poolGuard         // bulkhead and breaker (breaker.go); nil: none
}

// pick returns the index of the next server round robin that is up and not in
// tried (bit i stands for servers[i]), and true. When no untried server is up it
// returns the first untried one round robin and false, or -1 when all were tried.
func (p *pool) pick(tried uint64) (int, bool) {
	n := len(p.servers)
	start := 0
	if n > 1 {
		start = int(p.next.Add(1) % uint32(n))
	}
	fallback := -1
	for i := 0; i < n; i++ {
		j := start + i
		if j >= n {
			j -= n
		}
		if j < 64 && tried&(1<<j) != 0 {
			continue
		}
		if p.servers[j].health.up() {
			return j, true
		}
		if fallback < 0 {
			fallback = j
		}
	}
	return fallback, false
}

// available reports whether some server of the pool is up.
func (p *pool) available() bool {
	for _, srv := range p.servers {
		if srv.health.up() {
			return true
		}
	}
	return false
}

// maxTries bounds the servers one request is sent to (see forward).
const maxTries = 3

// idempotentMethods are the methods RFC 9110 calls idempotent: a request that may
// have reached a server can be repeated on another one only with these.
var idempotentMethods = methodBit([]byte("GET")) | methodBit([]byte("HEAD")) | methodBit([]byte("OPTIONS")) |
	methodBit([]byte("TRACE")) | methodBit([]byte("PUT")) | methodBit([]byte("DELETE"))

// retryable says whether a failed attempt may be repeated on another server.
// Connect failures never reached the server, and ErrNoFreeConns never sent
// anything: any method is safe. A broken exchange (reset, malformed response)
// may have been processed, so only idempotent methods are repeated; forward
// buffers the whole response, so no byte of it has reached the client yet.
// Timeouts are not repeated: the server may still be working on the request and
// the time budget is spent.
func retryable(f failure, idempotent bool) bool {
	switch f {
	case failConnect, failBusy:
		return true
	case failBroken:
		return idempotent
	}
	return false
}

// failure classifies a forwarding error for the client answer and the metric.
type failure uint8

const (
	failNone    failure = iota
	failConnect         // never reached the upstream: 502
	failTimeout         // reached it, no answer in time: 504
	failBusy            // connection pool exhausted: 503
	failBroken          // bad or oversized response, reset: 502
	numFailures
)

var failureNames = [numFailures]string{"", "connect", "timeout", "busy", "broken"}

func classify(err error) failure {
	switch {
	case err == nil:
		return failNone
	case errors.Is(err, fasthttp.ErrDialTimeout):
		return failConnect
	case errors.Is(err, fasthttp.ErrTimeout):
		return failTimeout
	case errors.Is(err, fasthttp.ErrNoFreeConns):
		return failBusy
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		return failConnect
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return failTimeout
	}
	return failBroken
}

func (f failure) String() string { return failureNames[f] }

func (s poolSettings) String() string {
	return fmt.Sprintf("%s (timeout %s)", s.addr, s.timeout)
}
