package acme

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/redis/rueidis"
)

// Defaults of RedisStorage.
const (
	// DefaultRedisPrefix is the key prefix NewRedisStorage uses when given "".
	DefaultRedisPrefix = "edge:acme"
	// LockLease is how long a lock outlives the process holding it: the holder refreshes it
	// every LockLease/3, so a crashed node blocks the others for at most this long.
	LockLease = 20 * time.Second
	// redisCallTimeout bounds one storage call; certmagic's contexts can be long-lived.
	redisCallTimeout = 5 * time.Second
	// lockPoll is how often a waiting Lock retries SET NX.
	lockPoll = 250 * time.Millisecond
)

// errNotConnected is returned while the client function returns nil.
var errNotConnected = errors.New("acme redis storage: redis client not connected yet")

// Scripts. Every key a script touches is in KEYS and shares the storage's hash tag, so they
// run on a Redis Cluster too.
var (
	// KEYS[1] value key, KEYS[2] index; ARGV[1] blob, ARGV[2] storage key.
	storeScript = rueidis.NewLuaScript(`
redis.call('SET', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], 0, ARGV[2])
return 1`)
	// KEYS[1] index, KEYS[2..n] value keys; ARGV[1..n-1] the storage keys of KEYS[2..n].
	deleteScript = rueidis.NewLuaScript(`
for i = 1, #ARGV do
  redis.call('DEL', KEYS[i+1])
  redis.call('ZREM', KEYS[1], ARGV[i])
end
return #ARGV`)
	// KEYS[1] lock key; ARGV[1] token, ARGV[2] lease in ms. 1 when still held and extended.
	refreshScript = rueidis.NewLuaScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0`)
	// KEYS[1] lock key; ARGV[1] token. 1 when deleted, 0 when not ours (expired or taken).
	unlockScript = rueidis.NewLuaScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0`)
)

// RedisStorage is a certmagic.Storage in Redis (standalone or Cluster), shared by every edge
// node that uses the same prefix: certificates, private keys, the ACME account, challenge
// tokens and locks. It is safe for concurrent use.
//
// Layout, all under one hash tag so a Cluster keeps them in one slot:
//
//	{prefix}:f:<key>    the value, prefixed by its modification time (8 bytes, Unix ns)
//	{prefix}:idx        a sorted set of all keys, for List, Exists and Delete of "directories"
//	{prefix}:lock:<n>   a lock: a random token, SET NX PX LockLease, refreshed by its holder
//
// Private keys are stored as they are in a FileStorage, unencrypted: protect Redis (AUTH,
// TLS, a private network) as you would the state directory.
type RedisStorage struct {
	client func() rueidis.Client
	tag    string // "{prefix}"
	lease  time.Duration

	mu   sync.Mutex
	held map[string]*heldLock // by lock name
}

// heldLock is a lock this RedisStorage holds, refreshed until stop is closed.
type heldLock struct {
	token string
	stop  chan struct{}
	done  chan struct{}
}

var _ certmagic.Storage = (*RedisStorage)(nil)

// NewRedisStorage returns a storage using the client client returns at each call (nil means
// not connected yet: calls fail until it returns a client) and keys under prefix (default
// DefaultRedisPrefix; a prefix holding "{" is used as is, otherwise it is wrapped in braces
// as a Cluster hash tag). Nodes that should share certificates must use the same prefix.
func NewRedisStorage(client func() rueidis.Client, prefix string) *RedisStorage {
	if prefix == "" {
		prefix = DefaultRedisPrefix
	}
	tag := prefix
	if !strings.Contains(prefix, "{") {
		tag = "{" + prefix + "}"
	}
	return &RedisStorage{client: client, tag: tag, lease: LockLease, held: make(map[string]*heldLock)}
}

// String names the storage in certmagic's logs.
func (s *RedisStorage) String() string { return "redis:" + s.tag }

func (s *RedisStorage) valueKey(key string) string { return s.tag + ":f:" + key }
func (s *RedisStorage) indexKey() string           { return s.tag + ":idx" }
func (s *RedisStorage) lockKey(name string) string { return s.tag + ":lock:" + name }

// conn returns the client and a context bounded by redisCallTimeout.
func (s *RedisStorage) conn(ctx context.Context) (rueidis.Client, context.Context, context.CancelFunc, error) {
	c := s.client()
	if c == nil {
		return nil, nil, nil, errNotConnected
	}
	ctx, cancel := context.WithTimeout(ctx, redisCallTimeout)
	return c, ctx, cancel, nil
}

// normKey cleans a certmagic key: no leading or trailing slash.
func normKey(key string) string { return strings.Trim(key, "/") }

