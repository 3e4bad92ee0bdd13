package proxy

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/edge-gw/edge/config"
	"github.com/edge-gw/edge/seckill"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
)

// Timings of the seckill feature; variables so tests can shorten them.
var (
	// seckillReclaimEvery is how often a snapshot returns the units of tokens that expired
	// unused to stock.
	seckillReclaimEvery = 5 * time.Second
	// seckillFlagFor is how long the edge answers 410 for an item from its own sold-out
	// flag before it asks the Gate again (which has its own flag and rechecks the store
	// once per seckill.DefaultSoldOutRecheck).
	seckillFlagFor = seckill.DefaultSoldOutRecheck
)

// seckillMaxFlags bounds the items with a local sold-out flag. An item gets one only
// after the store said it is sold out, so only real sales fill it.
const seckillMaxFlags = seckill.DefaultMaxItems

var (
	hdrSeckillToken = "X-Seckill-Token"

	errMissingUser      = jsonError(400, "missing_user")
	errMissingItem      = jsonError(400, "missing_item")
	errSeckillInvalid   = jsonError(400, "invalid_request")
	errSoldOut          = jsonError(410, "sold_out")
	errNoSale           = jsonError(404, "no_sale")
	errInvalidToken     = jsonError(403, "invalid_token")
	errTokenUsed        = jsonError(409, "token_used")
	errStoreUnavailable = func() *answer {
		a := jsonError(503, "store_unavailable")
		a.headers = [][2][]byte{{[]byte("Retry-After"), []byte("1")}}
		return a
	}()
)

// seckillAnswer maps a Gate error to its answer through seckill.Status, the one mapping.
func seckillAnswer(err error) *answer {
	switch status, _ := seckill.Status(err); status {
	case 410:
		return errSoldOut
	case 404:
		return errNoSale
	case 409:
		return errTokenUsed
	case 403:
		return errInvalidToken
	case 400:
		return errSeckillInvalid
	default:
		return errStoreUnavailable
	}
}

// snapSeckill is the seckill block of one snapshot (issue 4): how to read the user and
// the item of a request, and the backend (store connection and Gate) it talks to. The
// backend is long-lived and shared by every snapshot with the same settings.
type snapSeckill struct {
	backend *seckillBackend
	user    *compiledKey // user_key
	item    *compiledKey // item_key, on token requests and on require_token routes

	stopOnce sync.Once
	stop     chan struct{} // closed on retire: ends the reclaim loop
}

// seckillConn is one store: a Memory, or a seckill.Redis on the proxy's shared Redis
// client (redis.go), which connects in the background until Redis answers. It is created
// unconnected by a build (so edge -check and a failed reload connect nothing), started
// when a snapshot using it starts, and closed when a later snapshot stops using it. Safe
// for concurrent use.
type seckillConn struct {
	key string // store settings; a change of key means a new store
	cfg config.Seckill

	store atomic.Pointer[storeRef]  // nil until connected
	rc    atomic.Pointer[redisConn] // the shared client, from start to close (redis only)

	mu      sync.Mutex
	started bool
	closed  bool
}

type storeRef struct{ s seckill.Store }

// seckillBackend is a Gate over one store, with the signer and options it was built
// with, and this node's own sold-out flags. The Gate is made on first use after the
// store is connected (once).
type seckillBackend struct {
	conn    *seckillConn
	gateKey string // secret, token TTL, timeout
	signer  *seckill.Signer
	opts    seckill.GateOptions
	flags   soldOutFlags

	mu   sync.Mutex
	gate atomic.Pointer[seckill.Gate]
}

// seckillState is what this feature keeps across reloads (created by initSeckill in New):
// the backend of the current snapshot, and the metrics.
type seckillState struct {
	mu   sync.Mutex
	cur  *seckillBackend // backend of the current snapshot; nil without a seckill block
	base [3]uint64       // gate counters (requests, script calls, shed) of replaced gates

	localShed atomic.Uint64 // 410s answered from soldOutFlags

	closeOnce sync.Once
	done      chan struct{} // closed by closeSeckill: ends every background loop

	m seckillMetrics
}

// seckillMetrics are the feature's metric children, created once in initSeckill, so
// a request only does atomic adds.
type seckillMetrics struct {
	issued, repeat, soldOut, noSale, errors, invalid prometheus.Counter
	orderOK, orderInvalid, orderUsed, orderError     prometheus.Counter
	storeIssue, storeOrder                           prometheus.Observer
}

