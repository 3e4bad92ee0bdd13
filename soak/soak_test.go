package soak

import (
	"flag"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edge-gw/edge/internal/edgetest"
	"github.com/edge-gw/edge/internal/origintest"
	"github.com/edge-gw/edge/internal/redistest"
	"github.com/valyala/fasthttp"
)

var (
	soakDuration = flag.Duration("soak.d", 45*time.Second, "how long TestSoak sends its workload (make soak SOAK=30m)")
	soakEvery    = flag.Duration("soak.every", 0, "sample interval (default: the duration / 20, between 1s and 5s)")
	soakReload   = flag.Duration("soak.reload", 0, "config reload interval (default: a minute, or a quarter of the duration when shorter)")
	soakOut      = flag.String("soak.out", "", "write the report as soak-<date>.md and .json into this directory")
)

const token = "soak-admin-token"

// soakConfig is the soak's edge config; v changes with each reload so that every
// reload really swaps a new snapshot (the user limit's rate and the room's admit
// rate alternate).
func soakConfig(catalog string, cells [3]string, redis string, v int) string {
	return fmt.Sprintf(`
listen           = "127.0.0.1:0"
shutdown_timeout = "5s"
state_dir        = "state"
cache_size       = "32MB"
admin {
  listen = "127.0.0.1:0"
  token  = env("SOAK_ADMIN_TOKEN")
}
upstream "catalog" {
  servers = [%q]
  timeout = "5s"
}
cells "shop" {
  key         = "header:X-User-Id"
  missing_key = "reject"
  cell "c1" { servers = [%q] }
  cell "c2" { servers = [%q] }
  cell "c3" { servers = [%q] }
}
seckill {
  store     = "redis"
  redis { addrs = [%q] }
  secret    = "soak-seckill-secret-0123456789abcdef"
  timeout   = "2s" # not 200ms: Redis shares two loaded cores with everything else here
  token_ttl = "1m"
  user_key  = "header:X-User-Id"
  item_key  = "path:2"
}
blacklist {
  user_key = "header:X-User-Id"
}
route "detail" {
  match {
    path    = "/item/"
    methods = ["GET", "HEAD"]
  }
  upstream = "catalog"
  cache {
    ttl   = "5s"
    stale = "30s"
  }
  limit "user" {
    key   = "header:X-User-Id"
    rate  = "%dr/m"
    burst = 2
  }
}
route "seckill" {
  match {
    path    = "/seckill/"
    methods = ["POST"]
  }
  seckill = true
}
route "order" {
  match {
    path    = "/order/"
    methods = ["POST"]
  }
  cells         = "shop"
  require_token = true
  idempotency {
    header = "Idempotency-Key"
    ttl    = "10s"
  }
}
route "sale" {
  match { path = "/sale/" }
  upstream = "catalog"
}
waiting_room "sale" {
  routes     = ["sale"]
  key        = "header:X-User-Id"
  admit_rate = "%dr/s"
  session    = "10s"
  max_per_ip = 0
}
`, catalog, cells[0], cells[1], cells[2], redis, 6+2*(v%2), 4+2*(v%2))
}

// shop is the soak's origin: catalog pages of 16 KB, order confirmations, the sale page.
func shop(t testing.TB) *origintest.Origin {
	page := strings.Repeat("x", 16<<10)
	return origintest.Start(t, func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("application/json")
		switch p := string(ctx.Path()); {
		case strings.HasPrefix(p, "/item/"):
			fmt.Fprintf(ctx, `{"item":%q,"description":%q}`, p[len("/item/"):], page)
		case strings.HasPrefix(p, "/order/"):
			fmt.Fprintf(ctx, `{"order":"placed","token":%q}`, ctx.Request.Header.Peek("X-Seckill-Token"))
		default:
			ctx.SetBodyString(`{"page":"sale"}`)
		}
	})
}

