package waitroom

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	mrand "math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Timing of a room's background work. Variables, not constants, so tests can shorten them.
var (
	tickEvery    = 100 * time.Millisecond // the leader's admission step; others try to lead this often
	refreshEvery = 200 * time.Millisecond // the snapshot of the shared counters
	flushEvery   = 500 * time.Millisecond // batched touches
	pruneEvery   = 5 * time.Second        // the node's memory of places
	lease        = 1500 * time.Millisecond
	// staleAfter: a snapshot older than this means the store is unreachable; waiting users
	// then get ErrUnavailable (or are let in when the room fails open).
	staleAfter = 1500 * time.Millisecond
)

// Bounds of the leader's work per tick.
const (
	scanPerTick  = 10000 // places the serving counter may pass per tick
	cleanPerTick = 2000  // given-up places and expired admissions dropped per tick
	touchBatch   = 4096  // places per touch call
	// idleTTL: the room's keys expire when nothing wrote them for this long (plus Session).
	idleTTL = 24 * time.Hour
	// maxPollAfter is the longest PollAfter; a waiting user far back polls this often.
	maxPollAfter = 15 * time.Second
)

// Validate reports every problem of o, each naming its setting, or nil. A Room with
// invalid Options refuses everyone with ErrUnavailable (failing closed: a room that
// cannot sign cookies admits no one) and logs why.
func (o Options) Validate() error {
	var errs []error
	if !(o.AdmitRate > 0) || math.IsInf(o.AdmitRate, 0) {
		errs = append(errs, fmt.Errorf("admit_rate %v: must be a positive number", o.AdmitRate))
	}
	if o.MaxActive < 0 {
		errs = append(errs, fmt.Errorf("max_active %d: must be 0 (no cap) or positive", o.MaxActive))
	}
	if o.Session <= 0 {
		errs = append(errs, fmt.Errorf("session %v: must be positive", o.Session))
	}
	if o.MaxPerIP < 0 {
		errs = append(errs, fmt.Errorf("max_per_ip %d: must be 0 (no bound) or positive", o.MaxPerIP))
	}
	if len(o.Secret) < MinSecretLen {
		errs = append(errs, fmt.Errorf("secret is %d bytes, need at least %d", len(o.Secret), MinSecretLen))
	}
	if a := o.Adaptive; a.On && (a.MinRate < 0 || a.LatencyTarget < 0 || a.MaxErrorRatio < 0 || a.MaxErrorRatio > 1) {
		errs = append(errs, fmt.Errorf("adaptive: min_rate, latency_target and max_error_ratio must not be negative, max_error_ratio at most 1"))
	}
	return errors.Join(errs...)
}

// config is the immutable runtime form of Options, swapped whole by Update.
type config struct {
	o       Options
	bad     error // Validate's answer
	sign    *signer
	session int64 // ms
	opensAt int64 // unix ms; 0: no pre-queue
}

func newConfig(name string, o Options) *config {
	o.Secret = append([]byte(nil), o.Secret...)
	c := &config{o: o, bad: o.Validate(), sign: newSigner(name, o.Secret), session: o.Session.Milliseconds()}
	if !o.OpensAt.IsZero() {
		c.opensAt = o.OpensAt.UnixMilli()
	}
	return c
}

// snapshot is the node's recent copy of the shared counters; immutable once published.
type snapshot struct {
	counters
	at       time.Time // when it was read (this node's clock)
	measured float64   // admissions per second over the last 10s
}

