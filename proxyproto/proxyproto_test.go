package proxyproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

// v2 builds a version 2 header by hand: the signature, the version/command and
// family/transport bytes, the length of body, body.
func v2(verCmd, famTr byte, body ...byte) []byte {
	b := append([]byte(v2Sig), verCmd, famTr, 0, 0)
	binary.BigEndian.PutUint16(b[14:], uint16(len(body)))
	return append(b, body...)
}

func tlv(t TLVType, v string) []byte {
	return append([]byte{byte(t), byte(len(v) >> 8), byte(len(v))}, v...)
}

func cat(bs ...[]byte) []byte { return bytes.Join(bs, nil) }

// inet4 is the address block 192.0.2.1:56324 → 198.51.100.7:443.
var inet4 = []byte{192, 0, 2, 1, 198, 51, 100, 7, 0xDC, 0x04, 0x01, 0xBB}

// Each header is written, then parsed from bytes and read from a real TCP connection
// with bytes after it: the header decodes as it should, the Conn's RemoteAddr is the
// client (or the real peer), and the bytes after the header come out intact.
func TestRoundTrip(t *testing.T) {
	f := func(name string, hdr []byte, want Header, wantRemote string) {
		t.Helper()
		const after = "GET / HTTP/1.1\r\nHost: shop.example.com\r\n\r\n"
		h, n, err := Parse(append(hdr[:len(hdr):len(hdr)], after...))
		if err != nil || n != len(hdr) {
			t.Errorf("%s: Parse(%q) = %d, %v; want %d, nil", name, hdr, n, err, len(hdr))
			return
		}
		if !reflect.DeepEqual(h, want) {
			t.Errorf("%s: Parse(%q) =\n %+v, want\n %+v", name, hdr, h, want)
		}

		client, server := pair(t)
		go func() {
			client.Write(hdr)
			client.Write([]byte(after))
			client.CloseWrite()
		}()
		pc, err := Read(server, Options{})
		if err != nil {
			t.Errorf("%s: Read: %v", name, err)
			return
		}
		if !reflect.DeepEqual(*pc.Header(), want) {
			t.Errorf("%s: Read header =\n %+v, want\n %+v", name, *pc.Header(), want)
		}
		if wantRemote == "" {
			wantRemote = client.LocalAddr().String()
		}
		if got := pc.RemoteAddr().String(); got != wantRemote {
			t.Errorf("%s: RemoteAddr = %s, want %s", name, got, wantRemote)
		}
		if got := pc.LocalAddr().String(); got != server.LocalAddr().String() {
			t.Errorf("%s: LocalAddr = %s, want the real %s", name, got, server.LocalAddr())
		}
		wantNet := "tcp"
		if want.Transport == TransportDatagram {
			wantNet = "udp"
		}
		if got := pc.RemoteAddr().Network(); got != wantNet {
			t.Errorf("%s: RemoteAddr network %s, want %s", name, got, wantNet)
		}
		rest, err := io.ReadAll(pc)
		if string(rest) != after || err != nil {
			t.Errorf("%s: after the header %q, %v; want %q", name, rest, err, after)
		}
	}
	ap := netip.MustParseAddrPort
	v4 := func(v int, tr Transport) Header {
		return Header{Version: v, Command: CommandProxy, Family: FamilyInet, Transport: tr,
			Source: ap("192.0.2.1:56324"), Destination: ap("198.51.100.7:443")}
	}
	v6 := func(v int, tr Transport) Header {
		return Header{Version: v, Command: CommandProxy, Family: FamilyInet6, Transport: tr,
			Source: ap("[2001:db8::1]:1000"), Destination: ap("[2001:db8::2]:443")}
	}
	src4, dst4 := "192.0.2.1:56324", "198.51.100.7:443"
	src6, dst6 := "[2001:db8::1]:1000", "[2001:db8::2]:443"
	unix := &net.UnixAddr{Name: "/run/edge.sock", Net: "unix"}

	f("v1 TCP4", AppendV1(nil, tcp(src4), tcp(dst4)), v4(1, TransportStream), src4)
	f("v1 TCP6", AppendV1(nil, tcp(src6), tcp(dst6)), v6(1, TransportStream), src6)
	f("v1 IPv4-mapped is TCP4", AppendV1(nil, tcp("[::ffff:192.0.2.1]:56324"), tcp(dst4)), v4(1, TransportStream), src4)
	zoned := &net.TCPAddr{IP: net.ParseIP("2001:db8::1"), Port: 1000, Zone: "eth9"}
	f("v1 zone dropped", AppendV1(nil, zoned, tcp(dst6)), v6(1, TransportStream), src6)
	mixed := v6(1, TransportStream)
	mixed.Source = ap("[::ffff:192.0.2.1]:56324")
	f("v1 IPv4 to IPv6 is TCP6", AppendV1(nil, tcp(src4), tcp(dst6)), mixed, src4)
	unknown := Header{Version: 1, Command: CommandProxy}
	f("v1 UDP is UNKNOWN", AppendV1(nil, udp(src4), udp(dst4)), unknown, "")
	f("v1 UNIX is UNKNOWN", AppendV1(nil, unix, unix), unknown, "")
	f("v1 nil is UNKNOWN", AppendV1(nil, nil, nil), unknown, "")
	f("v1 UNKNOWN with addresses", []byte("PROXY UNKNOWN ffff:f...f ffff:f...f 65535 65535\r\n"), unknown, "")

	f("v2 TCP4", AppendV2(nil, tcp(src4), tcp(dst4)), v4(2, TransportStream), src4)
	f("v2 UDP4", AppendV2(nil, udp(src4), udp(dst4)), v4(2, TransportDatagram), src4)
	f("v2 TCP6", AppendV2(nil, tcp(src6), tcp(dst6)), v6(2, TransportStream), src6)
	f("v2 UDP6", AppendV2(nil, udp(src6), udp(dst6)), v6(2, TransportDatagram), src6)
	f("v2 IPv4-mapped is TCP4", AppendV2(nil, tcp("[::ffff:192.0.2.1]:56324"), tcp("[::ffff:198.51.100.7]:443")), v4(2, TransportStream), src4)
	mixed.Version = 2
	f("v2 IPv4 to IPv6 is TCP6", AppendV2(nil, tcp(src4), tcp(dst6)), mixed, src4)
	unspec := Header{Version: 2, Command: CommandProxy}
	f("v2 UNIX is UNSPEC", AppendV2(nil, unix, unix), unspec, "")
	f("v2 TCP to UDP is UNSPEC", AppendV2(nil, tcp(src4), udp(dst4)), unspec, "")
	f("v2 LOCAL", AppendV2Local(nil), Header{Version: 2, Command: CommandLocal}, "")
	f("v2 LOCAL ignores its protocol block", v2(0x20, 0xFF, 1, 2, 3), Header{Version: 2, Command: CommandLocal}, "")
	f("v2 UNIX stream keeps the peer", v2(0x21, 0x31, make([]byte, 216)...),
		Header{Version: 2, Command: CommandProxy, Family: FamilyUnix, Transport: TransportStream}, "")

	withTLVs := v4(2, TransportStream)
	withTLVs.TLVs = []TLV{{TLVALPN, []byte("h2")}, {TLVAuthority, []byte("shop.example.com")}, {0xE0, []byte{}}}
	f("v2 TLVs", AppendV2(nil, tcp(src4), tcp(dst4), TLV{TLVALPN, []byte("h2")}, TLV{TLVNoop, []byte("pad")},
		TLV{TLVAuthority, []byte("shop.example.com")}, TLV{0xE0, nil}), withTLVs, src4)
}

