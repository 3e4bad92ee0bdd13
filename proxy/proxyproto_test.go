package proxy

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/edge-gw/edge/proxyproto"
	"github.com/valyala/fasthttp"
)

// An upstream with proxy_protocol learns each request's client from a PROXY header at
// the start of a connection that carries that request only; X-Forwarded-For from a
// trusted proxy names the client in the header too.
func TestUpstreamProxyProtocol(t *testing.T) {
	var conns atomic.Int64
	origin, _ := rawOrigin(t, func(c net.Conn) {
		conns.Add(1)
		pc, err := proxyproto.Read(c, proxyproto.Options{})
		if err != nil {
			fmt.Fprintf(c, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
			return
		}
		req, err := http.ReadRequest(bufio.NewReader(pc))
		if err != nil {
			return
		}
		body := fmt.Sprintf("v%d %s close=%v", pc.Header().Version, pc.RemoteAddr(), req.Close)
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	})
	e := startEdge(t, fmt.Sprintf(`
trusted_proxies = ["127.0.0.1/32"]
upstream "v1" {
  servers        = [%[1]q]
  proxy_protocol = "v1"
}
upstream "v2" {
  servers        = [%[1]q]
  proxy_protocol = "v2"
}
route "v1" {
  match { path = "/v1/" }
  upstream = "v1"
}
route "v2" {
  match { path = "/v2/" }
  upstream = "v2"
}
`, origin))
	c := &fasthttp.HostClient{Addr: e.addr, MaxConns: 1} // one keep-alive connection to edge
	var local string
	for i, path := range []string{"/v1/a", "/v1/b", "/v2/a", "/v2/b"} {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		req.SetRequestURI("http://" + e.addr + path)
		if err := c.Do(req, resp); err != nil {
			t.Fatal(err)
		}
		got := string(resp.Body())
		if i == 0 {
			local = strings.Fields(got)[1] // the client's own address, port included
		}
		want := fmt.Sprintf("%s %s close=true", path[1:3], local)
		if resp.StatusCode() != 200 || got != want || !strings.HasPrefix(local, "127.0.0.1:") {
			t.Errorf("%s: %d %q, want %q", path, resp.StatusCode(), got, want)
		}
		fasthttp.ReleaseRequest(req)
		fasthttp.ReleaseResponse(resp)
	}
	if n := conns.Load(); n != 4 {
		t.Errorf("origin saw %d connections for 4 requests, want one each (a header names one client)", n)
	}
	r := e.do(t, "GET", "/v2/x", "X-Forwarded-For", "203.0.113.9")
	if got := string(r.Body()); !strings.HasPrefix(got, "v2 203.0.113.9:0 ") {
		t.Errorf("behind a trusted proxy: %q, want the X-Forwarded-For client in the header", got)
	}
}
