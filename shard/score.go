package shard

import "math/bits"

// The per-(slot, cell) score is computed with integer arithmetic only, plus
// one float64 multiply, so that every node, whatever its CPU, builds the same
// table bit for bit. math.Log is avoided on purpose: on amd64 it is written in
// assembly and may differ from the pure Go version (arm64) in the last bit.

// mix is the murmur3 64-bit finalizer: a bijection with full avalanche.
func mix(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

// slotHash is the per-slot half of the rendezvous hash.
func slotHash(slot uint64) uint64 {
	return mix(slot + 0x9e3779b97f4a7c15)
}

// pairHash is the rendezvous hash of (cell, slot). Because mix is a bijection,
// two cells with different seeds never get the same pairHash for one slot.
func pairHash(cellSeed, sh uint64) uint64 {
	return mix(cellSeed ^ sh)
}

// lgTable[i] is log2(1+i/1024) in 0.32 fixed point, computed by repeated
// squaring so it is identical on every platform.
var lgTable = func() (t [lgSize + 1]uint64) {
	for i := 0; i < lgSize; i++ {
		t[i] = fixedLog2(uint64(1)<<62 + uint64(i)<<(62-lgBits))
	}
	t[lgSize] = 1 << 32
	return t
}()

const (
	lgBits = 10
	lgSize = 1 << lgBits
)

// fixedLog2 returns log2(x/2^62) in 0.32 fixed point for x in [2^62, 2^63).
func fixedLog2(z uint64) uint64 {
	var y uint64
	for j := 31; j >= 0; j-- {
		hi, lo := bits.Mul64(z, z)
		z = hi<<2 | lo>>62 // z*z in Q62, < 2^64 because z < 2^63
		if z >= 1<<63 {
			z >>= 1
			y |= 1 << j
		}
	}
	return y
}

// negLog2 returns -log2(h/2^64) in 32.32 fixed point: h read as a uniform
// variate in (0,1), the result is an exponential variate (in units of ln 2).
// It is non-increasing in h, which the equal-weights fast path relies on.
func negLog2(h uint64) uint64 {
	h |= 1
	k := bits.LeadingZeros64(h)
	m := h << k // top bit set: mantissa 1.f
	i := (m >> (63 - lgBits)) & (lgSize - 1)
	t := (m >> (31 - lgBits)) & (1<<32 - 1)
	lo, hi := lgTable[i], lgTable[i+1]
	f := lo + ((hi-lo)*t)>>32
	return uint64(k+1)<<32 - f
}
