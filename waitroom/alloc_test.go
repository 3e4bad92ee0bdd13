//go:build !race

package waitroom

import (
	"testing"
	"time"
)

// TestCheckDoesNotAllocate: the admitted path (a valid cookie) and a poll answered from
// the node's memory cost no allocation.
func TestCheckDoesNotAllocate(t *testing.T) {
	r := nodes(t, 1, "alloc", NewMemoryStore(), options(1000), nil)[0]
	in := newUser("in", 1)
	waitFor(t, 5*time.Second, "admission", func() bool { return in.poll(r).Admitted })
	if err := r.SetPaused(true); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "the pause", func() bool { return r.Stats().Paused })
	w := newUser("", 2)
	w.poll(r)
	kw := newUser("k", 3)
	kw.poll(r)
	f := func(name string, u *user, admitted bool) {
		t.Helper()
		v := Visit{Key: u.key, Client: u.ip, AdmitCookie: u.admit, PlaceCookie: u.place}
		var out Verdict
		n := testing.AllocsPerRun(1000, func() {
			v.Now = time.Now()
			r.Check(&v, &out)
		})
		if out.Admitted != admitted || out.Err != nil {
			t.Fatalf("%s: %+v", name, out)
		}
		t.Logf("%s: %.1f allocations per Check", name, n)
		if n != 0 {
			t.Fatalf("%s allocates %.1f times per Check, want 0", name, n)
		}
	}
	f("admitted by cookie", in, true)
	f("waiting, place cookie", w, false)
	f("waiting, key and place cookie", kw, false)
	if n := testing.AllocsPerRun(1000, func() { r.Observe(time.Millisecond, 200, false) }); n != 0 {
		t.Fatalf("Observe allocates %.1f times, want 0", n)
	}
}
