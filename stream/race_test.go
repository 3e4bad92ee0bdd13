//go:build race

package stream

// raceEnabled: the race detector slows byte-heavy tests about tenfold; they move less.
const raceEnabled = true
