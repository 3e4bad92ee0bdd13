package seckill

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Gate defaults, used where GateOptions leaves a field zero.
const (
	DefaultTTL            = 5 * time.Minute
	DefaultBatchMax       = 128
	DefaultSoldOutRecheck = time.Second
	DefaultReclaimBatch   = 512
)

// maxUnsure bounds, per item, the users a Gate remembers as unsure (see itemState.unsure).
const maxUnsure = 4096

// GateOptions configures NewGate.
type GateOptions struct {
	// TTL is how long an issued token stays valid (at least 1s). Default DefaultTTL.
	TTL time.Duration
	// BatchMax is the most Issue requests for one item coalesced into one store call.
	// Default DefaultBatchMax; 1 turns batching off (one store call per request).
	BatchMax int
	// Timeout bounds how long Issue waits for its batch, queueing included; past it Issue
	// fails with ErrUnavailable (the batch may still complete: asking again is a repeat).
	// Use the store's timeout. Default DefaultTimeout.
	Timeout time.Duration
	// SoldOutRecheck is how long a local sold-out flag answers alone before one request
	// asks the store again (so a restock on another node or a reclaim is noticed).
	// Default DefaultSoldOutRecheck; negative: never recheck, the flag holds until
	// SetStock, Release, Reclaim or ClearSoldOut on this Gate.
	SoldOutRecheck time.Duration
	// MaxItems bounds the per-item state (batcher, sold-out flag) kept on this node; items
	// beyond it are served unbatched and unflagged. Default DefaultMaxItems.
	MaxItems int
	// ReclaimBatch is the most expired tokens one store call returns to stock. Default
	// DefaultReclaimBatch.
	ReclaimBatch int
}

// Grant is an issued token as the edge answers it.
type Grant struct {
	Token   string
	Expires time.Time
	Repeat  bool // the user already held this token
}

// Gate is what the HTTP layer calls for flash sales. It signs tokens, sheds load before the
// store (a local sold-out flag per item; concurrent Issue calls for one item coalesced into
// one store call) and checks order tokens (verified locally, then consumed once in the
// store). Safe for concurrent use. The Gate keeps no state the store does not also hold, so
// it may be rebuilt on reload; keep it when the store and secret stay the same, or the
// sold-out flags and counters start over.
type Gate struct {
	store  Store
	signer *Signer

	ttl          time.Duration
	batchMax     int
	timeout      time.Duration
	recheck      time.Duration
	maxItems     int
	reclaimBatch int

	mu    sync.RWMutex
	items map[string]*itemState

	requests atomic.Uint64
	calls    atomic.Uint64
	shed     atomic.Uint64
	unsure   atomic.Int64 // unsure users over all items (itemState.unsure)
}

// itemState is this node's view of one item: its sold-out flag and its batcher.
type itemState struct {
	item string
	// soldOut is 0 when the item is not known to be sold out, else the unix nanosecond at
	// which one request may ask the store again.
	soldOut atomic.Int64

	mu       sync.Mutex
	gen      uint64  // bumped by each local event that may add stock; guards stale flags
	pending  []*call // requests waiting for the next batch
	inflight int     // batches being run

	// unsure holds users whose last Issue here ended in ErrUnavailable, until their token,
	// if the store did issue one, expires. The store may have given them a unit whose
	// token never reached them, so they pass the sold-out flag: asking again must return
	// that token (a repeat), not 410.
	unsure unsureSet
	// consuming holds users whose last Check here ended in ErrUnavailable, until their
	// token expires. The store may have consumed the token while its answer was lost;
	// edge then forwarded no order, so the user's retry with the same token, answered
	// ErrUsed by the store, is that same order's first forward: Check lets it through,
	// once.
	consuming unsureSet
}

// unsureSet maps users to the unix nanosecond until which an outcome the store did not
// report may still hold for them: at most maxUnsure users, guarded by the itemState's mu;
// n is the map's length, read without the lock on hot paths.
type unsureSet struct {
	m map[string]int64
	n atomic.Int32
}

// call is one Issue request travelling through a batch.
type call struct {
	t       Ticket
	now     time.Time
	recheck bool // this call won a due sold-out recheck: it must reach the store
	err     error
	done    chan struct{} // closed when t and err are final
}

