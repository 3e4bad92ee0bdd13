package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edge-gw/edge/internal/edgetest"
)

// clusterConfig is one node of a binary cluster test: a user blacklist and a
// scope = "cluster" limit of 300r/s, burst 30, whose RateLimit-Limit header shows
// the burst this node enforces (30 / live nodes).
func clusterConfig(t *testing.T, path, cluster string) {
	t.Helper()
	src := fmt.Sprintf(`
listen = "127.0.0.1:0"
state_dir = "state"
admin {
  listen = "127.0.0.1:0"
  token  = env("TEST_ADMIN_TOKEN")
}
blacklist {}
route "sale" {
  match { path = "/" }
  respond { status = 200 }
  limit "all" {
    key     = "const:all"
    rate    = "300r/s"
    burst   = 30
    scope   = "cluster"
    headers = true
  }
}
cluster {
  name      = "bin-test"
  bind      = "127.0.0.1:0"
  %s
}
`, cluster)
	edgetest.WriteConfig(t, path, src)
}

type clusterView struct {
	Node, Address string
	Alive         int
	Members       []struct{ Name, State string }
	Stats         map[string]uint64
}

func viewCluster(t *testing.T, e *edgetest.Edge) clusterView {
	t.Helper()
	code, body := get(t, "http://"+e.AdminAddr+"/cluster")
	var v clusterView
	if err := json.Unmarshal([]byte(body), &v); code != 200 || err != nil {
		t.Fatalf("GET /cluster: %d %s", code, body)
	}
	return v
}

func (v clusterView) state(name string) string {
	for _, m := range v.Members {
		if m.Name == name {
			return m.State
		}
	}
	return ""
}

// share returns the RateLimit-Limit header of GET / on e: the burst in force.
func share(t *testing.T, e *edgetest.Edge, user string) (int, string) {
	t.Helper()
	resp, _ := edgetest.Do(t, "GET", "http://"+e.Addr+"/", "", "X-User-Id", user)
	return resp.StatusCode, resp.Header.Get("RateLimit-Limit")
}

