package proxy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edge-gw/edge/admin"
	"github.com/edge-gw/edge/config"
	"github.com/edge-gw/edge/waitroom"
	"github.com/redis/rueidis"
	"github.com/valyala/fasthttp"
)

// Waiting rooms (waiting_room blocks; package waitroom, docs/waiting-room.md). A request
// to a protected route, after the blacklist and before the limits, asks its room: an
// admitted user (a valid admission cookie, checked locally) goes on; a waiting one gets
// 202 JSON with its position, or the waiting page when a browser asks for HTML. The page
// polls /.edge/waiting-room/{name}, which edge answers itself, and reloads when
// admitted. Rooms outlive snapshots: a reload that keeps a room's store keeps its
// places, counters and admitted users.

// roomPollPrefix is the path of the rooms' own poll endpoint; the room's name follows.
var roomPollPrefix = []byte("/.edge/waiting-room/")

// roomState is what this feature keeps across reloads (created by initRooms in New).
type roomState struct {
	mu   sync.Mutex
	live map[string]*liveRoom // by room name: the rooms of the current config
}

// liveRoom is one room and what its store holds.
type liveRoom struct {
	name     string
	storeKey string // what the store is: a room whose store changes is a new room
	room     *waitroom.Room
	rc       atomic.Pointer[redisConn] // the shared Redis client of a redis store, once started
	started  bool
	closed   bool
}

// routeRoom is the room of one protected route in a snapshot.
type routeRoom struct {
	lr                   *liveRoom
	key                  *compiledKey // nil: the place cookie identifies the user
	admitName, placeName []byte
	page                 []byte
	cookieAge            []byte // Max-Age of the cookies: the session, in seconds
}

// rooms returns the live rooms by name.
func (st *roomState) rooms() map[string]*waitroom.Room {
	st.mu.Lock()
	defer st.mu.Unlock()
	out := make(map[string]*waitroom.Room, len(st.live))
	for name, lr := range st.live {
		out[name] = lr.room
	}
	return out
}

func (p *Proxy) initRooms() {
	st := &roomState{live: map[string]*liveRoom{}}
	p.roomState = st
	p.metrics.Reg.MustRegister(waitroom.Collector(st.rooms))
}

// roomOptions turns a waiting_room block into the room's options.
func roomOptions(w *config.WaitingRoom) waitroom.Options {
	o := waitroom.Options{AdmitRate: w.AdmitRate.PerSecond, MaxActive: w.MaxActive, Session: w.Session,
		OpensAt: w.OpensAt, MaxPerIP: w.MaxPerIP, FailOpen: w.FailOpen, Secret: []byte(w.Secret)}
	if a := w.Adaptive; a != nil {
		o.Adaptive = waitroom.Adaptive{On: true, MinRate: a.MinRate.PerSecond, LatencyTarget: a.LatencyTarget, MaxErrorRatio: a.MaxErrorRatio}
	}
	return o
}

// buildRooms gives each protected route of s its room. It connects nothing (edge -check
// runs it): a new room's store is connected and the room started when s becomes
// current, when rooms left out of the config are closed too.
func (p *Proxy) buildRooms(s *Snapshot, byRoute map[string]*routeRoom) error {
	cfg := s.Config
	st := p.roomState
	st.mu.Lock()
	defer st.mu.Unlock()
	next := map[string]*liveRoom{}
	for _, w := range cfg.WaitingRooms {
		if err := roomOptions(w).Validate(); err != nil {
			return fmt.Errorf("waiting_room %q: %w", w.Name, err)
		}
		storeKey := w.Store
		if w.Store == "redis" {
			storeKey += " " + redisKey(cfg.Seckill.Redis)
		}
		lr := st.live[w.Name]
		if lr == nil || lr.storeKey != storeKey {
			lr = &liveRoom{name: w.Name, storeKey: storeKey}
			var store waitroom.Store
			if w.Store == "redis" {
				timeout := cfg.Seckill.Timeout
				store = waitroom.NewRedisStore(func() rueidis.Client {
					if c := lr.rc.Load(); c != nil {
						return c.Client()
					}
					return nil
				}, timeout)
			} else {
				store = waitroom.NewMemoryStore()
			}
			lr.room = waitroom.New(w.Name, store, roomOptions(w), slog.Default())
		}
		next[w.Name] = lr
		admit, place := waitroom.CookieNames(w.Name)
		rr := &routeRoom{lr: lr, admitName: []byte(admit), placeName: []byte(place),
			cookieAge: strconv.AppendInt(nil, int64(w.Session/time.Second), 10)}
		if len(w.Key.Parts) > 0 {
			rr.key = compileKey(w.Key)
		}
		rr.page = waitroom.Page(w.Page, string(roomPollPrefix)+w.Name)
		for _, r := range w.Routes {
			byRoute[r] = rr
		}
		opts, redisCfg := roomOptions(w), cfg.Seckill
		s.starts = append(s.starts, func() { p.startRoom(lr, opts, redisCfg) })
	}
	s.starts = append(s.starts, func() { p.adoptRooms(next) })
	return nil
}

