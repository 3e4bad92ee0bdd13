package h2

import (
	"math"
	"time"

	"github.com/valyala/fasthttp"
)

// Config bounds one listener's HTTP/2 connections. Zero fields take the defaults. A
// connection reads its Server's Config once, when it is accepted, and keeps it for its
// whole life: Server.SetConfig changes the Config of the connections accepted afterwards.
type Config struct {
	// MaxConcurrentStreams is advertised in SETTINGS and bounds the streams of one
	// connection that are open, whose handler still runs or whose body stream is still
	// being sent (a stream reset by the client counts until its handler returns and a
	// Read of its body stream in progress returns); a streamed request body
	// (StreamRequest) holds its stream's slot until the answer is done too.
	// Streams beyond it get RST_STREAM(REFUSED_STREAM). Default 128.
	MaxConcurrentStreams uint32

	// MaxHeaderListSize is the RFC 9113 header list size (name+value+32 per field) a
	// request may have; it is advertised in SETTINGS. A request over it is answered 431
	// {"error":"header_too_large"}. A header block (HEADERS plus CONTINUATION bytes) longer
	// than MaxHeaderListSize gets GOAWAY(ENHANCE_YOUR_CALM) and the connection is closed:
	// this is the CONTINUATION-flood cut (CVE-2024-27316). Default 16 KiB.
	MaxHeaderListSize uint32

	// InitialWindowSize is the per-stream receive window advertised. Default 256 KiB;
	// at most 2^31-1.
	InitialWindowSize uint32

	// ConnWindowSize is the connection receive window. Default 1 MiB; at least 65535.
	ConnWindowSize uint32

	// MaxFrameSize is the largest frame accepted and advertised; a larger frame gets
	// GOAWAY(FRAME_SIZE_ERROR). Default 16 KiB; clamped to [16 KiB, 16 MiB-1].
	MaxFrameSize uint32

	// MaxBodySize bounds a request body (edge's max_body_size). A larger body (declared
	// by content-length or received) is answered 413 {"error":"body_too_large"} and the
	// stream is reset. Bodies are buffered whole before the handler runs, except the
	// streamed ones (StreamRequest), which it does not bound. Default 4 MiB.
	MaxBodySize int64

	// MaxConnBodyBuffer bounds the request-body bytes one connection buffers for streams
	// whose handler has not started yet (bytes are released when the handler starts or
	// the stream ends). While the connection is at or over it, h2 stops returning
	// connection flow-control window (WINDOW_UPDATE on stream 0), so the client waits
	// instead of edge's memory growing: the bytes buffered stay below MaxConnBodyBuffer +
	// ConnWindowSize. A stream that cannot complete its body because others hold the
	// budget ends by ReadTimeout (408), which releases its bytes.
	//
	// Default max(2×MaxBodySize, ConnWindowSize) (8 MiB with the defaults): two uploads
	// of MaxBodySize may arrive side by side, and a small MaxBodySize does not throttle a
	// connection below its window. A value below MaxBodySize is raised to it, so that one
	// stream with a body of MaxBodySize always completes: window is returned while the
	// connection buffers less than the budget, and a lone stream still receiving its body
	// buffers less than MaxBodySize.
	MaxConnBodyBuffer int64

	// ReadTimeout bounds the time from a stream's HEADERS to its END_STREAM. A stream over
	// it is answered 408 {"error":"request_timeout"}, then the connection gets GOAWAY and
	// is closed once its other streams finish. For a streamed request body
	// (StreamRequest) it bounds instead each wait for the next DATA frame (from HEADERS,
	// then from each DATA to the next, until END_STREAM): a body that long sends
	// nothing fails its Read with ErrBodyTimeout and the stream is reset with CANCEL,
	// without GOAWAY; a long body that keeps coming is never cut. It also bounds the arrival of the client
	// preface and first SETTINGS. Default 10s; negative: no bound.
	ReadTimeout time.Duration

	// WriteTimeout bounds each write to the connection and each wait of a response for
	// the peer's flow-control window; beyond it the connection is closed. It is not a
	// bound on a whole response: a streamed body is sent for as long as it is read, with
	// each piece bounded. Default 30s; negative: no bound.
	WriteTimeout time.Duration

	// IdleTimeout closes a connection without open streams for this long, after
	// GOAWAY(NO_ERROR). A stream whose response is still being sent is open, however
	// long its body stream stays quiet. Default 60s; negative: never.
	IdleTimeout time.Duration

	// PingInterval: when nothing was received for this long while streams are open, a
	// PING is sent. Default 15s; negative: no PINGs.
	PingInterval time.Duration

	// PingTimeout closes the connection when a PING we sent is not acknowledged within it.
	// Default 15s.
	PingTimeout time.Duration

	// StreamRequest says which requests have their body streamed to the handler instead
	// of buffered whole: it is called on the connection's reader with the request's
	// headers (pseudo-headers applied, valid only during the call) once they arrived
	// without END_STREAM. When it returns true the handler runs at once, with
	// ctx.Request's body stream (SetBodyStream, size content-length or -1) yielding the
	// DATA as it arrives, io.EOF at END_STREAM, or an error (ErrBodyReset,
	// ErrBodyTimeout, ErrBodyConnClosed, ErrBodyClosed) when the stream or the connection
	// ends first. The body may still be read after the handler returned, by whatever
	// ties it to the response (a proxy's upstream exchange, whose body stream is the
	// response's): full duplex. MaxBodySize does not apply to it; ReadTimeout becomes an
	// idle limit between DATA frames. See the package doc, Streamed request bodies.
	// nil: never (every body is buffered). It is called for every request with a body:
	// it must be quick and must not keep h.
	StreamRequest func(h *fasthttp.RequestHeader) bool

	// MaxControlFrames is the per-connection budget of "glitches": a client RST_STREAM on
	// a stream not yet answered, a refused stream, an empty DATA frame without END_STREAM,
	// an empty CONTINUATION frame, a WINDOW_UPDATE of 0 on a stream, and each SETTINGS and
	// PING beyond the first 4 per second cost one. The budget refills at
	// MaxControlFrames/10 per second; when it is spent the connection gets
	// GOAWAY(ENHANCE_YOUR_CALM) and is closed. Default 1000.
	MaxControlFrames int
}

