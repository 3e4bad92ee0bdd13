package proxy

import (
	"context"
	"time"

	"fmt"
	"github.com/edge-gw/edge/internal/grpctest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

func grpcConfig(upstream string) string {
	return fmt.Sprintf(`
trusted_proxies = ["127.0.0.1/32"]
blacklist {
  ips = ["10.0.0.0/8"]
}
upstream "grpc" {
  servers  = [%q]
  protocol = "h2c"
  timeout  = "2s"
}
upstream "down" {
  servers         = ["127.0.0.1:1"]
  protocol        = "h2c"
  connect_timeout = "200ms"
}
route "limited" {
  match { path = "/grpctest.Raw/Echo" }
  upstream = "grpc"
  limit "user" {
    key   = "header:X-User-Id"
    rate  = "1r/m"
    burst = 1
  }
}
route "down" {
  match { path = "/grpctest.Down/" }
  upstream = "down"
}
route "grpc" {
  match { path = "/" }
  upstream = "grpc"
}
`, upstream)
}

// A plain HTTP/2 (h2c) upstream: an HTTP/1.1 client gets its answer, which streams.
func TestH2Upstream(t *testing.T) {
	origin := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "proto=%s path=%s xff=%s", r.Proto, r.URL.Path, r.Header.Get("X-Forwarded-For"))
	}))
	origin.Config.Protocols = new(http.Protocols)
	origin.Config.Protocols.SetUnencryptedHTTP2(true) // h2c only: an HTTP/1.1 request would fail
	origin.Start()
	t.Cleanup(origin.Close)
	e := startEdge(t, grpcConfig(origin.Listener.Addr().String()))
	resp, err := http.Get("http://" + e.addr + "/plain")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "proto=HTTP/2.0 path=/plain xff=127.0.0.1" {
		t.Errorf("through an h2c upstream: %d %q", resp.StatusCode, b)
	}
}

// edge's own answers to a gRPC call are gRPC statuses: a ban is PERMISSION_DENIED, an
// unreachable upstream UNAVAILABLE, a limit RESOURCE_EXHAUSTED.
func TestGRPCEdgeAnswers(t *testing.T) {
	e := startEdge(t, grpcConfig(grpctest.Start(t)))
	cc := grpctest.Dial(t, serveH2C(t, e.px.ListenerHandler("inner", ProtoH2)))
	f := func(method string, want codes.Code, md ...string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), md...), 5*time.Second)
		defer cancel()
		in, out := []byte("hi"), []byte(nil)
		if err := cc.Invoke(ctx, method, &in, &out); status.Code(err) != want {
			t.Errorf("%s %v: %v, want %v", method, md, err, want)
		}
	}
	f(grpctest.Echo, codes.PermissionDenied, "x-user-id", "u2", "x-forwarded-for", "10.1.1.1")
	f("/grpctest.Down/Call", codes.Unavailable)
	f(grpctest.Echo, codes.OK, "x-user-id", "u1") // the upstream's answer, its grpc-status a trailer
	f(grpctest.Echo, codes.ResourceExhausted, "x-user-id", "u1")
}

// gRPC calls pass through edge with their statuses and trailer metadata intact, unary
// and bidirectional streaming (each message answered before the next is sent: only a
// full-duplex path passes).
func TestGRPCThroughEdge(t *testing.T) {
	e := startEdge(t, grpcConfig(grpctest.Start(t)))
	cc := grpctest.Dial(t, serveH2C(t, e.px.ListenerHandler("inner", ProtoH2)))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	in, out := []byte("fail"), []byte(nil)
	var trailer metadata.MD
	err := cc.Invoke(ctx, grpctest.Echo, &in, &out, grpc.Trailer(&trailer))
	if st := status.Convert(err); st.Code() != codes.ResourceExhausted || st.Message() != "custom" || trailer.Get("x-custom")[0] != "v" {
		t.Errorf("custom status: %v, trailer %v", err, trailer)
	}

	stream, err := cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, grpctest.Chat)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		msg := []byte(fmt.Sprintf("m%d", i))
		if err := stream.SendMsg(&msg); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		var got []byte
		if err := stream.RecvMsg(&got); err != nil || string(got) != "re:"+string(msg) {
			t.Fatalf("message %d: %q %v", i, got, err)
		}
	}
	stream.CloseSend()
	var last []byte
	if err := stream.RecvMsg(&last); err != io.EOF {
		t.Errorf("end of the stream: %v", err)
	}
}
