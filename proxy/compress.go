package proxy

import (
	"bytes"
	"runtime"

	"github.com/VictoriaMetrics/fastcache"
	"github.com/cespare/xxhash/v2"
	"github.com/edge-gw/edge/compress"
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
	types       compress.Types
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

var (
	hdrContentEnc    = []byte("Content-Encoding")
	hdrRange         = []byte("Range")
	strNoTransform   = []byte("no-transform")
	hdrCacheControlB = []byte("Cache-Control")
	strAcceptEncTok  = []byte("Accept-Encoding")
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
	cp := &compressor{types: compress.NewTypes(c.Types), minSize: int(c.MinSize), gzipLevel: c.GzipLevel,
		brotliLevel: c.BrotliLevel, counts: p.compressCounts}
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

// setEncoded makes out, the body encoded with enc, the answer's body when it is smaller.
func (cp *compressor) setEncoded(resp *fasthttp.Response, out []byte, enc compress.Encoding, was int) {
	if len(out) >= was { // nothing gained: keep the original
		compress.AddVary(&resp.Header)
		return
	}
	cp.counts.saved.Add(float64(was - len(out)))
	compress.SetEncoded(resp, out, enc) // copies: out is scratch
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
		len(req.Header.PeekBytes(hdrRange)) > 0 || !cp.types.Match(resp.Header.ContentType()) ||
		bytes.Contains(resp.Header.PeekBytes(hdrCacheControlB), strNoTransform) {
		return
	}
	enc := compress.Negotiate(req.Header.PeekBytes(strAcceptEncTok))
	if enc == compress.Identity {
		// The answer still depends on Accept-Encoding for caches downstream.
		compress.AddVary(&resp.Header)
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
	level := cp.gzipLevel
	if enc == compress.Brotli {
		level = cp.brotliLevel
	}
	out := compress.Append(sc.buf[:0], body, enc, level)
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

// memoKeyOf is the memo key of a cached entry: its cache key and time of storing.
func memoKeyOf(key []byte, storedAtNano int64) uint64 {
	return (xxhash.Sum64(key) ^ uint64(storedAtNano)*0x9E3779B97F4A7C15) | 1 // never 0
}

func putUint64(b []byte, v uint64) {
	for i := range 8 {
		b[i] = byte(v >> (8 * i))
	}
}
