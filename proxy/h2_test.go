package proxy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/edge-gw/edge/h2"
	"github.com/edge-gw/edge/internal/origintest"
	"github.com/valyala/fasthttp"
)

// funnelConfig has one route per layer of the funnel: a limit, a ban (10.0.0.0/8 via
// a trusted X-Forwarded-For), a cache, seckill tokens (memory store), cells and an
// idempotent route.
func funnelConfig(origin string) string {
	return fmt.Sprintf(`
trusted_proxies = ["127.0.0.1/32"]
blacklist {
  ips = ["10.0.0.0/8"]
}
upstream "app" {
  servers = [%[1]q]
}
cells "shop" {
  key = "header:X-User-Id"
  cell "c1" { servers = [%[1]q] }
  cell "c2" { servers = [%[1]q] }
}
seckill {
  store  = "memory"
  secret = %[2]q
}
route "seckill" {
  match {
    path    = "/seckill/"
    methods = ["POST"]
  }
  seckill = true
}
route "limited" {
  match { path = "/limited/" }
  upstream = "app"
  limit "user" {
    key   = "header:X-User-Id"
    rate  = "1r/m"
    burst = 1
  }
}
route "cached" {
  match { path = "/cached/" }
  upstream = "app"
  cache { ttl = "1m" }
}
route "cells" {
  match { path = "/cells/" }
  cells = "shop"
}
route "orders" {
  match { path = "/orders/" }
  upstream = "app"
  idempotency {}
}
route "app" {
  match { path = "/" }
  upstream = "app"
}
`, origin, testSeckillSecret)
}

// seen is what a client sees of one exchange, for comparing HTTP/1.1 and HTTP/2.
type seen struct {
	status  int
	headers map[string]string
	body    string
}

func exchangeWith(t *testing.T, c *http.Client, method, url, body string, headers ...string) seen {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a := seen{status: resp.StatusCode, headers: map[string]string{}, body: string(b)}
	for _, h := range []string{"Retry-After", "X-Cache", "X-Edge-Cell", "Idempotent-Replayed", "Content-Type"} {
		a.headers[h] = resp.Header.Get(h)
	}
	return a
}

// serveH2C serves HTTP/2 by prior knowledge through handler on a fresh port, for an edge
// with the default max_body_size.
func serveH2C(t testing.TB, handler fasthttp.RequestHandler) string {
	return serveH2CMax(t, handler, 4<<20)
}

// serveH2CMax is serveH2C for an edge whose max_body_size is maxBody.
func serveH2CMax(t testing.TB, handler fasthttp.RequestHandler, maxBody int64) string {
	return serveH2CWith(t, handler, h2.Config{StreamRequest: StreamRequest(maxBody)})
}

// serveH2CWith is serveH2C with the server's configuration cfg.
func serveH2CWith(t testing.TB, handler fasthttp.RequestHandler, cfg h2.Config) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &h2.Server{Handler: handler, Config: cfg}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go srv.ServeConn(c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return ln.Addr().String()
}

// h2cClient speaks HTTP/2 by prior knowledge on plain TCP; each exchange must end
// within 5s.
func h2cClient() *http.Client {
	c := h2cStreamClient()
	c.Timeout = 5 * time.Second
	return c
}

// h2cStreamClient is h2cClient without a bound on an exchange's time, for long streams.
func h2cStreamClient() *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: &p}}
}

// Over HTTP/2 every layer of the funnel answers as it does over HTTP/1.1.
func TestH2FunnelParity(t *testing.T) {
	var hits int
	o := origintest.Start(t, func(ctx *fasthttp.RequestCtx) {
		hits++
		ctx.Response.Header.Set("Cache-Control", "max-age=60")
		fmt.Fprintf(ctx, "origin %s %s proto=%s xfp=%s", ctx.Method(), ctx.Path(), ctx.Request.Header.Protocol(),
			ctx.Request.Header.Peek("X-Forwarded-Proto"))
	})
	e := startSeckill(t, funnelConfig(o.Addr))
	e.setStock(t, "42", 5)
	h2addr := serveH2C(t, e.px.ListenerHandler("inner", ProtoH2))
	checkFunnelParity(t, e, h2cClient(), "http://"+h2addr, "HTTP/2")
}