// Room is one waiting room on this node. Rooms of the same name on several nodes sharing
// one Redis store form one queue. A Room is safe for concurrent use; Check and Observe are
// the per-request calls, everything else is for the wiring and the admin API. Places,
// counters and admitted users live in the store and in signed cookies, so they survive
// Update and any node's restart; only the node's short-term memory (who polled here
// recently, batched touches, the adaptive rate) is per Room.
type Room struct {
	name string
	st   Store
	log  *slog.Logger
	node string // random id of this Room, the leader lease's value

	cfg   atomic.Pointer[config]
	snap  atomic.Pointer[snapshot]
	local *local
	act   *placeSet
	obs   observations

	leader atomic.Bool
	// serving is the highest serving counter this node has seen, from snapshots and from
	// store answers: what a waiting user is told never lags what another user of this node
	// was told.
	serving atomic.Int64
	rate    atomic.Uint64 // float64 bits: the rate this node's controller holds
	reason  atomic.Pointer[string]

	mu      sync.Mutex // guards started, closed
	started bool
	closed  bool
	stop    chan struct{}
	wg      sync.WaitGroup

	// Owned by the leader goroutine.
	ctl       controller
	carry     float64
	lastTick  time.Time
	lastAdapt time.Time

	// Owned by the refresh goroutine.
	history []sample

	// Owned by the flush goroutine.
	wbuf, abuf []int64

	errMu   sync.Mutex
	lastErr time.Time // the last store failure logged (at most one every 10s)
}

// sample is the admitted counter at one time, for the measured rate.
type sample struct {
	at       time.Time
	admitted int64
}

// New returns the Room name on store st with options o; log receives leadership changes,
// the pre-queue draw and store failures (nil: slog.Default()). Nothing runs until Start.
// The name appears in the store's keys ("wr:{name}:…", braces in it replaced by
// parentheses so the hash tag stays whole) and in the cookie names.
func New(name string, st Store, o Options, log *slog.Logger) *Room {
	if log == nil {
		log = slog.Default()
	}
	var id [8]byte
	_, _ = rand.Read(id[:])
	r := &Room{
		name: name, st: st, log: log.With("room", name), node: hex.EncodeToString(id[:]),
		local: newLocal(), act: newPlaceSet(), stop: make(chan struct{}),
		wbuf: make([]int64, 0, maxPending), abuf: make([]int64, 0, activeSlots),
	}
	r.setConfig(o)
	return r
}

func (r *Room) setConfig(o Options) {
	c := newConfig(r.name, o)
	if c.bad != nil {
		r.log.Error("waiting room options are invalid: everyone waits", "error", c.bad)
	}
	r.cfg.Store(c)
}

// Update replaces the options (a reload). Places, counters, admitted users and a rate set
// by SetAdmitRate are kept; a new Secret invalidates the cookies signed with the old one
// (admitted users then queue again), so keep the secret across reloads.
func (r *Room) Update(o Options) { r.setConfig(o) }

// Start reads the shared counters once (so that Check answers at once) and starts the
// background work: the snapshot refresher (every ~200ms), the touch flusher (~500ms) and
// the leader election with the admission ticker (~100ms). Calling it again, or after
// Close, does nothing.
func (r *Room) Start() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.started || r.closed {
		return
	}
	r.started = true
	r.refresh(time.Now())
	r.wg.Add(3)
	go r.loop(refreshEvery, r.refresh)
	go r.loop(flushEvery, r.flush)
	go r.loop(tickEvery, r.lead)
}

// Close stops the background work, flushes the last touches and gives the leader lease up
// (another node takes over within a tick). It is idempotent; Check keeps answering
// from the last snapshot afterwards, so close a Room only when it is retired.
func (r *Room) Close() { r.shutdown(true) }

// shutdown stops the Room; release false leaves the lease to expire, as a crash would.
func (r *Room) shutdown(release bool) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.closed = true
	started := r.started
	r.mu.Unlock()
	close(r.stop)
	r.wg.Wait()
	if !started || !release {
		return
	}
	r.flush(time.Now())
	if r.leader.Swap(false) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := r.st.release(ctx, r.name, r.node); err != nil {
			r.log.Warn("cannot give the leader lease up; it expires on its own", "error", err)
		}
	}
}

