package proxy

// Limits (issue 3): a route's limit blocks are token buckets (limiter.Store) keyed by
// the hash of a key expression, consulted in file order; all must pass.
//
// The stores live in limitState, outside snapshots, keyed by route, limit name, key
// expression and max_keys: a reload that keeps those keeps the buckets, and a changed
// rate or burst is applied to them in place (limiter.Store.Update, no refill) when the
// new snapshot becomes current. A store is dropped when no snapshot uses it any more.
//
// A limit with scope "redis" keeps its buckets in the Redis of the seckill block instead
// (limiter.RedisBucket: one Lua script, one round trip per decision), shared exactly by
// every edge node on that Redis. It still holds an (empty) local entry, which carries
// its metric series across reloads like any other limit's.

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/edge-gw/edge/config"
	"github.com/edge-gw/edge/limiter"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/rueidis"
	"github.com/valyala/fasthttp"
)

// maxRouteLimits bounds the limit blocks of one route, so that a request can keep
// what it took from each on the stack, to give it back when a later limit says no.
const maxRouteLimits = 32

// limitSweepEvery is how often full buckets are dropped from every store (Sweep), so
// that edge_limit_keys counts keys being limited and idle stores give memory back.
var limitSweepEvery = 10 * time.Second

// ErrNoLimit is wrapped by SetLimitScale when the current config has no such route or
// limit, or the limit has scope "redis" (one exact bucket for every node: nothing to
// scale).
var ErrNoLimit = errors.New("no such limit")

// errLimitRedisDown is what a redis-scoped decision gets while the shared client has not
// connected yet.
var errLimitRedisDown = errors.New("limit redis not connected")

type limitMissing uint8

const (
	limitSkip limitMissing = iota
	limitRejectMissing
	limitShared
)

// routeLimits is the compiled limit blocks of one route, in file order.
type routeLimits struct {
	list []*compiledLimit
}

// compiledLimit is one limit block of one snapshot. The store is shared with other
// snapshots (see limitEntry); everything else is immutable.
type compiledLimit struct {
	name    string
	key     *compiledKey
	missing limitMissing
	delay   time.Duration
	dryRun  bool
	headers bool
	entry   *limitEntry
	store   *limiter.Store
	shared  uint64 // bucket of key-less requests with missing_key = "shared"
	seed    uint64
	redis   *redisLimit // scope "redis"; nil: the local store decides

	pass, reject, delayed, dryReject prometheus.Counter
}

// redisLimit is the Redis side of a limit with scope "redis" in one snapshot.
type redisLimit struct {
	bucket   *limiter.RedisBucket
	conn     *limitRedisConn
	timeout  time.Duration // per call: the seckill block's timeout
	failOpen bool

	failPass, unavailable, errors prometheus.Counter
}

// limitRedisConn is the shared Redis client of a route's redis-scoped limits: acquired by
// the snapshot's start hook, released by its stop hook, nil before and after.
type limitRedisConn struct {
	c atomic.Pointer[redisConn]
}

