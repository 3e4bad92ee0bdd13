package h3

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/quic-go/quic-go"
	"github.com/valyala/fasthttp"
	"golang.org/x/time/rate"
)

// ALPN is the TLS application protocol of HTTP/3 (RFC 9114 §3.1).
const ALPN = "h3"

// TLSConfig returns the QUIC handshake config derived from a listener's TCP one: the
// same certificates (and GetCertificate, so a certificate swap reaches both), ALPN "h3"
// only, TLS 1.3 only (RFC 9001 §4.2). c is not modified.
func TLSConfig(c *tls.Config) *tls.Config {
	q := c.Clone()
	q.NextProtos = []string{ALPN}
	q.MinVersion = tls.VersionTLS13
	return q
}

// Server serves HTTP/3 on one UDP socket: a QUIC transport, bounded as Config says,
// whose request streams run through Handler (see the package doc for the contract).
// Its methods are safe for concurrent use.
type Server struct {
	handler fasthttp.RequestHandler
	logger  fasthttp.Logger
	cfg     atomic.Pointer[Config]
	retry   *rate.Limiter

	tr *quic.Transport
	ln *quic.EarlyListener

	mu      sync.Mutex
	open    int
	perIP   map[netip.Addr]int
	conns   map[*conn]struct{} // connections being served (conn.go)
	closing bool               // Shutdown has begun

	work     chan *job     // requests for idle workers (bridge.go)
	idle     atomic.Int64  // workers waiting on work
	quit     chan struct{} // closed by Shutdown: idle workers end
	quitOnce sync.Once

	stats stats
}

// New returns a server for the UDP socket pc, which stays the caller's (Shutdown does
// not close it). base is the long-lived TLS config of the socket's handshakes: its
// GetConfigForClient returns the current config (from TLSConfig), so a reload reaches
// new handshakes; its session-ticket keys are those 0-RTT and resumption use. handler
// serves every request; logger is what ctx.Logger() writes to (nil: fasthttp's
// default). Nothing is served until Serve.
func New(pc net.PacketConn, base *tls.Config, cfg Config, handler fasthttp.RequestHandler, logger fasthttp.Logger) (*Server, error) {
	s := &Server{handler: handler, logger: logger, perIP: map[netip.Addr]int{}, conns: map[*conn]struct{}{},
		work: make(chan *job), quit: make(chan struct{})}
	c := cfg.withDefaults()
	s.cfg.Store(&c)
	s.retry = rate.NewLimiter(retryLimit(c.RetryThreshold), max(c.RetryThreshold, 0))
	s.tr = &quic.Transport{
		Conn:                pc,
		VerifySourceAddress: s.mustRetry,
		ConnContext:         s.admit,
	}
	qc := &quic.Config{GetConfigForClient: func(*quic.ClientInfo) (*quic.Config, error) {
		return s.quicConfig(), nil
	}}
	ln, err := s.tr.ListenEarly(base, qc)
	if err != nil {
		return nil, err
	}
	s.ln = ln
	return s, nil
}

func retryLimit(perSecond int) rate.Limit {
	if perSecond < 0 {
		return 0
	}
	return rate.Limit(perSecond)
}

// quicConfig is the QUIC config of a connection arriving now.
func (s *Server) quicConfig() *quic.Config {
	c := s.cfg.Load()
	return &quic.Config{
		HandshakeIdleTimeout: c.HandshakeTimeout,
		MaxIdleTimeout:       c.IdleTimeout,
		MaxIncomingStreams:   c.MaxStreams,
		Allow0RTT:            c.EarlyData,
	}
}

// SetConfig applies cfg to connections arriving from now on, and its RetryThreshold at
// once; open connections keep theirs. Header size and HTTP idle limits stay those New
// was given.
func (s *Server) SetConfig(cfg Config) {
	c := cfg.withDefaults()
	s.cfg.Store(&c)
	s.retry.SetLimit(retryLimit(c.RetryThreshold))
	s.retry.SetBurst(max(c.RetryThreshold, 0))
}

// Serve answers connections until Shutdown; it returns nil then.
func (s *Server) Serve() error {
	for {
		qc, err := s.ln.Accept(context.Background())
		if err != nil {
			if errors.Is(err, quic.ErrServerClosed) {
				return nil
			}
			return err
		}
		go s.watchHandshake(qc)
		go s.serveConn(qc)
	}
}

