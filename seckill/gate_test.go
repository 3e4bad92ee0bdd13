package seckill

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestStatus(t *testing.T) {
	f := func(err error, wantStatus int, wantCode string) {
		t.Helper()
		if status, code := Status(err); status != wantStatus || code != wantCode {
			t.Fatalf("Status(%v) = %d %q, want %d %q", err, status, code, wantStatus, wantCode)
		}
	}
	f(nil, 200, "")
	f(ErrSoldOut, 410, "sold_out")
	f(ErrNoSale, 404, "no_sale")
	f(ErrUsed, 409, "token_used")
	f(ErrForged, 403, "invalid_token")
	f(ErrExpired, 403, "invalid_token")
	f(ErrOtherUser, 403, "invalid_token")
	f(ErrOtherItem, 403, "invalid_token")
	f(ErrNotHolder, 403, "invalid_token")
	f(ErrInvalid, 400, "invalid_request")
	f(unavailable("issue", "42", context.DeadlineExceeded), 503, "store_unavailable")
	f(errors.New("anything else"), 503, "store_unavailable")
}

func TestNewGateOptions(t *testing.T) {
	signer := newSigner(t)
	if _, err := NewGate(NewMemory(MemoryOptions{}), signer, GateOptions{TTL: 500 * time.Millisecond}); err == nil {
		t.Fatal("NewGate accepted a TTL under 1s")
	}
	if _, err := NewGate(nil, signer, GateOptions{}); err == nil {
		t.Fatal("NewGate accepted a nil store")
	}
}

func TestGateIssueAndCheck(t *testing.T) {
	ctx := context.Background()
	g := newGate(t, NewMemory(MemoryOptions{}), GateOptions{TTL: time.Minute})
	now := time.Unix(1_800_000_000, 300_000_000)
	if err := g.SetStock(ctx, "42", 2); err != nil {
		t.Fatal(err)
	}
	gr, err := g.Issue(ctx, "42", "alice", now)
	if err != nil || gr.Repeat {
		t.Fatalf("Issue = %+v, %v", gr, err)
	}
	if want := time.Unix(1_800_000_061, 0); !gr.Expires.Equal(want) {
		t.Fatalf("expires %v, want %v (now + ttl rounded up to the second)", gr.Expires, want)
	}
	again, err := g.Issue(ctx, "42", "alice", now.Add(time.Second))
	if err != nil || !again.Repeat || again.Token != gr.Token || !again.Expires.Equal(gr.Expires) {
		t.Fatalf("second Issue = %+v, %v; want the same token as a repeat", again, err)
	}
	bob, err := g.Issue(ctx, "42", "bob", now)
	if err != nil {
		t.Fatal(err)
	}

	f := func(name, token, item, user string, at time.Time, want error) {
		t.Helper()
		if err := g.Check(ctx, token, item, user, at); !errors.Is(err, want) && !(err == nil && want == nil) {
			t.Fatalf("%s: Check = %v, want %v", name, err, want)
		}
	}
	f("missing", "", "42", "alice", now, ErrForged)
	f("forged", gr.Token[:10]+"AAAA"+gr.Token[14:], "42", "alice", now, ErrForged)
	f("foreign user", bob.Token, "42", "alice", now, ErrOtherUser)
	f("other item", gr.Token, "43", "alice", now, ErrOtherItem)
	f("expired", gr.Token, "42", "alice", gr.Expires, ErrExpired)
	f("valid", gr.Token, "42", "alice", now, nil)
	f("reused", gr.Token, "42", "alice", now, ErrUsed)
	if ok, err := g.Release(ctx, "42", "bob"); !ok || err != nil {
		t.Fatalf("Release(bob) = %v, %v", ok, err)
	}
	f("released", bob.Token, "42", "bob", now, ErrNotHolder)
	if st, err := g.Item(ctx, "42"); err != nil || st != (Stock{Stock: 1, Issued: 1}) {
		t.Fatalf("Item = %+v, %v", st, err)
	}
	if _, err := g.Issue(ctx, "42", "", now); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Issue without a user: %v, want ErrInvalid", err)
	}
}

