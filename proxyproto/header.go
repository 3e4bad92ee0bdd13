package proxyproto

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"net/netip"
	"strconv"
)

// Header is a decoded PROXY protocol header. Its TLV values alias the bytes it was
// decoded from (the *Conn's buffer, or Parse's input): they are valid as long as those
// are and must not be modified.
type Header struct {
	// Version is 1 (the text line) or 2 (binary).
	Version int
	// Command is CommandProxy, or CommandLocal for a v2 health check. A v1 header is
	// always CommandProxy (UNKNOWN included).
	Command Command
	// Family is the address family: FamilyUnspec for v1 UNKNOWN, v2 UNSPEC and v2
	// LOCAL (whose address block is ignored, as the specification says).
	Family Family
	// Transport is TransportStream or TransportDatagram; TransportUnspec with
	// FamilyUnspec. A v1 TCP4 or TCP6 line is TransportStream.
	Transport Transport
	// Source and Destination are the addresses the header carries when Family is
	// FamilyInet or FamilyInet6 (zero otherwise: a UNIX header's paths are not
	// decoded). They are as sent: an IPv4-mapped IPv6 address in a TCP6 line or an
	// INET6 block stays one.
	Source, Destination netip.AddrPort
	// TLVs are a v2 header's type-length-value fields in the order sent, NOOP fields
	// left out. Every field the package knows was checked (see the TLV* constants).
	TLVs []TLV
}

// Command is a PROXY header's command.
type Command uint8

// The commands of version 2 (the low 4 bits of its 13th byte).
const (
	CommandLocal Command = 0x0 // the balancer's own connection (a health check): use the real peer
	CommandProxy Command = 0x1 // a relayed connection: the header tells the client
)

// Family is a PROXY header's address family.
type Family uint8

// The address families of version 2 (the high 4 bits of its 14th byte).
const (
	FamilyUnspec Family = 0x0
	FamilyInet   Family = 0x1 // IPv4 (v1 TCP4)
	FamilyInet6  Family = 0x2 // IPv6 (v1 TCP6)
	FamilyUnix   Family = 0x3
)

// Transport is a PROXY header's transport protocol.
type Transport uint8

// The transports of version 2 (the low 4 bits of its 14th byte).
const (
	TransportUnspec   Transport = 0x0
	TransportStream   Transport = 0x1 // TCP, or a UNIX stream socket
	TransportDatagram Transport = 0x2 // UDP, or a UNIX datagram socket
)

// TLV is one type-length-value field of a version 2 header.
type TLV struct {
	Type  TLVType
	Value []byte
}

// TLVType is the type of a TLV.
type TLVType uint8

// The TLV types of the specification. Parse and Read check those marked so; a header
// that fails a check is invalid.
const (
	TLVALPN      TLVType = 0x01 // the application protocol negotiated with the client (ALPN)
	TLVAuthority TLVType = 0x02 // the host name the client asked for (SNI), UTF-8
	TLVCRC32C    TLVType = 0x03 // checked: 4 bytes, at most one, and the CRC32c of the header must match
	TLVNoop      TLVType = 0x04 // padding: skipped, never in Header.TLVs
	TLVUniqueID  TLVType = 0x05 // checked: an opaque connection ID of at most 128 bytes
	TLVSSL       TLVType = 0x20 // checked: client flags, verify result and sub-TLVs well formed (see SSL)
	TLVNetNS     TLVType = 0x30 // the network namespace's name
)

// The sub-TLV types of a TLVSSL field.
const (
	SSLSubtypeVersion TLVType = 0x21 // "TLSv1.3"
	SSLSubtypeCN      TLVType = 0x22 // the client certificate's Common Name
	SSLSubtypeCipher  TLVType = 0x23 // "ECDHE-RSA-AES128-GCM-SHA256"
	SSLSubtypeSigAlg  TLVType = 0x24 // the certificate's signature algorithm
	SSLSubtypeKeyAlg  TLVType = 0x25 // the certificate's key algorithm
)

// The bits of SSL.Client.
const (
	SSLClientSSL      uint8 = 0x01 // the client connected over TLS
	SSLClientCertConn uint8 = 0x02 // the client sent a certificate on this connection
	SSLClientCertSess uint8 = 0x04 // the client sent a certificate in this TLS session
)

// maxUniqueID is the longest TLVUniqueID the specification allows.
const maxUniqueID = 128

