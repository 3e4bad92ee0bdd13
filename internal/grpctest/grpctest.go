// Package grpctest runs a real grpc-go server for tests, with a hand-written service
// and a codec that passes messages through as bytes, so no generated code is needed.
// Messages are *[]byte on both sides.
package grpctest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Codec is the raw-bytes codec ("raw"): clients pass it with grpc.ForceCodecV2 or
// grpc.ForceCodec (see Dial).
type Codec struct{}

// Name is the codec's name.
func (Codec) Name() string { return "raw" }

// Marshal returns the bytes v points to.
func (Codec) Marshal(v any) ([]byte, error) {
	p, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("grpctest: cannot marshal %T", v)
	}
	return *p, nil
}

// Unmarshal copies data into the slice v points to.
func (Codec) Unmarshal(data []byte, v any) error {
	p, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("grpctest: cannot unmarshal into %T", v)
	}
	*p = append((*p)[:0], data...)
	return nil
}

var _ encoding.Codec = Codec{}

// Name is the service's name; the method constants below are its full paths.
const Name = "grpctest.Raw"

// The service's methods, as full paths.
const (
	// Echo is unary: it answers "echo:<msg>", except for these messages:
	//   - "fail": ResourceExhausted "custom" with trailer x-custom: v;
	//   - "fail:<message>": ResourceExhausted <message> with trailers x-custom: v and
	//     x-bin-bin: 00 01 ff (a binary value);
	//   - "meta": the request metadata as sorted "key=value" lines;
	//   - "deadline": the time left before the call's deadline in milliseconds, or "none";
	//   - "sleep": waits 2s whatever the deadline, then echoes.
	// With Options.Metadata its echoes carry header x-head: h and trailer x-custom: ok.
	Echo = "/grpctest.Raw/Echo"
	// Count is server streaming: it receives a count N and sends N messages
	// "msg <i>" with trailer x-count: N, waiting after the first until Release is
	// called (Canceled is closed if the call is canceled meanwhile). A count of 3 ends
	// in DataLoss "after three" after its messages; "fail" sends "msg 0" and ends in
	// ResourceExhausted "custom" with trailer x-custom: v.
	Count = "/grpctest.Raw/Count"
	// Sum is client streaming: it receives messages until the client's end and
	// answers "<count> messages, <total length> bytes".
	Sum = "/grpctest.Raw/Sum"
	// Chat is bidirectional: it sends header x-chat: open at once, answers each
	// message "re:<msg>" at once, and ends with trailer x-chat: closed at the
	// client's end.
	Chat = "/grpctest.Raw/Chat"
	// Stall is server streaming: it receives one message, sends "first" and waits 2s
	// whatever the deadline.
	Stall = "/grpctest.Raw/Stall"
)

// Options configure StartService. The zero value serves h2c, without Metadata.
type Options struct {
	// Cert, when set, makes the server speak TLS with it; nil is h2c.
	Cert *tls.Certificate
	// Metadata makes Echo's successful answers carry header x-head: h and trailer
	// x-custom: ok.
	Metadata bool
}

// Service is a running test service. Its methods are safe for concurrent use; it
// stops at the end of the test that started it.
type Service struct {
	opts        Options
	stop        chan struct{} // closed at shutdown: ends handlers that wait
	release     chan struct{} // closed by Release
	canceled    chan struct{} // closed by Count when its call is canceled
	releaseOnce sync.Once
	cancelOnce  sync.Once
}

// Release lets Count calls send past their first message, now and from then on.
// Calling it again does nothing.
func (s *Service) Release() { s.releaseOnce.Do(func() { close(s.release) }) }

// Canceled is closed when a Count call waiting for Release is canceled.
func (s *Service) Canceled() <-chan struct{} { return s.canceled }

