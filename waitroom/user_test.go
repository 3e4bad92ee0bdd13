package waitroom

import (
	"errors"
	"log/slog"
	"net/netip"
	"testing"
	"time"
)

// TestKeepPlace: a refresh, another node or a lost cookie keeps the place; a user who stops
// polling is skipped and the queue keeps moving; coming back later joins at the end.
func TestKeepPlace(t *testing.T) {
	stores(t, func(t *testing.T, st Store) {
		o := options(1000)
		o.Session = 1500 * time.Millisecond
		rs := nodes(t, 3, "keep", st, o, nil)
		if err := rs[0].SetPaused(true); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 2*time.Second, "the pause on every node", func() bool { return rs[2].Stats().Paused })
		gone := newUser("", 1)       // stops polling after joining
		anon := newUser("", 2)       // known by cookie only
		keyed := newUser("alice", 3) // known by key
		for _, u := range []*user{gone, anon, keyed} {
			if v := u.poll(rs[0]); v.Err != nil || v.Admitted || v.SetPlace == nil {
				t.Fatalf("join: %+v", *v)
			}
		}
		anonPlace, keyedPlace := anon.placeOf(rs[0]), keyed.placeOf(rs[0])
		if anonPlace != 2 || keyedPlace != 3 {
			t.Fatalf("places %d and %d, want 2 and 3", anonPlace, keyedPlace)
		}
		// A refresh on the same node, then other nodes: same place, same position.
		for _, r := range rs {
			if v := anon.poll(r); v.Position != 2 || v.SetPlace != nil {
				t.Fatalf("cookie user on another node: %+v, want position 2 and no new cookie", *v)
			}
			if v := keyed.poll(r); v.Position != 3 {
				t.Fatalf("keyed user on another node: %+v, want position 3", *v)
			}
		}
		// The keyed user loses every cookie (another device): the key keeps the place.
		keyed.place = nil
		if v := keyed.poll(rs[1]); v.Position != 3 || keyed.placeOf(rs[1]) != 3 {
			t.Fatalf("keyed user without cookie: %+v place %d, want position 3", *v, keyed.placeOf(rs[1]))
		}
		// Keep anon and keyed polling past the session; gone does not poll.
		until := time.Now().Add(o.Session + time.Second)
		for i := 0; time.Now().Before(until); i++ {
			anon.poll(rs[i%3])
			keyed.poll(rs[(i+1)%3])
			time.Sleep(100 * time.Millisecond)
		}
		if err := rs[1].SetPaused(false); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, "the two polling users admitted", func() bool {
			anon.poll(rs[2])
			keyed.poll(rs[0])
			return anon.admitted && keyed.admitted
		})
		// gone's place was skipped: the serving counter passed it without admitting it.
		c := counts(t, st, "keep")
		if c.serving < 3 || c.admitted != 2 {
			t.Fatalf("serving %d, admitted %d; want place 1 skipped and 2, 3 admitted", c.serving, c.admitted)
		}
		if err := rs[1].SetPaused(true); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 2*time.Second, "the pause on every node", func() bool { return rs[1].Stats().Paused })
		later := newUser("", 4)
		later.poll(rs[1])
		v := gone.poll(rs[1])
		if v.Admitted || v.SetPlace == nil || gone.placeOf(rs[1]) <= later.placeOf(rs[1]) {
			t.Fatalf("user back after the session: %+v place %d, want a new place behind %d", *v, gone.placeOf(rs[1]), later.placeOf(rs[1]))
		}
	})
}

