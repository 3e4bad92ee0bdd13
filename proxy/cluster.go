package proxy

// A cluster of edges (issue 9): this file connects a cluster.Cluster (made and
// stopped by cmd/edge) to the features that share state between nodes.
//
// Every shared change is one replicated key of the cluster's key/value layer,
// published by the node where it happened (through a hook in that feature's
// file, after the local change succeeded) and applied on every other node by a
// subscriber here. Subscribers apply directly to the feature's state (List.Merge,
// cache purges, sold-out flags, SetDegraded) and never through the hooked paths,
// so a received change is never published again. The cluster layer versions
// (last writer wins), dedupes, relays and bounds the entries, and hands a node
// that joins later the current ones by push/pull; delivery is at least once, so
// every apply below is idempotent.
//
//	kind     key                          value                       ttl
//	ban      ip:<addr or cidr> | user:<id>  source byte ('a'|'p') + reason  the ban's; 0: none
//	purge    url:<uri> | route:<name> | tag:<tag>   empty             clusterPurgeTTL
//	         uri:<uri> (an invalidation after a write, cache_rfc.go)
//	soldout  <item>                       empty                       clusterSoldOutTTL; Delete = restocked
//	degrade  <route>                      JSON {"reason","until"}     until the switch ends; Delete = off
//
// scope = "cluster" limits are split here too: each node enforces rate/N and
// burst/N (SetLimitScale) where N is the number of live members, re-split at
// once on a membership change (OnChange) and within clusterSyncEvery of a reload.

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edge-gw/edge/admin"
	"github.com/edge-gw/edge/blacklist"
	"github.com/edge-gw/edge/cluster"
	"github.com/prometheus/client_golang/prometheus"
)

// Kinds of the shared state in the cluster's key/value layer.
const (
	kindBan     = "ban"
	kindPurge   = "purge"
	kindSoldOut = "soldout"
	kindDegrade = "degrade"
)

// Timings of the cluster wiring; variables so tests can shorten them.
var (
	// clusterPurgeTTL is how long a purge is remembered: a node that joins (or
	// comes back) within it replays it, harmlessly, on its cache.
	clusterPurgeTTL = time.Minute
	// clusterSoldOutFlags is how many local flag periods (seckillFlagFor) a
	// sold-out flag from the cluster holds unless a restock clears it first: long
	// enough that other nodes do not ask the store again at once, short enough that
	// units returned by an expired-token reclaim on one node (which publishes
	// nothing) are sold again soon everywhere.
	clusterSoldOutFlags = 5
	// clusterSyncEvery is how often the current snapshot is checked for limits to
	// split and features to replay after a reload; membership changes act at once.
	clusterSyncEvery = 250 * time.Millisecond
)

// clusterState is this feature's long-lived state (created by initCluster in New).
type clusterState struct {
	c    atomic.Pointer[cluster.Cluster] // nil: not in a cluster
	once sync.Once                       // registers the degrade callback once

	mu        sync.Mutex // serialises sync and guards the fields below
	lastSnap  *Snapshot
	lastAlive int
	lastList  *blacklist.List
	lastGate  *seckillBackend
	scaled    map[[2]string]bool // limits split by the last sync
	splits    atomic.Uint64      // limit re-splits done, for GET /cluster
	published atomic.Uint64
	received  atomic.Uint64
}

var (
	membersDesc = prometheus.NewDesc("edge_cluster_members",
		"Cluster members by state (alive, suspect, dead, left) as this node sees them, itself included.", []string{"state"}, nil)
	gossipBytesDesc = prometheus.NewDesc("edge_cluster_sent_bytes_total",
		"Bytes this node sent for the cluster, by protocol (udp: probes and gossip; tcp: push/pull and joins).", []string{"proto"}, nil)
	clusterEntriesDesc = prometheus.NewDesc("edge_cluster_entries",
		"Live replicated entries (bans, purges, sold-out flags, degrade switches) held by this node.", nil, nil)
)

// initCluster creates the feature's long-lived state and registers its metrics.
func (p *Proxy) initCluster() {
	p.clusterState = &clusterState{scaled: map[[2]string]bool{}}
	p.metrics.Reg.MustRegister(&clusterCollector{st: p.clusterState})
}

// clusterCollector reports the cluster gauges at scrape time from the node; it
// reports nothing while this edge is not in a cluster.
type clusterCollector struct{ st *clusterState }

