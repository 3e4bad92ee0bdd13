package proxy

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"net/netip"
	"sync/atomic"
	"unsafe"

	"github.com/valyala/fasthttp"
)

// hopHeaders are the hop-by-hop headers of RFC 9110 §7.6.1 plus the common
// non-standard ones. They are never forwarded, in either direction. Connection comes
// first: stripHop keeps one bit per entry and reads the Connection bit as bit 0.
var hopHeaders = [][]byte{
	[]byte("Connection"), []byte("Keep-Alive"), []byte("Proxy-Connection"),
	[]byte("Proxy-Authenticate"), []byte("Proxy-Authorization"), []byte("TE"),
	[]byte("Trailer"), []byte("Transfer-Encoding"), []byte("Upgrade"),
	// HTTP2-Settings only means something next to Upgrade: h2c (RFC 7540 §3.2.1), which
	// edge never honours; a client's copy must not reach an upstream that might.
	[]byte("Http2-Settings"),
	// Expect: 100-continue is answered by edge's server before the body is read, so
	// the upstream gets the whole body and no expectation to answer again.
	[]byte("Expect"),
}

var (
	hdrRequestID = "X-Request-Id"
	strHTTP      = []byte("http")
)

// protectedHeaders may be named in Connection but are still needed to forward a
// request correctly, so edge keeps them (as nginx does by ignoring Connection).
func protected(name []byte) bool {
	return bytes.EqualFold(name, []byte("Host")) || bytes.EqualFold(name, []byte("Content-Length"))
}

// hopMask adds to present the bit of the hopHeaders entry that name is, if any. The loop over
// a concrete header's All stays in the caller so the iterator does not escape.
func hopMask(present uint16, name []byte) uint16 {
	if len(name) < 2 || len(name) > 19 {
		return present
	}
	for i, h := range hopHeaders {
		if len(h) == len(name) && bytes.EqualFold(h, name) {
			present |= 1 << i
		}
	}
	return present
}

// hopDeleter is what stripHop needs of fasthttp's RequestHeader and ResponseHeader.
type hopDeleter interface {
	Peek(key string) []byte
	DelBytes(key []byte)
}

// stripHop deletes the hop-by-hop headers marked in present, and, when Connection
// is marked (bit 0), the headers it names. It allocates nothing.
func stripHop(h hopDeleter, present uint16) {
	if present&1 != 0 {
		conn := h.Peek("Connection")
		for len(conn) > 0 {
			var tok []byte
			if i := bytes.IndexByte(conn, ','); i >= 0 {
				tok, conn = conn[:i], conn[i+1:]
			} else {
				tok, conn = conn, nil
			}
			tok = bytes.TrimSpace(tok)
			if len(tok) == 0 || bytes.EqualFold(tok, []byte("close")) || bytes.EqualFold(tok, []byte("keep-alive")) || protected(tok) {
				continue
			}
			h.DelBytes(tok)
		}
	}
	for i, name := range hopHeaders {
		if present&(1<<i) != 0 {
			h.DelBytes(name)
		}
	}
}

// stripResponseHop removes hop-by-hop headers from an upstream response. A
// Connection: close from the upstream concerns the upstream connection only.
func stripResponseHop(h *fasthttp.ResponseHeader) {
	var present uint16
	if h.ConnectionClose() {
		present = 1
	}
	for k := range h.All() {
		present = hopMask(present, k)
	}
	if present != 0 {
		stripHop(h, present)
		h.ResetConnectionClose()
	}
}

// trustedSet is a short list of prefixes; linear scan beats a trie at this size.
type trustedSet []netip.Prefix

