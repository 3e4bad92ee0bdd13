package soak

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// Workload is the mixed sale traffic the soak sends to one edge, open loop (each
// kind at its own rate, whatever edge answers):
//
//   - browse: GET /item/{0..Items-1} of a cached, per-user limited route, users
//     drawn from a pool of Users (answers 200, or 429 from the limit);
//   - rush: POST /seckill/{item}/token by a new user each time (200 or 410 sold out),
//     the items restocked every RestockEvery through the admin API;
//   - order: each token won is spent on POST /order/{item} through the cells, with an
//     Idempotency-Key (200; 403 when a restock restarted the sale in between);
//   - ban: every BanEvery a user is banned for a few seconds through the admin API
//     and asks for a page (403), the ban lapsing by its TTL;
//   - room: a new user a tick asks for GET /sale/… behind a waiting room (202 to wait,
//     200 once admitted) and polls until admitted.
//
// Every other answer, and every transport error, counts as an error of its kind.
type Workload struct {
	Addr, AdminAddr, Token string

	BrowseRate, RushRate, RoomRate float64 // requests a second; orders follow the tokens won
	Users, Items                   int
	Stock                          int // units per item at each restock
	RestockEvery, BanEvery         time.Duration

	client fasthttp.Client
	sem    chan struct{}

	mu        sync.Mutex
	latencies []time.Duration // of every public request since the last Take
	counts    map[string]int64
	requests  atomic.Int64
	errors    atomic.Int64
	lastErr   atomic.Value
	users     atomic.Int64
}

// Window is what the workload saw between two calls of Take.
type Window struct {
	Requests, Errors int64
	P50, P99, Max    float64 // milliseconds, public requests only
}

// Take returns the requests, errors and latency percentiles since the last call,
// and starts a new window.
func (w *Workload) Take() Window {
	w.mu.Lock()
	ds := w.latencies
	w.latencies = make([]time.Duration, 0, len(ds))
	w.mu.Unlock()
	p := Percentiles(ds, 0.5, 0.99, 1)
	return Window{Requests: w.requests.Swap(0), Errors: w.errors.Swap(0), P50: p[0], P99: p[1], Max: p[2]}
}

// Counts returns the answers seen so far, by kind and status ("browse 200": n),
// sorted by name.
func (w *Workload) Counts() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]string, 0, len(w.counts))
	for k, n := range w.counts {
		out = append(out, fmt.Sprintf("%s: %d", k, n))
	}
	sort.Strings(out)
	return out
}

// LastError returns the last unexpected answer or transport error, "" if none.
func (w *Workload) LastError() string {
	s, _ := w.lastErr.Load().(string)
	return s
}

// Run sends the workload until stop is closed, then waits for requests in flight.
func (w *Workload) Run(stop <-chan struct{}) {
	w.counts = map[string]int64{}
	w.client = fasthttp.Client{
		ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second,
		// Few connections, waited for: each is a goroutine and a descriptor in edge,
		// and a pool that grew with every latency spike would read as a leak.
		MaxConnsPerHost: 16, MaxConnWaitTimeout: 10 * time.Second, MaxIdleConnDuration: 30 * time.Second,
	}
	w.sem = make(chan struct{}, 256)
	var wg sync.WaitGroup
	every := func(d time.Duration, f func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(d)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				select {
				case w.sem <- struct{}{}:
				default: // the generator is saturated: the miss is its own, not edge's
					w.count("generator full", false)
					continue
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer func() { <-w.sem }()
					f()
				}()
			}
		}()
	}
	w.restock()
	every(time.Duration(float64(time.Second)/w.BrowseRate), w.browse)
	every(time.Duration(float64(time.Second)/w.RushRate), w.rush)
	every(time.Duration(float64(time.Second)/w.RoomRate), w.room)
	every(w.RestockEvery, w.restock)
	every(w.BanEvery, w.ban)
	<-stop
	wg.Wait()
}

func (w *Workload) browse() {
	user := fmt.Sprintf("u%d", rand.IntN(w.Users))
	w.public("browse", "GET", fmt.Sprintf("/item/%d", rand.IntN(w.Items)), "", []string{"X-User-Id", user}, 200, 429)
}

