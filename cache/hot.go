package cache

import (
	"sync/atomic"

	"github.com/valyala/fasthttp"
)

// The hot set: a small direct-mapped table of entries that are hit again and again, kept
// decoded on the Go heap with their response header prebuilt. A hit there costs a probe
// and a header copy (fasthttp.ResponseHeader.CopyTo) instead of a fastcache read (which
// copies the record out), a decode and a replay of every stored header through
// fasthttp's setters, which validate and copy each one twice.
//
// fastcache stays the store of record. A hot entry is an immutable copy of a record and
// is checked like one on every use: the key must be equal, the purge slots must not have
// moved past its epoch, and its freshness is evaluated at the time of the hit (an entry
// that fastcache has meanwhile evicted may go on being served until it expires or is
// purged). Only records without Vary and with the body inline (no bigger than the table's
// maxRecord) qualify, and only on their second hit through fastcache in a row on their
// slot, so a flood of distinct URLs never reaches the Go heap. Every write of a key
// (Store, Renew, PurgeKey) replaces the slot with a fresh tombstone after the fastcache
// write, and a promotion is a compare-and-swap against the slot value read before the
// fastcache read: a promotion racing with a write can only fail, never install the old
// record.
//
// Memory: at most hotSlots entries of at most maxRecord bytes each, plus their prebuilt
// headers. The budget, hotSlots × maxRecord, is a sixteenth of cache_size and at most
// 16 MiB (maxRecord 16 KiB from cache_size 256MB up), and is taken out of fastcache's share.
const (
	hotSlots        = 1024
	hotMaxRecordCap = 16 << 10
)

// hotMaxRecord is the largest record the hot set of a cache of size bytes holds.
func hotMaxRecord(size int) int { return min(size/16/hotSlots, hotMaxRecordCap) }

// hotEntry is a promoted record. A hotEntry with a nil meta is a tombstone.
type hotEntry struct {
	kh   uint64
	meta []byte                  // the record, copied; never written after promotion
	tmpl Entry                   // meta decoded (views into meta), without buffers
	hdr  fasthttp.ResponseHeader // status and stored headers as WriteTo leaves them
}

type hotTable struct {
	maxRecord int // set by New, never changed
	slots     [hotSlots]atomic.Pointer[hotEntry]
	ghost     [hotSlots]atomic.Uint64 // key hash of the last fastcache hit on each slot
}

func hotSlot(kh uint64) uint64 { return kh & (hotSlots - 1) }

// get returns the hot entry of kh, or nil; and the slot value to promote against.
func (t *hotTable) get(kh uint64) (h, seen *hotEntry) {
	seen = t.slots[hotSlot(kh)].Load()
	if seen != nil && seen.kh == kh && seen.meta != nil {
		return seen, seen
	}
	return nil, seen
}

// invalidate drops whatever the slot of kh holds; call it after every fastcache write
// of kh.
func (t *hotTable) invalidate(kh uint64) {
	t.slots[hotSlot(kh)].Store(&hotEntry{kh: kh})
}

// candidate prepares the promotion of e (just loaded from fastcache for kh, the slot
// having held seen before the read) when e qualifies and this is its second hit in a
// row; WriteTo completes it. It allocates only then.
func (t *hotTable) candidate(e *Entry, kh uint64, seen *hotEntry) {
	if e.nVary != 0 || e.flags&flagBig != 0 || len(e.meta) > t.maxRecord {
		return
	}
	if g := &t.ghost[hotSlot(kh)]; g.Load() != kh {
		g.Store(kh)
		return
	}
	p := &hotEntry{kh: kh, meta: append([]byte(nil), e.meta...)}
	p.tmpl.meta = p.meta
	if !p.tmpl.decode() {
		return
	}
	p.tmpl.meta = nil
	e.promote, e.promoteSeen, e.promoteTable = p, seen, t
}

// use makes e a view of hot entry h, keeping e's own buffers for later fastcache reads.
func (e *Entry) use(h *hotEntry) {
	meta, big := e.meta[:0], e.big[:0]
	*e = h.tmpl
	e.meta, e.big, e.hot = meta, big, h
}

// publish installs the promotion prepared by candidate once resp holds what the entry
// writes (status and stored headers). It fails quietly if the slot changed meanwhile.
func (e *Entry) publish(resp *fasthttp.ResponseHeader) {
	p := e.promote
	resp.CopyTo(&p.hdr)
	e.promoteTable.slots[hotSlot(p.kh)].CompareAndSwap(e.promoteSeen, p)
	e.promote, e.promoteSeen, e.promoteTable = nil, nil, nil
}
