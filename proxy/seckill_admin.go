package proxy

import (
	"net/http"

	"github.com/edge-gw/edge/admin"
	"github.com/edge-gw/edge/seckill"
)

// adminSeckill registers the feature's admin endpoints:
//
//	PUT  /seckill/items/{item}          {"stock":100} → starts (or restarts) the sale
//	GET  /seckill/items/{item}          → {"item":"…","stock":N,"issued":M}
//	POST /seckill/items/{item}/release  {"user":"u1"} → {"released":true|false}
func (p *Proxy) adminSeckill(api *admin.API) {
	api.Handle("PUT /seckill/items/{item}", p.adminSetStock)
	api.Handle("GET /seckill/items/{item}", p.adminItem)
	api.Handle("POST /seckill/items/{item}/release", p.adminRelease)
}

// adminGate returns the current backend and its Gate, or writes the answer for why
// there is none: 404 without a seckill block, 503 while the store is not connected.
func (p *Proxy) adminGate(w http.ResponseWriter) (*seckillBackend, *seckill.Gate, bool) {
	s := p.Current()
	if s == nil || s.seckill == nil {
		admin.Error(w, http.StatusNotFound, "seckill_not_configured")
		return nil, nil, false
	}
	b := s.seckill.backend
	g := b.current()
	if g == nil {
		adminStoreError(w, seckill.ErrUnavailable)
		return nil, nil, false
	}
	return b, g, true
}

// adminStoreError answers a Gate error with seckill.Status's mapping.
func adminStoreError(w http.ResponseWriter, err error) {
	status, code := seckill.Status(err)
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	admin.Error(w, status, code)
}

// validAdminItem answers 400 naming the problem when item cannot name a sale.
func validAdminItem(w http.ResponseWriter, item string) bool {
	if len(item) == 0 || len(item) > seckill.MaxItemLen || containsBrace(item) {
		admin.JSON(w, http.StatusBadRequest, map[string]string{"error": "bad_item",
			"detail": "item must be 1 to 128 bytes without { or }"})
		return false
	}
	return true
}

func containsBrace(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == '{' || s[i] == '}' {
			return true
		}
	}
	return false
}

func (p *Proxy) adminSetStock(w http.ResponseWriter, r *http.Request) {
	item := r.PathValue("item")
	if !validAdminItem(w, item) {
		return
	}
	var body struct {
		Stock *int64 `json:"stock"`
	}
	if !admin.Decode(w, r, &body) {
		return
	}
	if body.Stock == nil || *body.Stock < 0 || *body.Stock > seckill.MaxStock {
		admin.JSON(w, http.StatusBadRequest, map[string]string{"error": "bad_stock",
			"detail": "stock must be an integer from 0 to 2^40"})
		return
	}
	b, g, ok := p.adminGate(w)
	if !ok {
		return
	}
	if err := g.SetStock(r.Context(), item, *body.Stock); err != nil {
		adminStoreError(w, err)
		return
	}
	b.flags.clear(item)
	p.clusterRestocked(item) // cluster.go: clear the other edge nodes' flags
	admin.JSON(w, http.StatusOK, map[string]any{"item": item, "stock": *body.Stock, "issued": 0})
}

func (p *Proxy) adminItem(w http.ResponseWriter, r *http.Request) {
	item := r.PathValue("item")
	if !validAdminItem(w, item) {
		return
	}
	_, g, ok := p.adminGate(w)
	if !ok {
		return
	}
	st, err := g.Item(r.Context(), item)
	if err != nil {
		adminStoreError(w, err)
		return
	}
	admin.JSON(w, http.StatusOK, map[string]any{"item": item, "stock": st.Stock, "issued": st.Issued})
}

func (p *Proxy) adminRelease(w http.ResponseWriter, r *http.Request) {
	item := r.PathValue("item")
	if !validAdminItem(w, item) {
		return
	}
	var body struct {
		User string `json:"user"`
	}
	if !admin.Decode(w, r, &body) {
		return
	}
	if body.User == "" || len(body.User) > seckill.MaxUserLen {
		admin.JSON(w, http.StatusBadRequest, map[string]string{"error": "bad_user",
			"detail": "user must be 1 to 256 bytes"})
		return
	}
	b, g, ok := p.adminGate(w)
	if !ok {
		return
	}
	released, err := g.Release(r.Context(), item, body.User)
	if err != nil {
		adminStoreError(w, err)
		return
	}
	if released {
		b.flags.clear(item)
		p.clusterRestocked(item)
	}
	admin.JSON(w, http.StatusOK, map[string]bool{"released": released})
}
