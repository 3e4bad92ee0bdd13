package h3

import (
	"bytes"
	"testing"

	"github.com/edge-gw/edge/h2"
	"github.com/quic-go/qpack"
	"github.com/valyala/fasthttp"
)

// FuzzFieldSection: a request's QPACK field section, as a client's HEADERS frame
// carries it. Decoding never panics; what decodes re-encodes (appendField) to a section
// that decodes to the same fields; a section the request checks accept gives a request
// with a method, an origin-form or "*" target, and no connection-specific field.
func FuzzFieldSection(f *testing.F) {
	for _, kv := range [][]string{
		{":method", "GET", ":scheme", "https", ":authority", "shop.example", ":path", "/item/42?x=1"},
		{":method", "POST", ":scheme", "https", ":path", "/o", "cookie", "a=1", "cookie", "b=2", "content-length", "3"},
		{":method", "CONNECT", ":authority", "x:443"},
		{":method", "GET", ":scheme", "http", ":path", "/", "host", "h:80", "te", "trailers", "x-edge-protocol", "z"},
		{":method", "GET", ":path", "/", "connection", "close", "Upper", "1"},
	} {
		var hb bytes.Buffer
		enc := qpack.NewEncoder(&hb)
		for i := 0; i+1 < len(kv); i += 2 {
			enc.WriteField(qpack.HeaderField{Name: kv[i], Value: kv[i+1]})
		}
		f.Add(hb.Bytes())
	}
	f.Add([]byte{0, 0, 0xd1, 0x5f, 0x1d, 0x03, 'a', 'b', 'c'})
	f.Add([]byte{0, 0, 0x27, 0x03, 'a', 'b', 'c', 'd', 0x81, 0xff})
	cfg := Config{}.withDefaults()
	f.Fuzz(func(t *testing.T, section []byte) {
		var d fieldDecoder
		var got [][2]string
		if d.decode(section, func(n, v []byte) { got = append(got, [2]string{string(n), string(v)}) }) != nil {
			return
		}
		re := []byte{0, 0}
		for _, kv := range got {
			re = appendField(re, []byte(kv[0]), []byte(kv[1]))
		}
		var again [][2]string
		var d2 fieldDecoder
		if err := d2.decode(re, func(n, v []byte) { again = append(again, [2]string{string(n), string(v)}) }); err != nil {
			t.Fatalf("re-encoded %q does not decode: %v", got, err)
		}
		if len(again) != len(got) {
			t.Fatalf("re-encoded %q decodes to %q", got, again)
		}
		for i := range got {
			if got[i] != again[i] {
				t.Fatalf("field %d: %q re-encoded decodes to %q", i, got[i], again[i])
			}
		}
		var req fasthttp.Request
		var fs fields
		fs.reset(&req.Header)
		for _, kv := range got {
			fs.add([]byte(kv[0]), []byte(kv[1]))
		}
		if status, code := fs.finish(&cfg); status != 0 || code != 0 {
			return
		}
		uri := req.Header.RequestURI()
		if len(req.Header.Method()) == 0 || len(uri) == 0 || uri[0] != '/' && string(uri) != "*" {
			t.Fatalf("accepted %q as method %q target %q", got, req.Header.Method(), uri)
		}
		for k, v := range req.Header.All() {
			name := bytes.ToLower(k)
			if h2.ConnectionSpecific(string(name), string(v)) {
				t.Fatalf("accepted %q with the connection-specific %s: %s", got, k, v)
			}
		}
	})
}
