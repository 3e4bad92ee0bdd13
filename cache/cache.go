package cache

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/VictoriaMetrics/fastcache"
	"github.com/cespare/xxhash/v2"
	"github.com/valyala/fasthttp"
)

// Defaults for Config's zero fields.
const (
	DefaultSize           = 256 << 20
	DefaultMaxEntry       = 8 << 20
	DefaultRefreshTimeout = 30 * time.Second
	// MinSize is fastcache's floor: a smaller Size still reserves this much.
	MinSize = 32 << 20
)

// Config is fixed when the Cache is built. A reload that keeps these values must keep the
// Cache object (its contents survive reloads); a change of Size means a new, empty Cache.
type Config struct {
	// Size is the memory budget in bytes (top-level cache_size). 0 means DefaultSize
	// (256MB); values below MinSize (32MB) get MinSize, fastcache's minimum.
	Size int
	// MaxEntry is the largest body stored (max_entry); larger responses are refused with
	// ErrTooLarge and passed through (BYPASS). 0 means DefaultMaxEntry (8MB).
	MaxEntry int
	// RefreshTimeout is how long a background refresh (TryStartRefresh) or a leader's
	// fetch (Acquire) may hold its key before it is presumed lost and taken over; set it
	// above the longest upstream timeout. 0 means 30s.
	RefreshTimeout time.Duration
	// LoadFrom, when set, is a directory SaveTo wrote (an upgrade's handover): the cache
	// starts with its entries when it can be read, empty otherwise.
	LoadFrom string
}

// Cache is the response store. All methods are safe for concurrent use. Contents live
// off the Go heap (fastcache chunks) and are bounded by Config.Size; the Go heap holds
// fastcache's per-entry index (about 16 bytes per entry), the purge slots (512 KiB), the
// in-flight maps and the hot set (hot.go: copies of much-hit entries, a sixteenth of Size
// and at most 16 MiB, taken out of fastcache's share). Entries are never expired
// eagerly: an old one simply stops matching (Miss) and is overwritten when the ring wraps.
type Cache struct {
	fc       *fastcache.Cache
	maxEntry int
	refreshT int64

	// epoch counts purges; an entry remembers the epoch its fetch started at, and a purge
	// slot remembers the epoch of the last purge that hit it. Entry valid iff every slot it
	// maps to is ≤ its epoch and floor ≤ its epoch.
	epoch atomic.Uint64
	floor atomic.Uint64
	slots [1 << slotBits]atomic.Uint64
	nonce atomic.Uint64

	flights [flightShards]flightShard
	hot     hotTable

	stored, renewed, tooLarge atomic.Uint64
}

const slotBits = 16

// newStore is fastcache of size bytes, loaded from dir when it holds a saved one.
func newStore(dir string, size int) *fastcache.Cache {
	if dir == "" {
		return fastcache.New(size)
	}
	return fastcache.LoadFromFileOrNew(dir, size)
}

// SaveTo writes the entries to dir (a directory), for a process that starts with
// Config.LoadFrom. Entries stored meanwhile may be missing from it.
func (c *Cache) SaveTo(dir string) error {
	return c.fc.SaveToFileConcurrent(dir, 2)
}

// New builds a Cache. It fails only on negative sizes.
func New(cfg Config) (*Cache, error) {
	if cfg.Size < 0 {
		return nil, fmt.Errorf("cache: invalid cache_size %d", cfg.Size)
	}
	if cfg.MaxEntry < 0 {
		return nil, fmt.Errorf("cache: invalid max_entry %d", cfg.MaxEntry)
	}
	if cfg.RefreshTimeout < 0 {
		return nil, fmt.Errorf("cache: invalid refresh timeout %s", cfg.RefreshTimeout)
	}
	if cfg.Size == 0 {
		cfg.Size = DefaultSize
	}
	if cfg.MaxEntry == 0 {
		cfg.MaxEntry = DefaultMaxEntry
	}
	if cfg.RefreshTimeout == 0 {
		cfg.RefreshTimeout = DefaultRefreshTimeout
	}
	c := &Cache{
		fc:       newStore(cfg.LoadFrom, max(cfg.Size-hotSlots*hotMaxRecord(cfg.Size), MinSize)),
		maxEntry: cfg.MaxEntry,
		refreshT: int64(cfg.RefreshTimeout),
	}
	c.hot.maxRecord = hotMaxRecord(cfg.Size)
	c.epoch.Store(1)
	for i := range c.flights {
		c.flights[i].m = make(map[uint64]*flight)
		c.flights[i].refresh = make(map[uint64]int64)
	}
	return c, nil
}

