//go:build !race

package proxyproto

import (
	"net"
	"testing"
)

// Writing a header into a buffer with room allocates nothing: an upstream connection
// pays for its header only the bytes.
func TestAppendZeroAllocs(t *testing.T) {
	s4, d4 := tcp("192.0.2.1:56324"), tcp("198.51.100.7:443")
	s6, d6 := tcp("[2001:db8::1]:1000"), tcp("[2001:db8::2]:443")
	u4, v4 := udp("192.0.2.1:56324"), udp("198.51.100.7:443")
	unix := &net.UnixAddr{Name: "/run/edge.sock", Net: "unix"}
	tlvs := []TLV{{TLVCRC32C, nil}, {TLVAuthority, []byte("shop.example.com")}}
	buf := make([]byte, 0, 512)
	f := func(name string, fn func()) {
		t.Helper()
		if n := testing.AllocsPerRun(100, fn); n != 0 {
			t.Errorf("%s: %v allocations, want 0", name, n)
		}
	}
	f("AppendV1 TCP4", func() { buf = AppendV1(buf[:0], s4, d4) })
	f("AppendV1 TCP6", func() { buf = AppendV1(buf[:0], s6, d6) })
	f("AppendV1 UNKNOWN", func() { buf = AppendV1(buf[:0], unix, unix) })
	f("AppendV2 TCP4", func() { buf = AppendV2(buf[:0], s4, d4) })
	f("AppendV2 TCP6 with TLVs", func() { buf = AppendV2(buf[:0], s6, d6, tlvs...) })
	f("AppendV2 UDP4", func() { buf = AppendV2(buf[:0], u4, v4) })
	f("AppendV2Local", func() { buf = AppendV2Local(buf[:0]) })
	hdr := AppendV2(nil, s6, d6)
	f("Parse v2 without TLVs", func() { Parse(hdr) })
}
