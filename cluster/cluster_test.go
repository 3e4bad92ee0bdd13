package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Generous deadline for anything the cluster should do within 2 s: the machine
// is shared and loaded; the measured times are logged.
const deadline = 10 * time.Second

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// testOptions are memberlist.DefaultLocalConfig's timers made shorter, so
// failure detection and joins take well under a second on loopback.
func testOptions(name string) Options {
	return Options{
		Name:             name,
		BindAddr:         "127.0.0.1",
		BindPort:         0,
		Logger:           quiet,
		GossipInterval:   50 * time.Millisecond,
		ProbeInterval:    200 * time.Millisecond,
		ProbeTimeout:     100 * time.Millisecond,
		SuspicionMult:    3,
		RetransmitMult:   4, // DefaultLocalConfig's 2 loses about 1 publish in 40 to push/pull
		PushPullInterval: 15 * time.Second,
		TCPTimeout:       time.Second,
		JoinRetryMin:     50 * time.Millisecond,
		JoinRetryMax:     500 * time.Millisecond,
		LeaveTimeout:     time.Second,
		SweepInterval:    50 * time.Millisecond,
	}
}

func nodeName(t testing.TB, i int) string {
	return strings.NewReplacer("/", "_", " ", "_").Replace(t.Name()) + "-" + strconv.Itoa(i)
}

func startNode(t testing.TB, name string, join []string, mod func(*Options)) *Cluster {
	t.Helper()
	o := testOptions(name)
	o.Join = join
	if mod != nil {
		mod(&o)
	}
	c, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Stop() })
	return c
}

// startCluster starts n nodes joined to the first and waits until all see all.
func startCluster(t testing.TB, n int, mod func(*Options)) []*Cluster {
	t.Helper()
	nodes := []*Cluster{startNode(t, nodeName(t, 0), nil, mod)}
	for i := 1; i < n; i++ {
		nodes = append(nodes, startNode(t, nodeName(t, i), []string{nodes[0].Addr()}, mod))
	}
	waitFor(t, fmt.Sprintf("%d members everywhere", n), func() bool {
		for _, c := range nodes {
			if c.NumAlive() != n {
				return false
			}
		}
		return true
	})
	return nodes
}

// waitFor polls cond until it holds and returns how long that took.
func waitFor(t testing.TB, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > deadline {
			t.Fatalf("no %s after %v", what, deadline)
		}
		time.Sleep(2 * time.Millisecond)
	}
	return time.Since(start)
}

func memberState(c *Cluster, name string) (State, bool) {
	for _, m := range c.Members() {
		if m.Name == name {
			return m.State, true
		}
	}
	return 0, false
}

// recorder collects what a subscriber receives.
type recorder struct {
	mu  sync.Mutex
	got []Entry
}

func (r *recorder) add(e Entry) {
	r.mu.Lock()
	r.got = append(r.got, e)
	r.mu.Unlock()
}

func (r *recorder) find(f func(Entry) bool) (Entry, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.got {
		if f(e) {
			return e, true
		}
	}
	return Entry{}, false
}

func TestMembersSeeEachOther(t *testing.T) {
	nodes := startCluster(t, 3, nil)
	for _, c := range nodes {
		ms := c.Members()
		if len(ms) != 3 {
			t.Fatalf("%s sees %d members: %+v", c.Name(), len(ms), ms)
		}
		for i, m := range ms {
			if m.Name != nodes[i].Name() || m.Addr != nodes[i].Addr() || m.State != StateAlive || m.Local != (m.Name == c.Name()) {
				t.Errorf("%s sees %+v, want %s at %s alive", c.Name(), m, nodes[i].Name(), nodes[i].Addr())
			}
		}
		want := map[State]int{StateAlive: 3, StateSuspect: 0, StateDead: 0, StateLeft: 0}
		if got := c.Counts(); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s counts %v, want %v", c.Name(), got, want)
		}
	}
	if !strings.HasPrefix(nodes[0].Addr(), "127.0.0.1:") || strings.HasSuffix(nodes[0].Addr(), ":0") {
		t.Errorf("addr %q", nodes[0].Addr())
	}
}

