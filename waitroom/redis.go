package waitroom

import (
	"context"
	_ "embed"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/rueidis"
)

// The scripts; each documents its ARGV and answer at the top, common.lua the KEYS.
var (
	//go:embed scripts/common.lua
	commonLua string
	//go:embed scripts/join.lua
	joinLua string
	//go:embed scripts/touch.lua
	touchLua string
	//go:embed scripts/snapshot.lua
	snapshotLua string
	//go:embed scripts/acquire.lua
	acquireLua string
	//go:embed scripts/release.lua
	releaseLua string
	//go:embed scripts/tick.lua
	tickLua string
	//go:embed scripts/prequeue.lua
	preQueueLua string
	//go:embed scripts/draw.lua
	drawLua string
	//go:embed scripts/switch.lua
	switchLua string
)

// Every script starts with common.lua's helpers. Exec sends EVALSHA and falls back to EVAL
// on NOSCRIPT, so a Redis restart or failover costs one EVAL per script.
var (
	joinScript     = rueidis.NewLuaScript(commonLua + joinLua)
	touchScript    = rueidis.NewLuaScript(commonLua + touchLua)
	snapshotScript = rueidis.NewLuaScript(commonLua + snapshotLua)
	acquireScript  = rueidis.NewLuaScript(commonLua + acquireLua)
	releaseScript  = rueidis.NewLuaScript(commonLua + releaseLua)
	tickScript     = rueidis.NewLuaScript(commonLua + tickLua)
	preQueueScript = rueidis.NewLuaScript(commonLua + preQueueLua)
	drawScript     = rueidis.NewLuaScript(commonLua + drawLua)
	switchScript   = rueidis.NewLuaScript(commonLua + switchLua)
)

// DefaultTimeout bounds each Redis call of NewRedisStore when its timeout is ≤ 0.
const DefaultTimeout = 200 * time.Millisecond

// drawTimeout bounds the pre-queue draw, one script over every early arrival.
const drawTimeout = 10 * time.Second

// NewRedisStore returns the Store shared by every edge node on one Redis (standalone or
// Cluster). client returns the process's shared client, or nil while it is connecting
// (every call then fails with ErrUnavailable); the store never closes it. timeout bounds
// each call (DefaultTimeout when ≤ 0; the pre-queue draw gets drawTimeout); past it the
// call fails with ErrUnavailable. All keys of a room share the hash tag {room}; each step
// that changes them is one Lua script, so any number of nodes may share the room.
//
// Redis replication is asynchronous: a failover can lose the last joins or admissions,
// which then happen again (a place lost is given anew at the end).
func NewRedisStore(client func() rueidis.Client, timeout time.Duration) Store {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	return &redisStore{client: client, timeout: timeout}
}

type redisStore struct {
	client  func() rueidis.Client
	timeout time.Duration
	keys    sync.Map // room -> []string, the nine KEYS of its scripts
}

// roomKeys returns the KEYS of room's scripts in common.lua's order.
func (s *redisStore) roomKeys(room string) []string {
	if k, ok := s.keys.Load(room); ok {
		return k.([]string)
	}
	tag := "wr:{" + strings.NewReplacer("{", "(", "}", ")").Replace(room) + "}:"
	k := []string{tag + "state", tag + "lock", tag + "seen", tag + "active", tag + "owner",
		tag + "keys", tag + "ips", tag + "early", tag + "late"}
	s.keys.Store(room, k)
	return k
}

// exec runs script on room's keys within the store's timeout (or d when larger).
func (s *redisStore) exec(ctx context.Context, op, room string, sc *rueidis.Lua, d time.Duration, args []string) (rueidis.RedisMessage, error) {
	c := s.client()
	if c == nil {
		return rueidis.RedisMessage{}, fmt.Errorf("waiting room %q: redis %s: %w: no connection yet", room, op, ErrUnavailable)
	}
	ctx, cancel := context.WithTimeout(ctx, max(s.timeout, d))
	defer cancel()
	msg, err := sc.Exec(ctx, c, s.roomKeys(room), args).ToMessage()
	if err != nil {
		return msg, fmt.Errorf("waiting room %q: redis %s: %w: %w", room, op, ErrUnavailable, err)
	}
	return msg, nil
}

