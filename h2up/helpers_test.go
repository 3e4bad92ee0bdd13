package h2up

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"

	"github.com/edge-gw/edge/internal/grpctest"
	"github.com/valyala/fasthttp"
)

// newClient is New(o) closed at cleanup.
func newClient(t *testing.T, o Options) *Client {
	t.Helper()
	c := New(o)
	t.Cleanup(c.Close)
	return c
}

// startClient starts the grpctest service (h2c) and returns a client of it, both
// closed at cleanup.
func startClient(t *testing.T) *Client {
	t.Helper()
	return newClient(t, Options{Addr: grpctest.Start(t)})
}

// echoErr sends Echo "x" with c and returns Do's error.
func echoErr(ctx context.Context, c *Client) error {
	_, err := c.Do(ctx, grpcRequest("Echo", "x"), &fasthttp.Response{})
	return err
}

// serveLoopback runs serve on a fresh 127.0.0.1 listener and returns its address. At
// cleanup it calls stop, or closes the listener if stop is nil, and waits for serve
// to return.
func serveLoopback(t *testing.T, serve func(net.Listener) error, stop func()) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = serve(ln)
	}()
	t.Cleanup(func() {
		if stop != nil {
			stop()
		} else {
			_ = ln.Close()
		}
		<-done
	})
	return ln.Addr().String()
}

// grpcRequest builds a request as a gRPC client sends it: POST /<service>/<method>,
// content-type application/grpc, te: trailers, and the messages framed as the body.
func grpcRequest(method string, msgs ...string) *fasthttp.Request {
	req := &fasthttp.Request{}
	req.Header.SetMethod(fasthttp.MethodPost)
	req.SetRequestURI("/" + grpctest.Name + "/" + method)
	req.Header.SetHost("upstream.test")
	req.Header.SetContentType("application/grpc")
	req.Header.Set("te", "trailers")
	req.Header.Set("user-agent", "grpc-go-test")
	var body []byte
	for _, m := range msgs {
		body = appendFrame(body, m)
	}
	req.SetBody(body)
	return req
}

// pipeRequest is grpcRequest(method) whose body streams from a pipe: the caller writes
// framed messages to pw and closes it.
func pipeRequest(method string) (req *fasthttp.Request, pw *io.PipeWriter) {
	req = grpcRequest(method)
	pr, pw := io.Pipe()
	req.SetBodyStream(pr, -1)
	return req, pw
}

// appendFrame appends msg as a gRPC length-prefixed message.
func appendFrame(dst []byte, msg string) []byte {
	dst = append(dst, 0)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(msg)))
	return append(dst, msg...)
}

// readFrame reads one gRPC message from r; io.EOF at a clean end between messages.
func readFrame(r io.Reader) (string, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return "", err
	}
	if hdr[0] != 0 {
		return "", fmt.Errorf("compressed flag %d", hdr[0])
	}
	msg := make([]byte, binary.BigEndian.Uint32(hdr[1:]))
	if _, err := io.ReadFull(r, msg); err != nil {
		return "", fmt.Errorf("truncated message: %w", err)
	}
	return string(msg), nil
}

// readAll reads every message of resp's body stream up to its io.EOF.
func readAll(t *testing.T, resp *fasthttp.Response) []string {
	t.Helper()
	var msgs []string
	for {
		m, err := readFrame(resp.BodyStream())
		if errors.Is(err, io.EOF) {
			return msgs
		}
		if err != nil {
			t.Fatalf("after %d messages: %v", len(msgs), err)
		}
		msgs = append(msgs, m)
	}
}

// readOne reads resp's body stream to its io.EOF and returns its one message; it
// fails if there are more or none.
func readOne(t *testing.T, resp *fasthttp.Response) string {
	t.Helper()
	got := readAll(t, resp)
	if len(got) != 1 {
		t.Fatalf("messages %q; want one", got)
	}
	return got[0]
}

// wantMessage fails unless resp's body stream holds exactly one message, want.
func wantMessage(t *testing.T, resp *fasthttp.Response, want string) {
	t.Helper()
	if got := readOne(t, resp); got != want {
		t.Fatalf("message %q; want %q", got, want)
	}
}

// trailers collects x's trailers as "name: value" lines.
func trailers(x *Exchange) string {
	var b bytes.Buffer
	x.Trailers(func(name, value []byte) {
		fmt.Fprintf(&b, "%s: %s\n", name, value)
	})
	return b.String()
}

// wantTrailer fails unless x and resp both carry name: value as a trailer.
func wantTrailer(t *testing.T, x *Exchange, resp *fasthttp.Response, name, value string) {
	t.Helper()
	found := false
	x.Trailers(func(n, v []byte) {
		if string(n) == name && string(v) == value {
			found = true
		}
	})
	if !found {
		t.Fatalf("Exchange.Trailers lacks %s: %s; has:\n%s", name, value, trailers(x))
	}
	if !contains(string(resp.Header.TrailerHeader()), http1Name(name)+": "+value+"\r\n") {
		t.Fatalf("resp's trailer section lacks %s: %s; has:\n%s", name, value, resp.Header.TrailerHeader())
	}
}

// http1Name is name as fasthttp normalizes it: Grpc-Status.
func http1Name(name string) string {
	b := []byte(name)
	up := true
	for i, c := range b {
		if up && 'a' <= c && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
		up = c == '-'
	}
	return string(b)
}
