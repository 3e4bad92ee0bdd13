// Package proxy is edge's request hot path: the fasthttp handler, the runtime
// snapshot built from a config, route matching, upstream pools and the mapping of
// failures to answers.
//
// Contract of the hot path: a request loads the current *Snapshot once and keeps
// it to the end; it allocates nothing in steady state (guarded by AllocsPerRun
// tests); it keeps no reference to the *fasthttp.RequestCtx after returning.
package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edge-gw/edge/config"
	"github.com/edge-gw/edge/h2up"
	"github.com/edge-gw/edge/rawsock"
	"github.com/edge-gw/edge/watchdog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
)

// Proxy serves client requests with the current snapshot. It owns what outlives a
// config: upstream connection pools, metrics and the access log. Safe for
// concurrent use; Apply is called by one goroutine (the reload loop).
type Proxy struct {
	snap    atomic.Pointer[Snapshot]
	reg     *registry
	metrics *Metrics
	log     atomic.Pointer[accessLog]

	applyMu sync.Mutex

	// Feature state that outlives snapshots, owned by each feature's file.
	limitState     *limitState
	blacklistState *blacklistState
	cellState      *cellState
	cacheState     *cacheState
	seckillState   *seckillState
	idemState      *idemState
	degradeState   *degradeState
	clusterState   *clusterState                 // cluster.go
	redis          *redisRegistry                // Redis clients shared by features (redis.go)
	doors          *doorState                    // listener names and their counters (door.go)
	tunnelState    *tunnelState                  // WebSocket tunnel groups by route (upgrade.go)
	roomState      *roomState                    // waiting rooms by name (waitroom.go)
	acme           atomic.Pointer[ACMEResponder] // answers HTTP-01 challenges (acme.go); nil: none
	compressCounts *compressCounts               // edge_compress_total (compress.go)
}

// New returns a Proxy with no snapshot; call Apply before serving.
func New(m *Metrics) *Proxy {
	p := &Proxy{reg: newRegistry(), metrics: m, redis: newRedisRegistry()}
	p.initLimits()
	p.initBlacklist()
	p.initCells()
	p.initCache()
	p.initSeckill()
	p.initIdempotency()
	p.initDegrade()
	p.initCluster()
	p.initDoors()
	p.initTunnels()
	p.initRooms()
	p.initCompression()
	return p
}

// Check builds the runtime form of cfg without keeping it: the same code path as
// Apply, minus the swap. It is what `edge -check` runs after config.Load.
func Check(cfg *config.Config) error {
	s, err := New(NewMetrics(prometheus.NewRegistry())).build(cfg, nil)
	if err != nil {
		return err
	}
	s.retire()
	return nil
}

// ErrRestartNeeded wraps a reload refused because a setting changed that only a
// restart can apply.
var ErrRestartNeeded = errors.New("restart edge to apply")

// restartOnly compares the settings that a running listener cannot change.
func restartOnly(old, cfg *config.Config) error {
	type setting struct {
		name     string
		old, new any
	}
	for _, s := range []setting{
		{"listen", old.Listen, cfg.Listen},
		{"admin listen", old.Admin.Listen, cfg.Admin.Listen},
		{"read_timeout", old.ReadTimeout, cfg.ReadTimeout},
		{"write_timeout", old.WriteTimeout, cfg.WriteTimeout},
		{"idle_timeout", old.IdleTimeout, cfg.IdleTimeout},
		{"max_header_size", old.MaxHeaderSize, cfg.MaxHeaderSize},
		{"max_body_size", old.MaxBodySize, cfg.MaxBodySize},
		{"max_conns", old.MaxConns, cfg.MaxConns},
	} {
		if s.old != s.new {
			return fmt.Errorf("%s: %s changed from %v to %v: %w", cfg.File, s.name, s.old, s.new, ErrRestartNeeded)
		}
	}
	return nil
}