func TestGateShedsSoldOut(t *testing.T) {
	ctx := context.Background()
	g := newGate(t, NewMemory(MemoryOptions{}), GateOptions{TTL: time.Minute, SoldOutRecheck: -1})
	now := time.Now()
	issue := func(user string, want error, wantCalls, wantShed uint64) {
		t.Helper()
		if _, err := g.Issue(ctx, "hot", user, now); !errors.Is(err, want) && !(err == nil && want == nil) {
			t.Fatalf("Issue(%s) = %v, want %v", user, err, want)
		}
		if g.ScriptCalls() != wantCalls || g.ShedSoldOut() != wantShed {
			t.Fatalf("after Issue(%s): %d store calls, %d shed; want %d and %d", user, g.ScriptCalls(), g.ShedSoldOut(), wantCalls, wantShed)
		}
	}
	if err := g.SetStock(ctx, "hot", 1); err != nil {
		t.Fatal(err)
	}
	issue("a", nil, 1, 0)
	issue("b", ErrSoldOut, 2, 0) // the store says sold out and the flag goes up
	issue("c", ErrSoldOut, 2, 1) // answered locally
	issue("a", ErrSoldOut, 2, 2) // even a holder asking again: the flag answers first

	if ok, _ := g.Release(ctx, "hot", "a"); !ok {
		t.Fatal("Release(a) = false")
	}
	issue("c", nil, 3, 2) // the release cleared the flag
	issue("d", ErrSoldOut, 4, 2)
	issue("e", ErrSoldOut, 4, 3)

	if err := g.SetStock(ctx, "hot", 1); err != nil {
		t.Fatal(err)
	}
	issue("e", nil, 5, 3) // the restock cleared the flag
	issue("f", ErrSoldOut, 6, 3)

	n, err := g.Reclaim(ctx, now.Add(2*time.Minute))
	if err != nil || n != 1 {
		t.Fatalf("Reclaim = %d, %v; want e's unit back", n, err)
	}
	issue("f", nil, 7, 3) // the reclaim cleared the flag
	if g.IssueRequests() != 10 {
		t.Fatalf("IssueRequests = %d, want 10", g.IssueRequests())
	}
}

// lossyStore runs Issue on a real Memory store and then, while lose is set, reports the
// store unavailable: the unit was taken but the answer lost, as when Redis answers after
// the timeout.
type lossyStore struct {
	Store
	lose atomic.Bool
}

func (s *lossyStore) Issue(ctx context.Context, item string, now time.Time, batch []Ticket) error {
	if err := s.Store.Issue(ctx, item, now, batch); err != nil || !s.lose.Load() {
		return err
	}
	return fmt.Errorf("issue: %w: answer lost", ErrUnavailable)
}

