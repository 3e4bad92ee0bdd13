package seckill

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/redis/rueidis"
)

// The scripts; each documents its KEYS, ARGV and return codes at the top.
var (
	//go:embed scripts/issue.lua
	issueLua string
	//go:embed scripts/setstock.lua
	setStockLua string
	//go:embed scripts/item.lua
	itemLua string
	//go:embed scripts/consume.lua
	consumeLua string
	//go:embed scripts/release.lua
	releaseLua string
	//go:embed scripts/reclaim.lua
	reclaimLua string
)

// Lua objects are stateless apart from the SHA-1 of their source; Exec sends EVALSHA and
// falls back to EVAL on NOSCRIPT, so a restart, failover or SCRIPT FLUSH costs one EVAL.
var (
	issueScript    = rueidis.NewLuaScript(issueLua)
	setStockScript = rueidis.NewLuaScript(setStockLua)
	itemScript     = rueidis.NewLuaScript(itemLua)
	consumeScript  = rueidis.NewLuaScript(consumeLua)
	releaseScript  = rueidis.NewLuaScript(releaseLua)
	reclaimScript  = rueidis.NewLuaScript(reclaimLua)
)

// DefaultTimeout bounds each Redis call when RedisOptions.Timeout is zero.
const DefaultTimeout = 200 * time.Millisecond

// MaxStock is the largest stock a store accepts (exact in a Lua number and printed by
// Redis as an integer).
const MaxStock = 1 << 40

// RedisOptions configures NewRedis.
type RedisOptions struct {
	// Addrs are one Redis ("127.0.0.1:6379") or seed nodes of a Redis Cluster. Required.
	Addrs []string
	// Username and Password authenticate when set (ACL / requirepass). Empty: no AUTH.
	Username, Password string
	// Timeout bounds every call, including waiting for a batch slot; past it the call fails
	// with ErrUnavailable. Default (zero) DefaultTimeout.
	Timeout time.Duration
}

// Redis is the Store of a fleet of edge nodes: state lives in Redis (standalone or Cluster)
// and every mutation is one Lua script, so any number of nodes may share it. Concurrent calls
// are pipelined on a few connections by rueidis. Safe for concurrent use; build one per
// process and keep it across reloads.
type Redis struct {
	client  rueidis.Client
	timeout time.Duration
	owned   bool // Close closes client
}

