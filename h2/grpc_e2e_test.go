package h2_test

// The goal of streamed request bodies and response trailers, end to end: a grpc-go
// client talks to h2's server, whose handler forwards every call with h2up (edge's
// HTTP/2 client) to a grpc-go server. Unary, server-, client- and bidirectional
// streaming calls pass, with grpc-status, grpc-message and custom metadata intact.
// (An external test package: h2 itself imports no edge package.)

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/edge-gw/edge/h2"
	"github.com/edge-gw/edge/h2up"
	"github.com/edge-gw/edge/internal/grpctest"
	"github.com/valyala/fasthttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// startChain starts the grpc-go upstream, edge's h2 server forwarding to it with h2up,
// and returns a grpc-go client connection to edge.
func startChain(t *testing.T) (*grpc.ClientConn, *h2.Server) {
	t.Helper()
	svc, uaddr := grpctest.StartService(t, grpctest.Options{Metadata: true})
	svc.Release() // Count streams all its messages at once

	up := h2up.New(h2up.Options{Addr: uaddr})
	t.Cleanup(up.Close)
	srv := &h2.Server{
		Config: h2.Config{StreamRequest: h2up.IsGRPC},
		Handler: func(ctx *fasthttp.RequestCtx) {
			if string(ctx.Request.Header.Peek("Te")) != "trailers" { // gRPC needs it upstream
				h2up.WriteStatus(&ctx.Response, int(codes.Internal), "te: trailers lost")
				return
			}
			if _, err := up.Do(context.Background(), &ctx.Request, &ctx.Response); err != nil {
				h2up.WriteStatus(&ctx.Response, int(codes.Unavailable), err.Error())
			}
		},
	}
	eln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := eln.Accept()
			if err != nil {
				return
			}
			go srv.ServeConn(c)
		}
	}()
	t.Cleanup(func() {
		eln.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})

	return grpctest.Dial(t, eln.Addr().String()), srv
}

func TestGRPCThroughEdge(t *testing.T) {
	cc, srv := startChain(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	t.Run("unary", func(t *testing.T) {
		in, out := []byte("hello"), []byte(nil)
		var hdr, tlr metadata.MD
		if err := cc.Invoke(ctx, grpctest.Echo, &in, &out, grpc.Header(&hdr), grpc.Trailer(&tlr)); err != nil {
			t.Fatal(err)
		}
		if string(out) != "echo:hello" || first(hdr, "x-head") != "h" || first(tlr, "x-custom") != "ok" {
			t.Errorf("answer %q, header %v, trailer %v", out, hdr, tlr)
		}
	})

	t.Run("unary error (Trailers-Only)", func(t *testing.T) {
		in, out := []byte("fail:custom: 100% déjà vu"), []byte(nil)
		var tlr metadata.MD
		err := cc.Invoke(ctx, grpctest.Echo, &in, &out, grpc.Trailer(&tlr))
		st := status.Convert(err)
		if st.Code() != codes.ResourceExhausted || st.Message() != "custom: 100% déjà vu" {
			t.Errorf("status %v %q", st.Code(), st.Message())
		}
		if first(tlr, "x-custom") != "v" || first(tlr, "x-bin-bin") != "\x00\x01\xff" {
			t.Errorf("trailer %v", tlr)
		}
	})

	t.Run("server streaming", func(t *testing.T) {
		for _, n := range []int{100, 3, 0} {
			s, err := cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, grpctest.Count)
			if err != nil {
				t.Fatal(err)
			}
			in := []byte(strconv.Itoa(n))
			if err := s.SendMsg(&in); err != nil {
				t.Fatal(err)
			}
			s.CloseSend()
			got := 0
			for {
				var m []byte
				err := s.RecvMsg(&m)
				if err == io.EOF {
					break
				}
				if err != nil {
					if n == 3 && status.Code(err) == codes.DataLoss && status.Convert(err).Message() == "after three" {
						break
					}
					t.Fatalf("count %d: after %d messages: %v", n, got, err)
				}
				if string(m) != "msg "+strconv.Itoa(got) {
					t.Fatalf("count %d: message %q", n, m)
				}
				got++
			}
			if got != n || first(s.Trailer(), "x-count") != strconv.Itoa(n) {
				t.Errorf("count %d: %d messages, trailer %v", n, got, s.Trailer())
			}
		}
	})

	t.Run("client streaming", func(t *testing.T) {
		s, err := cc.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true}, grpctest.Sum)
		if err != nil {
			t.Fatal(err)
		}
		total := 0
		for i := range 50 {
			m := make([]byte, 1000*i)
			total += len(m)
			if err := s.SendMsg(&m); err != nil {
				t.Fatal(err)
			}
		}
		s.CloseSend()
		var out []byte
		if err := s.RecvMsg(&out); err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("50 messages, %d bytes", total); string(out) != want {
			t.Errorf("%q, want %q", out, want)
		}
	})

	t.Run("bidirectional", func(t *testing.T) {
		s, err := cc.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, grpctest.Chat)
		if err != nil {
			t.Fatal(err)
		}
		hdr, err := s.Header()
		if err != nil || first(hdr, "x-chat") != "open" {
			t.Fatalf("header %v, %v", hdr, err)
		}
		start := time.Now()
		for i := range 100 {
			in := []byte("ping " + strconv.Itoa(i))
			if err := s.SendMsg(&in); err != nil {
				t.Fatal(err)
			}
			var out []byte
			if err := s.RecvMsg(&out); err != nil || string(out) != "re:"+string(in) {
				t.Fatalf("round %d: %q, %v", i, out, err)
			}
		}
		t.Logf("100 bidirectional round trips through edge in %v", time.Since(start).Round(time.Millisecond))
		s.CloseSend()
		var out []byte
		if err := s.RecvMsg(&out); err != io.EOF {
			t.Fatalf("after CloseSend: %q, %v", out, err)
		}
		if first(s.Trailer(), "x-chat") != "closed" {
			t.Errorf("trailer %v", s.Trailer())
		}
	})

	t.Run("cancel mid-stream", func(t *testing.T) {
		cctx, ccancel := context.WithCancel(ctx)
		s, err := cc.NewStream(cctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, grpctest.Chat)
		if err != nil {
			t.Fatal(err)
		}
		in := []byte("one")
		var out []byte
		if err := s.SendMsg(&in); err != nil || s.RecvMsg(&out) != nil {
			t.Fatal("first round failed")
		}
		ccancel()
		if err := s.RecvMsg(&out); status.Code(err) != codes.Canceled {
			t.Errorf("after cancel: %v", err)
		}
	})

	deadline := time.Now().Add(5 * time.Second)
	for srv.Stats().StreamsActive != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d streams still active", srv.Stats().StreamsActive)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func first(md metadata.MD, k string) string {
	if v := md.Get(k); len(v) > 0 {
		return v[0]
	}
	return ""
}
