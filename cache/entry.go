package cache

import (
	"bytes"
	"encoding/binary"
	"iter"
	"strconv"
	"sync"
	"time"

	"github.com/edge-gw/edge/keepdate"
	"github.com/valyala/fasthttp"
)

// State is what Lookup found, and what the caller should do with it.
type State uint8

const (
	// Miss: nothing usable is stored (absent, purged, evicted, expired without validator,
	// or stored for other Vary values). Fetch from the origin (coalesced with Acquire).
	Miss State = iota
	// Hit: the entry is fresh; answer it (X-Cache: HIT).
	Hit
	// Stale: expired but inside its stale window; answer it at once (X-Cache: STALE) and
	// start one background refresh (TryStartRefresh).
	Stale
	// Revalidate: expired past the stale window but it has a validator; send a conditional
	// request (Entry.PrepareRevalidation) and on 304 call Renew, which keeps the body.
	Revalidate
)

var stateNames = [...]string{"MISS", "HIT", "STALE", "REVALIDATE"}

// String returns MISS, HIT, STALE or REVALIDATE.
func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "UNKNOWN"
}

// Record format, version 2 (version 1 had no errorUntil). All integers are big-endian.
//
//	entry:  ver kind=1 flags status:u16 storedAt:i64 freshUntil:i64 staleUntil:i64
//	        errorUntil:i64 initialAge:u32 epoch:u64 route:u64 path:u64 uri:u64 nTags:u8 tags:[n]u64
//	        key:u16+bytes nVary:u8 {name:u8+bytes value:u16+bytes}
//	        etag:u16+bytes lastModified:u16+bytes nHeaders:u16 {k:u16+bytes v:u16+bytes}
//	        body: flags&flagBig ? nonce:u64 len:u32 : len:u32+bytes
//	vary:   ver kind=2 key:u16+bytes nVary:u8 {name:u8+bytes}
//
// A record whose version is unknown or whose lengths do not add up is a Miss.
const (
	recVersion   = 2
	kindEntry    = 1
	kindVary     = 2
	flagBig      = 1
	fixedHdrSize = 2 + 1 + 2 + 8*4 + 4 + 8*4 + 1
)

// Entry is one decoded cache entry together with the buffers it was decoded into. Every
// slice an Entry returns points into those buffers and is valid until the Entry is reused
// by another Lookup/Renew or released. An Entry is not safe for concurrent use; get one
// per request with AcquireEntry and give it back with ReleaseEntry.
type Entry struct {
	meta []byte // record bytes (fastcache Get dst)
	big  []byte // body bytes of a big entry (fastcache GetBig dst)
	head []byte // the response head replay parses

	status                           int
	flags                            byte
	storedAt, freshUntil, staleUntil int64
	errorUntil                       int64
	initialAge                       uint32
	epoch, route, path, uri          uint64
	tags                             []byte
	key                              []byte
	nVary                            int
	vary                             []byte
	etag, lastModified               []byte
	nHeaders                         int
	headers                          []byte
	nonce                            uint64
	body                             []byte

	hot                  *hotEntry // the hot entry e views, if any (hot.go)
	promote, promoteSeen *hotEntry // a promotion WriteTo completes (hot.go)
	promoteTable         *hotTable
}

var entryPool sync.Pool

// AcquireEntry returns an empty Entry from a pool; its buffers are reused, so a warmed-up
// hit path does not allocate. Return it with ReleaseEntry once nothing references its
// slices (e.g. after WriteTo, which copies).
func AcquireEntry() *Entry {
	if v := entryPool.Get(); v != nil {
		return v.(*Entry)
	}
	return &Entry{}
}

// ReleaseEntry returns e to the pool. e and its slices must not be used afterwards.
func ReleaseEntry(e *Entry) {
	e.reset()
	entryPool.Put(e)
}

func (e *Entry) reset() {
	meta, big, head := e.meta[:0], e.big[:0], e.head[:0]
	*e = Entry{meta: meta, big: big, head: head}
}