// v2Sig is the 12 bytes that start every version 2 header.
const v2Sig = "\r\n\r\n\x00\r\nQUIT\n"

// v1Prefix starts every version 1 header; v1Max is the longest v1 line, CRLF included.
const (
	v1Prefix = "PROXY "
	v1Max    = 107
)

// v2Preamble is the fixed part of a version 2 header: the signature, the version and
// command, the family and transport, and the length of what follows.
const v2Preamble = 16

// The errors of this package wrap one of these; see the package doc.
var (
	// ErrNotProxy: the bytes do not start a PROXY header of either version.
	ErrNotProxy = errors.New("proxyproto: not a PROXY protocol header")
	// ErrInvalid: the bytes start a PROXY header, but not a valid one.
	ErrInvalid = errors.New("proxyproto: invalid PROXY protocol header")
)

// headerError says what is wrong in its own words and wraps its kind (ErrNotProxy,
// ErrInvalid, io.ErrUnexpectedEOF), whose text it does not repeat.
type headerError struct {
	msg  string
	kind error
}

func (e *headerError) Error() string { return e.msg }
func (e *headerError) Unwrap() error { return e.kind }

func invalid(version int, format string, args ...any) error {
	return &headerError{msg: fmt.Sprintf("proxyproto: v"+strconv.Itoa(version)+" header: "+format, args...), kind: ErrInvalid}
}

func notProxy(b []byte) error {
	return &headerError{msg: fmt.Sprintf("proxyproto: not a PROXY protocol header: starts with %q", b[:min(len(b), 16)]), kind: ErrNotProxy}
}

// Parse decodes the PROXY header at the start of b and returns it with its length in
// bytes; b[n:] is what follows it. The whole header must be in b: one cut short is an
// error wrapping io.ErrUnexpectedEOF. The header's TLV values alias b. Parse does not
// bound a version 2 header below the protocol's 65551 bytes; Read does.
func Parse(b []byte) (h Header, n int, err error) {
	version, n, err := frame(b, v2Preamble+0xFFFF)
	if err != nil {
		return Header{}, 0, err
	}
	if n == 0 {
		return Header{}, 0, truncated(version, b)
	}
	h, err = decode(version, b[:n])
	if err != nil {
		return Header{}, 0, err
	}
	return h, n, nil
}

// truncated is the error for the start b of a header that ends there.
func truncated(version int, b []byte) error {
	msg := "proxyproto: connection ended before a PROXY header"
	switch {
	case len(b) == 0:
		return fmt.Errorf("%s: %w", msg, io.EOF)
	case version == 0:
		msg = fmt.Sprintf("proxyproto: PROXY header signature cut after %d bytes", len(b))
	case version == 1:
		msg = fmt.Sprintf("proxyproto: v1 header: line cut after %d bytes, before its CRLF", len(b))
	case len(b) < v2Preamble:
		msg = fmt.Sprintf("proxyproto: v2 header: cut after %d bytes of its %d-byte preamble", len(b), v2Preamble)
	default:
		msg = fmt.Sprintf("proxyproto: v2 header: cut after %d of %d bytes", len(b), v2Preamble+int(binary.BigEndian.Uint16(b[14:16])))
	}
	return &headerError{msg: msg, kind: io.ErrUnexpectedEOF}
}

// frame finds the header at the start of b: its version, once known (0 before), and
// its length n, once all of it is in b (0 before). It rejects as early as it can: bytes
// that cannot start a header, a v1 line without CRLF in 107 bytes, a v2 version or
// command that is not one, a v2 length over maxSize.
func frame(b []byte, maxSize int) (version, n int, err error) {
	if len(b) == 0 {
		return 0, 0, nil
	}
	if b[0] == v1Prefix[0] {
		k := min(len(b), len(v1Prefix))
		if string(b[:k]) != v1Prefix[:k] {
			return 0, 0, notProxy(b)
		}
		line := b[:min(len(b), v1Max)]
		for i, c := range line {
			if c == '\n' {
				if i == 0 || line[i-1] != '\r' {
					return 1, 0, invalid(1, "line feed without carriage return at byte %d", i)
				}
				return 1, i + 1, nil
			}
		}
		if len(line) == v1Max {
			return 1, 0, invalid(1, "no CRLF in the first %d bytes", v1Max)
		}
		return 1, 0, nil
	}
	k := min(len(b), len(v2Sig))
	if string(b[:k]) != v2Sig[:k] {
		return 0, 0, notProxy(b)
	}
	if len(b) <= len(v2Sig) {
		return 0, 0, nil
	}
	if v := b[12] >> 4; v != 2 {
		return 2, 0, invalid(2, "version %d in byte 13 (0x%02x), want 2", v, b[12])
	}
	if c := Command(b[12] & 0xF); c != CommandLocal && c != CommandProxy {
		return 2, 0, invalid(2, "command %d in byte 13 (0x%02x) is neither LOCAL (0) nor PROXY (1)", c, b[12])
	}
	if len(b) < v2Preamble {
		return 2, 0, nil
	}
	l := int(binary.BigEndian.Uint16(b[14:16]))
	if v2Preamble+l > maxSize {
		return 2, 0, invalid(2, "length %d (%d bytes with the preamble) over the limit of %d bytes", l, v2Preamble+l, maxSize)
	}
	if len(b) < v2Preamble+l {
		return 2, 0, nil
	}
	return 2, v2Preamble + l, nil
}

