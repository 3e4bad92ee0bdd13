//go:build race

package h2

// raceEnabled: the race detector slows byte-heavy tests about tenfold; they move less.
const raceEnabled = true
