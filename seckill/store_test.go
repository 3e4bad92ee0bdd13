package seckill

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edge-gw/edge/internal/redistest"
)

var testSecret = []byte("0123456789abcdef0123456789abcdef-test")

func TestMemoryStore(t *testing.T) {
	testStore(t, NewMemory(MemoryOptions{}))
}

func TestRedisStore(t *testing.T) {
	srv := redistest.Start(t)
	testStore(t, newRedis(t, srv.Addr))
}

func TestRedisClusterStore(t *testing.T) {
	c := redistest.StartCluster(t)
	testStore(t, newRedis(t, c.Addrs...))
}

// newRedis connects to addrs with a timeout long enough for 5000 unbatched concurrent
// scripts on a loaded 2-core machine: the suite checks exactness, not latency.
func newRedis(t testing.TB, addrs ...string) *Redis {
	t.Helper()
	r, err := NewRedis(RedisOptions{Addrs: addrs, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

// testStore is the conformance suite every Store must pass. Subtests use distinct items, so
// one store serves them all.
func testStore(t *testing.T, s Store) {
	ctx := context.Background()
	t0 := time.Now()
	exp := t0.Add(time.Minute)

	issue := func(item, user, token string, expires, now time.Time) (Ticket, error) {
		b := []Ticket{{User: user, Token: token, Expires: expires}}
		err := s.Issue(ctx, item, now, b)
		return b[0], err
	}
	stock := func(t *testing.T, item string, wantStock, wantIssued int64) {
		t.Helper()
		got, err := s.Item(ctx, item)
		if err != nil {
			t.Fatalf("Item(%s): %v", item, err)
		}
		if got != (Stock{Stock: wantStock, Issued: wantIssued}) {
			t.Fatalf("Item(%s) = %+v, want stock %d issued %d", item, got, wantStock, wantIssued)
		}
	}
	setStock := func(t *testing.T, item string, n int64) {
		t.Helper()
		if err := s.SetStock(ctx, item, n); err != nil {
			t.Fatalf("SetStock(%s, %d): %v", item, n, err)
		}
	}

	t.Run("5000 buyers for 100 units", func(t *testing.T) {
		setStock(t, "crowd", 100)
		var issued, soldOut atomic.Int64
		tokens := sync.Map{}
		var wg sync.WaitGroup
		for i := range 5000 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				user := "u" + strconv.Itoa(i)
				tk, err := issue("crowd", user, "tok-"+user, exp, t0)
				switch {
				case err != nil:
					t.Errorf("Issue(%s): %v", user, err)
				case tk.Result == Issued:
					issued.Add(1)
					tokens.Store(user, tk.Token)
				case tk.Result == SoldOut:
					soldOut.Add(1)
				default:
					t.Errorf("Issue(%s) = %v for a new user", user, tk.Result)
				}
			}()
		}
		wg.Wait()
		if issued.Load() != 100 || soldOut.Load() != 4900 {
			t.Fatalf("issued %d sold out %d, want 100 and 4900", issued.Load(), soldOut.Load())
		}
		stock(t, "crowd", 0, 100)
		tokens.Range(func(user, token any) bool {
			if token != "tok-"+user.(string) {
				t.Errorf("user %s holds %v", user, token)
			}
			return true
		})
	})

	t.Run("one user asking 20 times at once", func(t *testing.T) {
		setStock(t, "twenty", 5)
		var wg sync.WaitGroup
		results := make([]Ticket, 20)
		for i := range results {
			wg.Add(1)
			go func() {
				defer wg.Done()
				tk, err := issue("twenty", "alice", "tok-"+strconv.Itoa(i), exp, t0)
				if err != nil {
					t.Errorf("Issue: %v", err)
				}
				results[i] = tk
			}()
		}
		wg.Wait()
		n := 0
		for _, r := range results {
			if r.Result == Issued {
				n++
			}
			if r.Token != results[0].Token {
				t.Fatalf("tokens differ: %q and %q", r.Token, results[0].Token)
			}
			if r.Expires.UnixMilli() != exp.UnixMilli() {
				t.Fatalf("expiry %v, want %v", r.Expires, exp)
			}
		}
		if n != 1 {
			t.Fatalf("%d of 20 calls issued, want 1", n)
		}
		stock(t, "twenty", 4, 1)
	})

	t.Run("duplicate user in one batch", func(t *testing.T) {
		setStock(t, "dup", 5)
		b := []Ticket{{User: "a", Token: "t1", Expires: exp}, {User: "b", Token: "t2", Expires: exp}, {User: "a", Token: "t3", Expires: exp}}
		if err := s.Issue(ctx, "dup", t0, b); err != nil {
			t.Fatal(err)
		}
		if b[0].Result != Issued || b[1].Result != Issued || b[2].Result != Repeat || b[2].Token != "t1" {
			t.Fatalf("batch answered %+v", b)
		}
		stock(t, "dup", 3, 2)
	})

	t.Run("release twice", func(t *testing.T) {
		setStock(t, "rel", 2)
		if _, err := issue("rel", "bob", "tb", exp, t0); err != nil {
			t.Fatal(err)
		}
		stock(t, "rel", 1, 1)
		for i, want := range []bool{true, false} {
			got, err := s.Release(ctx, "rel", "bob")
			if err != nil || got != want {
				t.Fatalf("Release #%d = %v, %v; want %v", i+1, got, err, want)
			}
		}
		stock(t, "rel", 2, 0)
		if got, err := s.Release(ctx, "rel", "nobody"); err != nil || got {
			t.Fatalf("Release of a non-holder = %v, %v", got, err)
		}
		if err := s.Consume(ctx, "rel", "bob", "tb"); !errors.Is(err, ErrNotHolder) {
			t.Fatalf("Consume of a released token: %v, want ErrNotHolder", err)
		}
		tk, err := issue("rel", "bob", "tb2", exp, t0)
		if err != nil || tk.Result != Issued || tk.Token != "tb2" {
			t.Fatalf("Issue after release = %+v, %v; want a new token", tk, err)
		}
	})

	t.Run("consume", func(t *testing.T) {
		setStock(t, "ord", 3)
		if _, err := issue("ord", "carol", "tc", exp, t0); err != nil {
			t.Fatal(err)
		}
		f := func(user, token string, want error) {
			t.Helper()
			if err := s.Consume(ctx, "ord", user, token); !errors.Is(err, want) {
				t.Fatalf("Consume(%s, %s) = %v, want %v", user, token, err, want)
			}
		}
		f("carol", "forged", ErrNotHolder)
		f("dave", "tc", ErrNotHolder)
		f("carol", "tc", nil)
		f("carol", "tc", ErrUsed)
		f("carol", "tc", ErrUsed)
		if got, err := s.Release(ctx, "ord", "carol"); err != nil || got {
			t.Fatalf("Release after ordering = %v, %v; want false", got, err)
		}
		tk, err := issue("ord", "carol", "tc2", exp, t0)
		if err != nil || tk.Result != Repeat || tk.Token != "tc" {
			t.Fatalf("Issue after ordering = %+v, %v; want the used token back", tk, err)
		}
		stock(t, "ord", 2, 1)
	})

	t.Run("no sale", func(t *testing.T) {
		if _, err := issue("never", "eve", "te", exp, t0); !errors.Is(err, ErrNoSale) {
			t.Fatalf("Issue: %v, want ErrNoSale", err)
		}
		if _, err := s.Item(ctx, "never"); !errors.Is(err, ErrNoSale) {
			t.Fatalf("Item: %v, want ErrNoSale", err)
		}
		if err := s.Consume(ctx, "never", "eve", "te"); !errors.Is(err, ErrNotHolder) {
			t.Fatalf("Consume: %v, want ErrNotHolder", err)
		}
		if got, err := s.Release(ctx, "never", "eve"); err != nil || got {
			t.Fatalf("Release = %v, %v", got, err)
		}
		if n, err := s.Reclaim(ctx, "never", t0, 10); err != nil || n != 0 {
			t.Fatalf("Reclaim = %d, %v", n, err)
		}
	})

	t.Run("invalid names", func(t *testing.T) {
		for _, item := range []string{"", "a{b", "a}b", string(make([]byte, MaxItemLen+1))} {
			if err := s.SetStock(ctx, item, 1); !errors.Is(err, ErrInvalid) {
				t.Fatalf("SetStock(%q): %v, want ErrInvalid", item, err)
			}
			if _, err := issue(item, "u", "t", exp, t0); !errors.Is(err, ErrInvalid) {
				t.Fatalf("Issue(%q): %v, want ErrInvalid", item, err)
			}
		}
		if err := s.SetStock(ctx, "neg", -1); !errors.Is(err, ErrInvalid) {
			t.Fatalf("SetStock(-1): %v, want ErrInvalid", err)
		}
		setStock(t, "inv", 1)
		if _, err := issue("inv", "", "t", exp, t0); !errors.Is(err, ErrInvalid) {
			t.Fatalf("Issue for an empty user: %v, want ErrInvalid", err)
		}
	})

	t.Run("expired tokens reclaimed once by racing reclaimers", func(t *testing.T) {
		const units = 40
		setStock(t, "lapse", units)
		short := t0.Add(time.Second)
		for i := range units {
			if tk, err := issue("lapse", "u"+strconv.Itoa(i), "t", short, t0); err != nil || tk.Result != Issued {
				t.Fatalf("Issue: %+v, %v", tk, err)
			}
		}
		if err := s.Consume(ctx, "lapse", "u0", "t"); err != nil {
			t.Fatal(err)
		}
		if n, err := s.Reclaim(ctx, "lapse", t0, 100); err != nil || n != 0 {
			t.Fatalf("Reclaim before expiry = %d, %v", n, err)
		}
		later := t0.Add(2 * time.Second)
		var total atomic.Int64
		var wg sync.WaitGroup
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					n, err := s.Reclaim(ctx, "lapse", later, 3)
					if err != nil {
						t.Errorf("Reclaim: %v", err)
						return
					}
					total.Add(int64(n))
					if n == 0 {
						return
					}
				}
			}()
		}
		wg.Wait()
		if total.Load() != units-1 {
			t.Fatalf("reclaimed %d units, want %d (all but the used one)", total.Load(), units-1)
		}
		stock(t, "lapse", units-1, 1)
		if n, err := s.Reclaim(ctx, "lapse", later, 100); err != nil || n != 0 {
			t.Fatalf("Reclaim again = %d, %v", n, err)
		}
		if err := s.Consume(ctx, "lapse", "u1", "t"); !errors.Is(err, ErrNotHolder) {
			t.Fatalf("Consume of a reclaimed token: %v, want ErrNotHolder", err)
		}
		if got, err := s.Release(ctx, "lapse", "u1"); err != nil || got {
			t.Fatalf("Release of a reclaimed token = %v, %v", got, err)
		}
	})

	t.Run("expired holder buys again", func(t *testing.T) {
		setStock(t, "again", 1)
		if _, err := issue("again", "fay", "old", t0.Add(time.Second), t0); err != nil {
			t.Fatal(err)
		}
		tk, err := issue("again", "fay", "new", exp, t0.Add(2*time.Second))
		if err != nil || tk.Result != Issued || tk.Token != "new" {
			t.Fatalf("Issue after expiry = %+v, %v; want the new token", tk, err)
		}
		stock(t, "again", 0, 1)
		if n, err := s.Reclaim(ctx, "again", t0.Add(2*time.Second), 10); err != nil || n != 0 {
			t.Fatalf("Reclaim of a renewed holder = %d, %v", n, err)
		}
	})

	t.Run("SetStock clears holders", func(t *testing.T) {
		setStock(t, "restock", 1)
		if _, err := issue("restock", "gus", "tg", exp, t0); err != nil {
			t.Fatal(err)
		}
		if tk, _ := issue("restock", "hal", "th", exp, t0); tk.Result != SoldOut {
			t.Fatalf("second buyer got %v, want sold out", tk.Result)
		}
		setStock(t, "restock", 3)
		stock(t, "restock", 3, 0)
		if err := s.Consume(ctx, "restock", "gus", "tg"); !errors.Is(err, ErrNotHolder) {
			t.Fatalf("Consume of a token of the earlier sale: %v, want ErrNotHolder", err)
		}
		if n, err := s.Reclaim(ctx, "restock", t0.Add(2*time.Minute), 10); err != nil || n != 0 {
			t.Fatalf("Reclaim after restock = %d, %v; want 0", n, err)
		}
		tk, err := issue("restock", "gus", "tg2", exp, t0)
		if err != nil || tk.Result != Issued || tk.Token != "tg2" {
			t.Fatalf("Issue in the new sale = %+v, %v", tk, err)
		}
		stock(t, "restock", 2, 1)
	})

	t.Run("gate: 5000 buyers for 100 units, batched", func(t *testing.T) {
		// A generous wait: this checks exactness; 5000 callers on a loaded 2-core machine
		// can queue past the default 200ms, which the edge would answer with a 503.
		g := newGate(t, s, GateOptions{Timeout: 10 * time.Second})
		if err := g.SetStock(ctx, "gcrowd", 100); err != nil {
			t.Fatal(err)
		}
		var issued, soldOut atomic.Int64
		var wg sync.WaitGroup
		for i := range 5000 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := g.Issue(ctx, "gcrowd", "u"+strconv.Itoa(i), time.Now())
				switch {
				case err == nil:
					issued.Add(1)
				case errors.Is(err, ErrSoldOut):
					soldOut.Add(1)
				default:
					t.Errorf("Issue: %v", err)
				}
			}()
		}
		wg.Wait()
		if issued.Load() != 100 || soldOut.Load() != 4900 {
			t.Fatalf("issued %d sold out %d, want 100 and 4900", issued.Load(), soldOut.Load())
		}
		stock(t, "gcrowd", 0, 100)
		t.Logf("%d requests: %d store calls, %d answered sold out locally", g.IssueRequests(), g.ScriptCalls(), g.ShedSoldOut())
		if g.ScriptCalls()+g.ShedSoldOut() > g.IssueRequests() {
			t.Fatalf("%d store calls + %d shed for %d requests", g.ScriptCalls(), g.ShedSoldOut(), g.IssueRequests())
		}
	})
}

func newGate(t testing.TB, s Store, opts GateOptions) *Gate {
	t.Helper()
	signer, err := NewSigner(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	g, err := NewGate(s, signer, opts)
	if err != nil {
		t.Fatal(err)
	}
	return g
}
