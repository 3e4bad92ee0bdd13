// Package h2up is edge's HTTP/2 client to upstreams: it sends a fasthttp.Request to one
// upstream server over HTTP/2 (h2c by prior knowledge, or TLS with ALPN "h2") and fills a
// fasthttp.Response whose body streams back as the DATA frames arrive, with the upstream's
// trailers at its end. It exists for gRPC (unary, client-, server- and bidirectional
// streaming calls pass through with grpc-status and grpc-message intact, and grpc-timeout
// bounds the exchange) and serves any HTTP/2-only upstream the same way.
//
// The HTTP/2 protocol work is net/http's Transport (Protocols set to HTTP/2 only), not
// edge's own: h2up translates between fasthttp's types and net/http's, and pins the
// Transport to one address, one TLS name and no surprises (no proxy from the
// environment, no transparent gzip, no default User-Agent).
//
// # Cost
//
// A request through h2up allocates (net/http's Request, header map, stream state and
// goroutine, the Exchange): the zero-allocation rule of the HTTP/1.1 path does not hold
// here and is not attempted. The helpers (GRPCTimeout, IsGRPC, WriteStatus, Classify of
// this package's errors, Exchange.Trailers) do not allocate, so the HTTP/1.1 path may
// use them.
//
// The package imports no edge package.
package h2up

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// Options configures a Client. Only Addr is required.
type Options struct {
	// Addr is the upstream's host:port; every connection is dialed to it, whatever
	// the request's Host.
	Addr string
	// TLS speaks h2 over TLS (ALPN "h2", which the server must select); false speaks
	// h2c: cleartext HTTP/2 with prior knowledge, as gRPC servers accept.
	TLS bool
	// ServerName is the TLS SNI and the name the upstream's certificate is verified
	// against. Empty means Addr's host (an IP address is then verified as an IP SAN).
	ServerName string
	// RootCAs verify the upstream's certificate. nil means the system roots.
	RootCAs *x509.CertPool
	// ConnectTimeout bounds the TCP dial plus the TLS handshake of one connection.
	// Zero means 5s.
	ConnectTimeout time.Duration
	// MaxConns caps the connections to Addr (net/http's MaxConnsPerHost); a request
	// past it waits for one. Zero means no cap: a new connection opens when every open
	// one carries as many streams as the server allows (SETTINGS_MAX_CONCURRENT_STREAMS).
	MaxConns int
	// StrictMaxStreams makes a request wait for a free stream on an open connection
	// instead of dialing another one when all are at the server's stream limit.
	// False (the default) dials.
	StrictMaxStreams bool
	// IdleConnTimeout closes a connection that has carried no stream for that long.
	// Zero means 90s.
	IdleConnTimeout time.Duration
	// PingInterval sends a PING on a connection that received no frame for that long,
	// and closes the connection if the answer does not come within 15s, so a dead peer
	// is noticed without waiting for TCP. Zero means no health PINGs.
	PingInterval time.Duration
}

const (
	defaultConnectTimeout  = 5 * time.Second
	defaultIdleConnTimeout = 90 * time.Second
)

// Client sends requests to one upstream server over HTTP/2 (h2c by prior knowledge, or
// TLS with ALPN h2 and the server name given), reusing connections: concurrent requests
// are multiplexed as streams of a connection. It is safe for concurrent use and holds
// nothing of a config: the proxy keeps one per address + Options and reuses it across
// reloads, calling Close when no config uses it any more.
type Client struct {
	addr   string
	scheme string // "http" (h2c) or "https"
	tr     *http.Transport
	closed atomic.Bool
}

