package proxy

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

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
}

// server is one upstream address with its keep-alive pool. It outlives snapshots:
// the registry hands the same *server to every snapshot whose settings match.
type server struct {
	addr string
	hc   *fasthttp.HostClient
	refs int // snapshots using it; guarded by registry.mu
}

// registry keeps upstream servers (and their connection pools) across reloads,
// keyed by identity: address plus settings.
type registry struct {
	mu      sync.Mutex
	servers map[poolSettings]*server
}

func newRegistry() *registry {
	return &registry{servers: map[poolSettings]*server{}}
}

// acquire returns the server for s, creating it when new. Each acquire is matched
// by one release when the snapshot holding it is retired.
func (r *registry) acquire(s poolSettings) *server {
	r.mu.Lock()
	defer r.mu.Unlock()
	srv := r.servers[s]
	if srv == nil {
		srv = &server{addr: s.addr, hc: newHostClient(s)}
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
	}
}

func newHostClient(s poolSettings) *fasthttp.HostClient {
	dialer := &fasthttp.TCPDialer{Concurrency: 0, DNSCacheDuration: time.Minute}
	connect := s.connectTimeout
	return &fasthttp.HostClient{
		Addr: s.addr,
		Dial: func(addr string) (net.Conn, error) {
			return dialer.DialTimeout(addr, connect)
		},
		MaxConns:                      s.maxConns,
		MaxConnWaitTimeout:            s.timeout,
		MaxIdleConnDuration:           s.keepalive,
		ReadTimeout:                   s.timeout,
		WriteTimeout:                  s.timeout,
		MaxResponseBodySize:           int(s.maxResponseSize),
		ReadBufferSize:                16 << 10,
		WriteBufferSize:               8 << 10,
		NoDefaultUserAgentHeader:      true,
		DisablePathNormalizing:        true,
		DisableHeaderNamesNormalizing: false,
		// A stale keep-alive connection closed by the origin is retried once on a
		// fresh one for idempotent requests only; fasthttp never retries a POST.
		MaxIdemponentCallAttempts: 2,
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
}

// pick returns the next server round robin.
func (p *pool) pick() *server {
	if len(p.servers) == 1 {
		return p.servers[0]
	}
	n := p.next.Add(1)
	return p.servers[n%uint32(len(p.servers))]
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
