package proxy

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edge-gw/edge/cache"
	"github.com/edge-gw/edge/config"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
)

// The response cache (issue 6). One *cache.Cache, sized by cache_size, lives in cacheState
// and is shared by every snapshot, so entries survive reloads. Each cached route compiles
// its cache block into a routeCache (policy, limits, metric children). The request flow is
// the one of the cache package doc; what the client sees is defined in docs/cache.md.

// cacheResult is the outcome of one request on a cached route, a metric label.
type cacheResult uint8

const (
	resHit         cacheResult = iota // answered from a fresh entry (also: a coalesced follower)
	resMiss                           // fetched from the origin and stored
	resStale                          // answered from an expired entry inside its stale window
	resBypass                         // not cacheable (request or response): passed through
	resRevalidated                    // a conditional request got 304; answered from the entry
	numCacheResults
)

var cacheResultNames = [numCacheResults]string{"hit", "miss", "stale", "bypass", "revalidated"}

// X-Cache values by result. A revalidated answer is the stored entry confirmed by the
// origin, so the client sees HIT; SPEC.md fixes the four values.
var xCacheValues = [numCacheResults][]byte{[]byte("HIT"), []byte("MISS"), []byte("STALE"), []byte("BYPASS"), []byte("HIT")}

var (
	hdrXCache = []byte("X-Cache")
	strGET    = []byte(fasthttp.MethodGet)
	strHEAD   = []byte(fasthttp.MethodHead)
)

// Limits of the long-lived cache.
const (
	// maxEntryCap is the body limit given to the cache object itself; each route enforces
	// its own max_entry (which may change on reload) before storing.
	maxEntryCap = 1 << 30
	// maxRefreshes bounds background refreshes (STALE answers) running at once, so a flood
	// of distinct stale keys cannot start unbounded goroutines and upstream requests. A
	// stale hit that finds no free slot is still answered; a later one refreshes.
	maxRefreshes = 64
)

// routeCache is the compiled cache block of one route (issue 6). Immutable, owned by its
// snapshot.
type routeCache struct {
	c           *cache.Cache
	rule        cache.Rule
	key         *compiledKey // extra key parts (key = …); nil for the default key only
	maxEntry    int
	lockTimeout time.Duration
	results     [numCacheResults]prometheus.Counter
}

// cacheState is what this feature keeps across reloads (created by initCache in New):
// the cache itself and the metric families.
type cacheState struct {
	cur       atomic.Pointer[cacheInstance] // the cache of the current snapshot
	requests  *prometheus.CounterVec
	purges    *prometheus.CounterVec // edge_cache_purges_total{kind,source}, children made at init
	refreshes chan struct{}          // semaphore of background refreshes
	tooLarge  atomic.Uint64          // answers not stored for exceeding their route's max_entry
	loadFrom  string                 // a saved cache the first instance starts with (LoadCacheFrom)

	// Build-time state, touched only by build and the start hooks, which Apply runs
	// under its lock (Check uses a throwaway Proxy).
	mu       sync.Mutex
	building *Snapshot      // the snapshot being built, to decide its cache once
	next     *cacheInstance // the cache chosen for building
	labelled map[string]bool
}

// cacheInstance is a cache with the cache_size it was created for.
type cacheInstance struct {
	c    *cache.Cache
	size int64
}

// initCache creates the feature's long-lived state and registers its metrics.
func (p *Proxy) initCache() {
	st := &cacheState{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_cache_requests_total",
			Help: "Requests on cached routes by route and result (hit, miss, stale, bypass, revalidated).",
		}, []string{"route", "result"}),
		purges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_cache_purges_total",
			Help: "Cache purges applied on this node, by kind (url, route, tag) and source (admin: POST /cache/purge here; cluster: made on another node).",
		}, []string{"kind", "source"}),
		refreshes: make(chan struct{}, maxRefreshes),
		labelled:  map[string]bool{},
	}
	// Every child exists from the start, so a dashboard shows 0 rather than no data.
	for _, kind := range []string{"url", "route", "tag"} {
		for _, source := range []string{"admin", "cluster"} {
			st.purges.WithLabelValues(kind, source)
		}
	}
	p.metrics.Reg.MustRegister(st.requests, st.purges, &cacheCollector{st: st})
	p.cacheState = st
}

