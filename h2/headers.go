package h2

import (
	"strings"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// hdrKind says what a header block is for.
type hdrKind uint8

const (
	hkNew      hdrKind = iota // a new request
	hkTrailers                // trailers of an open request: checked, then dropped
	hkIgnore                  // a refused, closed or post-GOAWAY stream: decoded only for HPACK state
)

// Pseudo-header bits.
const (
	psMethod uint8 = 1 << iota
	psPath
	psScheme
	psAuthority
	psProtocol
)

// ProtocolHeader is the request header through which h2 hands the :protocol of an
// extended CONNECT (RFC 8441) to the handler: method "CONNECT", this header set to the
// protocol ("websocket"). h2 drops any field of that name a client sends, so the
// handler sees it only on an extended CONNECT that came over HTTP/2.
const ProtocolHeader = "X-Edge-Protocol"

// hdrState is the decoding state of the header block in progress (reader-owned).
type hdrState struct {
	st       *stream
	id       uint32
	kind     hdrKind
	rst      http2.ErrCode // hkIgnore: the RST_STREAM code to send, if hasRST
	hasRST   bool
	refused  bool
	end      bool // END_STREAM was on the HEADERS
	streamed bool // hkTrailers of a stream whose body streams to its running handler (st is nil)
	selfDep  bool // the HEADERS made the stream depend on itself
	regular  bool // a regular field was seen: pseudo-headers may no longer come
	pseudo   uint8
	connect  bool
	https    bool   // :scheme is https
	protocol string // the :protocol pseudo-header (extended CONNECT)
	size     uint32
	tooBig   bool
	bad      bool
}

// JSON bodies of the answers h2 gives itself.
const (
	bodyTooLarge       = `{"error":"body_too_large"}`
	bodyHeaderTooLarge = `{"error":"header_too_large"}`
	bodyTimeout        = `{"error":"request_timeout"}`
	bodyMethod         = `{"error":"method_not_allowed"}`
)

// tokenLower marks the bytes allowed in a field name on the HTTP/2 wire: RFC 9110 tchar
// without uppercase letters (RFC 9113 §8.2.1).
var tokenLower = func() (t [256]bool) {
	for _, c := range "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz" {
		t[c] = true
	}
	return t
}()

func validName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !tokenLower[s[i]] {
			return false
		}
	}
	return true
}

func validMethod(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !tokenLower[c] && (c < 'A' || c > 'Z') {
			return false
		}
	}
	return true
}

// validValue applies RFC 9113 §8.2.1: no NUL, CR or LF, no leading or trailing SP/HTAB.
func validValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == 0 || c == '\r' || c == '\n' {
			return false
		}
	}
	if n := len(s); n > 0 {
		if c := s[0]; c == ' ' || c == '\t' {
			return false
		}
		if c := s[n-1]; c == ' ' || c == '\t' {
			return false
		}
	}
	return true
}

// validTarget reports whether a :path can be the request-target of the HTTP/1.1 request
// edge forwards: no space, control character or DEL, which would split or end that
// request line at the origin (RFC 9112 §3.2).
func validTarget(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c == 0x7f {
			return false
		}
	}
	return true
}

// validAuthority reports whether an :authority is a host and port edge can forward as
// Host: a valid target without userinfo (RFC 9113 §8.3.1) or path delimiters.
func validAuthority(s string) bool {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '@', '/', '?', '#', '\\':
			return false
		}
	}
	return validTarget(s)
}

// sameEntity reports whether a host field names the entity :authority names: the same
// host and port but for letter case, a port the scheme implies (80, or 443 for https)
// written on one side only counting as the same.
func sameEntity(host, authority string, https bool) bool {
	if strings.EqualFold(host, authority) {
		return true
	}
	port := ":80"
	if https {
		port = ":443"
	}
	return strings.EqualFold(strings.TrimSuffix(host, port), strings.TrimSuffix(authority, port))
}