// A known answer, byte for byte, from the specification's layout.
func TestAppendV2Bytes(t *testing.T) {
	got := AppendV2([]byte("x"), tcp("192.0.2.1:56324"), tcp("198.51.100.7:443"))
	want := append([]byte("x"), v2(0x21, 0x11, inet4...)...)
	if !bytes.Equal(got, want) {
		t.Errorf("AppendV2 = % x\nwant       % x", got, want)
	}
	if got := AppendV2Local(nil); !bytes.Equal(got, v2(0x20, 0x00)) {
		t.Errorf("AppendV2Local = % x", got)
	}
}

// crc32c is CRC-32C computed bit by bit, independent of hash/crc32's tables.
func crc32c(b []byte) uint32 {
	crc := ^uint32(0)
	for _, c := range b {
		crc ^= uint32(c)
		for range 8 {
			if crc&1 != 0 {
				crc = crc>>1 ^ 0x82F63B78
			} else {
				crc >>= 1
			}
		}
	}
	return ^crc
}

func TestTLVs(t *testing.T) {
	if got := crc32c([]byte("123456789")); got != 0xE3069283 {
		t.Fatalf("the test's CRC-32C of the check string = %08x", got)
	}
	ssl := cat([]byte{SSLClientSSL | SSLClientCertConn, 0, 0, 0, 0},
		tlv(SSLSubtypeVersion, "TLSv1.3"), tlv(SSLSubtypeCN, "client.example.com"), tlv(SSLSubtypeCipher, "TLS_AES_128_GCM_SHA256"),
		tlv(SSLSubtypeSigAlg, "SHA256"), tlv(SSLSubtypeKeyAlg, "EC256"), tlv(0x7F, "unknown sub-TLV"))
	id := strings.Repeat("i", 128)
	hdr := AppendV2(nil, tcp("192.0.2.1:56324"), tcp("198.51.100.7:443"),
		TLV{TLVCRC32C, []byte("ignored")}, TLV{TLVALPN, []byte("http/1.1")}, TLV{TLVAuthority, []byte("shop.example.com")},
		TLV{TLVUniqueID, []byte(id)}, TLV{TLVSSL, ssl}, TLV{TLVNetNS, []byte("blue")})

	// The checksum AppendV2 wrote is CRC-32C over the header with its field zeroed.
	at := v2Preamble + inetAddrLen + 3
	zeroed := bytes.Clone(hdr)
	copy(zeroed[at:], zero4[:])
	if got, want := binary.BigEndian.Uint32(hdr[at:]), crc32c(zeroed); got != want {
		t.Fatalf("CRC32C field %08x, want %08x", got, want)
	}

	h, _, err := Parse(hdr)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(h.ALPN()); got != "http/1.1" {
		t.Errorf("ALPN %q", got)
	}
	if got := h.Authority(); got != "shop.example.com" {
		t.Errorf("Authority %q", got)
	}
	if got := string(h.UniqueID()); got != id {
		t.Errorf("UniqueID %q", got)
	}
	if v, ok := h.TLV(TLVNetNS); !ok || string(v) != "blue" {
		t.Errorf("TLV(NETNS) = %q, %v", v, ok)
	}
	s, ok := h.SSL()
	want := SSL{Client: SSLClientSSL | SSLClientCertConn, Version: "TLSv1.3", CN: "client.example.com",
		Cipher: "TLS_AES_128_GCM_SHA256", SigAlg: "SHA256", KeyAlg: "EC256"}
	if !ok || s != want {
		t.Errorf("SSL() = %+v, %v; want %+v", s, ok, want)
	}
	if len(h.TLVs) != 6 || h.TLVs[0].Type != TLVCRC32C {
		t.Errorf("TLVs %+v", h.TLVs)
	}

	// Nothing to find on a header without TLVs.
	h, _, _ = Parse(AppendV2(nil, tcp("192.0.2.1:1"), tcp("192.0.2.2:2")))
	if _, ok := h.SSL(); ok || h.ALPN() != nil || h.Authority() != "" || h.UniqueID() != nil {
		t.Errorf("TLVs found in %+v", h)
	}

	// Any bit flipped after the signature is caught by the checksum, if by nothing else,
	// save in the checksum's own type (which then is no checksum).
	for i := len(v2Sig); i < len(hdr); i++ {
		if i == at-3 {
			continue
		}
		bad := bytes.Clone(hdr)
		bad[i] ^= 0x10
		if _, _, err := Parse(bad); err == nil {
			t.Errorf("byte %d flipped: no error", i)
		}
	}
	bad := bytes.Clone(hdr)
	bad[at] ^= 1
	if _, _, err := Parse(bad); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "CRC32C mismatch") {
		t.Errorf("bad checksum: %v", err)
	}
}

