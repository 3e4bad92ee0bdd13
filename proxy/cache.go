package proxy

import (
	"github.com/edge-gw/edge/admin"
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

// cacheState is what this feature keeps across reloads (created by initCache in New).
type cacheState struct{}

// initCache creates the feature's long-lived state and registers its metrics.
func (p *Proxy) initCache() { p.cacheState = &cacheState{} }

// adminCache registers the feature's admin endpoints.
func (p *Proxy) adminCache(api *admin.API) {}
