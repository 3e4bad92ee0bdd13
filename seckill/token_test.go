package seckill

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func newSigner(t testing.TB) *Signer {
	t.Helper()
	s, err := NewSigner(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestNewSignerRejectsShortSecret(t *testing.T) {
	if _, err := NewSigner(make([]byte, MinSecretLen-1)); err == nil || !strings.Contains(err.Error(), "31 bytes") {
		t.Fatalf("NewSigner(31 bytes): %v, want an error naming the length", err)
	}
	if _, err := NewSigner(make([]byte, MinSecretLen)); err != nil {
		t.Fatalf("NewSigner(32 bytes): %v", err)
	}
}

func TestTokenVerify(t *testing.T) {
	s := newSigner(t)
	now := time.Unix(1_800_000_000, 0)
	exp := now.Add(5 * time.Minute)
	tok := s.Sign("42", "alice", exp)
	if len(tok) != TokenLen {
		t.Fatalf("token %q is %d chars, want %d", tok, len(tok), TokenLen)
	}
	for _, c := range tok {
		if !strings.ContainsRune("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", c) {
			t.Fatalf("token %q has a character that is not URL-safe: %q", tok, c)
		}
	}
	if again := s.Sign("42", "alice", exp); again == tok {
		t.Fatal("two tokens for one user, item and expiry coincide: the nonce is missing")
	}
	other, _ := NewSigner([]byte("another secret of at least 32 bytes!!"))

	f := func(name, token, item, user string, at time.Time, want error) {
		t.Helper()
		if err := s.VerifyString(token, item, user, at); !errors.Is(err, want) && !(want == nil && err == nil) {
			t.Fatalf("%s: VerifyString = %v, want %v", name, err, want)
		}
		if err := s.Verify([]byte(token), []byte(item), []byte(user), at); !errors.Is(err, want) && !(want == nil && err == nil) {
			t.Fatalf("%s: Verify = %v, want %v", name, err, want)
		}
	}
	f("valid", tok, "42", "alice", now, nil)
	f("valid until the last second", tok, "42", "alice", exp.Add(-time.Second), nil)
	f("expired at expiry", tok, "42", "alice", exp, ErrExpired)
	f("expired later", tok, "42", "alice", exp.Add(time.Hour), ErrExpired)
	f("other user", tok, "42", "bob", now, ErrOtherUser)
	f("other item", tok, "43", "alice", now, ErrOtherItem)
	f("empty", "", "42", "alice", now, ErrForged)
	f("short", tok[:TokenLen-1], "42", "alice", now, ErrForged)
	f("not base64", strings.Repeat("*", TokenLen), "42", "alice", now, ErrForged)
	f("other secret", other.Sign("42", "alice", exp), "42", "alice", now, ErrForged)
	// item "4" + user "2alice" must not verify as item "42" + user "alice"
	f("shifted boundary", s.Sign("4", "2alice", exp), "42", "alice", now, ErrOtherItem)

	// Every single-character change is rejected.
	alphabet := "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	for i := range tok {
		for _, c := range []byte{alphabet[0], alphabet[63]} {
			if tok[i] == c {
				continue
			}
			bad := tok[:i] + string(c) + tok[i+1:]
			if err := s.VerifyString(bad, "42", "alice", now); err == nil {
				t.Fatalf("tampered token %q (char %d) verified", bad, i)
			}
		}
	}
}

func TestAppendToken(t *testing.T) {
	s := newSigner(t)
	exp := time.Now().Add(time.Minute)
	dst := s.AppendToken([]byte("X-Seckill-Token: "), "7", "u", exp)
	tok, ok := strings.CutPrefix(string(dst), "X-Seckill-Token: ")
	if !ok || len(tok) != TokenLen {
		t.Fatalf("AppendToken = %q", dst)
	}
	if err := s.VerifyString(tok, "7", "u", time.Now()); err != nil {
		t.Fatalf("appended token does not verify: %v", err)
	}
}

// FuzzVerify signs a token for any item and user, then checks that it verifies for
// them (through both Verify and VerifyString) until its expiry and never after, and
// that nothing else passes: the token with any one byte changed, cut or lengthened,
// the token for another item or user, a token of another secret, and arbitrary text.
func FuzzVerify(f *testing.F) {
	s := newSigner(f)
	foreign, err := NewSigner([]byte(strings.Repeat("y", MinSecretLen)))
	if err != nil {
		f.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	f.Add("42", "alice", uint8(0), uint8(1), foreign.Sign("42", "alice", now.Add(time.Minute))) // well formed, of another secret
	f.Add("", "", uint8(51), uint8(0x20), strings.Repeat("A", TokenLen))
	f.Add("item/with/slashes", "\x00user", uint8(200), uint8(0xff), "")
	f.Fuzz(func(t *testing.T, item, user string, pos, flip uint8, junk string) {
		if len(item) > 0xffff {
			return
		}
		exp := now.Add(time.Minute)
		tok := s.Sign(item, user, exp)
		verify := func(tok, item, user string, at time.Time) error {
			err := s.VerifyString(tok, item, user, at)
			if berr := s.Verify([]byte(tok), []byte(item), []byte(user), at); berr != err {
				t.Fatalf("Verify %v, VerifyString %v", berr, err)
			}
			return err
		}
		if len(tok) != TokenLen || verify(tok, item, user, now) != nil {
			t.Fatalf("token %q for %q, %q does not verify", tok, item, user)
		}
		if err := verify(tok, item, user, exp); err != ErrExpired {
			t.Fatalf("token at its expiry: %v, want ErrExpired", err)
		}
		if flip == 0 {
			flip = 1
		}
		i := int(pos) % len(tok)
		mutated := []byte(tok)
		mutated[i] ^= flip
		for name, bad := range map[string][3]string{
			"changed":      {string(mutated), item, user},
			"cut":          {tok[:i], item, user},
			"lengthened":   {tok + tok[i:i+1], item, user},
			"other item":   {tok, item + "x", user},
			"other user":   {tok, item, user + "x"},
			"moved byte":   {tok, item + user[:min(1, len(user))], user[min(1, len(user)):]},
			"other secret": {foreign.Sign(item, user, exp), item, user},
			"arbitrary":    {junk, item, user},
		} {
			if name == "arbitrary" && junk == tok || name == "moved byte" && user == "" {
				continue
			}
			if err := verify(bad[0], bad[1], bad[2], now); err == nil {
				t.Fatalf("%s: token %q verifies for item %q, user %q", name, bad[0], bad[1], bad[2])
			}
		}
	})
}
