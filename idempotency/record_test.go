package idempotency

import (
	"bufio"
	"bytes"
	"errors"
	"testing"

	"github.com/valyala/fasthttp"
)

func TestRecordEncoding(t *testing.T) {
	f := func(status int, headers [][2]string, body string) {
		t.Helper()
		rec := AppendRecordStart(nil, status)
		for _, h := range headers {
			rec = AppendRecordHeader(rec, []byte(h[0]), []byte(h[1]))
		}
		rec = AppendRecordBody(rec, []byte(body))
		r := Record(rec)
		if !r.Valid() || r.Status() != status || string(r.Body()) != body {
			t.Fatalf("record %q: valid %v status %d body %q", rec, r.Valid(), r.Status(), r.Body())
		}
		var got [][2]string
		for k, v := range r.Headers() {
			got = append(got, [2]string{string(k), string(v)})
		}
		var want [][2]string
		for _, h := range headers {
			if h[0] != "" {
				want = append(want, h)
			}
		}
		if len(got) != len(want) {
			t.Fatalf("headers %q, want %q", got, want)
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("headers %q, want %q", got, want)
			}
		}
	}
	f(200, nil, "")
	f(201, [][2]string{{"Content-Type", "application/json"}, {"X-A", ""}, {"", "skipped"}}, `{"ok":true}`)
	f(999, [][2]string{{"X-Long", string(bytes.Repeat([]byte("v"), 300))}}, "\x00\x01binary")
	f(100, [][2]string{{"Vary", "a"}, {"Vary", "b"}}, string(bytes.Repeat([]byte("b"), 1<<16)))

	// The encoding is compact: 4 bytes plus 2 per short header.
	rec := AppendRecordBody(AppendRecordHeader(AppendRecordStart(nil, 200), []byte("ETag"), []byte(`"1"`)), []byte("body"))
	if len(rec) != 4+2+4+3+4 {
		t.Fatalf("record of %d bytes: %q", len(rec), rec)
	}

	for _, bad := range []string{"", "\x01\x00", "\x02\x00\xc8\x00", "\x01\x00\xc8", "\x01\x00\xc8\x05abc", "\x01\x00\xc8\x01a\x09b\x00"} {
		r := Record(bad)
		if r.Valid() || r.Status() != 0 || r.Body() != nil {
			t.Fatalf("corrupt record %q parses", bad)
		}
		resp := fasthttp.AcquireResponse()
		resp.SetStatusCode(418)
		if err := r.WriteResponse(resp); !errors.Is(err, ErrCorrupt) || resp.StatusCode() != 418 {
			t.Fatalf("WriteResponse of %q: %v, status %d", bad, err, resp.StatusCode())
		}
		fasthttp.ReleaseResponse(resp)
	}
}

// parseResponse reads a response as the client (or the proxy's HostClient) gets it.
func parseResponse(t *testing.T, raw string) *fasthttp.Response {
	t.Helper()
	resp := &fasthttp.Response{}
	if err := resp.Read(bufio.NewReader(bytes.NewBufferString(raw))); err != nil {
		t.Fatalf("cannot parse %q: %v", raw, err)
	}
	return resp
}

func TestAppendResponseHeaders(t *testing.T) {
	resp := parseResponse(t, "HTTP/1.1 201 Created\r\n"+
		"Content-Type: application/json\r\n"+
		"Content-Encoding: gzip\r\n"+
		"Location: /orders/42\r\n"+
		"ETag: \"v1\"\r\n"+
		"X-Order-Id: 42\r\n"+
		"Cache-Control: no-store\r\n"+
		"Connection: keep-alive, X-Hop\r\n"+
		"X-Hop: dropped\r\n"+
		"Keep-Alive: timeout=5\r\n"+
		"Proxy-Authenticate: Basic\r\n"+
		"Upgrade: h2c\r\n"+
		"Date: Mon, 01 Jan 2024 00:00:00 GMT\r\n"+
		"Set-Cookie: session=secret\r\n"+
		"Content-Length: 6\r\n"+
		"\r\n"+
		"gzbody")
	got := func(rec Record) string {
		var b bytes.Buffer
		for k, v := range rec.Headers() {
			b.WriteString(string(k) + ": " + string(v) + "\n")
		}
		return b.String()
	}
	rec := Record(AppendResponse(nil, resp, nil))
	want := "Content-Type: application/json\n" +
		"Content-Encoding: gzip\n" +
		"Location: /orders/42\n" +
		"Etag: \"v1\"\n" +
		"X-Order-Id: 42\n" +
		"Cache-Control: no-store\n"
	if rec.Status() != 201 || string(rec.Body()) != "gzbody" || got(rec) != want {
		t.Fatalf("record: status %d body %q headers:\n%s\nwant:\n%s", rec.Status(), rec.Body(), got(rec), want)
	}
	// The caller's choice applies to end-to-end headers only.
	rec = Record(AppendResponse(nil, resp, func(name []byte) bool { return equalFold(name, "Location") || equalFold(name, "X-Hop") }))
	if got(rec) != "Location: /orders/42\n" {
		t.Fatalf("with a custom choice:\n%s", got(rec))
	}
	// Appends to dst.
	if rec := AppendResponse([]byte("prefix"), resp, nil); !bytes.HasPrefix(rec, []byte("prefix")) || !Record(rec[6:]).Valid() {
		t.Fatalf("AppendResponse does not append: %q", rec)
	}
}