// buildCache compiles rt's cache block into rt.cache (nil when none). The first call of a
// build decides which cache object the snapshot uses: the running one when cache_size is
// unchanged; a new one at startup. A changed cache_size on reload is refused as a change
// that needs a restart while the cache holds memory: fastcache never returns its chunks,
// so replacing a full cache would leak them (see docs/cache.md).
func (p *Proxy) buildCache(s *Snapshot, prev *Snapshot, rt *route) error {
	st := p.cacheState
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.building != s {
		st.building, st.next = s, nil
		inst, err := st.instanceFor(s.Config)
		if err != nil {
			return err
		}
		st.next = inst
		s.starts = append(s.starts, func() { st.activate(s, inst) })
	}
	cc := rt.cfg.Cache
	if cc == nil {
		return nil
	}
	if st.next == nil {
		return fmt.Errorf("route %q: cache is unavailable", rt.name)
	}
	rc := &routeCache{
		c: st.next.c,
		rule: cache.Rule{
			Route:              rt.name,
			TTL:                cc.TTL,
			Stale:              cc.Stale,
			Statuses:           cc.Statuses,
			AllowAuthorization: cc.AllowCookie,
			AllowCookie:        cc.AllowCookie,
			Targeted:           cc.Targeted,
			KeepTargeted:       cc.ForwardTargeted,
		},
		maxEntry:    int(cc.MaxEntry),
		lockTimeout: cc.LockTimeout,
	}
	if !cc.Key.IsZero() {
		rc.key = compileKey(cc.Key)
	}
	if rc.maxEntry <= 0 || rc.maxEntry > maxEntryCap {
		rc.maxEntry = maxEntryCap
	}
	for r := range rc.results {
		rc.results[r] = st.requests.WithLabelValues(rt.name, cacheResultNames[r])
	}
	st.labelled[rt.name] = true
	rt.cache = rc
	return nil
}

// instanceFor returns the cache a snapshot of cfg uses.
func (st *cacheState) instanceFor(cfg *config.Config) (*cacheInstance, error) {
	cur := st.cur.Load()
	if cur != nil && cur.size == cfg.CacheSize {
		return cur, nil
	}
	if cur != nil && cur.c.Stats().Bytes > 0 {
		return nil, fmt.Errorf("%s: cache_size changed from %d to %d bytes (the cache keeps its memory until restart): %w",
			cfg.File, cur.size, cfg.CacheSize, ErrRestartNeeded)
	}
	c, err := cache.New(cache.Config{Size: int(cfg.CacheSize), MaxEntry: maxEntryCap, LoadFrom: st.loadFrom})
	st.loadFrom = "" // only the first cache starts warm
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cfg.File, err)
	}
	return &cacheInstance{c: c, size: cfg.CacheSize}, nil
}

// LoadCacheFrom makes the first cache this Proxy builds start with the entries saved in
// dir by SaveCache (an upgrade's handover). Call it before the first Apply.
func (p *Proxy) LoadCacheFrom(dir string) { p.cacheState.loadFrom = dir }

// SaveCache writes the current cache's entries to dir, for the process an upgrade starts.
func (p *Proxy) SaveCache(dir string) error {
	cur := p.cacheState.cur.Load()
	if cur == nil {
		return nil
	}
	return cur.c.SaveTo(dir)
}

// activate runs when s became current: its cache is the one admin purges and metrics
// see, and metric children of routes that are no longer cached are dropped.
func (st *cacheState) activate(s *Snapshot, inst *cacheInstance) {
	st.cur.Store(inst)
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.building == s {
		st.building, st.next = nil, nil
	}
	for name := range st.labelled {
		if cachedRoute(s, name) == nil {
			st.requests.DeletePartialMatch(prometheus.Labels{"route": name})
			delete(st.labelled, name)
		}
	}
}