// Shutdown stops taking connections, sends GOAWAY on every open one and waits until
// their clients close them (as they do once their requests are answered) or ctx ends,
// then closes what is left and the transport. The
// UDP socket stays open (it is the caller's).
func (s *Server) Shutdown(ctx context.Context) error {
	s.ln.Close()
	s.mu.Lock()
	s.closing = true
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.goAway()
	}
	// Clients close a connection once its requests are answered after a GOAWAY (RFC
	// 9114 §5.2); closing it from here before that could drop answers not yet sent.
	var err error
	for _, c := range conns {
		select {
		case <-c.qc.Context().Done():
		case <-ctx.Done():
			err = ctx.Err()
		}
		if err != nil {
			break
		}
	}
	for _, c := range conns {
		c.closeWith(errNoError, "")
	}
	s.tr.Close()
	s.quitOnce.Do(func() { close(s.quit) })
	return err
}

// Addr is the UDP address served.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// mustRetry is the transport's VerifySourceAddress: called for a client's Initial
// without a valid token, it asks for a Retry once new connections come faster than
// RetryThreshold per second.
func (s *Server) mustRetry(net.Addr) bool {
	if s.retry.Allow() {
		return false
	}
	s.stats.retries.Add(1)
	return true
}

var errRefused = errors.New("h3: connection limit reached")

// admit is the transport's ConnContext: a new connection (its address validated by
// Retry, or allowed without) is counted against MaxConns and MaxConnsPerIP until it
// closes, or refused before any TLS work.
func (s *Server) admit(ctx context.Context, ci *quic.ClientInfo) (context.Context, error) {
	ip := clientIP(ci.RemoteAddr)
	c := s.cfg.Load()
	s.mu.Lock()
	if c.MaxConns >= 0 && s.open >= c.MaxConns || c.MaxConnsPerIP >= 0 && s.perIP[ip] >= c.MaxConnsPerIP {
		s.mu.Unlock()
		s.stats.refused.Add(1)
		return ctx, errRefused
	}
	s.open++
	s.perIP[ip]++
	s.mu.Unlock()
	s.stats.handshakes.Add(1)
	context.AfterFunc(ctx, func() {
		s.mu.Lock()
		s.open--
		if s.perIP[ip]--; s.perIP[ip] <= 0 {
			delete(s.perIP, ip)
		}
		s.mu.Unlock()
	})
	return ctx, nil
}

func clientIP(a net.Addr) netip.Addr {
	if ua, ok := a.(*net.UDPAddr); ok {
		ip, _ := netip.AddrFromSlice(ua.IP)
		return ip.Unmap()
	}
	return netip.Addr{}
}

// watchHandshake counts c's handshake once it completed or the connection ended. A
// connection that completed its handshake and ended at once (a client that asked one
// thing and left) has both channels ready, and select picks either: the handshake is
// checked again, so that only one that never completed counts as failed.
func (s *Server) watchHandshake(c *quic.Conn) {
	select {
	case <-c.HandshakeComplete():
	case <-c.Context().Done():
		if !handshakeDone(c) {
			s.stats.handshakesFailed.Add(1)
			return
		}
	}
	s.stats.handshakesOK.Add(1)
	if c.ConnectionState().Used0RTT {
		s.stats.early.Add(1)
	}
}

// Stats are a server's counts since New.
type Stats struct {
	ConnsOpen        int    // QUIC connections open now, handshaking included
	Handshakes       uint64 // connections started: admitted past the limits
	HandshakesOK     uint64 // handshakes completed
	HandshakesFailed uint64 // handshakes that failed or timed out after the ClientHello
	Refused          uint64 // connections refused over MaxConns or MaxConnsPerIP
	Retries          uint64 // Initials answered with Retry (address validation asked)
	EarlyConns       uint64 // connections that used 0-RTT
	EarlyHeld        uint64 // unsafe requests received in 0-RTT, held until the handshake completed
	EarlyDropped     uint64 // of those, dropped because the handshake never completed
	Requests         uint64 // requests handed to the handler
}

type stats struct {
	handshakes, handshakesOK, handshakesFailed, refused, retries atomic.Uint64
	early, earlyHeld, earlyDropped, requests                     atomic.Uint64
}

// Stats returns the server's counts.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	open := s.open
	s.mu.Unlock()
	return Stats{ConnsOpen: open, Handshakes: s.stats.handshakes.Load(), HandshakesOK: s.stats.handshakesOK.Load(),
		HandshakesFailed: s.stats.handshakesFailed.Load(), Refused: s.stats.refused.Load(), Retries: s.stats.retries.Load(),
		EarlyConns: s.stats.early.Load(), EarlyHeld: s.stats.earlyHeld.Load(), EarlyDropped: s.stats.earlyDropped.Load(),
		Requests: s.stats.requests.Load()}
}