func (cc *clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- membersDesc
	ch <- gossipBytesDesc
	ch <- clusterEntriesDesc
}

func (cc *clusterCollector) Collect(ch chan<- prometheus.Metric) {
	c := cc.st.c.Load()
	if c == nil {
		return
	}
	counts := c.Counts()
	for _, s := range cluster.States {
		ch <- prometheus.MustNewConstMetric(membersDesc, prometheus.GaugeValue, float64(counts[s]), s.String())
	}
	st := c.Stats()
	ch <- prometheus.MustNewConstMetric(gossipBytesDesc, prometheus.CounterValue, float64(st.UDPBytesSent), "udp")
	ch <- prometheus.MustNewConstMetric(gossipBytesDesc, prometheus.CounterValue, float64(st.TCPBytesSent), "tcp")
	ch <- prometheus.MustNewConstMetric(clusterEntriesDesc, prometheus.GaugeValue, float64(st.Entries))
}

// SetCluster makes p one node of c: local bans, purges, sold-out and restock
// events and degrade switches are published to the other nodes, theirs are
// applied here, and scope = "cluster" limits are split among c's live members.
// Call it once, after the first Apply (the current snapshot is what it replays
// received state into). The caller keeps owning c: call detach before c.Stop, so
// nothing publishes to a stopped node; after detach p is a lone edge again (its
// limits keep their last split, received bans stay).
func (p *Proxy) SetCluster(c *cluster.Cluster) (detach func()) {
	st := p.clusterState
	st.c.Store(c)
	st.once.Do(func() { p.OnDegradeChange(p.clusterDegradeChanged) })
	done := make(chan struct{})
	wake := make(chan struct{}, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(clusterSyncEvery)
		defer t.Stop()
		for {
			p.clusterSync(c)
			select {
			case <-done:
				return
			case <-wake:
			case <-t.C:
			}
		}
	}()
	cancels := []func(){
		c.OnChange(func() {
			select {
			case wake <- struct{}{}:
			default:
			}
		}),
		c.Subscribe(kindBan, p.applyBan),
		c.Subscribe(kindPurge, p.applyPurge),
		c.Subscribe(kindSoldOut, p.applySoldOut),
		c.Subscribe(kindDegrade, p.applyDegrade),
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			st.c.CompareAndSwap(c, nil)
			for _, cancel := range cancels {
				cancel()
			}
			close(done)
			wg.Wait()
		})
	}
}

// clusterSync re-splits cluster-scope limits when the live member count or the
// snapshot changed, and replays received bans and sold-out flags into a blacklist
// or seckill backend that a reload created.
func (p *Proxy) clusterSync(c *cluster.Cluster) {
	st := p.clusterState
	st.mu.Lock()
	defer st.mu.Unlock()
	s := p.snap.Load()
	if s == nil {
		return
	}
	n := c.NumAlive()
	if s != st.lastSnap || n != st.lastAlive {
		f := 1 / float64(n)
		want := map[[2]string]bool{}
		for _, rt := range s.routes {
			for _, lc := range rt.cfg.Limits {
				if lc.Scope == "cluster" {
					want[[2]string{rt.name, lc.Name}] = true
				}
			}
		}
		for k := range want {
			if err := p.SetLimitScale(k[0], k[1], f); err != nil {
				// A reload raced us; the next tick sees the new snapshot.
				slog.Default().Warn("cluster: cannot split limit", "route", k[0], "limit", k[1], "members", n, "error", err)
			}
		}
		for k := range st.scaled {
			if !want[k] { // scope changed from cluster to another: whole rate again
				if err := p.SetLimitScale(k[0], k[1], 1); err != nil && !errors.Is(err, ErrNoLimit) {
					slog.Default().Warn("cluster: cannot unsplit limit", "route", k[0], "limit", k[1], "error", err)
				}
			}
		}
		if len(want) > 0 && n != st.lastAlive {
			slog.Default().Info("cluster: limits re-split", "members", n, "share", f, "limits", len(want))
		}
		st.scaled, st.lastSnap, st.lastAlive = want, s, n
		st.splits.Add(1)
	}
	if s.blacklist != nil && s.blacklist.list != st.lastList {
		st.lastList = s.blacklist.list
		for _, e := range c.Entries(kindBan) {
			p.applyBan(e)
		}
	}
	if s.seckill != nil && s.seckill.backend != st.lastGate {
		st.lastGate = s.seckill.backend
		for _, e := range c.Entries(kindSoldOut) {
			p.applySoldOut(e)
		}
	}
}

