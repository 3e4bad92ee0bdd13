package cluster

import (
	"math/rand/v2"
	"strconv"
	"testing"
	"time"
)

// lanTimers keeps memberlist.DefaultLANConfig's timers (the production
// defaults: gossip 200 ms to 3 nodes, probe 1 s, push/pull 30 s) and only
// shortens joins and sweeps, which do not affect what is measured.
func lanTimers(o *Options) {
	o.GossipInterval, o.GossipNodes, o.ProbeInterval, o.ProbeTimeout = 0, 0, 0, 0
	o.SuspicionMult, o.RetransmitMult, o.PushPullInterval, o.TCPTimeout = 0, 0, 0, 0
	o.LeaveTimeout = 3 * time.Second
}

func timers(name string) func(*Options) {
	if name == "lan" {
		return lanTimers
	}
	return nil
}

func udpSent(nodes []*Cluster) uint64 {
	var n uint64
	for _, c := range nodes {
		n += c.Stats().UDPBytesSent
	}
	return n
}

// BenchmarkPublish3 measures, on 3 nodes: the time from Publish on A until B
// and C both hold the value (ns/op, as conv-ms), the transmissions and payload
// bytes handed to memberlist per publish (exact), and the UDP bytes on the wire
// per publish (all nodes' sent bytes, minus the probe traffic of an idle window
// of the same length).
//
//	go test -run XXX -bench Publish3 -benchtime 50x ./cluster/
func BenchmarkPublish3(b *testing.B) {
	for _, tm := range []string{"lan", "test"} {
		b.Run(tm, func(b *testing.B) {
			nodes := startCluster(b, 3, timers(tm))
			a := nodes[0]
			value := []byte(`{"reason":"auto: 429 storm","until":1767225600}`)
			drained := func() bool {
				for _, c := range nodes {
					if c.Stats().Queued != 0 {
						return false
					}
				}
				return true
			}
			var bc0, bb0 uint64
			for _, c := range nodes {
				s := c.Stats()
				bc0 += s.Broadcasts
				bb0 += s.BroadcastBytes
			}
			start, u1 := time.Now(), udpSent(nodes)
			var conv time.Duration
			b.ResetTimer()
			for i := range b.N {
				key := "ip:198.51.100." + strconv.Itoa(i%250) + "/" + strconv.Itoa(i)
				// Publish at a random phase of the gossip ticker, not right
				// after the round that drained the last one.
				time.Sleep(rand.N(a.opts.GossipInterval))
				t1 := time.Now()
				if err := a.Publish("ban", key, value, time.Hour); err != nil {
					b.Fatal(err)
				}
				for {
					_, okB := nodes[1].Get("ban", key)
					_, okC := nodes[2].Get("ban", key)
					if okB && okC {
						break
					}
					if time.Since(t1) > deadline {
						for _, c := range nodes {
							b.Logf("%s: %+v members %+v", c.Name(), c.Stats(), c.Members())
						}
						b.Fatalf("publish %d not converged after %v", i, deadline)
					}
					time.Sleep(time.Millisecond)
				}
				conv += time.Since(t1)
				// One publish at a time: let its retransmissions finish so
				// the next one is not piggybacked on them.
				waitFor(b, "queues drained", drained)
			}
			b.StopTimer()
			elapsed := time.Since(start).Seconds()
			u2 := udpSent(nodes)
			// Idle baseline afterwards, once join traffic is long over: probes
			// and acks only.
			t0 := time.Now()
			time.Sleep(3 * time.Second)
			idleRate := float64(udpSent(nodes)-u2) / time.Since(t0).Seconds()
			wire := float64(u2-u1) - idleRate*elapsed
			var bc, bb uint64
			for _, c := range nodes {
				s := c.Stats()
				bc += s.Broadcasts
				bb += s.BroadcastBytes
			}
			n := float64(b.N)
			b.ReportMetric(float64(conv.Milliseconds())/n, "conv-ms")
			b.ReportMetric(float64(bc-bc0)/n, "transmits/publish")
			b.ReportMetric(float64(bb-bb0)/n, "payload-B/publish")
			b.ReportMetric(wire/n, "wire-B/publish")
			b.ReportMetric(idleRate/3, "idle-B/s/node")
			msg := appendEntry(nil, &entry{kind: "ban", key: "ip:198.51.100.7/7", origin: a.Name(), value: value, version: 1, expires: time.Now().UnixMilli()})
			b.ReportMetric(float64(len(msg)), "entry-B")
		})
	}
}