// decode decodes b, which frame found to be one whole header of the version.
func decode(version int, b []byte) (Header, error) {
	if version == 1 {
		return decodeV1(b[:len(b)-2])
	}
	return decodeV2(b)
}

// decodeV1 decodes a v1 line without its CRLF: "PROXY TCP4 src dst sport dport",
// "PROXY TCP6 …" or "PROXY UNKNOWN" followed by anything.
func decodeV1(line []byte) (Header, error) {
	h := Header{Version: 1, Command: CommandProxy}
	proto, rest, more := cut(line[len(v1Prefix):])
	switch string(proto) {
	case "UNKNOWN":
		// The specification: whatever follows UNKNOWN up to the CRLF is ignored.
		return h, nil
	case "TCP4":
		h.Family = FamilyInet
	case "TCP6":
		h.Family = FamilyInet6
	default:
		return Header{}, invalid(1, "protocol %q is not TCP4, TCP6 or UNKNOWN", proto)
	}
	h.Transport = TransportStream
	// Exactly four fields follow, one space before each: source, destination, source
	// port, destination port.
	var f [4][]byte
	n := 0
	for more {
		var field []byte
		field, rest, more = cut(rest)
		if len(field) == 0 {
			return Header{}, invalid(1, "empty field %d in %q (one space between fields, none at the end)", n+3, line)
		}
		if n == len(f) {
			return Header{}, invalid(1, "field %d (%q) after the destination port", n+3, field)
		}
		f[n] = field
		n++
	}
	if n < len(f) {
		return Header{}, invalid(1, "%s line has %d of its 4 fields (source, destination, source port, destination port)", proto, n)
	}
	src, err := v1Addr(h.Family, "source", f[0])
	if err != nil {
		return Header{}, err
	}
	dst, err := v1Addr(h.Family, "destination", f[1])
	if err != nil {
		return Header{}, err
	}
	sp, err := v1Port("source", f[2])
	if err != nil {
		return Header{}, err
	}
	dp, err := v1Port("destination", f[3])
	if err != nil {
		return Header{}, err
	}
	h.Source = netip.AddrPortFrom(src, sp)
	h.Destination = netip.AddrPortFrom(dst, dp)
	return h, nil
}

// cut splits b at its first space: the field before it, what follows the space, and
// whether there was a space.
func cut(b []byte) (field, rest []byte, space bool) {
	for i, c := range b {
		if c == ' ' {
			return b[:i], b[i+1:], true
		}
	}
	return b, nil, false
}

func v1Addr(f Family, which string, s []byte) (netip.Addr, error) {
	a, err := netip.ParseAddr(string(s))
	switch {
	case err != nil || a.Zone() != "":
		return netip.Addr{}, invalid(1, "%s address %q is not an IP address", which, s)
	case f == FamilyInet && !a.Is4():
		return netip.Addr{}, invalid(1, "%s address %q is not IPv4 (TCP4)", which, s)
	case f == FamilyInet6 && !a.Is6():
		return netip.Addr{}, invalid(1, "%s address %q is not IPv6 (TCP6)", which, s)
	}
	return a, nil
}

func v1Port(which string, s []byte) (uint16, error) {
	if len(s) > 5 {
		return 0, invalid(1, "%s port %q is not a number from 0 to 65535", which, s)
	}
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, invalid(1, "%s port %q is not a number from 0 to 65535", which, s)
		}
		n = n*10 + int(c-'0')
	}
	if n > 0xFFFF {
		return 0, invalid(1, "%s port %q is not a number from 0 to 65535", which, s)
	}
	return uint16(n), nil
}

