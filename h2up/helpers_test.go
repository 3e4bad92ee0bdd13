package h2up

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// rawCodec passes gRPC messages through as bytes, so the test service needs no
// generated code: messages are *[]byte on both sides.
type rawCodec struct{}

func (rawCodec) Name() string { return "raw" }

func (rawCodec) Marshal(v any) ([]byte, error) {
	p, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("rawCodec: cannot marshal %T", v)
	}
	return *p, nil
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	p, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("rawCodec: cannot unmarshal into %T", v)
	}
	*p = append((*p)[:0], data...)
	return nil
}

// testService is the upstream: a real grpc-go server with hand-written handlers.
type testService struct {
	stop     chan struct{} // closed at cleanup: ends handlers that wait
	release  chan struct{} // Count waits on it after its first message
	canceled chan struct{} // Count closes it when its call is canceled
	shutdown func()        // stops the server and waits for it
}

const serviceName = "h2up.test.Raw"

var serviceDesc = grpc.ServiceDesc{
	ServiceName: serviceName,
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{
		{MethodName: "Echo", Handler: echoHandler},
	},
	Streams: []grpc.StreamDesc{
		{StreamName: "Count", Handler: countHandler, ServerStreams: true},
		{StreamName: "Sum", Handler: sumHandler, ClientStreams: true},
		{StreamName: "Chat", Handler: chatHandler, ServerStreams: true, ClientStreams: true},
		{StreamName: "Stall", Handler: stallHandler, ServerStreams: true},
	},
}

// echoHandler answers "echo:<msg>"; "fail" gets ResourceExhausted "custom" plus a
// trailer x-custom: v; "meta" answers the request metadata as "key=value" lines;
// "sleep" waits 2s whatever its deadline; "deadline" answers the
// time left before the call's deadline, in milliseconds, or "none".
func echoHandler(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
	s := srv.(*testService)
	var in []byte
	if err := dec(&in); err != nil {
		return nil, err
	}
	switch string(in) {
	case "fail":
		_ = grpc.SetTrailer(ctx, metadata.Pairs("x-custom", "v"))
		return nil, status.Error(codes.ResourceExhausted, "custom")
	case "sleep":
		select {
		case <-time.After(2 * time.Second):
		case <-s.stop:
		}
	case "meta":
		md, _ := metadata.FromIncomingContext(ctx)
		keys := make([]string, 0, len(md))
		for k := range md {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var out []byte
		for _, k := range keys {
			out = fmt.Appendf(out, "%s=%s\n", k, strings.Join(md[k], ","))
		}
		return &out, nil
	case "deadline":
		out := []byte("none")
		if dl, ok := ctx.Deadline(); ok {
			out = strconv.AppendInt(out[:0], time.Until(dl).Milliseconds(), 10)
		}
		return &out, nil
	}
	out := append([]byte("echo:"), in...)
	return &out, nil
}

// countHandler receives a count N and sends N messages "msg <i>", waiting on release
// after the first; it closes canceled if its call is canceled. "fail" sends one message
// and fails with ResourceExhausted "custom" and a trailer x-custom: v.
func countHandler(srv any, stream grpc.ServerStream) error {
	s := srv.(*testService)
	var in []byte
	if err := stream.RecvMsg(&in); err != nil {
		return err
	}
	if string(in) == "fail" {
		out := []byte("msg 0")
		if err := stream.SendMsg(&out); err != nil {
			return err
		}
		stream.SetTrailer(metadata.Pairs("x-custom", "v"))
		return status.Error(codes.ResourceExhausted, "custom")
	}
	n, err := strconv.Atoi(string(in))
	if err != nil {
		return status.Error(codes.InvalidArgument, "count")
	}
	for i := range n {
		out := []byte("msg " + strconv.Itoa(i))
		if err := stream.SendMsg(&out); err != nil {
			return err
		}
		if i == 0 {
			select {
			case <-s.release:
			case <-stream.Context().Done():
				close(s.canceled)
				return stream.Context().Err()
			case <-s.stop:
				return nil
			}
		}
	}
	return nil
}

// sumHandler receives messages until the client's end and answers how many and their
// total length.
func sumHandler(_ any, stream grpc.ServerStream) error {
	count, total := 0, 0
	for {
		var in []byte
		err := stream.RecvMsg(&in)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		count++
		total += len(in)
	}
	out := fmt.Appendf(nil, "%d messages, %d bytes", count, total)
	return stream.SendMsg(&out)
}

// chatHandler sends its headers at once, then answers each message "re:<msg>".
func chatHandler(_ any, stream grpc.ServerStream) error {
	if err := stream.SendHeader(metadata.Pairs("x-chat", "open")); err != nil {
		return err
	}
	for {
		var in []byte
		err := stream.RecvMsg(&in)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		out := append([]byte("re:"), in...)
		if err := stream.SendMsg(&out); err != nil {
			return err
		}
	}
}

// stallHandler sends one message and then waits 2s whatever its deadline.
func stallHandler(srv any, stream grpc.ServerStream) error {
	s := srv.(*testService)
	var in []byte
	if err := stream.RecvMsg(&in); err != nil {
		return err
	}
	out := []byte("first")
	if err := stream.SendMsg(&out); err != nil {
		return err
	}
	select {
	case <-time.After(2 * time.Second):
	case <-s.stop:
	}
	return nil
}

// startServer serves the test service on 127.0.0.1:0, h2c unless cert is given, until
// the test's cleanup.
func startServer(t *testing.T, cert *tls.Certificate) (*testService, string) {
	t.Helper()
	s, addr := serve(t, cert)
	t.Cleanup(s.shutdown)
	return s, addr
}

// serve is startServer leaving the shutdown to the caller.
func serve(t testing.TB, cert *tls.Certificate) (*testService, string) {
	t.Helper()
	opts := []grpc.ServerOption{grpc.ForceServerCodec(rawCodec{})}
	if cert != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{*cert}})))
	}
	srv := grpc.NewServer(opts...)
	s := &testService{stop: make(chan struct{}), release: make(chan struct{}), canceled: make(chan struct{})}
	srv.RegisterService(&serviceDesc, s)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	s.shutdown = func() {
		close(s.stop)
		srv.Stop()
		<-done
	}
	return s, ln.Addr().String()
}

// newClient is New(o) closed at cleanup.
func newClient(t *testing.T, o Options) *Client {
	t.Helper()
	c := New(o)
	t.Cleanup(c.Close)
	return c
}

// grpcRequest builds a request as a gRPC client sends it: POST /<service>/<method>,
// content-type application/grpc, te: trailers, and the messages framed as the body.
func grpcRequest(method string, msgs ...string) *fasthttp.Request {
	req := &fasthttp.Request{}
	req.Header.SetMethod(fasthttp.MethodPost)
	req.SetRequestURI("/" + serviceName + "/" + method)
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
