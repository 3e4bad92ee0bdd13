package h2up

import (
	"math"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"
)

// gRPC status codes (https://grpc.github.io/grpc/core/md_doc_statuscodes.html): the
// values of the grpc-status trailer. Edge answers with a few of them itself (WriteStatus)
// and passes the upstream's through untouched.
const (
	OK                 = 0
	Canceled           = 1
	Unknown            = 2
	InvalidArgument    = 3
	DeadlineExceeded   = 4
	NotFound           = 5
	AlreadyExists      = 6
	PermissionDenied   = 7
	ResourceExhausted  = 8
	FailedPrecondition = 9
	Aborted            = 10
	OutOfRange         = 11
	Unimplemented      = 12
	Internal           = 13
	Unavailable        = 14
	DataLoss           = 15
	Unauthenticated    = 16
)

// grpcTimeoutMax is the largest TimeoutValue gRPC allows: at most 8 ASCII digits.
const grpcTimeoutMax = 99999999

// GRPCTimeout parses a grpc-timeout header value: 1 to 8 ASCII digits followed by one
// unit of H (hours), M (minutes), S (seconds), m (milliseconds), u (microseconds) or n
// (nanoseconds), as gRPC's PROTOCOL-HTTP2 spec has it. ok is false for anything else
// (empty, a sign, spaces, 9 digits, an unknown unit). A value past what a Duration holds
// (over about 292 years) saturates to the largest Duration. It does not allocate.
func GRPCTimeout(v []byte) (d time.Duration, ok bool) {
	if len(v) < 2 || len(v) > 9 {
		return 0, false
	}
	var unit time.Duration
	switch v[len(v)-1] {
	case 'H':
		unit = time.Hour
	case 'M':
		unit = time.Minute
	case 'S':
		unit = time.Second
	case 'm':
		unit = time.Millisecond
	case 'u':
		unit = time.Microsecond
	case 'n':
		unit = time.Nanosecond
	default:
		return 0, false
	}
	var n int64
	for _, c := range v[:len(v)-1] {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	if n > math.MaxInt64/int64(unit) {
		return math.MaxInt64, true
	}
	return time.Duration(n) * unit, true
}

// AppendGRPCTimeout appends d as a grpc-timeout value to dst: the finest unit whose
// value fits gRPC's 8 digits, rounded up so the upstream never gets less time than d.
// A d of zero or less appends "0n" (already expired). The result always parses with
// GRPCTimeout to at least d (for d > 0).
func AppendGRPCTimeout(dst []byte, d time.Duration) []byte {
	if d <= 0 {
		return append(dst, '0', 'n')
	}
	units := [...]struct {
		d time.Duration
		c byte
	}{
		{time.Nanosecond, 'n'}, {time.Microsecond, 'u'}, {time.Millisecond, 'm'},
		{time.Second, 'S'}, {time.Minute, 'M'}, {time.Hour, 'H'},
	}
	for _, u := range units {
		n := d / u.d
		if d%u.d != 0 {
			n++ // round up
		}
		if n <= grpcTimeoutMax {
			dst = strconv.AppendInt(dst, int64(n), 10)
			return append(dst, u.c)
		}
	}
	// Past 99999999 hours (over 11,000 years): the largest value gRPC can say.
	return append(dst, "99999999H"...)
}

// IsGRPC reports whether a request is a gRPC call: its content-type is
// "application/grpc" or "application/grpc+<codec>" (parameters after ';' allowed).
// It does not allocate.
func IsGRPC(h *fasthttp.RequestHeader) bool {
	return isGRPCContentType(h.ContentType())
}

func isGRPCContentType(ct []byte) bool {
	const prefix = "application/grpc"
	if len(ct) < len(prefix) || string(ct[:len(prefix)]) != prefix {
		return false
	}
	if len(ct) == len(prefix) {
		return true
	}
	c := ct[len(prefix)]
	return c == '+' || c == ';'
}

// WriteStatus replaces resp with edge's own answer to a gRPC call, in gRPC's
// "Trailers-Only" form: HTTP 200, content-type application/grpc, grpc-status code and,
// when msg is not empty, grpc-message msg percent-encoded as the spec asks (bytes outside
// printable ASCII, and '%', become %XX), as headers, and no body. Whatever resp held is
// reset first (a body stream is closed). A gRPC client reads this as the call's status.
// With a msg needing no encoding and a resp that has been used before, it does not
// allocate.
func WriteStatus(resp *fasthttp.Response, code int, msg string) {
	resp.Reset()
	resp.SetStatusCode(fasthttp.StatusOK)
	resp.Header.SetContentType("application/grpc")
	var num [20]byte
	resp.Header.SetBytesV("grpc-status", strconv.AppendInt(num[:0], int64(code), 10))
	if msg == "" {
		return
	}
	if !needsPercent(msg) {
		resp.Header.Set("grpc-message", msg)
		return
	}
	var buf [256]byte
	resp.Header.SetBytesV("grpc-message", appendPercent(buf[:0], msg))
}

func needsPercent(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '%' {
			return true
		}
	}
	return false
}

// appendPercent appends s percent-encoded for grpc-message to dst.
func appendPercent(dst []byte, s string) []byte {
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '%' {
			dst = append(dst, '%', hex[c>>4], hex[c&15])
			continue
		}
		dst = append(dst, c)
	}
	return dst
}

// CodeForHTTP is the gRPC status for an HTTP status a gateway answered a gRPC call with
// (a limit, a ban, an unreachable upstream): 429/413/431 RESOURCE_EXHAUSTED, 403
// PERMISSION_DENIED, 401 UNAUTHENTICATED, 404 UNIMPLEMENTED, 502/503 UNAVAILABLE,
// 504/408 DEADLINE_EXCEEDED, 409/410 FAILED_PRECONDITION, 400/422 INVALID_ARGUMENT, any
// other success INTERNAL (a non-gRPC answer to a gRPC call), the rest UNKNOWN.
func CodeForHTTP(status int) int {
	switch status {
	case 429, 413, 431:
		return ResourceExhausted
	case 403:
		return PermissionDenied
	case 401:
		return Unauthenticated
	case 404:
		return Unimplemented
	case 502, 503:
		return Unavailable
	case 504, 408:
		return DeadlineExceeded
	case 409, 410:
		return FailedPrecondition
	case 400, 422:
		return InvalidArgument
	}
	if status < 300 {
		return Internal
	}
	return Unknown
}
