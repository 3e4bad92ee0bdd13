// Package cluster joins edge nodes into one cluster over hashicorp/memberlist:
// membership (who is alive, suspect, dead or left, with a change notification)
// and a small replicated key/value layer (Publish, Delete, Subscribe) that
// converges through gossip, relaying and push/pull anti-entropy.
//
// It knows nothing of the proxy: callers give kinds their meaning (bans, purges,
// sold-out flags, degrade switches) and encode their own values.
//
// Replication is last-writer-wins per (kind, key) by a hybrid logical clock
// version, ties broken by node name. A write reaches every live node by gossip:
// the writer transmits it RetransmitMult×ceil(log10(N+1)) times and every node
// relays a version once on first receipt; a node that joins later, or missed a
// message, gets the full state by push/pull (on join and every
// PushPullInterval). Memory is bounded: MaxKinds kinds, MaxEntriesPerKind
// entries each, MaxMessageSize bytes per entry, MaxStateBytes per push/pull.
package cluster

import (
	crand "crypto/rand"
	"encoding/hex"
	"fmt"
	"log"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// DefaultPort is memberlist's customary gossip port (UDP and TCP).
const DefaultPort = 7946

// Options configure a Cluster. The zero value of each tunable means the default
// given; the memberlist timers default to memberlist.DefaultLANConfig.
type Options struct {
	// Name is this node's name, unique in the cluster: memberlist silently
	// misbehaves with duplicates (a conflict is logged as an error). Default
	// "<hostname>-<bind port>-<4 random hex>", unique even across restarts.
	Name string
	// Label, if set, is a cluster label: nodes only talk to nodes with the same
	// label (memberlist Config.Label), so two clusters on one network cannot
	// merge by mistake. Default none.
	Label string

	BindAddr string // IP to listen on (UDP and TCP); default "0.0.0.0"
	// BindPort is the port to listen on. 0 lets the kernel pick one (tests);
	// callers wanting the customary port pass DefaultPort. Read it back with Addr.
	BindPort int
	// AdvertiseAddr is the IP other nodes reach this node at; default: BindAddr,
	// or a private IP of this host when BindAddr is 0.0.0.0.
	AdvertiseAddr string
	AdvertisePort int // default: the bound port

	// Join lists host:port addresses of existing nodes. New joins them in the
	// background, retrying with backoff until one other node is reached or Stop.
	Join []string
	// SecretKey turns on gossip encryption (AES-GCM); 16, 24 or 32 bytes. Nodes
	// with a different key, or none, cannot join. Default none.
	SecretKey []byte
	// Logger receives this package's and memberlist's logs (memberlist's DEBUG
	// lines at slog.LevelDebug). Default slog.Default().
	Logger *slog.Logger

	// Memberlist timers; defaults are DefaultLANConfig's: gossip 200 ms to 3
	// nodes, probe 1 s with a 500 ms timeout, suspicion ×4, retransmit ×4,
	// push/pull 30 s, TCP timeout 10 s.
	GossipInterval   time.Duration
	GossipNodes      int
	ProbeInterval    time.Duration
	ProbeTimeout     time.Duration
	SuspicionMult    int
	RetransmitMult   int
	PushPullInterval time.Duration
	TCPTimeout       time.Duration

	JoinRetryMin time.Duration // first join retry delay; default 1 s
	JoinRetryMax time.Duration // backoff cap; default 30 s
	// LeaveTimeout bounds each step of a graceful Stop (announce, leave);
	// default 3 s.
	LeaveTimeout time.Duration

	// MaxEntriesPerKind bounds entries plus tombstones of one kind; default
	// 10000. KindLimits overrides it per kind (e.g. {"ban": 100000}). A full
	// kind evicts, on this node only, expired entries, then the tombstone or
	// entry expiring soonest.
	MaxEntriesPerKind int
	KindLimits        map[string]int
	MaxKinds          int // distinct kinds; default 32
	// MaxStateBytes bounds the push/pull state this node sends (live entries
	// first); default 4 MiB (memberlist refuses more than 20 MiB).
	MaxStateBytes int
	// TombstoneTTL is how long a deletion is remembered; default 10 min. A node
	// partitioned longer than this can bring back a deleted never-expiring key.
	TombstoneTTL time.Duration
	// SweepInterval is how often expired entries are dropped and subscribers
	// told; default 1 s. Get never returns an expired entry regardless.
	SweepInterval time.Duration
	// QueueSize bounds messages waiting for the delivery goroutine; beyond it
	// they are dropped (Stats.Dropped) and push/pull repairs them. Default 4096.
	QueueSize int
	// DeadRetention is how long dead and left members stay listed; default 5 min.
	DeadRetention time.Duration
}

func (o *Options) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	defInt := func(d *int, v int) {
		if *d == 0 {
			*d = v
		}
	}
	lan := memberlist.DefaultLANConfig()
	if o.BindAddr == "" {
		o.BindAddr = "0.0.0.0"
	}
	def(&o.GossipInterval, lan.GossipInterval)
	defInt(&o.GossipNodes, lan.GossipNodes)
	def(&o.ProbeInterval, lan.ProbeInterval)
	def(&o.ProbeTimeout, lan.ProbeTimeout)
	defInt(&o.SuspicionMult, lan.SuspicionMult)
	defInt(&o.RetransmitMult, lan.RetransmitMult)
	def(&o.PushPullInterval, lan.PushPullInterval)
	def(&o.TCPTimeout, lan.TCPTimeout)
	def(&o.JoinRetryMin, time.Second)
	def(&o.JoinRetryMax, 30*time.Second)
	def(&o.LeaveTimeout, 3*time.Second)
	defInt(&o.MaxEntriesPerKind, 10000)
	defInt(&o.MaxKinds, 32)
	defInt(&o.MaxStateBytes, 4<<20)
	def(&o.TombstoneTTL, 10*time.Minute)
	def(&o.SweepInterval, time.Second)
	defInt(&o.QueueSize, 4096)
	def(&o.DeadRetention, 5*time.Minute)
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Cluster is this node's membership in the cluster and its replica of the
// shared state. All methods are safe for concurrent use. It lives for the
// process (outside any config snapshot); Stop ends it.
type Cluster struct {
	opts Options
	name string
	log  *slog.Logger
	ml   *memberlist.Memberlist
	tr   *countingTransport

	members members
	store   store
	clock   hlc
	queue   *memberlist.TransmitLimitedQueue

	msgCh   chan []byte
	stateCh chan []byte
	subCh   chan *subscriber

	watchMu  sync.Mutex
	watchers map[int]func()
	watchSeq int

	leaving  atomic.Bool
	stopped  atomic.Bool
	stopOnce sync.Once
	done     chan struct{} // closed when stopped: ends the goroutines
	joinDone chan struct{} // closed when the join goroutine ends
	wg       sync.WaitGroup

	stats struct {
		received, applied, relayed, dropped, invalid, broadcasts, broadcastBytes atomic.Uint64
	}
}

// New binds the gossip port, starts this node's memberlist and, if
// Options.Join is set, joins the cluster in the background. Errors name the
// failing option or address. Stop releases everything New started.
func New(opts Options) (*Cluster, error) {
	opts.setDefaults()
	switch len(opts.SecretKey) {
	case 0, 16, 24, 32:
	default:
		return nil, fmt.Errorf("cluster secret must be 16, 24 or 32 bytes, got %d", len(opts.SecretKey))
	}
	c := &Cluster{
		opts:     opts,
		log:      opts.Logger,
		msgCh:    make(chan []byte, opts.QueueSize),
		stateCh:  make(chan []byte, 4),
		subCh:    make(chan *subscriber),
		watchers: map[int]func(){},
		done:     make(chan struct{}),
		joinDone: make(chan struct{}),
	}
	c.members = members{m: map[string]*Member{}, changed: make(chan struct{}, 1), retention: opts.DeadRetention}
	c.store = store{kinds: map[string]map[string]*entry{}, maxKinds: opts.MaxKinds, maxPer: func(kind string) int {
		if n := opts.KindLimits[kind]; n > 0 {
			return n
		}
		return opts.MaxEntriesPerKind
	}}
	c.queue = &memberlist.TransmitLimitedQueue{
		NumNodes:       func() int { return max(1, int(c.members.live.Load())) },
		RetransmitMult: opts.RetransmitMult,
	}
	mlLog := log.New(&logWriter{log: opts.Logger, members: &c.members}, "", 0)

	nt, err := newNetTransport(opts.BindAddr, opts.BindPort, mlLog)
	if err != nil {
		return nil, err
	}
	c.tr = newCountingTransport(nt)
	port := nt.GetAutoBindPort()
	c.name = opts.Name
	if c.name == "" {
		c.name = defaultName(port)
	}

	mc := memberlist.DefaultLANConfig()
	mc.Name = c.name
	mc.Label = opts.Label
	mc.Transport = c.tr
	mc.BindAddr, mc.BindPort = opts.BindAddr, port
	mc.AdvertiseAddr, mc.AdvertisePort = opts.AdvertiseAddr, opts.AdvertisePort
	if mc.AdvertisePort == 0 {
		mc.AdvertisePort = port
	}
	mc.SecretKey = opts.SecretKey
	mc.Logger = mlLog
	mc.GossipInterval, mc.GossipNodes = opts.GossipInterval, opts.GossipNodes
	mc.ProbeInterval, mc.ProbeTimeout = opts.ProbeInterval, opts.ProbeTimeout
	mc.SuspicionMult, mc.RetransmitMult = opts.SuspicionMult, opts.RetransmitMult
	mc.PushPullInterval, mc.TCPTimeout = opts.PushPullInterval, opts.TCPTimeout
	mc.Delegate = (*kvDelegate)(c)
	mc.Events = (*eventDelegate)(c)
	mc.Conflict = (*eventDelegate)(c)
	mc.Ping = (*eventDelegate)(c)

	c.wg.Add(2)
	go c.deliverLoop()
	go c.watchLoop()
	c.members.set(c.name, "", StateAlive, true)
	c.ml, err = memberlist.Create(mc)
	if err != nil {
		c.stopped.Store(true)
		close(c.done)
		_ = c.tr.Shutdown()
		c.wg.Wait()
		return nil, fmt.Errorf("cannot start cluster node %q on %s: %w", c.name, net.JoinHostPort(opts.BindAddr, strconv.Itoa(port)), err)
	}
	c.members.set(c.name, c.ml.LocalNode().Address(), StateAlive, true)
	if len(opts.Join) > 0 {
		go c.joinLoop(opts.Join)
	} else {
		close(c.joinDone)
	}
	return c, nil
}

func newNetTransport(addr string, port int, l *log.Logger) (*memberlist.NetTransport, error) {
	cfg := &memberlist.NetTransportConfig{BindAddrs: []string{addr}, BindPort: port, Logger: l}
	var err error
	// With port 0 the UDP bind can collide with the TCP port the kernel picked.
	for range 10 {
		var nt *memberlist.NetTransport
		if nt, err = memberlist.NewNetTransport(cfg); err == nil {
			return nt, nil
		}
		if port != 0 || !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	return nil, fmt.Errorf("cannot listen for cluster gossip on %s: %w", net.JoinHostPort(addr, strconv.Itoa(port)), err)
}

func defaultName(port int) string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "edge"
	}
	var b [2]byte
	_, _ = crand.Read(b[:])
	return host + "-" + strconv.Itoa(port) + "-" + hex.EncodeToString(b[:])
}

