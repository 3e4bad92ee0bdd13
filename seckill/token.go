package seckill

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"hash"
	"math"
	"sync"
	"time"
)

// Token layout, before base64url encoding (no padding):
//
//	[0]      version (1)
//	[1:5]    expiry, unix seconds, big endian
//	[5:15]   nonce from crypto/rand: two tokens of one user and item never coincide
//	[15:19]  FNV-1a of the item   } in the clear, only to tell "other item" and "other
//	[19:23]  FNV-1a of the user   } user" apart from "forged" when the MAC fails
//	[23:39]  HMAC-SHA256(secret, bytes 0..22 ‖ len(item) as 2 bytes ‖ item ‖ user), first 16 bytes
//
// The MAC binds the full item and user, not just their tags.
const (
	tokenVersion = 1
	headerLen    = 23
	macLen       = 16
	rawLen       = headerLen + macLen
	// TokenLen is the length of every token Sign returns: 52 URL-safe characters.
	TokenLen = (rawLen*8 + 5) / 6
	// MinSecretLen is the shortest secret NewSigner accepts.
	MinSecretLen = 32
)

var tokenEncoding = base64.RawURLEncoding

// Signer creates and verifies seckill tokens with one secret. It is safe for concurrent use
// and holds no per-token state: any edge node with the same secret verifies any node's
// tokens without asking the store. Build it once per secret; it may outlive reloads that
// keep the secret.
type Signer struct {
	pool sync.Pool // of *scratch, each with its own keyed HMAC
}

// scratch is the per-call working memory of Sign and Verify, pooled so that Verify does not
// allocate.
type scratch struct {
	mac hash.Hash
	buf []byte
	sum [sha256.Size]byte
	raw [rawLen]byte
}

// NewSigner returns a Signer for secret, which must be at least MinSecretLen bytes (take it
// from the environment, never from the config file). The secret is copied.
func NewSigner(secret []byte) (*Signer, error) {
	if len(secret) < MinSecretLen {
		return nil, fmt.Errorf("seckill secret is %d bytes, need at least %d", len(secret), MinSecretLen)
	}
	key := append([]byte(nil), secret...)
	s := &Signer{}
	s.pool.New = func() any {
		return &scratch{mac: hmac.New(sha256.New, key), buf: make([]byte, 0, 512)}
	}
	return s, nil
}

// Sign returns a new token for user on item, valid until expires (second precision, rounded
// down). Each call draws a fresh nonce from crypto/rand. It allocates only the returned
// string.
func (s *Signer) Sign(item, user string, expires time.Time) string {
	sc := s.pool.Get().(*scratch)
	defer s.pool.Put(sc)
	var enc [TokenLen]byte
	s.seal(sc, item, user, expires)
	tokenEncoding.Encode(enc[:], sc.raw[:])
	return string(enc[:])
}

// AppendToken appends a new token for user on item to dst and returns the extended slice,
// as Sign does but without allocating when dst has room for TokenLen more bytes.
func (s *Signer) AppendToken(dst []byte, item, user string, expires time.Time) []byte {
	sc := s.pool.Get().(*scratch)
	defer s.pool.Put(sc)
	s.seal(sc, item, user, expires)
	n := len(dst)
	dst = append(dst, make([]byte, TokenLen)...)
	tokenEncoding.Encode(dst[n:], sc.raw[:])
	return dst
}

// seal fills sc.raw with a complete token for item and user.
func (s *Signer) seal(sc *scratch, item, user string, expires time.Time) {
	exp := expires.Unix()
	if exp < 0 {
		exp = 0
	} else if exp > math.MaxUint32 {
		exp = math.MaxUint32
	}
	sc.raw[0] = tokenVersion
	binary.BigEndian.PutUint32(sc.raw[1:5], uint32(exp))
	_, _ = rand.Read(sc.raw[5:15]) // never fails since Go 1.24
	binary.BigEndian.PutUint32(sc.raw[15:19], fnv32(item))
	binary.BigEndian.PutUint32(sc.raw[19:23], fnv32(user))
	sum(sc, item, user)
	copy(sc.raw[headerLen:], sc.sum[:macLen])
}

// Verify checks token for item and user at now, locally, without the store. It returns nil
// for an authentic, unexpired token of this user and item; ErrExpired for an authentic one
// past its expiry; otherwise ErrOtherItem or ErrOtherUser when the token's clear tags name
// another item or user, and ErrForged for anything else (malformed, wrong secret, tampered).
// Every non-nil answer means "reject" (403 at the edge); which one is diagnostic only, since
// the tags of a rejected token are not authenticated. It does not allocate.
func (s *Signer) Verify(token, item, user []byte, now time.Time) error {
	return verify(s, token, item, user, now)
}

// VerifyString is Verify for strings. It does not allocate.
func (s *Signer) VerifyString(token, item, user string, now time.Time) error {
	return verify(s, token, item, user, now)
}

func verify[T string | []byte](s *Signer, token, item, user T, now time.Time) error {
	if len(token) != TokenLen || len(item) > math.MaxUint16 {
		return ErrForged
	}
	sc := s.pool.Get().(*scratch)
	defer s.pool.Put(sc)
	sc.buf = append(sc.buf[:0], token...)
	n, err := tokenEncoding.Decode(sc.raw[:], sc.buf)
	if err != nil || n != rawLen || sc.raw[0] != tokenVersion {
		return ErrForged
	}
	sum(sc, item, user)
	if !hmac.Equal(sc.sum[:macLen], sc.raw[headerLen:]) {
		switch {
		case binary.BigEndian.Uint32(sc.raw[15:19]) != fnv32(item):
			return ErrOtherItem
		case binary.BigEndian.Uint32(sc.raw[19:23]) != fnv32(user):
			return ErrOtherUser
		default:
			return ErrForged
		}
	}
	if now.Unix() >= int64(binary.BigEndian.Uint32(sc.raw[1:5])) {
		return ErrExpired
	}
	return nil
}

// sum writes the HMAC of sc.raw's header, item and user into sc.sum.
func sum[T string | []byte](sc *scratch, item, user T) {
	sc.buf = append(sc.buf[:0], sc.raw[:headerLen]...)
	sc.buf = append(sc.buf, byte(len(item)>>8), byte(len(item)))
	sc.buf = append(sc.buf, item...)
	sc.buf = append(sc.buf, user...)
	sc.mac.Reset()
	sc.mac.Write(sc.buf)
	sc.mac.Sum(sc.sum[:0])
}

// fnv32 is 32-bit FNV-1a, inlined to stay allocation-free for strings and byte slices.
func fnv32[T string | []byte](s T) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return h
}