func (t trustedSet) contains(a netip.Addr) bool {
	for _, p := range t {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// peerAddr returns the address of the TCP peer.
func peerAddr(ctx *fasthttp.RequestCtx) netip.Addr {
	a, _ := netip.AddrFromSlice(ctx.RemoteIP())
	return a.Unmap()
}

// clientAddr returns the client address: the peer, or, when the peer is a trusted
// proxy, the right-most address of X-Forwarded-For that is not itself trusted. Repeated
// X-Forwarded-For headers count as one list, in order (RFC 9110 §5.3).
func (t trustedSet) clientAddr(ctx *fasthttp.RequestCtx, peer netip.Addr) netip.Addr {
	if len(t) == 0 || !t.contains(peer) {
		return peer
	}
	var copies [8][]byte // the last 8 copies; a client sending more is not believed further
	n := 0
	for k, v := range ctx.Request.Header.All() {
		if bytes.Equal(k, fwdNames[fwdXFF]) {
			copies[n%len(copies)] = v
			n++
		}
	}
	client := peer
	for i := n - 1; i >= max(0, n-len(copies)); i-- {
		xff := copies[i%len(copies)]
		for len(xff) > 0 {
			var el []byte
			if j := bytes.LastIndexByte(xff, ','); j >= 0 {
				el, xff = xff[j+1:], xff[:j]
			} else {
				el, xff = xff, nil
			}
			a, ok := parseAddr(bytes.TrimSpace(el))
			if !ok {
				return client
			}
			client = a
			if !t.contains(a) {
				return client
			}
		}
	}
	return client
}

// parseAddr parses an IP address from b without allocating. Ports and brackets
// ("1.2.3.4:5", "[::1]:5") are accepted, as some proxies send them.
func parseAddr(b []byte) (netip.Addr, bool) {
	if len(b) == 0 || len(b) > 64 {
		return netip.Addr{}, false
	}
	if b[0] == '[' {
		if i := bytes.IndexByte(b, ']'); i > 0 {
			b = b[1:i]
		}
	} else if i := bytes.IndexByte(b, ':'); i >= 0 && bytes.Count(b, []byte(":")) == 1 {
		b = b[:i]
	}
	// The string is only read during the call; the error, which could keep it,
	// is dropped at once.
	a, err := netip.ParseAddr(unsafe.String(unsafe.SliceData(b), len(b)))
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// The headers edge sets on a forwarded request, in the canonical form fasthttp
// stores request header names in (so SetCanonical finds a client's copy).
var fwdNames = [fwdCount][]byte{
	fwdXFF: []byte("X-Forwarded-For"), fwdRealIP: []byte("X-Real-Ip"),
	fwdProto: []byte("X-Forwarded-Proto"), fwdRequestID: []byte("X-Request-Id"),
}

const (
	fwdXFF = iota
	fwdRealIP
	fwdProto
	fwdRequestID
	fwdCount
)

// fwdScan is what one pass over a request's headers found: the hop-by-hop headers
// present (a hopMask) and, for each header edge sets, how many copies the client
// sent and the first one's value.
type fwdScan struct {
	hop    uint16
	copies [fwdCount]uint8
	first  [fwdCount][]byte
}

func scanRequest(h *fasthttp.RequestHeader) fwdScan {
	var f fwdScan
	if h.ConnectionClose() {
		f.hop = 1 // Connection: close is kept as a flag, not a header line
	}
	for k, v := range h.All() {
		f.hop = hopMask(f.hop, k)
		for i := range fwdNames {
			if bytes.Equal(k, fwdNames[i]) {
				if f.copies[i] == 0 {
					f.first[i] = v
				}
				f.copies[i] = min(f.copies[i]+1, 2)
			}
		}
	}
	return f
}

// prepareForward readies a request for its upstream, in one pass over its headers
// when it has no hop-by-hop headers (the usual case): hop-by-hop headers are removed,
// and X-Forwarded-For (appended), X-Real-IP, X-Forwarded-Proto (proto, or kept from a trusted
// peer) and X-Request-Id (kept when sane, else generated) are set. A client's extra
// copies of these headers are dropped: the upstream sees exactly one of each, and
// the X-Forwarded-For values of all copies, in order. scratch is reused; the
// returned slice is the grown scratch.
func prepareForward(h *fasthttp.RequestHeader, peer, client netip.Addr, trusted bool, proto, scratch []byte) []byte {
	f := scanRequest(h)
	if f.hop != 0 {
		stripHop(h, f.hop)
		f = scanRequest(h) // what is left once the hop-by-hop headers are gone
	}
	keepProto := trusted && f.copies[fwdProto] == 1 && len(f.first[fwdProto]) > 0
	keepID := f.copies[fwdRequestID] == 1 && saneRequestID(f.first[fwdRequestID])

	buf := scratch[:0]
	if f.copies[fwdXFF] > 1 {
		for k, v := range h.All() {
			if bytes.Equal(k, fwdNames[fwdXFF]) && len(v) > 0 {
				buf = append(append(buf, v...), ", "...)
			}
		}
	} else if prior := f.first[fwdXFF]; len(prior) > 0 {
		buf = append(append(buf, prior...), ", "...)
	}
	buf = peer.AppendTo(buf)
	for i, n := range f.copies {
		if n > 1 {
			h.DelBytes(fwdNames[i])
		}
	}
	h.SetCanonical(fwdNames[fwdXFF], buf)
	h.SetCanonical(fwdNames[fwdRealIP], client.AppendTo(buf[:0]))
	if !keepProto {
		h.SetCanonical(fwdNames[fwdProto], proto)
	}
	if !keepID {
		buf = appendRequestID(buf[:0])
		h.SetCanonical(fwdNames[fwdRequestID], buf)
	}
	return buf
}

// saneRequestID accepts a client's request id of visible ASCII up to 128 bytes.
func saneRequestID(id []byte) bool {
	if len(id) == 0 || len(id) > 128 {
		return false
	}
	for _, c := range id {
		if c <= ' ' || c >= 0x7f || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

var (
	ridPrefix  [8]byte
	ridCounter atomic.Uint64
)

func init() {
	if _, err := rand.Read(ridPrefix[:]); err != nil {
		panic("BUG: no randomness for request ids: " + err.Error())
	}
}

// appendRequestID appends a new 32-hex-digit request id: a per-process random
// prefix and a counter, unique without a syscall per request.
func appendRequestID(dst []byte) []byte {
	var raw [16]byte
	copy(raw[:8], ridPrefix[:])
	binary.BigEndian.PutUint64(raw[8:], ridCounter.Add(1))
	const hex = "0123456789abcdef"
	for _, c := range raw {
		dst = append(dst, hex[c>>4], hex[c&15])
	}
	return dst
}
