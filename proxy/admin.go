package proxy

import "github.com/edge-gw/edge/admin"

// RegisterAdmin adds the proxy's operator endpoints (blacklist, cache purge,
// seckill items, upstreams, cells) to api. Each feature's file provides its own
// adminX method; this is the one list of them.
func (p *Proxy) RegisterAdmin(api *admin.API) {
	p.adminBlacklist(api)
	p.adminCache(api)
	p.adminSeckill(api)
	p.adminUpstreams(api)
	p.adminDegrade(api)
	p.adminCluster(api)
	p.adminRooms(api)
}
