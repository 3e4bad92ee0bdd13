package proxy

import (
	"net/netip"

	"github.com/valyala/fasthttp"
)

// routeLimits is the compiled limit blocks of one route (issue 3).
type routeLimits struct{}

// buildLimits compiles rt's limit blocks into rt.limits (nil when none).
func (p *Proxy) buildLimits(s *Snapshot, prev *Snapshot, rt *route) error { return nil }

// allowLimits runs the route's limits. False means a limit said no and ctx holds
// the route's reject answer.
func (p *Proxy) allowLimits(ctx *fasthttp.RequestCtx, s *Snapshot, rt *route, client netip.Addr) bool {
	return true
}

// limitState is what this feature keeps across reloads (created by initLimits in New).
type limitState struct{}

// initLimits creates the feature's long-lived state and registers its metrics.
func (p *Proxy) initLimits() { p.limitState = &limitState{} }
