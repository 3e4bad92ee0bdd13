package proxy

import (
	"github.com/edge-gw/edge/cache"
	"github.com/valyala/fasthttp"
)

// Ranges and conditional requests on cached routes (issue 27, item 7). A complete 200
// answer of a cached route, from the cache or fetched and stored, is shaped by the
// client's headers: a satisfied If-None-Match / If-Modified-Since gives 304; a GET with
// one satisfiable byte range (and an If-Range naming this representation, if any) gives
// 206 with Content-Range and that slice of the body; a range past the end gives 416 with
// Content-Range: bytes */size. Multi-range requests get the whole 200. Ranges are of the
// stored bytes, the representation the origin sent: compression never touches a 206.
// The origin does not see these headers on a cached route (the cache needs whole
// answers: cache.StripConditional), so the client's values are read before the request
// is rewritten and kept in the request's cacheScratch; only when the whole answer turns
// out too large to store (it streams) is the request sent again with its Range.

// clientConds are the client's conditional and range header values of one request:
// views into the request header (load) or copies the scratch owns (keep).
type clientConds struct {
	inm, ims, rng, ifRange []byte
	own                    [4][]byte // storage of keep's copies, reused across requests
}

var (
	hdrContentRange  = []byte("Content-Range")
	hdrETagB         = []byte(fasthttp.HeaderETag)
	hdrLastModifiedB = []byte(fasthttp.HeaderLastModified)
	hdrIfNoneMatch   = []byte(fasthttp.HeaderIfNoneMatch)
	hdrIfModSince    = []byte(fasthttp.HeaderIfModifiedSince)
	hdrIfRange       = []byte(fasthttp.HeaderIfRange)
	hdrRangeB        = []byte(fasthttp.HeaderRange)
)

// contentRangeBytes bounds a Content-Range value: "bytes " and three 19-digit numbers.
const contentRangeBytes = 6 + 3*19 + 2

// load points c at h's values (valid while h is unchanged). If-Range is read only with
// a Range, so a plain request pays three header lookups.
func (c *clientConds) load(h *fasthttp.RequestHeader) *clientConds {
	c.inm = h.PeekBytes(hdrIfNoneMatch)
	c.ims = h.PeekBytes(hdrIfModSince)
	c.rng = h.PeekBytes(hdrRangeB)
	c.ifRange = nil
	if len(c.rng) > 0 {
		c.ifRange = h.PeekBytes(hdrIfRange)
	}
	return c
}

// keep copies h's values into c's own storage, for use after h has been rewritten.
func (c *clientConds) keep(h *fasthttp.RequestHeader) {
	c.load(h)
	for i, v := range [4]*[]byte{&c.inm, &c.ims, &c.rng, &c.ifRange} {
		if *v != nil {
			c.own[i] = append(c.own[i][:0], *v...)
			*v = c.own[i]
		}
	}
}

// restoreRange puts the kept Range and If-Range back on h, for a request that must
// reach the origin as the client sent it.
func (c *clientConds) restoreRange(h *fasthttp.RequestHeader) {
	h.SetBytesKV(hdrRangeB, c.rng)
	if len(c.ifRange) > 0 {
		h.SetBytesKV(hdrIfRange, c.ifRange)
	}
}

// shape turns resp, a complete 200 answer, into what conds ask (see above). raw says
// that resp's body is not resp's own buffer but the cache entry's bytes (Entry.WriteTo),
// which must never be written to. It does not allocate.
func shape(resp *fasthttp.Response, conds *clientConds, get, raw bool) {
	if resp.StatusCode() != fasthttp.StatusOK || resp.IsBodyStream() {
		return
	}
	h := &resp.Header
	if len(conds.inm) > 0 || len(conds.ims) > 0 {
		if cache.Unchanged(conds.inm, conds.ims, h.PeekBytes(hdrETagB), h.PeekBytes(hdrLastModifiedB)) {
			resp.SetStatusCode(fasthttp.StatusNotModified)
			resp.ResetBody()
			return
		}
	}
	if !get || len(conds.rng) == 0 ||
		len(conds.ifRange) > 0 && !cache.IfRangeHolds(conds.ifRange, h.PeekBytes(hdrETagB), h.PeekBytes(hdrLastModifiedB)) {
		return
	}
	body := resp.Body()
	start, end, kind := cache.ParseRange(conds.rng, len(body))
	var cr [contentRangeBytes]byte
	switch kind {
	case cache.RangeSingle:
		h.SetCanonical(hdrContentRange, cache.AppendContentRange(cr[:0], start, end, len(body)))
		resp.SetStatusCode(fasthttp.StatusPartialContent)
		if raw {
			resp.SetBodyRaw(body[start : end+1])
		} else { // the origin's answer in resp's own buffer: move the slice to its start
			n := copy(body, body[start:end+1])
			resp.SwapBody(body[:n])
		}
	case cache.RangeUnsatisfiable:
		h.SetCanonical(hdrContentRange, cache.AppendContentRange(cr[:0], -1, 0, len(body)))
		resp.SetStatusCode(fasthttp.StatusRequestedRangeNotSatisfiable)
		resp.ResetBody()
	}
}
