package acme

import (
	"context"
	"errors"
	"io/fs"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edge-gw/edge/internal/redistest"
	"github.com/redis/rueidis"
)

func newRueidis(t *testing.T, addrs ...string) rueidis.Client {
	t.Helper()
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: addrs, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// TestRedisStorage runs the Storage contract on a standalone Redis and on a 3-master Cluster
// (all keys share one hash tag, so scripts stay in one slot).
func TestRedisStorage(t *testing.T) {
	t.Run("standalone", func(t *testing.T) {
		c := newRueidis(t, redistest.Start(t).Addr)
		storageContract(t, NewRedisStorage(func() rueidis.Client { return c }, "t1"))
	})
	t.Run("cluster", func(t *testing.T) {
		c := newRueidis(t, redistest.StartCluster(t).Addrs...)
		storageContract(t, NewRedisStorage(func() rueidis.Client { return c }, "t2"))
	})
}

func storageContract(t *testing.T, s *RedisStorage) {
	ctx := context.Background()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	before := time.Now()
	must(s.Store(ctx, "certificates/ca/a.test/a.test.crt", []byte("CRT")))
	must(s.Store(ctx, "certificates/ca/a.test/a.test.key", []byte("KEY")))
	must(s.Store(ctx, "certificates/ca/b.test/b.test.crt", []byte("B")))
	must(s.Store(ctx, "acme/ca/users/x/x.json", []byte("{}")))
	must(s.Store(ctx, "empty", nil))
	must(s.Store(ctx, "certificates/ca/a.test/a.test.crt", []byte("CRT2"))) // overwrite

	load := func(key, want string) {
		t.Helper()
		got, err := s.Load(ctx, key)
		if err != nil || string(got) != want {
			t.Fatalf("Load(%s) = %q, %v; want %q", key, got, err, want)
		}
	}
	load("certificates/ca/a.test/a.test.crt", "CRT2")
	load("/certificates/ca/a.test/a.test.key", "KEY") // leading slash is the same key
	load("empty", "")
	if _, err := s.Load(ctx, "nope"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load(missing) error %v, want fs.ErrNotExist", err)
	}

	exists := func(key string, want bool) {
		t.Helper()
		if got := s.Exists(ctx, key); got != want {
			t.Fatalf("Exists(%s) = %v, want %v", key, got, want)
		}
	}
	exists("certificates/ca/a.test/a.test.key", true)
	exists("certificates/ca", true) // a directory
	exists("certificates/c", false) // a prefix of a name is not a directory
	exists("nope", false)

	list := func(dir string, rec bool, want ...string) {
		t.Helper()
		got, err := s.List(ctx, dir, rec)
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("List(%s, %v) = %q, %v; want %q", dir, rec, got, err, want)
		}
	}
	list("certificates/ca", false, "certificates/ca/a.test", "certificates/ca/b.test")
	list("certificates/ca/a.test", false, "certificates/ca/a.test/a.test.crt", "certificates/ca/a.test/a.test.key")
	list("certificates", true,
		"certificates/ca", "certificates/ca/a.test", "certificates/ca/a.test/a.test.crt",
		"certificates/ca/a.test/a.test.key", "certificates/ca/b.test", "certificates/ca/b.test/b.test.crt")
	list("", false, "acme", "certificates", "empty")
	if _, err := s.List(ctx, "nope", true); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("List(missing) error %v, want fs.ErrNotExist", err)
	}

	ki, err := s.Stat(ctx, "certificates/ca/a.test/a.test.crt")
	if err != nil || !ki.IsTerminal || ki.Size != 4 || ki.Key != "certificates/ca/a.test/a.test.crt" ||
		ki.Modified.Before(before.Add(-time.Second)) || ki.Modified.After(time.Now().Add(time.Second)) {
		t.Fatalf("Stat(file) = %+v, %v", ki, err)
	}
	if ki, err := s.Stat(ctx, "certificates/ca"); err != nil || ki.IsTerminal {
		t.Fatalf("Stat(dir) = %+v, %v; want a directory", ki, err)
	}
	if _, err := s.Stat(ctx, "nope"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Stat(missing) error %v, want fs.ErrNotExist", err)
	}

	must(s.Delete(ctx, "certificates/ca/a.test")) // a directory: everything under it
	exists("certificates/ca/a.test", false)
	exists("certificates/ca/a.test/a.test.key", false)
	load("certificates/ca/b.test/b.test.crt", "B")
	list("certificates/ca", false, "certificates/ca/b.test")
	must(s.Delete(ctx, "certificates/ca/a.test")) // missing: not an error
	must(s.Delete(ctx, "empty"))
	exists("empty", false)
}

