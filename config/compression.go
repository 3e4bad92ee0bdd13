package config

import "strings"

// Compression is the compression block (edge): answers of compressible types above a
// size are compressed with gzip or brotli, by the client's Accept-Encoding
// (docs/config.md, "Compression"). nil: off.
type Compression struct {
	Types       []string // types: content types compressed (a "text/" entry matches every text/ type); default the usual text, JSON, JavaScript, XML and SVG types
	MinSize     int64    // min_size: smaller bodies are sent as they are; default 1KB
	GzipLevel   int      // gzip_level: 1 (fast) to 9; default 5
	BrotliLevel int      // brotli_level: 0 to 11; default 4
	// MaxConcurrent (max_concurrent) bounds compressions running at once, so that they
	// cannot starve the proxy; an answer finding no room is sent uncompressed. Default 0:
	// the number of CPUs edge uses.
	MaxConcurrent int
}

// DefaultCompressTypes are the types compressed when types is not given.
var DefaultCompressTypes = []string{"text/", "application/json", "application/javascript", "application/xml",
	"application/xhtml+xml", "application/rss+xml", "application/atom+xml", "application/wasm", "image/svg+xml"}

func decodeCompression(b *body) *Compression {
	c := &Compression{Types: DefaultCompressTypes, MinSize: 1 << 10, GzipLevel: 5, BrotliLevel: 4}
	if rs, ok := b.strList("types", &c.Types); ok {
		for i, t := range c.Types {
			c.Types[i] = strings.ToLower(t)
			if !strings.Contains(t, "/") {
				b.ps.add(rs[i], "compression type %q is not a media type like \"application/json\" or \"text/\"", t)
			}
		}
	}
	b.size("min_size", &c.MinSize)
	b.integer("gzip_level", &c.GzipLevel, 1)
	if c.GzipLevel > 9 {
		b.ps.add(b.rangeOf("gzip_level"), "gzip_level must be 1 to 9, got %d", c.GzipLevel)
	}
	b.integer("brotli_level", &c.BrotliLevel, 0)
	if c.BrotliLevel > 11 {
		b.ps.add(b.rangeOf("brotli_level"), "brotli_level must be 0 to 11, got %d", c.BrotliLevel)
	}
	b.integer("max_concurrent", &c.MaxConcurrent, 0)
	b.finish()
	return c
}
