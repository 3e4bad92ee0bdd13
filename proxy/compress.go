package proxy

import (
	"bytes"
	"runtime"

	"github.com/VictoriaMetrics/fastcache"
	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
)

// Compression (the compression block). After a route made its answer, an answer that is
// 200, of a compressible type, at least min_size, not encoded already, not a stream, not
// marked no-transform, to a request without Range whose Accept-Encoding takes br or gzip
// (quality values honoured), is compressed: Content-Encoding set, Vary: Accept-Encoding
// added, a strong ETag made weak (the bytes differ). The encoder is fasthttp's (on
// klauspost/compress and andybalholm/brotli).
//
// A cache hit compresses nothing again: the compressed bytes of a cached answer are kept
// in a memo of their own keyed by the entry's key, its time of storing and the encoding,
// so each entry is compressed once per encoding (a new version of the entry has a new
// time, and so new variants), and a hit copies them, allocation-free. At most
// max_concurrent compressions run at once; an answer finding no room goes uncompressed,
// so compression can never queue requests.

// compressor is one config's compression settings and the memo they share.
type compressor struct {
	types       [][]byte
	minSize     int
	gzipLevel   int
	brotliLevel int
	slots       chan struct{}
	memo        *fastcache.Cache
	counts      *compressCounts
}

// compressCounts are edge_compress_total's children; they outlive snapshots.
type compressCounts struct {
	done  [2]prometheus.Counter // by encoding: a body compressed
	memo  [2]prometheus.Counter // by encoding: a cached answer's compressed bytes reused
	busy  prometheus.Counter    // skipped: every compression slot taken
	saved prometheus.Counter    // bytes saved
}

type encoding uint8

const (
	encIdentity encoding = iota
	encGzip
	encBrotli
)

var (
	strGzip          = []byte("gzip")
	strBr            = []byte("br")
	strAcceptEncTok  = []byte("Accept-Encoding")
	hdrVary          = []byte("Vary")
	hdrContentEnc    = []byte("Content-Encoding")
	hdrETag          = []byte("ETag")
	hdrRange         = []byte("Range")
	strNoTransform   = []byte("no-transform")
	hdrCacheControlB = []byte("Cache-Control")
)

// compressMemoSize is the memo of compressed cached answers: fastcache's smallest.
const compressMemoSize = 32 << 20

func (p *Proxy) initCompression() {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "edge_compress_total",
		Help: "Answers compressed by encoding and how: compressed (the body was compressed now), memo (a cached answer's compressed bytes reused), busy (sent uncompressed: every compression slot was taken).",
	}, []string{"encoding", "result"})
	saved := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "edge_compress_saved_bytes_total", Help: "Bytes compression took off answers.",
	})
	p.metrics.Reg.MustRegister(vec, saved)
	p.compressCounts = &compressCounts{
		done:  [2]prometheus.Counter{vec.WithLabelValues("gzip", "compressed"), vec.WithLabelValues("br", "compressed")},
		memo:  [2]prometheus.Counter{vec.WithLabelValues("gzip", "memo"), vec.WithLabelValues("br", "memo")},
		busy:  vec.WithLabelValues("", "busy"),
		saved: saved,
	}
}

// buildCompression makes the compressor of s (nil without a compression block),
// keeping the memo of the previous one.
func (p *Proxy) buildCompression(s *Snapshot, prev *Snapshot) {
	c := s.Config.Compression
	if c == nil {
		return
	}
	cp := &compressor{minSize: int(c.MinSize), gzipLevel: c.GzipLevel, brotliLevel: c.BrotliLevel, counts: p.compressCounts}
	for _, t := range c.Types {
		cp.types = append(cp.types, []byte(t))
	}
	n := c.MaxConcurrent
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	cp.slots = make(chan struct{}, n)
	if prev != nil && prev.compress != nil {
		cp.memo = prev.compress.memo
	} else {
		cp.memo = fastcache.New(compressMemoSize)
	}
	s.compress = cp
}

