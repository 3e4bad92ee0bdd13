package h2

import (
	"context"
	"errors"
	"log"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/net/http2"
)

// ClientPreface is what an HTTP/2 client sends first (RFC 9113 §3.4).
const ClientPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// Errors ServeConn returns besides the connection's own I/O errors.
var (
	// ErrBadPreface: the connection did not start with ClientPreface.
	ErrBadPreface = errors.New("h2: bad client preface")
	// ErrGoAway: the connection was closed after a GOAWAY with an error code (a protocol
	// error or abuse); Stats says which.
	ErrGoAway = errors.New("h2: connection closed after GOAWAY with an error")
	// ErrTimeout: the connection was closed because the peer did not read, answer a
	// PING or send its preface in time.
	ErrTimeout = errors.New("h2: connection timed out")
)

// Reason says why a GOAWAY was sent; it indexes Stats.GoAwayByReason.
type Reason uint8

// Reasons for a GOAWAY.
const (
	ReasonRapidReset        Reason = iota // glitch budget spent by resets and refused streams
	ReasonControlFlood                    // glitch budget spent by SETTINGS, PING, empty frames
	ReasonContinuationFlood               // header block longer than MaxHeaderListSize
	ReasonBodyTimeout                     // a stream's request did not arrive within ReadTimeout
	ReasonPingTimeout                     // our PING was not acknowledged within PingTimeout
	ReasonIdle                            // no stream for IdleTimeout
	ReasonProtocol                        // a connection error of RFC 9113 (PROTOCOL_ERROR, …)
	ReasonShutdown                        // Server.Shutdown
	NumReasons                            // the number of reasons
)

var reasonNames = [NumReasons]string{"rapid_reset", "control_flood", "continuation_flood",
	"body_timeout", "ping_timeout", "idle", "protocol", "shutdown"}

// String returns the metric label of r, e.g. "rapid_reset".
func (r Reason) String() string {
	if r < NumReasons {
		return reasonNames[r]
	}
	return "unknown"
}

// NumErrCodes is the number of RFC 9113 error codes; Stats.GoAwayByCode has one counter each.
const NumErrCodes = int(http2.ErrCodeHTTP11Required) + 1

// Stats are a Server's counters since it was created, read with atomic loads (each
// counter is exact; the set is not one snapshot).
type Stats struct {
	ConnsOpen      int64              // connections being served
	ConnsTotal     uint64             // connections accepted by ServeConn
	StreamsTotal   uint64             // streams opened (refused ones not included)
	StreamsActive  int64              // streams open or with a handler still running
	StreamsRefused uint64             // streams answered RST_STREAM(REFUSED_STREAM)
	ResetsReceived uint64             // RST_STREAM frames received from clients
	HandlerRuns    uint64             // handler calls
	GoAwayByReason [NumReasons]uint64 // GOAWAYs sent, by Reason
	GoAwayByCode   [NumErrCodes]uint64
}

type counters struct {
	connsOpen      atomic.Int64
	connsTotal     atomic.Uint64
	streamsTotal   atomic.Uint64
	streamsActive  atomic.Int64
	streamsRefused atomic.Uint64
	resetsReceived atomic.Uint64
	handlerRuns    atomic.Uint64
	goAwayReason   [NumReasons]atomic.Uint64
	goAwayCode     [NumErrCodes]atomic.Uint64
}

