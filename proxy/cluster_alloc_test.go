//go:build !race

package proxy

import (
	"testing"
	"time"

	"github.com/edge-gw/edge/cluster"
)

// A clustered edge allocates nothing per request: a ban and a sold-out flag
// received from a peer are answered from local state, and a split cluster-scope
// limit decides like a local one.
func TestClusterZeroAllocs(t *testing.T) {
	src := blockConfig(t)(0) + `
cluster {}
route "sale" {
  match { path = "/sale" }
  respond { status = 200 }
  limit "all" {
    key   = "const:all"
    rate  = "1000000r/s"
    burst = 1000000
    scope = "cluster"
  }
}
`
	px := benchProxy(t, src)
	c, err := cluster.New(clusterTestOptions("alloc", nil))
	if err != nil {
		t.Fatal(err)
	}
	detach := px.SetCluster(c)
	defer func() { detach(); c.Stop() }()
	px.applyBan(cluster.Entry{Kind: kindBan, Key: "ip:203.0.113.7", Value: []byte("pscraper"), Version: 1 << 16,
		Expires: time.Now().Add(time.Hour)})
	f := func(name string, status int, uri string, headers ...string) {
		t.Helper()
		if n := allocs(t, px, handlerCtx("GET", uri, headers...), status); n != 0 {
			t.Errorf("%s: %v allocs per request, want 0", name, n)
		}
	}
	f("banned by a peer", 403, "/", "X-Forwarded-For", "203.0.113.7")
	f("passing", 200, "/", "X-Forwarded-For", "203.0.113.8")
	f("cluster-scope limit", 200, "/sale")
}
