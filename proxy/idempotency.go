package proxy

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edge-gw/edge/config"
	"github.com/edge-gw/edge/idempotency"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
)

// Answers of idempotent routes (SPEC.md "What a client sees", issue 11).
var (
	errMissingIdemKey  = jsonError(400, "missing_idempotency_key")
	errInvalidIdemKey  = jsonError(400, "invalid_idempotency_key")
	errInvalidIdemUser = jsonError(400, "invalid_user")
	errIdemInProgress  = withRetryAfter(jsonError(409, "in_progress"))
	errIdemKeyReused   = jsonError(422, "key_reused")
	errIdemStore       = withRetryAfter(jsonError(503, "store_unavailable"))

	hdrIdemReplayed = []byte("Idempotent-Replayed")
	valTrue         = []byte("true")
)

func withRetryAfter(a *answer) *answer {
	a.headers = append(a.headers, [2][]byte{[]byte("Retry-After"), []byte("1")})
	return a
}

// minIdemLease is the shortest default lease: a claim must outlast the store call and the
// whole upstream exchange, with room for a slow machine.
const minIdemLease = 10 * time.Second

// Results of edge_idempotency_total. The first four are the issue's; the others say why a
// request got no guarantee or no record.
const (
	idemFirst       = iota // forwarded as the first request with its key
	idemReplayed           // answered from the record
	idemInProgress         // 409 (or waited past wait) while the first was running
	idemReused             // 422: the key belongs to another request
	idemMissing            // 400: no key on a route with required = true
	idemInvalid            // 400: over-long key or user
	idemUnavailable        // store down or full: 503, or forwarded without the guarantee (fail_open)
	idemNotRecorded        // a first request whose answer was not recorded (5xx, edge error, too large, store failure)
	numIdemResults
)

var idemResultNames = [numIdemResults]string{"first", "replayed", "in_progress", "reused",
	"missing", "invalid", "unavailable", "not_recorded"}

// idemState is what this feature keeps across reloads (created by initIdempotency in New):
// the metric vector and which route labels it exports. The stores themselves are carried
// from snapshot to snapshot by their routes (buildIdempotency).
type idemState struct {
	total *prometheus.CounterVec // edge_idempotency_total{route,result}

	mu     sync.Mutex
	labels map[string]bool // routes whose children are exported
}

// initIdempotency creates the feature's long-lived state and registers its metric.
func (p *Proxy) initIdempotency() {
	st := &idemState{
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_idempotency_total",
			Help: "Requests with an idempotency key on idempotent routes, by route and result: first (forwarded), replayed, in_progress (409), reused (422 key_reused), missing (400, required key absent), invalid (400, key or user too long), unavailable (store down or full: 503, or forwarded when fail_open), not_recorded (a first request whose answer was not kept: 5xx, edge error, too large or store failure; a retry is forwarded again).",
		}, []string{"route", "result"}),
		labels: map[string]bool{},
	}
	p.idemState = st
	p.metrics.Reg.MustRegister(st.total)
}

// routeIdem is the idempotency block of one route in one snapshot. Its stores outlive
// the snapshot: a memory store is carried to the next snapshot when the route keeps its
// name and max_entries, a Redis client is shared through the Proxy's redisRegistry.
type routeIdem struct {
	header   string // header name, e.g. Idempotency-Key
	methods  uint16 // methodBit of each method that needs a key
	user     *compiledKey
	required bool
	failOpen bool
	ttl      time.Duration
	lease    time.Duration
	wait     time.Duration // 0: 409 at once

	maxEntries int                 // memory store bound, to decide whether a reload keeps it
	mem        *idempotency.Memory // store "memory"
	redis      *idemRedis          // store "redis"

	m [numIdemResults]prometheus.Counter
}

// idemRedis is the Redis store of one route in one snapshot: the shared client is
// acquired when the snapshot starts and released when it retires; until Redis answers the
// route has no store and follows fail_open.
type idemRedis struct {
	cfg  *config.Redis
	opts idempotency.RedisOptions

	conn  atomic.Pointer[redisConn]         // set by the start hook; nil before and after
	store atomic.Pointer[idempotency.Redis] // made on first use once the client is connected
}

// store returns the route's store, or nil while it has none (Redis not connected).
func (ri *routeIdem) store() idempotency.Store {
	if ri.mem != nil {
		return ri.mem
	}
	r := ri.redis
	if st := r.store.Load(); st != nil {
		return st
	}
	c := r.conn.Load()
	if c == nil {
		return nil
	}
	cl := c.Client()
	if cl == nil {
		return nil
	}
	r.store.CompareAndSwap(nil, idempotency.NewRedis(cl, r.opts))
	return r.store.Load()
}

