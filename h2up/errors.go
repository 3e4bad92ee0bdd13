package h2up

import (
	"context"
	"errors"
	"net"
)

// Every error Do returns, and every error an Exchange ends with, wraps exactly one of
// these (compare with errors.Is; Classify names them). The underlying cause is wrapped
// too.
var (
	// ErrConnect: the upstream was never reached (dial refused or timed out, TLS
	// handshake failed or did not negotiate h2, Client closed). Nothing was sent, so
	// any request may be retried elsewhere.
	ErrConnect = errors.New("cannot connect to upstream")
	// ErrTimeout: the deadline (ctx's, or the request's grpc-timeout) passed while
	// waiting for the upstream.
	ErrTimeout = errors.New("upstream timed out")
	// ErrCanceled: ctx was canceled, or the response body was closed before its end.
	// Not the upstream's fault.
	ErrCanceled = errors.New("upstream exchange canceled")
	// ErrBroken: the upstream was reached but the exchange failed (stream or connection
	// reset, GOAWAY, protocol error). The upstream may have processed the request.
	ErrBroken = errors.New("upstream exchange broken")
)

// Classify names the failure an error stands for, for metrics and for the proxy's
// error→status mapping: "" for nil, "connect", "timeout", "canceled" or "broken". Errors
// that did not come from this package are judged by their net.Error nature the same way
// (a dial *net.OpError is "connect", a timeout "timeout"). It does not allocate.
func Classify(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrConnect):
		return "connect"
	case errors.Is(err, ErrTimeout):
		return "timeout"
	case errors.Is(err, ErrCanceled):
		return "canceled"
	case errors.Is(err, ErrBroken):
		return "broken"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		return "connect"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	return "broken"
}

// dialError marks an error of the connect phase (TCP dial, TLS handshake) as it travels
// through net/http's Transport, which may wrap it.
type dialError struct{ err error }

func (e *dialError) Error() string { return e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }
