package proxy

import (
	"bufio"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/edge-gw/edge/internal/origintest"
	"github.com/valyala/fasthttp"
)

// TestNoHost: HTTP/1.0 lets a client leave Host out, and the HTTP/1.1 exchange with the
// upstream cannot do without it; a Host with userinfo ("user@") loses its host on the
// way. Such a request is the client's fault: it gets 400 and counts nothing against the
// servers (upstream errors, passive health, breaker), which a stream of them would
// otherwise mark failing. Found by FuzzRequestHead (they were 502, and 400 from the
// origin).
func TestNoHost(t *testing.T) {
	o1, o2 := origintest.Start(t, nil), origintest.Start(t, nil)
	e := startEdge(t, fmt.Sprintf(`
upstream "app" {
  servers = [%q, %q]
}
route "app" {
  match { path = "/" }
  upstream = "app"
}
`, o1.Addr, o2.Addr))
	for i := range 20 {
		head := "GET /app/x HTTP/1.0\r\n\r\n"
		if i%2 == 1 { // userinfo: was forwarded as "Host: " plus "Authorization: Basic dXNlcjo=" (found by FuzzRequestHead; framingFault refuses it)
			head = "GET /app/x HTTP/1.1\r\nHost: user@\r\n\r\n"
		}
		c, err := net.Dial("tcp", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write([]byte(head)); err != nil {
			t.Fatal(err)
		}
		var resp fasthttp.Response
		err = resp.Read(bufio.NewReader(c))
		c.Close()
		if err != nil || resp.StatusCode() != 400 || string(resp.Body()) != `{"error":"bad_request"}` {
			t.Fatalf("%q: %d %q, %v; want 400 bad_request", head, resp.StatusCode(), resp.Body(), err)
		}
	}
	if n := gathered(t, e.reg, "edge_upstream_errors_total"); n != 0 {
		t.Errorf("edge_upstream_errors_total = %v after requests without Host, want 0", n)
	}
	if n := o1.Requests.Load() + o2.Requests.Load(); n != 0 {
		t.Errorf("the origins got %d requests", n)
	}
	if r := e.do(t, "GET", "/app/x"); r.StatusCode() != 200 {
		t.Errorf("a request with Host afterwards: %d %s", r.StatusCode(), r.Body())
	}
}
