//go:build !race

package stream

import "testing"

// Pick is on every connection of a passthrough stream: it allocates nothing.
func TestPickZeroAllocs(t *testing.T) {
	r, err := NewSNIRouter([]SNIRoute{{"api.shop.example.com", "api"}, {"*.shop.example.com", "web"}}, "default")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"api.shop.example.com", "web.shop.example.com", "other.example", ""} {
		if n := testing.AllocsPerRun(100, func() { r.Pick(name) }); n != 0 {
			t.Errorf("Pick(%q): %v allocations", name, n)
		}
	}
}