func (r *Room) loop(every time.Duration, f func(time.Time)) {
	defer r.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case now := <-t.C:
			f(now)
		}
	}
}

// storeFailed logs a store failure, at most once every 10 seconds.
func (r *Room) storeFailed(what string, err error) {
	r.errMu.Lock()
	now := time.Now()
	quiet := now.Sub(r.lastErr) < 10*time.Second
	if !quiet {
		r.lastErr = now
	}
	r.errMu.Unlock()
	if !quiet {
		r.log.Warn("waiting room store failed", "op", what, "error", err)
	}
}

// Check decides one request (see Visit and Verdict) and fills out, which it resets first.
//
//   - A valid admission cookie (this room, this key, not expired) admits at once, locally:
//     no store call and no allocation (except the re-signed cookie, once more than half of
//     Session has passed since it was signed). The user is marked active for the next flush.
//   - Otherwise the user is known by their key, else by their place cookie; a user this node
//     answered within half a Session who is still behind the serving counter gets the
//     waiting answer from the node's memory and snapshot, without a store call.
//   - Anyone else — a newcomer, a user new to this node, or one the serving counter
//     reached — costs one store call, which finds their place (a refresh, another node or
//     a lost cookie keeps it), gives a new one at the end when theirs was given up, or
//     admits them (SetAdmit) when the counter passed their place and it was alive.
//
// The store unreachable (now, or the snapshot stale): Err is ErrUnavailable, or the
// request is admitted (without a cookie) when the room fails open. Too many places for
// the client address: Err is ErrTooManyPlaces. Check is safe for concurrent use; v's
// slices are not kept.
func (r *Room) Check(v *Visit, out *Verdict) {
	*out = Verdict{}
	c := r.cfg.Load()
	if c.bad != nil {
		out.Err, out.PollAfter = ErrUnavailable, time.Second
		return
	}
	now := v.Now
	if now.IsZero() {
		now = time.Now()
	}
	nowMs := now.UnixMilli()
	if len(v.AdmitCookie) > 0 {
		if place, exp, ok := c.sign.verifyAdmit(v.AdmitCookie, v.Key, nowMs); ok {
			out.Admitted = true
			r.act.add(place)
			if exp-nowMs < c.session/2 {
				out.SetAdmit = c.sign.admit(place, v.Key, nowMs+c.session)
			}
			return
		}
	}
	s := r.snap.Load()
	if s == nil || time.Since(s.at) > staleAfter {
		r.unavailable(c, out)
		return
	}
	var num int64 // the user's place (< 0: pre-queue ticket), 0: unknown
	if len(v.PlaceCookie) > 0 {
		num = c.sign.verifyPlace(v.PlaceCookie, v.Key)
	}
	cookie := num
	if num == 0 && len(v.Key) > 0 {
		num = r.local.byKey(v.Key)
	}
	if num != 0 {
		drawn := c.opensAt == 0 || s.drawnFor == c.opensAt
		if (num < 0 && !drawn || num > r.serving.Load()) && r.local.poll(num, nowMs, c.session/2) {
			if cookie != num { // known by key here, but the client lost the cookie
				out.SetPlace = c.sign.place(num, v.Key)
			}
			r.waiting(c, s, num, now, out)
			return
		}
	}
	q := joinQuery{
		now: nowMs, session: c.session, opensAt: c.opensAt, maxPerIP: c.o.MaxPerIP,
		idleTTL: (idleTTL + c.o.Session).Milliseconds(),
	}
	if v.Client.IsValid() {
		q.ip = v.Client.Unmap().String()
	}
	switch {
	case len(v.Key) > 0:
		q.identity = "k" + string(v.Key)
	case num < 0:
		q.identity = "t" + strconv.FormatInt(-num, 10)
	default:
		q.place = num
	}
	a, err := r.st.join(context.Background(), r.name, &q)
	if err != nil {
		r.storeFailed("join", err)
		r.unavailable(c, out)
		return
	}
	switch a.status {
	case joinTooMany:
		out.Err, out.PollAfter = ErrTooManyPlaces, maxPollAfter
	case joinAdmitted:
		r.sawServing(a.place)
		out.Admitted = true
		out.SetAdmit = c.sign.admit(a.place, v.Key, nowMs+c.session)
		r.local.forget([]int64{a.place})
	default:
		r.local.remember(a.place, v.Key, nowMs)
		if cookie != a.place {
			out.SetPlace = c.sign.place(a.place, v.Key)
		}
		r.sawServing(a.serving)
		r.waiting(c, s, a.place, now, out)
	}
}

