package main

import (
	"fmt"

	"github.com/edge-gw/edge/config"
	"github.com/edge-gw/edge/proxy"
	"github.com/edge-gw/edge/shard"
	"github.com/edge-gw/edge/stream"
)

// streamSpecs builds the L4 streams of cfg. Blacklist checks go to px, so bans made
// through the admin API close stream connections too.
func streamSpecs(cfg *config.Config, px *proxy.Proxy) ([]*stream.Spec, error) {
	ups := map[string]*config.Upstream{}
	for _, u := range cfg.Upstreams {
		ups[u.Name] = u
	}
	cells := map[string]*config.Cells{}
	for _, c := range cfg.Cells {
		cells[c.Name] = c
	}
	upstreamPool := func(name string) *stream.Pool {
		u := ups[name]
		return stream.NewPool(name, u.Servers, stream.PoolOptions{ConnectTimeout: u.ConnectTimeout, ProxyProtocol: u.Proto.ProxyProtocol})
	}
	var specs []*stream.Spec
	for _, s := range cfg.Streams {
		sp := &stream.Spec{Name: s.Name, Address: s.Listen, Protocol: s.Protocol,
			ProxyProtocol: s.ProxyProtocol, Trusted: cfg.TrustedProxies,
			HandshakeTimeout: s.HandshakeTimeout, IdleTimeout: s.IdleTimeout,
			MaxConns: s.MaxConns, MaxConnsPerIP: s.MaxConnsPerIP,
			ConnRate: s.ConnRate.PerSecond, ConnBurst: s.ConnBurst, MaxSessions: s.MaxSessions,
			Banned: px.BlockedIP}
		if s.Upstream != "" {
			sp.Pool = upstreamPool(s.Upstream)
		}
		if s.Cells != "" {
			c, err := streamCells(cells[s.Cells])
			if err != nil {
				return nil, fmt.Errorf("stream %q: %w", s.Name, err)
			}
			sp.Cells = c
		}
		if len(s.SNI) > 0 {
			routes := make([]stream.SNIRoute, len(s.SNI))
			sp.Pools = map[string]*stream.Pool{}
			if sp.Pool != nil {
				sp.Pools[s.Upstream] = sp.Pool
			}
			for i, r := range s.SNI {
				routes[i] = stream.SNIRoute{Pattern: r.Pattern, Target: r.Upstream}
				if sp.Pools[r.Upstream] == nil {
					sp.Pools[r.Upstream] = upstreamPool(r.Upstream)
				}
			}
			router, err := stream.NewSNIRouter(routes, s.Upstream)
			if err != nil {
				return nil, fmt.Errorf("stream %q: %w", s.Name, err)
			}
			sp.SNI = router
		}
		specs = append(specs, sp)
	}
	return specs, nil
}

// streamCells builds a cells block's ring the way the proxy does (proxy.RingOf), so a
// client address picks the same cell for a stream as for HTTP.
func streamCells(cc *config.Cells) (*stream.Cells, error) {
	sorted, ring := proxy.RingOf(cc)
	pools := make([]*stream.Pool, len(sorted))
	for i, c := range sorted {
		pools[i] = stream.NewPool(cc.Name+"/"+c.Name, c.Servers,
			stream.PoolOptions{ConnectTimeout: cc.ConnectTimeout, ProxyProtocol: cc.Proto.ProxyProtocol})
	}
	r, err := shard.New(ring)
	if err != nil {
		return nil, err
	}
	return stream.NewCells(cc.Name, r, pools)
}
