package proxy

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edge-gw/edge/internal/origintest"
	"github.com/edge-gw/edge/internal/redistest"
	"github.com/edge-gw/edge/waitroom"
	"github.com/valyala/fasthttp"
)

func roomConfig(origin string) string {
	return fmt.Sprintf(`
upstream "shop" { servers = [%q] }
route "sale" {
  match { path = "/sale/" }
  upstream = "shop"
}
route "free" {
  match { path = "/free/" }
  upstream = "shop"
}
waiting_room "sale" {
  routes     = ["sale"]
  key        = "header:X-User-Id"
  admit_rate = "1000r/s"
  session    = "1m"
  store      = "memory"
  secret     = "0123456789abcdef0123456789abcdef-proxy"
}
`, origin)
}

// waitingAnswer decodes a 202 (or a poll's 200) waiting body.
type waitingAnswer struct {
	Waiting  bool  `json:"waiting"`
	Admitted bool  `json:"admitted"`
	Position int64 `json:"position"`
	Ahead    int64 `json:"ahead"`
	ETA      int64 `json:"eta_s"`
	Poll     int64 `json:"poll_after_s"`
}

// The funnel with a waiting room: waiting users get 202 JSON in line order (or the page
// when they ask for HTML), edge answers the page's poll itself, admitted users reach the
// origin with the cookie edge set, a forged cookie admits nobody, other routes do not
// wait, and the admin API shows and tunes the room.
func TestWaitingRoomFunnel(t *testing.T) {
	o := origintest.Start(t, func(ctx *fasthttp.RequestCtx) { fmt.Fprintf(ctx, "origin %s", ctx.Path()) })
	e := startEdge(t, roomConfig(o.Addr))
	adm := startAdmin(t, e.reg, testAdminToken, e.px.adminRooms)
	call := func(method, path, body string) (int, map[string]any) {
		t.Helper()
		code, raw := adm.call(t, method, path, body)
		var out map[string]any
		if err := json.Unmarshal([]byte(raw), &out); err != nil {
			t.Fatalf("%s %s: %d, not JSON: %q", method, path, code, raw)
		}
		return code, out
	}
	if code, body := call("POST", "/waiting-rooms/sale", `{"paused":true}`); code != 200 {
		t.Fatalf("pause: %d %v", code, body)
	}
	eventually(t, "GET /waiting-rooms/sale shows the pause", func() bool {
		_, body := call("GET", "/waiting-rooms/sale", "")
		return body["paused"] == true
	})

	for i, user := range []string{"u1", "u2", "u3"} {
		r := e.do(t, "GET", "/sale/item/1", "X-User-Id", user)
		var w waitingAnswer
		json.Unmarshal(r.Body(), &w)
		if r.StatusCode() != 202 || !w.Waiting || w.Position != int64(i+1) || w.Ahead != int64(i) || w.Poll < 1 {
			t.Errorf("%s while paused: %d %s, want 202 at position %d", user, r.StatusCode(), r.Body(), i+1)
		}
		if ra := string(r.Header.Peek("Retry-After")); ra != fmt.Sprint(w.Poll) {
			t.Errorf("%s: Retry-After %q, poll_after_s %d", user, ra, w.Poll)
		}
	}
	// Asking again keeps the place.
	var again waitingAnswer
	json.Unmarshal(e.do(t, "GET", "/sale/item/2", "X-User-Id", "u2").Body(), &again)
	if again.Position != 2 {
		t.Errorf("u2 asking again: position %d, want 2", again.Position)
	}
	// A browser gets the page, which polls edge's own endpoint.
	r := e.do(t, "GET", "/sale/item/1", "X-User-Id", "u3", "Accept", "text/html,*/*")
	if r.StatusCode() != 200 || !strings.Contains(string(r.Body()), `"/.edge/waiting-room/sale"`) ||
		!strings.HasPrefix(string(r.Header.ContentType()), "text/html") {
		t.Errorf("browser while waiting: %d %s", r.StatusCode(), r.Header.ContentType())
	}
	if r := e.do(t, "GET", "/free/x"); r.StatusCode() != 200 || string(r.Body()) != "origin /free/x" {
		t.Errorf("a route without a room: %d %s", r.StatusCode(), r.Body())
	}
	if r := e.do(t, "GET", "/.edge/waiting-room/nope"); r.StatusCode() != 404 {
		t.Errorf("poll of an unknown room: %d", r.StatusCode())
	}

	if code, body := call("POST", "/waiting-rooms/sale", `{"paused":false}`); code != 200 {
		t.Fatalf("unpause: %d %v", code, body)
	}
	admitName, _ := waitroom.CookieNames("sale")
	var cookie string
	eventually(t, "u1 admitted", func() bool {
		r := e.do(t, "GET", "/.edge/waiting-room/sale", "X-User-Id", "u1")
		var w waitingAnswer
		json.Unmarshal(r.Body(), &w)
		if r.StatusCode() != 200 || !w.Admitted {
			return false
		}
		for _, sc := range r.Header.PeekAll("Set-Cookie") {
			if strings.HasPrefix(string(sc), admitName+"=") {
				cookie = strings.SplitN(string(sc), ";", 2)[0]
			}
		}
		return true
	})
	if cookie == "" || !strings.Contains(strings.ToLower(string(e.do(t, "GET", "/.edge/waiting-room/sale", "X-User-Id", "u1").Header.Peek("Cache-Control"))), "no-store") {
		t.Errorf("admission: cookie %q", cookie)
	}
	if r := e.do(t, "GET", "/sale/item/1", "X-User-Id", "u1", "Cookie", cookie); r.StatusCode() != 200 || string(r.Body()) != "origin /sale/item/1" {
		t.Errorf("admitted u1 with its cookie: %d %s", r.StatusCode(), r.Body())
	}
	// A forged cookie, without the key, admits nobody.
	forged := admitName + "=" + strings.Repeat("A", 60)
	if r := e.do(t, "GET", "/sale/item/1", "Cookie", forged); r.StatusCode() == 200 {
		t.Errorf("a forged admission cookie was let in: %s", r.Body())
	}
	code, st := call("GET", "/waiting-rooms/sale", "")
	if code != 200 || st["admitted"].(float64) < 1 || st["admit_rate"].(float64) != 1000 {
		t.Errorf("GET /waiting-rooms/sale: %d %v", code, st)
	}
	if code, _ := call("GET", "/waiting-rooms/none", ""); code != 404 {
		t.Errorf("unknown room: %d", code)
	}
	if code, body := call("POST", "/waiting-rooms/sale", `{"admit_rate":"fast"}`); code != 400 || body["error"] != "bad_admit_rate" {
		t.Errorf("bad admit_rate: %d %v", code, body)
	}
	if code, body := call("POST", "/waiting-rooms/sale", `{"admit_rate":"20r/s"}`); code != 200 {
		t.Errorf("tune admit_rate: %d %v", code, body)
	}
	eventually(t, "the new admit_rate in force", func() bool {
		_, body := call("GET", "/waiting-rooms/sale", "")
		return body["admit_rate"] == 20.0
	})
}

