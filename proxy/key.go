package proxy

import (
	"encoding/binary"
	"net/netip"

	"github.com/cespare/xxhash/v2"
	"github.com/edge-gw/edge/config"
	"github.com/valyala/fasthttp"
)

// compiledKey is a key expression (config.Key) ready for the hot path: limits, cells,
// the blacklist's user_key and seckill's user and item keys read a request's key
// through it. It is immutable once built and safe for concurrent use.
//
// # Encoding
//
// A key of one part is that part's value as is, so it can be compared with configured
// values (a banned user id, a cell name). A key of several parts writes each part as
// its length (uvarint) followed by its bytes. Values may hold any byte (a decoded
// query argument or path segment can hold NUL), so no separator byte alone could keep
// ("a|b", "c") apart from ("a", "b|c"); the length prefix does: two different tuples of
// values never give the same key bytes.
//
// # Values
//
//   - ip: the client address (after trusted_proxies) in text form; missing when the
//     address is not valid (e.g. a unix socket peer).
//   - host: the Host header without its port, lower-cased, so that neither the case
//     nor a port a client writes makes a new key.
//   - header:NAME, cookie:NAME, query:NAME: the raw value (query arguments decoded).
//   - path:N: the N-th segment of the decoded, normalised path, 1-based.
//   - const:TEXT: TEXT.
//
// A key is missing when any of its parts other than const is empty: a request without
// the user header has no user+item key, rather than sharing one per item.
type compiledKey struct {
	parts []keyPart
	text  string // as written in the config, for messages
}

type keyPart struct {
	kind  config.KeyKind
	name  string // header, cookie or query name
	konst []byte // const text
	n     int    // path segment, 1-based
}

// compileKey prepares k for appendKey and hashKey. The zero Key compiles to a key that
// is always missing.
func compileKey(k config.Key) *compiledKey {
	ck := &compiledKey{text: k.Text}
	for _, p := range k.Parts {
		kp := keyPart{kind: p.Kind, name: p.Name, n: p.N}
		if p.Kind == config.KeyConst {
			kp.konst = []byte(p.Name)
		}
		ck.parts = append(ck.parts, kp)
	}
	return ck
}

// value returns the raw value of the part for the request, and whether it must be
// lower-cased. An ip part is written into ipBuf (at least 48 bytes of capacity), so the
// result may alias it. The result is valid until the handler returns.
func (kp *keyPart) value(ctx *fasthttp.RequestCtx, client netip.Addr, ipBuf []byte) (v []byte, lower bool) {
	switch kp.kind {
	case config.KeyIP:
		if !client.IsValid() {
			return nil, false
		}
		return client.AppendTo(ipBuf[:0]), false
	case config.KeyHost:
		return hostOnly(ctx.Host()), true
	case config.KeyHeader:
		return ctx.Request.Header.Peek(kp.name), false
	case config.KeyCookie:
		return ctx.Request.Header.Cookie(kp.name), false
	case config.KeyQuery:
		return ctx.QueryArgs().Peek(kp.name), false
	case config.KeyPath:
		return pathSegment(routePath(ctx), kp.n), false
	case config.KeyConst:
		return kp.konst, false
	}
	panic("BUG: unknown key kind")
}

// pathSegment returns the n-th (1-based) segment of path, or nil.
func pathSegment(path []byte, n int) []byte {
	if len(path) > 0 && path[0] == '/' {
		path = path[1:]
	}
	for i := 1; ; i++ {
		end := 0
		for end < len(path) && path[end] != '/' {
			end++
		}
		if i == n {
			return path[:end]
		}
		if end == len(path) {
			return nil
		}
		path = path[end+1:]
	}
}

// appendKey appends the request's key to dst (see the encoding in compiledKey's doc)
// and returns the extended slice. ok is false when the key is missing; dst is then
// returned unchanged. It allocates only when dst must grow.
func (k *compiledKey) appendKey(dst []byte, ctx *fasthttp.RequestCtx, client netip.Addr) (key []byte, ok bool) {
	var ipBuf [48]byte
	start := len(dst)
	multi := len(k.parts) > 1
	for i := range k.parts {
		v, lower := k.parts[i].value(ctx, client, ipBuf[:0])
		if len(v) == 0 {
			return dst[:start], false
		}
		if multi {
			dst = binary.AppendUvarint(dst, uint64(len(v)))
		}
		if lower {
			for _, c := range v {
				dst = append(dst, toLower(c))
			}
		} else {
			dst = append(dst, v...)
		}
	}
	return dst, len(k.parts) > 0
}

// hashKey returns the xxhash, with seed, of the bytes appendKey would append, without
// a buffer: it allocates nothing whatever the key's length. ok is false when the key is
// missing. Use seed 0 where every edge node must get the same hash for a key (cells);
// use a per-process random seed where the hash only needs to be stable within the
// process (limiter buckets), so that clients cannot compute colliding keys offline.
func (k *compiledKey) hashKey(ctx *fasthttp.RequestCtx, client netip.Addr, seed uint64) (h uint64, ok bool) {
	var d xxhash.Digest
	var ipBuf [48]byte
	d.ResetWithSeed(seed)
	multi := len(k.parts) > 1
	for i := range k.parts {
		v, lower := k.parts[i].value(ctx, client, ipBuf[:0])
		if len(v) == 0 {
			return 0, false
		}
		if multi {
			var n [binary.MaxVarintLen64]byte
			d.Write(n[:binary.PutUvarint(n[:], uint64(len(v)))])
		}
		if lower {
			writeLower(&d, v)
		} else {
			d.Write(v)
		}
	}
	return d.Sum64(), len(k.parts) > 0
}

// writeLower writes v lower-cased to d, through a small stack buffer.
func writeLower(d *xxhash.Digest, v []byte) {
	var buf [64]byte
	for len(v) > 0 {
		n := copy(buf[:], v)
		for i := range buf[:n] {
			buf[i] = toLower(buf[i])
		}
		d.Write(buf[:n])
		v = v[n:]
	}
}

func toLower(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}