// New returns a Client for o. It dials nothing yet: the first Do does.
func New(o Options) *Client {
	connectTimeout := o.ConnectTimeout
	if connectTimeout <= 0 {
		connectTimeout = defaultConnectTimeout
	}
	idle := o.IdleConnTimeout
	if idle <= 0 {
		idle = defaultIdleConnTimeout
	}
	d := &net.Dialer{Timeout: connectTimeout}
	c := &Client{addr: o.Addr, scheme: "http"}
	var p http.Protocols
	tr := &http.Transport{
		DisableCompression: true, // pass bodies through as they are
		MaxConnsPerHost:    o.MaxConns,
		IdleConnTimeout:    idle,
		HTTP2: &http.HTTP2Config{
			StrictMaxConcurrentRequests: o.StrictMaxStreams,
			SendPingTimeout:             o.PingInterval,
		},
	}
	addr := o.Addr
	if o.TLS {
		c.scheme = "https"
		name := o.ServerName
		if name == "" {
			name = o.Addr
			if host, _, err := net.SplitHostPort(o.Addr); err == nil {
				name = host
			}
		}
		cfg := &tls.Config{
			ServerName: name,
			RootCAs:    o.RootCAs,
			NextProtos: []string{"h2"},
			MinVersion: tls.VersionTLS12,
		}
		p.SetHTTP2(true)
		// Our own TLS dial: the handshake counts as connecting (ConnectTimeout,
		// ErrConnect), and a server that does not select h2 fails here.
		tr.DialTLSContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			ctx, cancel := context.WithTimeout(ctx, connectTimeout)
			defer cancel()
			raw, err := d.DialContext(ctx, "tcp", addr)
			if err != nil {
				return nil, &dialError{err}
			}
			tc := tls.Client(raw, cfg)
			if err := tc.HandshakeContext(ctx); err != nil {
				_ = raw.Close()
				return nil, &dialError{err}
			}
			if proto := tc.ConnectionState().NegotiatedProtocol; proto != "h2" {
				_ = raw.Close()
				return nil, &dialError{fmt.Errorf("TLS server %s selected ALPN protocol %q, not h2", addr, proto)}
			}
			return tc, nil
		}
	} else {
		p.SetUnencryptedHTTP2(true)
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			conn, err := d.DialContext(ctx, "tcp", addr)
			if err != nil {
				return nil, &dialError{err}
			}
			return conn, nil
		}
	}
	tr.Protocols = &p
	c.tr = tr
	return c
}

// Close makes every later Do fail with ErrConnect and closes the idle connections.
// Exchanges in flight go on; their connections close as soon as they are idle, so once
// every Exchange has ended, no goroutine or socket of the Client remains.
func (c *Client) Close() {
	c.closed.Store(true)
	c.tr.CloseIdleConnections()
}

var (
	errClientClosed = fmt.Errorf("%w: client closed", ErrConnect)
	errClosedEarly  = fmt.Errorf("%w: response body closed before its end", ErrCanceled)
	errBodyDetached = errors.New("h2up: request body detached: the exchange has ended")
)

