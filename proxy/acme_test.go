package proxy

import (
	"fmt"
	"testing"

	"github.com/edge-gw/edge/internal/origintest"
	"github.com/valyala/fasthttp"
)

// While a listener has an acme block, plain listeners answer HTTP-01 challenges the
// responder knows, before the routes; other paths under the prefix, and every path when
// no listener uses ACME, go to the routes.
func TestACMEChallenge(t *testing.T) {
	o := origintest.Start(t, func(ctx *fasthttp.RequestCtx) { fmt.Fprintf(ctx, "origin %s", ctx.Path()) })
	routes := fmt.Sprintf(`
upstream "o" { servers = [%q] }
route "all" {
  match { path = "/" }
  upstream = "o"
}
`, o.Addr)
	e := startEdge(t, routes+`
listener "https" {
  address = "127.0.0.1:0"
  tls {
    acme {
      domains   = ["shop.test"]
      email     = "ops@shop.test"
      directory = "https://127.0.0.1:14000/dir"
    }
  }
}
`)
	e.px.SetACME(func(host, path string) ([]byte, bool) {
		if host == "127.0.0.1" && path == "/.well-known/acme-challenge/tok1" {
			return []byte("tok1.thumbprint"), true
		}
		return nil, false
	})
	get := func(e *testEdge, path string) (int, string) {
		r := e.do(t, "GET", path) // Host: 127.0.0.1:PORT, the port dropped for the responder
		return r.StatusCode(), string(r.Body())
	}
	if code, body := get(e, "/.well-known/acme-challenge/tok1"); code != 200 || body != "tok1.thumbprint" {
		t.Errorf("challenge: %d %q", code, body)
	}
	if code, body := get(e, "/.well-known/acme-challenge/other"); code != 200 || body != "origin /.well-known/acme-challenge/other" {
		t.Errorf("unknown token: %d %q, want the route's answer", code, body)
	}
	plain := startEdge(t, routes)
	plain.px.SetACME(*e.px.acme.Load())
	if code, body := get(plain, "/.well-known/acme-challenge/tok1"); body != "origin /.well-known/acme-challenge/tok1" {
		t.Errorf("without an acme block: %d %q, want the route's answer", code, body)
	}
}