// Adaptive admission through the funnel: when the protected route's origin turns slow,
// the room's rate drops (reason "latency"); when it is fast again, the rate climbs back
// to admit_rate.
func TestWaitingRoomAdaptive(t *testing.T) {
	var slow atomic.Bool
	o := origintest.Start(t, func(ctx *fasthttp.RequestCtx) {
		if slow.Load() {
			time.Sleep(120 * time.Millisecond)
		}
		ctx.WriteString("ok")
	})
	e := startEdge(t, strings.Replace(roomConfig(o.Addr), `  store      = "memory"`, `  store      = "memory"
  adaptive {
    min_rate       = "50r/s"
    latency_target = "40ms"
  }`, 1))
	stats := func() waitroom.Stats { st, _ := e.px.RoomStats("sale"); return st }
	users := []string{"a1", "a2", "a3", "a4", "a5", "a6", "a7", "a8"}
	eventually(t, "every user admitted", func() bool {
		all := true
		for _, u := range users {
			all = e.do(t, "GET", "/sale/x", "X-User-Id", u).StatusCode() == 200 && all
		}
		return all
	})
	// Admitted users keep buying: 8 at a time, through the room's Observe.
	var stop atomic.Bool
	var wg sync.WaitGroup
	for _, u := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				e.do(t, "GET", "/sale/x", "X-User-Id", u)
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	defer func() { stop.Store(true); wg.Wait() }()

	slow.Store(true)
	eventually(t, "the rate backs off while the origin is slow", func() bool {
		st := stats()
		return st.AdmitRate < 1000 && st.Reason == "latency"
	})
	low := stats().AdmitRate
	slow.Store(false)
	waitUntil(t, 20*time.Second, "the rate back at admit_rate once the origin is fast", func() bool {
		return stats().AdmitRate == 1000
	})
	t.Logf("adaptive: rate dropped to %.0f/s while the origin took 120ms (target 40ms), back to 1000/s after", low)
}

// With its Redis gone, a room fails closed: a user who is not in yet gets 503 with
// Retry-After (nobody is let in blindly), while a user admitted before goes on with the
// cookie, which every node checks locally.
func TestWaitingRoomRedisDown(t *testing.T) {
	srv := redistest.Start(t)
	o := origintest.Start(t, func(ctx *fasthttp.RequestCtx) { ctx.WriteString("ok") })
	e := startEdge(t, strings.NewReplacer(`  store      = "memory"`, `  store      = "redis"`, `"1000r/s"`, `"20r/s"`).Replace(roomConfig(o.Addr))+fmt.Sprintf(`
seckill {
  store  = "redis"
  redis { addrs = [%q] }
  secret = %q
}
`, srv.Addr, testSeckillSecret))
	admitName, _ := waitroom.CookieNames("sale")
	var cookie string
	eventually(t, "u1 admitted", func() bool {
		r := e.do(t, "GET", "/sale/x", "X-User-Id", "u1")
		for _, sc := range r.Header.PeekAll("Set-Cookie") {
			if strings.HasPrefix(string(sc), admitName+"=") {
				cookie = strings.SplitN(string(sc), ";", 2)[0]
			}
		}
		return r.StatusCode() == 200 && cookie != ""
	})
	srv.Kill()
	eventually(t, "a newcomer refused with 503", func() bool {
		r := e.do(t, "GET", "/sale/x", "X-User-Id", "newcomer")
		return r.StatusCode() == 503 && string(r.Header.Peek("Retry-After")) == "1" &&
			strings.Contains(string(r.Body()), `"waiting_room_unavailable"`)
	})
	if r := e.do(t, "GET", "/sale/x", "X-User-Id", "u1", "Cookie", cookie); r.StatusCode() != 200 {
		t.Errorf("admitted user while Redis is down: %d %s", r.StatusCode(), r.Body())
	}
}
