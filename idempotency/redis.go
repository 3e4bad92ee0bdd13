package idempotency

import (
	"context"
	_ "embed"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/redis/rueidis"
)

// The scripts; each documents its KEYS, ARGV and returns at the top.
var (
	//go:embed scripts/begin.lua
	beginLua string
	//go:embed scripts/complete.lua
	completeLua string
	//go:embed scripts/abort.lua
	abortLua string
)

// Exec sends EVALSHA and falls back to EVAL on NOSCRIPT, so a restart, failover or SCRIPT
// FLUSH costs one EVAL.
var (
	beginScript    = rueidis.NewLuaScript(beginLua)
	completeScript = rueidis.NewLuaScript(completeLua)
	abortScript    = rueidis.NewLuaScript(abortLua)
)

// Defaults of RedisOptions.
const (
	DefaultRedisTimeout = 200 * time.Millisecond
	DefaultPollInterval = 20 * time.Millisecond
)

// RedisOptions configures NewRedis. Zero fields take their defaults.
type RedisOptions struct {
	// Timeout bounds every call (the caller's ctx may bound it further); past it the call
	// fails with ErrUnavailable. Default DefaultRedisTimeout.
	Timeout time.Duration
	// PollInterval is how often Wait asks again while the key is in flight. Default
	// DefaultPollInterval.
	PollInterval time.Duration
	// MaxRecordBytes is the longest record Complete sends (ErrTooLarge beyond). Default
	// DefaultMaxRecordBytes.
	MaxRecordBytes int
}

// Redis is the Store of a fleet of edge nodes sharing one Redis or Redis Cluster: every
// decision is one Lua script on one key, so any number of nodes may share it. Safe for
// concurrent use; build one per process and keep it across reloads. It uses the caller's
// rueidis client (the one the seckill store uses) and never closes it.
//
// Every error other than a business outcome wraps ErrUnavailable and names the operation
// and key. Each call allocates (key name, arguments, the answer); a replayed record is a
// fresh slice owned by the caller.
type Redis struct {
	client    rueidis.Client
	timeout   time.Duration
	poll      time.Duration
	maxRecord int
}

// NewRedis returns a store on client. It does not talk to Redis: scripts are loaded on
// first use (or by Preload).
func NewRedis(client rueidis.Client, opts RedisOptions) *Redis {
	r := &Redis{client: client, timeout: opts.Timeout, poll: opts.PollInterval, maxRecord: opts.MaxRecordBytes}
	if r.timeout <= 0 {
		r.timeout = DefaultRedisTimeout
	}
	if r.poll <= 0 {
		r.poll = DefaultPollInterval
	}
	if r.maxRecord <= 0 {
		r.maxRecord = DefaultMaxRecordBytes
	}
	return r
}

// Preload loads the scripts on every node, so the first burst after a start does not pay
// NOSCRIPT + EVAL per node. Optional: calls fall back to EVAL anyway.
func (r *Redis) Preload(ctx context.Context) error {
	for addr, node := range r.client.Nodes() {
		for _, src := range []string{beginLua, completeLua, abortLua} {
			if err := node.Do(ctx, node.B().ScriptLoad().Script(src).Build()).Error(); err != nil {
				return fmt.Errorf("cannot load idempotency scripts on redis %s: %w: %w", addr, ErrUnavailable, err)
			}
		}
	}
	return nil
}

// RedisKey is the name of the Redis key that holds (scope, key):
// "idem:{<16 hex digits>}:<len(scope)>:<scope><key>". The hash tag is XXH64 of the
// length-prefixed scope and key, so the entries of one user spread over the slots and every
// key a script touches for (scope, key) is in one slot; the rest of the name keeps the exact
// scope and key, so a tag collision never mixes two entries.
func RedisKey(scope, key string) string {
	var d xxhash.Digest
	d.Reset()
	var n [8]byte
	binary.BigEndian.PutUint32(n[:4], uint32(len(scope)))
	_, _ = d.Write(n[:4])
	_, _ = d.WriteString(scope)
	_, _ = d.WriteString(key)
	binary.BigEndian.PutUint64(n[:], d.Sum64())
	b := make([]byte, 0, 32+len(scope)+len(key))
	b = append(b, "idem:{"...)
	b = hex.AppendEncode(b, n[:])
	b = append(b, "}:"...)
	b = strconv.AppendInt(b, int64(len(scope)), 10)
	b = append(b, ':')
	b = append(b, scope...)
	b = append(b, key...)
	return string(b)
}