// initSeckill creates the feature's long-lived state and registers its metrics.
func (p *Proxy) initSeckill() {
	st := &seckillState{done: make(chan struct{})}
	p.seckillState = st
	reqs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "edge_seckill_requests_total",
		Help: "Token requests by result: issued, repeat (the user already held a token), sold_out, no_sale, invalid (400: missing or bad user or item), error (store unavailable).",
	}, []string{"result"})
	orders := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "edge_seckill_orders_total",
		Help: "Requests on require_token routes by result: ok (token consumed, forwarded), invalid (403), used (409), error (store unavailable).",
	}, []string{"result"})
	storeSecs := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "edge_seckill_store_seconds",
		Help:    "Time a seckill request spent in the gate and store, by op (issue: batching wait included; order: consume). Sold-out answers are not observed (most come from a local flag).",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .2, .5, 1},
	}, []string{"op"})
	gateCounter := func(i int) func() float64 {
		return func() float64 { return float64(st.gateCounters()[i]) }
	}
	p.metrics.Reg.MustRegister(reqs, orders, storeSecs,
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "edge_seckill_gate_requests_total",
			Help: "Token requests that reached the seckill gate (the local sold-out flag of the edge answers the others).",
		}, gateCounter(0)),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "edge_seckill_script_calls_total",
			Help: "Store issue calls (one Lua script run each on Redis); several token requests of one item share a call. Divide by issued tokens for round trips per token.",
		}, gateCounter(1)),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "edge_seckill_shed_total",
			Help: "Token requests answered sold out from a local flag, without the store.",
		}, func() float64 { return float64(st.gateCounters()[2] + st.localShed.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "edge_seckill_store_up",
			Help: "1 when the seckill store of the current config is connected, 0 while edge is (re)trying to connect it.",
		}, func() float64 {
			st.mu.Lock()
			b := st.cur
			st.mu.Unlock()
			if b != nil && b.conn.get() != nil {
				return 1
			}
			return 0
		}),
	)
	st.m = seckillMetrics{
		issued: reqs.WithLabelValues("issued"), repeat: reqs.WithLabelValues("repeat"),
		soldOut: reqs.WithLabelValues("sold_out"), noSale: reqs.WithLabelValues("no_sale"),
		errors: reqs.WithLabelValues("error"), invalid: reqs.WithLabelValues("invalid"),
		orderOK: orders.WithLabelValues("ok"), orderInvalid: orders.WithLabelValues("invalid"),
		orderUsed: orders.WithLabelValues("used"), orderError: orders.WithLabelValues("error"),
		storeIssue: storeSecs.WithLabelValues("issue"), storeOrder: storeSecs.WithLabelValues("order"),
	}
}

// gateCounters returns IssueRequests, ScriptCalls and ShedSoldOut summed over every Gate
// this process used, so the counters stay monotonic when a reload replaces the Gate.
func (st *seckillState) gateCounters() [3]uint64 {
	st.mu.Lock()
	defer st.mu.Unlock()
	c := st.base
	if st.cur != nil {
		if g := st.cur.gate.Load(); g != nil {
			c[0] += g.IssueRequests()
			c[1] += g.ScriptCalls()
			c[2] += g.ShedSoldOut()
		}
	}
	return c
}

// storeKey names the settings that make a store: a change of any of them needs a new
// connection.
func storeKey(c *config.Seckill) string {
	k := "memory"
	if c.Store == "redis" && c.Redis != nil {
		k = fmt.Sprintf("redis %q %q %q", c.Redis.Addrs, c.Redis.Username, c.Redis.Password)
	}
	return k + " " + c.Timeout.String()
}

