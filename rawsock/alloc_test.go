//go:build unix && !race

package rawsock

import (
	"io"
	"testing"
)

// A read and a write allocate nothing.
func TestZeroAllocs(t *testing.T) {
	c, srv := pair(t)
	msg := []byte("ping")
	buf := make([]byte, 16)
	echo := make([]byte, 16)
	allocs := testing.AllocsPerRun(200, func() {
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(srv, echo[:4]); err != nil {
			t.Fatal(err)
		}
		if _, err := srv.Write(echo[:4]); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf[:4]); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("%.1f allocs per write+read round trip, want 0", allocs)
	}
}