// publish writes one shared change; failures are logged, never returned: the
// local change stands, and a node that missed it converges by push/pull or not at
// all (an entry too large for gossip).
func (p *Proxy) publish(kind, key string, value []byte, ttl time.Duration) {
	c := p.clusterState.c.Load()
	if c == nil {
		return
	}
	if err := c.Publish(kind, key, value, ttl); err != nil {
		slog.Default().Warn("cluster: change not shared", "kind", kind, "key", key, "error", err)
		return
	}
	p.clusterState.published.Add(1)
}

func (p *Proxy) unpublish(kind, key string) {
	c := p.clusterState.c.Load()
	if c == nil {
		return
	}
	if err := c.Delete(kind, key); err != nil {
		slog.Default().Warn("cluster: change not shared", "kind", kind, "key", key, "deleted", true, "error", err)
		return
	}
	p.clusterState.published.Add(1)
}

// Bans.

// maxClusterReason bounds the reason a ban carries over gossip: an entry must fit
// one UDP packet (cluster.MaxMessageSize).
const maxClusterReason = 512

func banKey(e blacklist.Entry) string {
	if e.Kind == blacklist.KindUser {
		return e.Value() // "user:<id>"
	}
	return "ip:" + e.Value()
}

// clusterBanned shares a ban made on this node (API or auto-ban).
func (p *Proxy) clusterBanned(e blacklist.Entry) {
	if p.clusterState.c.Load() == nil {
		return
	}
	var ttl time.Duration
	if !e.Expires.IsZero() {
		if ttl = time.Until(e.Expires); ttl <= 0 {
			return
		}
	}
	reason := e.Reason
	if len(reason) > maxClusterReason {
		reason = reason[:maxClusterReason]
	}
	src := byte('p')
	if e.Source == blacklist.SourceAuto {
		src = 'a'
	}
	p.publish(kindBan, banKey(e), append([]byte{src}, reason...), ttl)
}

// clusterAutoBanned shares the auto-ban RecordReject just made for client, as the
// leaf makes it: the address (IPv6: its /64), for the block's ban duration.
func (p *Proxy) clusterAutoBanned(s *Snapshot, client netip.Addr) {
	ab := s.Config.Blacklist.AutoBan
	if p.clusterState.c.Load() == nil || ab == nil {
		return
	}
	client = client.Unmap()
	bits := 32
	if client.Is6() {
		bits = 64
	}
	pfx, err := client.Prefix(bits)
	if err != nil {
		return
	}
	now := time.Now()
	p.clusterBanned(blacklist.Entry{Kind: blacklist.KindIP, Source: blacklist.SourceAuto, Prefix: pfx,
		Reason: autoBanReason(ab.Rejects, ab.Window), Created: now, Expires: now.Add(ab.Ban)})
}

func autoBanReason(rejects int, window time.Duration) string {
	// The leaf's wording (blacklist/autoban.go), so a ban reads the same on every node.
	return "auto-ban: " + strconv.Itoa(rejects) + " rejects in " + window.String()
}

// clusterUnbanned shares the removal of a ban on this node; pfx is the
// normalised prefix (IP unbans) or user the user id.
func (p *Proxy) clusterUnbanned(pfx netip.Prefix, user string) {
	if user != "" {
		p.unpublish(kindBan, "user:"+user)
		return
	}
	p.unpublish(kindBan, "ip:"+blacklist.Entry{Kind: blacklist.KindIP, Prefix: pfx}.Value())
}