// buildSeckill sets s.seckill from the config's seckill block.
//
// It validates and prepares, and connects nothing (edge -check runs it): the running
// backend is reused when the store settings and the gate settings (secret, token_ttl,
// timeout) are unchanged; only the Gate is new when just the gate settings changed;
// otherwise a new, unconnected store is made, connected when the snapshot starts, and the
// old one is closed shortly after the swap.
func (p *Proxy) buildSeckill(s *Snapshot, prev *Snapshot) error {
	c := s.Config.Seckill
	if c == nil {
		s.starts = append(s.starts, func() { p.adoptSeckill(nil) })
		return nil
	}
	if c.TokenTTL < time.Second {
		return fmt.Errorf("seckill: token_ttl %v is under 1s", c.TokenTTL)
	}
	if c.Timeout <= 0 {
		return fmt.Errorf("seckill: timeout %v must be positive", c.Timeout)
	}
	signer, err := seckill.NewSigner([]byte(c.Secret))
	if err != nil {
		return fmt.Errorf("seckill: %w", err)
	}
	st := p.seckillState
	st.mu.Lock()
	cur := st.cur
	st.mu.Unlock()

	skey := storeKey(c)
	gkey := fmt.Sprintf("%x %v %v", c.Secret, c.TokenTTL, c.Timeout)
	var b *seckillBackend
	switch {
	case cur != nil && cur.conn.key == skey && cur.gateKey == gkey:
		b = cur
	default:
		conn := &seckillConn{key: skey, cfg: *c}
		if cur != nil && cur.conn.key == skey {
			conn = cur.conn
		}
		b = &seckillBackend{conn: conn, gateKey: gkey, signer: signer,
			opts: seckill.GateOptions{TTL: c.TokenTTL, Timeout: c.Timeout}}
		b.flags.init()
	}
	sk := &snapSeckill{backend: b, user: compileKey(c.UserKey), item: compileKey(c.ItemKey), stop: make(chan struct{})}
	s.seckill = sk
	s.stops = append(s.stops, func() { sk.stopOnce.Do(func() { close(sk.stop) }) })
	s.starts = append(s.starts, func() {
		p.adoptSeckill(b)
		// The period is read here, by the goroutine that applies the config, not by the
		// loop: a loop that starts late must not read it while a test changes it.
		go p.reclaimLoop(sk, seckillReclaimEvery)
	})
	return nil
}

// adoptSeckill makes b the backend of the current snapshot (nil: no seckill block): it
// connects b's store if needed and closes the store it replaces, after a grace period
// for requests still using it.
func (p *Proxy) adoptSeckill(b *seckillBackend) {
	st := p.seckillState
	st.mu.Lock()
	old := st.cur
	st.cur = b
	if old != nil && old != b {
		if g := old.gate.Load(); g != nil {
			st.base[0] += g.IssueRequests()
			st.base[1] += g.ScriptCalls()
			st.base[2] += g.ShedSoldOut()
		}
	}
	st.mu.Unlock()
	if b != nil {
		b.conn.start(p)
	}
	if old != nil && (b == nil || old.conn != b.conn) {
		grace := max(2*old.conn.cfg.Timeout, time.Second)
		time.AfterFunc(grace, old.conn.close)
	}
}

// closeSeckill stops the background loops and closes the current store; called by
// Proxy.Close when the server has stopped.
func (p *Proxy) closeSeckill() {
	st := p.seckillState
	st.closeOnce.Do(func() { close(st.done) })
	st.mu.Lock()
	b := st.cur
	st.mu.Unlock()
	if b != nil {
		b.conn.close()
	}
}

// reclaimLoop returns the units of tokens that expired unused to stock, every
// every (seckillReclaimEvery), until the snapshot is retired or the proxy closed. Any number of
// nodes may do it at once (each unit comes back once).
func (p *Proxy) reclaimLoop(sk *snapSeckill, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-sk.stop:
			return
		case <-p.seckillState.done:
			return
		case now := <-t.C:
			if g := sk.backend.current(); g != nil {
				// Errors are left to the next round: the store is likely unavailable.
				if n, _ := g.Reclaim(context.Background(), now); n > 0 {
					sk.backend.flags.clearAll()
				}
			}
		}
	}
}

// get returns the store, or nil while it is not connected. The first call after the
// shared client connected builds the Redis store on it (loading its scripts).
func (c *seckillConn) get() seckill.Store {
	if r := c.store.Load(); r != nil {
		return r.s
	}
	rc := c.rc.Load()
	if rc == nil {
		return nil
	}
	client := rc.Client()
	if client == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if r := c.store.Load(); r != nil {
		return r.s
	}
	if c.closed {
		return nil
	}
	st := seckill.NewRedisOn(client, c.cfg.Timeout)
	c.store.Store(&storeRef{s: st})
	return st
}

// start connects the store, once: a Memory at once; Redis through p's shared client,
// which keeps trying in the background while Redis does not answer (requests meanwhile
// get 503 store_unavailable).
func (c *seckillConn) start(p *Proxy) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started || c.closed {
		return
	}
	c.started = true
	if c.cfg.Store != "redis" || c.cfg.Redis == nil {
		c.store.Store(&storeRef{s: seckill.NewMemory(seckill.MemoryOptions{})})
		return
	}
	c.rc.Store(p.acquireRedis(c.cfg.Redis))
}

