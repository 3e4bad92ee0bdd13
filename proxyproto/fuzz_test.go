package proxyproto

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

// FuzzRead feeds Read any bytes, delivered in reads of any size, and checks that it
// never panics, never reads more than its bound (nor past a version 2 header), agrees
// with Parse, and leaves the bytes after the header intact.
func FuzzRead(f *testing.F) {
	s4, d4 := tcp("192.0.2.1:56324"), tcp("198.51.100.7:443")
	s6, d6 := tcp("[2001:db8::1]:1000"), tcp("[2001:db8::2]:443")
	ssl := cat([]byte{1, 0, 0, 0, 0}, tlv(SSLSubtypeVersion, "TLSv1.3"), tlv(SSLSubtypeCN, "c"))
	for _, seed := range [][]byte{
		AppendV1(nil, s4, d4),
		AppendV1(nil, s6, d6),
		[]byte("PROXY UNKNOWN\r\n"),
		[]byte("PROXY UNKNOWN 1 2 3 4\r\nafter"),
		AppendV2(nil, s4, d4),
		AppendV2(nil, s6, d6, TLV{TLVCRC32C, nil}, TLV{TLVALPN, []byte("h2")}),
		AppendV2(nil, udp("192.0.2.1:53"), udp("198.51.100.7:53"), TLV{TLVUniqueID, []byte("id")}, TLV{TLVSSL, ssl}, TLV{TLVNoop, nil}),
		append(AppendV2Local(nil), "GET / HTTP/1.1\r\n\r\n"...),
		v2(0x21, 0x31, make([]byte, 216)...),
		[]byte("GET / HTTP/1.1\r\n"),
	} {
		f.Add(seed, uint8(0))
		f.Add(seed, uint8(3))
	}
	f.Fuzz(func(t *testing.T, data []byte, chunk uint8) {
		o := Options{MaxSize: 512, Timeout: -1}
		mc := &memConn{data: data, chunk: max(int(chunk), 1)}
		pc, rerr := Read(mc, o)
		if mc.read > o.MaxSize {
			t.Fatalf("Read read %d bytes, over its bound of %d", mc.read, o.MaxSize)
		}
		h, n, perr := Parse(data)
		if perr == nil && h.Version == 2 && n <= o.MaxSize && mc.read != n {
			t.Fatalf("Read read %d bytes of a %d-byte v2 header", mc.read, n)
		}
		if rerr != nil {
			if perr == nil && n <= o.MaxSize {
				t.Fatalf("Read: %v; Parse: ok, %d bytes", rerr, n)
			}
			for _, kind := range []error{ErrInvalid, ErrNotProxy, io.ErrUnexpectedEOF, io.EOF} {
				if errors.Is(perr, kind) && !errors.Is(rerr, kind) && !strings.Contains(rerr.Error(), "over the limit") {
					t.Fatalf("Read: %v; Parse: %v", rerr, perr)
				}
			}
			return
		}
		if perr != nil {
			t.Fatalf("Read ok; Parse: %v", perr)
		}
		if !reflect.DeepEqual(*pc.Header(), h) {
			t.Fatalf("Read: %+v\nParse: %+v", *pc.Header(), h)
		}
		rest, err := io.ReadAll(pc)
		if err != nil || !bytes.Equal(rest, data[n:]) {
			t.Fatalf("after the header: %q, %v; want %q", rest, err, data[n:])
		}
		if h.Version == 1 && !bytes.HasSuffix(data[:n], []byte("\r\n")) || n > max(o.MaxSize, v1Max) {
			t.Fatalf("header of %d bytes: %q", n, data[:n])
		}
	})
}
