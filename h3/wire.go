package h3

import (
	"bufio"
	"errors"
	"io"
	"strings"

	"github.com/edge-gw/edge/h2"
	"golang.org/x/net/http2/hpack"
)

// HTTP/3 on the wire (RFC 9114 §7) and the static-only QPACK (RFC 9204) edge speaks:
// edge announces a dynamic table capacity of 0, so a client's field sections may only
// use the static table and literals, and edge's own use the static table for :status
// and literals for the rest, never Huffman-coded (allowed, and cheaper to write).

// Frame types (RFC 9114 §7.2).
const (
	frameData        = 0x0
	frameHeaders     = 0x1
	frameCancelPush  = 0x3
	frameSettings    = 0x4
	framePushPromise = 0x5
	frameGoAway      = 0x7
	frameMaxPushID   = 0xd
)

// Unidirectional stream types (RFC 9114 §6.2, RFC 9204 §4.2).
const (
	streamControl      = 0x0
	streamPush         = 0x1
	streamQPACKEncoder = 0x2
	streamQPACKDecoder = 0x3
)

// Settings (RFC 9114 §7.2.4.1, RFC 9204 §5).
const (
	settingMaxFieldSectionSize = 0x6
)

// Error codes (RFC 9114 §8.1, RFC 9204 §6).
const (
	errNoError              = 0x100
	errInternal             = 0x102
	errStreamCreation       = 0x103
	errClosedCriticalStream = 0x104
	errFrameUnexpected      = 0x105
	errFrame                = 0x106
	errMissingSettings      = 0x10a
	errRequestRejected      = 0x10b
	errRequestIncomplete    = 0x10d
	errMessage              = 0x10e
	errQPACKDecompression   = 0x200
)