// MaxEntry is the configured body limit in bytes.
func (c *Cache) MaxEntry() int { return c.maxEntry }

// fastcache keys: a kind byte and hashes, built on the stack. The full key is stored in
// the record and compared on lookup, so a 64-bit collision is a miss, never a wrong answer.
const (
	fkPrimary = 'P'
	fkVariant = 'V'
	fkBody    = 'D'
)

type fkey [17]byte

func makeKey(kind byte, h, x uint64) (k fkey, n int) {
	k[0] = kind
	binary.BigEndian.PutUint64(k[1:], h)
	if kind != fkBody {
		return k, 9
	}
	binary.BigEndian.PutUint64(k[9:], x)
	return k, 17
}

// maxRecord is the largest value fastcache.Set keeps with a 9-byte key
// (key + value + 4 must stay below 65536).
const maxRecord = 65536 - 4 - 9 - 1

// Epoch returns the purge epoch. Read it when a fetch starts and pass it to Store/Renew,
// so that a purge that happens while the fetch is in flight also invalidates its result.
func (c *Cache) Epoch() uint64 { return c.epoch.Load() }

// Lookup finds the entry for key (built with AppendKey) that matches req's Vary values,
// decodes it into e and classifies it at now. On Miss, e holds nothing usable. For Stale
// and Revalidate e holds the full entry (for serving and for PrepareRevalidation). req
// (not nil) supplies the Vary values; Lookup only reads it, but fasthttp's Peek uses the
// header's scratch buffer, so req must not be shared between goroutines. It does not
// allocate once e's buffers have grown to the entry's size.
func (c *Cache) Lookup(e *Entry, key []byte, req *fasthttp.RequestHeader, now time.Time) State {
	kh := xxhash.Sum64(key)
	h, seen := c.hot.get(kh)
	if h != nil {
		// A hot entry is the record fastcache holds for kh (every write of kh replaces
		// the slot), so when it does not match, neither would the record.
		e.use(h)
		if !bytes.Equal(e.key, key) || c.purged(e) {
			e.reset()
			return Miss
		}
		return e.State(now)
	}
	if !c.loadHash(e, kh, key, req) {
		return Miss
	}
	c.hot.candidate(e, kh, seen)
	return e.State(now)
}

// load reads the entry of key from fastcache into e.
func (c *Cache) load(e *Entry, key []byte, req *fasthttp.RequestHeader) bool {
	return c.loadHash(e, xxhash.Sum64(key), key, req)
}

func (c *Cache) loadHash(e *Entry, kh uint64, key []byte, req *fasthttp.RequestHeader) bool {
	e.reset()
	pk, n := makeKey(fkPrimary, kh, 0)
	e.meta = c.fc.Get(e.meta[:0], pk[:n])
	if len(e.meta) < 2 || e.meta[0] != recVersion {
		return false
	}
	if e.meta[1] == kindVary {
		sh, ok := varyHashFromRecord(e.meta, kh, key, req)
		if !ok {
			return false
		}
		sk, n := makeKey(fkVariant, sh, 0)
		e.meta = c.fc.Get(e.meta[:0], sk[:n])
	}
	if !e.decode() || !bytes.Equal(e.key, key) || !e.varyMatches(req) || c.purged(e) {
		e.reset()
		return false
	}
	if e.flags&flagBig != 0 {
		size := int(binary.BigEndian.Uint32(e.body))
		dk, n := makeKey(fkBody, kh, e.nonce)
		e.big = c.fc.GetBig(e.big[:0], dk[:n])
		if len(e.big) != size {
			e.reset()
			return false
		}
		e.body = e.big
	}
	return true
}

// varyHashFromRecord reads a vary record, checks its key, and hashes req's values of the
// listed headers into the secondary key.
func varyHashFromRecord(rec []byte, kh uint64, key []byte, req *fasthttp.RequestHeader) (uint64, bool) {
	k, b, ok := takeU16(rec[2:])
	if !ok || !bytes.Equal(k, key) || len(b) < 1 {
		return 0, false
	}
	n := int(b[0])
	b = b[1:]
	h := kh
	for range n {
		if len(b) < 1 || len(b) < 1+int(b[0]) {
			return 0, false
		}
		name := b[1 : 1+int(b[0])]
		b = b[1+int(b[0]):]
		h = mix(h, xxhash.Sum64(name))
		h = mix(h, xxhash.Sum64(varyValue(req, name)))
	}
	return h, true
}

// Purge slots. Kinds are salted so a route, a path and a tag with equal names differ.
const (
	saltRoute = 0x52_4f_55_54_45_00_00_01
	saltPath  = 0x50_41_54_48_00_00_00_02
	saltURI   = 0x55_52_49_00_00_00_00_03
	saltTag   = 0x54_41_47_00_00_00_00_04
)