var desc = grpc.ServiceDesc{
	ServiceName: Name,
	HandlerType: (*any)(nil),
	Methods:     []grpc.MethodDesc{{MethodName: "Echo", Handler: echo}},
	Streams: []grpc.StreamDesc{
		{StreamName: "Count", Handler: count, ServerStreams: true},
		{StreamName: "Sum", Handler: sum, ClientStreams: true},
		{StreamName: "Chat", Handler: chat, ServerStreams: true, ClientStreams: true},
		{StreamName: "Stall", Handler: stall, ServerStreams: true},
	},
}

// sleep waits 2s or until s stops.
func (s *Service) sleep() {
	select {
	case <-time.After(2 * time.Second):
	case <-s.stop:
	}
}

func echo(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
	s := srv.(*Service)
	var in []byte
	if err := dec(&in); err != nil {
		return nil, err
	}
	switch msg := string(in); {
	case msg == "fail":
		_ = grpc.SetTrailer(ctx, metadata.Pairs("x-custom", "v"))
		return nil, status.Error(codes.ResourceExhausted, "custom")
	case strings.HasPrefix(msg, "fail:"):
		_ = grpc.SetTrailer(ctx, metadata.Pairs("x-custom", "v", "x-bin-bin", "\x00\x01\xff"))
		return nil, status.Error(codes.ResourceExhausted, strings.TrimPrefix(msg, "fail:"))
	case msg == "sleep":
		s.sleep()
	case msg == "meta":
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
	case msg == "deadline":
		out := []byte("none")
		if dl, ok := ctx.Deadline(); ok {
			out = strconv.AppendInt(out[:0], time.Until(dl).Milliseconds(), 10)
		}
		return &out, nil
	}
	if s.opts.Metadata {
		_ = grpc.SetHeader(ctx, metadata.Pairs("x-head", "h"))
		_ = grpc.SetTrailer(ctx, metadata.Pairs("x-custom", "ok"))
	}
	out := append([]byte("echo:"), in...)
	return &out, nil
}

func count(srv any, stream grpc.ServerStream) error {
	s := srv.(*Service)
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
				s.cancelOnce.Do(func() { close(s.canceled) })
				return stream.Context().Err()
			case <-s.stop:
				return nil
			}
		}
	}
	stream.SetTrailer(metadata.Pairs("x-count", strconv.Itoa(n)))
	if n == 3 {
		return status.Error(codes.DataLoss, "after three")
	}
	return nil
}

func sum(_ any, stream grpc.ServerStream) error {
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

func chat(_ any, stream grpc.ServerStream) error {
	if err := stream.SendHeader(metadata.Pairs("x-chat", "open")); err != nil {
		return err
	}
	for {
		var in []byte
		err := stream.RecvMsg(&in)
		if errors.Is(err, io.EOF) {
			stream.SetTrailer(metadata.Pairs("x-chat", "closed"))
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

func stall(srv any, stream grpc.ServerStream) error {
	s := srv.(*Service)
	var in []byte
	if err := stream.RecvMsg(&in); err != nil {
		return err
	}
	out := []byte("first")
	if err := stream.SendMsg(&out); err != nil {
		return err
	}
	s.sleep()
	return nil
}

// StartService serves the service on a fresh loopback port until the test ends, and
// returns it with its address. At the test's end it ends the handlers that wait,
// stops the server and waits for it.
func StartService(t testing.TB, o Options) (*Service, string) {
	t.Helper()
	opts := []grpc.ServerOption{grpc.ForceServerCodec(Codec{})}
	if o.Cert != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{*o.Cert}})))
	}
	srv := grpc.NewServer(opts...)
	s := &Service{opts: o, stop: make(chan struct{}), release: make(chan struct{}), canceled: make(chan struct{})}
	srv.RegisterService(&desc, s)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		close(s.stop)
		srv.Stop()
		<-done
	})
	return s, ln.Addr().String()
}

// Start serves the service on a fresh loopback port (h2c) until the test ends and
// returns its address.
func Start(t testing.TB) string {
	t.Helper()
	_, addr := StartService(t, Options{})
	return addr
}

// Dial returns a client connection to addr (h2c) with the raw codec, closed when the
// test ends.
func Dial(t testing.TB, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(Codec{})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}
