package proxy

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/edge-gw/edge/internal/edgetest"
	"github.com/edge-gw/edge/internal/redistest"
)

// The built binary, three processes sharing one Redis that is down when they start:
// they start anyway and answer 503 store_unavailable with Retry-After, connect when
// Redis comes up, and then sell exactly the stock to 5000 distinct buyers spread over
// the three.
func TestSeckillBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs cmd/edge")
	}
	srv := redistest.Start(t)
	srv.Kill()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "edge.hcl")
	src := fmt.Sprintf(`
listen          = "127.0.0.1:0"
trusted_proxies = ["127.0.0.1/32"]
state_dir       = "state"
admin {
  listen = "127.0.0.1:0"
  token  = env("TEST_ADMIN_TOKEN")
}
seckill {
  store   = "redis"
  redis {
    addrs = [%q]
  }
  secret  = env("TEST_SECKILL_SECRET")
  timeout = "5s"
}
route "seckill" {
  match {
    path    = "/seckill/"
    methods = ["POST"]
  }
  seckill = true
}
`, srv.Addr)
	edgetest.WriteConfig(t, cfg, src)
	env := []string{"TEST_ADMIN_TOKEN=" + testAdminToken, "TEST_SECKILL_SECRET=" + testSeckillSecret}
	var edges []*edgetest.Edge
	var addrs []string
	for i := 0; i < 3; i++ {
		e := edgetest.Start(t, cfg, env...)
		edges = append(edges, e)
		addrs = append(addrs, e.Addr)
	}
	for i, e := range edges {
		if code, g := issue(t, e.Addr, "hot", "early"); code != 503 || g.Error != "store_unavailable" {
			t.Errorf("edge %d with redis down: %d %+v, want 503 store_unavailable", i, code, g)
		}
	}
	edges[0].WaitLog(t, "redis unavailable; retrying in the background", 5*time.Second)

	srv.Restart()
	for i, e := range edges {
		eventually(t, fmt.Sprintf("edge %d connected", i), func() bool {
			code, _ := e.Admin(t, testAdminToken, "GET", "/seckill/items/probe", "")
			return code == 404 // no_sale: the store answered
		})
	}
	if code, body := edges[0].Admin(t, testAdminToken, "PUT", "/seckill/items/hot", `{"stock":100}`); code != 200 {
		t.Fatalf("set stock: %d %s", code, body)
	}
	codes, tokens := flood(t, addrs, "hot", distinctUsers("buyer", 5000))
	if codes[200] != 100 || codes[410] != 4900 || len(codes) != 2 || len(tokens) != 100 {
		t.Errorf("answers %v and %d tokens, want 100×200 and 4900×410", codes, len(tokens))
	}
	if code, body := edges[2].Admin(t, testAdminToken, "GET", "/seckill/items/hot", ""); code != 200 || body != `{"issued":100,"item":"hot","stock":0}`+"\n" {
		t.Errorf("item: %d %s", code, body)
	}
}
