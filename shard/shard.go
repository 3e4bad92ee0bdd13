package shard

import (
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/cespare/xxhash/v2"
)

// MaxCells is the largest number of cells a Ring accepts. Cell indices are
// stored in one byte per table slot; past a few hundred cells the fixed table
// could not keep the balance promise anyway (see the package doc).
const MaxCells = 256

// tableBits is log2 of the number of table slots. It is part of the key→cell
// mapping: changing it moves keys, and TestPinned fails.
const tableBits = 20

// Hash returns the 64-bit xxhash (seed 0) of key. It is the stable hash every
// edge node uses for shard keys: the same bytes give the same value in every
// process, on every machine and in every release, so a caller may hash a key
// once and pass the result to LookupHash or LookupAvailable.
// It does not allocate and is safe for concurrent use.
func Hash(key []byte) uint64 {
	return xxhash.Sum64(key)
}

// Cell is one named target of a Ring.
type Cell struct {
	// Name identifies the cell; it alone (never its position in the list)
	// decides which keys the cell owns. Must be non-empty and unique.
	Name string
	// Weight is the cell's share of keys relative to the other cells: a cell
	// of weight 2 gets twice the keys of a cell of weight 1. Must be positive
	// and finite; there is no default, the caller fills in 1.
	Weight float64
}

// Ring maps shard keys to cells by consistent hashing.
//
// A Ring is immutable once New returns it and safe for concurrent use by any
// number of goroutines. Cell indices returned by its methods are positions in
// the slice given to New. A Ring holds a 1 MiB table: build it once per
// config and share it; rebuilding one for an unchanged list of cells yields
// an identical Ring.
type Ring struct {
	cells []Cell
	seeds []uint64  // xxhash of each cell name
	invW  []float64 // 1/weight of each cell
	equal bool      // all weights equal: compare pair hashes, skip the log
	shift uint      // 64 - log2(len(table))
	table []uint8   // slot → index of the cell that wins it
}

// ErrNoCells is returned by New for an empty list of cells.
var ErrNoCells = errors.New("shard: no cells")

// New builds a Ring for cells. It returns an error naming the offending cell
// for an empty or duplicate name or a weight that is not a positive finite
// number, and ErrNoCells for an empty list. New copies cells; the caller may
// reuse the slice. The order of cells changes indices only, never which cell
// a key maps to.
//
// New costs about len(cells) million hash evaluations (tens of ms for 64
// cells); call it when a config is built, not per request.
func New(cells []Cell) (*Ring, error) {
	return newRing(cells, tableBits)
}

func newRing(cells []Cell, tbits uint) (*Ring, error) {
	if len(cells) == 0 {
		return nil, ErrNoCells
	}
	if len(cells) > MaxCells {
		return nil, fmt.Errorf("shard: %d cells, more than the maximum of %d", len(cells), MaxCells)
	}
	r := &Ring{
		cells: slices.Clone(cells),
		seeds: make([]uint64, len(cells)),
		invW:  make([]float64, len(cells)),
		equal: true,
		shift: 64 - tbits,
		table: make([]uint8, 1<<tbits),
	}
	bySeed := make(map[uint64]string, len(cells))
	for i, c := range cells {
		if c.Name == "" {
			return nil, fmt.Errorf("shard: cell #%d has an empty name", i+1)
		}
		if !(c.Weight > 0) || math.IsInf(c.Weight, 0) {
			return nil, fmt.Errorf("shard: cell %q has weight %v; want a positive finite number", c.Name, c.Weight)
		}
		seed := xxhash.Sum64String(c.Name)
		if other, ok := bySeed[seed]; ok {
			if other == c.Name {
				return nil, fmt.Errorf("shard: cell %q is listed twice", c.Name)
			}
			// 2^-64 odds; refusing keeps the mapping independent of list order.
			return nil, fmt.Errorf("shard: cell names %q and %q have the same hash; rename one", other, c.Name)
		}
		bySeed[seed] = c.Name
		r.seeds[i] = seed
		r.invW[i] = 1 / c.Weight
		if c.Weight != cells[0].Weight {
			r.equal = false
		}
	}
	if r.equal {
		// best(s, nil) without the availability checks: the hot loop of New.
		for s := range r.table {
			sh := slotHash(uint64(s))
			var bi int
			var bh uint64
			for i, seed := range r.seeds {
				if h := pairHash(seed, sh); h > bh {
					bi, bh = i, h
				}
			}
			r.table[s] = uint8(bi)
		}
	} else {
		for s := range r.table {
			r.table[s] = uint8(r.best(uint64(s), nil))
		}
	}
	return r, nil
}

