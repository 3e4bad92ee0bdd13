package proxy

import (
	"net/http"

	"github.com/edge-gw/edge/admin"
	"github.com/edge-gw/edge/config"
)

// adminUpstreams registers GET /upstreams and GET /cells: servers with their
// health as edge sees it now, and for cells the weights and availability.
func (p *Proxy) adminUpstreams(api *admin.API) {
	api.Handle("GET /upstreams", func(w http.ResponseWriter, r *http.Request) {
		s := p.snap.Load()
		out := []upstreamInfo{}
		if s != nil {
			for _, u := range s.Config.Upstreams {
				pl := s.pools[u.Name]
				if pl == nil {
					continue
				}
				out = append(out, upstreamInfo{Name: u.Name, Timeout: u.Timeout.String(),
					HealthCheck: checkInfoOf(u.HealthCheck), Servers: p.serverInfos(pl), Breaker: guardInfo(pl)})
			}
		}
		admin.JSON(w, http.StatusOK, map[string]any{"upstreams": out})
	})
	api.Handle("GET /cells", func(w http.ResponseWriter, r *http.Request) {
		s := p.snap.Load()
		out := []cellsInfo{}
		if s != nil {
			for _, cc := range s.Config.Cells {
				g := s.cells[cc.Name]
				if g == nil {
					continue
				}
				ci := cellsInfo{Name: g.name, Key: cc.Key.Text, MissingKey: cc.MissingKey, Spill: g.spill,
					Timeout: cc.Timeout.String(), HealthCheck: checkInfoOf(cc.HealthCheck)}
				total := 0.0
				for _, c := range g.cells {
					total += c.weight
				}
				for _, c := range g.cells {
					ci.Cells = append(ci.Cells, cellInfo{Name: c.name, Weight: c.weight, Share: c.weight / total,
						Available: c.pool.available(), Servers: p.serverInfos(c.pool), Breaker: guardInfo(c.pool)})
				}
				out = append(out, ci)
			}
		}
		admin.JSON(w, http.StatusOK, map[string]any{"cells": out})
	})
}

type upstreamInfo struct {
	Name        string       `json:"name"`
	Timeout     string       `json:"timeout"`
	HealthCheck *checkInfo   `json:"health_check"`
	Servers     []serverInfo `json:"servers"`
	Breaker     *breakerInfo `json:"breaker,omitempty"` // breaker and bulkhead (breaker.go); absent: none
}

type cellsInfo struct {
	Name        string     `json:"name"`
	Key         string     `json:"key"`
	MissingKey  string     `json:"missing_key"`
	Spill       bool       `json:"spill"`
	Timeout     string     `json:"timeout"`
	HealthCheck *checkInfo `json:"health_check"`
	Cells       []cellInfo `json:"cells"`
}

type cellInfo struct {
	Name      string       `json:"name"`
	Weight    float64      `json:"weight"`
	Share     float64      `json:"share"`     // weight / Σ weights: expected share of users
	Available bool         `json:"available"` // some server is up
	Servers   []serverInfo `json:"servers"`
	Breaker   *breakerInfo `json:"breaker,omitempty"` // the cell's breaker (breaker.go); absent: none
}

type serverInfo struct {
	Addr string `json:"addr"`
	Up   bool   `json:"up"` // gets traffic now
	// Active is the verdict of active checks: "up", "down" or "unchecked".
	Active string `json:"active"`
	// Ejected is true during a passive cool-off; Failures counts the current streak.
	Ejected  bool  `json:"ejected"`
	Failures int32 `json:"consecutive_failures"`
}

type checkInfo struct {
	Path     string `json:"path"`
	Interval string `json:"interval"`
	Timeout  string `json:"timeout"`
	Rise     int    `json:"rise"`
	Fall     int    `json:"fall"`
}

func checkInfoOf(hc *config.HealthCheck) *checkInfo {
	if hc == nil {
		return nil
	}
	return &checkInfo{Path: hc.Path, Interval: hc.Interval.String(), Timeout: hc.Timeout.String(), Rise: hc.Rise, Fall: hc.Fall}
}

func (p *Proxy) serverInfos(pl *pool) []serverInfo {
	out := make([]serverInfo, 0, len(pl.servers))
	for _, srv := range pl.servers {
		h := srv.health
		active := "unchecked"
		if p.cellState.health.checking(h) {
			active = "up"
			if h.activeDown.Load() {
				active = "down"
			}
		}
		out = append(out, serverInfo{Addr: srv.addr, Up: h.up(), Active: active, Ejected: h.ejected(), Failures: h.fails.Load()})
	}
	return out
}