// Do sends req to the upstream and fills resp with the answer, returning as soon as the
// response headers arrive: the request body may still be streaming up while the
// response streams down (a bidirectional gRPC call).
//
// The request: req's method; its RequestURI as :path (an absolute-form URI is reduced
// to path and query); its Host as :authority (Addr when empty); its headers except the
// hop-by-hop and connection-specific ones (Connection and the names it lists,
// Keep-Alive, Proxy-*, Transfer-Encoding, Upgrade, Trailer, Host, Content-Length, and
// TE unless it is "trailers", which gRPC needs and HTTP/2 allows); and its body:
// req.Body(), or req's body stream when IsBodyStream, read and sent as it comes. A body
// stream that can block must implement io.Closer (io.PipeReader does): the exchange
// closes it when it ends, which is how a blocked Read is woken.
//
// The deadline: ctx bounds the whole exchange, body streaming included. A request
// carrying a valid grpc-timeout tightens it to now + that timeout, and a gRPC request
// (IsGRPC) then goes upstream with grpc-timeout set to the time left, so the upstream
// knows edge's budget. Cancelling ctx, or the deadline passing, resets the stream
// upstream (RST_STREAM CANCEL).
//
// On success resp is reset and filled: status, headers (hop-by-hop ones dropped, no
// default content-type added) and the body, as a stream (resp.SetBodyStream, size -1 for
// gRPC or unknown lengths, with ImmediateHeaderFlush) whose reader is the returned
// Exchange. When the body stream returns io.EOF the upstream's trailers have been added
// to resp as fasthttp trailers (AddTrailer + Add, so fasthttp's HTTP/1.1 server writes
// them after the chunked body, grpc-status and grpc-message announced in a Trailer header
// up front for gRPC responses), and Exchange.Trailers yields them. A response with
// Content-Length 0 (a gRPC "Trailers-Only" answer: grpc-status in the headers) is read
// to its end inside Do and gets no body stream. Closing the body stream before its end
// cancels the stream upstream (RST_STREAM CANCEL).
//
// A gRPC response (content-type application/grpc…) whose body fails midway (deadline,
// reset, lost connection) does not end in an error but in io.EOF with trailers edge
// makes up: grpc-status 4 DEADLINE_EXCEEDED, 1 CANCELLED or 14 UNAVAILABLE and a
// grpc-message saying so, as a gRPC client of edge must see a status and cannot see the
// HTTP/2 error. Exchange.Err reports what happened. Other responses end in the error.
//
// On error (wrapping ErrConnect, ErrTimeout, ErrCanceled or ErrBroken) resp is
// untouched (or reset, when a body-less response failed after its headers).
//
// Lifetime: the exchange ends when its body stream returns io.EOF or an error, or is
// closed (fasthttp's server closes it after writing the response; whoever takes resp's
// body stream otherwise must close it, or the stream stays open upstream until ctx
// ends). From then on, as after Do returned an error, the Client no longer touches req,
// its body or its body stream: until then the caller must leave them alone. As the body
// usually streams after a fasthttp handler has returned, ctx must not be tied to the
// handler; the exchange cancels the context it derives from ctx at its end, so ctx
// needs no cancel for the exchange's sake: context.Background() or a long-lived
// context serves, with grpc-timeout as the per-call deadline.
func (c *Client) Do(ctx context.Context, req *fasthttp.Request, resp *fasthttp.Response) (*Exchange, error) {
	if c.closed.Load() {
		return nil, errClientClosed
	}
	deadline, hasDeadline := ctx.Deadline()
	if v := req.Header.Peek("grpc-timeout"); len(v) > 0 {
		if t, ok := GRPCTimeout(v); ok {
			if dl := time.Now().Add(t); !hasDeadline || dl.Before(deadline) {
				deadline, hasDeadline = dl, true
			}
		}
	}
	var cctx context.Context
	var cancel context.CancelFunc
	if hasDeadline {
		cctx, cancel = context.WithDeadline(ctx, deadline)
	} else {
		cctx, cancel = context.WithCancel(ctx)
	}
	x := &Exchange{
		c:           c,
		resp:        resp,
		ctx:         cctx,
		cancel:      cancel,
		deadline:    deadline,
		hasDeadline: hasDeadline,
	}

	grpcReq := IsGRPC(&req.Header)
	h := make(http.Header, req.Header.Len()+2)
	conn := req.Header.Peek("Connection")
	for k, v := range req.Header.All() {
		if skipRequestHeader(k, v, conn) {
			continue
		}
		if grpcReq && hasDeadline && equalFold(k, "grpc-timeout") {
			continue // replaced by the time left below
		}
		key := http.CanonicalHeaderKey(string(k))
		h[key] = append(h[key], string(v))
	}
	if _, ok := h["User-Agent"]; !ok {
		h["User-Agent"] = nil // no Go-http-client default
	}
	if grpcReq && hasDeadline {
		var buf [16]byte
		h["Grpc-Timeout"] = []string{string(AppendGRPCTimeout(buf[:0], time.Until(deadline)))}
	}

	host := string(req.Header.Host())
	if host == "" {
		host = c.addr
	}
	hreq := &http.Request{
		Method:     string(req.Header.Method()),
		URL:        &url.URL{Scheme: c.scheme, Host: c.addr, Opaque: requestPath(req)},
		Proto:      "HTTP/2.0",
		ProtoMajor: 2,
		Header:     h,
		Host:       host,
	}
	if req.IsBodyStream() {
		x.body = &reqBody{src: req.BodyStream()}
		hreq.ContentLength = int64(req.Header.ContentLength())
		if hreq.ContentLength <= 0 {
			hreq.ContentLength = -1 // unknown; 0 with a Body means unknown too
		}
	} else if b := req.Body(); len(b) > 0 {
		x.body = &reqBody{buf: b}
		hreq.ContentLength = int64(len(b))
	}
	if x.body != nil {
		x.body.cond.L = &x.body.mu
		hreq.Body = x.body
	}
	hreq = hreq.WithContext(cctx)

	res, err := c.tr.RoundTrip(hreq)
	if err != nil {
		err = x.wrap(err)
		x.end(err)
		return nil, err
	}
	x.res = res

	skip := resp.SkipBody // a HEAD answer stays body-less
	resp.Reset()
	resp.SkipBody = skip
	resp.Header.SetNoDefaultContentType(true)
	resp.SetStatusCode(res.StatusCode)
	for k, vv := range res.Header {
		if skipResponseHeader(k) {
			continue
		}
		for _, v := range vv {
			resp.Header.Add(k, v)
		}
	}
	x.grpc = isGRPCContentType(resp.Header.ContentType())

	if res.ContentLength == 0 {
		// Nothing to stream: read to END_STREAM (at once for a Trailers-Only answer)
		// so that trailers, if any, land in resp before Do returns.
		var scratch [512]byte
		for {
			if _, err := x.Read(scratch[:]); err != nil {
				if err == io.EOF {
					return x, nil
				}
				resp.Reset()
				return nil, err
			}
		}
	}
	if x.grpc {
		_ = resp.Header.AddTrailer("Grpc-Status, Grpc-Message")
	}
	for k := range res.Trailer { // announced by the upstream
		_ = resp.Header.AddTrailer(k)
	}
	size := -1
	if !x.grpc && res.ContentLength > 0 && len(res.Trailer) == 0 {
		size = int(res.ContentLength)
	}
	resp.SetBodyStream(x, size)
	resp.ImmediateHeaderFlush = size < 0
	return x, nil
}