// A buyer whose Issue ended without the store's answer may hold a unit: asking again after
// the item sold out reaches the store and returns that token, instead of 410 from the flag.
func TestGateUnsureBuyerPassesSoldOutFlag(t *testing.T) {
	ctx := context.Background()
	store := &lossyStore{Store: NewMemory(MemoryOptions{})}
	g := newGate(t, store, GateOptions{TTL: time.Minute, SoldOutRecheck: -1})
	now := time.Now()
	if err := g.SetStock(ctx, "hot", 1); err != nil {
		t.Fatal(err)
	}
	store.lose.Store(true)
	if _, err := g.Issue(ctx, "hot", "a", now); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Issue(a) with the answer lost = %v, want ErrUnavailable", err)
	}
	store.lose.Store(false)
	if _, err := g.Issue(ctx, "hot", "b", now); !errors.Is(err, ErrSoldOut) {
		t.Fatalf("Issue(b) = %v, want ErrSoldOut from the store", err)
	}
	if _, err := g.Issue(ctx, "hot", "c", now); !errors.Is(err, ErrSoldOut) || g.ShedSoldOut() != 1 {
		t.Fatalf("Issue(c) = %v, %d shed; want ErrSoldOut from the flag", err, g.ShedSoldOut())
	}
	grant, err := g.Issue(ctx, "hot", "a", now)
	if err != nil || !grant.Repeat || grant.Token == "" || g.ShedSoldOut() != 1 {
		t.Fatalf("Issue(a) again = %+v, %v, %d shed; want a's token as a repeat, from the store", grant, err, g.ShedSoldOut())
	}
	if item, _ := g.Item(ctx, "hot"); item.Stock != 0 || item.Issued != 1 {
		t.Fatalf("item %+v, want 0 left and 1 issued", item)
	}
	// Now a knows its token: like any holder, it is answered by the flag again.
	if _, err := g.Issue(ctx, "hot", "a", now); !errors.Is(err, ErrSoldOut) || g.ShedSoldOut() != 2 {
		t.Fatalf("Issue(a) a third time = %v, %d shed; want ErrSoldOut from the flag", err, g.ShedSoldOut())
	}
	// Unsure users are forgotten once their token would have expired (reclaim returns the unit).
	store.lose.Store(true)
	if err := g.SetStock(ctx, "cold", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Issue(ctx, "cold", "d", now); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Issue(d) = %v", err)
	}
	store.lose.Store(false)
	if _, err := g.Issue(ctx, "cold", "e", now); !errors.Is(err, ErrSoldOut) {
		t.Fatalf("Issue(e) = %v", err)
	}
	shed := g.ShedSoldOut()
	if _, err := g.Issue(ctx, "cold", "d", now.Add(2*time.Minute)); !errors.Is(err, ErrSoldOut) || g.ShedSoldOut() != shed+1 {
		t.Fatalf("Issue(d) after its token's TTL = %v, want ErrSoldOut from the flag", err)
	}
}