// negotiate picks the encoding an Accept-Encoding value prefers among br and gzip
// (RFC 9110 §12.5.3: the highest non-zero quality; br on a tie); identity when it takes
// neither. It does not allocate.
func negotiate(ae []byte) encoding {
	best, bestQ := encIdentity, 0.0
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
		var enc encoding
		switch {
		case bytes.EqualFold(name, strBr):
			enc = encBrotli
		case bytes.EqualFold(name, strGzip), bytes.EqualFold(name, []byte("x-gzip")):
			enc = encGzip
		default:
			continue
		}
		if q > bestQ || q == bestQ && q > 0 && enc == encBrotli {
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

// compressible reports whether a content type is one of the types.
func (cp *compressor) compressible(ct []byte) bool {
	if i := bytes.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	ct = bytes.TrimSpace(ct)
	for _, t := range cp.types {
		if len(t) > 0 && t[len(t)-1] == '/' {
			if len(ct) > len(t) && bytes.EqualFold(ct[:len(t)], t) {
				return true
			}
		} else if bytes.EqualFold(ct, t) {
			return true
		}
	}
	return false
}

// apply compresses ctx's answer when it may (see above). memoKey is the memo key of a
// cached answer (0: not cached); sc.buf is the scratch it uses.
func (cp *compressor) apply(ctx *fasthttp.RequestCtx, memoKey uint64, sc *scratch) {
	resp, req := &ctx.Response, &ctx.Request
	if resp.StatusCode() != fasthttp.StatusOK || resp.IsBodyStream() || req.Header.IsHead() {
		return
	}
	body := resp.Body()
	if len(body) < cp.minSize || len(resp.Header.PeekBytes(hdrContentEnc)) > 0 ||
		len(req.Header.PeekBytes(hdrRange)) > 0 || !cp.compressible(resp.Header.ContentType()) ||
		bytes.Contains(resp.Header.PeekBytes(hdrCacheControlB), strNoTransform) {
		return
	}
	enc := negotiate(req.Header.PeekBytes(strAcceptEncTok))
	if enc == encIdentity {
		// The answer still depends on Accept-Encoding for caches downstream.
		addVary(&resp.Header)
		return
	}
	var key [9]byte
	if memoKey != 0 {
		key[0] = byte(enc)
		putUint64(key[1:9], memoKey)
		if v := cp.memo.Get(sc.buf[:0], key[:9]); len(v) > 0 {
			sc.buf = v[:0]
			cp.counts.memo[enc-1].Inc()
			cp.setEncoded(resp, v, enc, len(body))
			return
		}
	}
	select {
	case cp.slots <- struct{}{}:
	default:
		cp.counts.busy.Inc()
		return
	}
	var out []byte
	if enc == encBrotli {
		out = fasthttp.AppendBrotliBytesLevel(sc.buf[:0], body, cp.brotliLevel)
	} else {
		out = fasthttp.AppendGzipBytesLevel(sc.buf[:0], body, cp.gzipLevel)
	}
	<-cp.slots
	sc.buf = out[:0]
	if cap(sc.buf) > 256<<10 { // a large body: do not keep its buffer in the pool
		sc.buf = make([]byte, 0, 256)
	}
	cp.counts.done[enc-1].Inc()
	if memoKey != 0 && len(out) < 64<<10 { // fastcache's bound for one value
		cp.memo.Set(key[:9], out)
	}
	cp.setEncoded(resp, out, enc, len(body))
}

// setEncoded makes out, the body encoded with enc, the answer's body.
func (cp *compressor) setEncoded(resp *fasthttp.Response, out []byte, enc encoding, was int) {
	if len(out) >= was { // nothing gained: keep the original
		addVary(&resp.Header)
		return
	}
	cp.counts.saved.Add(float64(was - len(out)))
	resp.SetBody(out) // copies into the answer's own buffer: out is scratch
	if enc == encBrotli {
		resp.Header.SetBytesKV(hdrContentEnc, strBr)
	} else {
		resp.Header.SetBytesKV(hdrContentEnc, strGzip)
	}
	addVary(&resp.Header)
	if et := resp.Header.PeekBytes(hdrETag); len(et) > 0 && et[0] == '"' {
		var weak [130]byte
		if len(et) <= 128 {
			resp.Header.SetBytesKV(hdrETag, append(append(weak[:0], 'W', '/'), et...))
		}
	}
}

// addVary adds Accept-Encoding to the answer's Vary, unless it is there (or "*").
func addVary(h *fasthttp.ResponseHeader) {
	v := h.PeekBytes(hdrVary)
	if len(v) == 0 {
		h.SetBytesKV(hdrVary, strAcceptEncTok)
		return
	}
	if containsFold(v, strAcceptEncTok) || bytes.Equal(bytes.TrimSpace(v), []byte("*")) {
		return
	}
	var buf [256]byte
	if len(v) < 200 {
		h.SetBytesKV(hdrVary, append(append(append(buf[:0], v...), ", "...), strAcceptEncTok...))
	}
}

// containsFold reports whether s contains sub, ASCII case ignored, without allocating.
func containsFold(s, sub []byte) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if bytes.EqualFold(s[i:i+len(sub)], sub) {
			return true
		}
	}
	return false
}

// memoKeyOf is the memo key of a cached entry: its cache key and time of storing.
func memoKeyOf(key []byte, storedAtNano int64) uint64 {
	return (xxhash.Sum64(key) ^ uint64(storedAtNano)*0x9E3779B97F4A7C15) | 1 // never 0
}

func putUint64(b []byte, v uint64) {
	for i := range 8 {
		b[i] = byte(v >> (8 * i))
	}
}