// sawServing raises the node's serving counter to n.
func (r *Room) sawServing(n int64) {
	for {
		old := r.serving.Load()
		if n <= old || r.serving.CompareAndSwap(old, n) {
			return
		}
	}
}

// unavailable answers a request the store cannot serve.
func (r *Room) unavailable(c *config, out *Verdict) {
	if c.o.FailOpen {
		out.Admitted = true
		return
	}
	out.Err, out.PollAfter = ErrUnavailable, time.Second
}

// waiting fills the answer of a user at place num (< 0: a pre-queue ticket).
func (r *Room) waiting(c *config, s *snapshot, num int64, now time.Time, out *Verdict) {
	if num < 0 {
		// Before the draw nobody has a place: the position is unknown (0) and the user
		// should come back at the opening.
		out.PreQueue = true
		if !c.o.OpensAt.IsZero() {
			out.ETA = max(c.o.OpensAt.Sub(now), 0)
		}
		out.PollAfter = pollAfter(out.ETA, c.o.Session)
		return
	}
	pos := max(num-r.serving.Load(), 1)
	out.Position, out.Ahead = pos, pos-1
	rate := s.measured
	if rate <= 0 {
		rate = s.inForce
	}
	if rate <= 0 {
		rate = c.o.AdmitRate
	}
	out.ETA = time.Duration(float64(pos) / rate * float64(time.Second))
	out.PollAfter = pollAfter(out.ETA, c.o.Session)
}

// pollAfter is when a user with eta should poll again: a fifth of the wait, between 1s
// (near the front) and maxPollAfter (far back), and at most a third of session so that
// a polling user's place never lapses.
func pollAfter(eta, session time.Duration) time.Duration {
	d := min(max(eta/5, time.Second), maxPollAfter).Truncate(time.Second)
	return min(d, max(session/3, 10*time.Millisecond))
}

// Observe records one finished protected request for Adaptive: its duration, its status
// and whether a breaker was open for it. It is cheap: a few atomic adds, no allocation.
func (r *Room) Observe(d time.Duration, status int, breakerOpen bool) {
	r.obs.count.Add(1)
	if status >= 500 || breakerOpen {
		r.obs.bad.Add(1)
	}
	if breakerOpen {
		r.obs.breaker.Add(1)
	}
	r.obs.hist[latBucket(d)].Add(1)
}

// refresh reads the shared counters into a new snapshot.
func (r *Room) refresh(now time.Time) {
	ctx, cancel := context.WithTimeout(context.Background(), refreshEvery)
	defer cancel()
	cs, err := r.st.snapshot(ctx, r.name)
	if err != nil {
		r.storeFailed("snapshot", err)
		return
	}
	old := r.snap.Load()
	if cs.tail < r.serving.Load() {
		r.serving.Store(cs.serving) // the store lost its state (a restart): start over
	} else {
		r.sawServing(cs.serving)
	}
	if old != nil && cs.admitted < old.admitted {
		r.history = r.history[:0] // the store lost its state (restart)
	}
	r.history = append(r.history, sample{at: now, admitted: cs.admitted})
	i := 0
	for i < len(r.history)-1 && now.Sub(r.history[i].at) > 10*time.Second {
		i++
	}
	r.history = r.history[:copy(r.history, r.history[i:])]
	measured := 0.0
	if first := r.history[0]; now.Sub(first.at) >= time.Second {
		measured = float64(cs.admitted-first.admitted) / now.Sub(first.at).Seconds()
	}
	r.snap.Store(&snapshot{counters: cs, at: now, measured: measured})
}

