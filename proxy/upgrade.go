package proxy

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/edge-gw/edge/tunnel"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
)

// WebSocket tunnels (routes with websocket = true). An upgrade request runs the whole
// funnel like any other (blacklist, limits count the handshake, require_token, the
// route's cell or pool, bulkhead and breaker); send then hands it to sendUpgrade,
// which forwards it on a connection of its own and reads the origin's answer. Only a
// 101 whose Upgrade matches the request's turns the client's connection into a
// tunnel; any other answer is relayed as an ordinary response and the client's
// connection stays HTTP, so nothing the client sends after its upgrade request reaches
// the origin unless the origin agreed to speak the new protocol (the Upgrade smuggling
// class of bugs).

// routeTunnel is a websocket route's tunnel settings.
type routeTunnel struct {
	group *tunnel.Group // survives reloads (tunnelState)
	idle  time.Duration
}

// tunnelState keeps every route's tunnel group across reloads, so open tunnels stay
// counted against max_tunnels whatever the config does.
type tunnelState struct {
	reg    *tunnel.Registry
	mu     sync.Mutex
	groups map[string]*tunnel.Group
}

func (p *Proxy) initTunnels() {
	p.tunnelState = &tunnelState{reg: tunnel.NewRegistry(), groups: map[string]*tunnel.Group{}}
	p.metrics.Reg.MustRegister(tunnelCollector{p.tunnelState})
}

// buildTunnel gives a websocket route its group, created on first use and re-bounded by
// each config.
func (p *Proxy) buildTunnel(rt *route) {
	if !rt.cfg.WebSocket {
		return
	}
	st := p.tunnelState
	st.mu.Lock()
	defer st.mu.Unlock()
	g := st.groups[rt.name]
	if g == nil {
		g = st.reg.NewGroup(rt.cfg.MaxTunnels)
		st.groups[rt.name] = g
	} else {
		g.SetMax(rt.cfg.MaxTunnels)
	}
	rt.tunnel = &routeTunnel{group: g, idle: rt.cfg.TunnelIdleTimeout}
}

// CloseTunnels lets open tunnels run until ctx ends, then closes them; it returns when
// none is left. Part of a graceful stop: the listeners stop first.
func (p *Proxy) CloseTunnels(ctx context.Context) error { return p.tunnelState.reg.Shutdown(ctx) }

var (
	strUpgrade     = []byte("Upgrade")
	strWebSocket   = []byte("websocket")
	hdrConnection  = []byte("Connection")
	errTunnelsFull = jsonError(503, "too_many_tunnels")
)

// upgradeToken returns the Upgrade token of a request that asks for one the route
// allows (websocket), or nil: GET, Connection naming upgrade, Upgrade: websocket; or
// an HTTP/2 extended CONNECT for websocket (RFC 8441, upgrade_h2.go).
func upgradeToken(h *fasthttp.RequestHeader) []byte {
	if string(h.Method()) == "CONNECT" { // HTTP/2 extended CONNECT (upgrade_h2.go)
		if bytes.EqualFold(h.PeekBytes(hdrEdgeProtocol), strWebSocket) {
			return strWebSocket
		}
		return nil
	}
	up := h.PeekBytes(strUpgrade)
	if len(up) == 0 || !bytes.EqualFold(bytes.TrimSpace(up), strWebSocket) || string(h.Method()) != "GET" {
		return nil
	}
	for _, tok := range bytes.Split(h.PeekBytes(hdrConnection), []byte(",")) {
		if bytes.EqualFold(bytes.TrimSpace(tok), strUpgrade) {
			return strWebSocket
		}
	}
	return nil
}

