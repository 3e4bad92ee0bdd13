package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/edge-gw/edge/internal/edgetest"
	"github.com/edge-gw/edge/internal/origintest"
	"github.com/edge-gw/edge/internal/testcert"
	"github.com/valyala/fasthttp"
)

// statusConfig is an edge with something in every part of the status page: cached,
// limited, cells, seckill and waiting-room routes, an upstream with a dead server, a
// TLS listener, an L4 stream and a one-node cluster.
func statusConfig(t *testing.T, originAddr string) string {
	leaf := testcert.NewCA(t).Leaf(t, testcert.Opts{Names: []string{"shop.example"}, NotAfter: time.Now().Add(90 * 24 * time.Hour)})
	cfg := filepath.Join(t.TempDir(), "edge.hcl")
	edgetest.WriteConfig(t, cfg, fmt.Sprintf(`
listen    = "127.0.0.1:0"
state_dir = "state"
admin {
  listen = "127.0.0.1:0"
  token  = env("TEST_ADMIN_TOKEN")
}
listener "https" {
  address = "127.0.0.1:0"
  tls {
    certificate {
      cert_file = %q
      key_file  = %q
    }
  }
}
blacklist {}
upstream "catalog" {
  servers = [%q, %q]
  health_check {
    path     = "/"
    interval = "500ms"
  }
  breaker {}
}
cells "shop" {
  key         = "header:X-User-Id"
  missing_key = "any"
  cell "c1" { servers = [%[3]q] }
  cell "c2" { servers = [%[3]q] }
}
seckill {
  store  = "memory"
  secret = "0123456789abcdef0123456789abcdef-status"
}
route "item" {
  match { path = "/item/" }
  upstream = "catalog"
  cache { ttl = "1s" }
}
route "search" {
  match { path = "/search" }
  upstream = "catalog"
  limit "ip" {
    key   = "ip"
    rate  = "20r/s"
    burst = 5
  }
}
route "seckill" {
  match {
    path    = "/seckill/"
    methods = ["POST"]
  }
  seckill = true
}
route "sale" {
  match { path = "/sale/" }
  upstream = "catalog"
}
route "cart" {
  match { path = "/cart" }
  cells = "shop"
}
waiting_room "sale" {
  routes     = ["sale"]
  admit_rate = "2r/s"
  session    = "1m"
  store      = "memory"
  max_per_ip = 0
  key        = "header:X-User-Id"
  secret     = "0123456789abcdef0123456789abcdef-status-room"
}
stream "pg" {
  listen   = "127.0.0.1:0"
  upstream = "catalog"
}
cluster {
  name      = "shop"
  node_name = "edge-1"
  bind      = "127.0.0.1:0"
}
`, leaf.CertFile, leaf.KeyFile, originAddr, origintest.FreeAddr(t)))
	return cfg
}

// statusLoad sends a mix of requests to edge at addr until stop is closed: cache hits
// and misses, limited searches, cells, seckill tokens and waiting-room arrivals.
func statusLoad(addr string, stop <-chan struct{}, sent *atomic.Int64) {
	c := &fasthttp.Client{MaxConnsPerHost: 64}
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		req.Reset()
		req.Header.SetMethod("GET")
		user := "u" + strconv.Itoa(i%5000)
		req.Header.Set("X-User-Id", user)
		switch i % 10 {
		case 0, 1, 2, 3:
			req.SetRequestURI("http://" + addr + "/item/" + strconv.Itoa(i%40))
		case 4:
			req.SetRequestURI("http://" + addr + "/search?q=" + strconv.Itoa(i))
		case 5, 6:
			req.SetRequestURI("http://" + addr + "/cart")
		case 7:
			req.Header.SetMethod("POST")
			req.Header.Set("X-User-Id", "s"+strconv.Itoa(i)) // a new buyer each time: units go
			req.SetRequestURI("http://" + addr + "/seckill/phone/token")
		case 8:
			req.SetRequestURI("http://" + addr + "/sale/now")
		case 9:
			req.SetRequestURI("http://" + addr + "/nowhere")
		}
		if c.DoTimeout(req, resp, 5*time.Second) == nil {
			sent.Add(1)
		}
	}
}

