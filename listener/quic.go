package listener

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"strconv"

	"github.com/edge-gw/edge/h3"
	"github.com/edge-gw/edge/handover"
	"github.com/edge-gw/edge/tlsstore"
	"github.com/valyala/fasthttp"
)

// quicSide is a TLS listener's HTTP/3 side: a UDP socket at the TCP socket's address
// (the same port when the configured one is 0), served by package h3.
type quicSide struct {
	pc     *net.UDPConn
	srv    *h3.Server
	base   *tls.Config // long-lived: session-ticket keys; GetConfigForClient gives spec.h3TLS
	altSvc []byte      // the Alt-Svc value TCP answers carry: h3=":PORT"; ma=86400
	done   chan struct{}
}

// altSvcMaxAge is how long a client may remember that HTTP/3 is offered (one day, as
// nginx and Caddy announce it).
const altSvcMaxAge = "86400"

var hdrAltSvc = []byte("Alt-Svc")

func (sp *Spec) servesH3() bool { return sp.TLS != nil && sp.serves(h3.ALPN) }

// udpKey is the handover key of a listener's UDP socket.
func udpKey(sp *Spec) string { return "listener " + key(sp) + " udp" }

// bindQUIC opens l's UDP socket for sp; nothing is served until startQUIC.
func (l *Listener) bindQUIC(sp *Spec, tickets *tlsstore.Tickets) (*quicSide, error) {
	pc, err := handover.ListenUDP(udpKey(sp), l.ln.Addr().String())
	if err != nil {
		return nil, err
	}
	q := &quicSide{pc: pc, done: make(chan struct{})}
	q.base = &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		return l.spec.Load().h3TLS, nil
	}}
	if tickets != nil {
		tickets.Register(q.base)
	}
	srv, err := h3.New(pc, q.base, sp.H3Config, func(ctx *fasthttp.RequestCtx) { l.spec.Load().H3Handler(ctx) }, nil)
	if err != nil {
		pc.Close()
		if tickets != nil {
			tickets.Unregister(q.base)
		}
		return nil, err
	}
	q.srv = srv
	q.altSvc = []byte(`h3=":` + strconv.Itoa(pc.LocalAddr().(*net.UDPAddr).Port) + `"; ma=` + altSvcMaxAge)
	return q, nil
}

func (q *quicSide) start(l *Listener, log *slog.Logger) {
	go func() {
		defer close(q.done)
		if err := q.srv.Serve(); err != nil {
			log.Error("listener: HTTP/3 server stopped", "listener", l.spec.Load().Name, "error", err)
		}
	}()
}

// drain sends GOAWAY on every QUIC connection, waits for their requests until ctx
// ends, then closes the socket.
func (q *quicSide) drain(ctx context.Context, tickets *tlsstore.Tickets) error {
	err := q.srv.Shutdown(ctx)
	<-q.done
	q.pc.Close()
	if tickets != nil {
		tickets.Unregister(q.base)
	}
	return err
}

// abort closes a side bound by Prepare and never started.
func (q *quicSide) abort(tickets *tlsstore.Tickets) {
	q.srv.Shutdown(context.Background())
	q.pc.Close()
	if tickets != nil {
		tickets.Unregister(q.base)
	}
}

// advertise adds Alt-Svc to an answer of a listener that serves HTTP/3.
func (l *Listener) advertise(ctx *fasthttp.RequestCtx) {
	if q := l.quic.Load(); q != nil {
		ctx.Response.Header.SetCanonical(hdrAltSvc, q.altSvc)
	}
}
