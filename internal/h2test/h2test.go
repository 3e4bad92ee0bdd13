// Package h2test is a frame-level HTTP/2 client for allocation tests and benchmarks:
// it allocates nothing per request, so a process's allocation count around its
// requests is the server's.
package h2test

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Client sends one GET at a time on one HTTP/2 connection (prior knowledge, no TLS).
// Its request is one pre-encoded HEADERS frame whose header block refers only to
// HPACK table entries after the first request, with the stream id patched in place.
// Not safe for concurrent use.
type Client struct {
	c   net.Conn
	req []byte
	id  uint32
	hdr [9]byte
	buf []byte
	// First is the first byte of the last answer's header block: 0x88 is the HPACK
	// static entry ":status: 200" (servers that index nothing for :status send it).
	First byte
}

// Dial connects to addr, sends the preface with windows large enough never to need a
// WINDOW_UPDATE, and makes a first GET of path (which fills the HPACK tables).
func Dial(tb testing.TB, addr, path string) *Client {
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
			{Name: ":path", Value: path}, {Name: ":authority", Value: "example.com"}, {Name: "user-agent", Value: "h2test"}} {
			enc.WriteField(f)
		}
		return bytes.Clone(eb.Bytes())
	}
	var out bytes.Buffer
	fr := http2.NewFramer(&out, nil)
	out.WriteString(http2.ClientPreface)
	fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 30})
	fr.WriteWindowUpdate(0, 1<<30)
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(), EndStream: true, EndHeaders: true})
	if _, err := c.Write(out.Bytes()); err != nil {
		tb.Fatal(err)
	}
	hc := &Client{c: c, id: 1, buf: make([]byte, 1<<16)}
	out.Reset()
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: block(), EndStream: true, EndHeaders: true})
	hc.req = bytes.Clone(out.Bytes())
	hc.wait(tb)
	return hc
}

var settingsAck = []byte{0, 0, 0, byte(http2.FrameSettings), byte(http2.FlagSettingsAck), 0, 0, 0, 0}

// wait reads frames until the current stream ends; it fails tb on a reset or GOAWAY.
func (hc *Client) wait(tb testing.TB) {
	for {
		if _, err := io.ReadFull(hc.c, hc.hdr[:]); err != nil {
			tb.Fatal(err)
		}
		n := int(hc.hdr[0])<<16 | int(hc.hdr[1])<<8 | int(hc.hdr[2])
		typ, flags := http2.FrameType(hc.hdr[3]), http2.Flags(hc.hdr[4])
		id := binary.BigEndian.Uint32(hc.hdr[5:]) & 0x7fffffff
		if _, err := io.ReadFull(hc.c, hc.buf[:n]); err != nil {
			tb.Fatal(err)
		}
		switch {
		case typ == http2.FrameSettings && !flags.Has(http2.FlagSettingsAck):
			hc.c.Write(settingsAck)
		case typ == http2.FrameRSTStream || typ == http2.FrameGoAway:
			tb.Fatalf("%v on stream %d", typ, id)
		case id == hc.id && typ == http2.FrameHeaders:
			if n > 0 {
				hc.First = hc.buf[0]
			}
			if flags.Has(http2.FlagHeadersEndStream) {
				return
			}
		case id == hc.id && typ == http2.FrameData && flags.Has(http2.FlagDataEndStream):
			return
		}
	}
}

// Do sends one GET and waits for its answer.
func (hc *Client) Do(tb testing.TB) {
	hc.id += 2
	binary.BigEndian.PutUint32(hc.req[5:9], hc.id)
	if _, err := hc.c.Write(hc.req); err != nil {
		tb.Fatal(err)
	}
	hc.wait(tb)
}