// flush sends the batched touches and forgets the places that are no longer in line.
func (r *Room) flush(now time.Time) {
	c := r.cfg.Load()
	nowMs := now.UnixMilli()
	w := r.local.takePending(r.wbuf[:0])
	a := r.act.drain(r.abuf[:0])
	for len(w) > 0 || len(a) > 0 {
		nw, na := min(len(w), touchBatch), min(len(a), touchBatch)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		dead, err := r.st.touch(ctx, r.name, nowMs, c.session, w[:nw], a[:na])
		cancel()
		if err != nil {
			r.storeFailed("touch", err)
			break
		}
		r.local.forget(dead)
		w, a = w[nw:], a[na:]
	}
	if now.Truncate(pruneEvery) != now.Add(-flushEvery).Truncate(pruneEvery) {
		r.local.prune(nowMs, c.session)
	}
}

// lead is one tick of the leader election and, on the leader, of admission.
func (r *Room) lead(now time.Time) {
	c := r.cfg.Load()
	s := r.snap.Load()
	base, overridden := c.o.AdmitRate, false
	if s != nil && s.rate > 0 {
		base, overridden = s.rate, true
	}
	if now.Sub(r.lastAdapt) >= adaptEvery {
		r.lastAdapt = now
		rate, why := r.ctl.step(&c.o.Adaptive, base, overridden, r.obs.drain())
		r.rate.Store(math.Float64bits(rate))
		r.reason.Store(&why)
	}
	if c.bad != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), tickEvery*3)
	defer cancel()
	if !r.leader.Load() {
		ok, err := r.st.acquire(ctx, r.name, r.node, lease)
		if err != nil {
			r.storeFailed("acquire lease", err)
			return
		}
		if !ok {
			return
		}
		r.leader.Store(true)
		// Admit one tick's worth at once: the line has waited for the lease to expire.
		r.carry, r.lastTick = 0, now.Add(-tickEvery)
		r.log.Info("this node now advances the waiting room", "node", r.node)
	}
	if c.opensAt > 0 && now.UnixMilli() >= c.opensAt && (s == nil || s.drawnFor != c.opensAt) {
		if !r.draw(c, now) {
			return // no admission before the pre-queue has its places
		}
	}
	rate := math.Float64frombits(r.rate.Load())
	why := ""
	if p := r.reason.Load(); p != nil {
		why = *p
	}
	allow := r.carry + rate*now.Sub(r.lastTick).Seconds()
	allow = min(allow, rate+1) // a stalled tick does not turn into a burst
	r.lastTick = now
	budget := int(allow)
	r.carry = allow - float64(budget)
	a, err := r.st.tick(ctx, r.name, &tickQuery{
		node: r.node, lease: lease.Milliseconds(), now: now.UnixMilli(), session: c.session,
		budget: budget, maxActive: c.o.MaxActive, scan: scanPerTick, clean: cleanPerTick,
		rate: rate, reason: why, idleTTL: (idleTTL + c.o.Session).Milliseconds(),
	})
	if err != nil {
		r.storeFailed("tick", err)
		r.carry = 0
		return
	}
	if !a.leader {
		r.leader.Store(false)
		r.log.Info("this node no longer advances the waiting room", "node", r.node)
	}
}