func poll(t *testing.T, what string, timeout time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("no %s after %v", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

// TestBinaryCluster runs three edge processes on loopback: they see each other,
// share a ban, split a cluster limit, drop a killed node and redistribute its
// share, and see a SIGTERM as a graceful leave.
func TestBinaryCluster(t *testing.T) {
	env := "TEST_ADMIN_TOKEN=" + testToken
	cfgs := make([]string, 3)
	for i := range cfgs {
		cfgs[i] = filepath.Join(t.TempDir(), "edge.hcl")
	}
	clusterConfig(t, cfgs[0], `node_name = "n0"`)
	n0 := edgetest.Start(t, cfgs[0], env)
	seed := viewCluster(t, n0).Address
	nodes := []*edgetest.Edge{n0}
	for i := 1; i < 3; i++ {
		clusterConfig(t, cfgs[i], fmt.Sprintf("node_name = %q\n  join = [%q]", fmt.Sprintf("n%d", i), seed))
		nodes = append(nodes, edgetest.Start(t, cfgs[i], env))
	}
	for i, e := range nodes {
		poll(t, fmt.Sprintf("3 alive on n%d", i), 10*time.Second, func() bool { return viewCluster(t, e).Alive == 3 })
		poll(t, fmt.Sprintf("split in 3 on n%d", i), 5*time.Second, func() bool { _, l := share(t, e, "u"); return l == "10" })
	}

	// A ban on n0 blocks on n1 and n2.
	if code, body := n0.Admin(t, testToken, "POST", "/blacklist", `{"user":"mallory","ttl":"1m"}`); code != 200 {
		t.Fatalf("ban: %d %s", code, body)
	}
	for i, e := range nodes[1:] {
		d := poll(t, fmt.Sprintf("ban on n%d", i+1), 10*time.Second, func() bool { c, _ := share(t, e, "mallory"); return c == 403 })
		t.Logf("ban on n0 blocks on n%d after %v", i+1, d.Round(time.Millisecond))
	}

	// Gossip cost with LAN defaults, 3 nodes, one ban in flight at most: a
	// measurement window, logged for docs/cluster.md.
	before := make([]clusterView, 3)
	for i, e := range nodes {
		before[i] = viewCluster(t, e)
	}
	const window = 2 * time.Second
	time.Sleep(window)
	for i, e := range nodes {
		after := viewCluster(t, e)
		t.Logf("n%d gossip over %v: %.0f UDP B/s, %.1f packets/s, %d TCP B, %d broadcasts", i, window,
			float64(after.Stats["udp_bytes_sent"]-before[i].Stats["udp_bytes_sent"])/window.Seconds(),
			float64(after.Stats["udp_packets_sent"]-before[i].Stats["udp_packets_sent"])/window.Seconds(),
			after.Stats["tcp_bytes_sent"]-before[i].Stats["tcp_bytes_sent"],
			after.Stats["broadcasts"]-before[i].Stats["broadcasts"])
	}

	// Reload: a changed join list is applied, a changed cluster name refused.
	clusterConfig(t, cfgs[1], fmt.Sprintf("node_name = \"n1\"\n  join = [%q, %q]", seed, viewCluster(t, nodes[2]).Address))
	if code, body := adminPost(t, nodes[1], "/reload", testToken); code != 200 {
		t.Errorf("reload with a new join list: %d %v", code, body)
	}
	src, _ := os.ReadFile(cfgs[1])
	os.WriteFile(cfgs[1], []byte(strings.Replace(string(src), `"bin-test"`, `"other"`, 1)), 0o644)
	if code, body := adminPost(t, nodes[1], "/reload", testToken); code != 400 || !strings.Contains(fmt.Sprint(body["error"]), "cluster name changed") {
		t.Errorf("reload with a new cluster name: %d %v, want 400 naming it", code, body)
	}

	// n2 is killed: n0 and n1 declare it dead and take its share.
	killed := time.Now()
	nodes[2].Cmd.Process.Kill()
	for i, e := range nodes[:2] {
		poll(t, fmt.Sprintf("n2 dead on n%d", i), 20*time.Second, func() bool { return viewCluster(t, e).state("n2") == "dead" })
		poll(t, fmt.Sprintf("split in 2 on n%d", i), 5*time.Second, func() bool { _, l := share(t, e, "u"); return l == "15" })
	}
	t.Logf("killed node dropped and its share redistributed after %v", time.Since(killed).Round(time.Millisecond))

	// n1 stops with SIGTERM: a graceful leave, seen at once.
	stopped := time.Now()
	nodes[1].Signal(t, syscall.SIGTERM)
	if code := nodes[1].Wait(t, 15*time.Second); code != 0 {
		t.Errorf("n1 exit code %d\n%s", code, nodes[1].Log())
	}
	if !strings.Contains(nodes[1].Log(), "cluster: left") {
		t.Errorf("n1 did not log its leave:\n%s", nodes[1].Log())
	}
	poll(t, "n1 left on n0", 5*time.Second, func() bool { return viewCluster(t, n0).state("n1") == "left" })
	poll(t, "whole rate on n0", 5*time.Second, func() bool { _, l := share(t, n0, "u"); return l == "30" })
	t.Logf("SIGTERM to whole rate on the last node: %v", time.Since(stopped).Round(time.Millisecond))
	for _, want := range []string{"cluster: member joined", "cluster: member failed", "cluster: member left", "cluster: limits re-split"} {
		if !strings.Contains(n0.Log(), want) {
			t.Errorf("n0 log lacks %q", want)
		}
	}
	_, metrics := get(t, "http://"+n0.AdminAddr+"/metrics")
	for _, want := range []string{`edge_cluster_members{state="alive"} 1`, `edge_cluster_members{state="dead"} 1`, `edge_cluster_members{state="left"} 1`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s:\n%s", want, grep(metrics, "edge_cluster"))
		}
	}
}
