package cache

import (
	"bytes"
	"strconv"

	"github.com/valyala/fasthttp"
)

// Ranges and conditionals answered from a stored response (RFC 9110 §13, §14). These
// helpers work on header values, not on requests, so that a caller can evaluate the
// client's headers after it has rewritten the request for the origin (a miss or a
// revalidation strips them: StripConditional). None of them allocates.

// RangeKind is what a Range header asks of a representation of a given size.
type RangeKind uint8

const (
	// RangeNone: no usable Range (absent, another unit, malformed, or an empty
	// representation): the whole representation is answered, 200.
	RangeNone RangeKind = iota
	// RangeSingle: one satisfiable range, answered 206 with Content-Range.
	RangeSingle
	// RangeUnsatisfiable: one range that starts at or past the end (or bytes=-0):
	// answered 416 with Content-Range: bytes */size.
	RangeUnsatisfiable
	// RangeMulti: more than one range. edge does not build multipart/byteranges
	// answers; a server may ignore Range (RFC 9110 §14.2), so the whole representation
	// is answered, 200.
	RangeMulti
)

// ParseRange parses the value of a Range header for a representation of size bytes:
// bytes=first-last, bytes=first- and bytes=-suffix (RFC 9110 §14.1.2). For RangeSingle,
// [start, end] is the inclusive byte range, clamped to the representation.
func ParseRange(v []byte, size int) (start, end int, kind RangeKind) {
	v = trimRightOWS(trimLeftOWS(v))
	if len(v) < 6 || !bytes.EqualFold(v[:6], []byte("bytes=")) || size <= 0 {
		return 0, 0, RangeNone
	}
	spec := trimLeftOWS(v[6:])
	if bytes.IndexByte(spec, ',') >= 0 {
		// An empty list element ("bytes=0-1,") still makes a list: RFC 9110 allows
		// them, and nothing is lost by answering whole.
		return 0, 0, RangeMulti
	}
	dash := bytes.IndexByte(spec, '-')
	if dash < 0 {
		return 0, 0, RangeNone
	}
	first, last := spec[:dash], spec[dash+1:]
	if len(first) == 0 { // suffix: the last n bytes
		n, ok := parseDigits(last)
		switch {
		case !ok:
			return 0, 0, RangeNone
		case n == 0:
			return 0, 0, RangeUnsatisfiable
		}
		return size - min(n, size), size - 1, RangeSingle
	}
	a, ok := parseDigits(first)
	if !ok {
		return 0, 0, RangeNone
	}
	b := size - 1
	if len(last) > 0 {
		if b, ok = parseDigits(last); !ok || b < a {
			return 0, 0, RangeNone // an invalid range-spec: the header is ignored
		}
		b = min(b, size-1)
	}
	if a >= size {
		return 0, 0, RangeUnsatisfiable
	}
	return a, b, RangeSingle
}

// parseDigits parses a non-empty run of ASCII digits; values beyond 1<<53 saturate
// there (far past any body edge can store, so the comparisons stay right).
func parseDigits(b []byte) (int, bool) {
	if len(b) == 0 {
		return 0, false
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		if n < 1<<53 {
			n = n*10 + int(c-'0')
		}
	}
	return n, true
}

// AppendContentRange appends the Content-Range value of a 206 for [start, end] of size
// bytes ("bytes start-end/size"), or of a 416 when start < 0 ("bytes */size").
func AppendContentRange(dst []byte, start, end, size int) []byte {
	dst = append(dst, "bytes "...)
	if start < 0 {
		dst = append(dst, '*')
	} else {
		dst = strconv.AppendInt(dst, int64(start), 10)
		dst = append(dst, '-')
		dst = strconv.AppendInt(dst, int64(end), 10)
	}
	dst = append(dst, '/')
	return strconv.AppendInt(dst, int64(size), 10)
}

// IfRangeHolds reports whether an If-Range value names the stored representation, so
// that its Range applies (RFC 9110 §13.1.5): an entity tag compared strongly (a weak
// tag on either side never matches), or a date equal byte for byte to the stored
// Last-Modified (clients send back the value they got; a differently written equal
// date answers the whole representation, which is always correct).
func IfRangeHolds(ifRange, etag, lastModified []byte) bool {
	ifRange = trimRightOWS(trimLeftOWS(ifRange))
	if len(ifRange) > 0 && (ifRange[0] == '"' || bytes.HasPrefix(ifRange, []byte("W/"))) {
		return ifRange[0] == '"' && len(etag) > 0 && etag[0] == '"' && bytes.Equal(ifRange, etag)
	}
	return len(ifRange) > 0 && bytes.Equal(ifRange, lastModified)
}

// Unchanged reports whether a GET/HEAD with these If-None-Match and If-Modified-Since
// values is satisfied by a representation with these validators, so that it is
// answered 304 (RFC 9110 §13.1.2, §13.1.3, §13.2.2): If-None-Match is compared weakly
// (lists allowed; "*" matches any stored representation); If-Modified-Since counts only without If-None-Match, and
// holds when Last-Modified is not later.
func Unchanged(inm, ims, etag, lastModified []byte) bool {
	if len(inm) > 0 {
		for len(inm) > 0 {
			var tok []byte
			tok, inm = nextToken(inm)
			if (len(tok) == 1 && tok[0] == '*') || weakEqual(tok, etag) {
				return true
			}
		}
		return false
	}
	if len(ims) == 0 || len(lastModified) == 0 {
		return false
	}
	if bytes.Equal(ims, lastModified) { // the usual case, and no date parsing
		return true
	}
	t, err := fasthttp.ParseHTTPDate(ims)
	if err != nil {
		return false
	}
	lm, err := fasthttp.ParseHTTPDate(lastModified)
	return err == nil && !lm.After(t)
}
