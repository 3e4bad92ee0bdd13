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

func FuzzVerify(f *testing.F) {
	s := newSigner(f)
	now := time.Unix(1_800_000_000, 0)
	f.Add(s.Sign("42", "alice", now.Add(time.Minute)), "42", "alice")
	f.Add(strings.Repeat("A", TokenLen), "", "")
	f.Fuzz(func(t *testing.T, token, item, user string) {
		// Only Sign makes tokens that verify; anything else is rejected without a panic.
		if err := s.VerifyString(token, item, user, now); err == nil {
			if token != "" && s.VerifyString(token, item+"x", user, now) == nil {
				t.Fatalf("token %q verifies for two items", token)
			}
		}
	})
}
