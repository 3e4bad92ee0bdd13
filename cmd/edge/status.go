package main

import (
	"context"

	"github.com/edge-gw/edge/admin"
	"github.com/edge-gw/edge/admin/status"
	"github.com/edge-gw/edge/proxy"
	"github.com/prometheus/client_golang/prometheus"
)

// statusItems is how many seckill items the status page shows (one store call each
// per poll).
const statusItems = 50

// registerStatus adds the live status page (GET /, GET /status.json) to api. The page
// reads reg; cluster members come from node (nil without a cluster block), seckill
// stock from the proxy's current config.
func registerStatus(api *admin.API, reg prometheus.Gatherer, px *proxy.Proxy, node *clusterNode) {
	src := status.Sources{
		Seckill: func(ctx context.Context) ([]status.Item, bool) {
			items, ok := px.SeckillItems(ctx, statusItems)
			out := make([]status.Item, len(items))
			for i, it := range items {
				out[i] = status.Item{Item: it.Item, Stock: it.Stock, Issued: it.Issued}
			}
			return out, ok
		},
	}
	if node != nil {
		src.Members = func() []status.Member {
			ms := node.c.Members()
			out := make([]status.Member, len(ms))
			for i, m := range ms {
				out[i] = status.Member{Name: m.Name, Address: m.Addr, State: m.State.String(), Local: m.Local}
			}
			return out
		}
	}
	status.Register(api, reg, src)
}