// Every malformed header is rejected with an error that says what is wrong, from
// Parse and from Read alike.
func TestInvalid(t *testing.T) {
	f := func(in []byte, kind error, wantMsg string) {
		t.Helper()
		_, _, err := Parse(in)
		if !errors.Is(err, kind) || err.Error() != wantMsg {
			t.Errorf("Parse(%q):\n got %v\nwant %s", in, err, wantMsg)
		}
		_, err = Read(&memConn{data: in, chunk: len(in)}, Options{})
		if !errors.Is(err, kind) || err.Error() != wantMsg {
			t.Errorf("Read(%q):\n got %v\nwant %s", in, err, wantMsg)
		}
	}
	s := func(s string) []byte { return []byte(s) }
	f(s("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), ErrNotProxy, `proxyproto: not a PROXY protocol header: starts with "GET / HTTP/1.1\r\n"`)
	f(s("\x16\x03\x01\x02\x00\x01"), ErrNotProxy, `proxyproto: not a PROXY protocol header: starts with "\x16\x03\x01\x02\x00\x01"`)
	f(s("PROXY\r\n"), ErrNotProxy, `proxyproto: not a PROXY protocol header: starts with "PROXY\r\n"`)
	f(s("\r\n\r\n\x00\r\nQUIT!"), ErrNotProxy, `proxyproto: not a PROXY protocol header: starts with "\r\n\r\n\x00\r\nQUIT!"`)

	f(s("PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n"), ErrInvalid, `proxyproto: v1 header: protocol "TCP5" is not TCP4, TCP6 or UNKNOWN`)
	f(s("PROXY UNKNOWNX\r\n"), ErrInvalid, `proxyproto: v1 header: protocol "UNKNOWNX" is not TCP4, TCP6 or UNKNOWN`)
	f(s("PROXY \r\n"), ErrInvalid, `proxyproto: v1 header: protocol "" is not TCP4, TCP6 or UNKNOWN`)
	f(s("PROXY TCP4 1.2.3.4 5.6.7.8 80\r\n"), ErrInvalid, `proxyproto: v1 header: TCP4 line has 3 of its 4 fields (source, destination, source port, destination port)`)
	f(s("PROXY TCP4\r\n"), ErrInvalid, `proxyproto: v1 header: TCP4 line has 0 of its 4 fields (source, destination, source port, destination port)`)
	f(s("PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n"), ErrInvalid, `proxyproto: v1 header: empty field 4 in "PROXY TCP4 1.2.3.4  5.6.7.8 1 2" (one space between fields, none at the end)`)
	f(s("PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n"), ErrInvalid, `proxyproto: v1 header: empty field 3 in "PROXY TCP4  1.2.3.4 5.6.7.8 1 2" (one space between fields, none at the end)`)
	f(s("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n"), ErrInvalid, `proxyproto: v1 header: empty field 7 in "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 " (one space between fields, none at the end)`)
	f(s("PROXY TCP4 \r\n"), ErrInvalid, `proxyproto: v1 header: empty field 3 in "PROXY TCP4 " (one space between fields, none at the end)`)
	f(s("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n"), ErrInvalid, `proxyproto: v1 header: field 7 ("3") after the destination port`)
	f(s("PROXY TCP4 ::1 5.6.7.8 1 2\r\n"), ErrInvalid, `proxyproto: v1 header: source address "::1" is not IPv4 (TCP4)`)
	f(s("PROXY TCP6 ::1 5.6.7.8 1 2\r\n"), ErrInvalid, `proxyproto: v1 header: destination address "5.6.7.8" is not IPv6 (TCP6)`)
	f(s("PROXY TCP4 1.2.3.04 5.6.7.8 1 2\r\n"), ErrInvalid, `proxyproto: v1 header: source address "1.2.3.04" is not an IP address`)
	f(s("PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n"), ErrInvalid, `proxyproto: v1 header: source address "fe80::1%eth0" is not an IP address`)
	f(s("PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n"), ErrInvalid, `proxyproto: v1 header: source port "65536" is not a number from 0 to 65535`)
	f(s("PROXY TCP4 1.2.3.4 5.6.7.8 1 -2\r\n"), ErrInvalid, `proxyproto: v1 header: destination port "-2" is not a number from 0 to 65535`)
	f(s("PROXY TCP4 1.2.3.4 5.6.7.8 1 0000080\r\n"), ErrInvalid, `proxyproto: v1 header: destination port "0000080" is not a number from 0 to 65535`)
	f(s("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"), ErrInvalid, `proxyproto: v1 header: line feed without carriage return at byte 30`)
	f(s("PROXY UNKNOWN "+strings.Repeat("x", 100)), ErrInvalid, `proxyproto: v1 header: no CRLF in the first 107 bytes`)
	f(s("PROXY UNKNOWN "+strings.Repeat("x", 92)+"\r\n"), ErrInvalid, `proxyproto: v1 header: no CRLF in the first 107 bytes`)

	f(v2(0x11, 0x11, inet4...), ErrInvalid, `proxyproto: v2 header: version 1 in byte 13 (0x11), want 2`)
	f(v2(0x22, 0x11, inet4...), ErrInvalid, `proxyproto: v2 header: command 2 in byte 13 (0x22) is neither LOCAL (0) nor PROXY (1)`)
	f(v2(0x21, 0x13, inet4...), ErrInvalid, `proxyproto: v2 header: family and transport byte 0x13 is none of UNSPEC (0x00), TCP4 (0x11), UDP4 (0x12), TCP6 (0x21), UDP6 (0x22), UNIX stream (0x31) or datagram (0x32)`)
	f(v2(0x21, 0x41, inet4...), ErrInvalid, `proxyproto: v2 header: family and transport byte 0x41 is none of UNSPEC (0x00), TCP4 (0x11), UDP4 (0x12), TCP6 (0x21), UDP6 (0x22), UNIX stream (0x31) or datagram (0x32)`)
	f(v2(0x21, 0x10, inet4...), ErrInvalid, `proxyproto: v2 header: family and transport byte 0x10 is none of UNSPEC (0x00), TCP4 (0x11), UDP4 (0x12), TCP6 (0x21), UDP6 (0x22), UNIX stream (0x31) or datagram (0x32)`)
	f(v2(0x21, 0x11, inet4[:10]...), ErrInvalid, `proxyproto: v2 header: address length 10 too short for TCP4 (12 bytes)`)
	f(v2(0x21, 0x22, inet4...), ErrInvalid, `proxyproto: v2 header: address length 12 too short for UDP6 (36 bytes)`)
	f(v2(0x21, 0x31, inet4...), ErrInvalid, `proxyproto: v2 header: address length 12 too short for UNIX stream (216 bytes)`)

	tlvs := func(b ...[]byte) []byte { return v2(0x21, 0x11, cat(append([][]byte{inet4}, b...)...)...) }
	f(tlvs([]byte{1, 0}), ErrInvalid, `proxyproto: v2 header: TLV at offset 28: 2 bytes left, a TLV takes at least 3`)
	f(tlvs([]byte{1, 0, 5, 'h', '2'}), ErrInvalid, `proxyproto: v2 header: TLV 0x01 at offset 28: length 5, but 2 bytes left`)
	f(tlvs(tlv(TLVCRC32C, "abc")), ErrInvalid, `proxyproto: v2 header: CRC32C TLV at offset 28 is 3 bytes, want 4`)
	f(tlvs(tlv(TLVUniqueID, strings.Repeat("i", 129))), ErrInvalid, `proxyproto: v2 header: UNIQUE_ID TLV at offset 28 is 129 bytes, at most 128 allowed`)
	f(tlvs(tlv(TLVSSL, "\x01\x00\x00")), ErrInvalid, `proxyproto: v2 header: SSL TLV at offset 28 is 3 bytes, it takes at least 5`)
	f(tlvs(tlv(TLVSSL, "\x01\x00\x00\x00\x00\x21\x00\x09TLS")), ErrInvalid, `proxyproto: v2 header: sub-TLV of the SSL TLV 0x21 at offset 36: length 9, but 3 bytes left`)
	two := AppendV2(nil, tcp("192.0.2.1:1"), tcp("192.0.2.2:2"), TLV{Type: TLVCRC32C}, TLV{Type: TLVCRC32C})
	f(two, ErrInvalid, `proxyproto: v2 header: a second CRC32C TLV at offset 35`)
}

// A header cut at any length is an unexpected end of file (plain end of file before
// its first byte), from Parse, from Read over bytes delivered in pieces, and from Read
// over a real connection.
func TestTruncated(t *testing.T) {
	headers := [][]byte{
		AppendV1(nil, tcp("192.0.2.1:56324"), tcp("198.51.100.7:443")),
		AppendV1(nil, tcp("[2001:db8::1]:1000"), tcp("[2001:db8::2]:443")),
		[]byte("PROXY UNKNOWN\r\n"),
		AppendV2(nil, tcp("[2001:db8::1]:1000"), tcp("[2001:db8::2]:443"), TLV{TLVCRC32C, nil}, TLV{TLVAuthority, []byte("a.example")}),
		AppendV2Local(nil),
	}
	kind := func(k int) error {
		if k == 0 {
			return io.EOF
		}
		return io.ErrUnexpectedEOF
	}
	for _, hdr := range headers {
		for k := range len(hdr) {
			if _, _, err := Parse(hdr[:k]); !errors.Is(err, kind(k)) {
				t.Errorf("Parse(%q): %v", hdr[:k], err)
			}
			for _, chunk := range []int{1, 7, 1000} {
				if _, err := Read(&memConn{data: hdr[:k], chunk: chunk}, Options{}); !errors.Is(err, kind(k)) {
					t.Errorf("Read(%q) in %d-byte reads: %v", hdr[:k], chunk, err)
				}
			}
		}
	}
	for _, hdr := range headers[:4:4] {
		for k := range len(hdr) {
			client, server := pair(t)
			client.Write(hdr[:k])
			client.CloseWrite()
			if _, err := Read(server, Options{}); !errors.Is(err, kind(k)) {
				t.Errorf("Read(%q) over TCP: %v", hdr[:k], err)
			}
			client.Close()
			server.Close()
		}
	}
	_, _, err := Parse(v2(0x21, 0x11, inet4...)[:20])
	if want := "proxyproto: v2 header: cut after 20 of 28 bytes"; err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
}

// Read gives up on a header too long before reading its body, and waits for no byte
// it would not keep: the client here sends only a preamble and holds the connection
// open, so a Read that waited would end in its timeout instead.
func TestOversize(t *testing.T) {
	f := func(o Options, hdr []byte, wantErr string) {
		t.Helper()
		client, server := pair(t)
		client.Write(hdr)
		o.Timeout = 10 * time.Second
		_, err := Read(server, o)
		if wantErr == "" && err != nil || wantErr != "" && (err == nil || err.Error() != wantErr || !errors.Is(err, ErrInvalid)) {
			t.Errorf("Read with %+v: %v, want %s", o, err, wantErr)
		}
	}
	preamble := func(l int) []byte { return v2(0x21, 0x11, make([]byte, l)...)[:v2Preamble] }
	f(Options{}, preamble(5000), "proxyproto: v2 header: length 5000 (5016 bytes with the preamble) over the limit of 4096 bytes")
	f(Options{}, preamble(0xFFFF), "proxyproto: v2 header: length 65535 (65551 bytes with the preamble) over the limit of 4096 bytes")
	f(Options{MaxSize: 300}, preamble(285), "proxyproto: v2 header: length 285 (301 bytes with the preamble) over the limit of 300 bytes")
	f(Options{MaxSize: 300}, v2(0x21, 0x11, cat(inet4, tlv(0xE0, strings.Repeat("x", 269)))...), "")
	f(Options{MaxSize: 1}, v2(0x21, 0x31, make([]byte, 216)...), "") // raised to 232: a UNIX header fits
	f(Options{MaxSize: 1}, v2(0x21, 0x31, make([]byte, 217)...), "proxyproto: v2 header: length 217 (233 bytes with the preamble) over the limit of 232 bytes")
	f(Options{MaxSize: 70000}, v2(0x21, 0x11, cat(inet4, tlv(0xE0, strings.Repeat("x", 0xFFFF-15)))...), "")
	f(Options{}, []byte("PROXY UNKNOWN "+strings.Repeat("x", 93)), "proxyproto: v1 header: no CRLF in the first 107 bytes")
	f(Options{}, []byte("PROXY UNKNOWN "+strings.Repeat("x", 91)+"\r\n"), "") // 107 bytes exactly
}

// A header that does not arrive in time is cut by Options.Timeout; one that does
// leaves the conn without a deadline.
func TestTimeout(t *testing.T) {
	client, server := pair(t)
	client.Write([]byte("PROXY TCP4 192.0.2.1 198"))
	stop := time.AfterFunc(5*time.Second, func() { server.Close() }) // fail, not hang, without a deadline
	defer stop.Stop()
	_, err := Read(server, Options{Timeout: 100 * time.Millisecond})
	if !errors.Is(err, os.ErrDeadlineExceeded) || !strings.Contains(err.Error(), "proxyproto: no whole PROXY header within 100ms (24 bytes read)") {
		t.Errorf("slow header: %v", err)
	}

	client, server = pair(t)
	client.Write(AppendV2Local(nil))
	pc, err := Read(server, Options{Timeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(150 * time.Millisecond) // past the header's deadline: it must be gone
	client.Write([]byte("late"))
	b := make([]byte, 4)
	if _, err := io.ReadFull(pc, b); err != nil || string(b) != "late" {
		t.Errorf("after the header: %q, %v", b, err)
	}

	// A negative timeout leaves the caller's deadline alone.
	_, server = pair(t)
	server.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	_, err = Read(server, Options{Timeout: -1})
	if !errors.Is(err, os.ErrDeadlineExceeded) || !strings.Contains(err.Error(), "proxyproto: reading the PROXY header (0 bytes read)") {
		t.Errorf("caller's deadline: %v", err)
	}
}

// With a protocol in which the server speaks first (MySQL), the client sends the
// header and waits: Read returns on the header alone.
func TestServerSpeaksFirst(t *testing.T) {
	for _, hdr := range [][]byte{
		[]byte("PROXY UNKNOWN\r\n"),
		AppendV1(nil, tcp("192.0.2.1:56324"), tcp("198.51.100.7:3306")),
		AppendV2Local(nil),
		AppendV2(nil, tcp("192.0.2.1:56324"), tcp("198.51.100.7:3306"), TLV{TLVCRC32C, nil}),
	} {
		client, server := pair(t)
		for _, c := range hdr { // one byte a segment, the slowest a header can come
			client.Write([]byte{c})
		}
		pc, err := Read(server, Options{Timeout: 10 * time.Second})
		if err != nil {
			t.Errorf("%q: %v", hdr, err)
			continue
		}
		if len(pc.Pending()) != 0 {
			t.Errorf("%q: pending %q", hdr, pc.Pending())
		}
		pc.Write([]byte("greeting"))
		b := make([]byte, 8)
		if _, err := io.ReadFull(client, b); err != nil || string(b) != "greeting" {
			t.Errorf("client read %q, %v", b, err)
		}
	}
}

// A caller that splices takes Pending, then reads NetConn: together they are the bytes
// after the header. A version 2 header is read exactly, so nothing is pending.
func TestPendingAndNetConn(t *testing.T) {
	f := func(hdr []byte, wantPending string) {
		t.Helper()
		client, server := pair(t)
		client.Write(append(bytes.Clone(hdr), "0123456789abcdefghijklmnopqrstuvwxyz"...))
		client.CloseWrite() // on loopback, all of it is in the socket once Write returns
		pc, err := Read(server, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if string(pc.Pending()) != wantPending {
			t.Errorf("%q: pending %q, want %q", hdr, pc.Pending(), wantPending)
		}
		if pc.NetConn() != net.Conn(server) {
			t.Errorf("NetConn is not the accepted conn")
		}
		rest, _ := io.ReadAll(pc.NetConn())
		if got := string(pc.Pending()) + string(rest); got != "0123456789abcdefghijklmnopqrstuvwxyz" {
			t.Errorf("%q: after the header %q", hdr, got)
		}
	}
	f(AppendV2(nil, tcp("192.0.2.1:1"), tcp("192.0.2.2:2"), TLV{TLVALPN, []byte("h2")}), "")
	f(AppendV2Local(nil), "")
	f([]byte("PROXY UNKNOWN\r\n"), "0")                                                              // the first read takes 16 bytes
	f(AppendV1(nil, tcp("192.0.2.1:1"), tcp("192.0.2.2:2")), "0123456789abcdefghijklmnopqrstuvwxyz") // then up to 107
}

// CloseWrite passes a half-close through to the socket (a tunnel relies on it).
func TestCloseWrite(t *testing.T) {
	client, server := pair(t)
	client.Write(AppendV2Local(nil))
	pc, err := Read(server, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := pc.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(client); len(b) != 0 || err != nil {
		t.Errorf("client after CloseWrite: %q, %v", b, err)
	}
	client.Write([]byte("still open"))
	client.CloseWrite()
	if b, _ := io.ReadAll(pc); string(b) != "still open" {
		t.Errorf("server read %q after its half-close", b)
	}
}
