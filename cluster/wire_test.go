package cluster

import (
	"reflect"
	"strconv"
	"testing"
	"time"
)

func TestEntryRoundTrip(t *testing.T) {
	f := func(e entry) {
		t.Helper()
		b := appendEntry(nil, &e)
		got, err := decodeEntry(b)
		if err != nil {
			t.Fatalf("decode %+v: %v", e, err)
		}
		if e.deleted {
			e.value = nil
		} else if e.value == nil {
			e.value = []byte{}
		}
		if !reflect.DeepEqual(got, e) {
			t.Errorf("round trip: got %+v, want %+v", got, e)
		}
		for i := range b { // every truncation fails cleanly
			if _, err := decodeEntry(b[:i]); err == nil {
				t.Errorf("truncated to %d of %d bytes: no error", i, len(b))
			}
		}
		if _, err := decodeEntry(append(b, 0)); err == nil {
			t.Error("trailing byte accepted")
		}
	}
	f(entry{kind: "ban", key: "ip:203.0.113.7", origin: "edge-1", value: []byte("auto"), version: 1 << 40, expires: 1700000000000})
	f(entry{kind: "purge", key: "url:/a?b=c", origin: "n", version: 1})
	f(entry{kind: "seckill", key: "item:42", origin: "edge-2", version: 7, deleted: true, expires: 5})
	f(entry{kind: "k", key: "k", origin: "", value: make([]byte, 1000), version: ^uint64(0)})
}