// sendUpgrade forwards an upgrade request to a server of pl on a new connection and
// either relays the origin's answer or, on its 101, hijacks the client's connection
// into a tunnel. An HTTP/2 extended CONNECT takes the same way (upgrade_h2.go): the
// handshake is turned into HTTP/1.1's, and the 101 into a 200 whose stream carries the
// tunnel. The route's tunnel slot is taken before dialing and given back when no tunnel
// comes of it.
func (p *Proxy) sendUpgrade(ctx *fasthttp.RequestCtx, s *Snapshot, pl *pool, peer, client netip.Addr, sc *scratch) outcome {
	req := &ctx.Request
	h2ws := string(req.Header.Method()) == "CONNECT" // extended CONNECT: upgradeToken checked the rest
	if h2ws && sc.e.proto != ProtoH2 {
		// Only h2 sets the protocol header (and drops a client's): an HTTP/1.1 CONNECT
		// claiming it is not served.
		errMethodNotAllowed.write(ctx)
		return outcomeNone
	}
	rtun := sc.tunnel
	if !rtun.group.Acquire() {
		errTunnelsFull.write(ctx)
		return outcomeNone
	}
	tunnelled := false
	defer func() {
		if !tunnelled {
			rtun.group.Release()
		}
	}()
	var key tunnel.WebSocketKey
	var body io.Reader
	if h2ws {
		body = req.BodyStream() // the client's tunnel bytes: not part of the handshake
		key = h1Handshake(&req.Header)
	}
	sc.buf = prepareForward(&req.Header, peer, client, s.trusted.contains(peer), sc.door.fwdProto, sc.buf)
	req.Header.SetCanonical(hdrConnection, strUpgrade) // prepareForward dropped both as hop-by-hop
	req.Header.SetCanonical(strUpgrade, sc.upgrade)

	i, up := pl.pick(0)
	if i < 0 || !up && pl.strict {
		if pl.unavailable != nil {
			pl.unavailable.write(ctx)
		} else {
			errBadGateway.write(ctx)
		}
		return outcomeNone
	}
	srv, set := pl.servers[i], pl.settings[i]
	sc.e.upstream = srv.addr
	fail := func(f failure) outcome {
		pl.errs[f].Inc()
		srv.health.failure()
		ctx.Response.Reset()
		failureAnswer(f).write(ctx)
		return outcomeOf(f)
	}
	deadline := ctx.Time().Add(pl.timeout)
	conn, err := net.DialTimeout("tcp", srv.addr, min(set.connectTimeout, time.Until(deadline)))
	if err != nil {
		return fail(failConnect)
	}
	conn.SetDeadline(deadline)
	if srv.proxyProto != "" {
		if _, err := conn.Write(proxyHeader(ctx, srv.proxyProto, client, peer, sc)); err != nil {
			conn.Close()
			return fail(failConnect)
		}
	}
	bw := bufio.NewWriter(conn)
	if h2ws {
		err = req.Header.Write(bw) // a GET: no body
	} else {
		err = req.Write(bw)
	}
	if err == nil {
		err = bw.Flush()
	}
	br := bufio.NewReader(conn)
	resp := &ctx.Response
	if err == nil {
		err = resp.ReadLimitBody(br, int(set.maxResponseSize))
	}
	if err != nil {
		conn.Close()
		if f := classify(err); f != failConnect {
			return fail(f)
		}
		return fail(failBroken)
	}
	switched := resp.StatusCode() == fasthttp.StatusSwitchingProtocols && bytes.EqualFold(bytes.TrimSpace(resp.Header.PeekBytes(strUpgrade)), sc.upgrade)
	if h2ws && resp.StatusCode() == fasthttp.StatusSwitchingProtocols && (!switched || !key.Accepted(resp.Header.PeekBytes(hdrWSAccept))) {
		// A 101 HTTP/2 cannot carry, and not the handshake edge asked for.
		conn.Close()
		return fail(failBroken)
	}
	srv.health.success()
	if !switched {
		// Not a tunnel: an ordinary answer, and the client's connection stays HTTP.
		conn.Close()
		stripResponseHop(&resp.Header)
		if resp.StatusCode() >= 500 {
			return outcomeFailed
		}
		return outcomeOK
	}
	conn.SetDeadline(time.Time{})
	stripResponseHop(&resp.Header)
	var pending []byte
	if n := br.Buffered(); n > 0 { // the origin spoke first, right behind its 101
		pending, _ = br.Peek(n)
		pending = bytes.Clone(pending)
	}
	tunnelled = true
	if h2ws {
		openH2Tunnel(ctx, body, conn, rtun, pending)
		return outcomeOK
	}
	// The 101 goes to the client as the origin sent it, with edge's own Connection
	// and Upgrade (fasthttp keeps Connection as a flag, not a header line).
	resp.Header.SetCanonical(hdrConnection, strUpgrade)
	resp.Header.SetCanonical(strUpgrade, sc.upgrade)
	raw := ctx.Conn()
	if w, ok := raw.(interface{ Unwatch() }); ok {
		w.Unwatch() // the tunnel's idle timeout takes over from the listener's
	}
	g, idle := rtun.group, rtun.idle
	ctx.Hijack(func(c net.Conn) {
		g.Run(tunnel.WithCloseWrite(c, raw), conn, tunnel.Options{IdleTimeout: idle, UpstreamPending: pending})
	})
	return outcomeOK
}

// tunnelCollector exports the tunnels of every websocket route at scrape time.
type tunnelCollector struct{ st *tunnelState }

var (
	descTunnelsActive = prometheus.NewDesc("edge_tunnels_active", "Open tunnels (WebSocket), by route.", []string{"route"}, nil)
	descTunnelsTotal  = prometheus.NewDesc("edge_tunnels_total", "Tunnels opened since start, by route.", []string{"route"}, nil)
	descTunnelBytes   = prometheus.NewDesc("edge_tunnel_bytes_total",
		"Bytes copied through tunnels, by route and direction (up: client to upstream, down: upstream to client).",
		[]string{"route", "direction"}, nil)
)

func (c tunnelCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descTunnelsActive
	ch <- descTunnelsTotal
	ch <- descTunnelBytes
}

func (c tunnelCollector) Collect(ch chan<- prometheus.Metric) {
	c.st.mu.Lock()
	defer c.st.mu.Unlock()
	for name, g := range c.st.groups {
		ch <- prometheus.MustNewConstMetric(descTunnelsActive, prometheus.GaugeValue, float64(g.Active()), name)
		ch <- prometheus.MustNewConstMetric(descTunnelsTotal, prometheus.CounterValue, float64(g.Total()), name)
		up, down := g.Bytes()
		ch <- prometheus.MustNewConstMetric(descTunnelBytes, prometheus.CounterValue, float64(up), name, "up")
		ch <- prometheus.MustNewConstMetric(descTunnelBytes, prometheus.CounterValue, float64(down), name, "down")
	}
}
