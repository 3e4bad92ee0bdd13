package redistest

import (
	"strings"
	"testing"
	"time"
)

func TestServerLifecycle(t *testing.T) {
	s := Start(t)
	if got := s.Do("SET", "k", "v"); got != "OK" {
		t.Fatalf("SET answered %q, want OK", got)
	}
	if got := s.Do("GET", "k"); got != "v" {
		t.Fatalf("GET answered %q, want v", got)
	}
	s.Kill()
	if err := ping(s.Addr); err == nil {
		t.Fatalf("PING to %s answered after Kill", s.Addr)
	}
	s.Restart()
	if err := ping(s.Addr); err != nil {
		t.Fatalf("PING after Restart: %v", err)
	}
	if got := s.Do("GET", "k"); got != "" {
		t.Fatalf("GET after a non-persistent restart answered %q, want nothing", got)
	}
	s.Pause()
	s.Resume()
	if err := ping(s.Addr); err != nil {
		t.Fatalf("PING after Pause/Resume: %v", err)
	}
}

func TestTwoServersGetDistinctPorts(t *testing.T) {
	a, b := Start(t), Start(t)
	if a.Port == b.Port {
		t.Fatalf("both servers on port %d", a.Port)
	}
}

func TestCluster(t *testing.T) {
	c := StartCluster(t)
	if len(c.Addrs) != 3 {
		t.Fatalf("cluster has %d addrs, want 3", len(c.Addrs))
	}
	for _, s := range c.Servers {
		info := s.Do("CLUSTER", "INFO")
		if !strings.Contains(info, "cluster_known_nodes:3") {
			t.Fatalf("node %s does not know 3 nodes:\n%s", s.Addr, info)
		}
	}
}

// A replica added to the master of a key takes over when that master is killed, and keeps
// the key.
func TestClusterReplicaTakesOver(t *testing.T) {
	c := StartCluster(t)
	first := c.MasterOf(t, "k")
	if first == nil {
		t.Fatal("no master for k")
	}
	first.Do("SET", "k", "v")
	i := 0
	for c.Servers[i] != first {
		i++
	}
	r := c.AddReplica(t, i)
	if got := r.Do("GET", "k"); !strings.Contains(got, "MOVED") && got != "v" {
		t.Fatalf("replica GET k = %q", got)
	}
	first.Kill()
	deadline := time.Now().Add(20 * time.Second)
	for c.MasterOf(t, "k") != r {
		if time.Now().After(deadline) {
			t.Fatalf("replica %s not master of k within 20s", r.Addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := r.Do("GET", "k"); got != "v" {
		t.Fatalf("GET k on the promoted replica = %q, want v", got)
	}
}