// best returns the highest-ranked cell for slot among those with up[i]
// (all cells when up is nil), or -1 when none is up.
//
// Rank is weighted rendezvous: each cell draws an exponential variate
// -ln(u)/weight from its pair hash and the smallest wins, ties going to the
// larger pair hash. With equal weights that order is exactly the order of the
// pair hashes (negLog2 is non-increasing), so the log is skipped.
func (r *Ring) best(slot uint64, up []bool) int {
	sh := slotHash(slot)
	best := -1
	var bestH uint64
	if r.equal {
		for i, seed := range r.seeds {
			if up != nil && !up[i] {
				continue
			}
			if h := pairHash(seed, sh); best < 0 || h > bestH {
				best, bestH = i, h
			}
		}
		return best
	}
	var bestScore float64
	for i, seed := range r.seeds {
		if up != nil && !up[i] {
			continue
		}
		h := pairHash(seed, sh)
		// -log2(u) >= 1-u, and negLog2 never rounds below the true value,
		// so ^h>>32 is a lower bound of negLog2(h): a cell whose bound
		// already loses skips the log. That saves most logs of a build.
		if best >= 0 && float64(^h>>32)*r.invW[i] > bestScore {
			continue
		}
		score := float64(negLog2(h)) * r.invW[i]
		if best < 0 || score < bestScore || (score == bestScore && h > bestH) {
			best, bestH, bestScore = i, h, score
		}
	}
	return best
}

// Len returns the number of cells.
func (r *Ring) Len() int { return len(r.cells) }

// Cell returns cell i as given to New. It panics if i is out of range.
func (r *Ring) Cell(i int) Cell { return r.cells[i] }

// Name returns the name of cell i. It panics if i is out of range.
func (r *Ring) Name(i int) string { return r.cells[i].Name }

// Lookup returns the index of the cell that owns key: LookupHash(Hash(key)).
// It does not allocate and does not retain key.
func (r *Ring) Lookup(key []byte) int {
	return int(r.table[xxhash.Sum64(key)>>r.shift])
}

// LookupHash returns the index of the cell that owns the key whose Hash is h.
// It does not allocate.
func (r *Ring) LookupHash(h uint64) int {
	return int(r.table[h>>r.shift])
}

// LookupAvailable returns the highest-ranked cell for the key whose Hash is h
// among the cells i with up[i], or -1 when no cell is up. len(up) must be
// Len(); up is only read, during the call.
//
// When the owner is up the result is LookupHash(h) at the cost of one extra
// read. Otherwise it is the cell the key would belong to if the down cells
// were removed from the config: the same on every node, and a down cell's
// keys spread over the others in proportion to their weights, moving nobody
// else's keys. That walk costs O(Len()) hash evaluations (about 1 ns each for
// equal weights, 3 ns with weights); it does not allocate.
func (r *Ring) LookupAvailable(h uint64, up []bool) int {
	if len(up) != len(r.cells) {
		panic(fmt.Sprintf("BUG: shard: LookupAvailable got %d availability flags for %d cells", len(up), len(r.cells)))
	}
	slot := h >> r.shift
	if c := int(r.table[slot]); up[c] {
		return c
	}
	return r.best(slot, up)
}

// AppendRank appends to dst the indices of all cells, best first, in the
// order LookupAvailable would pick them for the key whose Hash is h as cells
// go down, and returns the extended slice. It is for diagnostics and tests
// (O(Len()²)); it allocates only when dst lacks capacity.
func (r *Ring) AppendRank(dst []int, h uint64) []int {
	var up [MaxCells]bool
	avail := up[:len(r.cells)]
	for i := range avail {
		avail[i] = true
	}
	slot := h >> r.shift
	for range r.cells {
		c := r.best(slot, avail)
		dst = append(dst, c)
		avail[c] = false
	}
	return dst
}
