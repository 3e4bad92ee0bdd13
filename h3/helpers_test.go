package h3

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/edge-gw/edge/internal/testcert"
	"github.com/quic-go/qpack"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"github.com/quic-go/quic-go/quicvarint"
	"github.com/valyala/fasthttp"
)

// testServer is a Server on a real UDP socket on 127.0.0.1:0.
type testServer struct {
	*Server
	addr string
	ca   *testcert.CA

	mu   sync.Mutex
	seen []string // "METHOD PATH BODY" of every request the handler got
}

func (ts *testServer) requests() []string {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return append([]string(nil), ts.seen...)
}

// startServer serves cfg with h, or with an echo handler when h is nil.
func startServer(t *testing.T, cfg Config, h fasthttp.RequestHandler) *testServer {
	t.Helper()
	ca := testcert.NewCA(t)
	leaf := ca.Leaf(t, testcert.Opts{Names: []string{"localhost"}})
	cert, err := tls.LoadX509KeyPair(leaf.CertFile, leaf.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	ts := &testServer{addr: pc.LocalAddr().String(), ca: ca}
	if h == nil {
		h = ts.echo
	}
	tcp := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}}
	q := TLSConfig(tcp)
	base := &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return q, nil }}
	s, err := New(pc, base, cfg, func(ctx *fasthttp.RequestCtx) {
		ts.mu.Lock()
		body := "<stream>" // left for the handler to read
		if !ctx.Request.IsBodyStream() {
			body = string(ctx.PostBody())
		}
		ts.seen = append(ts.seen, fmt.Sprintf("%s %s %s", ctx.Method(), ctx.RequestURI(), body))
		ts.mu.Unlock()
		h(ctx)
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ts.Server = s
	done := make(chan error, 1)
	go func() { done <- s.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ts
}

// echo answers with what it got: method, URI, host, a header and the body.
func (ts *testServer) echo(ctx *fasthttp.RequestCtx) {
	ctx.Response.Header.Set("X-Method", string(ctx.Method()))
	ctx.Response.Header.Set("X-Host", string(ctx.Host()))
	ctx.Response.Header.Set("X-Hello", string(ctx.Request.Header.Peek("X-Hello")))
	ctx.Response.Header.Set("X-Cookie", string(ctx.Request.Header.Peek("Cookie")))
	ctx.Response.Header.Set("X-Remote", ctx.RemoteAddr().String())
	ctx.Response.Header.Set("Connection", "keep-alive") // connection-specific: never sent
	ctx.Response.Header.SetContentType("text/plain")
	fmt.Fprintf(ctx, "%s %s %s", ctx.Method(), ctx.RequestURI(), ctx.PostBody())
}

func (ts *testServer) tlsConfig() *tls.Config {
	return &tls.Config{RootCAs: ts.ca.Pool, ServerName: "localhost", NextProtos: []string{ALPN},
		ClientSessionCache: tls.NewLRUClientSessionCache(8)}
}

// client is quic-go's HTTP/3 client for ts.
func (ts *testServer) client(t *testing.T) *http.Client {
	tr := &http3.Transport{TLSClientConfig: ts.tlsConfig()}
	t.Cleanup(func() { tr.Close() })
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func (ts *testServer) url(path string) string { return "https://" + ts.addr + path }

// rawResponse is an answer read off a request stream.
type rawResponse struct {
	statuses []int               // of every HEADERS frame: interim answers', then the final one
	heads    []map[string]string // the fields of every HEADERS frame
	status   int
	header   map[string]string
	body     []byte
}

// rawRequest sends one request on a new stream of qc, written frame by frame, so that
// it may go in 0-RTT whatever its method (quic-go's client sends only GET and HEAD
// early), and reads the answer.
func rawRequest(ctx context.Context, qc *quic.Conn, method, path string, body []byte) (rawResponse, error) {
	str, err := qc.OpenStreamSync(ctx)
	if err != nil {
		return rawResponse{}, err
	}
	var hb bytes.Buffer
	enc := qpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", method}, {":scheme", "https"}, {":authority", "localhost"},
		{":path", path}, {"content-length", strconv.Itoa(len(body))}} {
		enc.WriteField(qpack.HeaderField{Name: f[0], Value: f[1]})
	}
	b := quicvarint.Append(nil, 0x1) // HEADERS
	b = quicvarint.Append(b, uint64(hb.Len()))
	b = append(b, hb.Bytes()...)
	if len(body) > 0 {
		b = quicvarint.Append(b, 0x0) // DATA
		b = quicvarint.Append(b, uint64(len(body)))
		b = append(b, body...)
	}
	if _, err := str.Write(b); err != nil {
		return rawResponse{}, err
	}
	str.Close()
	return readRaw(ctx, str)
}

// waitFor polls cond until it holds or 20 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