// take runs one decision in Redis, bounded by the timeout. It allocates (the command, its
// reply, the context).
func (r *redisLimit) take(h uint64) (ok bool, wait time.Duration, left int, err error) {
	rc := r.conn.c.Load()
	if rc == nil {
		return false, 0, 0, errLimitRedisDown
	}
	c := rc.Client()
	if c == nil {
		return false, 0, 0, errLimitRedisDown
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
	defer cancel()
	return r.bucket.Take(ctx, c, h)
}

// refund gives the token of bucket h back; a failure loses it (counted as an error).
func (r *redisLimit) refund(h uint64) {
	var c rueidis.Client
	if rc := r.conn.c.Load(); rc != nil {
		c = rc.Client()
	}
	if c == nil {
		r.errors.Inc()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
	defer cancel()
	if _, err := r.bucket.Refund(ctx, c, h); err != nil {
		r.errors.Inc()
	}
}

// params returns the rate and burst in force.
func (l *compiledLimit) params() (rate float64, burst int) {
	if l.redis != nil {
		return l.redis.bucket.Rate(), l.redis.bucket.Burst()
	}
	return l.store.Rate(), l.store.Burst()
}

// limitNote carries the RateLimit-* values of a request that passed to the end of the
// request, when the route's target has written its response. It lives in the pooled
// scratch, so it costs no allocation.
type limitNote struct {
	set                     bool
	limit, remaining, reset int64
}

var (
	hdrRetryAfter         = []byte("Retry-After")
	hdrRateLimitLimit     = []byte("RateLimit-Limit")
	hdrRateLimitRemaining = []byte("RateLimit-Remaining")
	hdrRateLimitReset     = []byte("RateLimit-Reset")
)

// buildLimits compiles rt's limit blocks into rt.limits (nil when none), acquiring
// their stores from the limit state; the snapshot's stop hooks release them.
func (p *Proxy) buildLimits(s *Snapshot, prev *Snapshot, rt *route) error {
	cfgs := rt.cfg.Limits
	if len(cfgs) == 0 {
		return nil
	}
	if len(cfgs) > maxRouteLimits {
		return fmt.Errorf("route %q: %d limit blocks, at most %d are supported", rt.name, len(cfgs), maxRouteLimits)
	}
	st := p.limitState
	st.registerSweeper(s)
	rl := &routeLimits{}
	var rconn *limitRedisConn // shared by the route's redis-scoped limits
	for _, lc := range cfgs {
		e, err := st.acquire(rt.name, lc)
		if err != nil {
			return fmt.Errorf("route %q limit %q: %w", rt.name, lc.Name, err)
		}
		s.stops = append(s.stops, func() { st.release(e) })
		rate, burst := lc.Rate.PerSecond, lc.Burst
		s.starts = append(s.starts, func() { st.update(e, rate, burst) })
		l := &compiledLimit{
			name:    lc.Name,
			key:     compileKey(lc.Key),
			delay:   lc.Delay,
			dryRun:  lc.DryRun,
			headers: lc.Headers,
			entry:   e,
			store:   e.store,
			seed:    st.seed,
			shared:  sharedHash(st.seed),
		}
		switch lc.MissingKey {
		case "reject":
			l.missing = limitRejectMissing
		case "shared":
			l.missing = limitShared
		}
		d := st.decisions
		l.pass = d.WithLabelValues(rt.name, lc.Name, "pass")
		l.reject = d.WithLabelValues(rt.name, lc.Name, "reject")
		l.delayed = d.WithLabelValues(rt.name, lc.Name, "delayed")
		l.dryReject = d.WithLabelValues(rt.name, lc.Name, "dry_run_reject")
		if lc.Scope == "redis" {
			sk := s.Config.Seckill
			if sk == nil || sk.Redis == nil {
				return fmt.Errorf("route %q limit %q: scope \"redis\" needs a seckill redis block", rt.name, lc.Name)
			}
			b, err := limiter.NewRedisBucket(rt.name+":"+lc.Name, rate, burst, lc.Delay)
			if err != nil {
				return fmt.Errorf("route %q limit %q: %w", rt.name, lc.Name, err)
			}
			if rconn == nil {
				rconn = &limitRedisConn{}
				cfg := sk.Redis
				s.starts = append(s.starts, func() { rconn.c.Store(p.acquireRedis(cfg)) })
				s.stops = append(s.stops, func() {
					if c := rconn.c.Swap(nil); c != nil {
						c.release()
					}
				})
			}
			// Every node must hash a key alike to share its bucket; a seed from the
			// secret they share keeps clients from computing collisions offline.
			l.seed = xxhash.Sum64String("edge limit redis\x00" + sk.Secret)
			l.shared = sharedHash(l.seed)
			l.redis = &redisLimit{bucket: b, conn: rconn, timeout: sk.Timeout, failOpen: lc.FailOpen,
				failPass:    d.WithLabelValues(rt.name, lc.Name, "fail_open"),
				unavailable: d.WithLabelValues(rt.name, lc.Name, "unavailable"),
				errors:      st.redisErrors.WithLabelValues(rt.name, lc.Name),
			}
		}
		rl.list = append(rl.list, l)
	}
	rt.limits = rl
	return nil
}

// sharedHash is the bucket of key-less requests: a hash under a seed no real key is
// hashed with, so no key a client sends lands in it (but by a 2^-64 chance).
func sharedHash(seed uint64) uint64 {
	const mark = 0x6d697373696e6721 // "missing!"
	var d xxhash.Digest
	d.ResetWithSeed(seed ^ mark)
	return d.Sum64()
}

// allowLimits runs the route's limits. False means a limit said no and ctx holds
// the route's reject answer. A request that one limit rejects keeps no token of the
// others. With delay, it may sleep up to the largest delay of the route's limits
// before returning true. Allocates nothing.
func (p *Proxy) allowLimits(ctx *fasthttp.RequestCtx, s *Snapshot, rt *route, client netip.Addr, sc *scratch) bool {
	list := rt.limits.list
	// The time fasthttp read the request at: one clock read less per request, and
	// microseconds from now.
	now := ctx.Time().UnixNano()
	if ctx.Time().IsZero() {
		now = time.Now().UnixNano()
	}
	var taken [maxRouteLimits]uint64 // hash of the bucket each limit took from
	var took uint32                  // bit i: limit i took a token
	var wait time.Duration
	var note limitNote
	for i, l := range list {
		h, ok := l.key.hashKey(ctx, client, l.seed)
		if !ok {
			switch l.missing {
			case limitSkip:
				l.pass.Inc()
				continue
			case limitShared:
				h = l.shared
			case limitRejectMissing:
				if l.dryRun {
					l.dryReject.Inc()
					continue
				}
				l.reject.Inc()
				refundLimits(list[:i], &taken, took, now)
				rate, _ := l.params()
				retry := time.Duration(float64(time.Second) / rate)
				sc.e.limit = l.name
				p.rejectLimit(ctx, s, rt, l, client, retry)
				return false
			}
		}
		var retry, w time.Duration
		var left int
		if r := l.redis; r != nil {
			var err error
			if ok, w, left, err = r.take(h); err != nil {
				r.errors.Inc()
				if r.failOpen || l.dryRun {
					r.failPass.Inc()
					continue
				}
				r.unavailable.Inc()
				refundLimits(list[:i], &taken, took, now)
				// Not the client's doing: no Retry-After from a bucket, no auto_ban.
				errStoreUnavailable.write(ctx)
				return false
			}
			if !ok {
				retry, w = w, 0
			}
		} else {
			ok, retry, left = l.store.Take(h, now)
			if !ok && l.delay > 0 {
				if w, ok = l.store.Reserve(h, now, l.delay); !ok {
					retry = w
				}
			}
		}
		if !ok {
			if l.dryRun {
				l.dryReject.Inc()
				continue
			}
			l.reject.Inc()
			refundLimits(list[:i], &taken, took, now)
			sc.e.limit = l.name
			p.rejectLimit(ctx, s, rt, l, client, retry)
			return false
		}
		taken[i], took = h, took|1<<i
		if w > 0 {
			l.delayed.Inc()
			wait = max(wait, w)
		} else {
			l.pass.Inc()
		}
		if l.headers && (!note.set || int64(left) < note.remaining) {
			rate, burst := l.params()
			note = limitNote{set: true, limit: int64(burst), remaining: int64(left),
				reset: ceilSeconds(time.Duration(float64(burst-left)/rate*float64(time.Second)) + w)}
		}
	}
	if wait > 0 {
		// Bounded by the largest delay of the route's limits; concurrent sleepers are
		// bounded by max_conns, as every request holds a connection.
		time.Sleep(wait)
	}
	sc.limit = note
	return true
}

// refundLimits gives back the tokens that the limits before a rejecting one took.
func refundLimits(list []*compiledLimit, taken *[maxRouteLimits]uint64, took uint32, now int64) {
	for i, l := range list {
		if took&(1<<i) != 0 {
			if l.redis != nil {
				l.redis.refund(taken[i])
			} else {
				l.store.Refund(taken[i], now)
			}
		}
	}
}

// rejectLimit writes the route's reject answer for limit l, with Retry-After (whole
// seconds, at least 1) and, when l has headers, the RateLimit-* headers.
func (p *Proxy) rejectLimit(ctx *fasthttp.RequestCtx, s *Snapshot, rt *route, l *compiledLimit, client netip.Addr, retry time.Duration) {
	rt.reject.write(ctx)
	secs := ceilSeconds(retry)
	h := &ctx.Response.Header
	setInt(h, hdrRetryAfter, secs)
	if l.headers {
		_, burst := l.params()
		setInt(h, hdrRateLimitLimit, int64(burst))
		setInt(h, hdrRateLimitRemaining, 0)
		setInt(h, hdrRateLimitReset, secs)
	}
	p.onLimitReject(s, client)
}

// limitHeaders adds the RateLimit-* headers noted by allowLimits to the response and
// clears the note. Called by Handler once the route has answered.
func (p *Proxy) limitHeaders(ctx *fasthttp.RequestCtx, sc *scratch) {
	if sc.limit.set {
		h := &ctx.Response.Header
		setInt(h, hdrRateLimitLimit, sc.limit.limit)
		setInt(h, hdrRateLimitRemaining, sc.limit.remaining)
		setInt(h, hdrRateLimitReset, sc.limit.reset)
	}
	sc.limit = limitNote{}
}

func setInt(h *fasthttp.ResponseHeader, name []byte, v int64) {
	var buf [20]byte
	h.SetCanonical(name, strconv.AppendInt(buf[:0], v, 10))
}

// ceilSeconds rounds d up to whole seconds, at least 1: a client told to retry in 0
// seconds would retry at once.
func ceilSeconds(d time.Duration) int64 {
	return max(1, int64((d+time.Second-1)/time.Second))
}

// limitState is what this feature keeps across reloads (created by initLimits in New):
// the stores, by identity, and the metrics.
type limitState struct {
	seed        uint64 // xxhash seed of bucket keys, random per process
	decisions   *prometheus.CounterVec
	redisErrors *prometheus.CounterVec

	mu        sync.Mutex
	entries   map[string]*limitEntry
	scales    map[[2]string]float64 // runtime scale by route and limit (SetLimitScale)
	lastBuilt *Snapshot             // the snapshot whose sweeper is registered
}

// limitEntry is one store and the identity it is kept under. Its fields other than
// store are guarded by limitState.mu.
type limitEntry struct {
	id           string
	route, limit string
	store        *limiter.Store
	rate         float64 // configured rate and burst applied to store
	burst        int
	refs         int // snapshots using it
}

// initLimits creates the feature's long-lived state and registers its metrics.
func (p *Proxy) initLimits() {
	var seed [8]byte
	if _, err := rand.Read(seed[:]); err != nil {
		panic("BUG: no randomness for limiter hash seed: " + err.Error())
	}
	st := &limitState{
		seed: binary.LittleEndian.Uint64(seed[:]),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_limit_decisions_total",
			Help: "Limit decisions by route, limit and result (pass, reject, delayed, dry_run_reject; scope redis also fail_open: passed with Redis unreachable, unavailable: answered 503 with Redis unreachable).",
		}, []string{"route", "limit", "result"}),
		redisErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_limit_redis_errors_total",
			Help: "Calls of scope redis limits that got no answer from Redis (not connected, timeout, error), takes and refunds.",
		}, []string{"route", "limit"}),
		entries: map[string]*limitEntry{},
		scales:  map[[2]string]float64{},
	}
	p.limitState = st
	p.metrics.Reg.MustRegister(st.decisions, st.redisErrors, &limitCollector{
		st: st,
		keys: prometheus.NewDesc("edge_limit_keys",
			"Keys tracked by a limit: buckets not full, plus full ones until the next sweep.", []string{"route", "limit"}, nil),
		evictions: prometheus.NewDesc("edge_limit_evictions_total",
			"Buckets not yet full dropped to make room for new keys at max_keys.", []string{"route", "limit"}, nil),
	})
}

