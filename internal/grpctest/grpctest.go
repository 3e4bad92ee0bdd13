// Package grpctest runs a real grpc-go server for tests, with a hand-written service
// and a codec that passes messages through as bytes, so no generated code is needed.
// Messages are *[]byte on both sides.
package grpctest

import (
	"context"
	"fmt"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
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

// Service names and methods.
const (
	Service = "grpctest.Raw"
	Echo    = "/grpctest.Raw/Echo" // unary: "echo:<msg>"; "fail": ResourceExhausted "custom" with trailer x-custom: v
	Chat    = "/grpctest.Raw/Chat" // bidirectional: each message answered "re:<msg>" at once
)

var desc = grpc.ServiceDesc{
	ServiceName: Service,
	HandlerType: (*any)(nil),
	Methods:     []grpc.MethodDesc{{MethodName: "Echo", Handler: echo}},
	Streams: []grpc.StreamDesc{
		{StreamName: "Chat", Handler: chat, ServerStreams: true, ClientStreams: true},
	},
}

func echo(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
	var in []byte
	if err := dec(&in); err != nil {
		return nil, err
	}
	if string(in) == "fail" {
		_ = grpc.SetTrailer(ctx, metadata.Pairs("x-custom", "v"))
		return nil, status.Error(codes.ResourceExhausted, "custom")
	}
	out := append([]byte("echo:"), in...)
	return &out, nil
}

func chat(_ any, stream grpc.ServerStream) error {
	for {
		var in []byte
		if err := stream.RecvMsg(&in); err != nil {
			return nil // the client closed its side
		}
		out := append([]byte("re:"), in...)
		if err := stream.SendMsg(&out); err != nil {
			return err
		}
	}
}

// Start serves the service on a fresh loopback port (h2c) until the test ends.
func Start(t testing.TB) string {
	t.Helper()
	srv := grpc.NewServer(grpc.ForceServerCodec(Codec{}))
	srv.RegisterService(&desc, struct{}{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return ln.Addr().String()
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