// joinLoop joins in the background with jittered exponential backoff until
// another node is a member (by this join or by someone joining us) or Stop.
func (c *Cluster) joinLoop(addrs []string) {
	defer close(c.joinDone)
	wait := c.opts.JoinRetryMin
	for attempt := 1; ; attempt++ {
		if c.ml.NumMembers() > 1 {
			return
		}
		n, err := c.ml.Join(addrs)
		if err == nil && c.ml.NumMembers() > 1 {
			c.log.Info("cluster: joined", "node", c.name, "contacted", n, "members", c.ml.NumMembers())
			return
		}
		if err == nil {
			err = fmt.Errorf("only this node answered")
		}
		d := wait/2 + rand.N(wait/2+1)
		c.log.Warn("cluster: cannot join, will retry", "join", addrs, "attempt", attempt, "retry_in", d.Round(time.Millisecond), "error", err)
		select {
		case <-time.After(d):
		case <-c.done:
			return
		}
		wait = min(2*wait, c.opts.JoinRetryMax)
	}
}

// Join contacts addrs (host:port) now and merges state with them; it returns
// how many answered. An error means none did. Safe for concurrent use.
func (c *Cluster) Join(addrs []string) (int, error) {
	if c.stopped.Load() {
		return 0, fmt.Errorf("cannot join %v: %w", addrs, ErrStopped)
	}
	n, err := c.ml.Join(addrs)
	if err != nil {
		return n, fmt.Errorf("cannot join cluster via %v: %w", addrs, err)
	}
	return n, nil
}

