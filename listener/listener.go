// Package listener owns edge's client-facing sockets. A Listener is one configured
// address; it outlives configs (a reload that keeps the address keeps the socket and
// every open connection) and dispatches each connection to the protocol it speaks:
//
//   - plain HTTP/1.1: straight to a fasthttp server, over raw socket calls (package
//     rawsock) watched for stalls (package watchdog), exactly as before listeners existed;
//   - TLS: the handshake runs in the connection's own goroutine under handshake_timeout,
//     with the listener's current *tls.Config (swapped by a reload, so new handshakes get
//     new certificates and open connections go on); ALPN "h2" goes to the HTTP/2 server
//     (package h2), anything else to the fasthttp server;
//   - h2c: the first bytes tell HTTP/2's prior-knowledge preface from HTTP/1.1, never an
//     Upgrade header;
//   - h3 (TLS listeners with "h3" in their protocols): a UDP socket at the same address
//     served by package h3 (QUIC), kept across reloads like the TCP one; the TCP
//     answers then carry Alt-Svc: h3=":PORT"; ma=86400, so that browsers switch.
//
// A Set holds the listeners of a running edge keyed by address and applies a config's
// specs in two steps, Prepare (bind new addresses; nothing else changes) and Commit
// (start, update, drain removed ones), so that a reload whose other parts fail leaves
// the running listeners as they were.
package listener

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edge-gw/edge/h2"
	"github.com/edge-gw/edge/h3"
	"github.com/edge-gw/edge/handover"
	"github.com/edge-gw/edge/proxyproto"
	"github.com/edge-gw/edge/rawsock"
	"github.com/edge-gw/edge/tlsstore"
	"github.com/edge-gw/edge/watchdog"
	"github.com/valyala/fasthttp"
)

// Spec is what one listener should be under one config. A reload passes a new Spec
// for an address that stays: everything in it applies to new connections and new
// requests at once (H2Config to new HTTP/2 connections), except NewHTTP1 and
// Timeouts, which a listener takes when it is created.
type Spec struct {
	Name    string
	Address string // "host:port" as configured: the listener's identity across reloads

	// Protocols is what the listener serves, as configured ("http/1.1", "h2", "h2c").
	Protocols []string
	// TLS is the config of new handshakes; nil: plain TCP. Its NextProtos is the ALPN
	// offer. Session tickets come from the listener's long-lived base config, so
	// resumption survives reloads.
	TLS *tls.Config
	// Certs are the certificates TLS serves from files, for GET /listeners and the expiry
	// metric (nil: none).
	Certs *tlsstore.Certs
	// ACME lists the certificates an ACME manager serves on the listener, for the same
	// (nil: no acme block).
	ACME func() []tlsstore.Info

	// HandshakeTimeout bounds a TLS handshake, or h2c's look at the first bytes.
	HandshakeTimeout time.Duration
	// MaxConns bounds the connections open at once (HTTP/1.1, HTTP/2 and handshaking);
	// one over it is closed at accept.
	MaxConns int

	Handler   fasthttp.RequestHandler // HTTP/1.1 requests
	H2Handler fasthttp.RequestHandler // HTTP/2 streams
	H3Handler fasthttp.RequestHandler // HTTP/3 requests (TLS with "h3" in Protocols)

	NewHTTP1 func() *fasthttp.Server // the HTTP/1.1 server: bounds, error handler
	Timeouts watchdog.Timeouts       // HTTP/1.1 read, idle and write limits
	H2Config h2.Config               // HTTP/2 bounds
	H3Config h3.Config               // HTTP/3 bounds, for connections arriving from now on

	h3TLS *tls.Config // TLS of QUIC handshakes, derived from TLS by Prepare

	// ProxyProtocol: each connection starts with a PROXY protocol header (v1 or v2),
	// read under HandshakeTimeout before anything else, TLS included, and only from a
	// peer in Trusted: any other peer is closed before a byte is read. The header's
	// client address is the connection's RemoteAddr from then on.
	ProxyProtocol bool
	Trusted       []netip.Prefix
}

// certList lists the certificates the listener serves: its files' and ACME's.
func (sp *Spec) certList() []tlsstore.Info {
	var out []tlsstore.Info
	if sp.Certs != nil {
		out = sp.Certs.List()
	}
	if sp.ACME != nil {
		out = append(out, sp.ACME()...)
	}
	return out
}

func (sp *Spec) serves(proto string) bool {
	for _, p := range sp.Protocols {
		if p == proto {
			return true
		}
	}
	return false
}

