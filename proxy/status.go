package proxy

import (
	"context"
)

// SeckillItem is one item of a sale as the status page shows it.
type SeckillItem struct {
	Item   string `json:"item"`
	Stock  int64  `json:"stock"`  // units left
	Issued int64  `json:"issued"` // units held by users
}

// SeckillItems returns the stock of up to max items this node knows a sale of (started
// through it, or asked for by its clients), read from the store, sorted by name. ok is
// false without a seckill block or while its store is not connected; items the store
// cannot answer for are left out. For the admin status page: one store call per item.
func (p *Proxy) SeckillItems(ctx context.Context, max int) (items []SeckillItem, ok bool) {
	s := p.Current()
	if s == nil || s.seckill == nil {
		return nil, false
	}
	g := s.seckill.backend.current()
	if g == nil {
		return nil, false
	}
	items = []SeckillItem{}
	for _, name := range g.Items(max) {
		st, err := g.Item(ctx, name)
		if err != nil {
			continue
		}
		items = append(items, SeckillItem{Item: name, Stock: st.Stock, Issued: st.Issued})
	}
	return items, true
}
