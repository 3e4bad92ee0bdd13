package proxy

import (
	"errors"
	"io"
	"time"

	"github.com/valyala/fasthttp"
)

// exchange sends req to hc's server and reads the answer into resp, before deadline.
// wait bounds the wait for a free connection on the first attempt (the time left until
// deadline, or more: the caller need not read the clock to say).
//
// It is fasthttp's HostClient.DoTimeout cut to what edge needs, through the client's
// exported connection and buffer pools. DoTimeout reads the clock five times per
// request (exchange, on the way through, none), takes the connection's addresses for
// resp.RemoteAddr (edge never asks), parses the request URI to check its scheme and
// counts pending requests; together about 2 % of a proxied request's CPU.
//
// Semantics kept from DoTimeout: waiting for a free connection (max_conns) counts
// against the time and ends with ErrNoFreeConns; a failure on a connection that had
// served requests before (typically one the upstream had just closed) is retried once
// on another connection for GET, HEAD and PUT, never for other methods, while time is
// left; a timeout is ErrTimeout; an upstream that closed the connection without
// answering is ErrConnectionClosed; a body over the client's MaxResponseBodySize is
// ErrBodyTooLarge and not retried. Connection: close from either side closes the
// connection after the exchange. HEAD responses and those resp was set to skip
// (fasthttp's server does for HEAD) have no body read. The request path is sent as
// received.
//
// Streams (stream.go, upload.go): a response body that sr lets stream is handed on as a body stream reading from the upstream connection, each read bounded
// by timeout; a request body stream (an upload over max_body_size) is written as it is
// read, each write bounded by timeout, and never retried.
//
// pp, when not nil, is a PROXY header: the exchange then takes a connection of its own,
// writes pp first on it and closes it afterwards (proxyproto.go).
//
// The upstream's interim (1xx) answers before the final one are relayed to the client
// of interim as they arrive (interim.go); with interim nil they are dropped.
func exchange(hc *fasthttp.HostClient, req *fasthttp.Request, resp *fasthttp.Response, deadline time.Time, wait, timeout time.Duration, sr streamRule, pp []byte, interim *fasthttp.RequestCtx) error {
	if wait <= 0 {
		return fasthttp.ErrTimeout
	}
	skipBody := resp.SkipBody || req.Header.IsHead()
	// The path goes upstream as the client sent it: no dot segments resolved, no
	// slashes merged, no escapes decoded (the route matched the same bytes).
	req.URI().DisablePathNormalizing = true
	for attempt := 1; ; attempt++ {
		retry, err := exchangeOnce(hc, req, resp, deadline, wait, timeout, sr, skipBody, pp, interim)
		if err == nil {
			return nil
		}
		if !retry || attempt >= 2 || !fasthttpIdempotent(req) || req.IsBodyStream() {
			return exchangeError(err)
		}
		if wait = time.Until(deadline); wait <= 0 {
			return fasthttp.ErrTimeout
		}
	}
}

// exchangeOnce is one attempt on one connection. retry is true when the attempt failed
// on a connection that had been used before, after which a fresh one may succeed.
func exchangeOnce(hc *fasthttp.HostClient, req *fasthttp.Request, resp *fasthttp.Response, deadline time.Time, wait, timeout time.Duration, sr streamRule, skipBody bool, pp []byte, interim *fasthttp.RequestCtx) (retry bool, err error) {
	if pp != nil {
		// A connection whose PROXY header names this client serves no other: its pool
		// keeps none idle, so this one is new, and it is closed after the answer.
		req.SetConnectionClose()
	}
	cc, err := hc.AcquireConn(wait, req.ConnectionClose())
	if err != nil {
		return false, err
	}
	reused := !cc.LastUseTime().IsZero()
	conn := cc.Conn()
	if err = conn.SetDeadline(deadline); err != nil {
		hc.CloseConn(cc)
		return reused, err
	}
	if pp != nil {
		if _, err = conn.Write(pp); err != nil {
			hc.CloseConn(cc)
			return false, err
		}
	}
	upload, _ := req.BodyStream().(*uploadBody)
	if upload != nil { // writes move the deadline as the body arrives; the answer gets timeout after it
		conn.SetWriteDeadline(time.Now().Add(timeout))
		upload.prepare(conn, timeout)
	}
	bw := hc.AcquireWriter(conn)
	err = req.Write(bw)
	if err == nil {
		err = bw.Flush()
	}
	hc.ReleaseWriter(bw)
	if upload != nil && err == nil {
		conn.SetReadDeadline(time.Now().Add(timeout))
	}
	if err != nil {
		hc.CloseConn(cc)
		return reused, err
	}
	resp.SkipBody = skipBody
	br := hc.AcquireReader(conn)
	err = readHead(resp, br, interim)
	if err == nil && sr.above > 0 && !skipBody && sr.streamable(resp) {
		keep := !req.ConnectionClose() && !resp.ConnectionClose()
		startStream(resp, br, conn, timeout, func(reuse bool) { // owns cc and br from here
			hc.ReleaseReader(br)
			if reuse && keep {
				hc.ReleaseConn(cc)
			} else {
				hc.CloseConn(cc)
			}
		})
		return false, nil
	}
	if err == nil && !skipBody {
		err = readBody(resp, br, hc.MaxResponseBodySize)
	}
	hc.ReleaseReader(br)
	if err != nil {
		hc.CloseConn(cc)
		return reused && !errors.Is(err, fasthttp.ErrBodyTooLarge), err
	}
	if req.ConnectionClose() || resp.ConnectionClose() {
		hc.CloseConn(cc)
	} else {
		hc.ReleaseConn(cc)
	}
	return false, nil
}

// fasthttpIdempotent is the set of methods fasthttp's client retries: GET, HEAD, PUT.
func fasthttpIdempotent(req *fasthttp.Request) bool {
	return req.Header.IsGet() || req.Header.IsHead() || req.Header.IsPut()
}

// exchangeError names a failure the way DoTimeout does.
func exchangeError(err error) error {
	if t, ok := err.(interface{ Timeout() bool }); ok && t.Timeout() {
		return fasthttp.ErrTimeout
	}
	if errors.Is(err, io.EOF) {
		return fasthttp.ErrConnectionClosed
	}
	return err
}