// Apply builds a snapshot from cfg and makes it current. On error the running
// snapshot stays and nothing of the new one is left behind.
func (p *Proxy) Apply(cfg *config.Config) (*Snapshot, error) {
	p.applyMu.Lock()
	defer p.applyMu.Unlock()
	old := p.snap.Load()
	if old != nil {
		if err := restartOnly(old.Config, cfg); err != nil {
			return nil, err
		}
	}
	s, err := p.build(cfg, old)
	if err != nil {
		return nil, err
	}
	var newLog *accessLog
	oldLog := p.log.Load()
	logChanged := old == nil || !sameLog(old.Config.AccessLog, cfg.AccessLog)
	if logChanged {
		if newLog, err = openAccessLog(cfg.AccessLog, p.metrics.accessDropped); err != nil {
			s.retire()
			return nil, err
		}
	}
	s.Version = 1
	if old != nil {
		s.Version = old.Version + 1
	}
	p.snap.Store(s)
	s.start()
	if logChanged {
		p.log.Store(newLog)
		oldLog.close()
	}
	if old != nil {
		old.retire()
	}
	keep := map[string]bool{}
	for _, rt := range s.routes {
		keep[rt.name] = true
	}
	p.metrics.retain(keep)
	return s, nil
}

// Current returns the snapshot in use.
func (p *Proxy) Current() *Snapshot { return p.snap.Load() }

// Close stops the current snapshot's goroutines, flushes the access log, saves
// unsaved blacklist bans and closes the seckill store. Call once, after the
// server has stopped.
func (p *Proxy) Close() {
	p.applyMu.Lock()
	if cur := p.snap.Load(); cur != nil {
		cur.retire() // stops health checks, sweeps and pollers of the last config
	}
	p.applyMu.Unlock()
	p.closeBlacklist()
	p.closeSeckill()
	p.closeRooms()
	p.redis.close()
	p.log.Swap(nil).close()
}

// Server is the server of the public listener: fasthttp, with the read, idle and
// write timeouts of the config enforced by a watchdog sweeper instead of per-request
// socket deadlines (see package watchdog).
type Server struct {
	*fasthttp.Server
	timeouts watchdog.Timeouts
}

// Serve serves the connections ln accepts until Shutdown: their reads and writes are
// raw system calls (package rawsock) watched for stalls (package watchdog).
func (s *Server) Serve(ln net.Listener) error {
	return s.Server.Serve(watchdog.Listen(rawsock.Listener{Listener: ln}, s.timeouts))
}

// Timeouts are the read, idle and write limits Serve enforces.
func (s *Server) Timeouts() watchdog.Timeouts { return s.timeouts }

// NewServer returns the public server for cfg, bounded by its limits. Like fasthttp,
// an idle_timeout of 0 falls back to read_timeout.
func (p *Proxy) NewServer(cfg *config.Config) *Server {
	idle := cfg.IdleTimeout
	if idle == 0 {
		idle = cfg.ReadTimeout
	}
	return &Server{
		timeouts: watchdog.Timeouts{Read: cfg.ReadTimeout, Idle: idle, Write: cfg.WriteTimeout},
		Server: &fasthttp.Server{
			Handler:                      p.Handler,
			ErrorHandler:                 p.ErrorHandler,
			Name:                         "edge",
			NoDefaultServerHeader:        true,
			NoDefaultContentType:         true,
			ReadBufferSize:               int(cfg.MaxHeaderSize),
			WriteBufferSize:              16 << 10,
			MaxRequestBodySize:           int(cfg.MaxBodySize),
			Concurrency:                  cfg.MaxConns,
			DisablePreParseMultipartForm: true,
			// Every body arrives as a stream; serve reads those up to max_body_size whole
			// (upload.go), larger ones go on as streams to routes that take them.
			StreamRequestBody:             true,
			DisableHeaderNamesNormalizing: false,
			CloseOnShutdown:               true,
			// fasthttp logs each request it cannot read; without this, with the request's
			// bytes (its cookies and Authorization) in the line (docs/security.md).
			SecureErrorLogMessage: true,
		},
	}
}

// ErrorHandler answers requests fasthttp could not read, in JSON.
func (p *Proxy) ErrorHandler(ctx *fasthttp.RequestCtx, err error) {
	readFailure(err).write(ctx)
	ctx.SetConnectionClose()
	if s := p.snap.Load(); s != nil {
		s.noRoute.count(uint32(ctx.ConnID()), ctx.Response.StatusCode())
	}
}