// cachedRoute returns the route of s called name when it has a cache block, or nil.
func cachedRoute(s *Snapshot, name string) *route {
	for _, rt := range s.routes {
		if rt.name == name && rt.cache != nil {
			return rt
		}
	}
	return nil
}

// cacheScratch is the per-request working memory of serveCached, pooled so that a hit
// allocates nothing: the key and the entry buffers grow once and are reused.
type cacheScratch struct {
	key   []byte
	e     *cache.Entry
	conds clientConds // the client's conditional and range headers (cache_range.go)
}

var cacheScratchPool = sync.Pool{New: func() any {
	return &cacheScratch{key: make([]byte, 0, 256), e: cache.AcquireEntry()}
}}

// Close gives cs back to the pool. fasthttp calls it when it resets the request, after
// the response has been written: an answer from the cache sends the entry's body from
// cs without copying it (cache.Entry.WriteTo), so cs must live that long.
func (cs *cacheScratch) Close() error {
	cacheScratchPool.Put(cs)
	return nil
}

// cacheScratchKey is the request user value under which a request's cacheScratch
// waits for fasthttp to Close it.
const cacheScratchKey userKey = 1

// userKey types the keys of the request user values edge sets.
type userKey int

// serveCached answers from the cache or forwards (forwardRoute) and stores.
func (p *Proxy) serveCached(ctx *fasthttp.RequestCtx, s *Snapshot, rt *route, peer, client netip.Addr, sc *scratch) {
	rc := rt.cache
	req := &ctx.Request
	if rc.rule.CheckRequest(&req.Header) != nil {
		p.forwardRoute(ctx, s, rt, peer, client, sc)
		p.invalidateAfter(ctx, rc) // an unsafe method's answer invalidates (cache_rfc.go)
		rc.finish(ctx, resBypass)
		return
	}
	cs := cacheScratchPool.Get().(*cacheScratch)
	ctx.SetUserValue(cacheScratchKey, cs) // Closed by fasthttp once the answer is written
	cs.key = cache.AppendKey(cs.key[:0], req.Header.Method(), req.Header.Host(), req.Header.RequestURI())
	if rc.key != nil {
		cs.key = appendCacheKeyParts(cs.key, rc.key, ctx, client)
	}
	p.lookupOrFetch(ctx, s, rt, cs, peer, client, sc)
}

// appendCacheKeyParts appends one length-prefixed part per key expression of k. Unlike
// limits, a cache key has no "missing" case: an empty value (no such header or cookie) is
// a value of its own, shared by every request without it.
func appendCacheKeyParts(dst []byte, k *compiledKey, ctx *fasthttp.RequestCtx, client netip.Addr) []byte {
	var ipBuf [48]byte
	for i := range k.parts {
		v, lower := k.parts[i].value(ctx, client, ipBuf[:0])
		dst = cache.AppendKeyPart(dst, v)
		if lower {
			for j := len(dst) - len(v); j < len(dst); j++ {
				dst[j] = toLower(dst[j])
			}
		}
	}
	return dst
}

// lookupOrFetch serves a cacheable request whose key is in cs.key.
func (p *Proxy) lookupOrFetch(ctx *fasthttp.RequestCtx, s *Snapshot, rt *route, cs *cacheScratch, peer, client netip.Addr, sc *scratch) {
	rc, e, hdr := rt.cache, cs.e, &ctx.Request.Header
	now := ctx.Time()
	state := rc.c.Lookup(e, cs.key, hdr, now)
	if s.compress != nil && (state == cache.Hit || state == cache.Stale) {
		sc.memoKey = memoKeyOf(cs.key, e.StoredAt().UnixNano())
	}
	switch state {
	case cache.Hit:
		rc.answer(ctx, e, now, resHit, cs.conds.load(hdr))
		return
	case cache.Stale:
		// Answered at once, never waiting for the origin: while an entry is inside its
		// stale window, an origin that fails or hangs is never seen by a client.
		kh := cache.KeyHash(cs.key)
		if rc.c.TryStartRefresh(kh, now) {
			p.startRefresh(ctx, s, rt, cs, kh, peer, client, sc.door)
		}
		rc.answer(ctx, e, now, resStale, cs.conds.load(hdr))
		return
	}
	// Miss or Revalidate: concurrent requests for the key make one origin request.
	t := rc.c.Acquire(cache.KeyHash(cs.key), now)
	if !t.Leader() {
		t.Wait(rc.lockTimeout) // woken by the leader's Done, or gives up at lock_timeout
		now = time.Now()
		switch state = rc.c.Lookup(e, cs.key, hdr, now); state {
		case cache.Hit:
			rc.answer(ctx, e, now, resHit, cs.conds.load(hdr))
			return
		case cache.Stale:
			rc.answer(ctx, e, now, resStale, cs.conds.load(hdr))
			return
		}
		// The leader's answer was not cacheable, or it took longer than lock_timeout: go
		// to the origin ourselves, uncoalesced, as cache.Acquire prescribes.
	}
	p.fetch(ctx, s, rt, cs, state, t, peer, client, sc)
}

