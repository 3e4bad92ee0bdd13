package proxy

import (
	"fmt"
	"testing"

	"github.com/edge-gw/edge/internal/origintest"
	"github.com/valyala/fasthttp"
)

const doorConfig = `
trusted_proxies = ["127.0.0.1/32"]
listener "https" {
  address = "127.0.0.1:8443"
  tls {
    certificate {
      cert_file = "a.pem"
      key_file  = "a.key"
    }
  }
  hsts                    = "30d"
  hsts_include_subdomains = true
}
listener "http" {
  address        = "127.0.0.1:8081"
  https_redirect = true
}
upstream "app" {
  servers = [%q]
}
route "internal" {
  match {
    path     = "/"
    listener = "default"
  }
  respond {
    status = 200
    body   = "internal"
  }
}
route "app" {
  match { path = "/" }
  upstream = "app"
}
`

// serveVia runs ctx through the handler of listener name, as the listener would.
func serveVia(h fasthttp.RequestHandler, ctx *fasthttp.RequestCtx, req *fasthttp.Request) {
	ctx.Init2(ctx.Conn(), quietLogger, true)
	req.CopyTo(&ctx.Request)
	ctx.Response.Reset()
	h(ctx)
}

func TestDoors(t *testing.T) {
	o := origintest.Start(t, func(ctx *fasthttp.RequestCtx) {
		ctx.Write(ctx.Request.Header.Peek("X-Forwarded-Proto"))
	})
	px := benchProxy(t, fmt.Sprintf(doorConfig, o.Addr))
	https := px.ListenerHandler("https", ProtoH2)
	http := px.ListenerHandler("http", ProtoHTTP1)

	f := func(h fasthttp.RequestHandler, uri, host string, status int, body, location, hsts string) {
		t.Helper()
		ctx := handlerCtx("GET", uri)
		if host != "" {
			ctx.Request.Header.SetHost(host)
		}
		var req fasthttp.Request
		ctx.Request.CopyTo(&req)
		serveVia(h, ctx, &req)
		r := &ctx.Response
		if r.StatusCode() != status || string(r.Body()) != body || string(r.Header.Peek("Location")) != location ||
			string(r.Header.Peek("Strict-Transport-Security")) != hsts {
			t.Errorf("GET %s (host %q) = %d %q Location %q HSTS %q; want %d %q %q %q", uri, host, r.StatusCode(), r.Body(),
				r.Header.Peek("Location"), r.Header.Peek("Strict-Transport-Security"), status, body, location, hsts)
		}
	}
	// The top-level listen matches the route for listener "default"; the others skip it.
	f(px.Handler, "/x", "", 200, "internal", "", "")
	f(https, "/x", "", 200, "https", "", "max-age=2592000; includeSubDomains")
	// https_redirect: same host and target, the TLS listener's port.
	f(http, "/a/b?c=d&e", "shop.example", 308, "", "https://shop.example:8443/a/b?c=d&e", "")
	f(http, "/a", "shop.example:8081", 308, "", "https://shop.example:8443/a", "")
	f(http, "/a", "[::1]:8081", 308, "", "https://[::1]:8443/a", "")
	// A Host that is no host is refused over HTTP/1.1 before the redirect sees it
	// (framing.go).
	f(http, "/a", "bad\"host", 400, `{"error":"bad_request"}`, "", "")
	// A handler for a listener the config does not have (being drained) serves with
	// plain settings.
	f(px.ListenerHandler("gone", ProtoHTTP1), "/x", "", 200, "http", "", "")
}
