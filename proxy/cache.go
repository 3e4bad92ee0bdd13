package proxy

import (
	"net/netip"

	"github.com/valyala/fasthttp"
)

// routeCache is the compiled cache block of one route (issue 6).
type routeCache struct{}

// buildCache compiles rt's cache block into rt.cache (nil when none).
func (p *Proxy) buildCache(s *Snapshot, prev *Snapshot, rt *route) error { return nil }

// serveCached answers from the cache or forwards (forwardRoute) and stores.
func (p *Proxy) serveCached(ctx *fasthttp.RequestCtx, s *Snapshot, rt *route, peer, client netip.Addr, sc *scratch) {
	p.forwardRoute(ctx, s, rt, peer, client, sc)
}