// requestPath is req's :path: the RequestURI as it came, or path and query of an
// absolute-form URI.
func requestPath(req *fasthttp.Request) string {
	uri := req.RequestURI()
	if len(uri) > 0 && (uri[0] == '/' || string(uri) == "*") {
		return string(uri)
	}
	return string(req.URI().RequestURI())
}

// Exchange is one request/response exchange started by Client.Do. It is the reader of
// resp's body stream (fasthttp closes it after writing the body) and, once that has
// ended, holds the upstream's trailers. An Exchange is not reused; its Read is for
// one goroutine (Close may be called from another to abort).
type Exchange struct {
	c           *Client
	resp        *fasthttp.Response
	res         *http.Response // nil when RoundTrip failed
	body        *reqBody       // nil without a request body
	ctx         context.Context
	cancel      context.CancelFunc
	deadline    time.Time
	hasDeadline bool
	grpc        bool

	closed atomic.Bool
	once   sync.Once
	err    error // what ended the exchange; set once

	// Owned by the reading goroutine.
	done    bool
	readErr error
	tbuf    []byte
	fields  []field
}

type field struct{ name, value []byte }

// Read reads the response body as its DATA frames arrive. At the end it returns io.EOF
// after adding the trailers to resp (so call it on the goroutine that owns resp, as
// fasthttp's server does when it writes the body). Errors are sticky.
func (x *Exchange) Read(p []byte) (int, error) {
	if x.done {
		return 0, x.readErr
	}
	n, err := x.res.Body.Read(p)
	if err == nil {
		return n, nil
	}
	x.done = true
	if err == io.EOF {
		x.addTrailers(x.res.Trailer)
		x.end(nil)
		x.readErr = io.EOF
		return n, io.EOF
	}
	err = x.wrap(err)
	x.end(err)
	if x.grpc && !x.closed.Load() {
		code, msg := "14", "edge: upstream connection broken"
		switch {
		case errors.Is(err, ErrTimeout):
			code, msg = "4", "edge: upstream deadline exceeded"
		case errors.Is(err, ErrCanceled):
			code, msg = "1", "edge: call canceled"
		}
		x.setFields([]string{"grpc-status", code, "grpc-message", msg})
		x.readErr = io.EOF
		return n, io.EOF
	}
	x.readErr = err
	return n, err
}