// BenchmarkDetect measures how long the two survivors of a 3-node cluster take
// to mark a gracefully stopped node left (leave-ms, from the start of Stop)
// and, on a fresh cluster, a killed node dead (crash-ms).
//
//	go test -run XXX -bench Detect -benchtime 3x ./cluster/
func BenchmarkDetect(b *testing.B) {
	for _, tm := range []string{"lan", "test"} {
		b.Run(tm, func(b *testing.B) {
			var leave, crash time.Duration
			seen := func(nodes []*Cluster, s State) bool {
				for _, n := range nodes[:2] {
					if st, _ := memberState(n, nodes[2].Name()); st != s {
						return false
					}
				}
				return true
			}
			for range b.N {
				nodes := startCluster(b, 3, timers(tm))
				t0 := time.Now()
				if err := nodes[2].Stop(); err != nil {
					b.Fatal(err)
				}
				waitFor(b, "left", func() bool { return seen(nodes, StateLeft) })
				leave += time.Since(t0)

				nodes = startCluster(b, 3, timers(tm))
				t1 := time.Now()
				_ = nodes[2].shutdown(false)
				waitFor(b, "dead", func() bool { return seen(nodes, StateDead) })
				crash += time.Since(t1)
			}
			b.ReportMetric(float64(leave.Milliseconds())/float64(b.N), "leave-ms")
			b.ReportMetric(float64(crash.Milliseconds())/float64(b.N), "crash-ms")
		})
	}
}

// BenchmarkPublishLocal is the cost of Publish on the caller's goroutine
// (validate, encode, store, queue), alone in a cluster.
func BenchmarkPublishLocal(b *testing.B) {
	c := startNode(b, nodeName(b, 0), nil, nil)
	value := []byte("auto: 429 storm")
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = "ip:10.0." + strconv.Itoa(i/256) + "." + strconv.Itoa(i%256)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if err := c.Publish("ban", keys[i%len(keys)], value, time.Hour); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBurst publishes 500 entries on A at once and measures how long B and
// C take to hold all of them by gossip alone (push/pull pushed out to 1 h):
// memberlist sends at most one ≤1400-byte packet per target per gossip
// interval, which caps how many entries per second gossip can carry.
//
//	go test -run XXX -bench Burst -benchtime 1x ./cluster/
func BenchmarkBurst(b *testing.B) {
	const n = 500
	for range b.N {
		nodes := startCluster(b, 3, func(o *Options) {
			lanTimers(o)
			o.PushPullInterval = time.Hour
		})
		value := []byte(`{"reason":"auto: 429 storm"}`)
		start := time.Now()
		for i := range n {
			if err := nodes[0].Publish("ban", "ip:10.1."+strconv.Itoa(i/256)+"."+strconv.Itoa(i%256), value, time.Hour); err != nil {
				b.Fatal(err)
			}
		}
		var last time.Duration
		for {
			if len(nodes[1].Entries("ban")) == n && len(nodes[2].Entries("ban")) == n {
				last = time.Since(start)
				break
			}
			if time.Since(start) > 2*time.Minute {
				b.Fatalf("burst not converged: B %d, C %d", len(nodes[1].Entries("ban")), len(nodes[2].Entries("ban")))
			}
			time.Sleep(10 * time.Millisecond)
		}
		b.ReportMetric(last.Seconds(), "burst-s")
		b.ReportMetric(n/last.Seconds(), "entries/s")
	}
}

// BenchmarkPushPullState measures the TCP bytes of a join's push/pull (both
// directions) when the cluster holds 1000 ban entries, per entry.
//
//	go test -run XXX -bench PushPullState -benchtime 1x ./cluster/
func BenchmarkPushPullState(b *testing.B) {
	const n = 1000
	for range b.N {
		nodes := startCluster(b, 2, lanTimers)
		for i := range n {
			if err := nodes[0].Publish("ban", "ip:10.2."+strconv.Itoa(i/256)+"."+strconv.Itoa(i%256), []byte("auto: 429 storm"), time.Hour); err != nil {
				b.Fatal(err)
			}
		}
		waitFor(b, "state on B", func() bool { return len(nodes[1].Entries("ban")) == n })
		// The joiner sends its empty state and the member list; B answers
		// with the 1000 entries and the member list.
		measure := func() uint64 {
			before := nodes[1].Stats().TCPBytesSent
			c := startNode(b, nodeName(b, len(nodes)), []string{nodes[1].Addr()}, lanTimers)
			nodes = append(nodes, c)
			waitFor(b, "state on the joiner", func() bool { return len(c.Entries("ban")) == n })
			return nodes[1].Stats().TCPBytesSent - before + c.Stats().TCPBytesSent
		}
		total := measure()
		b.ReportMetric(float64(total), "join-B")
		b.ReportMetric(float64(len(nodes[1].store.appendState(nil, 1<<30, time.Now().UnixMilli())))/n, "state-B/entry")
	}
}