// The status page in a real headless Chromium: it loads without console errors or
// exceptions, shows a row per route and per upstream, and its request counter moves
// by itself while load runs; neither the page nor its JSON shows the admin token.
// With EDGE_STATUS_SCREENSHOT=path it saves a screenshot there (docs/status.png).
func TestBinaryStatusPageInBrowser(t *testing.T) {
	o := origintest.Start(t, func(ctx *fasthttp.RequestCtx) {
		ctx.Response.Header.Set("Cache-Control", "max-age=1")
		fmt.Fprintf(ctx, "origin %s", ctx.Path())
	})
	e := edgetest.Start(t, statusConfig(t, o.Addr), "TEST_ADMIN_TOKEN="+testToken)
	if code, body := e.Admin(t, testToken, "PUT", "/seckill/items/phone", `{"stock":1000000}`); code != 200 {
		t.Fatalf("start the sale: %d %s", code, body)
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var sent atomic.Int64
	for range 2 {
		wg.Add(1)
		go func() { defer wg.Done(); statusLoad(e.Addr, stop, &sent) }()
	}
	defer wg.Wait()
	defer close(stop)

	// The JSON: no token, and the parts the config has.
	code, raw := get(t, "http://"+e.AdminAddr+"/status.json")
	if code != 200 || strings.Contains(raw, testToken) {
		t.Fatalf("GET /status.json: %d, token shown: %v\n%s", code, strings.Contains(raw, testToken), raw)
	}
	var st struct {
		Routes  []struct{ Name string } `json:"routes"`
		Seckill *struct {
			Items []struct{ Item string } `json:"items"`
		} `json:"seckill"`
		Cluster *struct {
			Members []struct{ Name string } `json:"members"`
		} `json:"cluster"`
		Listeners []struct{ Name string } `json:"listeners"`
		Streams   []struct{ Name string } `json:"streams"`
	}
	if err := json.Unmarshal([]byte(raw), &st); err != nil {
		t.Fatalf("GET /status.json: %v\n%s", err, raw)
	}
	if len(st.Routes) < 5 || st.Seckill == nil || len(st.Seckill.Items) != 1 || st.Seckill.Items[0].Item != "phone" ||
		st.Cluster == nil || len(st.Cluster.Members) != 1 || st.Cluster.Members[0].Name != "edge-1" ||
		len(st.Listeners) != 2 || len(st.Streams) != 1 {
		t.Errorf("status.json lacks parts of the config: %s", raw)
	}

	ctx, problems := headless(t)

	const total = `#routes tr[data-route="item"] td.total`
	if err := chromedp.Do(ctx,
		chromedp.EmulateViewport(1280, 900),
		chromedp.Navigate("http://"+e.AdminAddr+"/"),
		chromedp.WaitVisible(total)); err != nil {
		t.Fatalf("status page: %v", err)
	}
	for _, sel := range []string{`tr[data-route="search"]`, `tr[data-route="cart"]`, `tr[data-upstream="catalog"]`,
		`tr[data-upstream="shop/c1"]`, `tr[data-item="phone"]`, `tr[data-room="sale"]`, `tr[data-member="edge-1"]`,
		`tr[data-listener="https"]`, `tr[data-stream="pg"]`} {
		if err := chromedp.Do(ctx, chromedp.WaitVisible(sel)); err != nil {
			t.Errorf("no row %s: %v", sel, err)
		}
	}

	// The counter moves under load without a reload: read it, a second later read again.
	first, err := chromedp.Run(ctx, chromedp.Text(total))
	if err != nil {
		t.Fatal(err)
	}
	sentBefore := sent.Load()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](
		fmt.Sprintf(`document.querySelector(%q).textContent !== %q`, total, first),
		chromedp.WithPollingTimeout(10*time.Second))); err != nil {
		t.Errorf("the item route's total stayed %q while load ran (%d requests sent meanwhile): %v", first, sent.Load()-sentBefore, err)
	}
	second, _ := chromedp.Run(ctx, chromedp.Text(total))
	// Its rate is a number above zero once two polls are in.
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](
		`parseFloat(document.querySelector('#routes tr[data-route="item"] td.rps').textContent) > 0`,
		chromedp.WithPollingTimeout(10*time.Second))); err != nil {
		rps, _ := chromedp.Run(ctx, chromedp.Text(`#routes tr[data-route="item"] td.rps`))
		t.Errorf("req/s of the item route shows %q under load: %v", rps, err)
	}
	live, _ := chromedp.Run(ctx, chromedp.Text("#conn"))
	t.Logf("item route total %q then %q; connection %q; %d requests sent", first, second, live, sent.Load())
	if !strings.HasPrefix(live, "live") {
		t.Errorf("connection indicator %q, want live", live)
	}

	// On a phone the page fits the screen's width: wide tables scroll inside their box.
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2))); err != nil {
		t.Fatal(err)
	}
	if fits, err := chromedp.Run(ctx, chromedp.Evaluate[bool](
		`document.documentElement.scrollWidth <= window.innerWidth`)); err != nil || !fits {
		w, _ := chromedp.Run(ctx, chromedp.Evaluate[float64](`document.documentElement.scrollWidth`))
		t.Errorf("at 390px wide the page is %vpx wide (%v)", w, err)
	}
	if path := os.Getenv("EDGE_STATUS_SCREENSHOT"); path != "" {
		phone := strings.TrimSuffix(path, ".png") + "-phone.png"
		png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
		if err != nil {
			t.Fatalf("screenshot: %v", err)
		}
		if err := os.WriteFile(phone, png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 900)); err != nil {
		t.Fatal(err)
	}

	html, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.documentElement.outerHTML`))
	if err != nil || strings.Contains(html, testToken) {
		t.Errorf("page shows the admin token (%v)", err)
	}
	if _, body := get(t, "http://"+e.AdminAddr+"/"); strings.Contains(body, testToken) {
		t.Error("GET / carries the admin token")
	}

	if path := os.Getenv("EDGE_STATUS_SCREENSHOT"); path != "" {
		// Let the percentiles and rates settle over a full window first.
		time.Sleep(6 * time.Second)
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // 100: PNG
		if err != nil {
			t.Fatalf("screenshot: %v", err)
		}
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot saved to %s", path)
	}

	if p := problems(); len(p) > 0 {
		t.Errorf("the page logged errors: %v", p)
	}
}