// Close ends the exchange. Before the body's end it cancels the stream upstream
// (RST_STREAM CANCEL) and Err then reports ErrCanceled; after it, it does nothing. It
// waits until the Client has let go of the request (see Do) and is safe to call more
// than once and concurrently with Read.
func (x *Exchange) Close() error {
	x.closed.Store(true)
	x.end(errClosedEarly)
	return nil
}

// Err is what ended the exchange: nil for a clean end of the body, else an error
// wrapping ErrTimeout, ErrCanceled or ErrBroken, also when a gRPC response was
// completed with edge's own status (see Do). Valid once the body stream returned io.EOF
// or an error, or Close returned.
func (x *Exchange) Err() error {
	return x.err
}

// Trailers calls fn for each trailer field of the response, names lowercase as on the
// HTTP/2 wire and sorted (net/http does not keep the order received; the values of one
// name keep theirs): the upstream's, or edge's own grpc-status and
// grpc-message when a gRPC response failed midway (see Do). Valid after the body stream
// returned io.EOF, on the goroutine that read it (or after synchronizing with it); name
// and value must not be kept after fn returns. It does not allocate.
func (x *Exchange) Trailers(fn func(name, value []byte)) {
	for _, f := range x.fields {
		fn(f.name, f.value)
	}
}

// addTrailers records t (canonical names, as net/http keeps them).
func (x *Exchange) addTrailers(t http.Header) {
	if len(t) == 0 {
		return
	}
	names := make([]string, 0, len(t))
	for k := range t {
		names = append(names, k)
	}
	slices.Sort(names) // net/http's map has no order: make one
	kv := make([]string, 0, 2*len(t))
	for _, k := range names {
		for _, v := range t[k] {
			kv = append(kv, k, v)
		}
	}
	x.setFields(kv)
}

// setFields keeps the name/value pairs kv lowercase in one buffer and adds them to
// resp as trailers.
func (x *Exchange) setFields(kv []string) {
	size := 0
	for _, s := range kv {
		size += len(s)
	}
	x.tbuf = make([]byte, 0, size) // never grows below: the slices stay valid
	x.fields = make([]field, 0, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		start := len(x.tbuf)
		for j := 0; j < len(kv[i]); j++ {
			c := kv[i][j]
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			x.tbuf = append(x.tbuf, c)
		}
		mid := len(x.tbuf)
		x.tbuf = append(x.tbuf, kv[i+1]...)
		f := field{name: x.tbuf[start:mid:mid], value: x.tbuf[mid:len(x.tbuf):len(x.tbuf)]}
		x.fields = append(x.fields, f)
		// A name fasthttp refuses as a trailer (Content-Type, Host, …) stays out of
		// resp: announced or not, it would land in the header section.
		if x.resp.Header.AddTrailerBytes(f.name) == nil {
			x.resp.Header.AddBytesKV(f.name, f.value)
		}
	}
}

// wrap classifies err, an error of this exchange, into one of the package sentinels.
func (x *Exchange) wrap(err error) error {
	var de *dialError
	var ne net.Error
	kind := ErrBroken
	switch {
	case errors.As(err, &de):
		kind = ErrConnect
	case x.closed.Load():
		kind = ErrCanceled
	case x.hasDeadline && !time.Now().Before(x.deadline):
		// Also when the upstream's own RST_STREAM for the deadline won the race.
		kind = ErrTimeout
	case errors.Is(err, context.DeadlineExceeded):
		kind = ErrTimeout
	case errors.Is(err, context.Canceled) || x.ctx.Err() != nil:
		kind = ErrCanceled
	case errors.As(err, &ne) && ne.Timeout():
		kind = ErrTimeout
	}
	return fmt.Errorf("%w %s: %w", kind, x.c.addr, err)
}

