package h2

import (
	"strings"
	"testing"

	"golang.org/x/net/http2/hpack"
)

// TestEncode: what the encoder writes decodes to the same fields with a fresh decoder,
// and leaves the decoder's dynamic table empty (nothing is indexed).
func TestEncode(t *testing.T) {
	f := func(status int, wantStatus string, kv ...string) {
		t.Helper()
		b := appendStatus(nil, status)
		for i := 0; i+1 < len(kv); i += 2 {
			b = appendField(b, []byte(kv[i]), []byte(kv[i+1]))
		}
		var got []hpack.HeaderField
		d := hpack.NewDecoder(4096, func(f hpack.HeaderField) { got = append(got, f) })
		if _, err := d.Write(b); err != nil {
			t.Fatalf("status %d %q: %v", status, kv, err)
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		if len(got) != 1+len(kv)/2 || got[0].Name != ":status" || got[0].Value != wantStatus {
			t.Fatalf("status %d: got %v", status, got)
		}
		for i, f := range got[1:] {
			if f.Name != kv[2*i] || f.Value != kv[2*i+1] {
				t.Errorf("field %d: %q: %q, want %q: %q", i, f.Name, f.Value, kv[2*i], kv[2*i+1])
			}
		}
		// An indexed reference to the first dynamic entry must fail: nothing was added.
		if _, err := d.Write([]byte{0x80 | 62}); err == nil {
			t.Errorf("status %d: the encoder added to the dynamic table", status)
		}
	}
	f(200, "200")
	f(204, "204", "server", "edge")
	f(404, "404", "content-type", "text/plain", "set-cookie", "a=1", "set-cookie", "b=2")
	f(418, "418", "x-custom", "value", "x-empty", "")
	f(503, "503", "retry-after", "1", "x-long", strings.Repeat("abc", 100), "x-binary-ish", "\x7f~|")
	f(0, "500")

	b := appendContentLength(nil, 1234567)
	b = appendDate(b)
	fields, err := hpack.NewDecoder(4096, nil).DecodeFull(b)
	if err != nil || len(fields) != 2 || fields[0].Name != "content-length" || fields[0].Value != "1234567" ||
		fields[1].Name != "date" || !strings.HasSuffix(fields[1].Value, " GMT") {
		t.Errorf("content-length and date: %v %v", fields, err)
	}
}
