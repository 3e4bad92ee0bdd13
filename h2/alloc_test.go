//go:build !race

package h2

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// benchClient is a frame-level client that allocates nothing per request: its request
// is one pre-encoded HEADERS frame whose header block refers only to HPACK table
// entries, with the stream id patched in place.
type benchClient struct {
	c   net.Conn
	req []byte
	id  uint32
	hdr [9]byte
	buf []byte
}

func newBenchClient(tb testing.TB, addr, path string) *benchClient {
	tb.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	var eb bytes.Buffer
	enc := hpack.NewEncoder(&eb)
	block := func() []byte {
		eb.Reset()
		for _, f := range []hpack.HeaderField{{Name: ":method", Value: "GET"}, {Name: ":scheme", Value: "http"},
			{Name: ":path", Value: path}, {Name: ":authority", Value: "example.com"}, {Name: "user-agent", Value: "bench"}} {
			enc.WriteField(f)
		}
		return bytes.Clone(eb.Bytes())
	}
	var out bytes.Buffer
	fr := http2.NewFramer(&out, nil)
	out.WriteString(ClientPreface)
	fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 30})
	fr.WriteWindowUpdate(0, 1<<30)
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(), EndStream: true, EndHeaders: true})
	if _, err := c.Write(out.Bytes()); err != nil {
		tb.Fatal(err)
	}
	bc := &benchClient{c: c, id: 1, buf: make([]byte, 1<<16)}
	out.Reset()
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: block(), EndStream: true, EndHeaders: true})
	bc.req = bytes.Clone(out.Bytes())
	bc.wait(tb)
	return bc
}

var settingsAck = []byte{0, 0, 0, byte(http2.FrameSettings), byte(http2.FlagSettingsAck), 0, 0, 0, 0}

// wait reads frames until the current stream ends.
func (bc *benchClient) wait(tb testing.TB) {
	for {
		if _, err := io.ReadFull(bc.c, bc.hdr[:]); err != nil {
			tb.Fatal(err)
		}
		n := int(bc.hdr[0])<<16 | int(bc.hdr[1])<<8 | int(bc.hdr[2])
		typ, flags := http2.FrameType(bc.hdr[3]), http2.Flags(bc.hdr[4])
		id := binary.BigEndian.Uint32(bc.hdr[5:]) & 0x7fffffff
		if _, err := io.ReadFull(bc.c, bc.buf[:n]); err != nil {
			tb.Fatal(err)
		}
		switch {
		case typ == http2.FrameSettings && !flags.Has(http2.FlagSettingsAck):
			bc.c.Write(settingsAck)
		case typ == http2.FrameRSTStream || typ == http2.FrameGoAway:
			tb.Fatalf("%v on stream %d", typ, id)
		case id == bc.id && (typ == http2.FrameData || typ == http2.FrameHeaders) && flags.Has(http2.FlagDataEndStream):
			return
		}
	}
}

// do sends one GET and waits for its answer.
func (bc *benchClient) do(tb testing.TB) {
	bc.id += 2
	binary.BigEndian.PutUint32(bc.req[5:9], bc.id)
	if _, err := bc.c.Write(bc.req); err != nil {
		tb.Fatal(err)
	}
	bc.wait(tb)
}

// TestAllocsPerRequest: a GET on a warm connection, through ServeConn end to end, costs
// the server no allocation. The client allocates nothing, so the process's count is the
// server's.
func TestAllocsPerRequest(t *testing.T) {
	ts := startServer(t, Config{}, nil)
	bc := newBenchClient(t, ts.addr, "/alloc")
	for range 100 {
		bc.do(t)
	}
	allocs := testing.AllocsPerRun(5000, func() { bc.do(t) })
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
	bc := newBenchClient(b, ts.addr, "/alloc")
	for range 100 {
		bc.do(b)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		bc.do(b)
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