// exec runs s with the store's timeout.
func (r *Redis) exec(ctx context.Context, s *rueidis.Lua, key string, args []string) rueidis.RedisResult {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	return s.Exec(ctx, r.client, []string{key}, args)
}

func unavailable(op, key string, err error) error {
	return fmt.Errorf("redis %s of idempotency key %q: %w: %w", op, trim(key), ErrUnavailable, err)
}

func tokenArg(t uint64) string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], t)
	return string(b[:])
}

func millis(d time.Duration) string {
	return strconv.FormatInt(max(int64((d+time.Millisecond-1)/time.Millisecond), 1), 10)
}

// Begin implements Store with one call of begin.lua.
func (r *Redis) Begin(ctx context.Context, scope, key string, fp Fingerprint, lease time.Duration) (Result, error) {
	if err := checkKey(scope, key); err != nil {
		return Result{}, err
	}
	token := rand.Uint64()
	res := r.exec(ctx, beginScript, RedisKey(scope, key),
		[]string{string(fp[:]), tokenArg(token), millis(leaseOrDefault(lease))})
	arr, err := res.ToArray()
	if err != nil {
		return Result{}, unavailable("begin", key, err)
	}
	var code int64 = -1
	if len(arr) > 0 {
		code, _ = arr[0].AsInt64()
	}
	switch {
	case code == 1:
		return Result{Outcome: Started, Claim: Claim{Scope: scope, Key: key, Fingerprint: fp, Token: token}}, nil
	case code == 2:
		return Result{Outcome: InProgress}, nil
	case code == 3:
		return Result{Outcome: Reused}, nil
	case code == 4 && len(arr) == 2:
		rec, err := arr[1].AsBytes()
		if err == nil {
			return Result{Outcome: Replay, Record: rec}, nil
		}
	}
	return Result{}, unavailable("begin", key, fmt.Errorf("unexpected script answer %v", arr))
}

// Wait implements Store by calling Begin every PollInterval while the key is in flight.
func (r *Redis) Wait(ctx context.Context, scope, key string, fp Fingerprint, lease, maxWait time.Duration) (Result, error) {
	until := time.Now().Add(maxWait)
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		res, err := r.Begin(ctx, scope, key, fp, lease)
		if err != nil || res.Outcome != InProgress {
			return res, err
		}
		left := time.Until(until)
		if left <= 0 {
			return res, nil
		}
		d := min(left, r.poll)
		if timer == nil {
			timer = time.NewTimer(d)
		} else {
			timer.Reset(d)
		}
		select {
		case <-timer.C:
		case <-ctx.Done():
			return res, fmt.Errorf("wait for idempotency key %q: %w", trim(key), ctx.Err())
		}
	}
}

// Complete implements Store with one call of complete.lua.
func (r *Redis) Complete(ctx context.Context, c Claim, rec Record, ttl time.Duration) error {
	if err := checkKey(c.Scope, c.Key); err != nil {
		return err
	}
	if len(rec) > r.maxRecord {
		if err := r.Abort(ctx, c); err != nil {
			return err
		}
		return fmt.Errorf("record of %d bytes for idempotency key %q (max %d): %w", len(rec), trim(c.Key), r.maxRecord, ErrTooLarge)
	}
	n, err := r.exec(ctx, completeScript, RedisKey(c.Scope, c.Key),
		[]string{string(c.Fingerprint[:]), tokenArg(c.Token), string(rec), millis(ttlOrDefault(ttl))}).AsInt64()
	if err != nil {
		return unavailable("complete", c.Key, err)
	}
	if n == 0 {
		return fmt.Errorf("complete idempotency key %q: %w", trim(c.Key), ErrClaimLost)
	}
	return nil
}

// Abort implements Store with one call of abort.lua.
func (r *Redis) Abort(ctx context.Context, c Claim) error {
	if err := checkKey(c.Scope, c.Key); err != nil {
		return err
	}
	err := r.exec(ctx, abortScript, RedisKey(c.Scope, c.Key),
		[]string{string(c.Fingerprint[:]), tokenArg(c.Token)}).Error()
	if err != nil {
		return unavailable("abort", c.Key, err)
	}
	return nil
}

var _ Store = (*Redis)(nil)
