//go:build !race

package idempotency

import (
	"context"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// The allocation promises of the hot path: fingerprinting, encoding, replaying, and the
// memory store's answers other than Started.
func TestAllocations(t *testing.T) {
	ctx := context.Background()
	req := &fasthttp.Request{}
	req.Header.SetMethod("POST")
	req.SetRequestURI("/orders?item=1")
	req.SetBodyString(`{"qty":1}`)
	resp := testResponse(`{"order":42}`)
	resp.Header.Set("Connection", "X-Hop")
	resp.Header.Set("X-Hop", "1")
	dst := make([]byte, 0, 1024)
	rec := Record(AppendResponse(nil, resp, nil))
	out := &fasthttp.Response{}
	_ = rec.WriteResponse(out)

	m := NewMemory(MemoryOptions{})
	done, _ := m.Begin(ctx, "u1", "done", fpA, time.Minute)
	_ = m.Complete(ctx, done.Claim, rec, time.Hour)
	held, _ := m.Begin(ctx, "u1", "held", fpA, time.Minute)

	f := func(name string, fn func()) {
		t.Helper()
		if n := testing.AllocsPerRun(200, fn); n != 0 {
			t.Errorf("%s: %v allocations, want 0", name, n)
		}
	}
	var fp Fingerprint
	f("NewFingerprint", func() { fp = NewFingerprint(req.Header.Method(), req.Header.RequestURI(), req.Body()) })
	f("RequestFingerprint", func() { fp = RequestFingerprint(req) })
	f("AppendResponse", func() { dst = AppendResponse(dst[:0], resp, nil) })
	f("WriteResponse", func() { _ = rec.WriteResponse(out) })
	f("Record.Status", func() { _ = rec.Status() })
	f("Memory.Begin replay", func() { _, _ = m.Begin(ctx, "u1", "done", fpA, time.Minute) })
	f("Memory.Begin in progress", func() { _, _ = m.Begin(ctx, "u1", "held", fpA, time.Minute) })
	f("Memory.Begin reused", func() { _, _ = m.Begin(ctx, "u1", "done", fpB, time.Minute) })
	f("Memory.Abort of a stale claim", func() { _ = m.Abort(ctx, Claim{Scope: "u1", Key: "held", Fingerprint: fpA}) })
	f("Memory.Stats", func() { _ = m.Stats() })
	_, _ = fp, held
}