func TestReplayByteForByte(t *testing.T) {
	// What the origin sent, as the edge forwarded it the first time, minus what is never
	// replayed (hop-by-hop headers, Set-Cookie and Date, which fasthttp writes anew).
	resp := parseResponse(t, "HTTP/1.1 200 OK\r\n"+
		"Content-Type: text/html; charset=utf-8\r\n"+
		"Server: origin\r\n"+
		"Vary: Accept\r\n"+
		"Vary: Cookie\r\n"+
		"X-Empty: \r\n"+
		"Content-Length: 11\r\n"+
		"\r\n"+
		"\x00<p>hi</p>\xff")
	first := resp.String()
	rec := Record(AppendResponse(nil, resp, nil))
	replayed := &fasthttp.Response{}
	replayed.SetStatusCode(500)
	replayed.Header.Set("X-Stale", "from an earlier use")
	replayed.SetBodyString("stale")
	if err := rec.WriteResponse(replayed); err != nil {
		t.Fatal(err)
	}
	if got := replayed.String(); got != first {
		t.Fatalf("replay differs:\n%q\nfirst answer:\n%q", got, first)
	}
}

func TestFingerprint(t *testing.T) {
	base := NewFingerprint([]byte("POST"), []byte("/orders?a=1"), []byte("body"))
	same := NewFingerprint([]byte("POST"), []byte("/orders?a=1"), []byte("body"))
	if base != same {
		t.Fatal("equal requests fingerprint differently")
	}
	for _, other := range []Fingerprint{
		NewFingerprint([]byte("PUT"), []byte("/orders?a=1"), []byte("body")),
		NewFingerprint([]byte("POST"), []byte("/orders?a=2"), []byte("body")),
		NewFingerprint([]byte("POST"), []byte("/orders"), []byte("body")),
		NewFingerprint([]byte("POST"), []byte("/orders?a=1"), []byte("body2")),
		NewFingerprint([]byte("POST"), []byte("/orders?a=1"), nil),
		NewFingerprint([]byte("POST /orders?a=1"), nil, []byte("body")),
	} {
		if other == base {
			t.Fatalf("a different request has the same fingerprint %x", other)
		}
	}
	req := &fasthttp.Request{}
	if err := req.Read(bufio.NewReader(bytes.NewBufferString("POST /orders?a=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody"))); err != nil {
		t.Fatal(err)
	}
	if RequestFingerprint(req) != base {
		t.Fatal("RequestFingerprint differs from NewFingerprint of the same request")
	}
}

// FuzzRecord: any bytes either replay (Valid and WriteResponse agree), with the recorded
// status and body, and read the same once written again, or are refused; none panic.
func FuzzRecord(f *testing.F) {
	f.Add([]byte(testRecord("seed")))
	f.Add([]byte("\x01\x00\xc8\x80\x00body"))
	f.Add([]byte("\x01\x00\xc8\x00"))
	f.Add([]byte("\x01\x00\xc8\x01a\x09b\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := Record(b)
		resp := fasthttp.AcquireResponse()
		defer fasthttp.ReleaseResponse(resp)
		err := r.WriteResponse(resp)
		if r.Valid() != (err == nil) {
			t.Fatalf("Valid %v but WriteResponse: %v", r.Valid(), err)
		}
		if err != nil {
			return
		}
		// Written again with the Append functions, the record reads the same and is no
		// longer (the encoding is minimal; a record may spell a length in more bytes).
		again := AppendRecordStart(nil, r.Status())
		n := 0
		for name, value := range r.Headers() {
			n++
			again = AppendRecordHeader(again, name, value)
		}
		again = AppendRecordBody(again, r.Body())
		if len(again) > len(r) || Record(again).Status() != r.Status() || !bytes.Equal(Record(again).Body(), r.Body()) {
			t.Fatalf("record %q written again as %q", r, again)
		}
		m := 0
		for name, value := range Record(again).Headers() {
			i := 0
			for n2, v2 := range r.Headers() {
				if i == m && (!bytes.Equal(name, n2) || !bytes.Equal(value, v2)) {
					t.Fatalf("header %d: %q: %q written again as %q: %q", m, n2, v2, name, value)
				}
				i++
			}
			m++
		}
		if m != n {
			t.Fatalf("%d headers written again as %d", n, m)
		}
		if r.Status() != resp.StatusCode() && r.Status() >= 100 && r.Status() < 1000 {
			t.Fatalf("status %d replayed as %d", r.Status(), resp.StatusCode())
		}
		if !bytes.Equal(resp.Body(), r.Body()) {
			t.Fatalf("body %q replayed as %q", r.Body(), resp.Body())
		}
	})
}