// Stop leaves the cluster gracefully, so peers mark this node "left" at once
// instead of detecting a failure seconds later, then shuts memberlist down and
// ends the goroutines. Each step is bounded by LeaveTimeout; an error means the
// leave was not confirmed and peers will see this node as dead. Safe to call
// more than once; later calls return nil.
func (c *Cluster) Stop() error {
	return c.shutdown(true)
}

func (c *Cluster) shutdown(leave bool) error {
	var err error
	c.stopOnce.Do(func() {
		c.stopped.Store(true)
		if leave {
			// Announce the intent in node meta first: memberlist does not tell
			// NotifyLeave whether a node left or died.
			c.leaving.Store(true)
			if e := c.ml.UpdateNode(c.opts.LeaveTimeout); e != nil {
				c.log.Debug("cluster: leave announcement not confirmed", "error", e)
			}
			if e := c.ml.Leave(c.opts.LeaveTimeout); e != nil {
				err = fmt.Errorf("cannot leave cluster as %q: %w", c.name, e)
			}
		}
		close(c.done)
		if e := c.ml.Shutdown(); e != nil && err == nil {
			err = fmt.Errorf("cannot shut down cluster node %q: %w", c.name, e)
		}
		select {
		case <-c.joinDone:
		case <-time.After(c.opts.LeaveTimeout):
		}
		c.wg.Wait()
	})
	return err
}