// startRoom connects a room's store and starts it, or applies new options to a room
// that runs already.
func (p *Proxy) startRoom(lr *liveRoom, o waitroom.Options, sk *config.Seckill) {
	p.roomState.mu.Lock()
	defer p.roomState.mu.Unlock()
	if lr.closed {
		return
	}
	if lr.started {
		lr.room.Update(o)
		return
	}
	lr.started = true
	if sk != nil && sk.Redis != nil && lr.storeKey != "memory" {
		lr.rc.Store(p.acquireRedis(sk.Redis))
	}
	lr.room.Start()
}

// adoptRooms makes next the live rooms and closes those it does not keep.
func (p *Proxy) adoptRooms(next map[string]*liveRoom) {
	st := p.roomState
	st.mu.Lock()
	old := st.live
	st.live = next
	st.mu.Unlock()
	for name, lr := range old {
		if next[name] != lr {
			lr.close()
		}
	}
}

func (lr *liveRoom) close() {
	lr.closed = true
	lr.room.Close()
	if c := lr.rc.Swap(nil); c != nil {
		c.release()
	}
}

// closeRooms closes every room; called by Proxy.Close.
func (p *Proxy) closeRooms() {
	p.adoptRooms(map[string]*liveRoom{})
}

var (
	errRoomUnavailable = jsonError(503, "waiting_room_unavailable")
	errTooManyPlaces   = jsonError(429, "too_many_places")
	strTextHTML        = []byte("text/html")
	strSetCookie       = []byte("Set-Cookie")
	strCookieAttrs     = []byte("; Path=/; HttpOnly; SameSite=Lax; Max-Age=")
)

// check asks rr's room about the request.
func (rr *routeRoom) check(ctx *fasthttp.RequestCtx, client netip.Addr, sc *scratch, out *waitroom.Verdict) {
	var v waitroom.Visit
	if rr.key != nil {
		if k, ok := rr.key.appendKey(sc.buf[:0], ctx, client); ok {
			v.Key = k
			sc.buf = k[:0]
		}
	}
	v.Client = client
	v.AdmitCookie = ctx.Request.Header.CookieBytes(rr.admitName)
	v.PlaceCookie = ctx.Request.Header.CookieBytes(rr.placeName)
	v.Now = ctx.Time()
	rr.lr.room.Check(&v, out)
}

// writeRoomError answers a verdict's error (503 or 429, with Retry-After) and reports
// whether there was one.
func writeRoomError(ctx *fasthttp.RequestCtx, out *waitroom.Verdict) bool {
	switch out.Err {
	case nil:
		return false
	case waitroom.ErrTooManyPlaces:
		errTooManyPlaces.write(ctx)
		ctx.Response.Header.SetBytesKV(hdrRetryAfter, strTen)
	default:
		errRoomUnavailable.write(ctx)
		ctx.Response.Header.SetBytesKV(hdrRetryAfter, strOne)
	}
	return true
}