// The size of the address block of each family.
const (
	inetAddrLen  = 4 + 4 + 2 + 2
	inet6AddrLen = 16 + 16 + 2 + 2
	unixAddrLen  = 108 + 108
)

// decodeV2 decodes a whole v2 header whose preamble frame checked.
func decodeV2(b []byte) (Header, error) {
	h := Header{Version: 2, Command: Command(b[12] & 0xF)}
	if h.Command == CommandLocal {
		// The specification: the receiver uses the real endpoints and ignores the
		// protocol block, the family included.
		return h, nil
	}
	h.Family, h.Transport = Family(b[13]>>4), Transport(b[13]&0xF)
	var need int
	switch b[13] {
	case 0x00:
	case 0x11, 0x12:
		need = inetAddrLen
	case 0x21, 0x22:
		need = inet6AddrLen
	case 0x31, 0x32:
		need = unixAddrLen
	default:
		// The specification: other values must be rejected by receivers.
		return Header{}, invalid(2, "family and transport byte 0x%02x is none of UNSPEC (0x00), TCP4 (0x11), UDP4 (0x12), TCP6 (0x21), UDP6 (0x22), UNIX stream (0x31) or datagram (0x32)", b[13])
	}
	body := b[v2Preamble:]
	if len(body) < need {
		return Header{}, invalid(2, "address length %d too short for %s (%d bytes)", len(body), familyName(b[13]), need)
	}
	a := body[:need]
	switch h.Family {
	case FamilyInet:
		h.Source = netip.AddrPortFrom(netip.AddrFrom4([4]byte(a[0:4])), binary.BigEndian.Uint16(a[8:10]))
		h.Destination = netip.AddrPortFrom(netip.AddrFrom4([4]byte(a[4:8])), binary.BigEndian.Uint16(a[10:12]))
	case FamilyInet6:
		h.Source = netip.AddrPortFrom(netip.AddrFrom16([16]byte(a[0:16])), binary.BigEndian.Uint16(a[32:34]))
		h.Destination = netip.AddrPortFrom(netip.AddrFrom16([16]byte(a[16:32])), binary.BigEndian.Uint16(a[34:36]))
	}
	tlvs, err := decodeTLVs(b, v2Preamble+need)
	if err != nil {
		return Header{}, err
	}
	h.TLVs = tlvs
	return h, nil
}