// TestSoak runs the mixed sale workload (Workload) against a real edge binary with a
// real Redis and real origins, reloading the config on an interval, samples edge's
// RSS, goroutines, open descriptors and latency, and asserts that the samples are
// flat over the second half (Trends) and that edge answered as a user expects.
// `make soak SOAK=30m` runs it long and writes the report to bench/results.
func TestSoak(t *testing.T) {
	d := *soakDuration
	every := *soakEvery
	if every == 0 {
		every = min(max(d/20, time.Second), 5*time.Second)
	}
	reloadEvery := *soakReload
	if reloadEvery == 0 {
		reloadEvery = min(time.Minute, d/4)
	}
	rd := redistest.Start(t)
	catalog := shop(t)
	var cells [3]string
	for i := range cells {
		cells[i] = shop(t).Addr
	}
	cfg := filepath.Join(t.TempDir(), "edge.hcl")
	edgetest.WriteConfig(t, cfg, soakConfig(catalog.Addr, cells, rd.Addr, 0))
	e := edgetest.Start(t, cfg, "SOAK_ADMIN_TOKEN="+token)
	pid := e.Cmd.Process.Pid

	w := &Workload{
		Addr: e.Addr, AdminAddr: e.AdminAddr, Token: token,
		BrowseRate: 150, RushRate: 20, RoomRate: 5,
		Users: 1000, Items: 500, Stock: 300,
		RestockEvery: 30 * time.Second, BanEvery: 5 * time.Second,
	}
	rep := &Report{
		Started:  time.Now(),
		Duration: d.String(),
		Workload: fmt.Sprintf("browse %.0f/s over %d items and %d users (cached, limited per user), token rush %.0f/s by new users over 5 items restocked to %d every %v, an order per token through 3 cells, a ban every %v, %.0f new waiting-room users/s, a config reload every %v; samples every %v",
			w.BrowseRate, w.Items, w.Users, w.RushRate, w.Stock, w.RestockEvery, w.BanEvery, w.RoomRate, reloadEvery, every),
	}
	take := func(at time.Duration) {
		s := Sample{At: at.Seconds()}
		var err error
		if s.RSSKB, err = RSS(pid); err != nil {
			t.Fatal(err)
		}
		if s.FDs, err = FDs(pid); err != nil {
			t.Fatal(err)
		}
		g, err := Metric(e.AdminAddr, "go_goroutines")
		if err != nil {
			t.Fatal(err)
		}
		s.Goroutines = int(g)
		win := w.Take()
		s.Requests, s.Errors, s.P50, s.P99, s.Max = win.Requests, win.Errors, win.P50, win.P99, win.Max
		rep.Requests += s.Requests
		rep.Errors += s.Errors
		rep.Samples = append(rep.Samples, s)
		if testing.Verbose() {
			t.Logf("t=%4.0fs rss=%6.1fMiB goroutines=%4d fds=%4d req=%6d err=%d p50=%.2fms p99=%.2fms",
				s.At, float64(s.RSSKB)/1024, s.Goroutines, s.FDs, s.Requests, s.Errors, s.P50, s.P99)
		}
	}

	start := time.Now()
	take(0) // edge just started, before the workload
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { w.Run(stop); close(done) }()
	sample, reload := time.NewTicker(every), time.NewTicker(reloadEvery)
	end := time.After(d)
loop:
	for {
		select {
		case <-sample.C:
			take(time.Since(start))
		case <-reload.C:
			rep.Reloads++
			edgetest.WriteConfig(t, cfg, soakConfig(catalog.Addr, cells, rd.Addr, rep.Reloads))
			w.Reload()
		case <-end:
			break loop
		}
	}
	sample.Stop()
	reload.Stop()
	close(stop)
	<-done
	take(time.Since(start))
	rep.Trends = Trends(rep.Samples)
	rep.Counts = w.Counts()

	if *soakOut != "" {
		path, err := rep.Write(*soakOut)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("report: %s", path)
	}
	for _, tr := range rep.Trends {
		t.Log(tr)
		if !tr.Flat {
			t.Errorf("edge's %s grows: %s", tr.Name, tr)
		}
	}
	t.Logf("answers: %s", strings.Join(rep.Counts, ", "))
	// Every part of the workload must have been seen working, not just sent.
	counts := strings.Join(rep.Counts, "\n")
	for _, want := range []string{"browse 200", "browse 429", "rush 200", "order 200", "banned 403", "room 200", "reload 200", "restock 200", "ban 200"} {
		if !strings.Contains(counts, want+":") {
			t.Errorf("the workload never saw %q; answers:\n%s", want, counts)
		}
	}
	// A few unexpected answers are allowed on a loaded machine (a 10 s client
	// timeout), a steady stream is not.
	if rep.Errors*1000 > rep.Requests {
		t.Errorf("%d unexpected answers in %d requests (over 0.1%%); last: %s", rep.Errors, rep.Requests, w.LastError())
	}
}
