package h2

import (
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/net/http2/hpack"
)

// The response header encoder: literal fields without indexing (RFC 7541 §6.2.2), with the
// name taken from the static table when it is there, and no dynamic table, as nginx does.
// The peer's decoder then keeps nothing for us and we keep nothing for it: encoding is a
// pure append with no state and no allocation.

// staticNames maps a lowercase header name to its first index in the RFC 7541 static table.
var staticNames = map[string]uint64{
	":authority":                  1,
	":method":                     2,
	":path":                       4,
	":scheme":                     6,
	":status":                     8,
	"accept-charset":              15,
	"accept-encoding":             16,
	"accept-language":             17,
	"accept-ranges":               18,
	"accept":                      19,
	"access-control-allow-origin": 20,
	"age":                         21,
	"allow":                       22,
	"authorization":               23,
	"cache-control":               24,
	"content-disposition":         25,
	"content-encoding":            26,
	"content-language":            27,
	"content-length":              28,
	"content-location":            29,
	"content-range":               30,
	"content-type":                31,
	"cookie":                      32,
	"date":                        33,
	"etag":                        34,
	"expect":                      35,
	"expires":                     36,
	"from":                        37,
	"host":                        38,
	"if-match":                    39,
	"if-modified-since":           40,
	"if-none-match":               41,
	"if-range":                    42,
	"if-unmodified-since":         43,
	"last-modified":               44,
	"link":                        45,
	"location":                    46,
	"max-forwards":                47,
	"proxy-authenticate":          48,
	"proxy-authorization":         49,
	"range":                       50,
	"referer":                     51,
	"refresh":                     52,
	"retry-after":                 53,
	"server":                      54,
	"set-cookie":                  55,
	"strict-transport-security":   56,
	"transfer-encoding":           57,
	"user-agent":                  58,
	"vary":                        59,
	"via":                         60,
	"www-authenticate":            61,
}

const (
	idxStatus        = 8
	idxContentLength = 28
	idxContentType   = 31
	idxDate          = 33
)

// AppendPrefixInt appends i as an integer with an n-bit prefix; first carries the
// representation's high bits (RFC 7541 §5.1; QPACK's integers are the same, RFC 9204
// §4.1.1).
func AppendPrefixInt(dst []byte, first byte, n uint8, i uint64) []byte {
	k := uint64(1)<<n - 1
	if i < k {
		return append(dst, first|byte(i))
	}
	dst = append(dst, first|byte(k))
	i -= k
	for ; i >= 128; i >>= 7 {
		dst = append(dst, byte(0x80|(i&0x7f)))
	}
	return append(dst, byte(i))
}

// appendString appends s as an HPACK string literal, Huffman-coded when that is shorter.
func appendString(dst []byte, s string) []byte {
	if n := hpack.HuffmanEncodeLength(s); n < uint64(len(s)) {
		dst = AppendPrefixInt(dst, 0x80, 7, n)
		return hpack.AppendHuffmanString(dst, s)
	}
	dst = AppendPrefixInt(dst, 0, 7, uint64(len(s)))
	return append(dst, s...)
}

// appendField appends a literal-without-indexing field; name must be lowercase.
func appendField(dst, name, value []byte) []byte {
	if i, ok := staticNames[string(name)]; ok {
		return appendIndexedNameField(dst, i, value)
	}
	dst = append(dst, 0)
	dst = appendString(dst, b2s(name))
	return appendString(dst, b2s(value))
}

// appendIndexedNameField appends a literal-without-indexing field whose name is static
// table entry i.
func appendIndexedNameField(dst []byte, i uint64, value []byte) []byte {
	dst = AppendPrefixInt(dst, 0, 4, i)
	return appendString(dst, b2s(value))
}

// appendStatus appends :status, as a static table reference for the seven codes it holds.
func appendStatus(dst []byte, code int) []byte {
	switch code {
	case 200:
		return append(dst, 0x80|8)
	case 204:
		return append(dst, 0x80|9)
	case 206:
		return append(dst, 0x80|10)
	case 304:
		return append(dst, 0x80|11)
	case 400:
		return append(dst, 0x80|12)
	case 404:
		return append(dst, 0x80|13)
	case 500:
		return append(dst, 0x80|14)
	}
	if code < 100 || code > 999 {
		code = 500
	}
	dst = AppendPrefixInt(dst, 0, 4, idxStatus)
	return append(dst, 3, byte('0'+code/100), byte('0'+code/10%10), byte('0'+code%10))
}

// appendContentLength appends content-length: n.
func appendContentLength(dst []byte, n int64) []byte {
	var buf [20]byte
	i := len(buf)
	for {
		i--
		buf[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			break
		}
	}
	return appendIndexedNameField(dst, idxContentLength, buf[i:])
}

// dateField is the encoded date field for one second.
type dateField struct {
	sec int64
	enc []byte
}

var dateCache atomic.Pointer[dateField]

// timeFormat is the IMF-fixdate layout of RFC 9110 §5.6.7.
const timeFormat = "Mon, 02 Jan 2006 15:04:05 GMT"

// appendDate appends the date field for now. The encoded field is rebuilt once a second
// (one allocation then, shared by every connection), as fasthttp does for HTTP/1.1.
func appendDate(dst []byte) []byte {
	now := time.Now()
	sec := now.Unix()
	d := dateCache.Load()
	if d == nil || d.sec != sec {
		var tb [32]byte
		v := now.UTC().AppendFormat(tb[:0], timeFormat)
		d = &dateField{sec: sec, enc: appendIndexedNameField(nil, idxDate, v)}
		dateCache.Store(d)
	}
	return append(dst, d.enc...)
}

// b2s converts b to a string without copying; the string must not outlive b's contents.
func b2s(b []byte) string {
	return unsafe.String(unsafe.SliceData(b), len(b))
}