// draw gives the pre-queue its places; it reports whether the opening is drawn.
func (r *Room) draw(c *config, now time.Time) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	early, late, drawnFor, err := r.st.preQueue(ctx, r.name)
	if err != nil {
		r.storeFailed("read pre-queue", err)
		return false
	}
	if drawnFor == c.opensAt {
		return true
	}
	seed := mrand.Int64N(1<<52) + 1 // exact in a Lua number and in JSON
	type member struct{ name, id string }
	ms := make([]member, len(early))
	for i, id := range early {
		ms[i] = member{drawName(id), id}
	}
	slices.SortFunc(ms, func(a, b member) int { return cmp.Or(cmp.Compare(a.name, b.name), cmp.Compare(a.id, b.id)) })
	shuffle(seed, len(ms), func(i, j int) { ms[i], ms[j] = ms[j], ms[i] })
	order := make([]string, 0, len(early)+len(late))
	for _, m := range ms {
		order = append(order, m.id)
	}
	order = append(order, late...)
	a, err := r.st.draw(ctx, r.name, &drawQuery{
		node: r.node, lease: lease.Milliseconds(), seed: seed, now: now.UnixMilli(), opensAt: c.opensAt,
		nEarly: len(early), nLate: len(late), order: order, idleTTL: (idleTTL + c.o.Session).Milliseconds(),
	})
	if err != nil {
		r.storeFailed("draw pre-queue", err)
		return false
	}
	switch a.status {
	case drawDone:
		r.log.Info("pre-queue drawn", "seed", a.seed, "early", len(early), "late", len(late),
			"opens_at", c.o.OpensAt.Format(time.RFC3339))
		return true
	case drawAlready:
		return true
	case drawNotLeader:
		r.leader.Store(false)
	}
	return false
}

// drawName is the name DrawOrder sees for a pre-queue identity: the user's key, or
// "#<ticket>" for a user known by cookie alone.
func drawName(id string) string {
	if len(id) > 0 && id[0] == 't' {
		return "#" + id[1:]
	}
	if len(id) > 0 {
		return id[1:]
	}
	return id
}

// Stats reports the room's numbers from this node's latest snapshot (at most ~200ms old).
func (r *Room) Stats() Stats {
	c := r.cfg.Load()
	s := r.snap.Load()
	if s == nil {
		s = &snapshot{}
	}
	st := Stats{
		Waiting: s.waiting, Active: s.active, Admitted: s.admitted,
		AdmitRate: s.inForce, Configured: c.o.AdmitRate, Measured: s.measured,
		Paused: s.paused, Reason: s.reason, Leader: r.leader.Load(), PreQueue: s.pre, Seed: s.seed,
	}
	if s.rate > 0 {
		st.Configured = s.rate
	}
	if r.leader.Load() {
		st.AdmitRate = math.Float64frombits(r.rate.Load())
		if p := r.reason.Load(); p != nil {
			st.Reason = *p
		}
	}
	if st.AdmitRate <= 0 {
		st.AdmitRate = st.Configured
	}
	rate := st.Measured
	if rate <= 0 {
		rate = st.AdmitRate
	}
	st.ETA = float64(s.tail-s.serving+1) / rate
	return st
}

// SetAdmitRate overrides the admission rate on every node of the room (it is kept in the
// store) until it is set again; 0 removes the override and the configured rate applies.
// Adaptive admission stays under it.
func (r *Room) SetAdmitRate(rate float64) error {
	if rate < 0 || math.IsNaN(rate) || math.IsInf(rate, 0) {
		return fmt.Errorf("admit rate %v of waiting room %q: must be a positive number, or 0 for the configured rate", rate, r.name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := r.st.setRate(ctx, r.name, rate); err != nil {
		return fmt.Errorf("cannot set the admit rate of waiting room %q: %w", r.name, err)
	}
	return nil
}

// SetPaused stops (true) or restarts the serving counter on every node of the room (the
// switch is kept in the store). Paused, nobody new is admitted; admitted users stay.
func (r *Room) SetPaused(paused bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := r.st.setPaused(ctx, r.name, paused); err != nil {
		return fmt.Errorf("cannot pause (%v) waiting room %q: %w", paused, r.name, err)
	}
	return nil
}
