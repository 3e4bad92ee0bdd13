package proxy

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edge-gw/edge/internal/origintest"
	"github.com/edge-gw/edge/internal/redistest"
	"github.com/edge-gw/edge/seckill"
	"github.com/valyala/fasthttp"
)

const (
	testSeckillSecret = "0123456789abcdef0123456789abcdef-test"
	testAdminToken    = "admin-secret"
)

func memoryStore() string { return `store = "memory"` }

func redisStore(addrs ...string) string {
	return fmt.Sprintf("store = \"redis\"\n  redis {\n    addrs = [%s]\n  }", quoteList(addrs))
}

// seckillConfig is a seckill edge: tokens on POST /seckill/{item}/token, orders on
// POST /order/{item} forwarded to origin. extra goes into the seckill block.
func seckillConfig(store, origin string, extra ...string) string {
	return fmt.Sprintf(`
trusted_proxies = ["127.0.0.1/32"]
upstream "orders" {
  servers = [%q]
  timeout = "2s"
}
seckill {
  %s
  secret = %q
  %s
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
  upstream      = "orders"
  require_token = true
}
`, origin, store, testSeckillSecret, strings.Join(extra, "\n  "))
}

// seckillEdge is a test edge with its admin API.
type seckillEdge struct {
	*testEdge
	admin *adminAPI
}

func startSeckill(t testing.TB, src string) *seckillEdge {
	t.Helper()
	e := startEdge(t, src)
	return &seckillEdge{testEdge: e, admin: startAdmin(t, e.reg, testAdminToken, e.px.adminSeckill)}
}

// adminCall sends an authorised admin request and returns the status and JSON body.
func (e *seckillEdge) adminCall(t testing.TB, method, path, body string) (int, map[string]any) {
	t.Helper()
	code, raw := e.admin.call(t, method, path, body)
	var out map[string]any
	if err := json.Unmarshal([]byte(raw), &out); err != nil {
		t.Fatalf("%s %s: %d, not JSON: %q", method, path, code, raw)
	}
	return code, out
}

func (e *seckillEdge) setStock(t testing.TB, item string, stock int) {
	t.Helper()
	if code, body := e.adminCall(t, "PUT", "/seckill/items/"+item, fmt.Sprintf(`{"stock":%d}`, stock)); code != 200 {
		t.Fatalf("set stock of %s: %d %v", item, code, body)
	}
}

// item returns stock and issued from the admin API.
func (e *seckillEdge) item(t testing.TB, item string) (stock, issued int) {
	t.Helper()
	code, body := e.adminCall(t, "GET", "/seckill/items/"+item, "")
	if code != 200 {
		t.Fatalf("get item %s: %d %v", item, code, body)
	}
	return int(body["stock"].(float64)), int(body["issued"].(float64))
}

type grantBody struct {
	Token     string `json:"token"`
	Item      string `json:"item"`
	User      string `json:"user"`
	ExpiresAt int64  `json:"expires_at"`
	Error     string `json:"error"`
}

// issue asks edge at addr for a token and returns the status and decoded body.
func issue(t testing.TB, addr, item, user string) (int, grantBody) {
	t.Helper()
	code, body, err := issueWith(&fasthttp.Client{}, addr, item, user)
	if err != nil {
		t.Fatal(err)
	}
	return code, body
}

func issueWith(c *fasthttp.Client, addr, item, user string) (int, grantBody, error) {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod("POST")
	req.SetRequestURI("http://" + addr + "/seckill/" + item + "/token")
	if user != "" {
		req.Header.Set("X-User-Id", user)
	}
	if err := c.DoTimeout(req, resp, 20*time.Second); err != nil {
		return 0, grantBody{}, fmt.Errorf("issue %s for %s: %w", item, user, err)
	}
	var g grantBody
	if err := json.Unmarshal(resp.Body(), &g); err != nil {
		return 0, g, fmt.Errorf("issue %s for %s: %d, not JSON: %q", item, user, resp.StatusCode(), resp.Body())
	}
	if resp.StatusCode() == 503 && len(resp.Header.Peek("Retry-After")) == 0 {
		return 0, g, fmt.Errorf("503 without Retry-After")
	}
	return resp.StatusCode(), g, nil
}