// Name returns this node's name.
func (c *Cluster) Name() string { return c.name }

// Addr returns this node's advertised gossip address (host:port), what others
// put in their join list.
func (c *Cluster) Addr() string { return c.ml.LocalNode().Address() }

// Members returns every known member, this node included, sorted by name; dead
// and left members stay listed for DeadRetention. The slice is the caller's.
func (c *Cluster) Members() []Member { return c.members.list() }

// NumAlive returns how many members are live (alive or suspect), this node
// included; at least 1. Use it to split a cluster-wide rate. Lock-free.
func (c *Cluster) NumAlive() int { return max(1, int(c.members.live.Load())) }

// Counts returns how many members are in each state, with every State present
// (zeros included), for a gauge such as edge_cluster_members{state}.
func (c *Cluster) Counts() map[State]int { return c.members.counts() }

// OnChange registers fn to be called after membership changes (join, leave,
// failure, suspicion, address change). Calls come from one goroutine, one at a
// time, and are coalesced: a burst of changes yields at least one call after
// the last of them, usually within milliseconds. fn reads what it needs
// (NumAlive, Members). cancel unregisters fn.
func (c *Cluster) OnChange(fn func()) (cancel func()) {
	c.watchMu.Lock()
	id := c.watchSeq
	c.watchSeq++
	c.watchers[id] = fn
	c.watchMu.Unlock()
	return func() {
		c.watchMu.Lock()
		delete(c.watchers, id)
		c.watchMu.Unlock()
	}
}

func (c *Cluster) watchLoop() {
	defer c.wg.Done()
	for {
		select {
		case <-c.done:
			return
		case <-c.members.changed:
		}
		c.watchMu.Lock()
		fns := make([]func(), 0, len(c.watchers))
		for _, fn := range c.watchers {
			fns = append(fns, fn)
		}
		c.watchMu.Unlock()
		for _, fn := range fns {
			fn()
		}
	}
}

// Stats are counters of this node since New, for metrics and measurements.
type Stats struct {
	UDPBytesSent   uint64 // every UDP byte this node sent (probes, gossip, broadcasts)
	UDPPacketsSent uint64
	TCPBytesSent   uint64 // every TCP byte this node wrote (push/pull, joins)
	Broadcasts     uint64 // entry transmissions handed to memberlist (each retransmit counts)
	BroadcastBytes uint64 // their bytes, with memberlist's per-message framing
	Received       uint64 // entry messages received
	Applied        uint64 // received entries newer than this node's (messages and push/pull)
	Relayed        uint64 // received entries queued again for relaying
	Dropped        uint64 // messages dropped because the delivery queue was full
	Invalid        uint64 // undecodable messages or entries refused (too many kinds)
	Evicted        uint64 // entries evicted by a full kind
	Entries        int    // live entries now
	Tombstones     int    // remembered deletions now
	Queued         int    // broadcasts waiting for transmission now
}

// Stats returns the current counters. It scans the store: call it for metrics
// scrapes, not per request.
func (c *Cluster) Stats() Stats {
	s := Stats{
		UDPBytesSent:   c.tr.udpBytes.Load(),
		UDPPacketsSent: c.tr.udpPackets.Load(),
		TCPBytesSent:   c.tr.tcpBytes.Load(),
		Broadcasts:     c.stats.broadcasts.Load(),
		BroadcastBytes: c.stats.broadcastBytes.Load(),
		Received:       c.stats.received.Load(),
		Applied:        c.stats.applied.Load(),
		Relayed:        c.stats.relayed.Load(),
		Dropped:        c.stats.dropped.Load(),
		Invalid:        c.stats.invalid.Load(),
		Evicted:        c.store.evicted.Load(),
		Queued:         c.queue.NumQueued(),
	}
	s.Entries, s.Tombstones = c.store.counts(time.Now().UnixMilli())
	return s
}
