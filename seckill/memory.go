package seckill

import (
	"container/heap"
	"context"
	"fmt"
	"sync"
	"time"
)

// DefaultMaxItems bounds the sales a Memory store keeps when MemoryOptions.MaxItems is zero.
const DefaultMaxItems = 10000

// MemoryOptions configures NewMemory.
type MemoryOptions struct {
	// MaxItems is the most sales the store keeps; SetStock of a new item beyond it fails
	// with ErrInvalid. Default (zero) DefaultMaxItems.
	MaxItems int
}

// Memory is the embedded Store of a single edge node, used when no Redis is configured. It
// has the semantics of the Redis store (one conformance suite runs on both) but its state
// dies with the process and is not shared between nodes. Memory is bounded: at most MaxItems
// sales, and per sale at most one holder per unit of stock set. Safe for concurrent use;
// calls on different items do not contend.
type Memory struct {
	maxItems int

	mu    sync.RWMutex
	items map[string]*memItem
}

// memItem is one sale. Its fields are guarded by mu.
type memItem struct {
	mu      sync.Mutex
	stock   int64
	holders map[string]*holder
	expiry  expiryHeap // unused holders by expiry
}

// holder is one user's token on one item.
type holder struct {
	user    string
	token   string
	expires int64 // unix milliseconds
	used    bool
	index   int // position in expiryHeap, -1 when not in it (used)
}

// NewMemory returns an empty Memory store.
func NewMemory(opts MemoryOptions) *Memory {
	if opts.MaxItems <= 0 {
		opts.MaxItems = DefaultMaxItems
	}
	return &Memory{maxItems: opts.MaxItems, items: make(map[string]*memItem)}
}

// Close implements Store; the state stays readable until the Memory is dropped.
func (m *Memory) Close() {}

func (m *Memory) item(item string) *memItem {
	m.mu.RLock()
	it := m.items[item]
	m.mu.RUnlock()
	return it
}

// SetStock implements Store.
func (m *Memory) SetStock(_ context.Context, item string, stock int64) error {
	if !validItem(item) || stock < 0 || stock > MaxStock {
		return fmt.Errorf("set stock %d of item %q: %w", stock, item, ErrInvalid)
	}
	m.mu.Lock()
	it := m.items[item]
	if it == nil {
		if len(m.items) >= m.maxItems {
			m.mu.Unlock()
			return fmt.Errorf("set stock of item %q: memory store holds %d sales already: %w", item, m.maxItems, ErrInvalid)
		}
		it = &memItem{}
		m.items[item] = it
	}
	m.mu.Unlock()
	it.mu.Lock()
	it.stock = stock
	it.holders = make(map[string]*holder)
	it.expiry = nil
	it.mu.Unlock()
	return nil
}

// Issue implements Store.
func (m *Memory) Issue(_ context.Context, item string, now time.Time, batch []Ticket) error {
	if !validItem(item) {
		return fmt.Errorf("issue for item %q: %w", item, ErrInvalid)
	}
	for i := range batch {
		if !validUser(batch[i].User) {
			return fmt.Errorf("issue for user %q of item %q: %w", batch[i].User, item, ErrInvalid)
		}
	}
	it := m.item(item)
	if it == nil {
		return fmt.Errorf("issue for item %q: %w", item, ErrNoSale)
	}
	nowMs := now.UnixMilli()
	it.mu.Lock()
	defer it.mu.Unlock()
	for i := range batch {
		t := &batch[i]
		if h := it.holders[t.User]; h != nil {
			if h.used || h.expires > nowMs {
				t.Result = Repeat
				t.Token = h.token
				t.Expires = time.UnixMilli(h.expires)
				continue
			}
			it.drop(h) // expired unused: its unit comes back and the user buys again
		}
		if it.stock == 0 {
			t.Result = SoldOut
			continue
		}
		it.stock--
		h := &holder{user: t.User, token: t.Token, expires: t.Expires.UnixMilli()}
		it.holders[t.User] = h
		heap.Push(&it.expiry, h)
		t.Result = Issued
		t.Expires = time.UnixMilli(h.expires)
	}
	return nil
}

// drop forgets an unused holder and returns its unit to stock.
func (it *memItem) drop(h *holder) {
	delete(it.holders, h.user)
	if h.index >= 0 {
		heap.Remove(&it.expiry, h.index)
	}
	it.stock++
}

// Item implements Store.
func (m *Memory) Item(_ context.Context, item string) (Stock, error) {
	if !validItem(item) {
		return Stock{}, fmt.Errorf("read item %q: %w", item, ErrInvalid)
	}
	it := m.item(item)
	if it == nil {
		return Stock{}, fmt.Errorf("read item %q: %w", item, ErrNoSale)
	}
	it.mu.Lock()
	defer it.mu.Unlock()
	return Stock{Stock: it.stock, Issued: int64(len(it.holders))}, nil
}

// Consume implements Store.
func (m *Memory) Consume(_ context.Context, item, user, token string) error {
	if !validItem(item) || !validUser(user) {
		return fmt.Errorf("consume token of user %q for item %q: %w", user, item, ErrInvalid)
	}
	it := m.item(item)
	if it == nil {
		return ErrNotHolder
	}
	it.mu.Lock()
	defer it.mu.Unlock()
	h := it.holders[user]
	switch {
	case h == nil || h.token != token:
		return ErrNotHolder
	case h.used:
		return ErrUsed
	}
	h.used = true
	heap.Remove(&it.expiry, h.index)
	return nil
}

// Release implements Store.
func (m *Memory) Release(_ context.Context, item, user string) (bool, error) {
	if !validItem(item) || !validUser(user) {
		return false, fmt.Errorf("release unit of user %q for item %q: %w", user, item, ErrInvalid)
	}
	it := m.item(item)
	if it == nil {
		return false, nil
	}
	it.mu.Lock()
	defer it.mu.Unlock()
	h := it.holders[user]
	if h == nil || h.used {
		return false, nil
	}
	it.drop(h)
	return true, nil
}

// Reclaim implements Store.
func (m *Memory) Reclaim(_ context.Context, item string, now time.Time, max int) (int, error) {
	if !validItem(item) {
		return 0, fmt.Errorf("reclaim expired tokens of item %q: %w", item, ErrInvalid)
	}
	it := m.item(item)
	if it == nil {
		return 0, nil
	}
	nowMs := now.UnixMilli()
	it.mu.Lock()
	defer it.mu.Unlock()
	n := 0
	for n < max && len(it.expiry) > 0 && it.expiry[0].expires <= nowMs {
		it.drop(it.expiry[0])
		n++
	}
	return n, nil
}

// expiryHeap orders unused holders by expiry; holder.index tracks positions so that a
// consumed or released holder leaves at once and the heap never outgrows the holders.
type expiryHeap []*holder

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].expires < h[j].expires }
func (h expiryHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}
func (h *expiryHeap) Push(x any) {
	e := x.(*holder)
	e.index = len(*h)
	*h = append(*h, e)
}
func (h *expiryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	e.index = -1
	*h = old[:len(old)-1]
	return e
}