// NewRedis connects to opts.Addrs (detecting a Cluster) and returns the store. It fails when
// no address answers; rueidis reconnects on its own afterwards, so a Redis that goes away
// later only makes calls fail with ErrUnavailable until it returns.
func NewRedis(opts RedisOptions) (*Redis, error) {
	if len(opts.Addrs) == 0 {
		return nil, errors.New("seckill redis store needs at least one address")
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	client, err := rueidis.NewClient(rueidis.ClientOption{
		InitAddress:  append([]string(nil), opts.Addrs...),
		Username:     opts.Username,
		Password:     opts.Password,
		DisableCache: true, // no client-side caching: every answer comes from the script
		// A dial must not outlast the call it serves by much; loopback and LAN dials take
		// well under a second.
		Dialer: net.Dialer{Timeout: max(timeout, time.Second)},
		// Detect a hung server on an otherwise idle pipeline too.
		ConnWriteTimeout: max(4*timeout, 2*time.Second),
	})
	if err != nil {
		return nil, fmt.Errorf("cannot connect seckill redis store to %v: %w", opts.Addrs, err)
	}
	r := NewRedisOn(client, timeout)
	r.owned = true
	return r, nil
}

// NewRedisOn returns a store on a client the caller owns and shares (the edge keeps one
// client per Redis for every feature); Close then leaves the client open. timeout bounds
// each call (DefaultTimeout when ≤ 0).
func NewRedisOn(client rueidis.Client, timeout time.Duration) *Redis {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	// Load the scripts on every node now, so the first burst of a sale does not pay
	// NOSCRIPT + EVAL per call. Best effort: Exec falls back to EVAL anyway.
	ctx, cancel := context.WithTimeout(context.Background(), max(timeout, time.Second))
	defer cancel()
	for _, node := range client.Nodes() {
		for _, src := range []string{issueLua, setStockLua, itemLua, consumeLua, releaseLua, reclaimLua} {
			_ = node.Do(ctx, node.B().ScriptLoad().Script(src).Build()).Error()
		}
	}
	return &Redis{client: client, timeout: timeout}
}

// Close closes the connections of a client NewRedis made; a shared client (NewRedisOn)
// stays open.
func (r *Redis) Close() {
	if r.owned {
		r.client.Close()
	}
}

// keys of one item; they share the hash tag {item}, so one script may touch all of them on
// a Redis Cluster.
func stockKey(item string) string   { return "sk:{" + item + "}:stock" }
func holdersKey(item string) string { return "sk:{" + item + "}:holders" }
func expiryKey(item string) string  { return "sk:{" + item + "}:expiry" }

// exec runs script with the store's timeout.
func (r *Redis) exec(ctx context.Context, s *rueidis.Lua, keys, args []string) rueidis.RedisResult {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	return s.Exec(ctx, r.client, keys, args)
}

// unavailable wraps a failed call so that it matches ErrUnavailable and names what failed.
func unavailable(op, item string, err error) error {
	return fmt.Errorf("redis %s of item %q: %w: %w", op, item, ErrUnavailable, err)
}

// SetStock implements Store.
func (r *Redis) SetStock(ctx context.Context, item string, stock int64) error {
	if !validItem(item) || stock < 0 || stock > MaxStock {
		return fmt.Errorf("set stock %d of item %q: %w", stock, item, ErrInvalid)
	}
	err := r.exec(ctx, setStockScript,
		[]string{stockKey(item), holdersKey(item), expiryKey(item)},
		[]string{strconv.FormatInt(stock, 10)}).Error()
	if err != nil {
		return unavailable("set stock", item, err)
	}
	return nil
}

// Issue implements Store with one script call for the whole batch.
func (r *Redis) Issue(ctx context.Context, item string, now time.Time, batch []Ticket) error {
	if !validItem(item) {
		return fmt.Errorf("issue for item %q: %w", item, ErrInvalid)
	}
	if len(batch) == 0 {
		return nil
	}
	args := make([]string, 1, 1+3*len(batch))
	args[0] = strconv.FormatInt(now.UnixMilli(), 10)
	for i := range batch {
		t := &batch[i]
		if !validUser(t.User) {
			return fmt.Errorf("issue for user %q of item %q: %w", t.User, item, ErrInvalid)
		}
		args = append(args, t.User, t.Token, strconv.FormatInt(t.Expires.UnixMilli(), 10))
	}
	res := r.exec(ctx, issueScript, []string{stockKey(item), holdersKey(item), expiryKey(item)}, args)
	if err := res.Error(); err != nil {
		return unavailable("issue", item, err)
	}
	msg, _ := res.ToMessage()
	if n, err := msg.AsInt64(); err == nil && n == -1 {
		return fmt.Errorf("issue for item %q: %w", item, ErrNoSale)
	}
	out, err := msg.ToArray()
	if err != nil || len(out) != 3*len(batch) {
		return unavailable("issue", item, fmt.Errorf("unexpected script answer %v", msg))
	}
	for i := range batch {
		code, err1 := out[3*i].AsInt64()
		token, err2 := out[3*i+1].ToString()
		exp, err3 := out[3*i+2].AsInt64()
		if err := errors.Join(err1, err2, err3); err != nil {
			return unavailable("issue", item, fmt.Errorf("unexpected script answer: %w", err))
		}
		t := &batch[i]
		switch code {
		case 1:
			t.Result = Issued
			t.Expires = time.UnixMilli(exp)
		case 2:
			t.Result = Repeat
			t.Token = token
			t.Expires = time.UnixMilli(exp)
		default:
			t.Result = SoldOut
		}
	}
	return nil
}

// Item implements Store.
func (r *Redis) Item(ctx context.Context, item string) (Stock, error) {
	if !validItem(item) {
		return Stock{}, fmt.Errorf("read item %q: %w", item, ErrInvalid)
	}
	res := r.exec(ctx, itemScript, []string{stockKey(item), holdersKey(item)}, nil)
	if err := res.Error(); err != nil {
		return Stock{}, unavailable("read", item, err)
	}
	msg, _ := res.ToMessage()
	if n, err := msg.AsInt64(); err == nil && n == -1 {
		return Stock{}, fmt.Errorf("read item %q: %w", item, ErrNoSale)
	}
	vals, err := msg.AsIntSlice()
	if err != nil || len(vals) != 2 {
		return Stock{}, unavailable("read", item, fmt.Errorf("unexpected script answer %v", msg))
	}
	return Stock{Stock: vals[0], Issued: vals[1]}, nil
}

// Consume implements Store.
func (r *Redis) Consume(ctx context.Context, item, user, token string) error {
	if !validItem(item) || !validUser(user) {
		return fmt.Errorf("consume token of user %q for item %q: %w", user, item, ErrInvalid)
	}
	n, err := r.exec(ctx, consumeScript, []string{holdersKey(item), expiryKey(item)}, []string{user, token}).AsInt64()
	if err != nil {
		return unavailable("consume", item, err)
	}
	switch n {
	case 1:
		return nil
	case 2:
		return ErrUsed
	default:
		return ErrNotHolder
	}
}

// Release implements Store.
func (r *Redis) Release(ctx context.Context, item, user string) (bool, error) {
	if !validItem(item) || !validUser(user) {
		return false, fmt.Errorf("release unit of user %q for item %q: %w", user, item, ErrInvalid)
	}
	n, err := r.exec(ctx, releaseScript,
		[]string{stockKey(item), holdersKey(item), expiryKey(item)}, []string{user}).AsInt64()
	if err != nil {
		return false, unavailable("release", item, err)
	}
	return n == 1, nil
}

// Reclaim implements Store.
func (r *Redis) Reclaim(ctx context.Context, item string, now time.Time, max int) (int, error) {
	if !validItem(item) {
		return 0, fmt.Errorf("reclaim expired tokens of item %q: %w", item, ErrInvalid)
	}
	if max <= 0 {
		return 0, nil
	}
	n, err := r.exec(ctx, reclaimScript,
		[]string{stockKey(item), holdersKey(item), expiryKey(item)},
		[]string{strconv.FormatInt(now.UnixMilli(), 10), strconv.Itoa(max)}).AsInt64()
	if err != nil {
		return 0, unavailable("reclaim", item, err)
	}
	return int(n), nil
}