// buildIdempotency compiles rt's idempotency block into rt.idem. It connects nothing
// (edge -check runs it): a Redis store acquires its shared client in the snapshot's start
// hook. A memory store is taken over from prev's route of the same name when its
// max_entries is unchanged, so records survive reloads.
func (p *Proxy) buildIdempotency(s *Snapshot, prev *Snapshot, rt *route) error {
	c := rt.cfg.Idempotency
	if c == nil {
		return nil
	}
	var timeout time.Duration
	switch rt.kind {
	case kindUpstream:
		timeout = rt.pool.timeout
	case kindCells:
		for _, cc := range s.Config.Cells {
			if cc.Name == rt.cfg.Cells {
				timeout = cc.Timeout
			}
		}
	default:
		return fmt.Errorf("route %q: idempotency needs a route with upstream or cells", rt.name)
	}
	ri := &routeIdem{header: c.Header, user: compileKey(c.UserKey), required: c.Required,
		failOpen: c.FailOpen, ttl: c.TTL, lease: c.Lease, wait: c.Wait, maxEntries: c.MaxEntries}
	for _, m := range c.Methods {
		ri.methods |= methodBit([]byte(m))
	}
	if ri.lease == 0 {
		ri.lease = max(2*timeout, minIdemLease)
	} else if ri.lease < timeout {
		return fmt.Errorf("route %q: idempotency lease %v is shorter than the upstream timeout %v: a repeat could be forwarded while the first request still runs", rt.name, ri.lease, timeout)
	}
	switch c.Store {
	case "redis":
		sk := s.Config.Seckill
		if sk == nil || sk.Redis == nil {
			return fmt.Errorf("route %q: idempotency store \"redis\" needs a seckill redis block", rt.name)
		}
		r := &idemRedis{cfg: sk.Redis, opts: idempotency.RedisOptions{Timeout: sk.Timeout}}
		ri.redis = r
		s.starts = append(s.starts, func() { r.conn.Store(p.acquireRedis(r.cfg)) })
		s.stops = append(s.stops, func() {
			if c := r.conn.Swap(nil); c != nil {
				c.release()
			}
		})
	default:
		if old := prevIdem(prev, rt.name); old != nil && old.mem != nil && old.maxEntries == ri.maxEntries {
			ri.mem = old.mem
		} else {
			ri.mem = idempotency.NewMemory(idempotency.MemoryOptions{MaxEntries: ri.maxEntries})
		}
	}
	st := p.idemState
	for i := range ri.m {
		ri.m[i] = st.total.WithLabelValues(rt.name, idemResultNames[i])
	}
	rt.idem = ri
	s.starts = append(s.starts, func() { st.retain(s) })
	return nil
}

// prevIdem returns the idempotency block of prev's route name, or nil.
func prevIdem(prev *Snapshot, name string) *routeIdem {
	if prev == nil {
		return nil
	}
	for _, rt := range prev.routes {
		if rt.name == name {
			return rt.idem
		}
	}
	return nil
}

