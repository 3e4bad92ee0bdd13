package proxy

import (
	"bytes"
	"fmt"
	"sort"

	"github.com/edge-gw/edge/config"
	"github.com/valyala/fasthttp"
)

// Snapshot is the immutable runtime form of one config: compiled routes and the
// pools they forward to. A request loads the current snapshot once and uses it to
// the end, so a reload never changes a request mid-way. Long-lived state (upstream
// connections, metrics) is shared with other snapshots by identity, not copied.
type Snapshot struct {
	Config  *config.Config
	Version int64 // 1 for the first config, +1 per successful reload

	trusted trustedSet
	routes  []*route
	pools   map[string]*pool
	noRoute *routeMetrics
	held    []poolSettings // servers acquired from the registry, released on retire
	reg     *registry

	// Feature state of this config, built by the feature's file (nil when unused).
	blacklist *snapBlacklist
	cells     map[string]*cellGroup
	seckill   *snapSeckill
	doors     []*door // by listener id (door.go)
	// roomByName are the waiting rooms by name, for their poll endpoint; nil without
	// waiting_room blocks (waitroom.go).
	roomByName map[string]*routeRoom
	// compress is the compression of answers (compress.go); nil without the block.
	compress *compressor

	starts []func() // run once when the snapshot becomes current (start goroutines)
	stops  []func() // run when it is retired
}

type routeKind uint8

const (
	kindUpstream routeKind = iota + 1
	kindRespond
	kindCells
	kindSeckill
)

type kv struct {
	k string
	v []byte
}

// route is one compiled route block.
type route struct {
	name    string
	prefix  []byte
	methods uint16 // bit per method; 0 matches any
	host    []byte // lower case, without port; empty matches any
	door    int    // listener id the request must come through; -1 matches any
	query   []kv
	header  []kv

	kind     routeKind
	pool     *pool
	respond  *answer
	reject   *answer
	fallback *answer
	metrics  *routeMetrics
	cfg      *config.Route

	limits *routeLimits // nil without limit blocks
	cache  *routeCache  // nil without a cache block
	cells  *cellGroup   // set for kindCells
	idem   *routeIdem   // nil without an idempotency block (idempotency.go)
	guard  *guard       // kill switch, bulkhead, shedding (degrade.go)
	tunnel *routeTunnel // websocket routes' tunnels (upgrade.go); nil: Upgrade is stripped
	room   *routeRoom   // the waiting room in front of the route (waitroom.go); nil: none
}

// methodBit is the bit of method m in a route's or an idempotency block's method set, 0
// for a method edge does not know. A request's method is checked on every proxied
// request (idempotency, retries), so it is a switch on the exact bytes, not a map.
func methodBit(m []byte) uint16 {
	switch string(m) {
	case "GET":
		return 1
	case "HEAD":
		return 2
	case "POST":
		return 4
	case "PUT":
		return 8
	case "DELETE":
		return 16
	case "PATCH":
		return 32
	case "OPTIONS":
		return 64
	case "CONNECT":
		return 128
	case "TRACE":
		return 256
	}
	return 0
}

// build compiles cfg; prev is the running snapshot (nil at start), whose state a
// feature may carry over. It acquires upstream servers from the registry; on error
// it releases them again, so a failed build leaves nothing behind. build starts no
// goroutines: that is start's job, once the snapshot is current.
func (p *Proxy) build(cfg *config.Config, prev *Snapshot) (s *Snapshot, err error) {
	reg, m := p.reg, p.metrics
	s = &Snapshot{Config: cfg, trusted: trustedSet(cfg.TrustedProxies), pools: map[string]*pool{}, reg: reg}
	built := s // the error returns below set s to nil
	defer func() {
		if err != nil {
			built.retire()
		}
	}()
	for _, u := range cfg.Upstreams {
		p := &pool{name: u.Name, timeout: u.Timeout, errs: m.upstream(u.Name)}
		for _, addr := range u.Servers {
			ps := poolSettings{addr: addr, connectTimeout: u.ConnectTimeout, timeout: u.Timeout,
				maxConns: u.MaxConns, keepalive: u.KeepaliveTimeout, maxResponseSize: u.MaxResponseSize,
				protocol: u.Proto.Protocol, serverName: u.Proto.TLSServerName, caFile: u.Proto.TLSCAFile,
				proxyProto: u.Proto.ProxyProtocol}
			if err := checkH2Settings(fmt.Sprintf("upstream %q", u.Name), ps); err != nil {
				return nil, err
			}
			p.settings = append(p.settings, ps)
			p.servers = append(p.servers, reg.acquire(ps))
			s.held = append(s.held, ps)
		}
		s.pools[u.Name] = p
	}
	s.noRoute = m.route("")
	p.buildDoors(s, cfg)
	if err := p.buildBlacklist(s, prev); err != nil {
		return nil, err
	}
	if err := p.buildCells(s, prev); err != nil {
		return nil, err
	}
	if err := p.buildSeckill(s, prev); err != nil {
		return nil, err
	}
	if err := p.buildDegrade(s, prev); err != nil {
		return nil, err
	}
	p.buildCompression(s, prev)
	roomOf := map[string]*routeRoom{}
	if err := p.buildRooms(s, roomOf); err != nil {
		return nil, err
	}
	for _, rc := range cfg.Routes {
		rt := &route{name: rc.Name, prefix: []byte(rc.Match.Path), host: []byte(normHost(rc.Match.Host)),
			reject: newAnswer(rc.Reject), fallback: newAnswer(rc.Fallback), metrics: m.route(rc.Name), cfg: rc, door: -1}
		if rc.Match.Listener != "" {
			rt.door = p.doorID(rc.Match.Listener)
		}
		for _, meth := range rc.Match.Methods {
			rt.methods |= methodBit([]byte(meth))
		}
		rt.query = sortedKV(rc.Match.Query, false)
		rt.header = sortedKV(rc.Match.Header, true)
		switch {
		case rc.Respond != nil:
			rt.kind, rt.respond = kindRespond, newAnswer(*rc.Respond)
		case rc.Upstream != "":
			rt.kind, rt.pool = kindUpstream, s.pools[rc.Upstream]
		case rc.Cells != "":
			rt.kind, rt.cells = kindCells, s.cells[rc.Cells]
		case rc.Seckill:
			rt.kind = kindSeckill
		}
		if rt.kind == kindUpstream && rt.pool == nil {
			return nil, fmt.Errorf("route %q: upstream %q is not defined", rc.Name, rc.Upstream)
		}
		if err := p.buildLimits(s, prev, rt); err != nil {
			return nil, err
		}
		if err := p.buildCache(s, prev, rt); err != nil {
			return nil, err
		}
		if err := p.buildIdempotency(s, prev, rt); err != nil {
			return nil, err
		}
		if err := p.buildGuard(s, prev, rt); err != nil {
			return nil, err
		}
		p.buildTunnel(rt)
		if rt.room = roomOf[rc.Name]; rt.room != nil {
			if s.roomByName == nil {
				s.roomByName = map[string]*routeRoom{}
			}
			s.roomByName[rt.room.lr.name] = rt.room
		}
		s.routes = append(s.routes, rt)
	}
	return s, nil
}

