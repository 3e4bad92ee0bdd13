package h2up

import (
	"errors"
	"fmt"
	"math"
	"net"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

func TestGRPCTimeout(t *testing.T) {
	f := func(in string, want time.Duration, wantOK bool) {
		t.Helper()
		got, ok := GRPCTimeout([]byte(in))
		if ok != wantOK || got != want {
			t.Fatalf("GRPCTimeout(%q) = %v, %v; want %v, %v", in, got, ok, want, wantOK)
		}
	}
	f("100m", 100*time.Millisecond, true)
	f("5S", 5*time.Second, true)
	f("1H", time.Hour, true)
	f("2M", 2*time.Minute, true)
	f("250u", 250*time.Microsecond, true)
	f("7n", 7, true)
	f("0n", 0, true)
	f("00000001S", time.Second, true)      // 8 digits
	f("99999999H", math.MaxInt64, true)    // saturates
	f("99999999n", 99999999, true)         // largest nanoseconds
	f("2562047H", 2562047*time.Hour, true) // fits in a Duration
	f("2562048H", math.MaxInt64, true)     // just past it
	f("123456789S", 0, false)              // 9 digits
	f("", 0, false)                        // empty
	f("m", 0, false)                       // no digits
	f("10", 0, false)                      // no unit
	f("10s", 0, false)                     // unknown unit (seconds are 'S')
	f("10h", 0, false)                     // unknown unit
	f("-1S", 0, false)                     // sign
	f("1 S", 0, false)                     // space
	f(" 1S", 0, false)                     // space
	f("1.5S", 0, false)                    // fraction
	f("1SS", 0, false)                     // two units
	f("\xff1S", 0, false)                  // garbage
	f("12345678", 0, false)                // digits, no unit
	f("99999999m", 99999999*time.Millisecond, true)
}

func TestAppendGRPCTimeout(t *testing.T) {
	f := func(d time.Duration, want string) {
		t.Helper()
		got := string(AppendGRPCTimeout([]byte("x"), d))
		if got != "x"+want {
			t.Fatalf("AppendGRPCTimeout(%v) = %q; want %q", d, got[1:], want)
		}
		if d <= 0 {
			return
		}
		back, ok := GRPCTimeout([]byte(want))
		if !ok || back < d {
			t.Fatalf("GRPCTimeout(%q) = %v, %v; want at least %v", want, back, ok, d)
		}
	}
	f(0, "0n")
	f(-time.Second, "0n")
	f(1, "1n")
	f(99999999, "99999999n")
	f(100000000, "100000u")
	f(100000001, "100001u") // rounded up
	f(200*time.Millisecond, "200000u")
	f(5*time.Second, "5000000u")
	f(time.Minute, "60000000u")
	f(2*time.Minute, "120000m")
	f(30*time.Hour, "108000S")
	f(math.MaxInt64, "2562048H")
}

func TestIsGRPC(t *testing.T) {
	f := func(ct string, want bool) {
		t.Helper()
		var h fasthttp.RequestHeader
		if ct != "" {
			h.SetContentType(ct)
		}
		if got := IsGRPC(&h); got != want {
			t.Fatalf("IsGRPC(content-type %q) = %v; want %v", ct, got, want)
		}
	}
	f("application/grpc", true)
	f("application/grpc+proto", true)
	f("application/grpc+json", true)
	f("application/grpc;charset=utf-8", true)
	f("application/grpc-web", false)
	f("application/grpc-web+proto", false)
	f("application/grpcx", false)
	f("application/json", false)
	f("application/grp", false)
	f("", false)
}

func TestWriteStatus(t *testing.T) {
	f := func(code int, msg, wantMsg string) {
		t.Helper()
		var resp fasthttp.Response
		resp.SetStatusCode(502)
		resp.Header.Set("X-Old", "stale")
		resp.SetBodyString("old body")
		WriteStatus(&resp, code, msg)
		if got := resp.StatusCode(); got != 200 {
			t.Fatalf("status %d; want 200", got)
		}
		if got := string(resp.Header.ContentType()); got != "application/grpc" {
			t.Fatalf("content-type %q", got)
		}
		if got := string(resp.Header.Peek("grpc-status")); got != fmt.Sprint(code) {
			t.Fatalf("grpc-status %q; want %d", got, code)
		}
		msgVal := resp.Header.Peek("grpc-message")
		if string(msgVal) != wantMsg || (wantMsg == "" && msgVal != nil) {
			t.Fatalf("grpc-message %q; want %q", msgVal, wantMsg)
		}
		if len(resp.Body()) != 0 || resp.Header.Peek("X-Old") != nil {
			t.Fatalf("old response left over: body %q, X-Old %q", resp.Body(), resp.Header.Peek("X-Old"))
		}
		// On the wire: a Trailers-Only response is headers and an empty body.
		raw := resp.String()
		if want := "Grpc-Status: " + fmt.Sprint(code) + "\r\n"; !contains(raw, want) || !contains(raw, "Content-Length: 0\r\n") {
			t.Fatalf("response on the wire lacks %q or an empty body:\n%s", want, raw)
		}
	}
	f(ResourceExhausted, "rate limited", "rate limited")
	f(Unavailable, "", "")
	f(DeadlineExceeded, "100% done\n", "100%25 done%0A")
	f(PermissionDenied, "caf\xc3\xa9", "caf%C3%A9")
	f(Unimplemented, "~ ok !", "~ ok !")
}

func TestClassify(t *testing.T) {
	f := func(err error, want string) {
		t.Helper()
		if got := Classify(err); got != want {
			t.Fatalf("Classify(%v) = %q; want %q", err, got, want)
		}
	}
	f(nil, "")
	f(fmt.Errorf("x: %w", ErrConnect), "connect")
	f(fmt.Errorf("x: %w", ErrTimeout), "timeout")
	f(fmt.Errorf("x: %w", ErrCanceled), "canceled")
	f(fmt.Errorf("x: %w", ErrBroken), "broken")
	f(&net.OpError{Op: "dial", Err: errors.New("refused")}, "connect")
	f(&net.OpError{Op: "read", Err: timeoutErr{}}, "timeout")
	f(errors.New("other"), "broken")
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

func TestCodeForHTTP(t *testing.T) {
	for status, want := range map[int]int{429: ResourceExhausted, 413: ResourceExhausted, 403: PermissionDenied,
		401: Unauthenticated, 404: Unimplemented, 502: Unavailable, 503: Unavailable, 504: DeadlineExceeded,
		408: DeadlineExceeded, 409: FailedPrecondition, 400: InvalidArgument, 200: Internal, 500: Unknown, 302: Unknown} {
		if got := CodeForHTTP(status); got != want {
			t.Errorf("CodeForHTTP(%d) = %d, want %d", status, got, want)
		}
	}
}
