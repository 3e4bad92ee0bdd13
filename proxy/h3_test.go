package proxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/edge-gw/edge/h3"
	"github.com/edge-gw/edge/internal/origintest"
	"github.com/edge-gw/edge/internal/testcert"
	"github.com/quic-go/quic-go/http3"
	"github.com/valyala/fasthttp"
)

// serveH3 serves HTTP/3 through handler on a fresh UDP port of 127.0.0.1 and returns
// its address and a quic-go HTTP/3 client that trusts its certificate.
func serveH3(t testing.TB, handler fasthttp.RequestHandler) (string, *http.Client) {
	return serveH3With(t, handler, h3.Config{})
}

// serveH3With is serveH3 with the server's configuration cfg.
func serveH3With(t testing.TB, handler fasthttp.RequestHandler, cfg h3.Config) (string, *http.Client) {
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
	q := h3.TLSConfig(&tls.Config{Certificates: []tls.Certificate{cert}})
	base := &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return q, nil }}
	srv, err := h3.New(pc, base, cfg, handler, nil)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	tr := &http3.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool, ServerName: "localhost"}}
	t.Cleanup(func() {
		tr.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		pc.Close()
	})
	return pc.LocalAddr().String(), &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// Over HTTP/3 every layer of the funnel answers as it does over HTTP/1.1: a proxied
// route, a limit's 429, a cache HIT, a seckill token and the others.
func TestH3FunnelParity(t *testing.T) {
	o := origintest.Start(t, func(ctx *fasthttp.RequestCtx) {
		ctx.Response.Header.Set("Cache-Control", "max-age=60")
		fmt.Fprintf(ctx, "origin %s %s proto=%s xfp=%s", ctx.Method(), ctx.Path(), ctx.Request.Header.Protocol(),
			ctx.Request.Header.Peek("X-Forwarded-Proto"))
	})
	e := startSeckill(t, funnelConfig(o.Addr))
	e.setStock(t, "42", 5)
	addr, c := serveH3(t, e.px.ListenerHandler("inner", ProtoH3))
	checkFunnelParity(t, e, c, "https://"+addr, "HTTP/3")
	// "inner" is no listener of the config: its requests count under "default".
	if n := gathered(t, e.reg, "edge_listener_requests_total", "protocol", "h3"); n < 10 {
		t.Errorf("edge_listener_requests_total{protocol=h3} = %v, want every HTTP/3 request counted", n)
	}
}