func familyName(b byte) string {
	switch b {
	case 0x11:
		return "TCP4"
	case 0x12:
		return "UDP4"
	case 0x21:
		return "TCP6"
	case 0x22:
		return "UDP6"
	case 0x31:
		return "UNIX stream"
	case 0x32:
		return "UNIX datagram"
	}
	return "UNSPEC"
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// decodeTLVs decodes the TLVs of the whole header b, which start at off, and checks
// the CRC32C field when there is one.
func decodeTLVs(b []byte, off int) ([]TLV, error) {
	var tlvs []TLV
	crcAt := -1
	for off < len(b) {
		t, v, next, err := nextTLV(b, off, 0, "TLV")
		if err != nil {
			return nil, err
		}
		switch t {
		case TLVNoop:
			off = next
			continue
		case TLVCRC32C:
			if len(v) != 4 {
				return nil, invalid(2, "CRC32C TLV at offset %d is %d bytes, want 4", off, len(v))
			}
			if crcAt >= 0 {
				return nil, invalid(2, "a second CRC32C TLV at offset %d", off)
			}
			crcAt = off + 3
		case TLVUniqueID:
			if len(v) > maxUniqueID {
				return nil, invalid(2, "UNIQUE_ID TLV at offset %d is %d bytes, at most %d allowed", off, len(v), maxUniqueID)
			}
		case TLVSSL:
			if err := checkSSL(v, off); err != nil {
				return nil, err
			}
		}
		tlvs = append(tlvs, TLV{Type: t, Value: v})
		off = next
	}
	if crcAt >= 0 {
		want := binary.BigEndian.Uint32(b[crcAt:])
		got := crc32.Update(0, castagnoli, b[:crcAt])
		got = crc32.Update(got, castagnoli, zero4[:])
		got = crc32.Update(got, castagnoli, b[crcAt+4:])
		if got != want {
			return nil, invalid(2, "CRC32C mismatch: the header says 0x%08x, its bytes sum to 0x%08x", want, got)
		}
	}
	return tlvs, nil
}

var zero4 [4]byte

// nextTLV reads the TLV at b[off:], which is not empty: its type, its value (capped, so
// that an append to it cannot overwrite what follows) and the offset after it. Errors
// name it what, at offset base+off in the header.
func nextTLV(b []byte, off, base int, what string) (TLVType, []byte, int, error) {
	if len(b)-off < 3 {
		return 0, nil, 0, invalid(2, "%s at offset %d: %d bytes left, a TLV takes at least 3", what, base+off, len(b)-off)
	}
	t := TLVType(b[off])
	l := int(binary.BigEndian.Uint16(b[off+1:]))
	end := off + 3 + l
	if end > len(b) {
		return 0, nil, 0, invalid(2, "%s 0x%02x at offset %d: length %d, but %d bytes left", what, t, base+off, l, len(b)-off-3)
	}
	return t, b[off+3 : end : end], end, nil
}

// sslFixed is the part of a TLVSSL value before its sub-TLVs: client (1), verify (4).
const sslFixed = 5

func checkSSL(v []byte, off int) error {
	if len(v) < sslFixed {
		return invalid(2, "SSL TLV at offset %d is %d bytes, it takes at least %d", off, len(v), sslFixed)
	}
	for o := sslFixed; o < len(v); {
		_, _, next, err := nextTLV(v, o, off+3, "sub-TLV of the SSL TLV")
		if err != nil {
			return err
		}
		o = next
	}
	return nil
}

// TLV returns the value of the header's first TLV of type t, and whether it has one.
func (h *Header) TLV(t TLVType) ([]byte, bool) {
	for _, f := range h.TLVs {
		if f.Type == t {
			return f.Value, true
		}
	}
	return nil, false
}

// ALPN returns the TLVALPN value (the protocol the balancer negotiated with the
// client, such as "h2"), nil without one.
func (h *Header) ALPN() []byte {
	v, _ := h.TLV(TLVALPN)
	return v
}

// Authority returns the TLVAuthority value (the host name the client sent as SNI), ""
// without one.
func (h *Header) Authority() string {
	v, _ := h.TLV(TLVAuthority)
	return string(v)
}

// UniqueID returns the TLVUniqueID value (at most 128 bytes), nil without one.
func (h *Header) UniqueID() []byte {
	v, _ := h.TLV(TLVUniqueID)
	return v
}

// SSL is what a TLVSSL field says about the client's TLS connection to the balancer.
type SSL struct {
	// Client holds the SSLClient* bits.
	Client uint8
	// Verify is 0 when the client presented a certificate and it was verified, not 0
	// otherwise (as sent).
	Verify uint32
	// Version, CN, Cipher, SigAlg and KeyAlg are the values of the SSLSubtype*
	// sub-TLVs, "" when absent.
	Version, CN, Cipher, SigAlg, KeyAlg string
}

// SSL decodes the header's TLVSSL field, if it has one. Read and Parse checked its
// layout, so decoding cannot fail; unknown sub-TLVs are ignored.
func (h *Header) SSL() (SSL, bool) {
	v, ok := h.TLV(TLVSSL)
	if !ok || len(v) < sslFixed {
		return SSL{}, false
	}
	s := SSL{Client: v[0], Verify: binary.BigEndian.Uint32(v[1:5])}
	for o := sslFixed; o < len(v); {
		t, val, next, err := nextTLV(v, o, 0, "")
		if err != nil {
			break
		}
		switch t {
		case SSLSubtypeVersion:
			s.Version = string(val)
		case SSLSubtypeCN:
			s.CN = string(val)
		case SSLSubtypeCipher:
			s.Cipher = string(val)
		case SSLSubtypeSigAlg:
			s.SigAlg = string(val)
		case SSLSubtypeKeyAlg:
			s.KeyAlg = string(val)
		}
		o = next
	}
	return s, true
}

// SourceAddr returns the client address the header carries, as a *net.TCPAddr (stream)
// or *net.UDPAddr (datagram), or nil when it carries none the connection should take:
// a LOCAL command, v1 UNKNOWN, the UNSPEC or UNIX family.
func (h *Header) SourceAddr() net.Addr {
	if h.Command != CommandProxy || (h.Family != FamilyInet && h.Family != FamilyInet6) {
		return nil
	}
	if h.Transport == TransportDatagram {
		return net.UDPAddrFromAddrPort(h.Source)
	}
	return net.TCPAddrFromAddrPort(h.Source)
}
