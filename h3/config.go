package h3

import (
	"time"

	"github.com/valyala/fasthttp"
)

// Config bounds one listener's HTTP/3 side. Zero fields take the defaults. A QUIC
// connection reads its Server's Config once, when its first packet arrives, and keeps it
// for its whole life: Server.SetConfig changes the Config of connections that arrive
// afterwards (and the Retry threshold at once).
type Config struct {
	// MaxStreams bounds the request streams one connection may have open at once
	// (QUIC's initial_max_streams_bidi); a client cannot open more until one ends.
	// Default 100.
	MaxStreams int64

	// MaxConns bounds the QUIC connections open at once, handshaking ones included; a
	// new connection over it is refused (CONNECTION_REFUSED) before any TLS work.
	// Default 10000; negative: no bound.
	MaxConns int

	// MaxConnsPerIP bounds the connections open at once from one client IP address, as
	// MaxConns does. Default 100; negative: no bound.
	MaxConnsPerIP int

	// HandshakeTimeout bounds a handshake: it is aborted after this long without a
	// packet from the client, or twice this long in all. Default 10s.
	HandshakeTimeout time.Duration

	// IdleTimeout closes a connection that received nothing for this long (QUIC's
	// max_idle_timeout) or had no request open for this long. Default 60s.
	IdleTimeout time.Duration

	// RetryThreshold is the rate of new connections per second above which a client
	// must prove its address with a Retry round trip (RFC 9000 §8.1.2) before edge
	// keeps any state or does any TLS work for it; up to RetryThreshold connections in a
	// second (and a burst of as many) start without it. Retry packets are smaller than
	// the Initial they answer, so spoofed sources cannot make edge amplify traffic.
	// Default 1000; negative: always Retry.
	RetryThreshold int

	// EarlyData accepts 0-RTT (TLS 1.3 early data) from resuming clients. Requests that
	// arrive before the handshake completes run at once only for safe methods (GET,
	// HEAD, OPTIONS, TRACE); any other is held until the handshake completes (RFC 8470
	// §3), so a replayed 0-RTT request, whose sender cannot complete the handshake,
	// never reaches the handler. Default false: no 0-RTT.
	EarlyData bool

	// MaxBodySize bounds a request body, buffered whole before the handler runs; a
	// larger one is answered 413 {"error":"body_too_large"}. Default 4 MiB. Streamed
	// bodies (StreamRequest) are not bounded by it.
	MaxBodySize int64

	// StreamRequest picks the requests whose body is streamed to the handler rather than
	// buffered (edge: a body over MaxBodySize or of unknown length, and gRPC calls, as
	// over HTTP/1.1 and HTTP/2: proxy.StreamRequest). It sees the request's header once
	// the HEADERS frame is read; a GET or HEAD without a Content-Length is never asked
	// (HTTP/3 cannot say that HEADERS end a request, and these have no body). The handler
	// then reads ctx.Request's body stream as the DATA arrives (reqbody.go); nil: every
	// body is buffered.
	StreamRequest func(h *fasthttp.RequestHeader) bool

	// MaxHeaderBytes bounds a request's header section. Default 16 KiB.
	MaxHeaderBytes int
}

// withDefaults returns c with its zero fields set to the defaults.
func (c Config) withDefaults() Config {
	if c.MaxStreams <= 0 {
		c.MaxStreams = 100
	}
	if c.MaxConns == 0 {
		c.MaxConns = 10000
	}
	if c.MaxConnsPerIP == 0 {
		c.MaxConnsPerIP = 100
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 60 * time.Second
	}
	if c.RetryThreshold == 0 {
		c.RetryThreshold = 1000
	}
	if c.MaxBodySize <= 0 {
		c.MaxBodySize = 4 << 20
	}
	if c.MaxHeaderBytes <= 0 {
		c.MaxHeaderBytes = 16 << 10
	}
	return c
}
