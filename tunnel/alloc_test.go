//go:build !race

package tunnel

import (
	"io"
	"testing"
	"time"
)

// A tunnel relays without allocating, on the copy path and on the splice path: a
// 64-byte round trip through it allocates nothing anywhere in the process once the
// tunnel runs.
func TestRelayAllocs(t *testing.T) {
	for _, m := range []mode{modes[0], modes[1]} {
		t.Run(m.name, func(t *testing.T) {
			rg := start(t, NewRegistry().NewGroup(0), m, Options{IdleTimeout: time.Minute}, nil)
			go echo(rg.upstream)
			msg := make([]byte, 64)
			roundTrip := func() {
				if _, err := rg.client.Write(msg); err != nil {
					t.Fatal(err)
				}
				if _, err := io.ReadFull(rg.client, msg); err != nil {
					t.Fatal(err)
				}
			}
			roundTrip()
			if n := testing.AllocsPerRun(200, roundTrip); n != 0 {
				t.Errorf("%v allocations per round trip, want 0", n)
			}
			rg.client.Close()
			rg.wait(t)
		})
	}
}
