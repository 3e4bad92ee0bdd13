package cache

import "testing"

func TestParseRange(t *testing.T) {
	f := func(v string, size, start, end int, kind RangeKind) {
		t.Helper()
		s, e, k := ParseRange([]byte(v), size)
		if k != kind || (k == RangeSingle && (s != start || e != end)) {
			t.Errorf("ParseRange(%q, %d) = %d-%d kind %d, want %d-%d kind %d", v, size, s, e, k, start, end, kind)
		}
	}
	f("bytes=0-9", 100, 0, 9, RangeSingle)
	f("bytes=10-19", 100, 10, 19, RangeSingle)
	f("Bytes = 10-19 ", 100, 0, 0, RangeNone) // no space allowed before '='
	f("BYTES=10-19", 100, 10, 19, RangeSingle)
	f("bytes=90-", 100, 90, 99, RangeSingle)
	f("bytes=-10", 100, 90, 99, RangeSingle)
	f("bytes=-1000", 100, 0, 99, RangeSingle) // longer suffix: the whole body
	f("bytes=50-1000", 100, 50, 99, RangeSingle)
	f("bytes=99-99", 100, 99, 99, RangeSingle)
	f("bytes=100-", 100, 0, 0, RangeUnsatisfiable)
	f("bytes=100-200", 100, 0, 0, RangeUnsatisfiable)
	f("bytes=-0", 100, 0, 0, RangeUnsatisfiable)
	f("bytes=0-1,5-6", 100, 0, 0, RangeMulti)
	f("bytes=0-1, 200-", 100, 0, 0, RangeMulti)
	f("bytes=9-0", 100, 0, 0, RangeNone) // invalid: ignored
	f("bytes=a-b", 100, 0, 0, RangeNone)
	f("bytes=-", 100, 0, 0, RangeNone)
	f("bytes=5", 100, 0, 0, RangeNone)
	f("items=0-5", 100, 0, 0, RangeNone)
	f("", 100, 0, 0, RangeNone)
	f("bytes=0-5", 0, 0, 0, RangeNone)
	f("bytes=99999999999999999999999-", 100, 0, 0, RangeUnsatisfiable)
}

func TestAppendContentRange(t *testing.T) {
	if got := string(AppendContentRange(nil, 0, 9, 100)); got != "bytes 0-9/100" {
		t.Errorf("206: %q", got)
	}
	if got := string(AppendContentRange(nil, -1, 0, 100)); got != "bytes */100" {
		t.Errorf("416: %q", got)
	}
}

func TestIfRangeHolds(t *testing.T) {
	const lm = "Wed, 02 Jan 2030 00:00:00 GMT"
	f := func(ifRange, etag string, want bool) {
		t.Helper()
		if got := IfRangeHolds([]byte(ifRange), []byte(etag), []byte(lm)); got != want {
			t.Errorf("IfRangeHolds(%q, etag %q) = %v, want %v", ifRange, etag, got, want)
		}
	}
	f(`"v1"`, `"v1"`, true)
	f(`"v2"`, `"v1"`, false)
	f(`W/"v1"`, `W/"v1"`, false) // strong comparison: weak tags never match
	f(`"v1"`, `W/"v1"`, false)
	f(`"v1"`, ``, false)
	f(lm, `"v1"`, true)
	f("Thu, 03 Jan 2030 00:00:00 GMT", `"v1"`, false)
	f("", `"v1"`, false)
}

func TestUnchangedStar(t *testing.T) {
	// "*" matches any current representation, with or without an ETag.
	if !Unchanged([]byte("*"), nil, nil, nil) {
		t.Error(`If-None-Match: * without a stored ETag: not 304`)
	}
	if Unchanged([]byte(`"a"`), nil, nil, nil) {
		t.Error(`If-None-Match: "a" without a stored ETag: 304`)
	}
}
