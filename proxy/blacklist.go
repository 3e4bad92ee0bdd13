package proxy

import (
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
