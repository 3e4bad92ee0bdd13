//go:build !race

package listener

import (
	"testing"

	"github.com/valyala/fasthttp"
)

// Alt-Svc is a value built once per UDP socket: adding it to an answer allocates nothing.
func TestAdvertiseAllocs(t *testing.T) {
	l := &Listener{}
	l.quic.Store(&quicSide{altSvc: []byte(`h3=":8443"; ma=86400`)})
	var ctx fasthttp.RequestCtx
	l.advertise(&ctx)
	if got := string(ctx.Response.Header.Peek("Alt-Svc")); got != `h3=":8443"; ma=86400` {
		t.Fatalf("Alt-Svc = %q", got)
	}
	if n := testing.AllocsPerRun(1000, func() {
		ctx.Response.Reset()
		l.advertise(&ctx)
	}); n != 0 {
		t.Errorf("advertise: %v allocations, want 0", n)
	}
}