// Listener is one bound address and what serves its connections.
type Listener struct {
	ln   net.Listener
	spec atomic.Pointer[Spec]
	m    *Metrics

	h1   *fasthttp.Server
	wd   *watchdog.Listener
	q    *queue
	h2   *h2.Server
	base *tls.Config              // long-lived: session ticket keys; GetConfigForClient returns spec.TLS
	quic atomic.Pointer[quicSide] // the HTTP/3 side while one serves; nil: none

	handshaking atomic.Int64 // connections in the handshake or the h2c look
	stats       stats

	done    chan struct{} // closed when the listener stops accepting
	served  sync.WaitGroup
	workers sync.WaitGroup // accept loop and per-connection goroutines
}

// bind opens sp's address; nothing is served until start.
func bind(sp *Spec, m *Metrics, tickets *tlsstore.Tickets) (*Listener, error) {
	ln, err := handover.Listen("listener "+key(sp), sp.Address)
	if err != nil {
		return nil, err
	}
	l := &Listener{ln: ln, m: m, done: make(chan struct{})}
	l.spec.Store(sp)
	l.base = &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		return l.spec.Load().TLS, nil
	}}
	if tickets != nil {
		tickets.Register(l.base)
	}
	l.q = &queue{addr: ln.Addr(), conns: make(chan net.Conn), done: make(chan struct{})}
	l.wd = watchdog.Listen(l.q, sp.Timeouts)
	l.h1 = sp.NewHTTP1()
	l.h1.Handler = func(ctx *fasthttp.RequestCtx) { l.spec.Load().Handler(ctx); l.advertise(ctx) }
	l.h2 = &h2.Server{Config: sp.H2Config, Handler: func(ctx *fasthttp.RequestCtx) { l.spec.Load().H2Handler(ctx); l.advertise(ctx) }}
	return l, nil
}

// start serves the listener until it is drained.
func (l *Listener) start(log *slog.Logger) {
	l.served.Add(1)
	go func() {
		defer l.served.Done()
		if err := l.h1.Serve(l.wd); err != nil {
			log.Error("listener: HTTP/1.1 server stopped", "listener", l.spec.Load().Name, "error", err)
		}
	}()
	l.workers.Add(1)
	go l.accept(log)
}

// Addr is the bound address (the real port when the configured one was 0).
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

func (l *Listener) accept(log *slog.Logger) {
	defer l.workers.Done()
	var delay time.Duration
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of descriptors or the like: back off as net/http does, never spin.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			log.Warn("listener: accept failed", "listener", l.spec.Load().Name, "error", err, "retry_in", delay)
			select {
			case <-time.After(delay):
			case <-l.done:
				return
			}
			continue
		}
		delay = 0
		l.stats.accepted.Add(1)
		sp := l.spec.Load()
		if sp.MaxConns > 0 && l.Open() >= int64(sp.MaxConns) {
			l.stats.refused.Add(1)
			c.Close()
			continue
		}
		if sp.TLS == nil && !sp.serves(h2c) && !sp.ProxyProtocol {
			l.q.put(rawsock.Wrap(c)) // the plain path: no goroutine of ours per connection
			continue
		}
		l.handshaking.Add(1)
		l.workers.Add(1)
		go l.dispatch(rawsock.Wrap(c), sp)
	}
}

const h2c = "h2c"

// acmeTLSALPN is the protocol of ACME's TLS-ALPN-01 challenge (RFC 8737): a listener
// whose TLS config offers it answers the challenge in the handshake and then closes.
const acmeTLSALPN = "acme-tls/1"

// proxyHeader reads the PROXY header of a connection from a trusted peer; a peer not
// trusted gets an error before a byte is read.
func (l *Listener) proxyHeader(c net.Conn, sp *Spec) (net.Conn, error) {
	peer := netip.Addr{}
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		peer, _ = netip.AddrFromSlice(a.IP)
		peer = peer.Unmap()
	}
	if !slices.ContainsFunc(sp.Trusted, func(p netip.Prefix) bool { return p.Contains(peer) }) {
		l.stats.proxyRefused.Add(1)
		return nil, errUntrusted
	}
	pc, err := proxyproto.Read(c, proxyproto.Options{Timeout: sp.HandshakeTimeout})
	if err != nil {
		l.stats.proxyRefused.Add(1)
		return nil, err
	}
	return pc, nil
}

var errUntrusted = errors.New("listener: a PROXY header from a peer not in trusted_proxies")