// TestCookies: forged, expired and foreign admission cookies are refused (the user
// waits); a forged place cookie makes a newcomer; a valid one admits locally even with
// the store gone.
func TestCookies(t *testing.T) {
	stores(t, func(t *testing.T, st Store) {
		rs := nodes(t, 1, "cookies", st, options(1000), nil)
		r := rs[0]
		u := newUser("", 1)
		waitFor(t, 5*time.Second, "admission", func() bool { return u.poll(r).Admitted })
		if u.admit == nil {
			t.Fatal("admitted without an admission cookie")
		}
		sign := r.cfg.Load().sign
		place, _, ok := sign.verifyAdmit(u.admit, nil, time.Now().UnixMilli())
		if !ok {
			t.Fatal("own admission cookie does not verify")
		}
		other := New("other", st, options(1000), nil).cfg.Load().sign
		forged := append([]byte(nil), u.admit...)
		forged[10] ^= 1
		keyed := newSigner("cookies", testSecret)
		f := func(name string, cookie []byte) {
			t.Helper()
			v := Visit{AdmitCookie: cookie, Now: time.Now(), Client: netip.MustParseAddr("10.9.9.9")}
			var out Verdict
			r.Check(&v, &out)
			if out.Admitted || out.Err != nil || out.SetPlace == nil || out.Position < 1 {
				t.Fatalf("%s admission cookie: %+v, want a new place in line", name, out)
			}
		}
		f("forged", forged)
		f("expired", sign.admit(place, nil, time.Now().Add(-time.Second).UnixMilli()))
		f("other room's", other.admit(place, nil, time.Now().Add(time.Minute).UnixMilli()))
		f("another key's", keyed.admit(place, []byte("bob"), time.Now().Add(time.Minute).UnixMilli()))
		f("truncated", u.admit[:20])

		// A forged place cookie is a newcomer: a new place, not the forged one.
		if err := r.SetPaused(true); err != nil {
			t.Fatal(err)
		}
		w := newUser("", 2)
		w.poll(r)
		p := w.placeOf(r)
		bad := sign.place(p-1, nil)
		bad[5] ^= 2
		w.place = bad
		if v := w.poll(r); v.SetPlace == nil || w.placeOf(r) <= p {
			t.Fatalf("forged place cookie: %+v place %d, want a new place after %d", *v, w.placeOf(r), p)
		}

		// Re-signing: an admission cookie past half its session is renewed.
		old := sign.admit(place, nil, time.Now().Add(10*time.Second).UnixMilli()) // session 30s
		v := Visit{AdmitCookie: old, Now: time.Now()}
		var out Verdict
		r.Check(&v, &out)
		if !out.Admitted || out.SetAdmit == nil {
			t.Fatalf("old admission cookie: %+v, want admitted with a renewed cookie", out)
		}
	})
}

// TestStoreDown: with Redis paused or killed, waiting users and newcomers get
// ErrUnavailable (or are let in when the room fails open); admitted users keep going.
func TestStoreDown(t *testing.T) {
	t.Parallel()
	srv, st := newRedis(t)
	o := options(1000)
	rs := nodes(t, 1, "down", st, o, nil)
	r := rs[0]
	in := newUser("in", 1)
	waitFor(t, 5*time.Second, "admission", func() bool { return in.poll(r).Admitted })
	if err := r.SetPaused(true); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "the pause", func() bool { return r.Stats().Paused })
	waiting := newUser("w", 2)
	if v := waiting.poll(r); v.Err != nil || v.Admitted {
		t.Fatalf("join: %+v", *v)
	}
	check := func(how string) {
		t.Helper()
		start := time.Now()
		waitFor(t, 5*time.Second, "ErrUnavailable for a waiting user with redis "+how, func() bool {
			return errors.Is(waiting.poll(r).Err, ErrUnavailable)
		})
		took := time.Since(start)
		t0 := time.Now()
		if v := newUser("new", 3).poll(r); !errors.Is(v.Err, ErrUnavailable) || v.Admitted {
			t.Fatalf("newcomer with redis %s: %+v", how, *v)
		}
		if d := time.Since(t0); d > time.Second {
			t.Fatalf("newcomer with redis %s answered after %v, want within a second", how, d)
		}
		for i := 0; i < 3; i++ {
			if v := in.poll(r); !v.Admitted {
				t.Fatalf("admitted user with redis %s: %+v", how, *v)
			}
		}
		o.FailOpen = true
		r.Update(o)
		if v := newUser("open", 4).poll(r); !v.Admitted || v.Err != nil {
			t.Fatalf("fail-open room with redis %s: %+v", how, *v)
		}
		o.FailOpen = false
		r.Update(o)
		t.Logf("redis %s: unavailable seen within %v", how, took.Round(time.Millisecond))
	}
	srv.Pause()
	check("paused")
	srv.Resume()
	waitFor(t, 5*time.Second, "recovery after resume", func() bool {
		v := waiting.poll(r)
		return v.Err == nil && v.Position >= 1
	})
	srv.Kill()
	check("killed")
	srv.Restart()
	waitFor(t, 10*time.Second, "recovery after restart", func() bool { return waiting.poll(r).Err == nil })
	if v := in.poll(r); !v.Admitted {
		t.Fatalf("admitted user after the restart: %+v", *v)
	}
}

