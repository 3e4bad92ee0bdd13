package proxyproto

import (
	"encoding/binary"
	"hash/crc32"
	"net"
	"net/netip"
	"strconv"
)

// AppendV1 appends the version 1 line that tells source and destination, and returns
// the extended buffer: "PROXY TCP4 <src> <dst> <sport> <dport>\r\n" when both are TCP
// addresses whose IPs are IPv4 (IPv4-mapped IPv6 included), "PROXY TCP6 …" when they
// are TCP addresses and one is IPv6 (an IPv4 one is then written mapped), and
// "PROXY UNKNOWN\r\n" otherwise (nil, UDP, which version 1 cannot tell, UNIX). Zones
// are dropped. It allocates only when dst must grow.
func AppendV1(dst []byte, source, destination net.Addr) []byte {
	src, sok := source.(*net.TCPAddr)
	dest, dok := destination.(*net.TCPAddr)
	if !sok || !dok {
		return append(dst, "PROXY UNKNOWN\r\n"...)
	}
	s, d, f, ok := addrPair(src.AddrPort(), dest.AddrPort())
	if !ok {
		return append(dst, "PROXY UNKNOWN\r\n"...)
	}
	if f == FamilyInet {
		dst = append(dst, "PROXY TCP4 "...)
	} else {
		dst = append(dst, "PROXY TCP6 "...)
	}
	dst = s.Addr().AppendTo(dst)
	dst = append(dst, ' ')
	dst = d.Addr().AppendTo(dst)
	dst = append(dst, ' ')
	dst = strconv.AppendUint(dst, uint64(s.Port()), 10)
	dst = append(dst, ' ')
	dst = strconv.AppendUint(dst, uint64(d.Port()), 10)
	return append(dst, '\r', '\n')
}

// addrPair returns s and d in one family: IPv4 when both are IPv4 or IPv4-mapped,
// else IPv6, an IPv4 address mapped; zones dropped. ok is false when either is not a
// valid address.
func addrPair(s, d netip.AddrPort) (netip.AddrPort, netip.AddrPort, Family, bool) {
	sa, da := s.Addr().Unmap().WithZone(""), d.Addr().Unmap().WithZone("")
	if !sa.IsValid() || !da.IsValid() {
		return s, d, FamilyUnspec, false
	}
	if sa.Is4() && da.Is4() {
		return netip.AddrPortFrom(sa, s.Port()), netip.AddrPortFrom(da, d.Port()), FamilyInet, true
	}
	sa, da = netip.AddrFrom16(sa.As16()), netip.AddrFrom16(da.As16())
	return netip.AddrPortFrom(sa, s.Port()), netip.AddrPortFrom(da, d.Port()), FamilyInet6, true
}

// AppendV2 appends a version 2 header with the PROXY command that tells source and
// destination, followed by tlvs, and returns the extended buffer. Both TCP addresses
// give the stream transport, both UDP the datagram one; the family is INET when both
// IPs are IPv4 (IPv4-mapped IPv6 included) and INET6 otherwise (an IPv4 address then
// mapped). Any other pair (nil, mixed TCP and UDP, UNIX) gives the UNSPEC family and no
// addresses: the receiver keeps the real peer. A TLV of type TLVCRC32C is written with
// the header's checksum as its value, whatever value it has. It allocates only when
// dst must grow. The header must fit the protocol's 16-bit length: TLVs longer than
// about 64 KiB in all are a bug, and panic.
func AppendV2(dst []byte, source, destination net.Addr, tlvs ...TLV) []byte {
	start := len(dst)
	dst = append(dst, v2Sig...)
	dst = append(dst, 0x20|byte(CommandProxy), 0, 0, 0)
	s, d, tr := addrPorts(source, destination)
	sa, da, f, ok := addrPair(s, d)
	if !ok || tr == TransportUnspec {
		f, tr = FamilyUnspec, TransportUnspec
	}
	dst[start+13] = byte(f)<<4 | byte(tr)
	switch f {
	case FamilyInet:
		a4, b4 := sa.Addr().As4(), da.Addr().As4()
		dst = append(dst, a4[:]...)
		dst = append(dst, b4[:]...)
		dst = binary.BigEndian.AppendUint16(dst, sa.Port())
		dst = binary.BigEndian.AppendUint16(dst, da.Port())
	case FamilyInet6:
		a16, b16 := sa.Addr().As16(), da.Addr().As16()
		dst = append(dst, a16[:]...)
		dst = append(dst, b16[:]...)
		dst = binary.BigEndian.AppendUint16(dst, sa.Port())
		dst = binary.BigEndian.AppendUint16(dst, da.Port())
	}
	crcAt := -1
	for _, t := range tlvs {
		v := t.Value
		if t.Type == TLVCRC32C {
			crcAt = len(dst) + 3
			v = zero4[:]
		}
		if len(v) > 0xFFFF {
			panic("BUG: proxyproto: a TLV value of " + strconv.Itoa(len(v)) + " bytes, at most 65535 fit")
		}
		dst = append(dst, byte(t.Type))
		dst = binary.BigEndian.AppendUint16(dst, uint16(len(v)))
		dst = append(dst, v...)
	}
	l := len(dst) - start - v2Preamble
	if l > 0xFFFF {
		panic("BUG: proxyproto: a v2 header of " + strconv.Itoa(l) + " bytes after its preamble, at most 65535 fit")
	}
	binary.BigEndian.PutUint16(dst[start+14:], uint16(l))
	if crcAt >= 0 {
		binary.BigEndian.PutUint32(dst[crcAt:], crc32.Checksum(dst[start:], castagnoli))
	}
	return dst
}

// addrPorts returns the addresses of a TCP or UDP pair and their transport;
// TransportUnspec for any other pair.
func addrPorts(source, destination net.Addr) (s, d netip.AddrPort, tr Transport) {
	switch src := source.(type) {
	case *net.TCPAddr:
		if dest, ok := destination.(*net.TCPAddr); ok {
			return src.AddrPort(), dest.AddrPort(), TransportStream
		}
	case *net.UDPAddr:
		if dest, ok := destination.(*net.UDPAddr); ok {
			return src.AddrPort(), dest.AddrPort(), TransportDatagram
		}
	}
	return s, d, TransportUnspec
}

// AppendV2Local appends a version 2 header with the LOCAL command (a connection of the
// sender's own, such as a health check: the receiver keeps the real peer) and returns
// the extended buffer.
func AppendV2Local(dst []byte) []byte {
	dst = append(dst, v2Sig...)
	return append(dst, 0x20|byte(CommandLocal), 0, 0, 0)
}