// Status is the stored response status.
func (e *Entry) Status() int { return e.status }

// Body is the stored body, byte-exact.
func (e *Entry) Body() []byte { return e.body }

// ETag is the stored ETag value (with quotes and W/ prefix as sent), or nil.
func (e *Entry) ETag() []byte { return e.etag }

// LastModified is the stored Last-Modified value, or nil.
func (e *Entry) LastModified() []byte { return e.lastModified }

// StoredAt is when the entry was stored (or last renewed by a 304).
func (e *Entry) StoredAt() time.Time { return time.Unix(0, e.storedAt) }

// FreshUntil is the end of the freshness lifetime.
func (e *Entry) FreshUntil() time.Time { return time.Unix(0, e.freshUntil) }

// StaleUntil is the end of the stale window (equal to FreshUntil when there is none).
func (e *Entry) StaleUntil() time.Time { return time.Unix(0, e.staleUntil) }

// ServesOnError reports whether, at now, the entry may answer in place of an origin
// error (500, 502, 503, 504 or no answer): it is stored and inside its stale-if-error
// window (Freshness.ErrorStale), which ends no earlier than its stale window.
func (e *Entry) ServesOnError(now time.Time) bool {
	return e.status != 0 && now.UnixNano() < e.errorUntil
}

// Age is the entry's age at now: the Age it had when received plus its time in the cache.
func (e *Entry) Age(now time.Time) time.Duration {
	d := time.Duration(now.UnixNano() - e.storedAt)
	if d < 0 {
		d = 0
	}
	return d + time.Duration(e.initialAge)*time.Second
}

// State classifies the entry at now; Lookup returns the same value.
func (e *Entry) State(now time.Time) State {
	n := now.UnixNano()
	switch {
	case e.status == 0:
		return Miss
	case n < e.freshUntil:
		return Hit
	case n < e.staleUntil:
		return Stale
	case len(e.etag) > 0 || len(e.lastModified) > 0:
		return Revalidate
	}
	return Miss
}

// Headers iterates over the stored (replayable) response headers in their stored order.
func (e *Entry) Headers() iter.Seq2[[]byte, []byte] {
	return func(yield func(k, v []byte) bool) {
		b := e.headers
		for range e.nHeaders {
			var k, v []byte
			k, b = readU16Bytes(b)
			v, b = readU16Bytes(b)
			if !yield(k, v) {
				return
			}
		}
	}
}

// Header returns the first stored value of header name (case-insensitive), or nil.
func (e *Entry) Header(name string) []byte {
	b := e.headers
	for range e.nHeaders {
		var k, v []byte
		k, b = readU16Bytes(b)
		v, b = readU16Bytes(b)
		if len(k) == len(name) && bytes.EqualFold(k, s2b(name)) {
			return v
		}
	}
	return nil
}

// WriteTo sets status, the stored headers (Date included), Age and the body on resp,
// replacing whatever header resp had. The body is not copied: resp refers to e's buffer,
// so e must be neither reused nor released until resp has been written or reset. The
// Date that goes out is the stored one, the origin's (see replay), and Age says how long
// the cache has held it (RFC 9111 §5.1). It does not allocate once resp's buffers have
// grown to the entry's size.
func (e *Entry) WriteTo(resp *fasthttp.Response, now time.Time) {
	if e.hot != nil {
		e.hot.hdr.CopyTo(&resp.Header) // the header the replay below built the first time
	} else {
		e.replay(&resp.Header)
		if e.promote != nil {
			e.publish(&resp.Header)
		}
	}
	var num [20]byte
	resp.Header.SetBytesV(fasthttp.HeaderAge, strconv.AppendInt(num[:0], int64(e.Age(now)/time.Second), 10))
	resp.SetBodyRaw(e.body)
}

