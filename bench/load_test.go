package main

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// serve runs a fasthttp server on 127.0.0.1:0 until the test ends.
func serve(t *testing.T, h fasthttp.RequestHandler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown() })
	return ln.Addr().String()
}

func TestOpenLoopCountsQueueing(t *testing.T) {
	// The first request stalls 300 ms; the one connection cannot send the requests
	// due at 10, 20, … ms until it is back. Measured from the intended send time,
	// those waits show: request i (i < 30) takes about 300 - 10i ms. Measured from
	// the actual send, only one request would look slow and p80 would be well
	// under a millisecond (coordinated omission).
	const stall = 300 * time.Millisecond
	var n atomic.Int64
	addr := serve(t, func(ctx *fasthttp.RequestCtx) {
		if n.Add(1) == 1 {
			time.Sleep(stall)
		}
		ctx.SetBodyString("ok")
	})
	tpl, _ := ParseTemplate("/")
	l := &Load{Addr: addr, Path: tpl, Conns: 1, Rate: 100, Duration: 500 * time.Millisecond, Expect: Expect{Status: 200}}
	r, err := l.Run()
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Requests + r.Errors + r.Unsent; got != 50 {
		t.Fatalf("scheduled %d requests (answers %d, errors %d, unsent %d), want 50 at 100/s for 0.5s", got, r.Requests, r.Errors, r.Unsent)
	}
	if r.Errors != 0 || r.Matched != r.Requests {
		t.Fatalf("errors %d (%s), matched %d of %d", r.Errors, r.FirstErr, r.Matched, r.Requests)
	}
	if got := r.Hist.Max(); got < stall {
		t.Errorf("max latency %v, want ≥ the %v stall", got, stall)
	}
	// 11 of 50 requests were due at least 200 ms before they could be sent.
	if got := r.Hist.Percentile(80); got < 150*time.Millisecond {
		t.Errorf("p80 = %v, want ≥ 150ms: queueing behind the stall is missing", got)
	}
}

func TestClosedLoopVariesRequests(t *testing.T) {
	var mu sync.Mutex
	users := map[string]int{}
	addr := serve(t, func(ctx *fasthttp.RequestCtx) {
		// /item/7/u/<user> must carry X-User-Id: u<user> of the same request.
		path := string(ctx.Path())
		user, ok := strings.CutPrefix(path, "/item/7/u/")
		if !ok || string(ctx.Request.Header.Peek("X-User-Id")) != "u"+user || !ctx.IsPost() ||
			!bytes.Equal(ctx.PostBody(), []byte("{}")) {
			ctx.SetStatusCode(400)
			return
		}
		mu.Lock()
		users[user]++
		mu.Unlock()
		ctx.Response.Header.Set("X-Ok", "yes")
	})
	tpl, err := ParseTemplate("/item/{item}/u/{user}")
	if err != nil {
		t.Fatal(err)
	}
	hdr, err := ParseHeader("X-User-Id: u{user}")
	if err != nil {
		t.Fatal(err)
	}
	seq, _ := ParseIDs("seq:1000")
	item, _ := ParseIDs("7")
	l := &Load{Addr: addr, Method: "POST", Body: []byte("{}"), Path: tpl, Headers: []Header{hdr}, Users: seq, Items: item,
		Conns: 4, Duration: 200 * time.Millisecond, Expect: Expect{Status: 200, Header: "X-Ok", Value: "yes"}}
	r, err := l.Run()
	if err != nil {
		t.Fatal(err)
	}
	if r.Requests == 0 || r.Errors != 0 {
		t.Fatalf("answers %d errors %d (%s)", r.Requests, r.Errors, r.FirstErr)
	}
	if r.Matched != r.Requests || r.Status[200] != r.Requests || r.Mismatch != "" {
		t.Fatalf("matched %d of %d, statuses %v, mismatch %q", r.Matched, r.Requests, r.Status, r.Mismatch)
	}
	mu.Lock()
	defer mu.Unlock()
	if int64(len(users)) != r.Requests {
		t.Errorf("%d distinct users for %d requests, want one each", len(users), r.Requests)
	}
	if users["1000"] != 1 {
		t.Errorf("the first user should be u1000, seen %d times", users["1000"])
	}
	if r.Hist.Count() != uint64(r.Requests) || r.InWindow > r.Requests || r.RPS() <= 0 {
		t.Errorf("histogram %d samples, in window %d, answers %d, rps %f", r.Hist.Count(), r.InWindow, r.Requests, r.RPS())
	}
}