// close releases the store (and this store's reference to the shared client). Calls on
// it fail afterwards with ErrUnavailable.
func (c *seckillConn) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.closed = true
	if r := c.store.Load(); r != nil {
		r.s.Close()
	}
	if rc := c.rc.Load(); rc != nil {
		rc.release()
	}
}

// current returns the Gate, or nil while the store is not connected.
func (b *seckillBackend) current() *seckill.Gate {
	if g := b.gate.Load(); g != nil {
		return g
	}
	store := b.conn.get()
	if store == nil {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if g := b.gate.Load(); g != nil {
		return g
	}
	g, err := seckill.NewGate(store, b.signer, b.opts)
	if err != nil {
		panic("BUG: seckill gate options validated in build: " + err.Error())
	}
	b.gate.Store(g)
	return g
}

// soldOutFlags is this node's own sold-out flag per item, in front of the Gate's: the
// Gate needs the user as a string it may keep, which costs an allocation per request,
// while a flagged item is answered here from the request's bytes without one. A flag
// is set when the Gate answers sold out, holds for seckillFlagFor, and is cleared by a
// restock, release or reclaim on this node.
type soldOutFlags struct {
	mu  sync.RWMutex
	m   map[string]*atomic.Int64 // item -> unix nanoseconds until which it is sold out
	gen atomic.Uint64            // bumped by every clear, so a stale answer sets no flag
}

func (f *soldOutFlags) init() { f.m = make(map[string]*atomic.Int64) }

// soldOut reports whether item is flagged sold out at now. It does not allocate.
func (f *soldOutFlags) soldOut(item []byte, now int64) bool {
	f.mu.RLock()
	a := f.m[string(item)]
	f.mu.RUnlock()
	return a != nil && now < a.Load()
}

// set flags item until until, unless a clear happened since gen was read.
func (f *soldOutFlags) set(item string, gen uint64, until int64) {
	f.mu.RLock()
	a := f.m[item]
	f.mu.RUnlock()
	if a == nil {
		f.mu.Lock()
		if a = f.m[item]; a == nil && len(f.m) < seckillMaxFlags {
			a = new(atomic.Int64)
			f.m[item] = a
		}
		f.mu.Unlock()
		if a == nil {
			return
		}
	}
	f.mu.Lock() // serialises with clear, so the gen check and the store are atomic
	if f.gen.Load() == gen {
		a.Store(until)
	}
	f.mu.Unlock()
}

// clear drops the flag of item.
func (f *soldOutFlags) clear(item string) {
	f.mu.Lock()
	f.gen.Add(1)
	if a := f.m[item]; a != nil {
		a.Store(0)
	}
	f.mu.Unlock()
}

// clearAll drops every flag.
func (f *soldOutFlags) clearAll() {
	f.mu.Lock()
	f.gen.Add(1)
	for _, a := range f.m {
		a.Store(0)
	}
	f.mu.Unlock()
}

// keyBufLen is the stack room for a user or item; longer keys are refused by the store
// anyway (seckill.MaxUserLen, MaxItemLen), so only abusive requests outgrow it.
const keyBufLen = 256

// keyBuf holds a request's user and item on the order path. It is pooled rather than
// on the stack because Signer.Verify is generic, and the compiler cannot see across
// packages that a generic function keeps nothing, so it would move stack buffers to the
// heap.
type keyBuf struct{ user, item [keyBufLen]byte }

var keyBufs = sync.Pool{New: func() any { return new(keyBuf) }}

// issueToken answers POST /seckill/{item}/token.
func (p *Proxy) issueToken(ctx *fasthttp.RequestCtx, s *Snapshot, rt *route, client netip.Addr) {
	sk, m := s.seckill, &p.seckillState.m
	var ub, ib [keyBufLen]byte
	user, ok := sk.user.appendKey(ub[:0], ctx, client)
	if !ok {
		m.invalid.Inc()
		errMissingUser.write(ctx)
		return
	}
	item, ok := sk.item.appendKey(ib[:0], ctx, client)
	if !ok {
		m.invalid.Inc()
		errMissingItem.write(ctx)
		return
	}
	b := sk.backend
	now := time.Now()
	g := b.current()
	// A user whose last token request here timed out may hold a unit: past the flag, the
	// store returns that token.
	if b.flags.soldOut(item, now.UnixNano()) && (g == nil || !g.Unsure(item, user, now)) {
		p.seckillState.localShed.Add(1)
		m.soldOut.Inc()
		errSoldOut.write(ctx)
		return
	}
	if g == nil {
		m.errors.Inc()
		errStoreUnavailable.write(ctx)
		return
	}
	gen := b.flags.gen.Load()
	itemStr := string(item)
	grant, err := g.Issue(context.Background(), itemStr, string(user), now)
	if err == nil {
		m.storeIssue.Observe(time.Since(now).Seconds())
		if grant.Repeat {
			m.repeat.Inc()
		} else {
			m.issued.Inc()
		}
		writeGrant(ctx, grant, item, user)
		return
	}
	a := seckillAnswer(err)
	switch a {
	case errSoldOut:
		b.flags.set(itemStr, gen, now.UnixNano()+int64(seckillFlagFor))
		p.clusterSoldOut(itemStr) // cluster.go: the other edge nodes answer 410 too
		m.soldOut.Inc()
	case errNoSale:
		m.storeIssue.Observe(time.Since(now).Seconds())
		m.noSale.Inc()
	case errSeckillInvalid:
		m.invalid.Inc()
	default:
		m.storeIssue.Observe(time.Since(now).Seconds())
		m.errors.Inc()
	}
	a.write(ctx)
}

// writeGrant writes the 200 answer of an issued (or repeated) token.
func writeGrant(ctx *fasthttp.RequestCtx, grant seckill.Grant, item, user []byte) {
	var buf [512]byte
	out := append(buf[:0], `{"token":`...)
	out = appendJSONString(out, grant.Token)
	out = append(out, `,"item":`...)
	out = appendJSONString(out, item)
	out = append(out, `,"user":`...)
	out = appendJSONString(out, user)
	out = append(out, `,"expires_at":`...)
	out = strconv.AppendInt(out, grant.Expires.Unix(), 10)
	out = append(out, '}')
	ctx.Response.SetStatusCode(200)
	ctx.Response.Header.SetContentType("application/json")
	ctx.Response.SetBody(out)
}

// appendJSONString appends s as a JSON string: quotes, backslashes and control
// characters escaped, invalid UTF-8 replaced by U+FFFD, as encoding/json does.
func appendJSONString[T string | []byte](dst []byte, s T) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				dst = append(dst, '\\', c)
			case c < 0x20:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(string(s[i:min(i+utf8.UTFMax, len(s))]))
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, `\ufffd`...)
		} else {
			dst = append(dst, s[i:i+size]...)
		}
		i += size
	}
	return append(dst, '"')
}

