package proxy

import (
	"github.com/edge-gw/edge/admin"
	"net/netip"

	"github.com/valyala/fasthttp"
)

// snapBlacklist is the blacklist of one snapshot (issue 7).
type snapBlacklist struct{}

// buildBlacklist sets s.blacklist from the config's blacklist block.
func (p *Proxy) buildBlacklist(s *Snapshot, prev *Snapshot) error { return nil }

// blocked reports whether the client or its user is banned; when true, ctx holds
// the 403 answer.
func (p *Proxy) blocked(ctx *fasthttp.RequestCtx, s *Snapshot, client netip.Addr) bool { return false }

// onLimitReject is told of every limit rejection, for auto-ban.
func (p *Proxy) onLimitReject(s *Snapshot, client netip.Addr) {}

// blacklistState is what this feature keeps across reloads (created by initBlacklist in New).
type blacklistState struct{}

// initBlacklist creates the feature's long-lived state and registers its metrics.
func (p *Proxy) initBlacklist() { p.blacklistState = &blacklistState{} }

// adminBlacklist registers the feature's admin endpoints.
func (p *Proxy) adminBlacklist(api *admin.API) {}
