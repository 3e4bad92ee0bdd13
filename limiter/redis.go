package limiter

// The Redis bucket: the same GCRA as Store, kept in Redis so that any number of edge
// nodes share one exact bucket per key.

import (
	"context"
	_ "embed"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/rueidis"
)

// gcraLua documents its KEYS, ARGV and replies at the top.
//
//go:embed scripts/gcra.lua
var gcraLua string

// gcraScript is stateless apart from its SHA-1: Exec sends EVALSHA and falls back to EVAL
// on NOSCRIPT, so a restart, failover or SCRIPT FLUSH costs one EVAL.
var gcraScript = rueidis.NewLuaScript(gcraLua)

// RedisKeyPrefix starts every key of a RedisBucket.
const RedisKeyPrefix = "rl:"

// RedisBucket is the token buckets of one limit kept in Redis (standalone or Cluster):
// one key per bucket, `rl:{<name>:<key hash in hex>}`, updated by one Lua script in one
// round trip per decision. The script reads the time from Redis (TIME), so the callers'
// clocks do not matter, and sets the key to expire when the bucket is full again (a
// missing key is a full bucket), so idle buckets cost Redis nothing. Decisions are those
// of a Store with the same rate and burst, to about 8 ns (the script's times are
// doubles of microseconds); see scripts/gcra.lua.
//
// A RedisBucket holds no connection: every call gets the client to use. It is immutable
// and safe for concurrent use. A call allocates (the command and its reply).
type RedisBucket struct {
	prefix      string // RedisKeyPrefix + "{" + name + ":"
	rate        float64
	burst       int
	take, refnd []string // ARGV of the script, built once
}

// NewRedisBucket returns the buckets of the limit called name (e.g. "route:limit"; every
// node that shares the buckets uses the same name), refilling at rate tokens per second
// and holding at most burst tokens. A Take waits for a token up to maxWait (0: only a
// token available at once). Rate and burst have the bounds of NewStore; maxWait must not
// be negative.
//
// Buckets written with another rate or burst under the same name (a reload changed them,
// or a node still runs the old config) keep the tokens they hold, clamped to the burst of
// the call that reads them, as Store.Update does.
func NewRedisBucket(name string, rate float64, burst int, maxWait time.Duration) (*RedisBucket, error) {
	if _, _, err := params(rate, burst); err != nil {
		return nil, err
	}
	if maxWait < 0 {
		return nil, fmt.Errorf("%w: max wait %v is negative", ErrInvalid, maxWait)
	}
	iv := strconv.FormatFloat(1e6/rate, 'g', -1, 64) // µs; 'g' -1 reads back exactly
	b := strconv.Itoa(burst)
	w := strconv.FormatInt(maxWait.Microseconds(), 10)
	return &RedisBucket{
		prefix: RedisKeyPrefix + "{" + name + ":",
		rate:   rate,
		burst:  burst,
		take:   []string{iv, b, w, "t"},
		refnd:  []string{iv, b, "0", "r"},
	}, nil
}

// Rate returns the rate, tokens per second.
func (b *RedisBucket) Rate() float64 { return b.rate }

// Burst returns the burst.
func (b *RedisBucket) Burst() int { return b.burst }

// Key returns the Redis key of the bucket of key hash h. All of it is one hash tag, so a
// bucket is one key in one slot of a Redis Cluster.
func (b *RedisBucket) Key(h uint64) string {
	var buf [128]byte
	k := append(buf[:0], b.prefix...)
	k = strconv.AppendUint(k, h, 16)
	k = append(k, '}')
	return string(k)
}

// Take takes one token from the bucket of key hash h, through client c, within ctx (give
// it a deadline: a hung Redis otherwise holds the call). ok with wait 0: the token was
// there, and remaining whole tokens are left. ok with wait > 0: the token comes within the
// bucket's maxWait and is reserved; the caller waits that long before acting on it.
// Not ok: nothing was taken, and the next token comes in wait (at least 1µs). A non-nil
// err means no decision: Redis was unreachable, timed out or answered an error (then the
// other results are zero).
func (b *RedisBucket) Take(ctx context.Context, c rueidis.Client, h uint64) (ok bool, wait time.Duration, remaining int, err error) {
	res, err := gcraScript.Exec(ctx, c, []string{b.Key(h)}, b.take).ToArray()
	if err != nil {
		return false, 0, 0, err
	}
	if len(res) != 3 {
		return false, 0, 0, errBadReply
	}
	var v [3]int64
	for i := range v {
		if v[i], err = res[i].AsInt64(); err != nil {
			return false, 0, 0, err
		}
	}
	return v[0] == 1, time.Duration(v[1]) * time.Microsecond, int(v[2]), nil
}

// Refund gives one token back to the bucket of key hash h, up to the burst: the undo of a
// Take that succeeded moments ago, for a request that a later limit rejected (see
// Store.Refund, whose semantics it has). It reports whether the bucket was not full. A
// non-nil err means Redis was unreachable, timed out or answered an error; the token is
// then lost, which errs on the side of limiting.
func (b *RedisBucket) Refund(ctx context.Context, c rueidis.Client, h uint64) (bool, error) {
	res, err := gcraScript.Exec(ctx, c, []string{b.Key(h)}, b.refnd).ToArray()
	if err != nil {
		return false, err
	}
	if len(res) != 3 {
		return false, errBadReply
	}
	n, err := res[0].AsInt64()
	return n == 1, err
}

var errBadReply = fmt.Errorf("limiter: unexpected reply from the redis bucket script")
