package main

import (
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"

	"github.com/edge-gw/edge/cluster"
	"github.com/edge-gw/edge/config"
	"github.com/edge-gw/edge/proxy"
)

// clusterNode is this process's membership in the edge cluster: the node, the
// proxy's attachment to it and the membership logger. It lives for the process.
type clusterNode struct {
	c      *cluster.Cluster
	log    *slog.Logger
	detach func()
	cancel func()

	mu    sync.Mutex
	known map[string]cluster.State
}

// clusterOptions maps the cluster block to the leaf's options: the block's name
// is the cluster's label (the same on every node), node_name this node's name.
func clusterOptions(cc *config.Cluster, log *slog.Logger) (cluster.Options, error) {
	o := cluster.Options{Name: cc.NodeName, Label: cc.Name, Join: cc.Join, Logger: log}
	host, port, err := net.SplitHostPort(cc.Bind)
	if err != nil {
		return o, fmt.Errorf("cluster bind %q: %w", cc.Bind, err)
	}
	if o.BindPort, err = strconv.Atoi(port); err != nil {
		return o, fmt.Errorf("cluster bind %q: bad port", cc.Bind)
	}
	o.BindAddr = host
	if cc.Advertise != "" {
		host, port, err := net.SplitHostPort(cc.Advertise)
		if err != nil {
			return o, fmt.Errorf("cluster advertise %q: %w", cc.Advertise, err)
		}
		if o.AdvertisePort, err = strconv.Atoi(port); err != nil {
			return o, fmt.Errorf("cluster advertise %q: bad port", cc.Advertise)
		}
		o.AdvertiseAddr = host
	}
	if cc.Secret != "" {
		o.SecretKey = []byte(cc.Secret)
	}
	return o, nil
}

// startCluster starts this node (joining in the background) and attaches the
// proxy to it. Call it after the first Apply.
func startCluster(cc *config.Cluster, px *proxy.Proxy, log *slog.Logger) (*clusterNode, error) {
	opts, err := clusterOptions(cc, log)
	if err != nil {
		return nil, err
	}
	c, err := cluster.New(opts)
	if err != nil {
		return nil, err
	}
	n := &clusterNode{c: c, log: log, known: map[string]cluster.State{}}
	n.detach = px.SetCluster(c)
	n.cancel = c.OnChange(n.logChanges)
	n.logChanges()
	log.Info("cluster node started", "cluster", cc.Name, "node", c.Name(), "gossip", c.Addr(), "join", cc.Join)
	return n, nil
}

// logChanges logs every member whose state changed since the last call: joins,
// graceful leaves, failures and suspicion.
func (n *clusterNode) logChanges() {
	n.mu.Lock()
	defer n.mu.Unlock()
	listed := map[string]bool{}
	for _, m := range n.c.Members() {
		listed[m.Name] = true
		old, seen := n.known[m.Name]
		if m.Local || seen && old == m.State {
			continue
		}
		n.known[m.Name] = m.State
		msg := "cluster: member joined"
		switch {
		case m.State == cluster.StateAlive && seen && old == cluster.StateSuspect:
			msg = "cluster: member alive again"
		case m.State == cluster.StateSuspect:
			msg = "cluster: member suspect"
		case m.State == cluster.StateDead:
			msg = "cluster: member failed"
		case m.State == cluster.StateLeft:
			msg = "cluster: member left"
		}
		n.log.Info(msg, "member", m.Name, "addr", m.Addr, "alive", n.c.NumAlive())
	}
	for name := range n.known {
		if !listed[name] { // reaped after DeadRetention
			delete(n.known, name)
		}
	}
}

// stop leaves the cluster gracefully: peers see this node "left" at once and
// re-split their cluster limits; bounded by the leaf's LeaveTimeout.
func (n *clusterNode) stop() {
	n.cancel()
	n.detach()
	if err := n.c.Stop(); err != nil {
		n.log.Warn("cluster: leave not confirmed; peers will see this node as failed", "error", err)
		return
	}
	n.log.Info("cluster: left", "node", n.c.Name())
}

// checkClusterReload decides what a reload may change of the cluster block: the
// join list is applied (the new addresses are contacted in the background);
// anything else, including adding or removing the block, needs a restart,
// because the node's name, label, key and sockets are fixed at start.
func checkClusterReload(old, cfg *config.Config) (newJoin []string, err error) {
	o, c := old.Cluster, cfg.Cluster
	restart := func(what string) error {
		return fmt.Errorf("%s: cluster %s changed: %w", cfg.File, what, proxy.ErrRestartNeeded)
	}
	switch {
	case o == nil && c == nil:
		return nil, nil
	case o == nil:
		return nil, restart("block added")
	case c == nil:
		return nil, restart("block removed")
	case o.Name != c.Name:
		return nil, restart("name")
	case o.NodeName != c.NodeName:
		return nil, restart("node_name")
	case o.Bind != c.Bind:
		return nil, restart("bind")
	case o.Advertise != c.Advertise:
		return nil, restart("advertise")
	case o.Secret != c.Secret:
		return nil, restart("secret")
	case !slices.Equal(o.Join, c.Join):
		return c.Join, nil
	}
	return nil, nil
}