// Store puts value at key, replacing any value, and records key in the index; both happen
// atomically.
func (s *RedisStorage) Store(ctx context.Context, key string, value []byte) error {
	key = normKey(key)
	c, ctx, cancel, err := s.conn(ctx)
	if err != nil {
		return err
	}
	defer cancel()
	blob := make([]byte, 8+len(value))
	binary.BigEndian.PutUint64(blob, uint64(time.Now().UnixNano()))
	copy(blob[8:], value)
	err = storeScript.Exec(ctx, c, []string{s.valueKey(key), s.indexKey()}, []string{string(blob), key}).Error()
	if err != nil {
		return fmt.Errorf("acme redis storage: cannot store %q: %w", key, err)
	}
	return nil
}

// Load returns the value at key, or an error wrapping fs.ErrNotExist when there is none.
func (s *RedisStorage) Load(ctx context.Context, key string) ([]byte, error) {
	key = normKey(key)
	c, ctx, cancel, err := s.conn(ctx)
	if err != nil {
		return nil, err
	}
	defer cancel()
	blob, err := c.Do(ctx, c.B().Get().Key(s.valueKey(key)).Build()).AsBytes()
	if rueidis.IsRedisNil(err) {
		return nil, fmt.Errorf("acme redis storage: %q: %w", key, fs.ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("acme redis storage: cannot load %q: %w", key, err)
	}
	if len(blob) < 8 {
		return nil, fmt.Errorf("acme redis storage: value of %q is corrupt (%d bytes)", key, len(blob))
	}
	return blob[8:], nil
}

// children returns the index entries under dir ("" for all), sorted.
func (s *RedisStorage) children(ctx context.Context, c rueidis.Client, dir string, limit int64) ([]string, error) {
	min, max := "-", "+"
	if dir != "" {
		// '0' is the byte after '/': [dir/ … (dir0 is every key starting with "dir/".
		min, max = "["+dir+"/", "("+dir+"0"
	}
	b := c.B().Zrangebylex().Key(s.indexKey()).Min(min).Max(max)
	if limit > 0 {
		return c.Do(ctx, b.Limit(0, limit).Build()).AsStrSlice()
	}
	return c.Do(ctx, b.Build()).AsStrSlice()
}

// Delete removes key and, when key is a directory, every key under it. A missing key is
// not an error.
func (s *RedisStorage) Delete(ctx context.Context, key string) error {
	key = normKey(key)
	c, ctx, cancel, err := s.conn(ctx)
	if err != nil {
		return err
	}
	defer cancel()
	under, err := s.children(ctx, c, key, 0)
	if err != nil {
		return fmt.Errorf("acme redis storage: cannot list %q to delete it: %w", key, err)
	}
	names := append([]string{key}, under...)
	keys := make([]string, 0, len(names)+1)
	keys = append(keys, s.indexKey())
	for _, n := range names {
		keys = append(keys, s.valueKey(n))
	}
	if err := deleteScript.Exec(ctx, c, keys, names).Error(); err != nil {
		return fmt.Errorf("acme redis storage: cannot delete %q: %w", key, err)
	}
	return nil
}

// Exists reports whether key is a value or a directory holding values. Errors count as
// false, as certmagic's interface requires.
func (s *RedisStorage) Exists(ctx context.Context, key string) bool {
	key = normKey(key)
	c, ctx, cancel, err := s.conn(ctx)
	if err != nil {
		return false
	}
	defer cancel()
	n, err := c.Do(ctx, c.B().Exists().Key(s.valueKey(key)).Build()).AsInt64()
	if err == nil && n == 1 {
		return true
	}
	under, err := s.children(ctx, c, key, 1)
	return err == nil && len(under) > 0
}

// List returns the keys directly under dir (values and directories), or with recursive every
// value and directory below it, sorted. A dir holding nothing is an error wrapping
// fs.ErrNotExist, as with certmagic's FileStorage.
func (s *RedisStorage) List(ctx context.Context, dir string, recursive bool) ([]string, error) {
	dir = normKey(dir)
	c, ctx, cancel, err := s.conn(ctx)
	if err != nil {
		return nil, err
	}
	defer cancel()
	under, err := s.children(ctx, c, dir, 0)
	if err != nil {
		return nil, fmt.Errorf("acme redis storage: cannot list %q: %w", dir, err)
	}
	if len(under) == 0 {
		return nil, fmt.Errorf("acme redis storage: list %q: %w", dir, fs.ErrNotExist)
	}
	base := ""
	if dir != "" {
		base = dir + "/"
	}
	seen := make(map[string]struct{})
	var out []string
	add := func(k string) {
		if _, ok := seen[k]; !ok {
			seen[k] = struct{}{}
			out = append(out, k)
		}
	}
	for _, k := range under {
		rest := strings.TrimPrefix(k, base)
		if !recursive {
			if i := strings.IndexByte(rest, '/'); i >= 0 {
				rest = rest[:i]
			}
			add(base + rest)
			continue
		}
		for i := 0; i < len(rest); i++ {
			if rest[i] == '/' {
				add(base + rest[:i])
			}
		}
		add(k)
	}
	slices.Sort(out)
	return out, nil
}

// Stat describes key: a value (IsTerminal, Size, Modified) or a directory.
func (s *RedisStorage) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	key = normKey(key)
	c, ctx, cancel, err := s.conn(ctx)
	if err != nil {
		return certmagic.KeyInfo{}, err
	}
	defer cancel()
	vk := s.valueKey(key)
	res := c.DoMulti(ctx, c.B().Getrange().Key(vk).Start(0).End(7).Build(), c.B().Strlen().Key(vk).Build())
	head, err := res[0].AsBytes()
	if err != nil && !rueidis.IsRedisNil(err) {
		return certmagic.KeyInfo{}, fmt.Errorf("acme redis storage: cannot stat %q: %w", key, err)
	}
	size, err := res[1].AsInt64()
	if err != nil {
		return certmagic.KeyInfo{}, fmt.Errorf("acme redis storage: cannot stat %q: %w", key, err)
	}
	if size >= 8 && len(head) == 8 {
		return certmagic.KeyInfo{
			Key:        key,
			Modified:   time.Unix(0, int64(binary.BigEndian.Uint64(head))),
			Size:       size - 8,
			IsTerminal: true,
		}, nil
	}
	under, err := s.children(ctx, c, key, 1)
	if err != nil {
		return certmagic.KeyInfo{}, fmt.Errorf("acme redis storage: cannot stat %q: %w", key, err)
	}
	if len(under) == 0 {
		return certmagic.KeyInfo{}, fmt.Errorf("acme redis storage: stat %q: %w", key, fs.ErrNotExist)
	}
	return certmagic.KeyInfo{Key: key, IsTerminal: false}, nil
}

