// Package shard maps shard keys (a user ID, …) to named, weighted cells by
// consistent hashing, the same way on every edge node.
//
// Build a Ring once per config with New, share it between goroutines, and
// route with Lookup (key bytes) or LookupHash (a precomputed Hash). When a
// cell is unavailable, LookupAvailable returns the next cell on the ring for
// the key. Lookups allocate nothing and take a few nanoseconds.
//
// # Promises
//
//   - Balance: over 1M keys, the busiest of 3, 10 or 64 equal cells carries
//     at most 1.05× the mean (measured 1.001, 1.005, 1.025); each cell's share
//     is within 5% of weight/Σweights.
//   - Minimal movement: adding a cell moves keys only to it, removing one
//     moves only its keys, about weight/Σweights of them (1/N for equal
//     cells); re-adding it restores the previous map exactly.
//   - Determinism: a key's cell depends on the key's bytes and the set of
//     (name, weight) pairs only: not on list order, process, CPU or Go
//     version. Hash is xxhash64 with seed 0 (never hash/maphash, which is
//     seeded per process), cell identity is the xxhash of its name, and the
//     ranking uses integer arithmetic and one float64 multiply (no math.Log,
//     whose amd64 assembly may differ from other platforms in the last bit).
//     TestPinned fixes known key→cell results: if it fails, the change would
//     move users between cells on a mixed-version fleet.
//   - Spill: LookupAvailable with some cells down returns exactly the cell a
//     Ring built without those cells would return. So every node agrees on
//     where a down cell's users go, they spread over all other cells by
//     weight, and nobody else's users move.
//
// # Algorithm: a lookup table filled by weighted rendezvous hashing
//
// The Ring holds 2^20 one-byte slots; a key goes to slot Hash(key)>>44. Each
// slot belongs to the cell that ranks first for it under weighted rendezvous
// (highest random weight) hashing: every cell draws an exponential variate
// -ln(u)/weight from a hash of (cell name, slot) and the smallest wins. A
// slot's ranking of two cells never depends on a third, which gives the
// movement and spill properties exactly, and the table gives O(1) lookup.
// The price is balance: each cell's number of slots is binomial, with a
// relative spread of about sqrt(N/2^20) (0.8% at 64 cells), so the table size
// is what keeps max/mean under 1.05; and a build costs N×2^20 hash
// evaluations. The table is one byte per slot, hence MaxCells = 256; the
// spread reaches 1.6% at 256 cells.
//
// # Measurements
//
// BenchmarkCompare (compare_test.go) runs the candidates over the same 1M
// keys "user-0"…"user-999999" on the shared 2-core AMD EPYC dev machine
// (noisy: other jobs were running), equal weights, adding one cell for the
// movement columns. ns/op is one lookup from a precomputed hash; stray is
// the share of keys that moved between two unchanged cells.
//
//	go test -run '^$' -bench Compare -benchtime=2000000x ./shard
//
//	algorithm            cells  ns/op  max/mean  moved%  stray%  build
//	rendezvous per key       3    173    1.001    25.04   0       -
//	                        10    409    1.008     9.10   0       -
//	                        64   1664    1.022     1.54   0       -
//	ketama, 160 pts/cell     3     59    1.066    24.44   0       0.06 ms
//	                        10     99    1.088    10.22   0       0.2 ms
//	                        64    159    1.195     1.60   0       2.2 ms
//	ketama, 4096 pts/cell    3    195    1.005    24.95   0       3 ms
//	                        10    178    1.020     9.22   0       23 ms
//	                        64    322    1.048     1.53   0       61 ms
//	Maglev, 65537 entries    3      8    1.002    24.97   0.05    1 ms
//	                        10      8    1.003     9.47   0.40    1.3 ms
//	                        64      3    1.019     2.08   0.52    1.8 ms
//	table 2^16 (rendezvous)  3      4    1.008    24.67   0       0.4 ms
//	                        10      5    1.022     9.05   0       1.3 ms
//	                        64      3    1.058     1.51   0       11 ms
//	table 2^18               3      3    1.005    25.00   0       1.7 ms
//	                        10      4    1.012     9.11   0       4.3 ms
//	                        64      5    1.038     1.54   0       43 ms
//	table 2^20 (chosen)      3      3    1.001    24.98   0       6.5 ms
//	                        10      3    1.005     9.10   0       17 ms
//	                        64      4    1.025     1.54   0       105 ms
//
// Reading the table:
//
//   - Rendezvous per key has the ideal properties but is O(cells) with a log
//     per cell: 1.7 µs per lookup at 64 cells, far over the 100 ns budget.
//   - Ketama (nginx's `hash … consistent` uses 160 points per weight) moves
//     keys correctly, but 160 points leave a 1.2× hot cell at 64 cells, and
//     enough points for balance make the binary search slow (322 ns).
//   - Maglev is fast and the best balanced, but adding a cell also shuffles
//     0.05–0.5% of keys between unchanged cells, breaking the "moved keys go
//     only to the new cell" rule and the "spill = removal" agreement.
//   - Jump hash needs numbered buckets and can only drop the last one: it
//     cannot remove a named cell from the middle, so it was not measured.
//   - The rendezvous-built table keeps rendezvous's exact movement at a
//     constant few ns. 2^16 slots miss the 1.05 balance at 64 cells, 2^18
//     passes with little margin (1.038), 2^20 passes with room (1.025, of
//     which about 0.02 is the sampling noise of 1M keys).
//
// Ring itself (go test -run '^$' -bench 'Lookup|New' -benchtime=300ms):
// Lookup 5–16 ns including xxhash of a 12-byte key, LookupHash 2–8 ns,
// LookupAvailable 3–11 ns when the owner is up, 0 allocs in all. With the
// owner down LookupAvailable walks all cells: about 200 ns (equal weights)
// to 200–400 ns (weighted) at 64 cells. New takes 13–23 ms for 3 cells,
// 36–56 ms for 10 and 140–250 ms for 64 equal cells, 2–3× that with unequal
// weights, and holds 1 MiB: reuse the Ring across reloads that keep the cells.
package shard
