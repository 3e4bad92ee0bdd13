package waitroom

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// FuzzCookie signs admission and place cookies for any place and user key, then checks
// that each verifies to what was signed, and that no other bytes pass: the cookie with
// any one byte changed, cut or lengthened, the same cookie for another key or room, and
// arbitrary bytes are all refused. verifyAdmit is the only way a cookie admits
// (Room.Check), so a refusal here is a user who waits.
func FuzzCookie(f *testing.F) {
	sign := newSigner("fuzz", testSecret)
	other := newSigner("fuzz2", testSecret)
	otherSecret := newSigner("fuzz", bytes.Repeat([]byte("x"), MinSecretLen))
	now := time.Unix(1_800_000_000, 0).UnixMilli()
	f.Add(int64(1), []byte(nil), uint8(0), uint8(1), []byte(nil))
	// Well-formed cookies of another room as junk: a genuine one would be found by the
	// fuzzer and rightly verify.
	f.Add(int64(42), []byte("alice"), uint8(43), uint8(0x20), other.admit(42, []byte("alice"), now+60_000))
	f.Add(int64(-7), []byte("u"), uint8(34), uint8(1), other.place(-7, []byte("u")))
	f.Add(int64(1<<62), bytes.Repeat([]byte("k"), 300), uint8(10), uint8(0xff), []byte("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"))
	f.Fuzz(func(t *testing.T, num int64, key []byte, pos, flip uint8, junk []byte) {
		if num == 0 || len(key) > 0xffff {
			return
		}
		place := num
		if place < 0 {
			place = -place
		}
		if place < 0 { // math.MinInt64
			return
		}
		exp := now + 60_000
		admit := sign.admit(place, key, exp)
		if p, e, ok := sign.verifyAdmit(admit, key, now); !ok || p != place || e != exp {
			t.Fatalf("admission for place %d until %d verifies as %d, %d, %v", place, exp, p, e, ok)
		}
		if _, _, ok := sign.verifyAdmit(admit, key, exp); ok {
			t.Fatal("admission verifies at its expiry")
		}
		pc := sign.place(num, key)
		if got := sign.verifyPlace(pc, key); got != num {
			t.Fatalf("place cookie for %d verifies as %d", num, got)
		}
		otherKey := append(append([]byte(nil), key...), 'x')
		for _, s := range []*signer{other, otherSecret} {
			if _, _, ok := s.verifyAdmit(admit, key, now); ok || s.verifyPlace(pc, key) != 0 {
				t.Fatal("a cookie verifies for another room or secret")
			}
		}
		if _, _, ok := sign.verifyAdmit(admit, otherKey, now); ok || sign.verifyPlace(pc, otherKey) != 0 {
			t.Fatalf("a cookie for key %q verifies for %q", key, otherKey)
		}
		if flip == 0 {
			flip = 1
		}
		for _, c := range [][]byte{admit, pc} {
			for _, bad := range [][]byte{
				mutate(c, int(pos)%len(c), flip),
				c[:int(pos)%len(c)],
				append(append([]byte(nil), c...), "A="[pos%2]),
				junk,
			} {
				if _, _, ok := sign.verifyAdmit(bad, key, now); ok {
					t.Fatalf("admission %q (from %q) verifies", bad, c)
				}
				if got := sign.verifyPlace(bad, key); got != 0 {
					t.Fatalf("place cookie %q (from %q) verifies as %d", bad, c, got)
				}
			}
		}
	})
}

// mutate returns a copy of c with byte i xored with flip.
func mutate(c []byte, i int, flip uint8) []byte {
	c = append([]byte(nil), c...)
	c[i] ^= flip
	return c
}

// TestCookieSpelling: a cookie has one spelling. The place cookie's last character
// carries 2 spare bits; changing only them once left a cookie that still verified
// (found by FuzzCookie).
func TestCookieSpelling(t *testing.T) {
	sign := newSigner("fuzz", testSecret)
	pc := sign.place(13, nil)
	if sign.verifyPlace(pc, nil) != 13 {
		t.Fatal("place cookie does not verify")
	}
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alphabet, pc[len(pc)-1])
	for spare := 1; spare < 4; spare++ {
		bad := append([]byte(nil), pc...)
		bad[len(bad)-1] = alphabet[last^spare]
		if got := sign.verifyPlace(bad, nil); got != 0 {
			t.Errorf("%q, the cookie %q with spare bits %b set, verifies as %d", bad, pc, spare, got)
		}
	}
}