// acquire returns the entry of limit lc of route, creating its store when none has
// that identity, and counts one more user of it. A changed rate or burst is checked
// here but applied by update, once the snapshot is current.
func (st *limitState) acquire(route string, lc *config.Limit) (*limitEntry, error) {
	id := route + "\x00" + lc.Name + "\x00" + lc.Key.Text + "\x00" + strconv.Itoa(lc.MaxKeys)
	rate, burst := lc.Rate.PerSecond, lc.Burst
	st.mu.Lock()
	defer st.mu.Unlock()
	scale, scaled := st.scales[[2]string{route, lc.Name}]
	e := st.entries[id]
	if e == nil {
		store, err := limiter.NewStore(rate, burst, lc.MaxKeys)
		if err != nil {
			return nil, err
		}
		if scaled {
			if err := store.SetScale(scale); err != nil {
				return nil, err
			}
		}
		e = &limitEntry{id: id, route: route, limit: lc.Name, store: store, rate: rate, burst: burst}
		st.entries[id] = e
	} else if e.rate != rate || e.burst != burst {
		// Check the new values on a throwaway store, so that update cannot fail.
		probe, err := limiter.NewStore(rate, burst, 1)
		if err == nil && scaled {
			err = probe.SetScale(scale)
		}
		if err != nil {
			return nil, err
		}
	}
	e.refs++
	return e, nil
}

