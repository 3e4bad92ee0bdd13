package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/edge-gw/edge/internal/edgetest"
	"github.com/edge-gw/edge/internal/origintest"
	"github.com/edge-gw/edge/internal/redistest"
	"github.com/valyala/fasthttp"
)

// The waiting page in a real headless Chromium: a browser that arrives while the room
// is paused sees its place in line, with no console error; when the room lets it in,
// the page moves by itself to the sale page.
func TestBinaryWaitingPageInBrowser(t *testing.T) {
	o := origintest.Start(t, func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("text/html; charset=utf-8")
		fmt.Fprint(ctx, "<!doctype html><title>SALE</title><h1 id=sale>The sale page</h1>")
	})
	cfg := filepath.Join(t.TempDir(), "edge.hcl")
	edgetest.WriteConfig(t, cfg, fmt.Sprintf(`
listen = "127.0.0.1:0"
admin {
  listen = "127.0.0.1:0"
  token  = env("TEST_ADMIN_TOKEN")
}
upstream "shop" { servers = [%q] }
route "sale" {
  match { path = "/sale/" }
  upstream = "shop"
}
waiting_room "sale" {
  routes     = ["sale"]
  admit_rate = "50r/s"
  session    = "1m"
  store      = "memory"
  secret     = "0123456789abcdef0123456789abcdef-browser"
}
`, o.Addr))
	e := edgetest.Start(t, cfg, "TEST_ADMIN_TOKEN="+testToken)
	if code, body := e.Admin(t, testToken, "POST", "/waiting-rooms/sale", `{"paused":true}`); code != 200 {
		t.Fatalf("pause: %d %s", code, body)
	}

	ctx, problems := headless(t)

	if err := chromedp.Do(ctx, chromedp.Navigate("http://"+e.Addr+"/sale/item/1"), chromedp.WaitVisible("#position")); err != nil {
		t.Fatalf("waiting page: %v", err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`document.getElementById("position").textContent === "1"`,
		chromedp.WithPollingTimeout(15*time.Second))); err != nil {
		t.Fatalf("the page never showed place 1: %v", err)
	}
	ahead, err1 := chromedp.Run(ctx, chromedp.Text("#ahead"))
	status, err2 := chromedp.Run(ctx, chromedp.Text("#status"))
	if err1 != nil || err2 != nil || ahead != "0" || !strings.Contains(status, "Next check") {
		t.Errorf("waiting page shows ahead %q, status %q (%v, %v)", ahead, status, err1, err2)
	}

	if code, body := e.Admin(t, testToken, "POST", "/waiting-rooms/sale", `{"paused":false}`); code != 200 {
		t.Fatalf("unpause: %d %s", code, body)
	}
	if err := chromedp.Do(ctx, chromedp.WaitVisible("#sale")); err != nil {
		t.Fatalf("after admission the page did not move to the sale page: %v", err)
	}
	if title, err := chromedp.Run(ctx, chromedp.Title()); err != nil || title != "SALE" {
		t.Errorf("title %q, %v; want the sale page's", title, err)
	}
	if p := problems(); len(p) > 0 {
		t.Errorf("the page logged errors: %v", p)
	}
}

// Three edge binaries sharing one Redis are one waiting room: users who join through
// different nodes get one line in arrival order, a user keeps the place on any node, and
// when a node lets a user in it lets in everyone who joined before.
func TestBinaryWaitingRoomAcrossNodes(t *testing.T) {
	srv := redistest.Start(t)
	o := origintest.Start(t, func(ctx *fasthttp.RequestCtx) { fmt.Fprintf(ctx, "origin %s", ctx.Path()) })
	var nodes []*edgetest.Edge
	for range 3 {
		cfg := filepath.Join(t.TempDir(), "edge.hcl")
		edgetest.WriteConfig(t, cfg, fmt.Sprintf(`
listen = "127.0.0.1:0"
admin {
  listen = "127.0.0.1:0"
  token  = env("TEST_ADMIN_TOKEN")
}
upstream "shop" { servers = [%q] }
seckill {
  store  = "redis"
  redis { addrs = [%q] }
  secret = "0123456789abcdef0123456789abcdef-nodes"
}
route "sale" {
  match { path = "/sale/" }
  upstream = "shop"
}
waiting_room "sale" {
  routes     = ["sale"]
  key        = "header:X-User-Id"
  admit_rate = "20r/s"
  session    = "1m"
  max_per_ip = 0
}
`, o.Addr, srv.Addr))
		nodes = append(nodes, edgetest.Start(t, cfg, "TEST_ADMIN_TOKEN="+testToken))
	}
	if code, body := nodes[0].Admin(t, testToken, "POST", "/waiting-rooms/sale", `{"paused":true}`); code != 200 {
		t.Fatalf("pause: %d %s", code, body)
	}
	waitUntil(t, "every node sees the pause", func() bool {
		for _, n := range nodes {
			if _, body := n.Admin(t, testToken, "GET", "/waiting-rooms/sale", ""); !strings.Contains(body, `"paused":true`) {
				return false
			}
		}
		return true
	})
	ask := func(n *edgetest.Edge, user string) (int, waitingBody) {
		t.Helper()
		resp, body := edgetest.Do(t, "GET", "http://"+n.Addr+"/sale/item/1", "", "X-User-Id", user)
		var w waitingBody
		if resp.StatusCode == 202 {
			if err := json.Unmarshal([]byte(body), &w); err != nil {
				t.Fatalf("%s: %q", user, body)
			}
		}
		return resp.StatusCode, w
	}
	const users = 30
	for i := range users { // user i joins through node i%3
		user := fmt.Sprintf("u%02d", i)
		if code, w := ask(nodes[i%3], user); code != 202 || w.Position != int64(i+1) {
			t.Fatalf("%s joining through node %d: %d position %d, want 202 at %d", user, i%3, code, w.Position, i+1)
		}
	}
	// The place is the same on every node.
	for i := range users {
		user := fmt.Sprintf("u%02d", i)
		n := nodes[(i+1)%3]
		waitUntil(t, user+"'s place seen on another node", func() bool {
			code, w := ask(n, user)
			return code == 202 && w.Position == int64(i+1)
		})
	}
	if code, body := nodes[1].Admin(t, testToken, "POST", "/waiting-rooms/sale", `{"paused":false}`); code != 200 {
		t.Fatalf("unpause: %d %s", code, body)
	}
	// As users are let in: whenever a node admits one, it admits every earlier one too.
	admitted := make([]bool, users)
	start := time.Now()
	waitUntil(t, "everyone admitted", func() bool {
		all := true
		for i := range users {
			if admitted[i] {
				continue
			}
			n := nodes[i%3]
			if code, _ := ask(n, fmt.Sprintf("u%02d", i)); code == 200 {
				admitted[i] = true
				for j := range i {
					if code, w := ask(n, fmt.Sprintf("u%02d", j)); code != 200 {
						t.Errorf("node %d admits u%02d but not u%02d, who joined before (%d, position %d)", i%3, i, j, code, w.Position)
					}
				}
			} else {
				all = false
			}
		}
		return all
	})
	took := time.Since(start)
	t.Logf("%d users admitted across 3 nodes in %v at admit_rate 20r/s", users, took.Round(time.Millisecond))
	if took < 1*time.Second {
		t.Errorf("%d users admitted in %v: faster than admit_rate 20r/s allows", users, took)
	}
}

// waitingBody is the 202 answer of a waiting room.
type waitingBody struct {
	Waiting  bool  `json:"waiting"`
	Position int64 `json:"position"`
	Ahead    int64 `json:"ahead"`
}
