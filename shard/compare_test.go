package shard

// The algorithm comparison behind the choice written in doc.go. Run with
//
//	go test -run '^$' -bench Compare -benchtime=2000000x ./shard
//
// Each sub-benchmark reports lookup ns/op over a million distinct keys plus
// the quality of the mapping over the same keys: max/mean load, the percent
// of keys moved when one cell is added, the percent of keys that moved
// between two unchanged cells (must be 0), and the build time.

import (
	"math"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
)

type lookuper interface{ lookupHash(h uint64) int }

func (r *Ring) lookupHash(h uint64) int { return r.LookupHash(h) }

// hrw is weighted rendezvous computed per lookup: O(cells) with a log each.
type hrw struct {
	seeds []uint64
	w     []float64
}

func newHRW(cells []Cell) lookuper {
	r := &hrw{}
	for _, c := range cells {
		r.seeds = append(r.seeds, xxhash.Sum64String(c.Name))
		r.w = append(r.w, c.Weight)
	}
	return r
}

func (r *hrw) lookupHash(h uint64) int {
	best, bestScore := 0, math.Inf(-1)
	for i, seed := range r.seeds {
		u := (float64(mix(seed^h)>>11) + 0.5) / (1 << 53)
		if s := r.w[i] / -math.Log(u); s > bestScore {
			best, bestScore = i, s
		}
	}
	return best
}

// ketama is a hash ring with points per unit of weight, found by binary search.
type ketama struct {
	points []uint64
	owner  []int
}

func newKetama(perWeight int) func([]Cell) lookuper {
	return func(cells []Cell) lookuper {
		type pt struct {
			h uint64
			c int
		}
		var pts []pt
		for i, c := range cells {
			seed := xxhash.Sum64String(c.Name)
			for j := range int(float64(perWeight) * c.Weight) {
				pts = append(pts, pt{mix(seed ^ slotHash(uint64(j))), i})
			}
		}
		slices.SortFunc(pts, func(a, b pt) int {
			if a.h < b.h {
				return -1
			}
			if a.h > b.h {
				return 1
			}
			return 0
		})
		k := &ketama{}
		for _, p := range pts {
			k.points = append(k.points, p.h)
			k.owner = append(k.owner, p.c)
		}
		return k
	}
}

func (k *ketama) lookupHash(h uint64) int {
	i, _ := slices.BinarySearch(k.points, h)
	if i == len(k.points) {
		i = 0
	}
	return k.owner[i]
}

// maglev is Google's Maglev table (equal weights), as in Envoy with 65537 entries.
type maglev struct{ table []int }

func newMaglev(cells []Cell) lookuper {
	const m = 65537
	n := len(cells)
	offset, skip, next := make([]uint64, n), make([]uint64, n), make([]uint64, n)
	for i, c := range cells {
		seed := xxhash.Sum64String(c.Name)
		offset[i] = mix(seed) % m
		skip[i] = mix(seed^0x5bd1e995)%(m-1) + 1
	}
	t := make([]int, m)
	for i := range t {
		t[i] = -1
	}
	for filled := 0; ; {
		for i := range n {
			c := (offset[i] + next[i]*skip[i]) % m
			for t[c] >= 0 {
				next[i]++
				c = (offset[i] + next[i]*skip[i]) % m
			}
			t[c] = i
			next[i]++
			if filled++; filled == m {
				return &maglev{t}
			}
		}
	}
}

func (g *maglev) lookupHash(h uint64) int { return g.table[h%uint64(len(g.table))] }

func newTable(bits uint) func([]Cell) lookuper {
	return func(cells []Cell) lookuper {
		r, err := newRing(cells, bits)
		if err != nil {
			panic(err)
		}
		return r
	}
}

func BenchmarkCompare(b *testing.B) {
	algos := []struct {
		name  string
		build func([]Cell) lookuper
	}{
		{"rendezvous", newHRW},
		{"ketama160", newKetama(160)},
		{"ketama4096", newKetama(4096)},
		{"maglev65537", newMaglev},
		{"table2^16", newTable(16)},
		{"table2^18", newTable(18)},
		{"table2^20", newTable(20)},
	}
	for _, a := range algos {
		for _, n := range []int{3, 10, 64} {
			b.Run(a.name+"/cells="+strconv.Itoa(n), func(b *testing.B) {
				cells := equalCells(n)
				start := time.Now()
				before := a.build(cells)
				buildMS := float64(time.Since(start).Microseconds()) / 1000
				after := a.build(append(slices.Clone(cells), Cell{Name: "new", Weight: 1}))
				load := make([]int, n)
				moved, stray := 0, 0
				for _, h := range keyHashes {
					c, d := before.lookupHash(h), after.lookupHash(h)
					load[c]++
					if c != d {
						moved++
						if d != n {
							stray++
						}
					}
				}
				b.ReportAllocs()
				var sink, i int
				for b.Loop() {
					sink += before.lookupHash(keyHashes[i])
					if i++; i == len(keyHashes) {
						i = 0
					}
				}
				_ = sink
				b.ReportMetric(float64(slices.Max(load))*float64(n)/numKeys, "max/mean")
				b.ReportMetric(100*float64(moved)/numKeys, "%moved")
				b.ReportMetric(100*float64(stray)/numKeys, "%stray")
				b.ReportMetric(buildMS, "build-ms")
			})
		}
	}
}