// applyBan applies a ban or unban from another node to this node's list.
func (p *Proxy) applyBan(e cluster.Entry) {
	p.clusterState.received.Add(1)
	s := p.snap.Load()
	if s == nil || s.blacklist == nil {
		return // replayed by clusterSync when a blacklist block appears
	}
	list := s.blacklist.list
	be := blacklist.Entry{Kind: blacklist.KindUser}
	if ip, ok := strings.CutPrefix(e.Key, "ip:"); ok {
		pfx, err := blacklist.ParsePrefix(ip)
		if err != nil {
			slog.Default().Warn("cluster: bad ban ignored", "key", e.Key, "from", e.Origin, "error", err)
			return
		}
		be = blacklist.Entry{Kind: blacklist.KindIP, Prefix: pfx}
	} else if be.User, ok = strings.CutPrefix(e.Key, "user:"); !ok {
		return
	}
	now := time.Now()
	switch {
	case e.Expired:
		// Expired on every node by its own clock; the list drops it by itself.
	case e.Deleted:
		var err error
		if be.Kind == blacklist.KindUser {
			err = list.UnbanUser(be.User, now)
		} else {
			err = list.UnbanIP(be.Prefix, now)
		}
		if err != nil && !errors.Is(err, blacklist.ErrNotFound) && !errors.Is(err, blacklist.ErrStatic) {
			slog.Default().Error("cluster: unban from peer failed", "key", e.Key, "from", e.Origin, "error", err)
		}
	default:
		be.Source = blacklist.SourceAPI
		if len(e.Value) > 0 && e.Value[0] == 'a' {
			be.Source = blacklist.SourceAuto
		}
		if len(e.Value) > 1 {
			be.Reason = string(e.Value[1:])
		}
		be.Created = time.UnixMilli(int64(e.Version >> 16))
		be.Expires = e.Expires
		if err := list.Merge(be, now); err != nil {
			slog.Default().Warn("cluster: bad ban ignored", "key", e.Key, "from", e.Origin, "error", err)
		}
	}
}

// Cache purges.

// clusterPurged shares a purge made on this node: what is "url", "route" or "tag".
func (p *Proxy) clusterPurged(what, value string) {
	p.publish(kindPurge, what+":"+value, nil, clusterPurgeTTL)
}

// clusterInvalidated shares an invalidation after an unsafe request (cache_rfc.go) with
// the other nodes. Only in a cluster does it allocate; a URI too long for one gossip
// message is invalidated on this node only.
func (p *Proxy) clusterInvalidated(uri []byte) {
	if p.clusterState.c.Load() == nil || len(uri)+4 > cluster.MaxKeyLen {
		return
	}
	p.publish(kindPurge, "uri:"+string(uri), nil, clusterPurgeTTL)
}

// applyPurge runs a purge made on another node on this node's cache.
func (p *Proxy) applyPurge(e cluster.Entry) {
	p.clusterState.received.Add(1)
	if e.Deleted {
		return
	}
	inst := p.cacheState.cur.Load()
	if inst == nil {
		return
	}
	what, value, _ := strings.Cut(e.Key, ":")
	switch what {
	case "url":
		inst.c.PurgeURL(value)
	case "route":
		inst.c.PurgeRoute(value)
	case "tag":
		inst.c.PurgeTag(value)
	case "uri": // an invalidation, not an operator's purge: not counted as one
		inst.c.InvalidateURI([]byte(value))
		return
	default:
		return
	}
	p.cacheState.purges.WithLabelValues(what, "cluster").Inc()
}

// Seckill sold-out and restock.

func clusterSoldOutTTL() time.Duration {
	return time.Duration(clusterSoldOutFlags) * seckillFlagFor
}

// clusterSoldOut shares that this node's Gate answered item sold out, unless a
// flag for it is already shared for more than half its time: every node asks its
// Gate again when its own flag runs out, and only one of them needs to say so.
func (p *Proxy) clusterSoldOut(item string) {
	c := p.clusterState.c.Load()
	if c == nil {
		return
	}
	ttl := clusterSoldOutTTL()
	if e, ok := c.Get(kindSoldOut, item); ok && time.Until(e.Expires) > ttl/2 {
		return
	}
	p.publish(kindSoldOut, item, nil, ttl)
}

// clusterRestocked shares that item has stock again (PUT stock, release).
func (p *Proxy) clusterRestocked(item string) {
	c := p.clusterState.c.Load()
	if c == nil {
		return
	}
	if _, ok := c.Get(kindSoldOut, item); !ok {
		// No flag to clear: do not spend gossip on every restock.
		return
	}
	p.unpublish(kindSoldOut, item)
}

// applySoldOut sets or clears this node's sold-out flag of an item from another
// node, so it answers 410 without asking the store, or asks it again.
func (p *Proxy) applySoldOut(e cluster.Entry) {
	p.clusterState.received.Add(1)
	s := p.snap.Load()
	if s == nil || s.seckill == nil || e.Expired {
		return
	}
	b := s.seckill.backend
	if e.Deleted {
		b.flags.clear(e.Key)
		if g := b.gate.Load(); g != nil {
			g.ClearSoldOut(e.Key)
		}
		return
	}
	until := e.Expires
	if until.IsZero() {
		until = time.Now().Add(clusterSoldOutTTL())
	}
	b.flags.set(e.Key, b.flags.gen.Load(), until.UnixNano())
}

