//go:build !race

package h2

import (
	"testing"

	"github.com/edge-gw/edge/internal/h2test"
)

// TestAllocsPerRequest: a GET on a warm connection, through ServeConn end to end, costs
// the server no allocation. The client allocates nothing, so the process's count is the
// server's.
func TestAllocsPerRequest(t *testing.T) {
	ts := startServer(t, Config{}, nil)
	bc := h2test.Dial(t, ts.addr, "/alloc")
	for range 100 {
		bc.Do(t)
	}
	allocs := testing.AllocsPerRun(5000, func() { bc.Do(t) })
	t.Logf("server allocations per GET: %v", allocs)
	if allocs > 0 {
		t.Errorf("%v allocations per GET, want 0", allocs)
	}
	if s := ts.srv.Stats(); s.ConnsTotal != 1 || s.HandlerRuns < 5100 {
		t.Errorf("connections %d, handler runs %d", s.ConnsTotal, s.HandlerRuns)
	}
}

func BenchmarkGET(b *testing.B) {
	ts := startServer(b, Config{}, nil)
	bc := h2test.Dial(b, ts.addr, "/alloc")
	for range 100 {
		bc.Do(b)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		bc.Do(b)
	}
}

// TestEncodeAllocs: encoding response headers allocates nothing.
func TestEncodeAllocs(t *testing.T) {
	buf := make([]byte, 0, 1024)
	name, value, custom := []byte("content-type"), []byte("application/json; charset=utf-8"), []byte("x-request-id")
	appendDate(nil) // the cached date may be rebuilt once a second
	allocs := testing.AllocsPerRun(1000, func() {
		b := appendStatus(buf[:0], 200)
		b = appendField(b, name, value)
		b = appendField(b, custom, value)
		b = appendContentLength(b, 42)
		_ = b
	})
	if allocs != 0 {
		t.Errorf("%v allocations, want 0", allocs)
	}
}