func TestDecodeRejects(t *testing.T) {
	f := func(name string, b []byte) {
		t.Helper()
		if _, err := decodeEntry(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	good := appendEntry(nil, &entry{kind: "ban", key: "k", origin: "o", value: []byte("v"), version: 1})
	f("empty", nil)
	f("state type", append([]byte{msgState}, good[1:]...))
	f("empty kind", appendEntry(nil, &entry{key: "k", version: 1}))
	f("empty key", appendEntry(nil, &entry{kind: "ban", version: 1}))
	long := make([]byte, MaxKeyLen+1)
	for i := range long {
		long[i] = 'k'
	}
	f("long key", appendEntry(nil, &entry{kind: "ban", key: string(long), version: 1}))
	if err := decodeState([]byte{msgState, 5}, func(entry) {}); err == nil {
		t.Error("state claiming 5 entries with none: accepted")
	}
}

func TestLastWriterWins(t *testing.T) {
	f := func(a, b entry, want bool) {
		t.Helper()
		if got := a.newer(&b); got != want {
			t.Errorf("%+v newer than %+v = %v, want %v", a, b, got, want)
		}
	}
	f(entry{version: 2, origin: "a"}, entry{version: 1, origin: "z"}, true)
	f(entry{version: 1, origin: "z"}, entry{version: 2, origin: "a"}, false)
	f(entry{version: 2, origin: "b"}, entry{version: 2, origin: "a"}, true)
	f(entry{version: 2, origin: "a"}, entry{version: 2, origin: "a"}, false)
}

func TestClockIsMonotonicAndObserves(t *testing.T) {
	var c hlc
	now := time.UnixMilli(1_700_000_000_000)
	a, b := c.next(now), c.next(now)
	if b <= a || a>>16 != uint64(now.UnixMilli()) {
		t.Fatalf("versions %x then %x", a, b)
	}
	ahead := uint64(now.Add(time.Hour).UnixMilli()) << 16
	c.observe(ahead)
	if v := c.next(now); v <= ahead {
		t.Errorf("after observing %x, next is %x", ahead, v)
	}
	if v := c.next(now.Add(2 * time.Hour)); v>>16 != uint64(now.Add(2*time.Hour).UnixMilli()) {
		t.Errorf("clock does not follow wall time: %x", v)
	}
}

func newStore(maxPer int) *store {
	return &store{kinds: map[string]map[string]*entry{}, maxKinds: 4, maxPer: func(string) int { return maxPer }}
}

func TestStoreEvictsTombstonesThenSoonestExpiry(t *testing.T) {
	s := newStore(3)
	const now = 1000
	put := func(key string, expires int64, deleted bool) {
		t.Helper()
		if ok, _, err := s.apply(&entry{kind: "ban", key: key, version: now, expires: expires, deleted: deleted}, now); !ok || err != nil {
			t.Fatalf("apply %s: %v %v", key, ok, err)
		}
	}
	keys := func() []string {
		var ks []string
		for k := range s.kinds["ban"] {
			ks = append(ks, k)
		}
		return ks
	}
	put("forever", 0, false)
	put("soon", now+10, false)
	put("tomb", now+10000, true)
	put("new1", now+500, false) // evicts the tombstone
	if _, ok := s.kinds["ban"]["tomb"]; ok || len(s.kinds["ban"]) != 3 {
		t.Fatalf("after new1: %v", keys())
	}
	put("new2", now+500, false) // evicts the entry expiring soonest
	if _, ok := s.kinds["ban"]["soon"]; ok || len(s.kinds["ban"]) != 3 {
		t.Fatalf("after new2: %v", keys())
	}
	if s.evicted.Load() != 2 {
		t.Errorf("evicted %d, want 2", s.evicted.Load())
	}
	// An expired entry is dropped instead of evicting a live one.
	if ok, _, _ := s.apply(&entry{kind: "ban", key: "late", version: now, expires: now - 1}, now); ok {
		t.Error("an already expired entry was stored")
	}
	gone := s.sweep(now + 600)
	if len(gone) != 2 || len(s.kinds["ban"]) != 1 {
		t.Errorf("sweep dropped %d, kept %v", len(gone), keys())
	}
}

func TestStateRespectsMaxBytesAndPutsLiveFirst(t *testing.T) {
	s := newStore(1000)
	for i := range 50 {
		s.apply(&entry{kind: "ban", key: "k" + strconv.Itoa(i), version: 1, value: make([]byte, 40)}, 0)
		s.apply(&entry{kind: "ban", key: "t" + strconv.Itoa(i), version: 1, deleted: true}, 0)
	}
	decode := func(b []byte) (live, dead int) {
		t.Helper()
		if err := decodeState(b, func(e entry) {
			if e.deleted {
				dead++
			} else {
				live++
			}
		}); err != nil {
			t.Fatal(err)
		}
		return live, dead
	}
	if live, dead := decode(s.appendState(nil, 1<<20, 0)); live != 50 || dead != 50 {
		t.Errorf("full state: %d live, %d tombstones", live, dead)
	}
	b := s.appendState(nil, 1000, 0)
	live, dead := decode(b)
	if len(b) > 1000+4 || live == 0 || live >= 50 || dead != 0 {
		t.Errorf("1000-byte state: %d bytes, %d live, %d tombstones", len(b), live, dead)
	}
}

// FuzzDecode: arbitrary bytes never panic the decoders, and whatever decodes
// re-encodes to something that decodes the same.
func FuzzDecode(f *testing.F) {
	f.Add(appendEntry(nil, &entry{kind: "ban", key: "ip:1.2.3.4", origin: "edge-1", value: []byte("x"), version: 99, expires: 12345}))
	f.Add(appendEntry(nil, &entry{kind: "seckill", key: "item", origin: "o", deleted: true, version: 1}))
	s := newStore(10)
	s.apply(&entry{kind: "ban", key: "k", version: 1, value: []byte("v")}, 0)
	f.Add(s.appendState(nil, 1<<20, 0))
	f.Fuzz(func(t *testing.T, b []byte) {
		if e, err := decodeEntry(b); err == nil {
			again, err := decodeEntry(appendEntry(nil, &e))
			if err != nil || !reflect.DeepEqual(again, e) {
				t.Fatalf("re-encoding %+v: %+v, %v", e, again, err)
			}
		}
		_ = decodeState(b, func(entry) {})
	})
}