// readFailure is the answer to a request that could not be read because of err: too
// large, too slow, or (nil or anything else) malformed.
func readFailure(err error) *answer {
	var small *fasthttp.ErrSmallBuffer
	switch {
	case err == nil:
		return errBadRequest
	case errors.Is(err, fasthttp.ErrBodyTooLarge), err == errChunkOverhead:
		return errBodyTooLarge
	case errors.As(err, &small):
		return errHeaderTooBig
	case isTimeout(err):
		return errRequestTimout
	}
	return errBadRequest
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// keepBody keeps b as the body buffer of the next request unless it grew past 64 KiB:
// a pooled scratch must not hold a large body's memory for good.
func (sc *scratch) keepBody(b []byte) {
	if cap(b) > 64<<10 {
		b = nil
	}
	sc.body = b[:0]
}

// scratch is per-request working memory, pooled so the hot path does not allocate.
type scratch struct {
	buf   []byte
	e     entry
	limit limitNote // RateLimit-* headers for the answer (limit.go)
	guard *guard    // route of the request being forwarded: fallback of pool guards (breaker.go)
	door  *door     // the listener the request came through (door.go)
	// upgrade is the Upgrade token of a request a websocket route tunnels, with the
	// route's tunnel settings; nil for every other request (upgrade.go).
	upgrade []byte
	tunnel  *routeTunnel
	// stream says which answers may stream while forwarding (stream.go).
	stream streamRule
	// bigBody is set when the request body is over max_body_size and still a stream
	// (upload.go).
	bigBody bool
	// bodyErr is why holdBody could not read the body (a broken chunk, a timeout); the
	// request is then answered by readFailure.
	bodyErr error
	body    []byte // where holdBody reads a body before the request takes a copy
	pp      []byte // a PROXY header for an upstream with proxy_protocol (proxyproto.go)
	// roomAdmit and roomPlace are the cookies a waiting room set for an admitted request,
	// added to the answer once the route has made it (waitroom.go).
	roomAdmit, roomPlace []byte
	// memoKey is the compression memo key of a cached answer served (compress.go); 0:
	// none.
	memoKey uint64
	// interim is the request whose client gets the origin's 1xx answers (interim.go):
	// the one serve runs; nil for a background refresh.
	interim *fasthttp.RequestCtx
	// reached is set by forwardRoute when an attempt failed after the request may have
	// reached an origin server (a timeout, a broken exchange): the origin may have acted
	// on it, though the answer is edge's 502/504 (idempotency.go keeps the key for it).
	reached bool

	stripe uint32 // the stripe of per-request counters this scratch adds to (metrics.go)
}

var scratchPool = sync.Pool{New: func() any {
	return &scratch{buf: make([]byte, 0, 256), stripe: nextStripe.Add(1)}
}}

// serve runs one client request of listener door through the funnel: blacklist,
// route, limits, then the route's target (answer, seckill, cache, upstream or cell).
func (p *Proxy) serve(ctx *fasthttp.RequestCtx, doorID int, proto Proto) {
	s := p.snap.Load()
	p.metrics.inflight.Add(1)
	sc := scratchPool.Get().(*scratch)
	d := s.door(doorID)
	sc.door, sc.interim = d, ctx
	// A head two parsers could read differently is refused before its body is read
	// (framing.go).
	var refuse *answer
	if proto == ProtoHTTP1 {
		refuse = framingFault(&ctx.Request.Header)
	}
	if refuse == nil && ctx.Request.IsBodyStream() {
		switch {
		case proto == ProtoHTTP1:
			limitChunked(ctx, s.Config.MaxBodySize, s.Config.MaxHeaderSize)
			sc.bigBody = !holdBody(ctx, sc, s.Config.MaxBodySize)
			dropTrailers(&ctx.Request.Header)
		case !ctx.IsConnect() && !h2up.IsGRPC(&ctx.Request.Header):
			sc.bigBody = !holdBody(ctx, sc, s.Config.MaxBodySize)
		case !ctx.IsConnect(): // a gRPC call's stream (a tunnel has its own idle limit)
			grpcIdle(ctx, s.Config.IdleTimeout)
		}
	}
	peer := peerAddr(ctx)
	client := s.trusted.clientAddr(ctx, peer)

	rm := s.noRoute
	sc.e = entry{start: ctx.Time(), client: client, listener: d.name, proto: proto}
	if l := p.log.Load(); l != nil {
		sc.e.timeUp = l.upstreamTime
	}
	if refuse != nil || sc.bodyErr != nil {
		if refuse == nil {
			refuse = readFailure(sc.bodyErr)
		}
		refuse.write(ctx)
		ctx.SetConnectionClose() // where the next request would start is unknowable
	} else if s.blacklist == nil || !p.blocked(ctx, s, client) { // blocked answers 403 itself
		if d.acme && bytes.HasPrefix(ctx.Path(), acmeChallengePrefix) && p.answerACME(ctx) {
			// answered: an ACME HTTP-01 validation (acme.go)
		} else if d.redirect {
			redirectHTTPS(ctx, d, sc)
		} else if s.roomByName != nil && bytes.HasPrefix(ctx.Path(), roomPollPrefix) {
			p.serveRoomPoll(ctx, s, client, sc)
		} else if rt := s.match(ctx, doorID); rt == nil {
			errNoRoute.write(ctx)
		} else {
			rm = rt.metrics
			sc.e.route = rt.name
			p.serveRoute(ctx, s, rt, peer, client, sc)
			p.limitHeaders(ctx, sc)
			if s.compress != nil {
				s.compress.apply(ctx, sc.memoKey, sc)
			}
		}
	}
	if proto == ProtoH2 && h2up.IsGRPC(&ctx.Request.Header) { // gRPC needs HTTP/2
		grpcAnswer(ctx)
	}
	if d.hsts != nil {
		ctx.Response.Header.SetCanonical(hdrHSTS, d.hsts)
	}
	rm.count(sc.stripe, ctx.Response.StatusCode())
	rm.duration.observe(sc.stripe, time.Since(sc.e.start))
	d.counts[proto].inc(sc.stripe)
	if l := p.log.Load(); l != nil {
		l.log(ctx, &sc.e)
	}
	p.metrics.served.inc(sc.stripe)
	sc.e = entry{}
	sc.door, sc.bigBody, sc.memoKey, sc.bodyErr, sc.interim, sc.reached = nil, false, 0, nil, nil, false
	scratchPool.Put(sc)
	p.metrics.inflight.Add(-1)
}

// serveRoute runs the route's stages after matching.
func (p *Proxy) serveRoute(ctx *fasthttp.RequestCtx, s *Snapshot, rt *route, peer, client netip.Addr, sc *scratch) {
	if sc.bigBody && !takeBigBody(ctx, rt) {
		return
	}
	if rt.guard != nil { // kill switch, overload shedding, bulkhead (degrade.go)
		if !p.admit(ctx, s, rt, sc) {
			return
		}
		defer p.release(rt)
	}
	if rt.room != nil {
		if !p.waitRoom(ctx, rt.room, client, sc) {
			return
		}
		defer rt.room.observe(ctx, sc)
	}
	if rt.limits != nil && !p.allowLimits(ctx, s, rt, client, sc) {
		return
	}
	switch rt.kind {
	case kindRespond:
		rt.respond.write(ctx)
	case kindSeckill:
		p.issueToken(ctx, s, rt, client)
	default:
		if rt.idem != nil && rt.idem.methods&methodBit(ctx.Method()) != 0 {
			p.serveIdempotent(ctx, s, rt, peer, client, sc) // wraps serveTarget (idempotency.go)
			return
		}
		p.serveTarget(ctx, s, rt, peer, client, sc)
	}
}

// serveTarget runs the stages of an upstream or cells route: token check, cache, forward.
func (p *Proxy) serveTarget(ctx *fasthttp.RequestCtx, s *Snapshot, rt *route, peer, client netip.Addr, sc *scratch) {
	if rt.cfg.RequireToken && !p.checkToken(ctx, s, rt, client) {
		return
	}
	if rt.tunnel != nil {
		if tok := upgradeToken(&ctx.Request.Header); tok != nil {
			sc.upgrade, sc.tunnel = tok, rt.tunnel
			p.forwardRoute(ctx, s, rt, peer, client, sc) // send hands it to sendUpgrade
			sc.upgrade, sc.tunnel = nil, nil
			return
		}
	}
	if rt.cache != nil {
		p.serveCached(ctx, s, rt, peer, client, sc)
		return
	}
	p.forwardRoute(ctx, s, rt, peer, client, sc)
}

// forwardRoute sends the request to the route's upstream pool or cell.
func (p *Proxy) forwardRoute(ctx *fasthttp.RequestCtx, s *Snapshot, rt *route, peer, client netip.Addr, sc *scratch) {
	sc.guard = rt.guard
	sc.stream = streamRuleOf(rt) // which answers may stream (stream.go)
	if rt.kind == kindCells {
		p.forwardCells(ctx, s, rt, peer, client, sc)
	} else {
		p.forward(ctx, s, rt.pool, peer, client, sc)
	}
	sc.guard, sc.stream = nil, streamRule{}
}

// forward sends the request to a server of pl and writes its response, or the
// answer for the failure, into ctx. A pool with a bulkhead or breaker goes through
// forwardGuarded (breaker.go), which may answer the route's fallback instead.
func (p *Proxy) forward(ctx *fasthttp.RequestCtx, s *Snapshot, pl *pool, peer, client netip.Addr, sc *scratch) {
	if pl.guard != nil {
		p.forwardGuarded(ctx, s, pl, peer, client, sc)
		return
	}
	p.send(ctx, s, pl, peer, client, sc)
}

// send is forward without the pool's guard; its outcome feeds the breaker.
//
// It skips servers that are down (health.go). A failed attempt is repeated on
// another server of pl only when that is safe (retryable: the request never
// reached the first server, or the method is idempotent and the exchange broke
// before a response was complete), at most maxTries servers, all within the
// pool's timeout. Each attempt feeds passive health detection.
func (p *Proxy) send(ctx *fasthttp.RequestCtx, s *Snapshot, pl *pool, peer, client netip.Addr, sc *scratch) outcome {
	if len(ctx.Request.Header.Host()) == 0 {
		// HTTP/1.0 lets a client leave Host out (framingFault leaves that to fasthttp,
		// which refuses it in HTTP/1.1 only); the HTTP/1.1 exchange upstream cannot.
		// The request is at fault, not the servers: nothing counts against them.
		errBadRequest.write(ctx)
		return outcomeNone
	}
	p.metrics.forwarded.inc(sc.stripe)
	if sc.upgrade != nil {
		return p.sendUpgrade(ctx, s, pl, peer, client, sc)
	}
	req := &ctx.Request
	sc.buf = prepareForward(&req.Header, peer, client, s.trusted.contains(peer), sc.door.fwdProto, sc.buf)
	idempotent := methodBit(req.Header.Method())&idempotentMethods != 0
	// All tries share one deadline: the pool's timeout from the handler's start
	// (ctx.Time, already read), so a request that went through on its first try reads
	// no clock here.
	deadline := ctx.Time().Add(pl.timeout)
	budget := pl.timeout
	var tried uint64
	last := failNone
	for try := 1; ; try++ {
		i, up := pl.pick(tried)
		if !up && (pl.strict || i < 0) {
			if last != failNone {
				failureAnswer(last).write(ctx) // no server left to retry on
			} else if pl.unavailable != nil {
				pl.unavailable.write(ctx)
			} else {
				errBadGateway.write(ctx)
			}
			return outcomeOf(last)
		}
		if i < 64 {
			tried |= 1 << i
		}
		srv := pl.servers[i]
		sc.e.upstream = srv.addr
		var f failure
		var t0 time.Time
		if sc.e.timeUp { // the access log shows $upstream_response_time
			t0 = time.Now()
		}
		if srv.h2 != nil { // HTTP/2 upstream (grpc.go)
			f = classifyH2(exchangeH2(srv.h2, req, &ctx.Response, budget))
		} else {
			var pp []byte
			if srv.proxyProto != "" {
				pp = proxyHeader(ctx, srv.proxyProto, client, peer, sc)
			}
			f = classify(exchange(srv.hc, req, &ctx.Response, deadline, budget, pl.timeout, sc.stream, pp, sc.interim))
		}
		if sc.e.timeUp {
			sc.e.upTime += time.Since(t0)
		}
		if f == failNone {
			o := outcomeOK
			if ctx.Response.StatusCode() >= 500 {
				srv.health.failure()
				o = outcomeFailed
			} else {
				srv.health.success()
			}
			stripResponseHop(&ctx.Response.Header)
			return o
		}
		last = f
		sc.reached = sc.reached || f == failTimeout || f == failBroken
		pl.errs[f].Inc()
		if f != failBusy { // a full local pool says nothing about the server
			srv.health.failure()
		}
		ctx.Response.Reset()
		budget = time.Until(deadline)
		if try >= maxTries || !retryable(f, idempotent) || budget <= 0 || req.IsBodyStream() && f != failConnect {
			failureAnswer(f).write(ctx)
			return outcomeOf(f)
		}
		if pl.retries != nil {
			pl.retries.Inc()
		}
	}
}