// replay sets h to the entry's status and stored headers, its stored Date included.
// fasthttp takes a Date field only from the wire, so the head is written out as the
// origin could have sent it and parsed into h held by keepdate, which then writes that
// Date. A record without a Date (stored by an older edge) or that fasthttp will not parse
// again is replayed through the setters instead, and the server's Date goes out.
func (e *Entry) replay(h *fasthttp.ResponseHeader) {
	if b := e.headers; e.nHeaders > 0 {
		if k, _ := readU16Bytes(b); bytes.Equal(k, strHDate) {
			keepdate.Hold(h)
			if keepdate.Parse(h, e.appendHead(e.head[:0])) == nil {
				return
			}
		}
	}
	h.Reset()
	h.SetStatusCode(e.status)
	// Stored names are canonical already (Store keeps them as fasthttp parsed them):
	// normalizing them again is wasted work.
	h.DisableNormalizing()
	for k, v := range e.Headers() {
		h.AddBytesKV(k, v)
	}
	h.EnableNormalizing()
}

// appendHead appends the entry's response head, as the origin could have sent it, to
// dst, and keeps the buffer for the next hit.
func (e *Entry) appendHead(dst []byte) []byte {
	dst = append(dst, "HTTP/1.1 "...)
	dst = strconv.AppendInt(dst, int64(e.status), 10)
	dst = append(dst, "\r\n"...)
	for k, v := range e.Headers() {
		dst = append(append(append(append(dst, k...), ": "...), v...), "\r\n"...)
	}
	if e.status >= 200 && e.status != fasthttp.StatusNoContent && e.status != fasthttp.StatusNotModified {
		// Without a length fasthttp would read the body as running to the close.
		dst = append(dst, "Content-Length: "...)
		dst = strconv.AppendInt(dst, int64(len(e.body)), 10)
		dst = append(dst, "\r\n"...)
	}
	dst = append(dst, "\r\n"...)
	e.head = dst
	return dst
}

// PrepareRevalidation turns req (a copy of the client's request, about to be sent to the
// origin) into a conditional request for this entry: the client's own conditional headers
// are removed and If-None-Match / If-Modified-Since are set from the stored validators.
func (e *Entry) PrepareRevalidation(req *fasthttp.RequestHeader) {
	StripConditional(req)
	if len(e.etag) > 0 {
		req.SetBytesV(fasthttp.HeaderIfNoneMatch, e.etag)
	}
	if len(e.lastModified) > 0 {
		req.SetBytesV(fasthttp.HeaderIfModifiedSince, e.lastModified)
	}
}

// StripConditional removes the client's conditional and range headers from a request the
// cache is about to send to the origin on a miss, so that the origin answers with a full,
// storable response instead of a 304 or a 206 meant for the client's own copy (the
// caller answers those from the full response: Unchanged, ParseRange).
func StripConditional(req *fasthttp.RequestHeader) {
	req.Del(fasthttp.HeaderIfNoneMatch)
	req.Del(fasthttp.HeaderIfModifiedSince)
	req.Del(fasthttp.HeaderIfMatch)
	req.Del(fasthttp.HeaderIfUnmodifiedSince)
	req.Del(fasthttp.HeaderIfRange)
	req.Del(fasthttp.HeaderRange)
}

// NotModified reports whether the client's conditional GET/HEAD is satisfied by this
// entry, so the caller may answer 304 instead of the body (Unchanged with the request's
// If-None-Match and If-Modified-Since). It does not allocate.
func (e *Entry) NotModified(req *fasthttp.RequestHeader) bool {
	return Unchanged(req.Peek(fasthttp.HeaderIfNoneMatch), req.Peek(fasthttp.HeaderIfModifiedSince), e.etag, e.lastModified)
}

// weakEqual compares two entity tags ignoring the W/ prefix (RFC 9110 §8.8.3.2).
func weakEqual(a, b []byte) bool {
	a = bytes.TrimPrefix(a, []byte("W/"))
	b = bytes.TrimPrefix(b, []byte("W/"))
	return len(a) > 0 && bytes.Equal(a, b)
}

