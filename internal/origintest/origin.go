// Package origintest starts real fasthttp origins on 127.0.0.1:0 for tests and
// counts what reached them: requests and TCP connections.
package origintest

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// Origin is a running fasthttp server. Its counters are safe to read at any time.
type Origin struct {
	Addr     string
	Requests atomic.Int64 // requests served
	Conns    atomic.Int64 // TCP connections accepted

	mu   sync.Mutex
	last fasthttp.RequestHeader // headers of the last request
	srv  *fasthttp.Server
	ln   net.Listener
}

// Start serves h on a fresh loopback port until the test ends. A nil h answers
// 200 "ok from ADDR".
func Start(t testing.TB, h fasthttp.RequestHandler) *Origin {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("origin: cannot listen: %v", err)
	}
	o := &Origin{Addr: ln.Addr().String()}
	if h == nil {
		body := []byte("ok from " + o.Addr)
		h = func(ctx *fasthttp.RequestCtx) { ctx.SetBody(body) }
	}
	o.srv = &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			o.Requests.Add(1)
			o.mu.Lock()
			ctx.Request.Header.CopyTo(&o.last)
			o.mu.Unlock()
			h(ctx)
		},
		NoDefaultServerHeader: true,
		// Idle worker goroutines go after a second (fasthttp's default is 10 s), so tests
		// that compare goroutine counts with a baseline settle quickly.
		MaxIdleWorkerDuration: time.Second,
	}
	o.ln = &countingListener{Listener: ln, n: &o.Conns}
	go o.srv.Serve(o.ln)
	t.Cleanup(o.Stop)
	return o
}

// Stop closes the listener and every connection; the address then refuses.
func (o *Origin) Stop() {
	o.srv.Shutdown()
}

// LastHeader returns a copy of the headers of the last request served.
func (o *Origin) LastHeader() *fasthttp.RequestHeader {
	o.mu.Lock()
	defer o.mu.Unlock()
	var h fasthttp.RequestHeader
	o.last.CopyTo(&h)
	return &h
}

type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// FreeAddr returns a loopback address nothing listens on (just closed).
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