// TestMaxPerIP: one client address holds at most MaxPerIP places; admission frees them.
func TestMaxPerIP(t *testing.T) {
	stores(t, func(t *testing.T, st Store) {
		o := options(1000)
		o.MaxPerIP = 2
		r := nodes(t, 1, "ip", st, o, nil)[0]
		if err := r.SetPaused(true); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 2*time.Second, "the pause", func() bool { return r.Stats().Paused })
		a, b, c := newUser("a", 7), newUser("", 7), newUser("c", 7)
		for _, u := range []*user{a, b} {
			if v := u.poll(r); v.Err != nil {
				t.Fatal(v.Err)
			}
		}
		if v := c.poll(r); !errors.Is(v.Err, ErrTooManyPlaces) {
			t.Fatalf("third place for one address: %+v, want ErrTooManyPlaces", *v)
		}
		if v := a.poll(r); v.Err != nil || v.Position != 1 {
			t.Fatalf("a holder polling again: %+v", *v)
		}
		if v := newUser("d", 8).poll(r); v.Err != nil {
			t.Fatalf("another address: %+v", *v)
		}
		if err := r.SetPaused(false); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, "admission of a", func() bool { return a.poll(r).Admitted })
		if v := c.poll(r); v.Err != nil {
			t.Fatalf("after a was admitted the address has room again: %+v", *v)
		}
	})
}

// TestSharedSwitches: SetPaused and SetAdmitRate on one node reach every node.
func TestSharedSwitches(t *testing.T) {
	_, st := newRedis(t)
	rs := nodes(t, 3, "switch", st, options(100), nil)
	if err := rs[0].SetAdmitRate(40); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the override in force", func() bool {
		for _, r := range rs {
			if s := r.Stats(); s.Configured != 40 || s.AdmitRate != 40 {
				return false
			}
		}
		return true
	})
	if err := rs[1].SetAdmitRate(-1); err == nil {
		t.Fatal("a negative rate was accepted")
	}
	if err := rs[2].SetAdmitRate(0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the configured rate back", func() bool { return rs[0].Stats().AdmitRate == 100 })
	if err := rs[2].SetPaused(true); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "the pause on every node", func() bool {
		return rs[0].Stats().Paused && rs[1].Stats().Paused && rs[2].Stats().Paused
	})
	u := newUser("x", 1)
	u.poll(rs[0])
	time.Sleep(500 * time.Millisecond)
	if u.poll(rs[1]).Admitted || counts(t, st, "switch").serving != 0 {
		t.Fatal("admitted while paused")
	}
}

// TestInvalidOptions: a room that cannot sign cookies refuses everyone.
func TestInvalidOptions(t *testing.T) {
	o := options(10)
	o.Secret = []byte("short")
	if err := o.Validate(); err == nil {
		t.Fatal("a short secret passed Validate")
	}
	r := New("bad", NewMemoryStore(), o, slog.New(slog.DiscardHandler))
	r.Start()
	defer r.Close()
	if v := newUser("a", 1).poll(r); !errors.Is(v.Err, ErrUnavailable) {
		t.Fatalf("room with invalid options: %+v", *v)
	}
}