// Defaults of Config.
const (
	DefaultMaxConcurrentStreams = 128
	DefaultMaxHeaderListSize    = 16 << 10
	DefaultInitialWindowSize    = 256 << 10
	DefaultConnWindowSize       = 1 << 20
	DefaultMaxFrameSize         = 16 << 10
	DefaultMaxBodySize          = 4 << 20
	DefaultReadTimeout          = 10 * time.Second
	DefaultWriteTimeout         = 30 * time.Second
	DefaultIdleTimeout          = 60 * time.Second
	DefaultPingInterval         = 15 * time.Second
	DefaultPingTimeout          = 15 * time.Second
	DefaultMaxControlFrames     = 1000
)

const (
	minFrameSize  = 16 << 10
	maxFrameSize  = 1<<24 - 1
	maxWindow     = 1<<31 - 1
	defaultWindow = 65535
)

// resolved returns cfg with defaults applied and values clamped to what RFC 9113 allows.
func (cfg Config) resolved() Config {
	if cfg.MaxConcurrentStreams == 0 {
		cfg.MaxConcurrentStreams = DefaultMaxConcurrentStreams
	}
	if cfg.MaxHeaderListSize == 0 {
		cfg.MaxHeaderListSize = DefaultMaxHeaderListSize
	}
	if cfg.InitialWindowSize == 0 {
		cfg.InitialWindowSize = DefaultInitialWindowSize
	}
	cfg.InitialWindowSize = min(cfg.InitialWindowSize, maxWindow)
	if cfg.ConnWindowSize == 0 {
		cfg.ConnWindowSize = DefaultConnWindowSize
	}
	cfg.ConnWindowSize = min(max(cfg.ConnWindowSize, defaultWindow), maxWindow)
	if cfg.MaxFrameSize == 0 {
		cfg.MaxFrameSize = DefaultMaxFrameSize
	}
	cfg.MaxFrameSize = min(max(cfg.MaxFrameSize, minFrameSize), maxFrameSize)
	if cfg.MaxBodySize <= 0 {
		cfg.MaxBodySize = DefaultMaxBodySize
	}
	if cfg.MaxConnBodyBuffer <= 0 {
		cfg.MaxConnBodyBuffer = max(2*min(cfg.MaxBodySize, math.MaxInt64/2), int64(cfg.ConnWindowSize))
	}
	cfg.MaxConnBodyBuffer = max(cfg.MaxConnBodyBuffer, cfg.MaxBodySize)
	if cfg.ReadTimeout == 0 {
		cfg.ReadTimeout = DefaultReadTimeout
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.PingInterval == 0 {
		cfg.PingInterval = DefaultPingInterval
	}
	if cfg.PingTimeout <= 0 {
		cfg.PingTimeout = DefaultPingTimeout
	}
	if cfg.MaxControlFrames <= 0 {
		cfg.MaxControlFrames = DefaultMaxControlFrames
	}
	return cfg
}
