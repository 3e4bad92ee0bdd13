//go:build !race

package shard

import "testing"

func TestLookupAllocs(t *testing.T) {
	f := func(name string, fn func()) {
		t.Helper()
		if n := testing.AllocsPerRun(1000, fn); n != 0 {
			t.Errorf("%s allocates %.1f times per call, want 0", name, n)
		}
	}
	r := mustNew(t, equalCells(64))
	w := mustNew(t, []Cell{{"a", 1}, {"b", 2}, {"c", 3}})
	key := []byte("user-42")
	h := Hash(key)
	allDown := make([]bool, 64)
	ownerDown := make([]bool, 64) // up flags: all up but the key's owner
	for i := range ownerDown {
		ownerDown[i] = i != r.LookupHash(h)
	}
	wDown := []bool{true, true, true}
	wDown[w.LookupHash(h)] = false
	rank := make([]int, 0, 64)
	var sink int
	f("Hash", func() { sink += int(Hash(key)) })
	f("Lookup", func() { sink += r.Lookup(key) })
	f("LookupHash", func() { sink += r.LookupHash(h) })
	f("LookupAvailable with the owner down", func() { sink += r.LookupAvailable(h, ownerDown) })
	f("LookupAvailable with all down", func() { sink += r.LookupAvailable(h, allDown) })
	f("LookupAvailable weighted, owner down", func() { sink += w.LookupAvailable(h, wDown) })
	f("AppendRank into a large enough slice", func() { rank = r.AppendRank(rank[:0], h) })
	_ = sink
}