// retain drops the metric children of routes that have no idempotency block in s, the
// snapshot just made current (also those of a failed build).
func (st *idemState) retain(s *Snapshot) {
	keep := map[string]bool{}
	for _, rt := range s.routes {
		if rt.idem != nil {
			keep[rt.name] = true
		}
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	for name := range st.labels {
		if !keep[name] {
			st.total.DeletePartialMatch(prometheus.Labels{"route": name})
		}
	}
	st.labels = keep
}

// idemBufs holds the buffers records are built in; the stores copy what they keep.
var idemBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

// maxPooledIdemBuf keeps one huge answer from pinning its buffer in the pool.
const maxPooledIdemBuf = 256 << 10

var errNoIdemStore = errors.New("idempotency store not connected")

// serveIdempotent serves a request on a route with an idempotency block and a method
// that needs a key: it claims the key in the route's store, then forwards the first
// request through the route's usual stages (serveTarget) and records the answer, or
// answers a repeat from the record (Idempotent-Replayed: true), 409 in_progress while the
// first runs, 422 key_reused for the same key on another request. Keys are scoped per
// route and per user (user_key, else the client IP).
//
// Only an answer of the origin below 500 is recorded, and edge's 502/504 after the
// request may have reached the origin (it timed out, or the exchange broke): that
// origin may have acted, so its repeats replay the 502/504 rather than forward the key
// again. An origin's own 5xx, a request that never reached an origin (connect failure,
// full pool) or an answer of the edge itself (token check, cells without a key)
// releases the claim, so the client may retry. When the store is down or full the route fails closed (503
// store_unavailable) or, with fail_open, forwards without the guarantee.
//
// It allocates the scope and key string the store keeps (and, for a first request, the
// store's entry and record copy); Redis calls allocate more.
func (p *Proxy) serveIdempotent(ctx *fasthttp.RequestCtx, s *Snapshot, rt *route, peer, client netip.Addr, sc *scratch) {
	ri := rt.idem
	key := ctx.Request.Header.Peek(ri.header)
	if len(key) == 0 {
		if ri.required {
			ri.m[idemMissing].Inc()
			errMissingIdemKey.write(ctx)
			return
		}
		p.serveTarget(ctx, s, rt, peer, client, sc)
		return
	}
	if len(key) > idempotency.MaxKeyLen {
		ri.m[idemInvalid].Inc()
		errInvalidIdemKey.write(ctx)
		return
	}
	// Scope: route, then 'u' and the user, or 'i' and the client IP, so that a user id
	// that looks like an address never shares a scope with that address.
	buf := append(sc.buf[:0], rt.name...)
	buf = append(buf, 0, 'u')
	var ok bool
	if buf, ok = ri.user.appendKey(buf, ctx, client); !ok {
		buf[len(buf)-1] = 'i'
		if client.IsValid() {
			buf = client.AppendTo(buf)
		}
	}
	scopeLen := len(buf)
	if scopeLen > idempotency.MaxScopeLen {
		sc.buf = buf[:0]
		ri.m[idemInvalid].Inc()
		errInvalidIdemUser.write(ctx)
		return
	}
	buf = append(buf, key...)
	both := string(buf) // one allocation for both: the memory store keeps them
	sc.buf = buf[:0]
	scope, k := both[:scopeLen], both[scopeLen:]

	fp := idempotency.RequestFingerprint(&ctx.Request)
	store := ri.store()
	var res idempotency.Result
	var err error
	switch {
	case store == nil:
		err = errNoIdemStore
	case ri.wait > 0:
		res, err = store.Wait(context.Background(), scope, k, fp, ri.lease, ri.wait)
	default:
		res, err = store.Begin(context.Background(), scope, k, fp, ri.lease)
	}
	if err != nil {
		ri.m[idemUnavailable].Inc()
		if ri.failOpen {
			p.serveTarget(ctx, s, rt, peer, client, sc)
			return
		}
		errIdemStore.write(ctx)
		return
	}
	switch res.Outcome {
	case idempotency.Replay:
		if res.Record.WriteResponse(&ctx.Response) != nil {
			// A record that does not parse: the request did take effect, so forwarding
			// it again is no answer; say the store failed.
			ri.m[idemUnavailable].Inc()
			errIdemStore.write(ctx)
			return
		}
		ctx.Response.Header.SetBytesKV(hdrIdemReplayed, valTrue)
		ri.m[idemReplayed].Inc()
	case idempotency.InProgress:
		ri.m[idemInProgress].Inc()
		errIdemInProgress.write(ctx)
	case idempotency.Reused:
		ri.m[idemReused].Inc()
		errIdemKeyReused.write(ctx)
	case idempotency.Started:
		ri.m[idemFirst].Inc()
		sc.e.upstream = ""
		p.serveTarget(ctx, s, rt, peer, client, sc)
		// sc.e.upstream is set only when the request went to an origin server: an answer
		// without it is the edge's own. A 502/504 of edge after the request may have
		// reached the origin (sc.reached: a timeout, a broken exchange) is recorded like
		// an answer, so no repeat forwards the key a second time.
		reached := sc.reached && sc.e.upstream != ""
		sc.reached = false
		if !reached && (ctx.Response.StatusCode() >= 500 || sc.e.upstream == "") {
			ri.m[idemNotRecorded].Inc()
			_ = store.Abort(context.Background(), res.Claim)
			return
		}
		bp := idemBufs.Get().(*[]byte)
		rec := idempotency.AppendResponse((*bp)[:0], &ctx.Response, idempotency.KeepDefault)
		// Failures (store down, record too large, claim lost after the lease ran out)
		// leave the client's answer as it is; a retry is forwarded again once the claim
		// is released or its lease ends.
		if store.Complete(context.Background(), res.Claim, rec, ri.ttl) != nil {
			ri.m[idemNotRecorded].Inc()
		}
		if cap(rec) <= maxPooledIdemBuf {
			*bp = rec[:0]
			idemBufs.Put(bp)
		}
	default:
		panic("BUG: unknown idempotency outcome")
	}
}
