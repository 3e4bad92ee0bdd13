package shard

import (
	"strconv"
	"testing"
)

func BenchmarkLookup(b *testing.B) {
	for _, n := range []int{3, 10, 64} {
		r := mustNew(b, equalCells(n))
		key := []byte("user-1234567")
		b.Run("cells="+strconv.Itoa(n), func(b *testing.B) {
			b.ReportAllocs()
			var sink int
			for b.Loop() {
				sink += r.Lookup(key)
			}
			_ = sink
		})
	}
}

// BenchmarkLookupHash routes a million distinct keys in turn, so the table is
// read at random as in production, not from one cached line.
func BenchmarkLookupHash(b *testing.B) {
	for _, n := range []int{3, 10, 64} {
		r := mustNew(b, equalCells(n))
		b.Run("cells="+strconv.Itoa(n), func(b *testing.B) {
			b.ReportAllocs()
			var sink, i int
			for b.Loop() {
				sink += r.LookupHash(keyHashes[i])
				if i++; i == len(keyHashes) {
					i = 0
				}
			}
			_ = sink
		})
	}
}

// BenchmarkLookupAvailable measures the spill lookup when the owner is up
// (the common case) and when it is down (an O(cells) walk).
func BenchmarkLookupAvailable(b *testing.B) {
	f := func(name string, cells []Cell) {
		r := mustNew(b, cells)
		h := Hash([]byte("user-1234567"))
		up := make([]bool, len(cells))
		for i := range up {
			up[i] = true
		}
		b.Run(name+"/owner-up", func(b *testing.B) {
			b.ReportAllocs()
			var sink int
			for b.Loop() {
				sink += r.LookupAvailable(h, up)
			}
			_ = sink
		})
		up[r.LookupHash(h)] = false
		b.Run(name+"/owner-down", func(b *testing.B) {
			b.ReportAllocs()
			var sink int
			for b.Loop() {
				sink += r.LookupAvailable(h, up)
			}
			_ = sink
		})
	}
	f("equal/cells=3", equalCells(3))
	f("equal/cells=64", equalCells(64))
	w := equalCells(64)
	w[0].Weight = 2
	f("weighted/cells=64", w)
}

func BenchmarkNew(b *testing.B) {
	f := func(name string, cells []Cell) {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := New(cells); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	f("equal/cells=3", equalCells(3))
	f("equal/cells=10", equalCells(10))
	f("equal/cells=64", equalCells(64))
	w := equalCells(10)
	w[0].Weight = 2
	f("weighted/cells=10", w)
	w = equalCells(64)
	w[0].Weight = 2
	f("weighted/cells=64", w)
}