// dispatch finds out what a TLS or h2c connection speaks and hands it on.
func (l *Listener) dispatch(c net.Conn, sp *Spec) {
	defer l.workers.Done()
	if sp.ProxyProtocol {
		pc, err := l.proxyHeader(c, sp)
		if err != nil {
			l.handshaking.Add(-1)
			c.Close()
			return
		}
		c = pc
	}
	c.SetDeadline(time.Now().Add(sp.HandshakeTimeout))
	var isH2 bool
	if sp.TLS != nil {
		tc := tls.Server(c, l.base)
		err := tc.HandshakeContext(context.Background())
		st := tc.ConnectionState()
		l.m.handshake(sp.Name, st.Version, err)
		if err != nil {
			l.handshaking.Add(-1)
			c.Close()
			return
		}
		if st.NegotiatedProtocol == acmeTLSALPN {
			// A TLS-ALPN-01 validation: the handshake was the answer (RFC 8737 §3).
			l.handshaking.Add(-1)
			tc.Close()
			return
		}
		isH2 = st.NegotiatedProtocol == "h2"
		c = tc
	} else {
		pc, preface, err := sniff(c)
		if err != nil {
			l.handshaking.Add(-1)
			c.Close()
			return
		}
		isH2, c = preface, pc
	}
	c.SetDeadline(time.Time{})
	l.handshaking.Add(-1)
	switch {
	case isH2:
		l.h2.ServeConn(c)
	case sp.serves("http/1.1"):
		l.q.put(c)
	default: // h2c only, and the client spoke something else
		c.Close()
	}
}

// sniff reads until the bytes read either are the HTTP/2 client preface or cannot
// become it, and returns a conn that replays them.
func sniff(c net.Conn) (net.Conn, bool, error) {
	buf := make([]byte, len(h2.ClientPreface))
	n := 0
	for n < len(buf) {
		k, err := c.Read(buf[n:])
		n += k
		if string(buf[:n]) != h2.ClientPreface[:n] {
			return &replay{Conn: c, buf: buf[:n]}, false, nil
		}
		if err != nil {
			if n > 0 && err == io.EOF {
				return &replay{Conn: c, buf: buf[:n]}, false, nil
			}
			return nil, false, err
		}
	}
	return &replay{Conn: c, buf: buf}, true, nil
}

// replay is a conn whose first reads return bytes already read from it.
type replay struct {
	net.Conn
	buf []byte
}

func (r *replay) Read(p []byte) (int, error) {
	if len(r.buf) > 0 {
		n := copy(p, r.buf)
		r.buf = r.buf[n:]
		return n, nil
	}
	return r.Conn.Read(p)
}

// Open is the number of connections open now: HTTP/1.1, HTTP/2 and handshaking.
func (l *Listener) Open() int64 {
	return int64(l.wd.Watched()) + l.handshaking.Load() + int64(l.h2.Stats().ConnsOpen)
}

// drain stops accepting, lets requests and streams in flight finish until ctx ends
// (HTTP/2 and HTTP/3 clients get GOAWAY), then closes what is left.
func (l *Listener) drain(ctx context.Context, tickets *tlsstore.Tickets) error {
	close(l.done)
	l.ln.Close()
	var wg sync.WaitGroup
	var err1, err2, err3 error
	wg.Add(2)
	go func() { defer wg.Done(); err1 = l.h1.ShutdownWithContext(ctx) }()
	go func() { defer wg.Done(); err2 = l.h2.Shutdown(ctx) }()
	if q := l.quic.Swap(nil); q != nil {
		wg.Add(1)
		go func() { defer wg.Done(); err3 = q.drain(ctx, tickets) }()
	}
	wg.Wait()
	l.workers.Wait()
	l.served.Wait()
	return errors.Join(err1, err2, err3)
}

// queue is the net.Listener the fasthttp server accepts from: connections handed on
// by the accept loop (plain) or by dispatch (after TLS or the h2c look).
type queue struct {
	addr  net.Addr
	conns chan net.Conn
	once  sync.Once
	done  chan struct{}
}

func (q *queue) put(c net.Conn) {
	select {
	case q.conns <- c:
	case <-q.done:
		c.Close()
	}
}

func (q *queue) Accept() (net.Conn, error) {
	select {
	case c := <-q.conns:
		return c, nil
	case <-q.done:
		return nil, net.ErrClosed
	}
}

func (q *queue) Close() error {
	q.once.Do(func() { close(q.done) })
	return nil
}

func (q *queue) Addr() net.Addr { return q.addr }

type stats struct {
	accepted atomic.Uint64 // connections accepted
	refused  atomic.Uint64 // closed at accept: over MaxConns

	proxyRefused atomic.Uint64 // closed for their PROXY header: untrusted peer, malformed or slow
}