func TestWrongAnswersAreCountedWithASample(t *testing.T) {
	addr := serve(t, func(ctx *fasthttp.RequestCtx) {
		ctx.SetStatusCode(501)
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`{"error":"not_implemented"}`)
	})
	tpl, _ := ParseTemplate("/limit")
	r, err := (&Load{Addr: addr, Path: tpl, Conns: 2, Duration: 100 * time.Millisecond, Expect: Expect{Status: 429}}).Run()
	if err != nil {
		t.Fatal(err)
	}
	if r.Requests == 0 || r.Matched != 0 || r.Status[501] != r.Requests {
		t.Fatalf("answers %d matched %d statuses %v", r.Requests, r.Matched, r.Status)
	}
	if !strings.Contains(r.Mismatch, "501") || !strings.Contains(r.Mismatch, "not_implemented") {
		t.Errorf("mismatch sample %q should show the status and body", r.Mismatch)
	}
	side := summarize("edge", &sideRun{rounds: []*Result{r}}, Expect{Status: 429}, 0.95)
	if side.Valid || !strings.Contains(side.Invalid, "expected status 429") || !strings.Contains(side.Invalid, "not_implemented") {
		t.Errorf("side valid=%v invalid=%q, want invalid naming the expectation and the sample", side.Valid, side.Invalid)
	}
}

func TestRefusedConnectionsAreErrors(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	tpl, _ := ParseTemplate("/")
	r, err := (&Load{Addr: addr, Path: tpl, Conns: 1, Duration: 50 * time.Millisecond}).Run()
	if err != nil {
		t.Fatal(err)
	}
	if r.Requests != 0 || r.Errors == 0 || r.FirstErr == "" {
		t.Fatalf("answers %d errors %d first %q, want only errors", r.Requests, r.Errors, r.FirstErr)
	}
	if side := summarize("nginx", &sideRun{rounds: []*Result{r}}, Expect{}, 0.99); side.Valid || !strings.HasPrefix(side.Invalid, "no answers") {
		t.Errorf("side valid=%v invalid=%q", side.Valid, side.Invalid)
	}
}

func TestParse(t *testing.T) {
	f := func(spec string, ok bool) {
		t.Helper()
		if _, err := ParseIDs(spec); (err == nil) != ok {
			t.Errorf("ParseIDs(%q) error %v, want ok=%v", spec, err, ok)
		}
	}
	f("42", true)
	f("1-100", true)
	f("seq", true)
	f("seq:7", true)
	f("100-1", false)
	f("x", false)
	f("seq:x", false)
	f("cycle:3-5", true)
	f("cycle:5", false)
	cyc, _ := ParseIDs("cycle:3-5")
	var got []uint64
	for i := 0; i < 7; i++ {
		got = append(got, cyc.pick(nil))
	}
	if fmt.Sprint(got) != "[3 4 5 3 4 5 3]" {
		t.Errorf("cycle:3-5 gave %v", got)
	}
	rnd, _ := ParseIDs("10-12")
	rng := rand.New(rand.NewPCG(1, 1))
	for i := 0; i < 1000; i++ {
		if v := rnd.pick(rng); v < 10 || v > 12 {
			t.Fatalf("10-12 gave %d", v)
		}
	}
	if _, err := ParseTemplate("/a/{nope}"); err == nil {
		t.Error("unknown placeholder accepted")
	}
	if _, err := ParseTemplate("/a/{user"); err == nil {
		t.Error("unclosed placeholder accepted")
	}
	tpl, _ := ParseTemplate("/i/{item}?u={user}&n={seq}")
	if got := string(tpl.Append(nil, 5, 6, 7)); got != "/i/6?u=5&n=7" {
		t.Errorf("template filled as %q", got)
	}
	if _, err := ParseHeader("no colon"); err == nil {
		t.Error("header without colon accepted")
	}
}

func TestCPUSample(t *testing.T) {
	self := os.Getpid()
	before := sampleCPU([]int{self, 1 << 30}) // the second pid does not exist
	if len(before) != 1 {
		t.Fatalf("sample %v, want only this process", before)
	}
	// Burn CPU until the kernel's tick counter moves (polling, not sleeping).
	var after cpuSample
	x := 0
	for i := 0; ; i++ {
		for j := 0; j < 1e6; j++ {
			x += j
		}
		after = sampleCPU([]int{self})
		if after[self] > before[self] {
			break
		}
	}
	if secs, ok := after.since(before); !ok || secs <= 0 {
		t.Errorf("since = %f, %v; want > 0 CPU seconds (x=%d)", secs, ok, x)
	}
	// A process that ended between the samples drops out instead of spoiling the sum.
	gone := cpuSample{self: before[self], 1 << 30: 5}
	if secs, ok := after.since(gone); !ok || secs <= 0 || secs > after[self] {
		t.Errorf("since with a vanished pid = %f, %v", secs, ok)
	}
}
