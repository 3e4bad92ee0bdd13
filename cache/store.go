package cache

import (
	"bytes"
	"encoding/binary"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/valyala/fasthttp"
)

// put encodes and stores one response. body is copied; when big is true the body already
// lives under the data key of nonce and only the record is rewritten (304 renewal).
// date is the Date to store when h's own is not the one (a renewal builds h through
// fasthttp's setters, which drop Date); nil means h's.
func (c *Cache) put(key []byte, req *fasthttp.RequestHeader, status int, h *fasthttp.ResponseHeader, date []byte,
	body []byte, big bool, nonce uint64, oldTags []byte, rule *Rule, now time.Time, epoch uint64) error {
	f, err := rule.Evaluate(status, h, now)
	if err != nil {
		return err
	}
	if len(key) > 0xffff {
		return ErrHeadersTooBig
	}
	enc := getEncoder()
	defer putEncoder(enc)
	enc.conn = append(enc.conn[:0], h.Peek(fasthttp.HeaderConnection)...)

	// Vary names (lower-cased) with this request's values, and Surrogate-Key tags.
	nVary, nTags := 0, 0
	for k, v := range h.All() {
		switch {
		case bytes.EqualFold(k, []byte(fasthttp.HeaderVary)):
			for len(v) > 0 {
				var name []byte
				name, v = nextToken(v)
				if len(name) == 0 || len(name) > 255 {
					continue
				}
				if nVary == 255 {
					return ErrHeadersTooBig
				}
				nVary++
				enc.vary = append(enc.vary, byte(len(name)))
				start := len(enc.vary)
				enc.vary = append(enc.vary, name...)
				lower(enc.vary[start:])
				val := varyValue(req, enc.vary[start:])
				if len(val) > 0xffff {
					return ErrHeadersTooBig
				}
				enc.vary = appendU16Bytes(enc.vary, val)
			}
		case bytes.EqualFold(k, strHSurrogateKey):
			for _, t := range bytes.Fields(v) {
				if nTags == MaxTags {
					return ErrTooManyTags
				}
				nTags++
				enc.tags = binary.BigEndian.AppendUint64(enc.tags, xxhash.Sum64(t))
			}
		}
	}
	if nTags == 0 && len(oldTags) > 0 {
		enc.tags = append(enc.tags, oldTags...)
		nTags = len(oldTags) / 8
	}

	life := f.Lifetime - f.Age
	if life < 0 {
		life = 0
	}
	ageSec := int64(f.Age / time.Second)
	if ageSec > 1<<31 {
		ageSec = 1 << 31
	}
	n := now.UnixNano()
	uri := originForm(req.RequestURI())
	path := uri
	if i := bytes.IndexByte(uri, '?'); i >= 0 {
		path = uri[:i]
	}

	b := enc.b[:0]
	b = append(b, recVersion, kindEntry, 0)
	b = binary.BigEndian.AppendUint16(b, uint16(status))
	b = binary.BigEndian.AppendUint64(b, uint64(n))
	b = binary.BigEndian.AppendUint64(b, uint64(n+int64(life)))
	b = binary.BigEndian.AppendUint64(b, uint64(n+int64(life)+int64(f.Stale)))
	b = binary.BigEndian.AppendUint64(b, uint64(n+int64(life)+int64(max(f.Stale, f.ErrorStale))))
	b = binary.BigEndian.AppendUint32(b, uint32(ageSec))
	b = binary.BigEndian.AppendUint64(b, epoch)
	b = binary.BigEndian.AppendUint64(b, xxhash.Sum64String(rule.Route))
	b = binary.BigEndian.AppendUint64(b, xxhash.Sum64(path))
	b = binary.BigEndian.AppendUint64(b, xxhash.Sum64(uri))
	b = append(b, byte(nTags))
	b = append(b, enc.tags...)
	b = appendU16Bytes(b, key)
	b = append(b, byte(nVary))
	b = append(b, enc.vary...)
	etag, lm := h.Peek(fasthttp.HeaderETag), h.Peek(fasthttp.HeaderLastModified)
	if len(etag) > 0xffff || len(lm) > 0xffff {
		return ErrHeadersTooBig
	}
	b = appendU16Bytes(b, etag)
	b = appendU16Bytes(b, lm)
	countAt := len(b)
	b = append(b, 0, 0)
	// Date goes first, and always: the origin's (date, or h's own), else the time the
	// answer arrived, as RFC 9110 §6.6.1 asks of a cache that stores an answer without one.
	// Hits send it unchanged (WriteTo) and Age says how long it was kept.
	if len(date) == 0 {
		date = h.Peek(fasthttp.HeaderDate)
	}
	var received [32]byte
	if len(date) == 0 || len(date) > 0xff {
		date = fasthttp.AppendHTTPDate(received[:0], now)
	}
	b = appendU16Bytes(b, strHDate)
	b = appendU16Bytes(b, date)
	nh := 1
	for k, v := range h.All() {
		if dropHeader(k, enc.conn) || (!rule.KeepTargeted && rule.IsTargeted(k)) {
			continue
		}
		if len(k) > 0xffff || len(v) > 0xffff || nh == 0xffff {
			return ErrHeadersTooBig
		}
		nh++
		b = appendU16Bytes(b, k)
		b = appendU16Bytes(b, v)
	}
	binary.BigEndian.PutUint16(b[countAt:], uint16(nh))

	kh := xxhash.Sum64(key)
	defer c.hot.invalidate(kh) // after the fastcache writes below (hot.go)
	switch {
	case big:
		b[2] |= flagBig
		b = binary.BigEndian.AppendUint64(b, nonce)
		b = binary.BigEndian.AppendUint32(b, uint32(len(body)))
	case len(b)+4+len(body) <= maxRecord:
		b = binary.BigEndian.AppendUint32(b, uint32(len(body)))
		b = append(b, body...)
	default:
		if len(b)+12 > maxRecord {
			return ErrHeadersTooBig
		}
		// Big bodies go through SetBig under their own data key; the record under the
		// primary key is always a small Set value, so the two APIs never share a key.
		nonce = c.nonce.Add(1)
		dk, dn := makeKey(fkBody, kh, nonce)
		c.fc.SetBig(dk[:dn], body)
		b[2] |= flagBig
		b = binary.BigEndian.AppendUint64(b, nonce)
		b = binary.BigEndian.AppendUint32(b, uint32(len(body)))
	}
	enc.b = b
	if len(b) > maxRecord {
		return ErrHeadersTooBig
	}

	pk, pn := makeKey(fkPrimary, kh, 0)
	if nVary == 0 {
		c.fc.Set(pk[:pn], b)
		c.stored.Add(1)
		return nil
	}
	sh := kh
	for v := enc.vary; len(v) > 0; {
		name := v[1 : 1+int(v[0])]
		v = v[1+int(v[0]):]
		var val []byte
		val, v = readU16Bytes(v)
		sh = mix(sh, xxhash.Sum64(name))
		sh = mix(sh, xxhash.Sum64(val))
	}
	sk, sn := makeKey(fkVariant, sh, 0)
	c.fc.Set(sk[:sn], b)

	// The primary key then points to the variants: key and the varied header names.
	b = append(b[:0], recVersion, kindVary)
	b = appendU16Bytes(b, key)
	b = append(b, byte(nVary))
	for v := enc.vary; len(v) > 0; {
		l := int(v[0])
		b = append(b, v[:1+l]...)
		_, v = readU16Bytes(v[1+l:])
	}
	enc.b = b
	if len(b) > maxRecord {
		return ErrHeadersTooBig
	}
	c.fc.Set(pk[:pn], b)
	c.stored.Add(1)
	return nil
}

func lower(b []byte) {
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
}

// dropped lists the headers never replayed from the cache: hop-by-hop ones (RFC 9110
// §7.6.1), cookies, the surrogate headers meant for the cache, and the ones recomputed on
// every answer (Age, Content-Length, X-Cache). Date is stored apart, first (put).
var dropped = [][]byte{
	[]byte("Connection"), []byte("Keep-Alive"), []byte("Proxy-Connection"),
	[]byte("Proxy-Authenticate"), []byte("Proxy-Authorization"), []byte("TE"),
	[]byte("Trailer"), []byte("Transfer-Encoding"), []byte("Upgrade"),
	[]byte("Set-Cookie"), []byte("Surrogate-Key"), []byte("Surrogate-Control"),
	[]byte("Age"), []byte("Date"), []byte("Content-Length"), []byte("X-Cache"),
}

func dropHeader(k, conn []byte) bool {
	for _, d := range dropped {
		if bytes.EqualFold(k, d) {
			return true
		}
	}
	for len(conn) > 0 {
		var tok []byte
		tok, conn = nextToken(conn)
		if bytes.EqualFold(k, tok) {
			return true
		}
	}
	return false
}