// waitRoom asks rr's room about the request and reports whether it goes on; when it
// does not, the answer is written: the waiting page to a browser, 202 JSON to anyone
// else, or 503/429.
func (p *Proxy) waitRoom(ctx *fasthttp.RequestCtx, rr *routeRoom, client netip.Addr, sc *scratch) bool {
	var out waitroom.Verdict
	rr.check(ctx, client, sc, &out)
	switch {
	case writeRoomError(ctx, &out):
		return false
	case out.Admitted:
		// The upstream's answer replaces the response: the cookies go on it afterwards
		// (observe).
		sc.roomAdmit, sc.roomPlace = out.SetAdmit, out.SetPlace
		return true
	}
	rr.setCookies(ctx, out.SetAdmit, out.SetPlace)
	switch {
	case bytes.Contains(ctx.Request.Header.Peek(fasthttp.HeaderAccept), strTextHTML):
		r := &ctx.Response
		r.SetStatusCode(fasthttp.StatusOK)
		r.Header.SetContentType("text/html; charset=utf-8")
		r.Header.Set(fasthttp.HeaderCacheControl, "no-store")
		r.SetBodyRaw(rr.page)
	default:
		writeWaiting(ctx, fasthttp.StatusAccepted, &out)
	}
	return false
}

var (
	strOne = []byte("1")
	strTen = []byte("10")
)

// setCookies adds the Set-Cookie headers of a verdict's cookies (nil: none).
func (rr *routeRoom) setCookies(ctx *fasthttp.RequestCtx, admit, place []byte) {
	for _, c := range [2]struct{ name, val []byte }{{rr.admitName, admit}, {rr.placeName, place}} {
		if c.val == nil {
			continue
		}
		v := append(append(append(append(append([]byte(nil), c.name...), '='), c.val...), strCookieAttrs...), rr.cookieAge...)
		ctx.Response.Header.AddBytesKV(strSetCookie, v)
	}
}

// waitingBody is SPEC's waiting answer.
type waitingBody struct {
	Waiting  bool  `json:"waiting"`
	Admitted bool  `json:"admitted,omitempty"`
	PreQueue bool  `json:"pre_queue,omitempty"` // before opens_at: no place yet, eta_s is the time to the opening
	Position int64 `json:"position"`
	Ahead    int64 `json:"ahead"`
	ETA      int64 `json:"eta_s"`
	Poll     int64 `json:"poll_after_s"`
}

// observe tells the room how an admitted request went (its adaptive rate follows the
// protected routes' health): the time since the request started and the status.
func (rr *routeRoom) observe(ctx *fasthttp.RequestCtx, sc *scratch) {
	rr.lr.room.Observe(time.Since(sc.e.start), ctx.Response.StatusCode(), false)
	if sc.roomAdmit != nil || sc.roomPlace != nil {
		rr.setCookies(ctx, sc.roomAdmit, sc.roomPlace)
		sc.roomAdmit, sc.roomPlace = nil, nil
	}
}

// writeWaiting writes the waiting answer of out with status, and Retry-After.
func writeWaiting(ctx *fasthttp.RequestCtx, status int, out *waitroom.Verdict) {
	b := waitingBody{Waiting: !out.Admitted, Admitted: out.Admitted, PreQueue: out.PreQueue, Position: out.Position, Ahead: out.Ahead,
		ETA: ceilSeconds(out.ETA), Poll: ceilSeconds(out.PollAfter)}
	if out.Admitted {
		b.Position, b.Ahead, b.ETA, b.Poll = 0, 0, 0, 0
	}
	body, _ := json.Marshal(b)
	r := &ctx.Response
	r.SetStatusCode(status)
	r.Header.SetContentType("application/json")
	r.Header.Set(fasthttp.HeaderCacheControl, "no-store")
	if !out.Admitted {
		setInt(&r.Header, hdrRetryAfter, b.Poll)
	}
	r.SetBody(body)
}