// NewGate returns a Gate over store and signer. It fails on a TTL under one second.
func NewGate(store Store, signer *Signer, opts GateOptions) (*Gate, error) {
	if store == nil || signer == nil {
		return nil, errors.New("seckill gate needs a store and a signer")
	}
	if opts.TTL == 0 {
		opts.TTL = DefaultTTL
	}
	if opts.TTL < time.Second {
		return nil, fmt.Errorf("seckill token ttl %v is under 1s", opts.TTL)
	}
	if opts.BatchMax <= 0 {
		opts.BatchMax = DefaultBatchMax
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.SoldOutRecheck == 0 {
		opts.SoldOutRecheck = DefaultSoldOutRecheck
	}
	if opts.MaxItems <= 0 {
		opts.MaxItems = DefaultMaxItems
	}
	if opts.ReclaimBatch <= 0 {
		opts.ReclaimBatch = DefaultReclaimBatch
	}
	return &Gate{
		store:        store,
		signer:       signer,
		ttl:          opts.TTL,
		batchMax:     opts.BatchMax,
		timeout:      opts.Timeout,
		recheck:      opts.SoldOutRecheck,
		maxItems:     opts.MaxItems,
		reclaimBatch: opts.ReclaimBatch,
		items:        make(map[string]*itemState),
	}, nil
}

// IssueRequests counts Issue calls since the Gate was built.
func (g *Gate) IssueRequests() uint64 { return g.requests.Load() }

// ScriptCalls counts store Issue calls (one script run each on Redis). IssueRequests divided
// by it is the batching factor; ShedSoldOut of the requests never reached the store.
func (g *Gate) ScriptCalls() uint64 { return g.calls.Load() }

// ShedSoldOut counts Issue calls answered ErrSoldOut from the local flag, without the store.
func (g *Gate) ShedSoldOut() uint64 { return g.shed.Load() }

// Issue gives user a token for item: the one the user already holds (Repeat), or a new one
// signed here and recorded in the store if stock is left. Errors: ErrSoldOut (possibly
// answered from the local flag), ErrNoSale, ErrInvalid, ErrUnavailable. Concurrent calls
// for one item share store calls. now is the node's clock (time.Now()).
func (g *Gate) Issue(ctx context.Context, item, user string, now time.Time) (Grant, error) {
	g.requests.Add(1)
	if !validItem(item) || !validUser(user) {
		return Grant{}, ErrInvalid
	}
	st := g.lookup(item)
	recheck := false
	if st != nil {
		// The store may hold a unit for an unsure user: its call must reach the store, past
		// this flag and past the flag a queued batch finds raised when it leaves.
		unsure := g.unsure.Load() != 0 && st.isUnsure([]byte(user), now)
		var shed bool
		if shed, recheck = st.shedding(now.UnixNano(), g.recheck); shed && !unsure {
			g.shed.Add(1)
			return Grant{}, ErrSoldOut
		}
		recheck = recheck || unsure
	}
	// Round the expiry up to the second the token carries, so it never ends early.
	exp := time.Unix((now.Add(g.ttl).UnixNano()+int64(time.Second)-1)/int64(time.Second), 0)
	c := &call{t: Ticket{User: user, Token: g.signer.Sign(item, user, exp), Expires: exp}, now: now, recheck: recheck}
	grant, err := g.await(ctx, item, st, c)
	if st != nil {
		g.unsure.Add(st.note(user, exp, err))
	}
	return grant, err
}

// Unsure reports whether user's last Issue for item on this Gate ended without the store's
// answer (ErrUnavailable), less than a token TTL ago: the store may hold a unit for the
// user whose token never reached them, so a sold-out flag kept outside the Gate must let
// the user through to Issue, which then returns that token as a repeat. Without such users
// anywhere it costs one atomic load and allocates nothing.
func (g *Gate) Unsure(item, user []byte, now time.Time) bool {
	if g.unsure.Load() == 0 {
		return false
	}
	g.mu.RLock()
	st := g.items[string(item)]
	g.mu.RUnlock()
	return st != nil && st.isUnsure(user, now)
}

// await runs c, alone or in a batch, and returns its answer.
func (g *Gate) await(ctx context.Context, item string, st *itemState, c *call) (Grant, error) {
	if st == nil || g.batchMax <= 1 {
		g.direct(ctx, item, st, c)
		return c.grant()
	}

	st.mu.Lock()
	if st.inflight == 0 {
		// Nothing in flight: go now, alone, on this goroutine. Requests arriving meanwhile
		// queue up and leave together when this call returns.
		st.inflight = 1
		st.mu.Unlock()
		g.run(st, []*call{c})
		return c.grant()
	}
	c.done = make(chan struct{})
	st.pending = append(st.pending, c)
	if len(st.pending) >= g.batchMax {
		// A full batch does not wait for the call in flight.
		batch := st.pending
		st.pending = nil
		st.inflight++
		go g.run(st, batch)
	}
	st.mu.Unlock()

	timer := time.NewTimer(g.timeout)
	defer timer.Stop()
	select {
	case <-c.done:
		return c.grant()
	case <-ctx.Done():
		return Grant{}, fmt.Errorf("issue for item %q: %w: %w", item, ErrUnavailable, ctx.Err())
	case <-timer.C:
		return Grant{}, fmt.Errorf("issue for item %q: %w: no answer within %v", item, ErrUnavailable, g.timeout)
	}
}

// grant turns a finished call into Issue's answer.
func (c *call) grant() (Grant, error) {
	if c.err != nil {
		return Grant{}, c.err
	}
	switch c.t.Result {
	case Issued:
		return Grant{Token: c.t.Token, Expires: c.t.Expires}, nil
	case Repeat:
		return Grant{Token: c.t.Token, Expires: c.t.Expires, Repeat: true}, nil
	case SoldOut:
		return Grant{}, ErrSoldOut
	default:
		panic("BUG: seckill store left a ticket pending without an error")
	}
}

// direct serves one request with its own store call: batching is off, or the item is not
// known here yet (so names of items without a sale never create state).
func (g *Gate) direct(ctx context.Context, item string, st *itemState, c *call) {
	var gen uint64
	if st != nil {
		st.mu.Lock()
		gen = st.gen
		st.mu.Unlock()
	}
	g.calls.Add(1)
	batch := [1]Ticket{c.t}
	c.err = g.store.Issue(ctx, item, c.now, batch[:])
	c.t = batch[0]
	if c.err != nil {
		return
	}
	if st == nil {
		if st = g.create(item); st == nil {
			return
		}
		gen = 0 // a fresh state: nothing could have cleared it in between
	}
	g.learn(st, gen, c.now, batch[:])
}

// run executes one batch and then, if requests queued meanwhile and no other batch is in
// flight, starts the next one.
func (g *Gate) run(st *itemState, batch []*call) {
	g.exec(st, batch)
	st.mu.Lock()
	st.inflight--
	if st.inflight == 0 && len(st.pending) > 0 {
		next := st.pending
		st.pending = nil
		st.inflight = 1
		go g.run(st, next)
	}
	st.mu.Unlock()
}

// exec runs one store call for batch and hands each call its answer.
func (g *Gate) exec(st *itemState, batch []*call) {
	defer func() {
		for _, c := range batch {
			if c.done != nil {
				close(c.done)
			}
		}
	}()
	now := batch[0].now
	recheck := false
	for _, c := range batch {
		if c.now.After(now) {
			now = c.now
		}
		recheck = recheck || c.recheck
	}
	st.mu.Lock()
	gen := st.gen
	st.mu.Unlock()
	if st.soldOut.Load() != 0 && !recheck {
		// Sold out while these requests queued: answer them without the store.
		g.shed.Add(uint64(len(batch)))
		for _, c := range batch {
			c.t.Result = SoldOut
		}
		return
	}
	tickets := make([]Ticket, len(batch))
	for i, c := range batch {
		tickets[i] = c.t
	}
	g.calls.Add(1)
	// Not a caller's context: one caller giving up must not fail the others.
	err := g.store.Issue(context.Background(), st.item, now, tickets)
	for i, c := range batch {
		c.t, c.err = tickets[i], err
	}
	if errors.Is(err, ErrNoSale) {
		g.forget(st)
		return
	}
	if err == nil {
		g.learn(st, gen, now, tickets)
	}
}

// learn updates the sold-out flag from a store answer obtained while st.gen was gen.
func (g *Gate) learn(st *itemState, gen uint64, now time.Time, tickets []Ticket) {
	soldOut, issued := false, false
	for i := range tickets {
		switch tickets[i].Result {
		case SoldOut:
			soldOut = true
		case Issued:
			issued = true
		}
	}
	switch {
	case soldOut:
		until := int64(1) // never recheck
		if g.recheck > 0 {
			until = now.UnixNano() + int64(g.recheck)
		}
		st.mu.Lock()
		if st.gen == gen { // no restock on this node since the call started
			st.soldOut.Store(until)
		}
		st.mu.Unlock()
	case issued:
		st.soldOut.Store(0)
	}
}

// shedding reports whether a request at now is answered sold out from the flag. When a
// recheck is due exactly one caller wins it (won) and goes to the store.
func (st *itemState) shedding(now int64, recheck time.Duration) (shed, won bool) {
	v := st.soldOut.Load()
	if v == 0 {
		return false, false
	}
	if recheck < 0 || now < v {
		return true, false
	}
	won = st.soldOut.CompareAndSwap(v, now+int64(recheck))
	return !won, won
}

// isUnsure reports whether user's last Issue here ended without the store's answer, less
// than a token TTL ago. Without unsure users it costs one atomic load.
func (st *itemState) isUnsure(user []byte, now time.Time) bool {
	if st.unsure.n.Load() == 0 {
		return false
	}
	st.mu.Lock()
	exp, ok := st.unsure.m[string(user)]
	st.mu.Unlock()
	return ok && now.UnixNano() < exp
}

// note records the outcome of user's Issue whose token would expire at exp: no answer from
// the store (ErrUnavailable) makes the user unsure; any answer of the store ends that. It
// returns the change in the number of unsure users.
func (st *itemState) note(user string, exp time.Time, err error) int64 {
	return st.record(&st.unsure, user, exp, errors.Is(err, ErrUnavailable))
}

// record adds user to set until exp when unknown, else drops it, and returns the change
// in set's size. Without users in set and with a known outcome it costs one atomic load.
func (st *itemState) record(set *unsureSet, user string, exp time.Time, unknown bool) int64 {
	if !unknown && set.n.Load() == 0 {
		return 0
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	before := len(set.m)
	defer func() { set.n.Store(int32(len(set.m))) }()
	switch {
	case !unknown:
		delete(set.m, user)
	case set.m == nil:
		set.m = map[string]int64{user: exp.UnixNano()}
	default:
		if len(set.m) >= maxUnsure {
			// Make room from users whose tokens have expired: reclaim returns their units.
			now := time.Now().UnixNano()
			for u, e := range set.m {
				if e <= now {
					delete(set.m, u)
				}
			}
		}
		if _, ok := set.m[user]; ok || len(set.m) < maxUnsure {
			set.m[user] = exp.UnixNano()
		}
	}
	return int64(len(set.m) - before)
}

// take removes user from set and reports whether it was there, unexpired at now.
func (st *itemState) take(set *unsureSet, user string, now time.Time) bool {
	if set.n.Load() == 0 {
		return false
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	exp, ok := set.m[user]
	if ok {
		delete(set.m, user)
		set.n.Store(int32(len(set.m)))
	}
	return ok && now.UnixNano() < exp
}

// clear drops the sold-out flag after a local event that may have added stock.
func (st *itemState) clear() {
	st.mu.Lock()
	st.gen++
	st.soldOut.Store(0)
	st.mu.Unlock()
}

func (g *Gate) lookup(item string) *itemState {
	g.mu.RLock()
	st := g.items[item]
	g.mu.RUnlock()
	return st
}

// create returns the state of item, making it if there is room.
func (g *Gate) create(item string) *itemState {
	g.mu.Lock()
	defer g.mu.Unlock()
	st := g.items[item]
	if st == nil && len(g.items) < g.maxItems {
		st = &itemState{item: item}
		g.items[item] = st
	}
	return st
}

// forget drops st after the store said the item has no sale.
func (g *Gate) forget(st *itemState) {
	g.mu.Lock()
	if g.items[st.item] == st {
		delete(g.items, st.item)
		st.mu.Lock()
		g.unsure.Add(-int64(len(st.unsure.m)))
		st.unsure.m = nil
		st.unsure.n.Store(0)
		st.consuming.m = nil
		st.consuming.n.Store(0)
		st.mu.Unlock()
	}
	g.mu.Unlock()
}

// Items returns up to max item names this node keeps state for (a sale started through
// it, or token requests it passed to the store), sorted; the store may hold others. It
// allocates the slice; for status pages, not the request path.
func (g *Gate) Items(max int) []string {
	g.mu.RLock()
	names := make([]string, 0, min(len(g.items), max))
	for name := range g.items {
		names = append(names, name)
	}
	g.mu.RUnlock()
	slices.Sort(names)
	if len(names) > max {
		names = names[:max]
	}
	return names
}

// ClearSoldOut drops this node's sold-out flag for item, for a restock or release announced
// by another node (e.g. through cluster gossip). Safe to call for any item.
func (g *Gate) ClearSoldOut(item string) {
	if st := g.lookup(item); st != nil {
		st.clear()
	}
}

// SetStock starts (or restarts) the sale of item with stock units in the store and clears
// this node's sold-out flag. Other nodes notice within SoldOutRecheck, or at once through
// ClearSoldOut.
func (g *Gate) SetStock(ctx context.Context, item string, stock int64) error {
	if err := g.store.SetStock(ctx, item, stock); err != nil {
		return err
	}
	if st := g.create(item); st != nil {
		st.clear()
	}
	return nil
}

// Item reports the stock and issued units of item, from the store.
func (g *Gate) Item(ctx context.Context, item string) (Stock, error) {
	return g.store.Item(ctx, item)
}

// Release returns the unit held by user on item to stock if the user has not ordered; true
// the first time, false afterwards. A release clears this node's sold-out flag.
func (g *Gate) Release(ctx context.Context, item, user string) (bool, error) {
	ok, err := g.store.Release(ctx, item, user)
	if ok {
		g.ClearSoldOut(item)
	}
	return ok, err
}

// Check admits an order carrying token for item by user: the token must verify locally
// (ErrForged, ErrExpired, ErrOtherUser, ErrOtherItem otherwise, without a store call) and is
// then consumed once in the store (ErrUsed the second time, ErrNotHolder when the store does
// not hold it, ErrUnavailable).
//
// A Check that ended in ErrUnavailable may have consumed the token with its answer lost;
// the order it was for was not admitted. So the next Check of that user and item on this
// Gate within the token's TTL that the store answers ErrUsed is admitted instead, once:
// it is that order's first admission, not a second order. A retry that reaches another
// node still gets ErrUsed.
func (g *Gate) Check(ctx context.Context, token, item, user string, now time.Time) error {
	if err := g.signer.VerifyString(token, item, user, now); err != nil {
		return err
	}
	err := g.store.Consume(ctx, item, user, token)
	st := g.lookup(item)
	switch {
	case errors.Is(err, ErrUnavailable):
		if st == nil {
			st = g.create(item)
		}
		if st != nil {
			st.record(&st.consuming, user, now.Add(g.ttl), true)
		}
	case errors.Is(err, ErrUsed):
		if st != nil && st.take(&st.consuming, user, now) {
			return nil // the store consumed it for this order's lost attempt
		}
	case st != nil:
		st.record(&st.consuming, user, now, false)
	}
	return err
}

// Reclaim returns the units of expired unused tokens to stock, for every item this node
// knows, in store calls of at most ReclaimBatch tokens and at most 16 calls per item, and
// reports how many units came back. Any number of nodes may run it concurrently. Items with
// returned units lose their sold-out flag here. It goes on past a failing item and returns
// the first error.
func (g *Gate) Reclaim(ctx context.Context, now time.Time) (int, error) {
	g.mu.RLock()
	states := make([]*itemState, 0, len(g.items))
	for _, st := range g.items {
		states = append(states, st)
	}
	g.mu.RUnlock()
	total := 0
	var first error
	for _, st := range states {
		got := 0
		for round := 0; round < 16; round++ {
			n, err := g.store.Reclaim(ctx, st.item, now, g.reclaimBatch)
			got += n
			if err != nil {
				if first == nil {
					first = err
				}
				break
			}
			if n < g.reclaimBatch {
				break
			}
		}
		if got > 0 {
			st.clear()
		}
		total += got
	}
	return total, first
}

// RunReclaim calls Reclaim every interval until ctx is done; run it on one goroutine per
// process. Errors are left to the next round (the store is likely unavailable).
func (g *Gate) RunReclaim(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			_, _ = g.Reclaim(ctx, now)
		}
	}
}
