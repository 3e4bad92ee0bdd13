package proxy

import (
	"github.com/edge-gw/edge/admin"
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

// cellState is what this feature keeps across reloads (created by initCells in New).
type cellState struct{}

// initCells creates the feature's long-lived state and registers its metrics.
func (p *Proxy) initCells() { p.cellState = &cellState{} }

// adminUpstreams registers the feature's admin endpoints.
func (p *Proxy) adminUpstreams(api *admin.API) {}
