package shard

import (
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const numKeys = 1_000_000

// keyHashes returns the Hash of "user-0" … "user-<numKeys-1>", the shard keys
// every test routes.
var keyHashes = func() []uint64 {
	hs := make([]uint64, numKeys)
	var buf []byte
	for i := range hs {
		buf = strconv.AppendInt(append(buf[:0], "user-"...), int64(i), 10)
		hs[i] = Hash(buf)
	}
	return hs
}()

func equalCells(n int) []Cell {
	cells := make([]Cell, n)
	for i := range cells {
		cells[i] = Cell{Name: "cell-" + strconv.Itoa(i+1), Weight: 1}
	}
	return cells
}

func mustNew(t testing.TB, cells []Cell) *Ring {
	t.Helper()
	r, err := New(cells)
	if err != nil {
		t.Fatalf("New(%v): %v", cells, err)
	}
	return r
}

// loads returns how many of keyHashes each cell of r owns.
func loads(r *Ring) []int {
	n := make([]int, r.Len())
	for _, h := range keyHashes {
		n[r.LookupHash(h)]++
	}
	return n
}

func TestBalance(t *testing.T) {
	f := func(n int) {
		t.Helper()
		load := loads(mustNew(t, equalCells(n)))
		mean := float64(numKeys) / float64(n)
		hi, lo := slices.Max(load), slices.Min(load)
		t.Logf("%d cells: max/mean %.4f, min/mean %.4f", n, float64(hi)/mean, float64(lo)/mean)
		if float64(hi)/mean > 1.05 {
			t.Errorf("%d cells: max/mean load %.4f > 1.05 (loads %v)", n, float64(hi)/mean, load)
		}
		if float64(lo)/mean < 0.95 {
			t.Errorf("%d cells: min/mean load %.4f < 0.95 (loads %v)", n, float64(lo)/mean, load)
		}
	}
	f(1)
	f(2)
	f(3)
	f(10)
	f(64)
}

func TestWeights(t *testing.T) {
	f := func(weights ...float64) {
		t.Helper()
		cells := make([]Cell, len(weights))
		var total float64
		for i, w := range weights {
			cells[i] = Cell{Name: "w" + strconv.Itoa(i), Weight: w}
			total += w
		}
		load := loads(mustNew(t, cells))
		for i, w := range weights {
			want := numKeys * w / total
			if dev := float64(load[i])/want - 1; math.Abs(dev) > 0.05 {
				t.Errorf("weights %v: cell %s got %d keys, want %.0f ±5%% (off by %+.1f%%)",
					weights, cells[i].Name, load[i], want, 100*dev)
			}
		}
	}
	f(1, 2)
	f(1, 2, 3, 4)
	f(0.5, 1.5, 1)
	f(100, 100, 50)
	f(1, 1, 1, 1, 1, 1, 1, 1, 1, 5)
	f(3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1)
}

// moves compares the owner of every key under a and b (matched by cell name)
// and returns how many keys changed owner. Every key that changed must leave
// cell from (unless empty) and land on cell to (unless empty).
func moves(t *testing.T, a, b *Ring, from, to string) int {
	t.Helper()
	moved, stray := 0, 0
	for _, h := range keyHashes {
		na, nb := a.Name(a.LookupHash(h)), b.Name(b.LookupHash(h))
		if na == nb {
			continue
		}
		moved++
		if (from != "" && na != from) || (to != "" && nb != to) {
			if stray++; stray <= 3 {
				t.Errorf("key hash %#x moved %s → %s; only moves from %q to %q are allowed", h, na, nb, from, to)
			}
		}
	}
	if stray > 0 {
		t.Errorf("%d of %d moved keys moved between unchanged cells", stray, moved)
	}
	return moved
}

func TestMovement(t *testing.T) {
	f := func(base []Cell, changed Cell) {
		t.Helper()
		n := len(base)
		limit := float64(numKeys) * (1/float64(n+1) + 0.01)
		before := mustNew(t, base)
		after := mustNew(t, append(slices.Clone(base), changed))
		// Add the (n+1)th cell: keys only move to it.
		m := moves(t, before, after, "", changed.Name)
		t.Logf("%d cells: adding %s (weight %v) moved %.3f%% of keys", n, changed.Name, changed.Weight, 100*float64(m)/numKeys)
		if float64(m) > limit {
			t.Errorf("adding %s to %d cells moved %d keys, more than 1/N+1%% = %.0f", changed.Name, n, m, limit)
		}
		// Remove it again: keys only move from it, and the map is restored.
		if m := moves(t, after, before, changed.Name, ""); float64(m) > limit {
			t.Errorf("removing %s from %d cells moved %d keys, more than 1/N+1%% = %.0f", changed.Name, n+1, m, limit)
		}
		if n == 1 {
			return
		}
		// Remove a cell from the middle of the list.
		mid := n / 2
		without := mustNew(t, slices.Delete(slices.Clone(base), mid, mid+1))
		if m := moves(t, before, without, base[mid].Name, ""); float64(m) > float64(numKeys)*(1/float64(n)+0.01) {
			t.Errorf("removing %s from %d cells moved %d keys, more than 1/N+1%%", base[mid].Name, n, m)
		}
		if m := moves(t, without, before, "", base[mid].Name); m == 0 {
			t.Errorf("re-adding %s moved no key", base[mid].Name)
		}
	}
	f(equalCells(1), Cell{Name: "new", Weight: 1})
	f(equalCells(3), Cell{Name: "new", Weight: 1})
	f(equalCells(10), Cell{Name: "new", Weight: 1})
	f(equalCells(63), Cell{Name: "new", Weight: 1})
	// Weighted rings, and a ring going from equal to unequal weights.
	f([]Cell{{"a", 1}, {"b", 2}, {"c", 3}}, Cell{Name: "d", Weight: 0.5})
	f(equalCells(9), Cell{Name: "heavy", Weight: 1.1})
}

func TestDeterministic(t *testing.T) {
	f := func(cells []Cell) {
		t.Helper()
		ref := mustNew(t, cells)
		rng := rand.New(rand.NewPCG(1, uint64(len(cells))))
		for range 3 {
			shuffled := slices.Clone(cells)
			rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
			r := mustNew(t, shuffled)
			for s := range ref.table {
				if a, b := ref.Name(int(ref.table[s])), r.Name(int(r.table[s])); a != b {
					t.Fatalf("slot %d: cell %s for order %v, %s for order %v", s, a, names(ref), b, names(r))
				}
			}
		}
	}
	f(equalCells(3))
	f(equalCells(64))
	f([]Cell{{"a", 1}, {"b", 2}, {"c", 3}, {"d", 0.25}})
}

func names(r *Ring) []string {
	s := make([]string, r.Len())
	for i := range s {
		s[i] = r.Name(i)
	}
	return s
}

// TestPinned fixes known results. If it fails, the algorithm changed and
// every deployed edge node would send users to other cells than the new build:
// that is a breaking change to announce, not a test to update quietly.
func TestPinned(t *testing.T) {
	fh := func(key string, want uint64) {
		t.Helper()
		if got := Hash([]byte(key)); got != want {
			t.Errorf("Hash(%q) = %#x, want %#x", key, got, want)
		}
	}
	fh("", 0xef46db3751d8e999)
	fh("user-42", 0x397e9d3a76af7c81)

	three := mustNew(t, []Cell{{"c1", 1}, {"c2", 1}, {"c3", 1}})
	weighted := mustNew(t, []Cell{{"eu", 1}, {"us", 2}, {"asia", 0.5}})
	f := func(key, wantThree, wantWeighted string) {
		t.Helper()
		if got := three.Name(three.Lookup([]byte(key))); got != wantThree {
			t.Errorf("cells %v: Lookup(%q) = %s, want %s", names(three), key, got, wantThree)
		}
		if got := weighted.Name(weighted.Lookup([]byte(key))); got != wantWeighted {
			t.Errorf("cells %v: Lookup(%q) = %s, want %s", names(weighted), key, got, wantWeighted)
		}
	}
	f("user-1", "c1", "us")
	f("user-2", "c3", "us")
	f("user-3", "c2", "us")
	f("user-42", "c3", "us")
	f("alice", "c1", "us")
	f("bob", "c3", "asia")
	f("13800138000", "c2", "eu")
	f("", "c3", "us")
}

func TestNewErrors(t *testing.T) {
	f := func(cells []Cell, want string) {
		t.Helper()
		r, err := New(cells)
		if err == nil {
			t.Fatalf("New(%v) = %v, want an error containing %q", cells, names(r), want)
		}
		if !strings.Contains(err.Error(), want) {
			t.Errorf("New(%v) error %q does not contain %q", cells, err, want)
		}
	}
	f(nil, "no cells")
	f([]Cell{}, "no cells")
	f([]Cell{{"a", 1}, {"", 1}}, "cell #2 has an empty name")
	f([]Cell{{"a", 1}, {"b", 1}, {"a", 2}}, `cell "a" is listed twice`)
	f([]Cell{{"a", 1}, {"b", 0}}, `cell "b" has weight 0`)
	f([]Cell{{"a", -1}}, `cell "a" has weight -1`)
	f([]Cell{{"a", math.NaN()}}, `cell "a" has weight NaN`)
	f([]Cell{{"a", math.Inf(1)}}, `cell "a" has weight +Inf`)
	f(equalCells(MaxCells+1), "257 cells, more than the maximum of 256")

	if _, err := New(equalCells(MaxCells)); err != nil {
		t.Errorf("New(%d cells): %v", MaxCells, err)
	}
}

func TestLookupAvailable(t *testing.T) {
	f := func(cells []Cell, down ...string) {
		t.Helper()
		r := mustNew(t, cells)
		up := make([]bool, len(cells))
		var rest []Cell
		for i, c := range cells {
			up[i] = !slices.Contains(down, c.Name)
			if up[i] {
				rest = append(rest, c)
			}
		}
		if len(rest) == 0 {
			for _, h := range keyHashes[:1000] {
				if got := r.LookupAvailable(h, up); got != -1 {
					t.Fatalf("all cells down: LookupAvailable = %d, want -1", got)
				}
			}
			return
		}
		// Spilling to the next cell is the same as removing the down cells.
		removed := mustNew(t, rest)
		spilled := 0
		for _, h := range keyHashes {
			got := r.LookupAvailable(h, up)
			if got < 0 || !up[got] {
				t.Fatalf("down %v: LookupAvailable(%#x) = %d, not an available cell", down, h, got)
			}
			if owner := r.LookupHash(h); up[owner] && got != owner {
				t.Fatalf("down %v: LookupAvailable(%#x) = %s, but its owner %s is up", down, h, r.Name(got), r.Name(owner))
			} else if !up[owner] {
				spilled++
			}
			if want := removed.Name(removed.LookupHash(h)); r.Name(got) != want {
				t.Fatalf("down %v: key %#x spills to %s, but a ring without the down cells maps it to %s",
					down, h, r.Name(got), want)
			}
		}
		if len(down) > 0 && spilled == 0 {
			t.Errorf("down %v: no key spilled", down)
		}
	}
	f(equalCells(3))
	f(equalCells(3), "cell-2")
	f(equalCells(3), "cell-1", "cell-3")
	f(equalCells(3), "cell-1", "cell-2", "cell-3")
	f(equalCells(10), "cell-4", "cell-7")
	f([]Cell{{"a", 1}, {"b", 2}, {"c", 3}, {"d", 0.25}}, "c")
	f([]Cell{{"a", 1}, {"b", 2}, {"c", 3}, {"d", 0.25}}, "b", "d")

	r := mustNew(t, equalCells(3))
	defer func() {
		if recover() == nil {
			t.Errorf("LookupAvailable with 2 flags for 3 cells did not panic")
		}
	}()
	r.LookupAvailable(1, []bool{true, true})
}

// TestRank checks that the spill order of a key is the same whatever the
// order of the cells in the config, and that LookupAvailable follows it as
// cells go down one by one.
func TestRank(t *testing.T) {
	cells := []Cell{{"a", 1}, {"b", 2}, {"c", 3}, {"d", 0.25}, {"e", 1}}
	ref := mustNew(t, cells)
	rev := slices.Clone(cells)
	slices.Reverse(rev)
	other := mustNew(t, rev)
	var ra, rb []int
	for _, h := range keyHashes[:20000] {
		ra, rb = ref.AppendRank(ra[:0], h), other.AppendRank(rb[:0], h)
		if ra[0] != ref.LookupHash(h) {
			t.Fatalf("key %#x: rank starts with %s, owner is %s", h, ref.Name(ra[0]), ref.Name(ref.LookupHash(h)))
		}
		up := []bool{true, true, true, true, true}
		for k := range ra {
			if ref.Name(ra[k]) != other.Name(rb[k]) {
				t.Fatalf("key %#x: rank %d is %s with cells %v, %s with cells %v",
					h, k, ref.Name(ra[k]), names(ref), other.Name(rb[k]), names(other))
			}
			if got := ref.LookupAvailable(h, up); got != ra[k] {
				t.Fatalf("key %#x with %d cells down: LookupAvailable = %s, rank says %s", h, k, ref.Name(got), ref.Name(ra[k]))
			}
			up[ra[k]] = false
		}
		if got := ref.LookupAvailable(h, up); got != -1 {
			t.Fatalf("key %#x, all down: LookupAvailable = %d, want -1", h, got)
		}
	}
}

// The spill target of a down cell's keys spreads over the other cells by
// weight, so one failing cell does not overload a single neighbour.
func TestSpillSpread(t *testing.T) {
	r := mustNew(t, equalCells(10))
	up := make([]bool, 10)
	for i := range up {
		up[i] = i != 3
	}
	load := make([]int, 10)
	total := 0
	for _, h := range keyHashes {
		if r.LookupHash(h) == 3 {
			load[r.LookupAvailable(h, up)]++
			total++
		}
	}
	mean := float64(total) / 9
	for i, n := range load {
		if i != 3 && math.Abs(float64(n)/mean-1) > 0.1 {
			t.Errorf("cell %s got %d of %d spilled keys, want %.0f ±10%%", r.Name(i), n, total, mean)
		}
	}
}

func TestNegLog2(t *testing.T) {
	prev := negLog2(1)
	rng := rand.New(rand.NewPCG(7, 7))
	hs := []uint64{1, 2, 3, 1 << 63, 1<<63 - 1, math.MaxUint64, math.MaxUint64 - 1}
	for range 100000 {
		hs = append(hs, rng.Uint64()>>rng.UintN(64))
	}
	slices.Sort(hs)
	for _, h := range hs {
		got := negLog2(h)
		if got > prev {
			t.Fatalf("negLog2 not monotone: negLog2(%#x) = %d > %d", h, got, prev)
		}
		prev = got
		// best relies on this lower bound to skip logs.
		if lb := ^h >> 32; got < lb {
			t.Fatalf("negLog2(%#x) = %d, below the lower bound %d", h, got, lb)
		}
		want := -math.Log2(float64(h|1) / (1 << 64))
		if d := math.Abs(float64(got)/(1<<32) - want); d > 1e-6 {
			t.Errorf("negLog2(%#x) = %.9f, want %.9f", h, float64(got)/(1<<32), want)
		}
	}
}
