package proxy

import (
	"github.com/edge-gw/edge/admin"
	"net/netip"

	"github.com/valyala/fasthttp"
)

// snapSeckill is the seckill block of one snapshot (issue 4).
type snapSeckill struct{}

// buildSeckill sets s.seckill from the config's seckill block.
func (p *Proxy) buildSeckill(s *Snapshot, prev *Snapshot) error { return nil }

// issueToken answers POST /seckill/{item}/token.
func (p *Proxy) issueToken(ctx *fasthttp.RequestCtx, s *Snapshot, rt *route, client netip.Addr) {
	errNotImplemented.write(ctx)
}

// checkToken verifies and consumes X-Seckill-Token on require_token routes; false
// means ctx holds the 403 or 409 answer.
func (p *Proxy) checkToken(ctx *fasthttp.RequestCtx, s *Snapshot, rt *route, client netip.Addr) bool {
	errNotImplemented.write(ctx)
	return false
}

// seckillState is what this feature keeps across reloads (created by initSeckill in New).
type seckillState struct{}

// initSeckill creates the feature's long-lived state and registers its metrics.
func (p *Proxy) initSeckill() { p.seckillState = &seckillState{} }

// adminSeckill registers the feature's admin endpoints.
func (p *Proxy) adminSeckill(api *admin.API) {}
