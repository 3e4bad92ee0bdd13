package waitroom

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"hash"
	"sync"
)

// CookieNames returns the names of a room's two cookies: admit carries the signed,
// expiring admission ("edge_wr_<room>"), place the signed place in line
// ("edge_wr_<room>_place"). Room names come from the config, which keeps them to
// characters valid in a cookie name. It allocates the two strings.
func CookieNames(room string) (admit, place string) {
	return "edge_wr_" + room, "edge_wr_" + room + "_place"
}

// Cookie layouts, before base64url encoding (no padding). Every MAC is the first 16 bytes
// of HMAC-SHA256(secret, domain byte ‖ len(room) as 2 bytes ‖ room ‖ len(key) as 2 bytes ‖
// key ‖ the cookie's bytes before the MAC), so a cookie binds the room and the user's key
// (empty for users known by their cookie alone) and never passes for the other kind.
//
//	admission: [0] 1 · [1:9] place · [9:17] expiry, unix ms · [17:33] MAC
//	place:     [0] 2 · [1] 'p' place or 't' pre-queue ticket · [2:10] number · [10:26] MAC
const (
	admitVersion = 1
	placeVersion = 2
	macLen       = 16
	admitRaw     = 17 + macLen
	placeRaw     = 10 + macLen
	admitLen     = (admitRaw*8 + 5) / 6
	placeLen     = (placeRaw*8 + 5) / 6
	// MinSecretLen is the shortest Options.Secret a room signs with.
	MinSecretLen = 32
)

// cookieEncoding is strict: a place cookie's 26 bytes leave 2 spare bits in its last
// character, which a lenient decoder ignores, so one cookie would have several spellings.
var cookieEncoding = base64.RawURLEncoding.Strict()

// signer signs and verifies a room's cookies. It is immutable apart from its pool and safe
// for concurrent use; verifying does not allocate.
type signer struct {
	room string
	pool sync.Pool // of *scratch
}

// scratch is the working memory of one signing or verification.
type scratch struct {
	mac hash.Hash
	buf []byte
	sum [sha256.Size]byte
	raw [admitRaw]byte
}

func newSigner(room string, secret []byte) *signer {
	key := append([]byte(nil), secret...)
	s := &signer{room: room}
	s.pool.New = func() any {
		return &scratch{mac: hmac.New(sha256.New, key), buf: make([]byte, 0, 256)}
	}
	return s
}

// mac writes into sc.sum the MAC of body for key under domain d.
func (s *signer) mac(sc *scratch, d byte, key, body []byte) {
	sc.buf = append(sc.buf[:0], d, byte(len(s.room)>>8), byte(len(s.room)))
	sc.buf = append(sc.buf, s.room...)
	sc.buf = append(sc.buf, byte(len(key)>>8), byte(len(key)))
	sc.buf = append(sc.buf, key...)
	sc.buf = append(sc.buf, body...)
	sc.mac.Reset()
	sc.mac.Write(sc.buf)
	sc.mac.Sum(sc.sum[:0])
}

// admit returns a new admission cookie for place and key, valid until expMs (unix ms).
// It allocates the returned slice only.
func (s *signer) admit(place int64, key []byte, expMs int64) []byte {
	sc := s.pool.Get().(*scratch)
	defer s.pool.Put(sc)
	sc.raw[0] = admitVersion
	binary.BigEndian.PutUint64(sc.raw[1:9], uint64(place))
	binary.BigEndian.PutUint64(sc.raw[9:17], uint64(expMs))
	s.mac(sc, 'A', key, sc.raw[:17])
	copy(sc.raw[17:], sc.sum[:macLen])
	out := make([]byte, admitLen)
	cookieEncoding.Encode(out, sc.raw[:admitRaw])
	return out
}

// verifyAdmit checks an admission cookie for key at nowMs and returns its place and
// expiry; ok is false for anything malformed, forged, of another room or key, or expired.
// It does not allocate.
func (s *signer) verifyAdmit(c, key []byte, nowMs int64) (place, expMs int64, ok bool) {
	if len(c) != admitLen || len(key) > 0xffff {
		return 0, 0, false
	}
	sc := s.pool.Get().(*scratch)
	defer s.pool.Put(sc)
	n, err := cookieEncoding.Decode(sc.raw[:], c)
	if err != nil || n != admitRaw || sc.raw[0] != admitVersion {
		return 0, 0, false
	}
	s.mac(sc, 'A', key, sc.raw[:17])
	if !hmac.Equal(sc.sum[:macLen], sc.raw[17:admitRaw]) {
		return 0, 0, false
	}
	place = int64(binary.BigEndian.Uint64(sc.raw[1:9]))
	expMs = int64(binary.BigEndian.Uint64(sc.raw[9:17]))
	if place <= 0 || nowMs >= expMs {
		return 0, 0, false
	}
	return place, expMs, true
}

// place returns a new place cookie: num > 0 is a place in line, num < 0 the pre-queue
// ticket -num. It allocates the returned slice only.
func (s *signer) place(num int64, key []byte) []byte {
	sc := s.pool.Get().(*scratch)
	defer s.pool.Put(sc)
	sc.raw[0] = placeVersion
	sc.raw[1] = 'p'
	if num < 0 {
		sc.raw[1] = 't'
		num = -num
	}
	binary.BigEndian.PutUint64(sc.raw[2:10], uint64(num))
	s.mac(sc, 'P', key, sc.raw[:10])
	copy(sc.raw[10:], sc.sum[:macLen])
	out := make([]byte, placeLen)
	cookieEncoding.Encode(out, sc.raw[:placeRaw])
	return out
}

// verifyPlace checks a place cookie for key and returns its number (negative: a pre-queue
// ticket), or 0 for anything malformed, forged or of another room or key. It does not
// allocate.
func (s *signer) verifyPlace(c, key []byte) int64 {
	if len(c) != placeLen || len(key) > 0xffff {
		return 0
	}
	sc := s.pool.Get().(*scratch)
	defer s.pool.Put(sc)
	n, err := cookieEncoding.Decode(sc.raw[:], c)
	if err != nil || n != placeRaw || sc.raw[0] != placeVersion {
		return 0
	}
	s.mac(sc, 'P', key, sc.raw[:10])
	if !hmac.Equal(sc.sum[:macLen], sc.raw[10:placeRaw]) {
		return 0
	}
	num := int64(binary.BigEndian.Uint64(sc.raw[2:10]))
	if num <= 0 {
		return 0
	}
	switch sc.raw[1] {
	case 'p':
		return num
	case 't':
		return -num
	}
	return 0
}
