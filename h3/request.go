package h3

import (
	"github.com/edge-gw/edge/h2"
	"github.com/quic-go/quic-go"
	"github.com/valyala/fasthttp"
)

// Pseudo-header fields seen, as bits.
const (
	psMethod = 1 << iota
	psScheme
	psAuthority
	psPath
)

// fields builds a request header from the field lines of a request's HEADERS frame,
// checking them as HTTP/2 does (RFC 9114 §4.2 and §4.3 are RFC 9113 §8.2 and §8.3 again,
// and the checks are h2's): lowercase names, no connection-specific fields, pseudo-header
// fields first and once each, cookie crumbs joined, one Content-Length, a host that names
// what :authority names.
type fields struct {
	rh      *fasthttp.RequestHeader
	pseudo  uint8
	regular bool
	connect bool
	https   bool
	bad     bool
	size    int // the section's size as RFC 9114 §4.2.2 counts it
	cl      int64
	cookie  []byte
}

func (f *fields) reset(rh *fasthttp.RequestHeader) {
	*f = fields{rh: rh, cl: -1, cookie: f.cookie[:0]}
}

// add takes one field line.
func (f *fields) add(name, value []byte) {
	f.size += len(name) + len(value) + 32
	n, v := b2s(name), b2s(value)
	if len(n) > 0 && n[0] == ':' {
		f.addPseudo(n, v)
		return
	}
	f.regular = true
	if !h2.ValidFieldName(n) || !h2.ValidFieldValue(v) || h2.ConnectionSpecific(n, v) {
		f.bad = true
		return
	}
	switch n {
	case "x-edge-protocol": // h2.ProtocolHeader is edge's to set, never a client's
		return
	case "cookie":
		if len(f.cookie) > 0 {
			f.cookie = append(f.cookie, "; "...)
		}
		f.cookie = append(f.cookie, value...)
		return
	case "content-length":
		cl := int64(0)
		for _, c := range value {
			if c < '0' || c > '9' || cl > 1<<40 {
				f.bad = true
				return
			}
			cl = cl*10 + int64(c-'0')
		}
		if len(value) == 0 || f.cl >= 0 && f.cl != cl {
			f.bad = true
			return
		}
		f.cl = cl
	case "host":
		if f.pseudo&psAuthority != 0 {
			f.bad = f.bad || !h2.SameEntity(v, b2s(f.rh.Host()), f.https)
			return
		}
		f.rh.SetHostBytes(value)
		return
	}
	f.rh.AddBytesKV(name, value)
}

func (f *fields) addPseudo(n, v string) {
	var bit uint8
	switch n {
	case ":method":
		bit = psMethod
	case ":scheme":
		bit = psScheme
	case ":authority":
		bit = psAuthority
	case ":path":
		bit = psPath
	}
	if bit == 0 || f.regular || f.pseudo&bit != 0 || !h2.ValidFieldValue(v) {
		f.bad = true // an unknown pseudo-header (:protocol too: no extended CONNECT), late or twice
		return
	}
	f.pseudo |= bit
	switch bit {
	case psMethod:
		if !h2.ValidMethod(v) {
			f.bad = true
			return
		}
		f.connect = v == fasthttp.MethodConnect
		f.rh.SetMethod(v)
	case psScheme:
		f.https = v == "https"
	case psAuthority:
		if !h2.ValidAuthority(v) {
			f.bad = true
			return
		}
		f.rh.SetHost(v)
	case psPath:
		if !h2.ValidPath(v) {
			f.bad = true
			return
		}
		f.rh.SetRequestURI(v)
	}
}

// checkTrailer takes one field line of a trailer section: checked, not kept.
func (f *fields) checkTrailer(name, value []byte) {
	n := b2s(name)
	if len(n) > 0 && n[0] == ':' || !h2.ValidFieldName(n) || !h2.ValidFieldValue(b2s(value)) {
		f.bad = true
	}
}

// finish ends the header section: the status of an answer edge gives itself (431 for a
// section over MaxHeaderBytes, 405 for CONNECT) or the stream error of a malformed
// request; both 0 for a request to read on.
func (f *fields) finish(cfg *Config) (int, quic.StreamErrorCode) {
	switch {
	case f.size > cfg.MaxHeaderBytes:
		return fasthttp.StatusRequestHeaderFieldsTooLarge, 0
	case f.bad:
		return 0, errMessage
	case f.connect:
		// CONNECT carries :authority only (RFC 9114 §4.4); edge tunnels nothing over
		// HTTP/3 (no extended CONNECT, RFC 9220).
		if f.pseudo != psMethod|psAuthority {
			return 0, errMessage
		}
		return fasthttp.StatusMethodNotAllowed, 0
	case f.pseudo&(psMethod|psScheme|psPath) != psMethod|psScheme|psPath:
		return 0, errMessage
	}
	if len(f.cookie) > 0 {
		f.rh.SetBytesKV(strCookie, f.cookie)
	}
	return 0, 0
}

var strCookie = []byte("Cookie")
