package proxy

import (
	"context"
	"crypto/tls"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/edge-gw/edge/h2"
	"github.com/edge-gw/edge/internal/grpctest"
	"github.com/edge-gw/edge/internal/testcert"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
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

// A quiet gRPC stream is not cut after read_timeout (which bounds requests edge holds):
// without a deadline it may pause up to idle_timeout between messages, with one
// (grpc-timeout) as long as the deadline allows.
func TestGRPCQuietStreams(t *testing.T) {
	e := startEdge(t, "read_timeout = \"300ms\"\nidle_timeout = \"1500ms\"\n"+grpcConfig(grpctest.Start(t)))
	cc := grpctest.Dial(t, serveH2CWith(t, e.px.ListenerHandler("inner", ProtoH2),
		h2.Config{StreamRequest: StreamRequest(4 << 20), ReadTimeout: 300 * time.Millisecond}))
	chat := func(deadline time.Duration, pause time.Duration) error {
		ctx, cancel := context.WithCancel(context.Background())
		if deadline > 0 {
			ctx, cancel = context.WithTimeout(context.Background(), deadline)
		}
		defer cancel()
		stream, err := cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, grpctest.Chat)
		if err != nil {
			return err
		}
		for i := range 2 {
			if i == 1 {
				time.Sleep(pause) // the client's pace, not a wait for something
			}
			msg := []byte(fmt.Sprintf("m%d", i))
			if err := stream.SendMsg(&msg); err != nil {
				return fmt.Errorf("send %d: %w", i, err)
			}
			var got []byte
			if err := stream.RecvMsg(&got); err != nil || string(got) != "re:"+string(msg) {
				return fmt.Errorf("message %d: %q %w", i, got, err)
			}
		}
		stream.CloseSend()
		var last []byte
		if err := stream.RecvMsg(&last); err != io.EOF {
			return fmt.Errorf("end of the stream: %w", err)
		}
		return nil
	}
	if err := chat(0, 800*time.Millisecond); err != nil {
		t.Errorf("no deadline, quiet for 800ms (read_timeout 300ms, idle_timeout 1.5s): %v", err)
	}
	if err := chat(10*time.Second, 2500*time.Millisecond); err != nil {
		t.Errorf("deadline 10s, quiet for 2.5s: %v", err)
	}
	if err := chat(0, 2500*time.Millisecond); err == nil {
		t.Errorf("no deadline, quiet for 2.5s (idle_timeout 1.5s): the stream went on")
	}
}

// An upstream with protocol "h2" is spoken to over TLS, verified against tls_ca_file
// under tls_server_name; grpc-timeout is the call's deadline through edge.
func TestGRPCTLSUpstreamDeadline(t *testing.T) {
	ca := testcert.NewCA(t)
	leaf := ca.Leaf(t, testcert.Opts{Names: []string{"grpc.internal"}})
	cert, err := tls.LoadX509KeyPair(leaf.CertFile, leaf.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	_, addr := grpctest.StartService(t, grpctest.Options{Cert: &cert})
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	e := startEdge(t, fmt.Sprintf(`
upstream "tls" {
  servers         = [%q]
  protocol        = "h2"
  tls_server_name = "grpc.internal"
  tls_ca_file     = %q
  timeout         = "5s"
}
upstream "wrong-name" {
  servers         = [%q]
  protocol        = "h2"
  tls_server_name = "other.internal"
  tls_ca_file     = %q
}
route "wrong" {
  match { path = "/grpctest.Wrong/" }
  upstream = "wrong-name"
}
route "grpc" {
  match { path = "/" }
  upstream = "tls"
}
`, addr, caFile, addr, caFile))
	cc := grpctest.Dial(t, serveH2C(t, e.px.ListenerHandler("default", ProtoH2)))

	call := func(method, msg string, d time.Duration) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		in, out := []byte(msg), []byte(nil)
		err := cc.Invoke(ctx, method, &in, &out)
		return string(out), err
	}
	if got, err := call(grpctest.Echo, "over tls", 5*time.Second); err != nil || got != "echo:over tls" {
		t.Errorf("echo over a TLS upstream: %q %v", got, err)
	}
	// The upstream sees the client's deadline, less what the trip took.
	got, err := call(grpctest.Echo, "deadline", 3*time.Second)
	if ms, perr := strconv.Atoi(got); err != nil || perr != nil || ms > 3000 || ms < 2000 {
		t.Errorf("deadline seen upstream: %q %v, want 2000-3000 ms", got, err)
	}
	// A call past its deadline ends at it, not after the upstream's 2s sleep.
	start := time.Now()
	if _, err := call(grpctest.Echo, "sleep", 300*time.Millisecond); status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("call past its deadline: %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("call with a 300ms deadline ended after %v", d)
	}
	// A certificate that does not name tls_server_name is refused: UNAVAILABLE.
	if _, err := call("/grpctest.Wrong/Echo", "x", 5*time.Second); status.Code(err) != codes.Unavailable {
		t.Errorf("upstream certificate for another name: %v, want Unavailable", err)
	}
}