// serveRoomPoll answers the waiting page's poll, GET /.edge/waiting-room/{name}: 200
// with the waiting answer, {"admitted":true} once the user is in (the admission cookie
// set), 404 for a room that does not exist.
func (p *Proxy) serveRoomPoll(ctx *fasthttp.RequestCtx, s *Snapshot, client netip.Addr, sc *scratch) {
	name := ctx.Path()[len(roomPollPrefix):]
	rr := s.roomByName[string(name)]
	if rr == nil {
		errNoRoute.write(ctx)
		return
	}
	var out waitroom.Verdict
	rr.check(ctx, client, sc, &out)
	rr.setCookies(ctx, out.SetAdmit, out.SetPlace)
	if !writeRoomError(ctx, &out) {
		writeWaiting(ctx, fasthttp.StatusOK, &out)
	}
}

func (p *Proxy) adminRooms(api *admin.API) {
	api.Handle("GET /waiting-rooms/{name}", func(w http.ResponseWriter, r *http.Request) {
		st, ok := p.RoomStats(r.PathValue("name"))
		if !ok {
			admin.Error(w, http.StatusNotFound, "no_such_waiting_room")
			return
		}
		admin.JSON(w, http.StatusOK, st)
	})
	api.Handle("POST /waiting-rooms/{name}", p.adminTuneRoom)
}

// adminTuneRoom is POST /waiting-rooms/{name} with {"admit_rate":"1000r/s"} and/or
// {"paused":true}: it answers the room's numbers after the change.
func (p *Proxy) adminTuneRoom(w http.ResponseWriter, r *http.Request) {
	var req struct {
		AdmitRate *string `json:"admit_rate"`
		Paused    *bool   `json:"paused"`
	}
	if !admin.Decode(w, r, &req) {
		return
	}
	name := r.PathValue("name")
	if _, ok := p.RoomStats(name); !ok {
		admin.Error(w, http.StatusNotFound, "no_such_waiting_room")
		return
	}
	if req.AdmitRate == nil && req.Paused == nil {
		admin.JSON(w, http.StatusBadRequest, map[string]string{"error": "bad_request", "detail": `give "admit_rate" ("500r/s") or "paused" (true or false)`})
		return
	}
	var rate float64
	if req.AdmitRate != nil {
		rt, err := config.ParseRate(*req.AdmitRate)
		if err != nil {
			admin.JSON(w, http.StatusBadRequest, map[string]string{"error": "bad_admit_rate", "detail": err.Error()})
			return
		}
		rate = rt.PerSecond
	}
	if err := p.TuneRoom(name, rate, req.Paused); err != nil {
		slog.Default().Warn("waiting room: cannot apply an admin change", "waiting_room", name, "error", err)
		admin.Error(w, http.StatusServiceUnavailable, "waiting_room_unavailable")
		return
	}
	st, _ := p.RoomStats(name)
	admin.JSON(w, http.StatusOK, st)
}

// RoomStats returns the numbers of the waiting room named name (GET
// /waiting-rooms/{name}), and false when the current config has none by that name.
func (p *Proxy) RoomStats(name string) (waitroom.Stats, bool) {
	st := p.roomState
	st.mu.Lock()
	lr := st.live[name]
	st.mu.Unlock()
	if lr == nil {
		return waitroom.Stats{}, false
	}
	return lr.room.Stats(), true
}

// TuneRoom changes a room's admission rate (rate > 0) and pause state (paused non-nil)
// at run time, until the next reload that changes the block (POST /waiting-rooms/{name}).
func (p *Proxy) TuneRoom(name string, rate float64, paused *bool) error {
	st := p.roomState
	st.mu.Lock()
	lr := st.live[name]
	st.mu.Unlock()
	if lr == nil {
		return fmt.Errorf("waiting room %q: %w", name, errNoSuchRoom)
	}
	if rate > 0 {
		if err := lr.room.SetAdmitRate(rate); err != nil {
			return err
		}
	}
	if paused != nil {
		return lr.room.SetPaused(*paused)
	}
	return nil
}

var errNoSuchRoom = fmt.Errorf("no such waiting room")