func (w *Workload) rush() {
	user := fmt.Sprintf("b%d", w.users.Add(1))
	item := fmt.Sprint(1 + rand.IntN(5))
	code, body := w.public("rush", "POST", "/seckill/"+item+"/token", "", []string{"X-User-Id", user}, 200, 410)
	if code != 200 {
		return
	}
	var tok struct{ Token string }
	if err := json.Unmarshal(body, &tok); err != nil || tok.Token == "" {
		w.fail("rush bad token", fmt.Sprintf("token answer %q: %v", body, err))
		return
	}
	// 403 too: a restock between token and order restarts the sale, and the token
	// with it (docs/seckill.md).
	w.public("order", "POST", "/order/"+item, `{"qty":1}`,
		[]string{"X-User-Id", user, "X-Seckill-Token", tok.Token, "Idempotency-Key", "k-" + user}, 200, 403)
}

func (w *Workload) room() {
	user := fmt.Sprintf("r%d", w.users.Add(1))
	deadline := time.Now().Add(60 * time.Second)
	for {
		code, _ := w.public("room", "GET", "/sale/"+user, "", []string{"X-User-Id", user, "Accept", "application/json"}, 200, 202)
		if code != 202 || time.Now().After(deadline) {
			return
		}
		time.Sleep(time.Second)
	}
}

func (w *Workload) ban() {
	user := fmt.Sprintf("bad%d", w.users.Add(1))
	w.admin("ban", "POST", "/blacklist", fmt.Sprintf(`{"user":%q,"ttl":"3s","reason":"soak"}`, user))
	w.public("banned", "GET", "/item/1", "", []string{"X-User-Id", user}, 403)
}

func (w *Workload) restock() {
	for item := 1; item <= 5; item++ {
		w.admin("restock", "PUT", fmt.Sprintf("/seckill/items/%d", item), fmt.Sprintf(`{"stock":%d}`, w.Stock))
	}
}

// Reload asks edge to reload its config (POST /reload) and counts the answer.
func (w *Workload) Reload() { w.admin("reload", "POST", "/reload", "") }

// public sends one request to the public listener, records its latency and counts
// its answer, an error unless its status is one of ok; it returns status and body.
func (w *Workload) public(kind, method, path, body string, headers []string, ok ...int) (int, []byte) {
	start := time.Now()
	code, out, err := w.do(w.Addr, method, path, body, headers)
	d := time.Since(start)
	w.mu.Lock()
	w.latencies = append(w.latencies, d)
	w.mu.Unlock()
	w.requests.Add(1)
	w.judge(kind, code, out, err, ok)
	return code, out
}

func (w *Workload) admin(kind, method, path, body string) {
	code, out, err := w.do(w.AdminAddr, method, path, body, []string{"Authorization", "Bearer " + w.Token})
	w.judge(kind, code, out, err, []int{200})
}

// judge counts an answer under "kind status" ("kind error" for a transport error),
// as an error unless its status is one of ok.
func (w *Workload) judge(kind string, code int, body []byte, err error, ok []int) {
	if err != nil {
		w.fail(kind+" error", err.Error())
		return
	}
	for _, c := range ok {
		if c == code {
			w.count(fmt.Sprintf("%s %d", kind, code), false)
			return
		}
	}
	w.fail(fmt.Sprintf("%s %d (unexpected)", kind, code), string(body))
}

func (w *Workload) fail(key, what string) {
	w.count(key, true)
	w.lastErr.Store(key + ": " + strings.TrimSpace(what))
}

func (w *Workload) count(key string, isErr bool) {
	if isErr {
		w.errors.Add(1)
	}
	w.mu.Lock()
	w.counts[key]++
	w.mu.Unlock()
}

func (w *Workload) do(addr, method, path, body string, headers []string) (int, []byte, error) {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + addr + path)
	req.Header.SetMethod(method)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	if body != "" {
		req.SetBodyString(body)
	}
	if err := w.client.DoTimeout(req, resp, 10*time.Second); err != nil {
		return 0, nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	return resp.StatusCode(), append([]byte(nil), resp.Body()...), nil
}
