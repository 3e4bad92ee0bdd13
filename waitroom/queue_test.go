package waitroom

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// inversions counts pairs i < j where j was admitted in an earlier round than i.
func inversions(rounds []int) int {
	maxRound := slices.Max(rounds)
	later := make([]int, maxRound+2) // later[r]: users so far admitted in round r
	n := 0
	for _, r := range rounds {
		for x := r + 1; x <= maxRound; x++ {
			n += later[x]
		}
		later[r]++
	}
	return n
}

// TestOrderAcrossNodes: 5,000 users join through three nodes in a known order (keyed and
// cookie-only users mixed) and are admitted in exactly that order; positions never grow.
//
// Each round asks one node about every waiting user, latest joiner first: a user counts
// as admitted out of order if someone who joined after them was admitted earlier (in an
// earlier round, or earlier in the same round), so the test holds the room to "whenever a
// node admits someone, it admits everyone who joined before them".
func TestOrderAcrossNodes(t *testing.T) {
	stores(t, func(t *testing.T, st Store) {
		o := options(2000)
		rs := nodes(t, 3, "order", st, o, nil)
		if err := rs[0].SetPaused(true); err != nil { // everyone joins before anyone is admitted
			t.Fatal(err)
		}
		const n = 5000
		users := make([]*user, n)
		for i := range users {
			k := ""
			if i%2 == 0 {
				k = key(i)
			}
			users[i] = newUser(k, i)
			v := users[i].poll(rs[i%3])
			if v.Err != nil || v.Admitted || v.Position != int64(i+1) {
				t.Fatalf("user %d joined with %+v, want position %d", i, *v, i+1)
			}
		}
		if err := rs[1].SetPaused(false); err != nil {
			t.Fatal(err)
		}
		rounds := make([]int, n)
		lastPos := make([][3]int64, n) // per node: nodes' snapshots differ by up to a refresh
		left := n
		deadline := time.Now().Add(30 * time.Second)
		for round := 1; left > 0; round++ {
			if time.Now().After(deadline) {
				t.Fatalf("%d users still waiting after 30s", left)
			}
			for i := n - 1; i >= 0; i-- {
				u := users[i]
				if rounds[i] != 0 {
					continue
				}
				v := u.poll(rs[round%3])
				switch {
				case v.Err != nil:
					t.Fatalf("user %d: %v", i, v.Err)
				case v.Admitted:
					rounds[i] = round
					left--
				case lastPos[i][round%3] != 0 && v.Position > lastPos[i][round%3]:
					t.Fatalf("user %d: position on node %d grew from %d to %d", i, round%3, lastPos[i][round%3], v.Position)
				default:
					lastPos[i][round%3] = v.Position
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
		inv := inversions(rounds)
		t.Logf("%d users admitted in %d polling rounds, %d inversions", n, slices.Max(rounds), inv)
		if inv != 0 {
			t.Fatalf("%d inversions of the join order", inv)
		}
		if c := counts(t, st, "order"); c.admitted != n || c.serving != n {
			t.Fatalf("store counts %d admitted, serving %d; want %d each", c.admitted, c.serving, n)
		}
	})
}

// TestRate: with a long queue the room admits at the configured rate (±5% over 10s).
func TestRate(t *testing.T) {
	t.Parallel()
	_, st := newRedis(t)
	const rate = 200
	rs := nodes(t, 3, "rate", st, options(rate), nil)
	if err := rs[0].SetPaused(true); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3000; i++ {
		if v := newUser(key(i), i).poll(rs[i%3]); v.Err != nil {
			t.Fatal(v.Err)
		}
	}
	if err := rs[0].SetPaused(false); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	c0, t0 := counts(t, st, "rate"), time.Now()
	time.Sleep(10 * time.Second)
	c1, t1 := counts(t, st, "rate"), time.Now()
	got := float64(c1.admitted-c0.admitted) / t1.Sub(t0).Seconds()
	stats := rs[2].Stats()
	t.Logf("configured %d/s: measured %.1f/s over %v (Stats.Measured on a follower %.1f/s)", rate, got, t1.Sub(t0).Round(time.Millisecond), stats.Measured)
	if got < rate*0.95 || got > rate*1.05 {
		t.Fatalf("admitted %.1f/s, want %d/s ±5%%", got, rate)
	}
	if stats.Measured < rate*0.9 || stats.Measured > rate*1.1 {
		t.Fatalf("Stats.Measured %.1f, want about %d", stats.Measured, rate)
	}
}

// TestMaxActive: never more admitted users active at once than MaxActive, and the queue
// moves on as admitted users go idle.
func TestMaxActive(t *testing.T) {
	stores(t, func(t *testing.T, st Store) {
		o := options(1000)
		o.MaxActive, o.Session = 25, 1500*time.Millisecond
		rs := nodes(t, 3, "cap", st, o, nil)
		const n = 100
		const work = 100 * time.Millisecond
		users := make([]*user, n)
		admittedAt := make([]time.Time, n)
		lastReq := make([]time.Time, n)
		for i := range users {
			users[i] = newUser("", i)
			users[i].poll(rs[i%3])
		}
		maxSeen, maxStore := 0, int64(0)
		deadline := time.Now().Add(40 * time.Second)
		for done := 0; done < n; {
			if time.Now().After(deadline) {
				t.Fatalf("only %d of %d users admitted in 40s", done, n)
			}
			now := time.Now()
			done = 0
			for i, u := range users {
				switch {
				case admittedAt[i].IsZero():
					if v := u.poll(rs[(i+int(now.UnixMilli()/100))%3]); v.Admitted {
						admittedAt[i], lastReq[i] = now, now
					} else if v.Err != nil {
						t.Fatal(v.Err)
					}
				case now.Sub(admittedAt[i]) < work: // working: requests with the cookie
					if v := u.poll(rs[i%3]); !v.Admitted {
						t.Fatalf("admitted user %d refused: %+v", i, *v)
					}
					lastReq[i] = now
				default:
					done++
				}
			}
			active := 0
			for i := range users {
				if !lastReq[i].IsZero() && now.Sub(lastReq[i]) < o.Session {
					active++
				}
			}
			maxSeen = max(maxSeen, active)
			maxStore = max(maxStore, counts(t, st, "cap").active)
			time.Sleep(20 * time.Millisecond)
		}
		t.Logf("MaxActive %d: at most %d users active by their requests, %d in the store", o.MaxActive, maxSeen, maxStore)
		if maxSeen > o.MaxActive || maxStore > int64(o.MaxActive) {
			t.Fatalf("%d active (store: %d), want at most %d", maxSeen, maxStore, o.MaxActive)
		}
		if maxSeen < o.MaxActive/2 {
			t.Fatalf("at most %d active: the cap %d was never approached", maxSeen, o.MaxActive)
		}
	})
}

// TestLeaderLoss: the leader closing, or dying without giving its lease up, stops
// admission for at most about a lease; nobody is admitted twice.
func TestLeaderLoss(t *testing.T) {
	stores(t, func(t *testing.T, st Store) {
		rs := nodes(t, 3, "lead", st, options(50), nil)
		for i := 0; i < 1000; i++ {
			if v := newUser(key(i), i).poll(rs[i%3]); v.Err != nil {
				t.Fatal(v.Err)
			}
		}
		// gap samples the admitted counter until it moved for 1s after the loss and
		// returns the longest pause.
		gap := func(lose func()) time.Duration {
			t.Helper()
			last := counts(t, st, "lead").admitted
			lastAt := time.Now()
			lose()
			var longest time.Duration
			start := time.Now()
			for time.Since(start) < 4*time.Second {
				time.Sleep(10 * time.Millisecond)
				c := counts(t, st, "lead").admitted
				now := time.Now()
				if c != last {
					longest = max(longest, now.Sub(lastAt))
					last, lastAt = c, now
				}
			}
			return max(longest, time.Since(lastAt))
		}
		l := leaderOf(t, rs)
		g1 := gap(l.Close)
		l2 := leaderOf(t, rs)
		g2 := gap(func() { l2.shutdown(false) }) // a crash: the lease is left to expire
		t.Logf("admission paused %v after the leader closed, %v after it crashed (lease %v)", g1, g2, lease)
		if g1 > lease || g2 > lease+time.Second {
			t.Fatalf("admission stopped for %v / %v, want at most about a lease (%v)", g1, g2, lease)
		}
		if c := counts(t, st, "lead"); c.admitted != c.serving {
			t.Fatalf("admitted %d but the serving counter passed %d places (none given up)", c.admitted, c.serving)
		}
	})
}

// TestPreQueue: early arrivals are admitted in the order DrawOrder gives for the logged
// seed, all before anyone who came after the opening; one draw with three nodes.
func TestPreQueue(t *testing.T) {
	stores(t, func(t *testing.T, st Store) {
		o := options(1000)
		o.OpensAt = time.Now().Add(1500 * time.Millisecond)
		var log logBuf
		rs := nodes(t, 3, "pre", st, o, &log)
		const early, late = 1000, 100
		users := make([]*user, early+late)
		keys := make([]string, early)
		for i := 0; i < early; i++ {
			keys[i] = key(i)
			users[i] = newUser(keys[i], i)
			v := users[i].poll(rs[i%3])
			if v.Err != nil || !v.PreQueue || v.Position != 0 || v.ETA <= 0 {
				t.Fatalf("early user %d: %+v, want a pre-queue answer", i, *v)
			}
		}
		if time.Now().After(o.OpensAt) {
			t.Fatal("the early arrivals took longer than the time to the opening")
		}
		waitFor(t, 10*time.Second, "the draw", func() bool { return rs[0].Stats().Seed != 0 })
		for i := early; i < early+late; i++ {
			users[i] = newUser(key(i), i)
			if v := users[i].poll(rs[i%3]); v.Err != nil || v.PreQueue {
				t.Fatalf("late user %d: %+v", i, *v)
			}
		}
		seed := rs[0].Stats().Seed
		lines := strings.Count(log.String(), "pre-queue drawn")
		if lines != 1 || !strings.Contains(log.String(), "seed="+strconv.FormatInt(seed, 10)) {
			t.Fatalf("want one draw logged with seed %d; log:\n%s", seed, log.String())
		}
		rounds := make([]int, len(users))
		for round, left := 1, len(users); left > 0; round++ {
			if round > 2000 {
				t.Fatalf("%d users not admitted", left)
			}
			for i := len(users) - 1; i >= 0; i-- { // one node per round, last joiner first: see TestOrderAcrossNodes
				if rounds[i] == 0 && users[i].poll(rs[round%3]).Admitted {
					rounds[i] = round
					left--
				}
			}
			time.Sleep(10 * time.Millisecond)
		}
		// The places the store gave: early ones in the drawn order, late ones after.
		place := func(k string) int64 {
			a, err := st.join(context.Background(), "pre", &joinQuery{identity: "k" + k, now: time.Now().UnixMilli(), session: o.Session.Milliseconds()})
			if err != nil || a.status != joinAdmitted {
				t.Fatalf("user %s: %+v %v", k, a, err)
			}
			return a.place
		}
		byPlace := slices.Clone(keys)
		slices.SortFunc(byPlace, func(a, b string) int { return int(place(a) - place(b)) })
		want := DrawOrder(seed, keys)
		if !slices.Equal(byPlace, want) {
			t.Fatalf("places of early arrivals do not follow DrawOrder(%d): first %v, want %v", seed, byPlace[:5], want[:5])
		}
		if slices.Equal(byPlace, keys) {
			t.Fatal("the draw kept the arrival order")
		}
		lastEarly := slices.Max(rounds[:early])
		firstLate := slices.Min(rounds[early:])
		for i := early; i < early+late; i++ {
			if p := place(key(i)); p != int64(i+1) {
				t.Fatalf("late user %d has place %d, want %d (arrival order after the draw)", i, p, i+1)
			}
		}
		t.Logf("seed %d: %d early users drawn (last admitted in round %d), %d late ones from round %d", seed, early, lastEarly, late, firstLate)
		if lastEarly > firstLate {
			t.Fatalf("a late user was admitted in round %d, before early ones (round %d)", firstLate, lastEarly)
		}
	})
}

func TestDrawOrder(t *testing.T) {
	m := []string{"c", "a", "b", "e", "d"}
	a := DrawOrder(42, m)
	b := DrawOrder(42, []string{"e", "d", "c", "b", "a"})
	if !slices.Equal(a, b) {
		t.Fatalf("DrawOrder depends on the input order: %v vs %v", a, b)
	}
	if !slices.Equal(m, []string{"c", "a", "b", "e", "d"}) {
		t.Fatal("DrawOrder modified its input")
	}
	if c := DrawOrder(43, m); slices.Equal(a, c) {
		t.Logf("seeds 42 and 43 give the same order %v (possible, unlikely)", a)
	}
	sorted := slices.Sorted(slices.Values(a))
	if !slices.Equal(sorted, []string{"a", "b", "c", "d", "e"}) {
		t.Fatalf("DrawOrder lost or invented members: %v", a)
	}
}
