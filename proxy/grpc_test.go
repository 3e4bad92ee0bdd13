package proxy

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

)

func grpcConfig(upstream string) string {
	return fmt.Sprintf(`
trusted_proxies = ["127.0.0.1/32"]
blacklist {
  ips = ["10.0.0.0/8"]
}
upstream "grpc" {
  servers  = [%q]
  protocol = "h2c"
  timeout  = "2s"
}
upstream "down" {
  servers         = ["127.0.0.1:1"]
  protocol        = "h2c"
  connect_timeout = "200ms"
}
route "limited" {
  match { path = "/grpctest.Raw/Echo" }
  upstream = "grpc"
  limit "user" {
    key   = "header:X-User-Id"
    rate  = "1r/m"
    burst = 1
  }
}
route "down" {
  match { path = "/grpctest.Down/" }
  upstream = "down"
}
route "grpc" {
  match { path = "/" }
  upstream = "grpc"
}
`, upstream)
}

// A plain HTTP/2 (h2c) upstream: an HTTP/1.1 client gets its answer, which streams.
func TestH2Upstream(t *testing.T) {
	origin := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "proto=%s path=%s xff=%s", r.Proto, r.URL.Path, r.Header.Get("X-Forwarded-For"))
	}))
	origin.Config.Protocols = new(http.Protocols)
	origin.Config.Protocols.SetUnencryptedHTTP2(true) // h2c only: an HTTP/1.1 request would fail
	origin.Start()
	t.Cleanup(origin.Close)
	e := startEdge(t, grpcConfig(origin.Listener.Addr().String()))
	resp, err := http.Get("http://" + e.addr + "/plain")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "proto=HTTP/2.0 path=/plain xff=127.0.0.1" {
		t.Errorf("through an h2c upstream: %d %q", resp.StatusCode, b)
	}
}
