package waitroom

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/edge-gw/edge/internal/redistest"
	"github.com/redis/rueidis"
)

var testSecret = []byte("0123456789abcdef0123456789abcdef")

// options returns valid Options for tests: a long session unless the test shortens it.
func options(rate float64) Options {
	return Options{AdmitRate: rate, Session: 30 * time.Second, Secret: testSecret}
}

// newRedis starts a redis-server and returns it with a store on it.
func newRedis(t testing.TB) (*redistest.Server, Store) {
	t.Helper()
	srv := redistest.Start(t)
	client, err := rueidis.NewClient(rueidis.ClientOption{
		InitAddress: []string{srv.Addr}, DisableCache: true,
		Dialer:           netDialer(),
		ConnWriteTimeout: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	return srv, NewRedisStore(func() rueidis.Client { return client }, 200*time.Millisecond)
}

// stores runs f once per store kind; mk returns the store every node of the test shares.
func stores(t *testing.T, f func(t *testing.T, st Store)) {
	t.Run("redis", func(t *testing.T) {
		t.Parallel()
		_, st := newRedis(t)
		f(t, st)
	})
	t.Run("memory", func(t *testing.T) {
		t.Parallel()
		f(t, NewMemoryStore())
	})
}

// logBuf is a concurrency-safe log sink.
type logBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// nodes starts n Rooms (nodes) named name on st, closed when the test ends.
func nodes(t testing.TB, n int, name string, st Store, o Options, log *logBuf) []*Room {
	t.Helper()
	var rs []*Room
	for i := 0; i < n; i++ {
		var l *slog.Logger
		if log != nil {
			l = slog.New(slog.NewTextHandler(log, nil))
		} else {
			l = slog.New(slog.DiscardHandler)
		}
		r := New(name, st, o, l)
		r.Start()
		t.Cleanup(r.Close)
		rs = append(rs, r)
	}
	return rs
}

// user is a client with a cookie jar.
type user struct {
	key          []byte
	ip           netip.Addr
	admit, place []byte
	last         Verdict
	admitted     bool
}

func newUser(key string, i int) *user {
	u := &user{ip: netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})}
	if key != "" {
		u.key = []byte(key)
	}
	return u
}

// poll sends one request to r and keeps the cookies it sets.
func (u *user) poll(r *Room) *Verdict {
	v := Visit{Key: u.key, Client: u.ip, AdmitCookie: u.admit, PlaceCookie: u.place, Now: time.Now()}
	r.Check(&v, &u.last)
	if u.last.SetAdmit != nil {
		u.admit = u.last.SetAdmit
	}
	if u.last.SetPlace != nil {
		u.place = u.last.SetPlace
	}
	if u.last.Admitted {
		u.admitted = true
	}
	return &u.last
}

// placeOf is the place in the user's place cookie (< 0: ticket), 0 when none is valid.
func (u *user) placeOf(r *Room) int64 {
	return r.cfg.Load().sign.verifyPlace(u.place, u.key)
}

// counts reads the room's shared counters straight from the store.
func counts(t testing.TB, st Store, room string) counters {
	t.Helper()
	c, err := st.snapshot(context.Background(), room)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// waitFor polls cond every 10ms until it holds or d passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// leaderOf returns the node that leads, waiting for one.
func leaderOf(t testing.TB, rs []*Room) *Room {
	t.Helper()
	var l *Room
	waitFor(t, 5*time.Second, "a leader", func() bool {
		for _, r := range rs {
			if r.leader.Load() {
				l = r
				return true
			}
		}
		return false
	})
	return l
}

func key(i int) string { return "u" + strconv.Itoa(100000+i) }

func netDialer() net.Dialer { return net.Dialer{Timeout: time.Second} }