// decode parses e.meta (an entry record) into e's views. It reports false for a record
// that is not a well-formed version-1 entry.
func (e *Entry) decode() bool {
	b := e.meta
	if len(b) < fixedHdrSize || b[0] != recVersion || b[1] != kindEntry {
		return false
	}
	e.flags = b[2]
	e.status = int(binary.BigEndian.Uint16(b[3:]))
	e.storedAt = int64(binary.BigEndian.Uint64(b[5:]))
	e.freshUntil = int64(binary.BigEndian.Uint64(b[13:]))
	e.staleUntil = int64(binary.BigEndian.Uint64(b[21:]))
	e.errorUntil = int64(binary.BigEndian.Uint64(b[29:]))
	e.initialAge = binary.BigEndian.Uint32(b[37:])
	e.epoch = binary.BigEndian.Uint64(b[41:])
	e.route = binary.BigEndian.Uint64(b[49:])
	e.path = binary.BigEndian.Uint64(b[57:])
	e.uri = binary.BigEndian.Uint64(b[65:])
	nTags := int(b[73])
	b = b[fixedHdrSize:]
	if len(b) < nTags*8 {
		return false
	}
	e.tags, b = b[:nTags*8], b[nTags*8:]
	var ok bool
	if e.key, b, ok = takeU16(b); !ok || len(b) < 1 {
		return false
	}
	e.nVary = int(b[0])
	b = b[1:]
	start := b
	for range e.nVary {
		if len(b) < 1 || len(b) < 1+int(b[0]) {
			return false
		}
		b = b[1+int(b[0]):]
		if _, b, ok = takeU16(b); !ok {
			return false
		}
	}
	e.vary = start[:len(start)-len(b)]
	if e.etag, b, ok = takeU16(b); !ok {
		return false
	}
	if e.lastModified, b, ok = takeU16(b); !ok || len(b) < 2 {
		return false
	}
	if len(e.etag) == 0 {
		e.etag = nil
	}
	if len(e.lastModified) == 0 {
		e.lastModified = nil
	}
	e.nHeaders = int(binary.BigEndian.Uint16(b))
	b = b[2:]
	start = b
	for range e.nHeaders {
		if _, b, ok = takeU16(b); !ok {
			return false
		}
		if _, b, ok = takeU16(b); !ok {
			return false
		}
	}
	e.headers = start[:len(start)-len(b)]
	if e.flags&flagBig != 0 {
		if len(b) != 12 {
			return false
		}
		e.nonce = binary.BigEndian.Uint64(b)
		e.body = b[8:12] // length, resolved by the caller after GetBig
		return true
	}
	if len(b) < 4 || uint64(len(b)-4) != uint64(binary.BigEndian.Uint32(b)) {
		return false
	}
	e.body = b[4:]
	return true
}

// varyMatches reports whether the request's values of the stored Vary headers equal the
// stored ones.
func (e *Entry) varyMatches(req *fasthttp.RequestHeader) bool {
	b := e.vary
	for range e.nVary {
		n := int(b[0])
		name := b[1 : 1+n]
		b = b[1+n:]
		var v []byte
		v, b = readU16Bytes(b)
		if !bytes.Equal(v, varyValue(req, name)) {
			return false
		}
	}
	return true
}

// varyValue is the request's value of a varied header, OWS-trimmed.
func varyValue(req *fasthttp.RequestHeader, name []byte) []byte {
	return trimRightOWS(trimLeftOWS(req.PeekBytes(name)))
}

func takeU16(b []byte) (v, rest []byte, ok bool) {
	if len(b) < 2 {
		return nil, b, false
	}
	n := int(binary.BigEndian.Uint16(b))
	if len(b) < 2+n {
		return nil, b, false
	}
	return b[2 : 2+n], b[2+n:], true
}

// readU16Bytes reads a length-prefixed field of a record decode already validated.
func readU16Bytes(b []byte) (v, rest []byte) {
	n := int(binary.BigEndian.Uint16(b))
	return b[2 : 2+n], b[2+n:]
}

func appendU16Bytes(dst, v []byte) []byte {
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(v)))
	return append(dst, v...)
}