// parseContentLength parses a content-length value; -1 if it is not a plain number.
func parseContentLength(s string) int64 {
	if s == "" || len(s) > 18 {
		return -1
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return -1
		}
		n = n*10 + int64(c-'0')
	}
	return n
}

// onField is the hpack.Decoder's emit function, set once per connection. It builds
// ctx.Request.Header from the fields and checks RFC 9113 §8.2 and §8.3.
func (c *conn) onField(f hpack.HeaderField) {
	h := &c.hd
	h.size += uint32(len(f.Name)) + uint32(len(f.Value)) + 32
	if h.size > c.cfg.MaxHeaderListSize {
		h.tooBig = true
		c.dec.SetEmitEnabled(false) // keep the HPACK state, stop materialising strings
		return
	}
	if h.bad || h.kind == hkIgnore {
		return
	}
	name, value := f.Name, f.Value
	if len(name) > 0 && name[0] == ':' {
		if h.kind == hkTrailers || h.regular {
			h.bad = true
			return
		}
		var bit uint8
		switch name {
		case ":method":
			bit = psMethod
		case ":path":
			bit = psPath
		case ":scheme":
			bit = psScheme
		case ":authority":
			bit = psAuthority
		case ":protocol":
			bit = psProtocol
		default:
			h.bad = true
			return
		}
		if h.pseudo&bit != 0 || !validValue(value) {
			h.bad = true
			return
		}
		h.pseudo |= bit
		rh := &h.st.ctx.Request.Header
		switch bit {
		case psMethod:
			if !validMethod(value) {
				h.bad = true
				return
			}
			h.connect = value == "CONNECT"
			rh.SetMethod(value)
		case psScheme:
			h.https = value == "https"
		case psPath:
			if value == "" || (value[0] != '/' && value != "*") || !validTarget(value) {
				h.bad = true
				return
			}
			rh.SetRequestURI(value)
		case psAuthority:
			if !validAuthority(value) {
				h.bad = true
				return
			}
			rh.SetHost(value)
		case psProtocol:
			h.protocol = value
		}
		return
	}
	h.regular = true
	if !validName(name) || !validValue(value) {
		h.bad = true
		return
	}
	if h.kind == hkTrailers {
		return // trailers are checked but not forwarded
	}
	if ConnectionSpecific(name, value) {
		h.bad = true
		return
	}
	st := h.st
	switch name {
	case "x-edge-protocol": // ProtocolHeader is h2's to set, never the client's
		return
	// te: trailers is kept: gRPC requires it end to end (servers such as gRPC C-core
	// refuse a call without it) and h2up forwards it; an HTTP/1.1 forward drops it as
	// hop-by-hop.
	case "cookie":
		// RFC 9113 §8.2.3: crumbs are joined with "; " for HTTP/1.1.
		if len(st.cookie) > 0 {
			st.cookie = append(st.cookie, "; "...)
		}
		st.cookie = append(st.cookie, value...)
		return
	case "content-length":
		n := parseContentLength(value)
		if n < 0 || (st.cl >= 0 && st.cl != n) {
			h.bad = true
			return
		}
		st.cl = n
	case "host":
		if h.pseudo&psAuthority != 0 {
			// RFC 9113 §8.3.1: a host naming another entity than :authority makes the
			// request malformed (a proxy in front may have gone by either); the same one
			// is redundant, and :authority is kept.
			h.bad = !sameEntity(value, b2s(st.ctx.Request.Header.Host()), h.https)
			return
		}
	}
	st.ctx.Request.Header.Add(name, value)
}

var strCookie = []byte("Cookie")

