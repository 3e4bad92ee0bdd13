package config

import (
	"fmt"
	"os"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// WaitingRoom is a waiting_room "NAME" block: a fair queue in front of the routes of a
// sale, admitting users at AdmitRate (docs/waiting-room.md).
type WaitingRoom struct {
	Name   string
	Routes []string // routes: the routes whose requests wait here first; required, each in one room at most
	// Key (key) identifies a user: one place per key. Empty (default): a signed place
	// cookie identifies the user instead.
	Key       Key
	AdmitRate Rate          // admit_rate: users let in per second, across all nodes; required
	MaxActive int           // max_active: admitted users active at once; 0 (default): no cap
	Session   time.Duration // session: an admitted user stays in this long after the last request, and a place nobody polls this long is given up; default 5m
	Store     string        // store: "redis" (the seckill block's Redis) or "memory" (one node); default "redis" when the seckill block has a Redis, else "memory"
	OpensAt   time.Time     // opens_at: RFC 3339; arrivals before it are drawn in random order at it; zero: open
	// Page (page) is the HTML shown to browsers while they wait, read from a file (relative
	// to the config file) when the config is loaded; empty: the embedded default page.
	Page     []byte
	PageFile string
	MaxPerIP int  // max_per_ip (edge): places one client address may hold; default 20; 0: no bound
	FailOpen bool // fail_open (edge): the store unreachable lets requests through; default false (503)
	// Secret (secret, edge) signs the admission and place cookies; at least 32 bytes, the
	// same on every node. Default: the seckill block's secret.
	Secret   string
	Adaptive *AdaptiveRate // adaptive block (edge); nil: the rate is fixed
	Pos      hcl.Range
}

// AdaptiveRate is the adaptive block of a waiting room: the admission rate backs off
// while the protected routes' upstreams are slow or failing and recovers when they are
// healthy, between MinRate and the room's admit_rate.
type AdaptiveRate struct {
	MinRate       Rate          // min_rate: default a tenth of admit_rate
	LatencyTarget time.Duration // latency_target: a p90 of protected requests above it backs off; default 500ms
	MaxErrorRatio float64       // max_error_ratio: a share of 5xx (or an open breaker) above it backs off; default 0.05
}

func decodeWaitingRoom(top *body, blk *hclsyntax.Block) *WaitingRoom {
	w := &WaitingRoom{Name: blk.Labels[0], Pos: blk.DefRange(), Session: 5 * time.Minute, MaxPerIP: 20}
	what := fmt.Sprintf("waiting_room %q", w.Name)
	b := top.child(blk, what)
	if rs, ok := b.strList("routes", &w.Routes); ok && len(w.Routes) == 0 {
		b.ps.add(rs[0], "%s needs at least one route", what)
	} else if !b.has("routes") {
		b.ps.add(blk.DefRange(), "%s needs routes = [\"…\"]", what)
	}
	w.Key = b.key("key", false)
	var rate string
	if r, ok := b.str("admit_rate", &rate); ok {
		var err error
		if w.AdmitRate, err = ParseRate(rate); err != nil {
			b.ps.add(r, "admit_rate: %v", err)
		}
	} else if !b.has("admit_rate") {
		b.ps.add(blk.DefRange(), "%s needs admit_rate = \"…r/s\"", what)
	}
	b.integer("max_active", &w.MaxActive, 0)
	b.duration("session", &w.Session)
	b.oneOf("store", &w.Store, "redis", "memory")
	var opens string
	if r, ok := b.str("opens_at", &opens); ok {
		t, err := time.Parse(time.RFC3339, opens)
		if err != nil {
			b.ps.add(r, "opens_at: %q is not an RFC 3339 time like \"2026-12-12T20:00:00+08:00\"", opens)
		}
		w.OpensAt = t
	}
	if r, ok := b.str("page", &w.PageFile); ok {
		w.PageFile = besideConfig(r.Filename, w.PageFile)
		page, err := os.ReadFile(w.PageFile)
		switch {
		case err != nil:
			b.ps.add(r, "page: %v", err)
		case len(page) > 1<<20:
			b.ps.add(r, "page: %s is %d bytes; the waiting page must be under 1MB", w.PageFile, len(page))
		default:
			w.Page = page
		}
	}
	b.integer("max_per_ip", &w.MaxPerIP, 0)
	b.boolean("fail_open", &w.FailOpen)
	if r, ok := b.str("secret", &w.Secret); ok && len(w.Secret) < 32 {
		b.ps.add(r, "%s secret must be at least 32 bytes, got %d", what, len(w.Secret))
	}
	if ablk := b.block("adaptive"); ablk != nil {
		ab := b.child(ablk, what+" adaptive")
		a := &AdaptiveRate{LatencyTarget: 500 * time.Millisecond, MaxErrorRatio: 0.05}
		if r, ok := ab.str("min_rate", &rate); ok {
			var err error
			if a.MinRate, err = ParseRate(rate); err != nil {
				b.ps.add(r, "min_rate: %v", err)
			}
		}
		ab.duration("latency_target", &a.LatencyTarget)
		ab.ratio("max_error_ratio", &a.MaxErrorRatio)
		ab.finish()
		w.Adaptive = a
	}
	b.finish()
	return w
}

// checkWaitingRooms validates what spans rooms: their routes, the store and the secret.
func (c *Config) checkWaitingRooms(ps *Problems) {
	owner := map[string]string{}
	for _, w := range c.WaitingRooms {
		what := fmt.Sprintf("waiting_room %q", w.Name)
		for _, name := range w.Routes {
			found := false
			for _, rt := range c.Routes {
				found = found || rt.Name == name
			}
			switch {
			case !found:
				ps.add(w.Pos, "%s: route %q is not defined", what, name)
			case owner[name] != "":
				ps.add(w.Pos, "%s: route %q already waits in waiting_room %q", what, name, owner[name])
			default:
				owner[name] = w.Name
			}
		}
		hasRedis := c.Seckill != nil && c.Seckill.Redis != nil
		switch {
		case w.Store == "":
			w.Store = "memory"
			if hasRedis {
				w.Store = "redis"
			}
		case w.Store == "redis" && !hasRedis:
			ps.add(w.Pos, "%s: store \"redis\" uses the seckill block's Redis, and there is none (or use store = \"memory\" on one node)", what)
		}
		if w.Secret == "" {
			if c.Seckill == nil || c.Seckill.Secret == "" {
				ps.add(w.Pos, "%s needs secret = env(\"…\") (at least 32 bytes) to sign its cookies, or a seckill block whose secret it takes", what)
			} else {
				w.Secret = c.Seckill.Secret
			}
		}
		if a := w.Adaptive; a != nil {
			if a.MinRate.PerSecond == 0 {
				a.MinRate = Rate{PerSecond: w.AdmitRate.PerSecond / 10, Text: fmt.Sprintf("%gr/s", w.AdmitRate.PerSecond/10)}
			}
			if a.MinRate.PerSecond > w.AdmitRate.PerSecond {
				ps.add(w.Pos, "%s: adaptive min_rate is above admit_rate", what)
			}
		}
	}
}
