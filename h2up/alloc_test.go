//go:build !race

package h2up

import (
	"fmt"
	"testing"

	"github.com/valyala/fasthttp"
)

func TestHelpersDoNotAllocate(t *testing.T) {
	f := func(name string, fn func()) {
		t.Helper()
		fn() // warm up pooled buffers
		if n := testing.AllocsPerRun(100, fn); n != 0 {
			t.Fatalf("%s: %v allocations per run; want 0", name, n)
		}
	}
	timeout := []byte("200m")
	f("GRPCTimeout", func() { _, _ = GRPCTimeout(timeout) })
	var buf [16]byte
	f("AppendGRPCTimeout", func() { _ = AppendGRPCTimeout(buf[:0], 12345) })
	var h fasthttp.RequestHeader
	h.SetContentType("application/grpc+proto")
	f("IsGRPC", func() { _ = IsGRPC(&h) })
	var resp fasthttp.Response
	f("WriteStatus", func() { WriteStatus(&resp, ResourceExhausted, "rate limited") })
	err := fmt.Errorf("x: %w", ErrTimeout)
	f("Classify", func() { _ = Classify(err) })
	x := &Exchange{fields: []field{{[]byte("grpc-status"), []byte("0")}}}
	n := 0
	f("Trailers", func() { x.Trailers(func(_, v []byte) { n += len(v) }) })
}