// fetch forwards the request (conditionally when state is Revalidate), stores a
// cacheable answer and ends the leader's flight t (a no-op for a follower).
func (p *Proxy) fetch(ctx *fasthttp.RequestCtx, s *Snapshot, rt *route, cs *cacheScratch, state cache.State,
	t cache.Ticket, peer, client netip.Addr, sc *scratch) {
	rc, e, req, resp := rt.cache, cs.e, &ctx.Request, &ctx.Response
	// A HEAD miss is fetched as GET so that the entry can serve both (as nginx's
	// proxy_cache_convert_head); the server drops the body because the client's method is
	// restored before returning.
	head := req.Header.IsHead()
	if head {
		req.Header.SetMethodBytes(strGET)
	}
	ep := rc.c.Epoch()
	// The origin gets neither the client's conditionals nor its Range (the cache needs
	// the whole answer): they shape the answer afterwards.
	cs.conds.keep(&req.Header)
	if state == cache.Revalidate {
		e.PrepareRevalidation(&req.Header)
	} else {
		// The client's conditionals concern its own copy; the cache needs a full answer.
		cache.StripConditional(&req.Header)
	}
	p.forwardRoute(ctx, s, rt, peer, client, sc)
	if state == cache.Revalidate && resp.StatusCode() == fasthttp.StatusNotModified {
		now := time.Now()
		if rc.c.Renew(e, cs.key, &req.Header, resp, &rc.rule, now, ep) == nil {
			t.Done()
			if head {
				req.Header.SetMethodBytes(strHEAD)
			}
			resp.Reset()
			rc.answer(ctx, e, now, resRevalidated, &cs.conds)
			return
		}
		// The 304 cannot renew the entry (it vanished, or the origin names another
		// ETag): ask again without conditions. This second forward appends the peer to
		// X-Forwarded-For once more; the path is rare enough not to keep a copy.
		cache.StripConditional(&req.Header)
		resp.Reset()
		p.forwardRoute(ctx, s, rt, peer, client, sc)
	}
	if originError(resp) && e.ServesOnError(time.Now()) {
		// stale-if-error (or the route's stale): the stored answer replaces the error.
		t.Done()
		if head {
			req.Header.SetMethodBytes(strHEAD)
		}
		cache.StripConditional(&req.Header) // the revalidation's, not the client's
		resp.Reset()
		rc.answer(ctx, e, time.Now(), resStale, &cs.conds)
		return
	}
	if resp.IsBodyStream() && len(cs.conds.rng) > 0 && !head {
		// Too large to store (it streams): rather than the whole body, the client's
		// range comes from the origin after all. Reset closes the stream, and with it
		// the upstream connection it was read from.
		resp.Reset()
		cache.StripConditional(&req.Header) // a revalidation's own conditionals too
		cs.conds.restoreRange(&req.Header)
		p.forwardRoute(ctx, s, rt, peer, client, sc)
	}
	res := resBypass
	stored := time.Now()
	if p.storable(rc, resp) && rc.c.Store(cs.key, &req.Header, resp, &rc.rule, stored, ep) == nil {
		res = resMiss
		if s.compress != nil { // the entry's compressed bytes go to the memo at once
			sc.memoKey = memoKeyOf(cs.key, stored.UnixNano())
		}
	}
	t.Done()
	if head {
		req.Header.SetMethodBytes(strHEAD)
	}
	shape(resp, &cs.conds, !head, false)
	rc.finish(ctx, res)
}