func slotOf(h, salt uint64) uint64 { return mix(h, salt) >> (64 - slotBits) }

func (c *Cache) purged(e *Entry) bool {
	ep := e.epoch
	if c.floor.Load() > ep ||
		c.slots[slotOf(e.route, saltRoute)].Load() > ep ||
		c.slots[slotOf(e.path, saltPath)].Load() > ep ||
		c.slots[slotOf(e.uri, saltURI)].Load() > ep {
		return true
	}
	for t := e.tags; len(t) >= 8; t = t[8:] {
		if c.slots[slotOf(binary.BigEndian.Uint64(t), saltTag)].Load() > ep {
			return true
		}
	}
	return false
}

func (c *Cache) bump(slot uint64) {
	ep := c.epoch.Add(1)
	s := &c.slots[slot]
	for {
		old := s.Load()
		if old >= ep || s.CompareAndSwap(old, ep) {
			return
		}
	}
}

// PurgeRoute invalidates every entry stored under Rule.Route == route, in O(1). Like all
// slot purges it may also invalidate a few unrelated entries whose hash shares the slot
// (one in 65536 per identifier); it never revives anything.
func (c *Cache) PurgeRoute(route string) {
	c.bump(slotOf(xxhash.Sum64String(route), saltRoute))
}

// PurgeTag invalidates every entry whose Surrogate-Key listed tag, in O(1).
func (c *Cache) PurgeTag(tag string) {
	c.bump(slotOf(xxhash.Sum64String(tag), saltTag))
}

// PurgeURL invalidates by request URI, on every host and method, in O(1): "/item/42"
// (no query) purges /item/42 with any query string; "/item/42?c=red" purges exactly that
// URI. An absolute URL ("http://host/item/42") is reduced to its path and query.
func (c *Cache) PurgeURL(uri string) {
	uri = b2s(originForm(s2b(uri)))
	for i := 0; i < len(uri); i++ {
		if uri[i] == '?' {
			c.bump(slotOf(xxhash.Sum64String(uri), saltURI))
			return
		}
	}
	c.bump(slotOf(xxhash.Sum64String(uri), saltPath))
}

// PurgeKey drops the entry stored under exactly key (and all its Vary variants).
func (c *Cache) PurgeKey(key []byte) {
	kh := xxhash.Sum64(key)
	pk, n := makeKey(fkPrimary, kh, 0)
	c.fc.Del(pk[:n])
	c.hot.invalidate(kh)
}

// PurgeAll invalidates every entry, in O(1).
func (c *Cache) PurgeAll() {
	ep := c.epoch.Add(1)
	for {
		old := c.floor.Load()
		if old >= ep || c.floor.CompareAndSwap(old, ep) {
			return
		}
	}
}

// originForm strips "scheme://authority" from an absolute-form URI.
func originForm(uri []byte) []byte {
	if len(uri) == 0 || uri[0] == '/' {
		return uri
	}
	i := bytes.Index(uri, []byte("://"))
	if i < 0 {
		return uri
	}
	rest := uri[i+3:]
	j := bytes.IndexAny(rest, "/?")
	if j < 0 {
		return []byte("/")
	}
	return rest[j:]
}

// Store evaluates resp (the origin's answer to req, a GET) under rule and stores it under
// key when it is cacheable. It returns nil when stored, or the sentinel saying why not
// (ErrTooLarge, ErrNoStore, ErrSetCookie, …): the caller then answers BYPASS or MISS as it
// likes. epoch is Epoch() read when the fetch started. resp is not modified; strip
// Surrogate-Key/Surrogate-Control with StripSurrogate before answering the client. Store
// copies what it keeps; it allocates little (pooled buffers) but is not the hot path.
func (c *Cache) Store(key []byte, req *fasthttp.RequestHeader, resp *fasthttp.Response, rule *Rule, now time.Time, epoch uint64) error {
	if !req.IsGet() {
		return ErrMethod
	}
	if resp.IsBodyStream() {
		return ErrBodyStream
	}
	body := resp.Body()
	if len(body) > c.maxEntry {
		c.tooLarge.Add(1)
		return ErrTooLarge
	}
	return c.put(key, req, resp.StatusCode(), &resp.Header, nil, body, false, 0, nil, rule, now, epoch)
}