// update applies a reloaded rate and burst to e's buckets without refilling them.
func (st *limitState) update(e *limitEntry, rate float64, burst int) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if e.rate == rate && e.burst == burst {
		return
	}
	if err := e.store.Update(rate, burst); err != nil {
		// acquire checked these values; only a racing SetLimitScale can get here.
		slog.Warn("limit keeps its previous rate", "route", e.route, "limit", e.limit, "error", err)
		return
	}
	e.rate, e.burst = rate, burst
}

// release counts one user less of e; the last one drops the store and, when no other
// store serves the same route and limit, its metric children and runtime scale.
func (st *limitState) release(e *limitEntry) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if e.refs--; e.refs > 0 {
		return
	}
	delete(st.entries, e.id)
	for _, o := range st.entries {
		if o.route == e.route && o.limit == e.limit {
			return
		}
	}
	delete(st.scales, [2]string{e.route, e.limit})
	for _, r := range []string{"pass", "reject", "delayed", "dry_run_reject", "fail_open", "unavailable"} {
		st.decisions.DeleteLabelValues(e.route, e.limit, r)
	}
	st.redisErrors.DeleteLabelValues(e.route, e.limit)
}

// registerSweeper adds, once per snapshot, the hooks that run the background sweep
// while the snapshot is current.
func (st *limitState) registerSweeper(s *Snapshot) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.lastBuilt == s {
		return
	}
	st.lastBuilt = s
	var stop, done chan struct{}
	s.starts = append(s.starts, func() {
		stop, done = make(chan struct{}), make(chan struct{})
		go st.sweepLoop(limitSweepEvery, stop, done)
	})
	s.stops = append(s.stops, func() {
		if stop != nil {
			close(stop)
			<-done
			stop = nil
		}
	})
}

