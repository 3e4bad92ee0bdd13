package cache

import (
	"encoding/binary"
	"math/bits"

	"github.com/cespare/xxhash/v2"
)

// AppendKey appends the default cache key of a request to dst and returns the extended
// slice: method (HEAD is keyed as GET, so HEAD is answered from the GET entry), host
// (lower-cased) and the raw request URI (path and query as received). Each part is
// length-prefixed, so parts appended later with AppendKeyPart can never be confused with
// bytes of an earlier part. dst is the caller's reusable buffer; AppendKey does not
// allocate when dst has room.
func AppendKey(dst, method, host, uri []byte) []byte {
	if string(method) == "HEAD" {
		dst = binary.AppendUvarint(dst, 3)
		dst = append(dst, "GET"...)
	} else {
		dst = binary.AppendUvarint(dst, uint64(len(method)))
		dst = append(dst, method...)
	}
	dst = binary.AppendUvarint(dst, uint64(len(host)))
	for _, c := range host {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	dst = binary.AppendUvarint(dst, uint64(len(uri)))
	return append(dst, uri...)
}

// AppendKeyPart appends one more length-prefixed part (a key-expression value such as a
// header or cookie) to a key built by AppendKey. It does not allocate when dst has room.
func AppendKeyPart(dst, part []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(part)))
	return append(dst, part...)
}

// KeyHash is the 64-bit hash of a key, used by Acquire and TryStartRefresh. It is stable
// across processes (xxhash) and does not allocate.
func KeyHash(key []byte) uint64 { return xxhash.Sum64(key) }

// mix folds x into h; used for secondary (Vary) keys and purge slots.
func mix(h, x uint64) uint64 {
	h = bits.RotateLeft64(h^x, 27) * 0x9E3779B97F4A7C15
	return h ^ (h >> 31)
}