func TestGateRechecksSoldOut(t *testing.T) {
	ctx := context.Background()
	store := NewMemory(MemoryOptions{})
	g := newGate(t, store, GateOptions{SoldOutRecheck: time.Second})
	t0 := time.Now()
	if err := g.SetStock(ctx, "re", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Issue(ctx, "re", "a", t0); !errors.Is(err, ErrSoldOut) || g.ScriptCalls() != 1 {
		t.Fatalf("Issue = %v after %d calls", err, g.ScriptCalls())
	}
	if _, err := g.Issue(ctx, "re", "a", t0.Add(900*time.Millisecond)); !errors.Is(err, ErrSoldOut) || g.ScriptCalls() != 1 {
		t.Fatalf("Issue before the recheck = %v after %d calls, want a local answer", err, g.ScriptCalls())
	}
	// Another node restocks: this Gate hears nothing, and finds out at the recheck.
	if err := store.SetStock(ctx, "re", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Issue(ctx, "re", "a", t0.Add(1100*time.Millisecond)); err != nil || g.ScriptCalls() != 2 {
		t.Fatalf("Issue at the recheck = %v after %d calls, want a token from the store", err, g.ScriptCalls())
	}
	if _, err := g.Issue(ctx, "re", "b", t0.Add(1200*time.Millisecond)); !errors.Is(err, ErrSoldOut) || g.ScriptCalls() != 3 {
		t.Fatalf("Issue = %v after %d calls", err, g.ScriptCalls())
	}
	// When the recheck is due, one caller asks the store and the others stay local.
	st := g.lookup("re")
	due := t0.Add(3 * time.Second).UnixNano()
	if shed, won := st.shedding(due, time.Second); shed || !won {
		t.Fatal("a due recheck must let one caller through")
	}
	if shed, won := st.shedding(due, time.Second); !shed || won {
		t.Fatal("a due recheck must let only one caller through")
	}
	g.ClearSoldOut("re")
	if shed, _ := st.shedding(t0.UnixNano(), time.Second); shed {
		t.Fatal("ClearSoldOut left the flag up")
	}
}

func TestGateNoSaleKeepsNoState(t *testing.T) {
	ctx := context.Background()
	g := newGate(t, NewMemory(MemoryOptions{}), GateOptions{})
	for i := range 100 {
		if _, err := g.Issue(ctx, "ghost"+strconv.Itoa(i), "u", time.Now()); !errors.Is(err, ErrNoSale) {
			t.Fatalf("Issue: %v, want ErrNoSale", err)
		}
	}
	if len(g.items) != 0 {
		t.Fatalf("%d items kept for sales that do not exist", len(g.items))
	}
}

// stallStore holds the first Issue call until release is closed, so that requests queue
// behind it deterministically. It wraps a real Memory store.
type stallStore struct {
	Store
	calls   atomic.Int32
	release chan struct{}
	sizes   []int
	mu      sync.Mutex
}

func (s *stallStore) Issue(ctx context.Context, item string, now time.Time, batch []Ticket) error {
	if s.calls.Add(1) == 1 {
		<-s.release
	}
	s.mu.Lock()
	s.sizes = append(s.sizes, len(batch))
	s.mu.Unlock()
	return s.Store.Issue(ctx, item, now, batch)
}

func TestGateCoalescesQueuedRequests(t *testing.T) {
	f := func(batchMax, queued int, wantSizes []int) {
		t.Helper()
		ctx := context.Background()
		store := &stallStore{Store: NewMemory(MemoryOptions{}), release: make(chan struct{})}
		g := newGate(t, store, GateOptions{BatchMax: batchMax, Timeout: 10 * time.Second})
		if err := g.SetStock(ctx, "b", 1000); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make(chan error, queued+1)
		issue := func(user string) {
			defer wg.Done()
			if _, err := g.Issue(ctx, "b", user, time.Now()); err != nil {
				errs <- err
			}
		}
		wg.Add(1)
		go issue("leader")
		for store.calls.Load() == 0 {
			time.Sleep(time.Millisecond)
		}
		for i := range queued {
			wg.Add(1)
			go issue("u" + strconv.Itoa(i))
		}
		st := g.lookup("b")
		for {
			// Every queued request is either pending or already in a store call.
			st.mu.Lock()
			waiting := len(st.pending)
			st.mu.Unlock()
			store.mu.Lock()
			for _, n := range store.sizes {
				waiting += n
			}
			store.mu.Unlock()
			if waiting == queued {
				break
			}
			time.Sleep(time.Millisecond)
		}
		close(store.release)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("Issue: %v", err)
		}
		store.mu.Lock()
		defer store.mu.Unlock()
		total := 0
		for _, n := range store.sizes {
			total += n
		}
		if total != queued+1 || len(store.sizes) != len(wantSizes) {
			t.Fatalf("batch sizes %v, want %v", store.sizes, wantSizes)
		}
		if g.ScriptCalls() != uint64(len(wantSizes)) || g.IssueRequests() != uint64(queued+1) {
			t.Fatalf("%d store calls for %d requests, want %d for %d", g.ScriptCalls(), g.IssueRequests(), len(wantSizes), queued+1)
		}
		if s, _ := g.Item(ctx, "b"); s.Issued != int64(queued+1) {
			t.Fatalf("issued %d, want %d", s.Issued, queued+1)
		}
	}
	f(DefaultBatchMax, 50, []int{1, 50}) // everything queued behind the first call leaves in one
	f(10, 30, []int{10, 10, 10, 1})      // full batches leave at once, without waiting
	f(DefaultBatchMax, 0, []int{1})      // alone: no wait at all
}

// Items lists the items this node keeps state for, sorted and capped; an item the
// store says has no sale is dropped.
func TestGateItems(t *testing.T) {
	ctx := context.Background()
	g := newGate(t, NewMemory(MemoryOptions{}), GateOptions{TTL: time.Minute})
	if got := g.Items(10); len(got) != 0 {
		t.Fatalf("Items of a new gate = %v", got)
	}
	for _, item := range []string{"b", "c", "a"} {
		if err := g.SetStock(ctx, item, 1); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := g.Issue(ctx, "none", "alice", time.Now()); !errors.Is(err, ErrNoSale) {
		t.Fatalf("Issue of an item without a sale: %v", err)
	}
	if got := g.Items(10); len(got) != 3 || got[0] != "a" || got[1] != "b" || got[2] != "c" {
		t.Errorf("Items(10) = %v, want [a b c]", got)
	}
	if got := g.Items(2); len(got) != 2 || got[0] != "a" || got[1] != "b" {
		t.Errorf("Items(2) = %v, want [a b]", got)
	}
}
