// Package compress holds the HTTP parts of answer compression that do not depend on
// edge's funnel: which encoding a client's Accept-Encoding prefers, which content types
// are worth compressing, the Vary and ETag an encoded answer needs, and the encoders
// (fasthttp's, on klauspost/compress and andybalholm/brotli). None of its functions
// allocates. It imports nothing of edge.
package compress

import (
	"bytes"
	"strings"

	"github.com/valyala/fasthttp"
)

// Encoding is a content coding edge produces.
type Encoding uint8

// The encodings.
const (
	Identity Encoding = iota
	Gzip
	Brotli
)

// Name is the Content-Encoding value ("" for Identity).
func (e Encoding) Name() string {
	switch e {
	case Gzip:
		return "gzip"
	case Brotli:
		return "br"
	}
	return ""
}

var (
	strGzip  = []byte("gzip")
	strXGzip = []byte("x-gzip")
	strBr    = []byte("br")
)

// Negotiate picks the encoding an Accept-Encoding value prefers among br and gzip
// (RFC 9110 §12.5.3: the highest non-zero quality; br on a tie); Identity when it takes
// neither.
func Negotiate(ae []byte) Encoding {
	best, bestQ := Identity, 0.0
	for len(ae) > 0 {
		var item []byte
		if i := bytes.IndexByte(ae, ','); i >= 0 {
			item, ae = ae[:i], ae[i+1:]
		} else {
			item, ae = ae, nil
		}
		name, params, _ := bytes.Cut(item, []byte(";"))
		name = bytes.TrimSpace(name)
		q := 1.0
		for len(params) > 0 {
			var prm []byte
			prm, params, _ = bytes.Cut(params, []byte(";"))
			k, v, ok := bytes.Cut(bytes.TrimSpace(prm), []byte("="))
			if ok && len(k) == 1 && (k[0] == 'q' || k[0] == 'Q') {
				q = parseQ(bytes.TrimSpace(v))
			}
		}
		var enc Encoding
		switch {
		case bytes.EqualFold(name, strBr):
			enc = Brotli
		case bytes.EqualFold(name, strGzip), bytes.EqualFold(name, strXGzip):
			enc = Gzip
		default:
			continue
		}
		if q > bestQ || q == bestQ && q > 0 && enc == Brotli {
			best, bestQ = enc, q
		}
	}
	return best
}

// parseQ reads a quality value ("0", "0.5", "1.000"); malformed is 0.
func parseQ(v []byte) float64 {
	if len(v) == 0 || len(v) > 5 {
		return 0
	}
	q, frac, seen := 0.0, 0.1, false
	for i, c := range v {
		switch {
		case i == 0 && (c == '0' || c == '1'):
			q = float64(c - '0')
		case i == 1 && c == '.':
			seen = true
		case i > 1 && seen && c >= '0' && c <= '9':
			q += float64(c-'0') * frac
			frac /= 10
		default:
			return 0
		}
	}
	return min(q, 1)
}

// Types is a set of compressible media types; an entry ending in "/" ("text/") stands
// for every type under it.
type Types [][]byte

// NewTypes builds a set from the configured types.
func NewTypes(list []string) Types {
	t := make(Types, len(list))
	for i, s := range list {
		t[i] = []byte(strings.ToLower(s))
	}
	return t
}

// Match reports whether a Content-Type value (parameters ignored) is in the set.
func (t Types) Match(ct []byte) bool {
	if i := bytes.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	ct = bytes.TrimSpace(ct)
	for _, m := range t {
		if len(m) > 0 && m[len(m)-1] == '/' {
			if len(ct) > len(m) && bytes.EqualFold(ct[:len(m)], m) {
				return true
			}
		} else if bytes.EqualFold(ct, m) {
			return true
		}
	}
	return false
}

// Append appends body encoded with enc (Gzip or Brotli) at level to dst.
func Append(dst, body []byte, enc Encoding, level int) []byte {
	if enc == Brotli {
		return fasthttp.AppendBrotliBytesLevel(dst, body, level)
	}
	return fasthttp.AppendGzipBytesLevel(dst, body, level)
}

var (
	hdrVary        = []byte("Vary")
	hdrETag        = []byte("ETag")
	strAcceptEnc   = []byte("Accept-Encoding")
	hdrContentEnc  = []byte("Content-Encoding")
	strVaryAnyWild = []byte("*")
)

// SetEncoded makes out, the body encoded with enc, the answer's body: Content-Encoding,
// Vary: Accept-Encoding, and a strong ETag made weak (the bytes differ from the
// identity's). out is copied.
func SetEncoded(resp *fasthttp.Response, out []byte, enc Encoding) {
	resp.SetBody(out)
	if enc == Brotli {
		resp.Header.SetBytesKV(hdrContentEnc, strBr)
	} else {
		resp.Header.SetBytesKV(hdrContentEnc, strGzip)
	}
	AddVary(&resp.Header)
	if et := resp.Header.PeekBytes(hdrETag); len(et) > 0 && et[0] == '"' && len(et) <= 128 {
		var weak [130]byte
		resp.Header.SetBytesKV(hdrETag, append(append(weak[:0], 'W', '/'), et...))
	}
}

// AddVary adds Accept-Encoding to the answer's Vary, unless it is there (or "*").
func AddVary(h *fasthttp.ResponseHeader) {
	v := h.PeekBytes(hdrVary)
	if len(v) == 0 {
		h.SetBytesKV(hdrVary, strAcceptEnc)
		return
	}
	if containsFold(v, strAcceptEnc) || bytes.Equal(bytes.TrimSpace(v), strVaryAnyWild) || len(v) >= 200 {
		return
	}
	var buf [256]byte
	h.SetBytesKV(hdrVary, append(append(append(buf[:0], v...), ", "...), strAcceptEnc...))
}

// containsFold reports whether s contains sub, ASCII case ignored.
func containsFold(s, sub []byte) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if bytes.EqualFold(s[i:i+len(sub)], sub) {
			return true
		}
	}
	return false
}