// checkFunnelParity runs every layer of the funnel of e (funnelConfig, item 42 with a
// stock of 5) over HTTP/1.1 and over alt (name: its protocol, for messages) at base,
// and checks each answers as it should, edge's own answers byte for byte alike.
func checkFunnelParity(t *testing.T, e *seckillEdge, alt *http.Client, base, name string) {
	t.Helper()
	h1 := &http.Client{Timeout: 5 * time.Second}
	type step struct {
		name, method, path, body string
		headers                  []string
		want                     func(a seen) string // "" when a is right
	}
	same := func(h1a, alta seen) string {
		if fmt.Sprint(h1a) != fmt.Sprint(alta) {
			return fmt.Sprintf("HTTP/1.1 %+v\n%s %+v", h1a, name, alta)
		}
		return ""
	}
	// Each step runs over HTTP/1.1 with user u1 and over alt with user u2, so that
	// per-user state (limits, tokens) starts equal for both.
	steps := []step{
		{"proxied", "GET", "/plain", "", nil, func(a seen) string {
			if a.status != 200 || a.body != "origin GET /plain proto=HTTP/1.1 xfp=http" {
				return fmt.Sprintf("%+v", a)
			}
			return ""
		}},
		{"limit first", "GET", "/limited/1", "", []string{"X-User-Id", "U"}, func(a seen) string {
			if a.status != 200 {
				return fmt.Sprintf("%+v", a)
			}
			return ""
		}},
		{"limit 429", "GET", "/limited/1", "", []string{"X-User-Id", "U"}, func(a seen) string {
			if a.status != 429 || a.headers["Retry-After"] == "" || a.headers["Retry-After"] == "0" {
				return fmt.Sprintf("%+v", a)
			}
			return ""
		}},
		{"blacklist", "GET", "/plain", "", []string{"X-Forwarded-For", "10.1.2.3"}, func(a seen) string {
			if a.status != 403 || !strings.Contains(a.body, `"error"`) {
				return fmt.Sprintf("%+v", a)
			}
			return ""
		}},
		{"cache fill", "GET", "/cached/P", "", nil, func(a seen) string {
			if a.status != 200 || a.headers["X-Cache"] != "MISS" {
				return fmt.Sprintf("%+v", a)
			}
			return ""
		}},
		{"cache hit", "GET", "/cached/P", "", nil, func(a seen) string {
			if a.status != 200 || a.headers["X-Cache"] != "HIT" {
				return fmt.Sprintf("%+v", a)
			}
			return ""
		}},
		{"cell", "GET", "/cells/x", "", []string{"X-User-Id", "U"}, func(a seen) string {
			if a.status != 200 || a.headers["X-Edge-Cell"] == "" {
				return fmt.Sprintf("%+v", a)
			}
			return ""
		}},
		{"idempotent first", "POST", "/orders/1", `{"qty":1}`, []string{"Idempotency-Key", "K", "X-User-Id", "U"}, func(a seen) string {
			if a.status != 200 || a.headers["Idempotent-Replayed"] != "" {
				return fmt.Sprintf("%+v", a)
			}
			return ""
		}},
		{"idempotent replay", "POST", "/orders/1", `{"qty":1}`, []string{"Idempotency-Key", "K", "X-User-Id", "U"}, func(a seen) string {
			if a.status != 200 || a.headers["Idempotent-Replayed"] != "true" {
				return fmt.Sprintf("%+v", a)
			}
			return ""
		}},
		{"body on GET", "GET", "/plain", strings.Repeat("x", 1000), nil, func(a seen) string {
			if a.status != 200 {
				return fmt.Sprintf("%+v", a)
			}
			return ""
		}},
	}
	for _, s := range steps {
		var got [2]seen
		for i, c := range []struct {
			client *http.Client
			base   string
			user   string
		}{{h1, "http://" + e.addr, "u1"}, {alt, base, "u2"}} {
			hs := append([]string(nil), s.headers...)
			for j := range hs {
				if hs[j] == "U" {
					hs[j] = c.user
				}
			}
			path := strings.ReplaceAll(s.path, "P", c.user)
			got[i] = exchangeWith(t, c.client, s.method, c.base+path, s.body, hs...)
			if msg := s.want(got[i]); msg != "" {
				t.Errorf("%s over %s: %s", s.name, []string{"HTTP/1.1", name}[i], msg)
			}
		}
		if s.name == "limit 429" || s.name == "blacklist" { // edge's own answers: byte for byte
			if msg := same(got[0], got[1]); msg != "" {
				t.Errorf("%s differs over %s:\n%s", s.name, name, msg)
			}
		}
	}

	// Seckill: one token per user, the same on asking again, over both protocols.
	token := func(c *http.Client, base, user string) (int, string) {
		a := exchangeWith(t, c, "POST", base+"/seckill/42/token", "", "X-User-Id", user)
		var body struct{ Token, Item, User string }
		json.Unmarshal([]byte(a.body), &body)
		if body.Item != "42" || body.User != user {
			t.Errorf("token answer for %s = %+v", user, a)
		}
		return a.status, body.Token
	}
	c1, t1 := token(h1, "http://"+e.addr, "s1")
	c2, t2 := token(alt, base, "s2")
	c3, t3 := token(alt, base, "s2")
	if c1 != 200 || c2 != 200 || c3 != 200 || t1 == "" || t2 == "" || t2 != t3 || t1 == t2 {
		t.Errorf("tokens: %d %q, %d %q, %d %q", c1, t1, c2, t2, c3, t3)
	}
	if stock, issued := e.item(t, "42"); stock != 3 || issued != 2 {
		t.Errorf("stock %d issued %d, want 3 and 2", stock, issued)
	}
}

// An HTTP/2 request through the proxy allocates no more than its HTTP/1.1 twin plus
// the framing: measured by BenchmarkProxyGETH2 next to BenchmarkProxyGET.
func BenchmarkProxyGETH2(b *testing.B) {
	o := origintest.Start(b, nil)
	e := startEdge(b, upstreamConfig(o.Addr))
	addr := serveH2C(b, e.px.ListenerHandler("inner", ProtoH2))
	c := h2cClient()
	url := "http://" + addr + "/app/x"
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		resp, err := c.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
}