// end lets go of everything once: the response stream (RST_STREAM CANCEL if it is
// still open), the request body (after the Transport's last Read of it returned) and
// the context.
func (x *Exchange) end(err error) {
	x.once.Do(func() {
		x.err = err
		if x.res != nil {
			_ = x.res.Body.Close()
		}
		if x.body != nil {
			_ = x.body.Close()
		}
		x.cancel()
		if x.c.closed.Load() {
			x.c.tr.CloseIdleConnections()
		}
	})
}

// reqBody is the request body as the Transport reads it: req.Body() or req's body
// stream. Close detaches it: later Reads fail, the stream is closed if it is an
// io.Closer (waking a blocked Read), and Close returns only once no Read is running,
// so that the caller's request is free again.
type reqBody struct {
	mu      sync.Mutex
	cond    sync.Cond // L is &mu; signalled when reading drops to 0 after close
	src     io.Reader // nil: buf
	buf     []byte
	reading int
	closed  bool
}

func (b *reqBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return 0, errBodyDetached
	}
	if b.src == nil {
		n := copy(p, b.buf)
		b.buf = b.buf[n:]
		b.mu.Unlock()
		if n == 0 && len(p) > 0 {
			return 0, io.EOF
		}
		return n, nil
	}
	b.reading++
	b.mu.Unlock()
	n, err := b.src.Read(p)
	b.mu.Lock()
	b.reading--
	if b.reading == 0 && b.closed {
		b.cond.Broadcast()
	}
	b.mu.Unlock()
	return n, err
}

func (b *reqBody) Close() error {
	b.mu.Lock()
	if !b.closed {
		b.closed = true
		b.buf = nil
		if c, ok := b.src.(io.Closer); ok {
			b.mu.Unlock()
			_ = c.Close()
			b.mu.Lock()
		}
	}
	for b.reading > 0 {
		b.cond.Wait()
	}
	b.mu.Unlock()
	return nil
}

// skipRequestHeader says whether a request header stays behind: hop-by-hop and
// connection-specific fields (RFC 9113 §8.2.2), those named by Connection (conn), Host
// (sent as :authority), Content-Length (net/http sets it from the body), pseudo-headers,
// and TE unless it is "trailers".
func skipRequestHeader(k, v, conn []byte) bool {
	if len(k) == 0 || k[0] == ':' {
		return true
	}
	if equalFold(k, "te") {
		return !equalFold(bytes.TrimSpace(v), "trailers")
	}
	if isHopByHop(k) || equalFold(k, "host") || equalFold(k, "content-length") {
		return true
	}
	return listed(conn, k)
}

// skipResponseHeader says whether an upstream response header stays behind:
// hop-by-hop fields and Content-Length (fasthttp frames the body itself).
func skipResponseHeader(k string) bool {
	b := []byte(k) // does not escape: no allocation
	return isHopByHop(b) || equalFold(b, "te") || equalFold(b, "content-length")
}

func isHopByHop(k []byte) bool {
	return equalFold(k, "connection") || equalFold(k, "keep-alive") ||
		equalFold(k, "transfer-encoding") || equalFold(k, "upgrade") ||
		equalFold(k, "trailer") ||
		(len(k) >= 6 && equalFold(k[:6], "proxy-"))
}

// listed reports whether the comma-separated list has name (case-insensitively).
func listed(list, name []byte) bool {
	for len(list) > 0 {
		var item []byte
		if i := bytes.IndexByte(list, ','); i >= 0 {
			item, list = list[:i], list[i+1:]
		} else {
			item, list = list, nil
		}
		if equalFold(bytes.TrimSpace(item), string(name)) {
			return true
		}
	}
	return false
}

// equalFold compares ASCII case-insensitively.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c, d := b[i], s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if 'A' <= d && d <= 'Z' {
			d += 'a' - 'A'
		}
		if c != d {
			return false
		}
	}
	return true
}

// LoadCAs reads a PEM file of CA certificates for Options.RootCAs.
func LoadCAs(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read tls_ca_file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("tls_ca_file %q holds no PEM certificate", path)
	}
	return pool, nil
}
