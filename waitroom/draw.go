package waitroom

import (
	"math/rand/v2"
	"slices"
)

// DrawOrder returns the order in which the pre-queue members are given places when a
// scheduled room opens: members sorted, then shuffled by a PCG generator seeded with
// seed. It depends only on seed and the set of members (not their order in the slice),
// so anyone holding the seed a room logged ("pre-queue drawn", Stats.Seed) and the list
// of early arrivals reproduces the order. Members are the users' keys; an early arrival
// known by cookie alone is "#<ticket>". members is not modified; the result is new.
func DrawOrder(seed int64, members []string) []string {
	out := slices.Clone(members)
	slices.Sort(out)
	shuffle(seed, len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// shuffle is the Fisher–Yates shuffle DrawOrder applies after sorting.
func shuffle(seed int64, n int, swap func(i, j int)) {
	// The second PCG word is "waitroom" in ASCII: any fixed value works, but it must never
	// change, or logged seeds stop reproducing old draws.
	rng := rand.New(rand.NewPCG(uint64(seed), 0x77616974726f6f6d))
	rng.Shuffle(n, swap)
}