// flood sends one token request per user, all at once, spread over addrs, and returns
// the count per status and the tokens issued by user.
func flood(t testing.TB, addrs []string, item string, users []string) (map[int]int, map[string]string) {
	t.Helper()
	c := &fasthttp.Client{MaxConnsPerHost: 512, MaxConnWaitTimeout: 20 * time.Second}
	var (
		mu     sync.Mutex
		codes  = map[int]int{}
		tokens = map[string]string{}
		wg     sync.WaitGroup
		start  = make(chan struct{})
		failed atomic.Value
	)
	for i, u := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			code, g, err := issueWith(c, addrs[i%len(addrs)], item, u)
			if err != nil {
				failed.Store(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			codes[code]++
			if code == 200 {
				if old, ok := tokens[u]; ok && old != g.Token {
					failed.Store(fmt.Errorf("user %s got two tokens", u))
				}
				tokens[u] = g.Token
			}
		}()
	}
	close(start)
	wg.Wait()
	if err := failed.Load(); err != nil {
		t.Fatal(err)
	}
	return codes, tokens
}

func distinctUsers(prefix string, n int) []string {
	users := make([]string, n)
	for i := range users {
		users[i] = fmt.Sprintf("%s%d", prefix, i)
	}
	return users
}

// TestSeckillIssue walks one sale on the memory store through every answer of the
// token endpoint and the admin API.
func TestSeckillIssue(t *testing.T) {
	e := startSeckill(t, seckillConfig(memoryStore(), "127.0.0.1:1"))

	if code, g := issue(t, e.addr, "42", ""); code != 400 || g.Error != "missing_user" {
		t.Errorf("no user: %d %+v, want 400 missing_user", code, g)
	}
	if code, g := issue(t, e.addr, "42", "u1"); code != 404 || g.Error != "no_sale" {
		t.Errorf("before the sale: %d %+v, want 404 no_sale", code, g)
	}
	e.setStock(t, "42", 2)
	before := time.Now().Unix()
	code, g1 := issue(t, e.addr, "42", "u1")
	if code != 200 || len(g1.Token) != seckill.TokenLen || g1.Item != "42" || g1.User != "u1" ||
		g1.ExpiresAt < before+299 || g1.ExpiresAt > before+301 {
		t.Fatalf("first token: %d %+v", code, g1)
	}
	if code, g := issue(t, e.addr, "42", "u1"); code != 200 || g != g1 {
		t.Errorf("repeat: %d %+v, want the same grant %+v", code, g, g1)
	}
	if code, g := issue(t, e.addr, "42", `u"2`); code != 200 || g.User != `u"2` {
		t.Errorf("user with a quote: %d %+v", code, g)
	}
	for i := 0; i < 3; i++ { // store answer, then the local flag
		if code, g := issue(t, e.addr, "42", fmt.Sprintf("late%d", i)); code != 410 || g.Error != "sold_out" {
			t.Errorf("sold out: %d %+v, want 410 sold_out", code, g)
		}
	}
	if stock, issued := e.item(t, "42"); stock != 0 || issued != 2 {
		t.Errorf("item: stock %d issued %d, want 0 and 2", stock, issued)
	}

	// Release twice: the unit comes back once, and a new buyer may take it.
	for i, want := range []bool{true, false} {
		code, body := e.adminCall(t, "POST", "/seckill/items/42/release", `{"user":"u1"}`)
		if code != 200 || body["released"] != want {
			t.Errorf("release %d: %d %v, want released %v", i, code, body, want)
		}
	}
	if stock, issued := e.item(t, "42"); stock != 1 || issued != 1 {
		t.Errorf("after release: stock %d issued %d, want 1 and 1", stock, issued)
	}
	if code, _ := issue(t, e.addr, "42", "late0"); code != 200 {
		t.Errorf("after release a buyer gets the unit: %d", code)
	}

	// Restocking replaces the stock and forgets the holders.
	e.setStock(t, "42", 5)
	if stock, issued := e.item(t, "42"); stock != 5 || issued != 0 {
		t.Errorf("after restock: stock %d issued %d, want 5 and 0", stock, issued)
	}
	if code, g := issue(t, e.addr, "42", "u1"); code != 200 || g.Token == g1.Token {
		t.Errorf("after restock u1 buys anew: %d %+v", code, g)
	}

	for _, c := range []struct{ method, path, body, code string }{
		{"PUT", "/seckill/items/42", `{"stock":-1}`, "bad_stock"},
		{"PUT", "/seckill/items/42", `{}`, "bad_stock"},
		{"PUT", "/seckill/items/42", `{"stock":"x"}`, "bad_json"},
		{"PUT", "/seckill/items/a%7Bb", `{"stock":1}`, "bad_item"},
		{"POST", "/seckill/items/42/release", `{"user":""}`, "bad_user"},
		{"POST", "/seckill/items/42/release", `{"who":"u1"}`, "bad_json"},
	} {
		if code, body := e.adminCall(t, c.method, c.path, c.body); code != 400 || body["error"] != c.code {
			t.Errorf("%s %s %s: %d %v, want 400 %s", c.method, c.path, c.body, code, body, c.code)
		}
	}
	if code, body := e.adminCall(t, "GET", "/seckill/items/nope", ""); code != 404 || body["error"] != "no_sale" {
		t.Errorf("GET unknown item: %d %v", code, body)
	}
	resp, err := http.Post(e.admin.url+"/seckill/items/42/release", "application/json", strings.NewReader(`{"user":"u1"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Errorf("release without the admin token: %d, want 401", resp.StatusCode)
	}

	for _, c := range []struct {
		result string
		want   float64
	}{{"issued", 4}, {"repeat", 1}, {"sold_out", 3}, {"no_sale", 1}, {"invalid", 1}} {
		if got := gathered(t, e.reg, "edge_seckill_requests_total", "result", c.result); got != c.want {
			t.Errorf("edge_seckill_requests_total{result=%q} = %v, want %v", c.result, got, c.want)
		}
	}
	if got := gathered(t, e.reg, "edge_seckill_shed_total"); got < 1 {
		t.Errorf("edge_seckill_shed_total = %v, want the flagged sold-out answers", got)
	}
	if got := gathered(t, e.reg, "edge_seckill_store_up"); got != 1 {
		t.Errorf("edge_seckill_store_up = %v, want 1", got)
	}
}

// TestSeckillFlood: 5000 distinct buyers at once for 100 units get exactly 100 tokens,
// and one user asking 20 times at once gets one token and one unit — on memory, a real
// Redis and a real Redis Cluster.
func TestSeckillFlood(t *testing.T) {
	f := func(name string, store func(t *testing.T) string) {
		t.Run(name, func(t *testing.T) {
			e := startSeckill(t, seckillConfig(store(t), "127.0.0.1:1", `timeout = "5s"`))
			e.setStock(t, "hot", 100)
			calls0 := gathered(t, e.reg, "edge_seckill_script_calls_total")
			codes, tokens := flood(t, []string{e.addr}, "hot", distinctUsers("buyer", 5000))
			if codes[200] != 100 || codes[410] != 4900 || len(codes) != 2 {
				t.Errorf("answers %v, want 100×200 and 4900×410", codes)
			}
			distinct := map[string]bool{}
			for _, tok := range tokens {
				distinct[tok] = true
			}
			if len(distinct) != 100 {
				t.Errorf("%d distinct tokens, want 100", len(distinct))
			}
			if stock, issued := e.item(t, "hot"); stock != 0 || issued != 100 {
				t.Errorf("item: stock %d issued %d, want 0 and 100", stock, issued)
			}
			t.Logf("%s: %v script calls for 100 tokens and 4900 sold-out answers, %v shed without the store",
				name, gathered(t, e.reg, "edge_seckill_script_calls_total")-calls0, gathered(t, e.reg, "edge_seckill_shed_total"))

			e.setStock(t, "one", 100)
			same := make([]string, 20)
			for i := range same {
				same[i] = "alice"
			}
			codes, tokens = flood(t, []string{e.addr}, "one", same)
			if codes[200] != 20 || len(tokens) != 1 {
				t.Errorf("one user 20 times: answers %v, tokens %v; want 20×200 with one token", codes, tokens)
			}
			if stock, issued := e.item(t, "one"); stock != 99 || issued != 1 {
				t.Errorf("one user 20 times: stock %d issued %d, want 99 and 1", stock, issued)
			}
		})
	}
	f("memory", func(t *testing.T) string { return memoryStore() })
	f("redis", func(t *testing.T) string { return redisStore(redistest.Start(t).Addr) })
	f("cluster", func(t *testing.T) string { return redisStore(redistest.StartCluster(t).Addrs...) })
}

// TestSeckillThreeEdges: three edges sharing one Redis never oversell.
func TestSeckillThreeEdges(t *testing.T) {
	srv := redistest.Start(t)
	cfg := seckillConfig(redisStore(srv.Addr), "127.0.0.1:1", `timeout = "5s"`)
	var edges []*seckillEdge
	var addrs []string
	for i := 0; i < 3; i++ {
		e := startSeckill(t, cfg)
		edges = append(edges, e)
		addrs = append(addrs, e.addr)
	}
	edges[0].setStock(t, "hot", 100)
	codes, tokens := flood(t, addrs, "hot", distinctUsers("buyer", 5000))
	if codes[200] != 100 || codes[410] != 4900 || len(codes) != 2 || len(tokens) != 100 {
		t.Errorf("answers %v and %d tokens, want 100×200, 4900×410", codes, len(tokens))
	}
	for i, e := range edges {
		if stock, issued := e.item(t, "hot"); stock != 0 || issued != 100 {
			t.Errorf("edge %d sees stock %d issued %d, want 0 and 100", i, stock, issued)
		}
	}
	// A token of one edge is good for an order on another, once.
	for u, tok := range tokens {
		if err := edges[1].px.Current().seckill.backend.signer.VerifyString(tok, "hot", u, time.Now()); err != nil {
			t.Fatalf("token of %s does not verify on another edge: %v", u, err)
		}
		break
	}
}

// order posts an order for item as user with token and returns the status and body.
func order(t testing.TB, e *seckillEdge, item, user, token string) (int, string) {
	t.Helper()
	h := []string{"X-User-Id", user}
	if token != "" {
		h = append(h, "X-Seckill-Token", token)
	}
	resp := e.do(t, "POST", "/order/"+item, h...)
	return resp.StatusCode(), string(resp.Body())
}

// TestSeckillOrder: only a valid token of this user and item passes, once.
func TestSeckillOrder(t *testing.T) {
	f := func(name string, store func(t *testing.T) string) {
		t.Run(name, func(t *testing.T) {
			o := origintest.Start(t, func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("ordered") })
			e := startSeckill(t, seckillConfig(store(t), o.Addr))
			e.setStock(t, "42", 10)
			e.setStock(t, "43", 10)
			_, g := issue(t, e.addr, "42", "u1")
			_, g2 := issue(t, e.addr, "42", "u2")
			forged := []byte(g.Token)
			forged[30] ^= 1

			for _, c := range []struct {
				name, item, user, token string
				code                    int
			}{
				{"missing", "42", "u1", "", 403},
				{"forged", "42", "u1", string(forged), 403},
				{"garbage", "42", "u1", "not-a-token", 403},
				{"foreign user", "42", "u2", g.Token, 403},
				{"other item", "43", "u1", g.Token, 403},
				{"valid", "42", "u1", g.Token, 200},
				{"reused", "42", "u1", g.Token, 409},
			} {
				code, body := order(t, e, c.item, c.user, c.token)
				if code != c.code {
					t.Errorf("%s: %d %s, want %d", c.name, code, body, c.code)
				}
			}
			if n := o.Requests.Load(); n != 1 {
				t.Errorf("origin saw %d orders, want 1", n)
			}
			// A released holder's token no longer orders.
			if code, body := e.adminCall(t, "POST", "/seckill/items/42/release", `{"user":"u2"}`); code != 200 || body["released"] != true {
				t.Fatalf("release u2: %d %v", code, body)
			}
			if code, body := order(t, e, "42", "u2", g2.Token); code != 403 || body != `{"error":"invalid_token"}` {
				t.Errorf("released token: %d %s, want 403 invalid_token", code, body)
			}
			// A holder who ordered cannot be released.
			if code, body := e.adminCall(t, "POST", "/seckill/items/42/release", `{"user":"u1"}`); code != 200 || body["released"] != false {
				t.Errorf("release of a buyer who ordered: %d %v, want released false", code, body)
			}
			for _, c := range []struct {
				result string
				want   float64
			}{{"ok", 1}, {"used", 1}, {"invalid", 6}} {
				if got := gathered(t, e.reg, "edge_seckill_orders_total", "result", c.result); got != c.want {
					t.Errorf("edge_seckill_orders_total{result=%q} = %v, want %v", c.result, got, c.want)
				}
			}
		})
	}
	f("memory", func(t *testing.T) string { return memoryStore() })
	f("redis", func(t *testing.T) string { return redisStore(redistest.Start(t).Addr) })
}

// issueWithin asks for a token with a client deadline of d: the edge must answer
// within it.
func issueWithin(t testing.TB, addr, item, user string, d time.Duration) (int, grantBody) {
	t.Helper()
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod("POST")
	req.SetRequestURI("http://" + addr + "/seckill/" + item + "/token")
	req.Header.Set("X-User-Id", user)
	if err := fasthttp.DoTimeout(req, resp, d); err != nil {
		t.Fatalf("no answer within %v: %v", d, err)
	}
	var g grantBody
	json.Unmarshal(resp.Body(), &g)
	if resp.StatusCode() == 503 && string(resp.Header.Peek("Retry-After")) != "1" {
		t.Errorf("503 without Retry-After: 1")
	}
	return resp.StatusCode(), g
}

// TestSeckillRedisFailure: Redis killed or hung → 503 within 1s; Redis restarted →
// sales work again once stocked; SCRIPT FLUSH → nothing breaks.
func TestSeckillRedisFailure(t *testing.T) {
	srv := redistest.Start(t)
	o := origintest.Start(t, nil)
	e := startSeckill(t, seckillConfig(redisStore(srv.Addr), o.Addr))
	e.setStock(t, "42", 100)
	if code, _ := issueWithin(t, e.addr, "42", "u1", time.Second); code != 200 {
		t.Fatalf("healthy: %d", code)
	}

	srv.Do("SCRIPT", "FLUSH")
	code, g := issueWithin(t, e.addr, "42", "u2", time.Second)
	if code != 200 {
		t.Fatalf("after SCRIPT FLUSH: %d %+v", code, g)
	}
	srv.Do("SCRIPT", "FLUSH")
	if code, body := order(t, e, "42", "u2", g.Token); code != 200 {
		t.Errorf("order after SCRIPT FLUSH: %d %s", code, body)
	}
	srv.Do("SCRIPT", "FLUSH")
	if stock, issued := e.item(t, "42"); stock != 98 || issued != 2 {
		t.Errorf("after SCRIPT FLUSH: stock %d issued %d, want 98 and 2", stock, issued)
	}

	srv.Pause()
	if code, g := issueWithin(t, e.addr, "42", "u3", time.Second); code != 503 || g.Error != "store_unavailable" {
		t.Errorf("redis hung: %d %+v, want 503 store_unavailable", code, g)
	}
	srv.Resume()

	srv.Kill()
	for i := 0; i < 3; i++ {
		if code, g := issueWithin(t, e.addr, "42", fmt.Sprintf("k%d", i), time.Second); code != 503 || g.Error != "store_unavailable" {
			t.Errorf("redis killed: %d %+v, want 503 store_unavailable", code, g)
		}
	}
	if code, _ := order(t, e, "42", "u1", "x"); code != 403 {
		t.Errorf("forged order while redis is down: %d, want 403 (checked locally)", code)
	}
	if code, body := e.adminCall(t, "GET", "/seckill/items/42", ""); code != 503 || body["error"] != "store_unavailable" {
		t.Errorf("admin while redis is down: %d %v", code, body)
	}

	srv.Restart() // empty: the sale must be stocked again
	eventually(t, "admin PUT after redis restart", func() bool {
		code, _ := e.adminCall(t, "PUT", "/seckill/items/42", `{"stock":3}`)
		return code == 200
	})
	// A pooled connection that died with the old server may fail one more call (503, which
	// tells the client to retry); sales must work again right after.
	eventually(t, "token issue after redis restart and restock", func() bool {
		code, _ := issueWithin(t, e.addr, "42", "u1", time.Second)
		return code == 200
	})
	// The admin read may meet such a connection too (503): read until it answers.
	var body map[string]any
	eventually(t, "item 42 readable after redis restart", func() bool {
		var code int
		code, body = e.adminCall(t, "GET", "/seckill/items/42", "")
		return code == 200
	})
	if stock, issued := body["stock"], body["issued"]; stock != 2.0 || issued != 1.0 {
		t.Errorf("after restart: stock %v issued %v, want 2 and 1", stock, issued)
	}
}

// TestSeckillRedisDownAtStart: edge starts without Redis, answers 503 with Retry-After,
// and serves sales once Redis comes up.
func TestSeckillRedisDownAtStart(t *testing.T) {
	old := redisRetryEvery
	redisRetryEvery = 50 * time.Millisecond
	t.Cleanup(func() { redisRetryEvery = old })
	srv := redistest.Start(t)
	srv.Kill()
	e := startSeckill(t, seckillConfig(redisStore(srv.Addr), "127.0.0.1:1"))
	if code, g := issueWithin(t, e.addr, "42", "u1", time.Second); code != 503 || g.Error != "store_unavailable" {
		t.Errorf("redis down at start: %d %+v, want 503 store_unavailable", code, g)
	}
	if code, body := e.adminCall(t, "PUT", "/seckill/items/42", `{"stock":1}`); code != 503 {
		t.Errorf("admin with redis down at start: %d %v, want 503", code, body)
	}
	if got := gathered(t, e.reg, "edge_seckill_store_up"); got != 0 {
		t.Errorf("edge_seckill_store_up = %v, want 0", got)
	}
	srv.Restart()
	eventually(t, "sale after redis came up", func() bool {
		code, _ := e.adminCall(t, "PUT", "/seckill/items/42", `{"stock":1}`)
		return code == 200
	})
	if code, _ := issue(t, e.addr, "42", "u1"); code != 200 {
		t.Errorf("after redis came up: %d", code)
	}
	if got := gathered(t, e.reg, "edge_seckill_store_up"); got != 1 {
		t.Errorf("edge_seckill_store_up = %v, want 1", got)
	}
}

// TestSeckillCheckConnectsNothing: edge -check builds the seckill block without
// opening a connection to Redis.
func TestSeckillCheckConnectsNothing(t *testing.T) {
	addr, accepted := rawOrigin(t, func(net.Conn) {})
	if err := Check(mustParse(t, seckillConfig(redisStore(addr), "127.0.0.1:1"))); err != nil {
		t.Fatalf("check: %v", err)
	}
	// A control connection proves the accept loop counts: it must be the only one.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	eventually(t, "control connection counted", func() bool { return accepted.Load() >= 1 })
	if n := accepted.Load(); n != 1 {
		t.Errorf("check opened %d connections to redis, want 0", n-1)
	}
	if err := Check(mustParse(t, seckillConfig(memoryStore(), "127.0.0.1:1", `token_ttl = "500ms"`))); err == nil {
		t.Errorf("check accepted token_ttl 500ms")
	}
}

// TestSeckillReload: a reload that keeps the store keeps the sale (tokens still order,
// the sold-out state holds); a change of store settings brings a new store.
func TestSeckillReload(t *testing.T) {
	srv := redistest.Start(t)
	o := origintest.Start(t, nil)
	e := startSeckill(t, seckillConfig(memoryStore(), o.Addr))
	e.setStock(t, "42", 2)
	_, g := issue(t, e.addr, "42", "u1")
	issue(t, e.addr, "42", "u2")
	if code, _ := issue(t, e.addr, "42", "u3"); code != 410 {
		t.Fatalf("sold out: %d", code)
	}
	// Same store, new token_ttl: the Gate is new, the memory store is kept.
	if err := e.reload(t, seckillConfig(memoryStore(), o.Addr, `token_ttl = "10m"`)); err != nil {
		t.Fatal(err)
	}
	if code, _ := issue(t, e.addr, "42", "u3"); code != 410 {
		t.Errorf("after reload: %d, want 410 (the sale survives)", code)
	}
	if code, body := order(t, e, "42", "u1", g.Token); code != 200 {
		t.Errorf("order with a token from before the reload: %d %s", code, body)
	}
	// A new store: the memory sale is gone, Redis has none.
	if err := e.reload(t, seckillConfig(redisStore(srv.Addr), o.Addr)); err != nil {
		t.Fatal(err)
	}
	if code, g := issue(t, e.addr, "42", "u3"); code != 404 || g.Error != "no_sale" {
		t.Errorf("after switching to redis: %d %+v, want 404 no_sale", code, g)
	}
	e.setStock(t, "42", 1)
	if code, _ := issue(t, e.addr, "42", "u3"); code != 200 {
		t.Errorf("redis sale after reload: %d", code)
	}
	if v := srv.Do("GET", "sk:{42}:stock"); v != "0" {
		t.Errorf("redis stock = %q, want 0: the sale went to Redis", v)
	}
}

// TestSeckillReclaim: a token that expires unused returns its unit, and a new buyer
// gets it.
func TestSeckillReclaim(t *testing.T) {
	old := seckillReclaimEvery
	seckillReclaimEvery = 20 * time.Millisecond
	t.Cleanup(func() { seckillReclaimEvery = old })
	e := startSeckill(t, seckillConfig(memoryStore(), "127.0.0.1:1", `token_ttl = "1s"`))
	e.setStock(t, "42", 1)
	if code, _ := issue(t, e.addr, "42", "u1"); code != 200 {
		t.Fatalf("u1: %d", code)
	}
	if code, _ := issue(t, e.addr, "42", "u2"); code != 410 {
		t.Fatalf("u2 before expiry: %d, want 410", code)
	}
	eventually(t, "unit of the expired token reclaimed", func() bool {
		stock, issued := e.item(t, "42")
		return stock == 1 && issued == 0
	})
	if code, _ := issue(t, e.addr, "42", "u2"); code != 200 {
		t.Errorf("u2 after reclaim: %d, want 200", code)
	}
}