func TestDefaultNamesAreUnique(t *testing.T) {
	a := startNode(t, "", nil, nil)
	b := startNode(t, "", []string{a.Addr()}, nil)
	if a.Name() == b.Name() {
		t.Fatalf("both nodes are named %q", a.Name())
	}
	_, port, _ := net.SplitHostPort(a.Addr())
	if !strings.Contains(a.Name(), "-"+port+"-") {
		t.Errorf("name %q does not carry port %s", a.Name(), port)
	}
	waitFor(t, "two members", func() bool { return a.NumAlive() == 2 && b.NumAlive() == 2 })
}

func TestPublishConvergesAndExpires(t *testing.T) {
	nodes := startCluster(t, 3, nil)
	a, b, c := nodes[0], nodes[1], nodes[2]
	recs := []*recorder{{}, {}, {}}
	for i, n := range nodes {
		n.Subscribe("ban", recs[i].add)
	}
	const ttl = 1500 * time.Millisecond
	start := time.Now()
	if err := a.Publish("ban", "ip:203.0.113.7", []byte("auto: 429 storm"), ttl); err != nil {
		t.Fatal(err)
	}
	if e, ok := a.Get("ban", "ip:203.0.113.7"); !ok || string(e.Value) != "auto: 429 storm" || e.Origin != a.Name() {
		t.Fatalf("publisher's own Get: %+v %v", e, ok)
	}
	took := waitFor(t, "ban on B and C", func() bool {
		_, okB := b.Get("ban", "ip:203.0.113.7")
		_, okC := c.Get("ban", "ip:203.0.113.7")
		return okB && okC
	})
	t.Logf("publish on A seen by B and C after %v", took)
	for i, r := range recs[1:] {
		e, ok := r.find(func(e Entry) bool { return e.Key == "ip:203.0.113.7" && !e.Deleted })
		if !ok {
			waitFor(t, "subscriber call", func() bool {
				e, ok = r.find(func(e Entry) bool { return e.Key == "ip:203.0.113.7" && !e.Deleted })
				return ok
			})
		}
		if string(e.Value) != "auto: 429 storm" || e.Kind != "ban" || e.Origin != a.Name() {
			t.Errorf("node %d subscriber got %+v", i+1, e)
		}
		if d := e.Expires.Sub(start); d < ttl-50*time.Millisecond || d > ttl+time.Second {
			t.Errorf("node %d: expires %v after publish, want about %v", i+1, d, ttl)
		}
	}
	if _, ok := recs[0].find(func(Entry) bool { return true }); ok {
		t.Error("the publisher's own subscriber was called for its own change")
	}
	if b.Stats().Relayed == 0 || c.Stats().Relayed == 0 {
		t.Error("receivers did not relay the new version")
	}

	gone := waitFor(t, "expiry everywhere", func() bool {
		for _, n := range nodes {
			if _, ok := n.Get("ban", "ip:203.0.113.7"); ok {
				return false
			}
		}
		return true
	})
	t.Logf("expired everywhere %v after publish (ttl %v)", time.Since(start), ttl)
	_ = gone
	for i, r := range recs {
		waitFor(t, fmt.Sprintf("expiry callback on node %d", i), func() bool {
			_, ok := r.find(func(e Entry) bool { return e.Deleted && e.Expired && e.Key == "ip:203.0.113.7" })
			return ok
		})
	}
	waitFor(t, "entries swept", func() bool {
		for _, n := range nodes {
			if s := n.Stats(); s.Entries != 0 {
				return false
			}
		}
		return true
	})
}

func TestNewerVersionWinsEverywhere(t *testing.T) {
	nodes := startCluster(t, 3, nil)
	// Writes from different nodes to one key: all converge on the last one.
	for i := range 6 {
		if err := nodes[i%3].Publish("seckill", "item:42", []byte("v"+strconv.Itoa(i)), 0); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the last write everywhere", func() bool {
		for _, n := range nodes {
			if e, ok := n.Get("seckill", "item:42"); !ok || string(e.Value) != "v5" {
				return false
			}
		}
		return true
	})
}