// decodeBlock decodes a complete header block and acts on it.
func (c *conn) decodeBlock(block []byte) *goErr {
	c.dec.SetEmitEnabled(true)
	if _, err := c.dec.Write(block); err != nil {
		return errCompression
	}
	if err := c.dec.Close(); err != nil {
		return errCompression
	}
	h := &c.hd
	st := h.st
	switch h.kind {
	case hkIgnore:
		if h.hasRST {
			c.resetStream(h.id, h.rst)
		}
		return nil
	case hkTrailers:
		if h.streamed {
			c.bodyTrailers(h.id, !h.bad && !h.tooBig && !h.selfDep && h.end)
			return nil
		}
		if h.bad || h.tooBig || h.selfDep || !h.end {
			c.rejectStream(st, http2.ErrCodeProtocol)
			return nil
		}
		c.endOfRequest(st)
		return nil
	}
	switch {
	case h.selfDep:
		c.rejectStream(st, http2.ErrCodeProtocol)
	case h.tooBig:
		c.answer(st, 431, bodyHeaderTooLarge, h.end)
	case h.bad:
		c.rejectStream(st, http2.ErrCodeProtocol)
	case h.pseudo&psProtocol != 0:
		// Extended CONNECT (RFC 8441 §4): :protocol only with CONNECT, and then :scheme,
		// :path and :authority are required like for any other request.
		if !h.connect || h.protocol == "" || h.pseudo&(psScheme|psPath|psAuthority) != psScheme|psPath|psAuthority {
			c.rejectStream(st, http2.ErrCodeProtocol)
			return nil
		}
		if len(st.cookie) > 0 {
			st.ctx.Request.Header.SetBytesKV(strCookie, st.cookie)
		}
		st.ctx.Request.Header.Set(ProtocolHeader, h.protocol)
		if h.end {
			c.endOfRequest(st)
		} else {
			c.startStreamed(st, true) // a tunnel's bytes: always streamed, both ways
		}
	case h.connect:
		if h.pseudo&(psScheme|psPath) != 0 || h.pseudo&psAuthority == 0 {
			c.rejectStream(st, http2.ErrCodeProtocol)
			return nil
		}
		c.answer(st, 405, bodyMethod, h.end)
	case h.pseudo&(psMethod|psPath|psScheme) != psMethod|psPath|psScheme:
		c.rejectStream(st, http2.ErrCodeProtocol)
	default:
		if len(st.cookie) > 0 {
			st.ctx.Request.Header.SetBytesKV(strCookie, st.cookie)
		}
		switch {
		case !h.end && c.cfg.StreamRequest != nil && c.cfg.StreamRequest(&st.ctx.Request.Header):
			c.startStreamed(st, false) // no MaxBodySize: the handler reads as much as it wants
		case st.cl > c.cfg.MaxBodySize:
			c.answer(st, 413, bodyTooLarge, h.end)
		case h.end:
			c.endOfRequest(st)
		}
	}
	return nil
}

// Request field checks shared with HTTP/3, whose field sections follow the same rules
// (RFC 9114 §4.2 and §4.3 repeat RFC 9113 §8.2 and §8.3).

// ValidFieldName reports whether name may be a field name on the wire: a token without
// uppercase letters.
func ValidFieldName(name string) bool { return validName(name) }

// ValidFieldValue reports whether value may be a field value: no NUL, CR or LF, no
// leading or trailing space or tab.
func ValidFieldValue(value string) bool { return validValue(value) }

// ValidMethod reports whether a :method is a token.
func ValidMethod(method string) bool { return validMethod(method) }

// ValidPath reports whether a :path can be forwarded as an HTTP/1.1 request target.
func ValidPath(path string) bool {
	return path != "" && (path[0] == '/' || path == "*") && validTarget(path)
}

// ValidAuthority reports whether an :authority can be forwarded as Host.
func ValidAuthority(authority string) bool { return validAuthority(authority) }

// SameEntity reports whether a host field names what :authority names (see sameEntity).
func SameEntity(host, authority string, https bool) bool { return sameEntity(host, authority, https) }

// ConnectionSpecific reports the request fields that make an HTTP/2 or HTTP/3 request
// malformed (RFC 9113 §8.2.2, RFC 9114 §4.2): te is allowed only as "trailers".
func ConnectionSpecific(name, value string) bool {
	switch name {
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
		return true
	case "te":
		return value != "trailers"
	}
	return false
}