// Renew applies a 304 answer to a conditional request (see Entry.PrepareRevalidation):
// the stored headers are updated with the 304's, freshness is computed again, and the
// stored body is kept without being sent again. On success e holds the renewed entry,
// ready for WriteTo. ErrNotFound means the entry vanished meanwhile (evicted, purged) and
// ErrValidatorMatch that the 304 names another ETag: fetch unconditionally then. Any
// policy sentinel from Evaluate means the renewed answer is no longer cacheable.
func (c *Cache) Renew(e *Entry, key []byte, req *fasthttp.RequestHeader, resp304 *fasthttp.Response, rule *Rule, now time.Time, epoch uint64) error {
	if !c.load(e, key, req) {
		return ErrNotFound
	}
	if et := resp304.Header.Peek(fasthttp.HeaderETag); len(et) > 0 && len(e.etag) > 0 && !weakEqual(et, e.etag) {
		return ErrValidatorMatch
	}
	enc := getEncoder()
	defer putEncoder(enc)
	h := &enc.hdr
	h.Reset()
	for k, v := range e.Headers() {
		h.AddBytesKV(k, v)
	}
	// The 304's fields replace the stored ones of the same name (RFC 9111 §3.2), except
	// Content-Length and Content-Type, which describe the stored body (fasthttp also reports
	// a default Content-Type for a 304 that sent none).
	for k := range resp304.Header.All() {
		if !renewKeeps(k) {
			h.DelBytes(k)
		}
	}
	for k, v := range resp304.Header.All() {
		if !renewKeeps(k) {
			h.AddBytesKV(k, v)
		}
	}
	big := e.flags&flagBig != 0
	// The 304's Date replaces the stored one with the rest of its fields; without one,
	// put stores the time it arrived, which is also when Age starts again.
	if err := c.put(key, req, e.status, h, resp304.Header.Peek(fasthttp.HeaderDate), e.body, big, e.nonce, e.tags, rule, now, epoch); err != nil {
		return err
	}
	c.renewed.Add(1)
	if !c.load(e, key, req) {
		return ErrNotFound
	}
	return nil
}

func renewKeeps(k []byte) bool {
	return bytes.EqualFold(k, []byte(fasthttp.HeaderContentLength)) || bytes.EqualFold(k, []byte(fasthttp.HeaderContentType))
}

// StripSurrogate removes the origin-to-cache headers (Surrogate-Key, Surrogate-Control)
// from a response before it goes to the client; clients never see them.
func StripSurrogate(h *fasthttp.ResponseHeader) {
	h.Del("Surrogate-Key")
	h.Del("Surrogate-Control")
}

// Stats is a snapshot for metrics (edge_cache_bytes, evictions, …).
type Stats struct {
	// Entries is fastcache's entry count: records plus the 64 KiB chunks of big bodies.
	Entries uint64
	// Bytes is the memory held by allocated chunks; never above MaxBytes.
	Bytes uint64
	// MaxBytes is the capacity (Config.Size rounded up to whole 64 KiB chunks per bucket).
	MaxBytes uint64
	// EvictedBytes counts bytes dropped when a bucket's ring wrapped (fastcache counts
	// evictions in bytes, not entries).
	EvictedBytes uint64
	// Collisions counts fastcache key-hash collisions (should stay near zero).
	Collisions uint64
	// Stored, Renewed and TooLarge count Store successes, 304 renewals and bodies refused
	// for exceeding MaxEntry.
	Stored, Renewed, TooLarge uint64
}

// Stats collects a snapshot. It locks each fastcache bucket briefly: call it from a metrics
// scrape, not per request.
func (c *Cache) Stats() Stats {
	var s fastcache.Stats
	c.fc.UpdateStats(&s)
	return Stats{
		Entries:      s.EntriesCount,
		Bytes:        s.BytesSize,
		MaxBytes:     s.MaxBytesSize,
		EvictedBytes: s.EvictedBytes,
		Collisions:   s.Collisions,
		Stored:       c.stored.Load(),
		Renewed:      c.renewed.Load(),
		TooLarge:     c.tooLarge.Load(),
	}
}

func s2b(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

func b2s(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// encoder holds the scratch buffers of Store and Renew.
type encoder struct {
	b    []byte
	vary []byte // {name:u8+bytes value:u16+bytes}, names lower-cased
	tags []byte
	conn []byte
	hdr  fasthttp.ResponseHeader
}

var encPool sync.Pool

func getEncoder() *encoder {
	if v := encPool.Get(); v != nil {
		return v.(*encoder)
	}
	return &encoder{}
}

func putEncoder(e *encoder) {
	e.b, e.vary, e.tags, e.conn = e.b[:0], e.vary[:0], e.tags[:0], e.conn[:0]
	e.hdr.Reset()
	encPool.Put(e)
}