func TestDeleteDisappearsEverywhere(t *testing.T) {
	nodes := startCluster(t, 3, nil)
	a, b, c := nodes[0], nodes[1], nodes[2]
	rec := &recorder{}
	c.Subscribe("degrade", rec.add)
	if err := a.Publish("degrade", "route:search", []byte(`{"on":true}`), 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "switch on C", func() bool { _, ok := c.Get("degrade", "route:search"); return ok })
	waitFor(t, "switch on B", func() bool { _, ok := b.Get("degrade", "route:search"); return ok })
	if err := b.Delete("degrade", "route:search"); err != nil { // delete from another node than the writer
		t.Fatal(err)
	}
	took := waitFor(t, "deletion everywhere", func() bool {
		for _, n := range nodes {
			if _, ok := n.Get("degrade", "route:search"); ok {
				return false
			}
		}
		return true
	})
	t.Logf("delete on B gone from A and C after %v", took)
	waitFor(t, "delete callback on C", func() bool {
		_, ok := rec.find(func(e Entry) bool { return e.Deleted && !e.Expired && e.Origin == b.Name() })
		return ok
	})
	if s := a.Stats(); s.Tombstones != 1 || s.Entries != 0 {
		t.Errorf("A keeps %d tombstones, %d entries; want 1, 0", s.Tombstones, s.Entries)
	}
}