// Degrade switches.

type degradeValue struct {
	Reason string `json:"reason,omitempty"`
	Until  int64  `json:"until,omitempty"` // unix ms; 0: no end
}

// clusterDegradeChanged shares a switch changed through this node's admin API.
func (p *Proxy) clusterDegradeChanged(sw Switch) {
	if p.clusterState.c.Load() == nil {
		return
	}
	if !sw.On {
		p.unpublish(kindDegrade, sw.Route)
		return
	}
	v := degradeValue{Reason: sw.Reason}
	var ttl time.Duration
	if !sw.Until.IsZero() {
		v.Until = sw.Until.UnixMilli()
		if ttl = time.Until(sw.Until); ttl <= 0 {
			return
		}
	}
	if len(v.Reason) > maxClusterReason {
		v.Reason = v.Reason[:maxClusterReason]
	}
	b, _ := json.Marshal(v)
	p.publish(kindDegrade, sw.Route, b, ttl)
}

// applyDegrade turns a switch on or off as another node did.
func (p *Proxy) applyDegrade(e cluster.Entry) {
	p.clusterState.received.Add(1)
	if e.Expired {
		return // the switch turns itself off at until on every node
	}
	var err error
	if e.Deleted {
		err = p.SetDegraded(e.Key, false, "", time.Time{})
	} else {
		var v degradeValue
		if err = json.Unmarshal(e.Value, &v); err == nil {
			var until time.Time
			if v.Until != 0 {
				until = time.UnixMilli(v.Until)
			}
			err = p.SetDegraded(e.Key, true, v.Reason, until)
		}
	}
	if err != nil {
		slog.Default().Error("cluster: degrade switch from peer not applied", "route", e.Key, "from", e.Origin, "error", err)
	}
}

// Admin.

// adminCluster registers GET /cluster.
func (p *Proxy) adminCluster(api *admin.API) {
	api.Handle("GET /cluster", p.adminGetCluster)
}

type memberJSON struct {
	Name    string    `json:"name"`
	Address string    `json:"address"`
	State   string    `json:"state"`
	Since   time.Time `json:"since"`
	Local   bool      `json:"local,omitempty"`
}

func (p *Proxy) adminGetCluster(w http.ResponseWriter, r *http.Request) {
	st := p.clusterState
	c := st.c.Load()
	if c == nil {
		admin.JSON(w, http.StatusNotFound, map[string]string{"error": "no_cluster",
			"detail": "this edge has no cluster block"})
		return
	}
	var name string
	if s := p.snap.Load(); s != nil && s.Config.Cluster != nil {
		name = s.Config.Cluster.Name
	}
	ms := c.Members()
	members := make([]memberJSON, 0, len(ms))
	for _, m := range ms {
		members = append(members, memberJSON{Name: m.Name, Address: m.Addr, State: m.State.String(), Since: m.Since.UTC(), Local: m.Local})
	}
	counts := map[string]int{}
	for s, n := range c.Counts() {
		counts[s.String()] = n
	}
	stats := c.Stats()
	admin.JSON(w, http.StatusOK, map[string]any{
		"cluster": name,
		"node":    c.Name(),
		"address": c.Addr(),
		"alive":   c.NumAlive(),
		"members": members,
		"counts":  counts,
		"stats": map[string]any{
			"udp_bytes_sent":   stats.UDPBytesSent,
			"udp_packets_sent": stats.UDPPacketsSent,
			"tcp_bytes_sent":   stats.TCPBytesSent,
			"broadcasts":       stats.Broadcasts,
			"broadcast_bytes":  stats.BroadcastBytes,
			"received":         stats.Received,
			"applied":          stats.Applied,
			"relayed":          stats.Relayed,
			"dropped":          stats.Dropped,
			"invalid":          stats.Invalid,
			"evicted":          stats.Evicted,
			"entries":          stats.Entries,
			"tombstones":       stats.Tombstones,
			"queued":           stats.Queued,
			"published":        st.published.Load(),
			"delivered":        st.received.Load(),
			"limit_splits":     st.splits.Load(),
		},
	})
}