// Server serves HTTP/2 connections, running every stream through Handler as a
// *fasthttp.RequestCtx, so HTTP/2 clients get the answers HTTP/1.1 clients get.
//
// A Server is safe for concurrent use: ServeConn is called once per accepted connection,
// from any number of goroutines. Its fields must be set before the first ServeConn and
// not changed afterwards; a Server lives as long as its listener, across config reloads,
// and SetConfig changes the Config of the connections accepted after it.
type Server struct {
	// Handler is called once per request, concurrently across streams: after END_STREAM
	// with the body buffered, or as soon as the headers arrived for a request whose body
	// streams (Config.StreamRequest). ctx follows fasthttp's rules: it and every slice
	// taken from it are valid only until Handler returns; the exception is what the
	// response's body stream ties to it (a streamed request body read by that stream,
	// ctx.Response's trailers set by it), valid until that stream is closed. ctx.Request's
	// protocol stays "HTTP/1.1", so a proxying handler forwards HTTP/1.1 upstream;
	// ctx.RemoteAddr/LocalAddr are the connection's. ctx.Hijack is not supported (the
	// hijack handler is never called). A body stream left in ctx.Response (SetBodyStream)
	// is sent as it is read and closed once done, followed by the trailers declared with
	// AddTrailer: see the package doc, Streamed response bodies and Trailers.
	Handler fasthttp.RequestHandler

	// Config bounds the connections; zero fields take the defaults. It is the initial
	// config: once SetConfig was called, the config SetConfig was given is used instead.
	Config Config

	// Logger is what ctx.Logger() writes to. Default: the standard logger to stderr.
	Logger fasthttp.Logger

	once     sync.Once
	cfg      atomic.Pointer[Config] // resolved; immutable once stored, loaded once per connection
	logger   fasthttp.Logger
	mu       sync.Mutex
	conns    map[*conn]struct{}
	shutdown atomic.Bool
	stats    counters
}

func (s *Server) init() {
	s.once.Do(func() {
		cfg := s.Config.resolved()
		s.cfg.Store(&cfg)
		s.logger = s.Logger
		if s.logger == nil {
			s.logger = log.New(os.Stderr, "h2: ", log.LstdFlags)
		}
		s.conns = make(map[*conn]struct{})
	})
}

// ServeConn serves one HTTP/2 connection and blocks until it is done: c is positioned at
// the client preface (after TLS with ALPN "h2", or h2c with prior knowledge). c is closed
// on return, and every goroutine ServeConn started has ended. It returns nil when the
// connection ended normally (the client closed it, or a graceful GOAWAY), otherwise why
// it was closed.
func (s *Server) ServeConn(c net.Conn) error {
	s.init()
	cn := newConn(s, c)
	return cn.serve()
}

// SetConfig makes the connections accepted from now on use cfg (zero fields take the
// defaults), superseding Server.Config; connections already open keep the config they
// started with until they end. It is how a reload changes a listener's HTTP/2 bounds
// without a new Server (Stats and Shutdown keep covering every connection). Safe to call
// concurrently with ServeConn and with itself: the last call wins.
func (s *Server) SetConfig(cfg Config) {
	s.init()
	r := cfg.resolved()
	s.cfg.Store(&r)
}

func (s *Server) track(c *conn, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.shutdown.Load() {
			return false
		}
		s.conns[c] = struct{}{}
		return true
	}
	delete(s.conns, c)
	return true
}

// Shutdown stops s gracefully: every connection gets GOAWAY(last stream id, NO_ERROR),
// new streams are refused, streams in flight finish, then the connections close.
// Connections that arrive afterwards get GOAWAY at once. When ctx ends first, the
// remaining connections are closed (handlers still running are not waited for) and
// ctx.Err() is returned. Shutdown may be called more than once.
func (s *Server) Shutdown(ctx context.Context) error {
	s.init()
	s.shutdown.Store(true)
	s.mu.Lock()
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.goAway(http2.ErrCodeNo, ReasonShutdown)
	}
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		s.mu.Lock()
		n := len(s.conns)
		s.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			s.mu.Lock()
			for c := range s.conns {
				c.nc.Close()
			}
			s.mu.Unlock()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Stats returns s's counters. It does not allocate.
func (s *Server) Stats() Stats {
	st := &s.stats
	out := Stats{
		ConnsOpen:      st.connsOpen.Load(),
		ConnsTotal:     st.connsTotal.Load(),
		StreamsTotal:   st.streamsTotal.Load(),
		StreamsActive:  st.streamsActive.Load(),
		StreamsRefused: st.streamsRefused.Load(),
		ResetsReceived: st.resetsReceived.Load(),
		HandlerRuns:    st.handlerRuns.Load(),
	}
	for i := range out.GoAwayByReason {
		out.GoAwayByReason[i] = st.goAwayReason[i].Load()
	}
	for i := range out.GoAwayByCode {
		out.GoAwayByCode[i] = st.goAwayCode[i].Load()
	}
	return out
}
