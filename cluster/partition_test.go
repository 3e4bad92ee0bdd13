package cluster

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// partition cuts this node off from the peers for which cut returns true (nil heals): its
// packets to them are lost and its connections to them fail. Cutting both sides of a
// link makes a partition in both directions.
func (c *Cluster) partition(cut func(addr string) bool) {
	if cut == nil {
		c.tr.blocked.Store(nil)
		return
	}
	c.tr.blocked.Store(&cut)
}

// A node partitioned from the other two while bans are published on both sides: each side
// marks the other dead, the majority keeps sharing; after the heal (within memberlist's
// GossipToTheDeadTime, 30 s, during which the dead are still gossiped to so they can
// refute) the node is alive everywhere again, every ban published on either side during
// the partition reaches every node, and the goroutines are back near their baseline.
func TestPartitionedNodeIsDeadAndRejoinsAfterHeal(t *testing.T) {
	nodes := startCluster(t, 3, func(o *Options) { o.PushPullInterval = time.Second })
	a, b, c := nodes[0], nodes[1], nodes[2]
	before := runtime.NumGoroutine()

	// Load: a ban every 10ms on a (majority side) and on c (cut off), for the whole test.
	var published [2]atomic.Int64
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			for side, n := range []*Cluster{a, c} {
				if err := n.Publish("ban", fmt.Sprintf("%d-%d", side, i), nil, time.Hour); err != nil {
					t.Errorf("publish on %s: %v", n.Name(), err)
					return
				}
				published[side].Add(1)
			}
		}
	}()

	cAddr := c.Addr()
	c.partition(func(string) bool { return true })
	a.partition(func(addr string) bool { return addr == cAddr })
	b.partition(func(addr string) bool { return addr == cAddr })
	cut := time.Now()
	waitFor(t, "c dead on a and b, a and b not alive on c", func() bool {
		sa, _ := memberState(a, c.Name())
		sb, _ := memberState(b, c.Name())
		ca, _ := memberState(c, a.Name())
		cb, _ := memberState(c, b.Name())
		return sa == StateDead && sb == StateDead && ca != StateAlive && cb != StateAlive
	})
	t.Logf("partition seen after %v; counts on a %v, on c %v", time.Since(cut).Round(time.Millisecond), a.Counts(), c.Counts())
	if got := a.Counts(); got[StateDead] != 1 || got[StateAlive] != 2 {
		t.Errorf("counts on a during the partition: %v, want 2 alive and 1 dead", got)
	}
	// The majority still shares: a's latest ban reaches b, not c.
	key := fmt.Sprintf("0-%d", published[0].Load()-1)
	waitFor(t, "a's ban on b during the partition", func() bool { _, ok := b.Get("ban", key); return ok })
	if _, ok := c.Get("ban", key); ok {
		t.Errorf("ban %s reached the partitioned node", key)
	}

	a.partition(nil)
	b.partition(nil)
	c.partition(nil)
	healed := time.Now()
	waitFor(t, "3 alive members everywhere after the heal", func() bool {
		return a.NumAlive() == 3 && b.NumAlive() == 3 && c.NumAlive() == 3
	})
	t.Logf("rejoined %v after the heal", time.Since(healed).Round(time.Millisecond))
	close(stop)
	<-done
	want := int(published[0].Load() + published[1].Load())
	waitFor(t, fmt.Sprintf("all %d bans on every node", want), func() bool {
		for _, n := range nodes {
			if len(n.Entries("ban")) != want {
				return false
			}
		}
		return true
	})
	t.Logf("%d bans on every node %v after the heal", want, time.Since(healed).Round(time.Millisecond))
	waitFor(t, "goroutines back near the baseline", func() bool { return runtime.NumGoroutine() <= before+5 })
	t.Logf("goroutines %d before the partition, %d after", before, runtime.NumGoroutine())
}