func TestLateJoinerReceivesStateByPushPull(t *testing.T) {
	nodes := startCluster(t, 2, nil)
	a, b := nodes[0], nodes[1]
	for i := range 20 {
		if err := a.Publish("ban", "user:"+strconv.Itoa(i), []byte("fraud"), time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Publish("ban", "user:gone", nil, time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := a.Delete("ban", "user:gone"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "state on B, queues drained", func() bool {
		return len(b.Entries("ban")) == 20 && a.Stats().Queued == 0 && b.Stats().Queued == 0
	})
	// Nothing is left to gossip: C can only learn the state through push/pull.
	c := startNode(t, nodeName(t, 2), []string{b.Addr()}, nil)
	rec := &recorder{}
	c.Subscribe("ban", rec.add)
	took := waitFor(t, "20 bans on the late node", func() bool { return len(c.Entries("ban")) == 20 })
	t.Logf("late joiner had the state %v after New", took)
	if s := c.Stats(); s.Received != 0 || s.Applied < 20 {
		t.Errorf("late joiner stats %+v: want 0 messages received, ≥20 entries applied by push/pull", s)
	}
	if _, ok := c.Get("ban", "user:gone"); ok {
		t.Error("deleted key came back on the late joiner")
	}
	waitFor(t, "replay to a late subscriber", func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return len(rec.got) >= 20
	})
}

func TestKilledNodeIsDroppedAndChangeFires(t *testing.T) {
	nodes := startCluster(t, 3, nil)
	a, c := nodes[0], nodes[2]
	var calls atomic.Int32
	var lastAlive atomic.Int32
	a.OnChange(func() {
		calls.Add(1)
		lastAlive.Store(int32(a.NumAlive()))
	})
	start := time.Now()
	if err := c.shutdown(false); err != nil { // a crash: no leave message
		t.Fatal(err)
	}
	var sawSuspect atomic.Bool
	took := waitFor(t, "killed node marked dead on A and B", func() bool {
		done := true
		for _, n := range nodes[:2] {
			s, _ := memberState(n, c.Name())
			if s == StateSuspect {
				sawSuspect.Store(true)
			}
			done = done && s == StateDead && n.NumAlive() == 2
		}
		return done
	})
	t.Logf("crash detected after %v (suspect phase observed: %v)", took, sawSuspect.Load())
	waitFor(t, "change callback seeing 2 live nodes", func() bool { return calls.Load() > 0 && lastAlive.Load() == 2 })
	t.Logf("change callback fired %v after the kill", time.Since(start))
	if got := a.Counts(); got[StateDead] != 1 || got[StateAlive] != 2 {
		t.Errorf("counts %v", got)
	}
	// A value published now still reaches the survivor.
	if err := a.Publish("purge", "tag:sale", nil, time.Minute); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "publish after a failure", func() bool { _, ok := nodes[1].Get("purge", "tag:sale"); return ok })
}

func TestGracefulLeaveIsSeenAsLeft(t *testing.T) {
	nodes := startCluster(t, 3, nil)
	a, b, c := nodes[0], nodes[1], nodes[2]
	var fired atomic.Bool
	a.OnChange(func() { fired.Store(true) })
	start := time.Now()
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	stopTook := time.Since(start)
	took := waitFor(t, "left on A and B", func() bool {
		sa, _ := memberState(a, c.Name())
		sb, _ := memberState(b, c.Name())
		return sa == StateLeft && sb == StateLeft && a.NumAlive() == 2 && b.NumAlive() == 2
	})
	t.Logf("Stop took %v; left seen %v after Stop returned (%v after it began)", stopTook, took, time.Since(start))
	if !fired.Load() {
		waitFor(t, "change callback", fired.Load)
	}
	if err := c.Publish("ban", "x", nil, 0); !errors.Is(err, ErrStopped) {
		t.Errorf("Publish after Stop: %v", err)
	}
	if err := c.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

func TestJoinRetriesUntilSeedIsUp(t *testing.T) {
	port := freePort(t)
	seed := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	b := startNode(t, nodeName(t, 1), []string{seed}, nil)
	// b is already retrying; now the seed comes up on the port it dials.
	a := startNode(t, nodeName(t, 0), nil, func(o *Options) { o.BindPort = port })
	took := waitFor(t, "retrying join to succeed", func() bool { return a.NumAlive() == 2 && b.NumAlive() == 2 })
	t.Logf("joined %v after the seed started", took)
	select {
	case <-b.joinDone:
	case <-time.After(deadline):
		t.Fatal("join goroutine still running after success")
	}
}

func freePort(t testing.TB) int {
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", l.Addr().String())
		l.Close()
		if err == nil {
			u.Close()
			return port
		}
	}
	t.Fatal("no free port for TCP and UDP")
	return 0
}

func TestEncryptedGossip(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	withKey := func(k []byte) func(*Options) { return func(o *Options) { o.SecretKey = k } }
	nodes := startCluster(t, 2, withKey(key))
	a, b := nodes[0], nodes[1]
	if err := a.Publish("seckill", "item:7", []byte("sold_out"), 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "encrypted publish on B", func() bool {
		e, ok := b.Get("seckill", "item:7")
		return ok && bytes.Equal(e.Value, []byte("sold_out"))
	})

	for _, k := range [][]byte{[]byte("fedcba9876543210fedcba9876543210"), nil} {
		bad := startNode(t, nodeName(t, 2+len(k)), nil, withKey(k))
		if n, err := bad.Join([]string{a.Addr()}); err == nil {
			t.Errorf("node with key %q joined an encrypted cluster (%d contacted)", k, n)
		}
		if bad.NumAlive() != 1 || a.NumAlive() != 2 || b.NumAlive() != 2 {
			t.Errorf("key %q: bad node sees %d, A %d, B %d members", k, bad.NumAlive(), a.NumAlive(), b.NumAlive())
		}
		if _, ok := bad.Get("seckill", "item:7"); ok {
			t.Errorf("key %q: state leaked to a node without the key", k)
		}
	}
	if _, err := New(Options{BindAddr: "127.0.0.1", SecretKey: []byte("short"), Logger: quiet}); err == nil ||
		!strings.Contains(err.Error(), "16, 24 or 32") {
		t.Errorf("short key: %v", err)
	}
}

func TestPublishErrors(t *testing.T) {
	c := startNode(t, nodeName(t, 0), nil, func(o *Options) { o.MaxKinds = 2 })
	f := func(kind, key string, value []byte, ttl time.Duration, want error) {
		t.Helper()
		err := c.Publish(kind, key, value, ttl)
		if want == nil && err != nil || want != nil && !errors.Is(err, want) {
			t.Errorf("Publish(%q, %q, %d bytes, %v) = %v, want %v", kind, key, len(value), ttl, err, want)
		}
	}
	f("ban", "k", make([]byte, 1000), 0, nil)
	f("ban", "k", make([]byte, MaxMessageSize), 0, ErrTooLarge)
	f("", "k", nil, 0, ErrBadKey)
	f("ban", "", nil, 0, ErrBadKey)
	f("ban", strings.Repeat("k", MaxKeyLen+1), nil, 0, ErrBadKey)
	f("purge", "k", nil, 0, nil)
	f("third", "k", nil, 0, ErrTooManyKinds)
	if err := c.Publish("ban", "k", nil, -time.Second); err == nil {
		t.Error("negative ttl accepted")
	}
}