// ints reads an array answer of integers, failing unless it has at least n of them.
func ints(msg rueidis.RedisMessage, n int, op, room string) ([]int64, error) {
	v, err := msg.AsIntSlice()
	if err == nil && len(v) < n {
		err = fmt.Errorf("%d values, want %d", len(v), n)
	}
	if err != nil {
		return nil, fmt.Errorf("waiting room %q: redis %s: %w: unexpected answer: %w", room, op, ErrUnavailable, err)
	}
	return v, nil
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func (s *redisStore) join(ctx context.Context, room string, q *joinQuery) (joinAnswer, error) {
	msg, err := s.exec(ctx, "join", room, joinScript, 0, []string{
		q.identity, itoa(q.place), q.ip, itoa(q.now), itoa(q.session), itoa(q.opensAt),
		strconv.Itoa(q.maxPerIP), itoa(q.idleTTL),
	})
	if err != nil {
		return joinAnswer{}, err
	}
	v, err := ints(msg, 3, "join", room)
	if err != nil {
		return joinAnswer{}, err
	}
	return joinAnswer{status: joinStatus(v[0]), place: v[1], serving: v[2]}, nil
}

func (s *redisStore) touch(ctx context.Context, room string, now, session int64, waiting, active []int64) ([]int64, error) {
	args := make([]string, 0, 3+len(waiting)+len(active))
	args = append(args, itoa(now), itoa(session), strconv.Itoa(len(waiting)))
	for _, p := range waiting {
		args = append(args, itoa(p))
	}
	for _, p := range active {
		args = append(args, itoa(p))
	}
	msg, err := s.exec(ctx, "touch", room, touchScript, 0, args)
	if err != nil {
		return nil, err
	}
	return ints(msg, 0, "touch", room)
}

func (s *redisStore) snapshot(ctx context.Context, room string) (counters, error) {
	msg, err := s.exec(ctx, "snapshot", room, snapshotScript, 0, nil)
	if err != nil {
		return counters{}, err
	}
	v, err := msg.AsStrSlice()
	if err == nil && len(v) != 12 {
		err = fmt.Errorf("%d values, want 12", len(v))
	}
	if err != nil {
		return counters{}, fmt.Errorf("waiting room %q: redis snapshot: %w: unexpected answer: %w", room, ErrUnavailable, err)
	}
	n := func(i int) int64 { x, _ := strconv.ParseInt(v[i], 10, 64); return x }
	f := func(i int) float64 { x, _ := strconv.ParseFloat(v[i], 64); return x }
	return counters{
		tail: n(0), serving: n(1), admitted: n(2), paused: v[3] == "1", rate: f(4), inForce: f(5),
		reason: v[6], seed: n(7), drawnFor: n(8), active: n(9), waiting: n(10), pre: n(11),
	}, nil
}

func (s *redisStore) acquire(ctx context.Context, room, node string, lease time.Duration) (bool, error) {
	msg, err := s.exec(ctx, "acquire lease", room, acquireScript, 0, []string{node, itoa(lease.Milliseconds())})
	if err != nil {
		return false, err
	}
	n, err := msg.AsInt64()
	if err != nil {
		return false, fmt.Errorf("waiting room %q: redis acquire lease: %w: unexpected answer: %w", room, ErrUnavailable, err)
	}
	return n == 1, nil
}

func (s *redisStore) release(ctx context.Context, room, node string) error {
	_, err := s.exec(ctx, "release lease", room, releaseScript, 0, []string{node})
	return err
}

func (s *redisStore) tick(ctx context.Context, room string, q *tickQuery) (tickAnswer, error) {
	msg, err := s.exec(ctx, "tick", room, tickScript, 0, []string{
		q.node, itoa(q.lease), itoa(q.now), itoa(q.session), strconv.Itoa(q.budget),
		strconv.Itoa(q.maxActive), strconv.Itoa(q.scan), strconv.Itoa(q.clean),
		strconv.FormatFloat(q.rate, 'g', -1, 64), q.reason, itoa(q.idleTTL),
	})
	if err != nil {
		return tickAnswer{}, err
	}
	v, err := ints(msg, 1, "tick", room)
	if err != nil {
		return tickAnswer{}, err
	}
	if v[0] != 1 {
		return tickAnswer{}, nil
	}
	if len(v) < 5 {
		return tickAnswer{}, fmt.Errorf("waiting room %q: redis tick: %w: unexpected answer %v", room, ErrUnavailable, v)
	}
	return tickAnswer{leader: true, paused: v[1] == 1, admitted: int(v[2]), serving: v[3], active: v[4]}, nil
}

func (s *redisStore) preQueue(ctx context.Context, room string) (early, late []string, drawnFor int64, err error) {
	msg, err := s.exec(ctx, "read pre-queue", room, preQueueScript, drawTimeout, nil)
	if err != nil {
		return nil, nil, 0, err
	}
	v, err := msg.ToArray()
	if err == nil && len(v) != 3 {
		err = fmt.Errorf("%d values, want 3", len(v))
	}
	var d string
	if err == nil {
		d, err = v[0].ToString()
	}
	if err == nil {
		early, err = v[1].AsStrSlice()
	}
	if err == nil {
		late, err = v[2].AsStrSlice()
	}
	if err != nil {
		return nil, nil, 0, fmt.Errorf("waiting room %q: redis read pre-queue: %w: unexpected answer: %w", room, ErrUnavailable, err)
	}
	drawnFor, _ = strconv.ParseInt(d, 10, 64)
	return early, late, drawnFor, nil
}

func (s *redisStore) draw(ctx context.Context, room string, q *drawQuery) (drawAnswer, error) {
	args := make([]string, 0, 8+len(q.order))
	args = append(args, q.node, itoa(q.lease), itoa(q.seed), itoa(q.now), itoa(q.opensAt),
		strconv.Itoa(q.nEarly), strconv.Itoa(q.nLate), itoa(q.idleTTL))
	args = append(args, q.order...)
	msg, err := s.exec(ctx, "draw pre-queue", room, drawScript, drawTimeout, args)
	if err != nil {
		return drawAnswer{}, err
	}
	v, err := msg.ToArray()
	if err == nil && len(v) != 2 {
		err = fmt.Errorf("%d values, want 2", len(v))
	}
	var code int64
	var seed string
	if err == nil {
		code, err = v[0].AsInt64()
	}
	if err == nil {
		seed, err = v[1].ToString()
	}
	if err != nil {
		return drawAnswer{}, fmt.Errorf("waiting room %q: redis draw pre-queue: %w: unexpected answer: %w", room, ErrUnavailable, err)
	}
	n, _ := strconv.ParseInt(seed, 10, 64)
	return drawAnswer{status: drawStatus(code), seed: n}, nil
}

func (s *redisStore) setPaused(ctx context.Context, room string, paused bool) error {
	v := ""
	if paused {
		v = "1"
	}
	_, err := s.exec(ctx, "set paused", room, switchScript, 0, []string{"paused", v, itoa(idleTTL.Milliseconds())})
	return err
}

func (s *redisStore) setRate(ctx context.Context, room string, rate float64) error {
	v := ""
	if rate > 0 {
		v = strconv.FormatFloat(rate, 'g', -1, 64)
	}
	_, err := s.exec(ctx, "set rate", room, switchScript, 0, []string{"rate", v, itoa(idleTTL.Milliseconds())})
	return err
}