// storable does the checks that are edge's and not the cache policy's: the route's
// max_entry, and never storing edge's own failure answers.
func (p *Proxy) storable(rc *routeCache, resp *fasthttp.Response) bool {
	if edgeFailure(resp) {
		return false
	}
	if resp.IsBodyStream() || len(resp.Body()) > rc.maxEntry { // a stream is larger (stream.go)
		p.cacheState.tooLarge.Add(1)
		return false
	}
	return true
}

// edgeFailure reports whether resp is edge's own answer to an upstream failure (502, 503,
// 504 written by forward), which must never be stored even when the operator lists those
// statuses as cacheable.
func edgeFailure(resp *fasthttp.Response) bool {
	switch resp.StatusCode() {
	case fasthttp.StatusBadGateway, fasthttp.StatusServiceUnavailable, fasthttp.StatusGatewayTimeout:
		b := resp.Body()
		return bytes.Equal(b, errBadGateway.body) || bytes.Equal(b, errTimeout.body) || bytes.Equal(b, errBusy.body)
	}
	return false
}

// answer writes entry e as the response (resp must be fresh) with X-Cache and Age,
// shaped by the client's conds: 304, 206 or 416 (cache_range.go). No allocation.
func (rc *routeCache) answer(ctx *fasthttp.RequestCtx, e *cache.Entry, now time.Time, res cacheResult, conds *clientConds) {
	resp := &ctx.Response
	e.WriteTo(resp, now)
	shape(resp, conds, ctx.IsGet(), true)
	resp.Header.SetCanonical(hdrXCache, xCacheValues[res])
	rc.results[res].Inc()
}

// finish marks an answer that came from the origin (or from edge's failure mapping).
func (rc *routeCache) finish(ctx *fasthttp.RequestCtx, res cacheResult) {
	cache.StripSurrogate(&ctx.Response.Header)
	rc.rule.StripTargeted(&ctx.Response.Header)
	ctx.Response.Header.SetCanonical(hdrXCache, xCacheValues[res])
	rc.results[res].Inc()
}

// startRefresh launches the one background refresh of a stale entry (the caller won
// TryStartRefresh for kh). The refresh works on its own copy of the request, made here
// before the handler returns; it never touches ctx afterwards.
func (p *Proxy) startRefresh(ctx *fasthttp.RequestCtx, s *Snapshot, rt *route, cs *cacheScratch, kh uint64, peer, client netip.Addr, d *door) {
	rc, st := rt.cache, p.cacheState
	select {
	case st.refreshes <- struct{}{}:
	default:
		rc.c.EndRefresh(kh) // too many running: a later stale hit tries again
		return
	}
	j := &refreshJob{key: append([]byte(nil), cs.key...), door: d}
	ctx.Request.CopyTo(&j.req)
	h := &j.req.Header
	if h.IsHead() {
		h.SetMethodBytes(strGET)
	}
	j.revalidate = len(cs.e.ETag()) > 0 || len(cs.e.LastModified()) > 0
	if j.revalidate {
		cs.e.PrepareRevalidation(h)
	} else {
		cache.StripConditional(h)
	}
	go func() {
		defer func() {
			rc.c.EndRefresh(kh)
			<-st.refreshes
		}()
		p.refresh(j, s, rt, peer, client)
	}()
}

// refreshJob is what a background refresh owns: copies, never the client's ctx.
type refreshJob struct {
	key        []byte
	req        fasthttp.Request
	revalidate bool
	door       *door // the listener of the request that started it
}