func (st *limitState) sweepLoop(every time.Duration, stop, done chan struct{}) {
	defer close(done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			st.sweep(time.Now().UnixNano())
		case <-stop:
			return
		}
	}
}

// sweep drops the full buckets of every store.
func (st *limitState) sweep(now int64) {
	st.mu.Lock()
	stores := make([]*limiter.Store, 0, len(st.entries))
	for _, e := range st.entries {
		stores = append(stores, e.store)
	}
	st.mu.Unlock()
	for _, s := range stores {
		s.Sweep(now)
	}
}

// SetLimitScale multiplies the rate and burst of limit `limit` of route `route` by f
// from now on (a cluster of N edge nodes sharing a global rate sets 1/N). Buckets keep
// their tokens, clamped to the scaled burst. The scale survives reloads while the
// route keeps that limit, even when its key or max_keys change; removing the limit
// forgets it. It fails, changing nothing, when the current config has no such limit
// (ErrNoLimit; also for f other than 1 on a limit with scope "redis", which is exact
// across nodes) or f is not a positive number that keeps rate and burst in range
// (limiter.ErrInvalid). Safe for concurrent use; serialised with reloads.
func (p *Proxy) SetLimitScale(route, limit string, f float64) error {
	p.applyMu.Lock()
	defer p.applyMu.Unlock()
	s := p.snap.Load()
	var l *compiledLimit
	if s != nil {
		for _, rt := range s.routes {
			if rt.name == route && rt.limits != nil {
				for _, cl := range rt.limits.list {
					if cl.name == limit {
						l = cl
					}
				}
			}
		}
	}
	if l == nil {
		return fmt.Errorf("route %q limit %q: %w", route, limit, ErrNoLimit)
	}
	if l.redis != nil && f != 1 {
		// Scale 1 is allowed: it clears a scale left from when the limit had scope
		// "cluster", which would come back if it became local again.
		return fmt.Errorf("route %q limit %q has scope \"redis\", one exact bucket for every node: %w", route, limit, ErrNoLimit)
	}
	st := p.limitState
	st.mu.Lock()
	defer st.mu.Unlock()
	if err := l.store.SetScale(f); err != nil {
		return fmt.Errorf("route %q limit %q: %w", route, limit, err)
	}
	st.scales[[2]string{route, limit}] = f
	return nil
}

// limitCollector reports edge_limit_keys and edge_limit_evictions_total from the
// stores at scrape time: the values are always current and a dropped store leaves no
// series behind.
type limitCollector struct {
	st              *limitState
	keys, evictions *prometheus.Desc
}

func (c *limitCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.keys
	ch <- c.evictions
}

func (c *limitCollector) Collect(ch chan<- prometheus.Metric) {
	type sums struct {
		keys      int
		evictions uint64
	}
	c.st.mu.Lock()
	entries := make([]*limitEntry, 0, len(c.st.entries))
	for _, e := range c.st.entries {
		entries = append(entries, e)
	}
	c.st.mu.Unlock()
	// During a reload that changes a limit's key, two stores serve one route and limit
	// for a moment: report their sum, as one series.
	by := map[[2]string]*sums{}
	for _, e := range entries {
		k := [2]string{e.route, e.limit}
		if by[k] == nil {
			by[k] = &sums{}
		}
		by[k].keys += e.store.Len()
		by[k].evictions += e.store.Evictions()
	}
	for k, v := range by {
		ch <- prometheus.MustNewConstMetric(c.keys, prometheus.GaugeValue, float64(v.keys), k[0], k[1])
		ch <- prometheus.MustNewConstMetric(c.evictions, prometheus.CounterValue, float64(v.evictions), k[0], k[1])
	}
}