// Lock takes the cluster-wide lock name, waiting (polling SET NX) until it is free or ctx
// ends. While held, a goroutine extends the lease every LockLease/3; a holder that dies
// stops extending it and the lock expires within LockLease. Redis errors while waiting are
// retried until ctx ends, so a Redis that is down makes Lock wait, not fail.
func (s *RedisStorage) Lock(ctx context.Context, name string) error {
	var b [16]byte
	_, _ = rand.Read(b[:])
	token := hex.EncodeToString(b[:])
	lk := s.lockKey(name)
	var lastErr error
	for {
		if c := s.client(); c != nil {
			cctx, cancel := context.WithTimeout(ctx, redisCallTimeout)
			err := c.Do(cctx, c.B().Set().Key(lk).Value(token).Nx().PxMilliseconds(s.lease.Milliseconds()).Build()).Error()
			cancel()
			if err == nil {
				h := &heldLock{token: token, stop: make(chan struct{}), done: make(chan struct{})}
				s.mu.Lock()
				s.held[name] = h
				s.mu.Unlock()
				go s.refresh(lk, h)
				return nil
			}
			if !rueidis.IsRedisNil(err) { // nil answer: somebody else holds it
				lastErr = err
			}
		} else {
			lastErr = errNotConnected
		}
		t := time.NewTimer(lockPoll)
		select {
		case <-ctx.Done():
			t.Stop()
			if lastErr != nil {
				return fmt.Errorf("acme redis storage: cannot lock %q: %w (last error: %v)", name, ctx.Err(), lastErr)
			}
			return fmt.Errorf("acme redis storage: cannot lock %q: %w", name, ctx.Err())
		case <-t.C:
		}
	}
}

// refresh extends the lease of h until h.stop is closed or the lock turns out lost.
func (s *RedisStorage) refresh(lk string, h *heldLock) {
	defer close(h.done)
	t := time.NewTicker(s.lease / 3)
	defer t.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-t.C:
		}
		c := s.client()
		if c == nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), redisCallTimeout)
		n, err := refreshScript.Exec(ctx, c, []string{lk}, []string{h.token, fmt.Sprint(s.lease.Milliseconds())}).AsInt64()
		cancel()
		if err == nil && n == 0 {
			return // expired and maybe taken: nothing left to extend
		}
	}
}

// Unlock releases the lock name taken by Lock on this RedisStorage. It fails when this
// storage does not hold name, or when the lease had expired (another node may have taken the
// lock meanwhile, so the critical section was not exclusive).
func (s *RedisStorage) Unlock(ctx context.Context, name string) error {
	s.mu.Lock()
	h := s.held[name]
	delete(s.held, name)
	s.mu.Unlock()
	if h == nil {
		return fmt.Errorf("acme redis storage: cannot unlock %q: not locked by this node", name)
	}
	close(h.stop)
	<-h.done
	c, ctx, cancel, err := s.conn(ctx)
	if err != nil {
		return fmt.Errorf("acme redis storage: cannot unlock %q: %w", name, err)
	}
	defer cancel()
	n, err := unlockScript.Exec(ctx, c, []string{s.lockKey(name)}, []string{h.token}).AsInt64()
	if err != nil {
		return fmt.Errorf("acme redis storage: cannot unlock %q: %w", name, err)
	}
	if n == 0 {
		return fmt.Errorf("acme redis storage: lock %q had expired before unlock", name)
	}
	return nil
}