// checkToken verifies and consumes X-Seckill-Token on require_token routes; false
// means ctx holds the 403, 409 or 503 answer.
//
// The order request names its item with the seckill block's item_key, as the token
// request does (path:2: POST /order/{item}), and its user with user_key. The token is
// verified locally first (forged, expired, other user or item: 403 without a store
// call), then consumed once in the store before the order is forwarded.
func (p *Proxy) checkToken(ctx *fasthttp.RequestCtx, s *Snapshot, rt *route, client netip.Addr) bool {
	sk, m := s.seckill, &p.seckillState.m
	kb := keyBufs.Get().(*keyBuf)
	defer keyBufs.Put(kb)
	user, okUser := sk.user.appendKey(kb.user[:0], ctx, client)
	item, okItem := sk.item.appendKey(kb.item[:0], ctx, client)
	token := ctx.Request.Header.Peek(hdrSeckillToken)
	now := time.Now()
	b := sk.backend
	if !okUser || !okItem || len(token) == 0 || b.signer.Verify(token, item, user, now) != nil {
		m.orderInvalid.Inc()
		errInvalidToken.write(ctx)
		return false
	}
	g := b.current()
	if g == nil {
		m.orderError.Inc()
		errStoreUnavailable.write(ctx)
		return false
	}
	err := g.Check(context.Background(), string(token), string(item), string(user), now)
	m.storeOrder.Observe(time.Since(now).Seconds())
	if err == nil {
		m.orderOK.Inc()
		return true
	}
	a := seckillAnswer(err)
	switch a {
	case errTokenUsed:
		m.orderUsed.Inc()
	case errInvalidToken, errSeckillInvalid:
		m.orderInvalid.Inc()
		a = errInvalidToken
	default:
		m.orderError.Inc()
	}
	a.write(ctx)
	return false
}