// refresh fetches a stale entry again and stores (or renews) it. A failed fetch stores
// nothing: the stale entry keeps being served until its window ends.
func (p *Proxy) refresh(j *refreshJob, s *Snapshot, rt *route, peer, client netip.Addr) {
	rc := rt.cache
	ep := rc.c.Epoch()
	ctx := p.detachedFetch(&j.req, j.door, s, rt, peer, client)
	if j.revalidate && ctx.Response.StatusCode() == fasthttp.StatusNotModified {
		e := cache.AcquireEntry()
		err := rc.c.Renew(e, j.key, &ctx.Request.Header, &ctx.Response, &rc.rule, time.Now(), ep)
		cache.ReleaseEntry(e)
		if err == nil {
			return
		}
		cache.StripConditional(&j.req.Header)
		ctx = p.detachedFetch(&j.req, j.door, s, rt, peer, client)
	}
	resp := &ctx.Response
	if p.storable(rc, resp) {
		rc.c.Store(j.key, &ctx.Request.Header, resp, &rc.rule, time.Now(), ep)
	}
}

// detachedFetch forwards a copy of req through the route in a request context of its own.
func (p *Proxy) detachedFetch(req *fasthttp.Request, d *door, s *Snapshot, rt *route, peer, client netip.Addr) *fasthttp.RequestCtx {
	ctx := &fasthttp.RequestCtx{}
	ctx.Init(req, &net.TCPAddr{IP: peer.AsSlice()}, nil)
	sc := scratchPool.Get().(*scratch)
	sc.e = entry{start: ctx.Time(), client: client, route: rt.name}
	sc.door = d
	p.forwardRoute(ctx, s, rt, peer, client, sc)
	sc.e, sc.door = entry{}, nil
	scratchPool.Put(sc)
	return ctx
}

// cacheCollector exports the cache's own statistics at scrape time, so requests pay
// nothing for them.
type cacheCollector struct{ st *cacheState }

var (
	descCacheBytes = prometheus.NewDesc("edge_cache_bytes",
		"Memory held by the response cache (allocated 64 KiB chunks); never above edge_cache_max_bytes.", nil, nil)
	descCacheMax = prometheus.NewDesc("edge_cache_max_bytes",
		"Capacity of the response cache (cache_size rounded to whole chunks).", nil, nil)
	descCacheEntries = prometheus.NewDesc("edge_cache_entries",
		"Records in the response cache, counting each 64 KiB part of a big body.", nil, nil)
	descCacheEvicted = prometheus.NewDesc("edge_cache_evictions_bytes_total",
		"Bytes evicted from the response cache when a bucket's ring wrapped.", nil, nil)
	descCacheStored = prometheus.NewDesc("edge_cache_stored_total",
		"Responses stored in the response cache.", nil, nil)
	descCacheTooLarge = prometheus.NewDesc("edge_cache_too_large_total",
		"Responses not stored because their body exceeded the route's max_entry.", nil, nil)
)

func (cc *cacheCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descCacheBytes
	ch <- descCacheMax
	ch <- descCacheEntries
	ch <- descCacheEvicted
	ch <- descCacheStored
	ch <- descCacheTooLarge
}

func (cc *cacheCollector) Collect(ch chan<- prometheus.Metric) {
	var s cache.Stats
	s.TooLarge = cc.st.tooLarge.Load()
	if inst := cc.st.cur.Load(); inst != nil {
		tl := s.TooLarge
		s = inst.c.Stats()
		s.TooLarge += tl
	}
	ch <- prometheus.MustNewConstMetric(descCacheBytes, prometheus.GaugeValue, float64(s.Bytes))
	ch <- prometheus.MustNewConstMetric(descCacheMax, prometheus.GaugeValue, float64(s.MaxBytes))
	ch <- prometheus.MustNewConstMetric(descCacheEntries, prometheus.GaugeValue, float64(s.Entries))
	ch <- prometheus.MustNewConstMetric(descCacheEvicted, prometheus.CounterValue, float64(s.EvictedBytes))
	ch <- prometheus.MustNewConstMetric(descCacheStored, prometheus.CounterValue, float64(s.Stored))
	ch <- prometheus.MustNewConstMetric(descCacheTooLarge, prometheus.CounterValue, float64(s.TooLarge))
}