// TestRedisLock checks mutual exclusion across two storages (two nodes), the lease refresh
// and the expiry of a dead holder's lock.
func TestRedisLock(t *testing.T) {
	rs := redistest.Start(t)
	ca, cb := newRueidis(t, rs.Addr), newRueidis(t, rs.Addr)
	a := NewRedisStorage(func() rueidis.Client { return ca }, "")
	b := NewRedisStorage(func() rueidis.Client { return cb }, "")
	a.lease, b.lease = 900*time.Millisecond, 900*time.Millisecond
	ctx := context.Background()

	if err := a.Lock(ctx, "issue_cert_x"); err != nil {
		t.Fatal(err)
	}
	// Held past several leases: the holder refreshes it, b cannot take it.
	short, cancel := context.WithTimeout(ctx, 2500*time.Millisecond)
	err := b.Lock(short, "issue_cert_x")
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("b.Lock while a holds it: %v, want a deadline error", err)
	}
	// Other names are independent.
	if err := b.Lock(ctx, "other"); err != nil {
		t.Fatal(err)
	}
	if err := b.Unlock(ctx, "other"); err != nil {
		t.Fatal(err)
	}
	// b waits, and gets it when a unlocks.
	got := make(chan error, 1)
	go func() { got <- b.Lock(ctx, "issue_cert_x") }()
	select {
	case err := <-got:
		t.Fatalf("b.Lock returned %v while a holds the lock", err)
	case <-time.After(300 * time.Millisecond):
	}
	if err := a.Unlock(ctx, "issue_cert_x"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("b did not get the lock after a released it")
	}
	if err := a.Unlock(ctx, "issue_cert_x"); err == nil || !strings.Contains(err.Error(), "not locked by this node") {
		t.Fatalf("a.Unlock of a lock it does not hold: %v", err)
	}

	// A holder that dies (stops refreshing without unlocking) loses the lock within the lease.
	b.mu.Lock()
	h := b.held["issue_cert_x"]
	b.mu.Unlock()
	close(h.stop)
	<-h.done
	start := time.Now()
	if err := a.Lock(ctx, "issue_cert_x"); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 3*a.lease {
		t.Fatalf("a waited %v for a dead holder's lock, lease %v", d, a.lease)
	}
	b.mu.Lock()
	delete(b.held, "issue_cert_x")
	b.mu.Unlock()
	if err := a.Unlock(ctx, "issue_cert_x"); err != nil {
		t.Fatal(err)
	}
}

// TestRedisNotConnected: a client function returning nil makes calls fail, not panic, and
// Lock waits until its context ends.
func TestRedisNotConnected(t *testing.T) {
	s := NewRedisStorage(func() rueidis.Client { return nil }, "")
	ctx := context.Background()
	if err := s.Store(ctx, "k", []byte("v")); !errors.Is(err, errNotConnected) {
		t.Fatalf("Store: %v", err)
	}
	if _, err := s.Load(ctx, "k"); err == nil || errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load: %v, want an error that is not fs.ErrNotExist", err)
	}
	if s.Exists(ctx, "k") {
		t.Fatal("Exists: true")
	}
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if err := s.Lock(short, "x"); !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "not connected") {
		t.Fatalf("Lock: %v", err)
	}
}
