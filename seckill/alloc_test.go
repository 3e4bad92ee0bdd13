//go:build !race

package seckill

import (
	"testing"
	"time"
)

func TestVerifyDoesNotAllocate(t *testing.T) {
	s := newSigner(t)
	now := time.Now()
	tok := s.Sign("42", "alice", now.Add(time.Minute))
	btok, item, user := []byte(tok), []byte("42"), []byte("alice")
	f := func(name string, fn func()) {
		t.Helper()
		if n := testing.AllocsPerRun(200, fn); n != 0 {
			t.Fatalf("%s allocates %.1f times per call, want 0", name, n)
		}
	}
	f("Verify", func() {
		if s.Verify(btok, item, user, now) != nil {
			panic("token rejected")
		}
	})
	f("VerifyString", func() {
		if s.VerifyString(tok, "42", "alice", now) != nil {
			panic("token rejected")
		}
	})
	f("VerifyString of a forged token", func() { _ = s.VerifyString(tok, "42", "mallory", now) })
	dst := make([]byte, 0, TokenLen)
	f("AppendToken", func() { dst = s.AppendToken(dst[:0], "42", "alice", now) })
	f("Status", func() { _, _ = Status(ErrSoldOut) })
}

func TestSoldOutShedDoesNotAllocate(t *testing.T) {
	g := newGate(t, NewMemory(MemoryOptions{}), GateOptions{SoldOutRecheck: -1})
	ctx := t.Context()
	now := time.Now()
	if err := g.SetStock(ctx, "gone", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Issue(ctx, "gone", "first", now); err != ErrSoldOut {
		t.Fatalf("Issue = %v, want ErrSoldOut", err)
	}
	if n := testing.AllocsPerRun(200, func() { _, _ = g.Issue(ctx, "gone", "u", now) }); n != 0 {
		t.Fatalf("a sold-out answer from the flag allocates %.1f times, want 0", n)
	}
}
