package proxy

import (
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edge-gw/edge/config"
	"github.com/redis/rueidis"
)

// Timings of the shared Redis clients; variables so tests can shorten them.
var (
	// redisRetryEvery is the pause between attempts to connect a Redis that did not answer
	// (down at startup, or a new address after a reload).
	redisRetryEvery = 500 * time.Millisecond
	// redisCloseGrace is how long a client nobody uses any more stays open, so that requests
	// of a retired snapshot finish and a reload that drops and re-adds a user keeps it.
	redisCloseGrace = 5 * time.Second
)

// Dial and write timeouts of the shared clients. Each call is bounded by its own context
// deadline (the feature's timeout); these only keep a dead or hung server from holding a
// connection attempt or an idle pipeline for long.
const (
	redisDialTimeout  = time.Second
	redisWriteTimeout = 2 * time.Second
)

// redisRegistry shares one rueidis client per Redis, identified by its addrs, username
// and password, among the features that talk to it (idempotency today; the seckill store
// and redis-scoped limits can move onto it), so the edge holds one set of connections and
// one auto-pipeline per Redis, not one per feature. It lives as long as the Proxy (it
// survives reloads). Safe for concurrent use.
type redisRegistry struct {
	mu     sync.Mutex
	conns  map[string]*redisConn
	closed bool
}

func newRedisRegistry() *redisRegistry {
	return &redisRegistry{conns: map[string]*redisConn{}}
}

// redisConn is one shared client: connected in the background until Redis answers, kept
// while anyone holds a reference, closed redisCloseGrace after the last release.
type redisConn struct {
	reg  *redisRegistry
	key  string       // identity in reg.conns
	cfg  config.Redis // a copy: the config is immutable, but the conn outlives it
	addr string       // addrs joined, for logs

	client atomic.Pointer[rueidisRef] // nil until connected

	// Guarded by reg.mu.
	refs   int
	closed bool
	done   chan struct{} // closed with the conn: ends the connect loop
}

type rueidisRef struct{ c rueidis.Client }

func redisKey(r *config.Redis) string {
	return fmt.Sprintf("%q %q %q", r.Addrs, r.Username, r.Password)
}

// acquireRedis returns the shared client of r with one more reference. The first
// reference connects it: one attempt now (bounded by the dial timeout), then, while Redis
// does not answer, one every redisRetryEvery in the background, so edge starts and serves
// with Redis down; Client is nil meanwhile. rueidis itself reconnects a client that was
// connected once. Call it from a snapshot's start hook, never from build (edge -check
// must connect nothing), and pair it with exactly one release, from the stop hook.
func (p *Proxy) acquireRedis(r *config.Redis) *redisConn {
	reg := p.redis
	key := redisKey(r)
	reg.mu.Lock()
	c := reg.conns[key]
	if c != nil {
		c.refs++
		reg.mu.Unlock()
		return c
	}
	c = &redisConn{reg: reg, key: key, cfg: *r, addr: strings.Join(r.Addrs, ","), refs: 1, done: make(chan struct{})}
	c.cfg.Addrs = append([]string(nil), r.Addrs...)
	if reg.closed {
		c.closed = true
		close(c.done)
		reg.mu.Unlock()
		return c // never connects: every call fails as unavailable
	}
	reg.conns[key] = c
	reg.mu.Unlock()
	if !c.connect(true) {
		go c.retry()
	}
	return c
}

// Client returns the connected client, or nil while Redis has not answered yet (callers
// treat that as the store being unavailable). The client stays valid until the last
// release plus redisCloseGrace.
func (c *redisConn) Client() rueidis.Client {
	if r := c.client.Load(); r != nil {
		return r.c
	}
	return nil
}

// connect makes one attempt and reports whether there is nothing more to try (connected,
// or closed meanwhile).
func (c *redisConn) connect(first bool) bool {
	cl, err := rueidis.NewClient(rueidis.ClientOption{
		InitAddress:      append([]string(nil), c.cfg.Addrs...),
		Username:         c.cfg.Username,
		Password:         c.cfg.Password,
		DisableCache:     true, // no client-side caching: every answer comes from Redis
		Dialer:           net.Dialer{Timeout: redisDialTimeout},
		ConnWriteTimeout: redisWriteTimeout,
	})
	if err != nil {
		if first {
			slog.Default().Warn("redis unavailable; retrying in the background",
				"addrs", c.addr, "every", redisRetryEvery.String(), "error", err)
		}
		return false
	}
	c.reg.mu.Lock()
	closed := c.closed
	if !closed {
		c.client.Store(&rueidisRef{c: cl})
	}
	c.reg.mu.Unlock()
	if closed {
		cl.Close()
		return true
	}
	if !first {
		slog.Default().Info("redis connected", "addrs", c.addr)
	}
	return true
}

// retry connects every redisRetryEvery until it succeeds or the conn is closed.
func (c *redisConn) retry() {
	t := time.NewTicker(redisRetryEvery)
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-t.C:
			if c.connect(false) {
				return
			}
		}
	}
}

// release drops one reference. The last one closes the client after redisCloseGrace,
// unless it was acquired again meanwhile.
func (c *redisConn) release() {
	reg := c.reg
	reg.mu.Lock()
	c.refs--
	if c.refs < 0 {
		reg.mu.Unlock()
		panic("BUG: redis client released more often than acquired")
	}
	last := c.refs == 0
	reg.mu.Unlock()
	if !last {
		return
	}
	time.AfterFunc(redisCloseGrace, func() {
		reg.mu.Lock()
		if c.refs > 0 || reg.conns[c.key] != c {
			reg.mu.Unlock()
			return
		}
		delete(reg.conns, c.key)
		reg.mu.Unlock()
		c.close()
	})
}

// close ends the connect loop and closes the client. Calls on it fail afterwards.
func (c *redisConn) close() {
	c.reg.mu.Lock()
	if c.closed {
		c.reg.mu.Unlock()
		return
	}
	c.closed = true
	close(c.done)
	r := c.client.Load()
	c.reg.mu.Unlock()
	if r != nil {
		r.c.Close()
	}
}

// close closes every client now; acquireRedis afterwards returns clients that never
// connect. Called by Proxy.Close when the server has stopped.
func (reg *redisRegistry) close() {
	reg.mu.Lock()
	reg.closed = true
	conns := reg.conns
	reg.conns = map[string]*redisConn{}
	reg.mu.Unlock()
	for _, c := range conns {
		c.close()
	}
}

// SharedRedis returns the process's shared client of r for a feature outside the proxy
// (ACME storage): client returns nil while Redis has not answered, and release gives
// the reference back (call it once). It connects, so call it when serving, never from
// edge -check.
func (p *Proxy) SharedRedis(r *config.Redis) (client func() rueidis.Client, release func()) {
	c := p.acquireRedis(r)
	var once sync.Once
	return c.Client, func() { once.Do(c.release) }
}