// appendVarint appends v as a QUIC variable-length integer (RFC 9000 §16).
func appendVarint(b []byte, v uint64) []byte {
	switch {
	case v < 1<<6:
		return append(b, byte(v))
	case v < 1<<14:
		return append(b, 0x40|byte(v>>8), byte(v))
	case v < 1<<30:
		return append(b, 0x80|byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
	}
	return append(b, 0xc0|byte(v>>56), byte(v>>48), byte(v>>40), byte(v>>32), byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

// readVarint reads a QUIC variable-length integer.
func readVarint(r *bufio.Reader) (uint64, error) {
	first, err := r.ReadByte()
	if err != nil {
		return 0, err
	}
	v := uint64(first & 0x3f)
	for n := 1<<(first>>6) - 1; n > 0; n-- {
		b, err := r.ReadByte()
		if err != nil {
			return 0, noEOF(err)
		}
		v = v<<8 | uint64(b)
	}
	return v, nil
}

// noEOF turns an EOF inside a frame into the truncation it is.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// appendFrameHeader appends a frame's type and length.
func appendFrameHeader(b []byte, typ, length uint64) []byte {
	return appendVarint(appendVarint(b, typ), length)
}

// staticTable is QPACK's static table (RFC 9204 Appendix A): "name" or "name: value".
var staticTable = [...]string{
	":authority", ":path: /", "age: 0", "content-disposition", "content-length: 0", "cookie",
	"date", "etag", "if-modified-since", "if-none-match", "last-modified", "link", "location",
	"referer", "set-cookie", ":method: CONNECT", ":method: DELETE", ":method: GET",
	":method: HEAD", ":method: OPTIONS", ":method: POST", ":method: PUT", ":scheme: http",
	":scheme: https", ":status: 103", ":status: 200", ":status: 304", ":status: 404",
	":status: 503", "accept: */*", "accept: application/dns-message",
	"accept-encoding: gzip, deflate, br", "accept-ranges: bytes",
	"access-control-allow-headers: cache-control", "access-control-allow-headers: content-type",
	"access-control-allow-origin: *", "cache-control: max-age=0",
	"cache-control: max-age=2592000", "cache-control: max-age=604800", "cache-control: no-cache",
	"cache-control: no-store", "cache-control: public, max-age=31536000",
	"content-encoding: br", "content-encoding: gzip", "content-type: application/dns-message",
	"content-type: application/javascript", "content-type: application/json",
	"content-type: application/x-www-form-urlencoded", "content-type: image/gif",
	"content-type: image/jpeg", "content-type: image/png", "content-type: text/css",
	"content-type: text/html; charset=utf-8", "content-type: text/plain",
	"content-type: text/plain;charset=utf-8", "range: bytes=0-",
	"strict-transport-security: max-age=31536000",
	"strict-transport-security: max-age=31536000; includesubdomains",
	"strict-transport-security: max-age=31536000; includesubdomains; preload",
	"vary: accept-encoding", "vary: origin", "x-content-type-options: nosniff",
	"x-xss-protection: 1; mode=block", ":status: 100", ":status: 204", ":status: 206",
	":status: 302", ":status: 400", ":status: 403", ":status: 421", ":status: 425",
	":status: 500", "accept-language", "access-control-allow-credentials: FALSE",
	"access-control-allow-credentials: TRUE", "access-control-allow-headers: *",
	"access-control-allow-methods: get", "access-control-allow-methods: get, post, options",
	"access-control-allow-methods: options", "access-control-expose-headers: content-length",
	"access-control-request-headers: content-type", "access-control-request-method: get",
	"access-control-request-method: post", "alt-svc: clear", "authorization",
	"content-security-policy: script-src 'none'; object-src 'none'; base-uri 'none'",
	"early-data: 1", "expect-ct", "forwarded", "if-range", "origin", "purpose: prefetch",
	"server", "timing-allow-origin: *", "upgrade-insecure-requests: 1", "user-agent",
	"x-forwarded-for", "x-frame-options: deny", "x-frame-options: sameorigin",
}

// staticEntry is one entry of staticTable, split once.
type staticEntry struct{ name, value string }

var staticEntries = func() (t [len(staticTable)]staticEntry) {
	for i, s := range staticTable {
		// A pseudo-header's name starts with ':'; the separator is the first ": ".
		name, value, _ := strings.Cut(s[1:], ": ")
		t[i] = staticEntry{s[:1] + name, value}
	}
	return t
}()

// statusIndex is the static index of ":status: N", or 0 when there is none.
var statusIndex = func() (t [600]uint8) {
	for i, e := range staticEntries {
		if e.name == ":status" {
			n := int(e.value[0]-'0')*100 + int(e.value[1]-'0')*10 + int(e.value[2]-'0')
			t[n] = uint8(i)
		}
	}
	return t
}()

var errQPACK = errors.New("h3: malformed or dynamic-table QPACK field section")

// readPrefixInt reads an integer with an n-bit prefix (RFC 7541 §5.1, RFC 9204 §4.1.1)
// from p, returning the rest.
func readPrefixInt(p []byte, n uint) (uint64, []byte, error) {
	if len(p) == 0 {
		return 0, nil, errQPACK
	}
	mask := uint64(1)<<n - 1
	v := uint64(p[0]) & mask
	p = p[1:]
	if v < mask {
		return v, p, nil
	}
	for shift := uint(0); ; shift += 7 {
		if len(p) == 0 || shift > 56 {
			return 0, nil, errQPACK
		}
		b := p[0]
		p = p[1:]
		v += uint64(b&0x7f) << shift
		if b&0x80 == 0 {
			return v, p, nil
		}
	}
}

// fieldDecoder decodes a static-only QPACK field section into name, value pairs. The
// strings it hands out point into its scratch buffer or the static table and are valid
// until the next decode.
type fieldDecoder struct {
	scratch []byte // Huffman-decoded strings of the section
	huff    huffWriter
}

// decode calls emit for each field line of the encoded section p.
func (d *fieldDecoder) decode(p []byte, emit func(name, value []byte)) error {
	ric, p, err := readPrefixInt(p, 8)
	if err != nil || ric != 0 {
		return errQPACK // a Required Insert Count other than 0 names the dynamic table
	}
	if _, p, err = readPrefixInt(p, 7); err != nil { // Base: meaningless without a dynamic table
		return err
	}
	d.scratch = d.scratch[:0] // Huffman-coded strings are decoded into it, one after another
	for len(p) > 0 {
		b := p[0]
		var name, value []byte
		switch {
		case b&0x80 != 0: // indexed field line
			if b&0x40 == 0 {
				return errQPACK // dynamic
			}
			var idx uint64
			if idx, p, err = readPrefixInt(p, 6); err != nil || idx >= uint64(len(staticEntries)) {
				return errQPACK
			}
			e := &staticEntries[idx]
			emit(s2b(e.name), s2b(e.value))
			continue
		case b&0xc0 == 0x40: // literal field line with name reference
			if b&0x10 == 0 {
				return errQPACK // dynamic
			}
			var idx uint64
			if idx, p, err = readPrefixInt(p, 4); err != nil || idx >= uint64(len(staticEntries)) {
				return errQPACK
			}
			name = s2b(staticEntries[idx].name)
		case b&0xe0 == 0x20: // literal field line with literal name
			if name, p, err = d.readString(p, 3, b&0x08 != 0); err != nil {
				return err
			}
		default:
			return errQPACK // post-base forms: dynamic
		}
		if len(p) == 0 {
			return errQPACK
		}
		if value, p, err = d.readString(p, 7, p[0]&0x80 != 0); err != nil {
			return err
		}
		emit(name, value)
	}
	return nil
}

// readString reads a string literal with an n-bit length prefix; huffman says whether
// it is Huffman-coded.
func (d *fieldDecoder) readString(p []byte, n uint, huffman bool) ([]byte, []byte, error) {
	l, p, err := readPrefixInt(p, n)
	if err != nil || l > uint64(len(p)) {
		return nil, nil, errQPACK
	}
	s, rest := p[:l], p[l:]
	if !huffman {
		return s, rest, nil
	}
	start := len(d.scratch)
	d.huff.b = d.scratch
	if _, err := hpack.HuffmanDecode(&d.huff, s); err != nil {
		return nil, nil, errQPACK
	}
	d.scratch = d.huff.b
	return d.scratch[start:len(d.scratch):len(d.scratch)], rest, nil
}

// huffWriter appends what hpack.HuffmanDecode writes to b.
type huffWriter struct{ b []byte }

func (w *huffWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

// appendStatus appends the QPACK field line of :status code.
func appendStatus(b []byte, code int) []byte {
	if code >= 0 && code < len(statusIndex) && statusIndex[code] != 0 {
		return h2.AppendPrefixInt(b, 0xc0, 6, uint64(statusIndex[code])) // indexed, static
	}
	b = h2.AppendPrefixInt(b, 0x50, 4, 24) // literal with static name reference ":status"
	b = h2.AppendPrefixInt(b, 0, 7, 3)
	return append(b, byte('0'+code/100%10), byte('0'+code/10%10), byte('0'+code%10))
}

// appendField appends a field line with a literal name (lowercase) and value, neither
// Huffman-coded.
func appendField(b []byte, name, value []byte) []byte {
	b = h2.AppendPrefixInt(b, 0x20, 3, uint64(len(name)))
	b = append(b, name...)
	b = h2.AppendPrefixInt(b, 0, 7, uint64(len(value)))
	return append(b, value...)
}
