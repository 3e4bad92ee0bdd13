package proxy

import (
	"net/netip"

	"github.com/valyala/fasthttp"
)

// cellGroup is one compiled cells block (issue 5).
type cellGroup struct{}

// buildCells sets s.cells from the config's cells blocks.
func (p *Proxy) buildCells(s *Snapshot, prev *Snapshot) error { return nil }

// forwardCells sends the request to the cell that owns its shard key.
func (p *Proxy) forwardCells(ctx *fasthttp.RequestCtx, s *Snapshot, rt *route, peer, client netip.Addr, sc *scratch) {
	errNotImplemented.write(ctx)
}