func normHost(h string) string {
	return string(bytes.ToLower([]byte(h)))
}

// sortedKV turns a match map into a slice in a fixed order; header names are
// normalized the way fasthttp stores them.
func sortedKV(m map[string]string, header bool) []kv {
	out := make([]kv, 0, len(m))
	for k, v := range m {
		key := k
		if header {
			key = fasthttpCanonical(k)
		}
		out = append(out, kv{key, []byte(v)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].k < out[j].k })
	return out
}

func fasthttpCanonical(k string) string {
	var h fasthttp.RequestHeader
	h.Set(k, "x")
	for key := range h.All() {
		return string(key)
	}
	return k
}

// retire releases what the snapshot holds. In-flight requests may still use its
// servers; their connections stay usable, only idle ones of unused servers close.
func (s *Snapshot) retire() {
	for _, stop := range s.stops {
		stop()
	}
	s.stops = nil
	for _, ps := range s.held {
		s.reg.release(ps)
	}
	s.held = nil
}

// start runs the snapshot's start hooks; called once, after it became current.
func (s *Snapshot) start() {
	for _, f := range s.starts {
		f()
	}
	s.starts = nil
}

// match returns the first route that matches the request of listener door, or nil.
func (s *Snapshot) match(ctx *fasthttp.RequestCtx, door int) *route {
	path := routePath(ctx)
	var mbit uint16
	var host []byte
	for _, rt := range s.routes {
		if !bytes.HasPrefix(path, rt.prefix) || rt.door >= 0 && rt.door != door {
			continue
		}
		if rt.methods != 0 {
			if mbit == 0 {
				mbit = methodBit(ctx.Method())
			}
			if rt.methods&mbit == 0 {
				continue
			}
		}
		if len(rt.host) > 0 {
			if host == nil {
				host = hostOnly(ctx.Host())
			}
			if !bytes.EqualFold(host, rt.host) {
				continue
			}
		}
		// QueryArgs parses the whole URI: only for routes that match on the query.
		if len(rt.query) > 0 && !matchKV(rt.query, ctx.QueryArgs().Peek) || !matchKV(rt.header, ctx.Request.Header.Peek) {
			continue
		}
		return rt
	}
	return nil
}

// routePath is the path routes match on: the normalized path of fasthttp's URI parser
// (percent-escapes decoded, dot segments resolved, repeated slashes merged). Most request
// targets are plain: origin-form, made only of bytes that normalization leaves alone.
// Their path is the target up to '?', taken without parsing the URI (the parse was about a
// fifth of the handler's CPU on a cache hit, BenchmarkCacheHit).
func routePath(ctx *fasthttp.RequestCtx) []byte {
	if p, ok := plainPath(ctx.Request.Header.RequestURI()); ok {
		return p
	}
	return ctx.Path()
}

// plainPath returns the path of target when normalizing it changes nothing: it starts
// with '/', has no "//" and no segment starting with '.', and uses only unreserved
// characters, sub-delims, ':', '@' and '/' before any '?'.
func plainPath(target []byte) ([]byte, bool) {
	if len(target) == 0 || target[0] != '/' {
		return nil, false
	}
	prev := byte(0)
	for i, c := range target {
		switch {
		case c == '?':
			return target[:i], true
		case !plainPathByte[c], prev == '/' && (c == '/' || c == '.'):
			return nil, false
		}
		prev = c
	}
	return target, true
}

var plainPathByte = func() (t [256]bool) {
	for _, c := range []byte("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@/") {
		t[c] = true
	}
	return t
}()

func matchKV(want []kv, peek func(string) []byte) bool {
	for _, w := range want {
		if !bytes.Equal(peek(w.k), w.v) {
			return false
		}
	}
	return true
}

// hostOnly strips a port from a Host header value.
func hostOnly(h []byte) []byte {
	if len(h) > 0 && h[0] == '[' {
		if i := bytes.IndexByte(h, ']'); i > 0 {
			return h[1:i]
		}
		return h
	}
	if i := bytes.LastIndexByte(h, ':'); i >= 0 {
		return h[:i]
	}
	return h
}
