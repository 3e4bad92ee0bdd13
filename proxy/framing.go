package proxy

import (
	"bytes"

	"github.com/valyala/fasthttp"
)

// Request framing. fasthttp's parser already refuses most heads that two HTTP/1.1
// parsers could read differently (docs/security.md has the table); framingFault refuses
// the few it accepts, from the head's wire bytes, before anything else of the funnel
// runs. A refused request's connection is closed: where the next request starts is
// then unknowable.

var (
	hdrContentLength    = []byte("Content-Length")
	hdrTransferEncoding = []byte("Transfer-Encoding")
	hdrExpect           = []byte("Expect")
	str100Continue      = []byte("100-continue")

	errExpectation = jsonError(417, "expectation_failed")
	errMethod      = jsonError(405, "method_not_allowed")
)

// framingFault returns the answer to the HTTP/1.x request h when its head must be
// refused, or nil. 400 for:
//   - a line folded onto the one before (obs-fold, RFC 9112 §5.2), which fasthttp
//     unfolds where a proxy in front may not;
//   - a line ended by LF alone (RFC 9112 §2.2 allows reading it as an end of line, a
//     proxy in front may read it as part of a value);
//   - a field name with a space inside (not a token, RFC 9110 §5.1);
//   - Transfer-Encoding with Content-Length, or a Transfer-Encoding other than chunked
//     (identity: chunked is not the final coding; RFC 9112 §6.1, §6.3);
//   - a Host that is not a host and port (RFC 9112 §3.2), or an absolute-form target
//     with userinfo (RFC 9110 §4.2.4).
//
// 417 for an Expect other than 100-continue, which edge cannot meet (RFC 9110
// §10.1.1; fasthttp has already answered a 100-continue). 405 for CONNECT: edge is no
// forward proxy, and a tunnel opened behind it would bypass every route.
//
// It reads the head once and allocates nothing.
func framingFault(h *fasthttp.RequestHeader) *answer {
	raw := h.RawHeaders() // the header block as received, folds and all, with its final CRLF
	var te, cl bool
	var expect []byte
	for len(raw) > 0 {
		i := bytes.IndexByte(raw, '\n')
		if i < 1 || raw[i-1] != '\r' {
			return errBadRequest // a bare LF
		}
		line := raw[:i-1]
		raw = raw[i+1:]
		if len(line) == 0 {
			break // the blank line ending the head
		}
		if len(raw) > 0 && (raw[0] == ' ' || raw[0] == '\t') {
			return errBadRequest // obs-fold
		}
		colon := bytes.IndexByte(line, ':')
		if colon < 0 || bytes.IndexByte(line[:colon], ' ') >= 0 {
			return errBadRequest
		}
		// The first letter and the length pick the rare lines worth comparing.
		switch name := line[:colon]; {
		case len(name) == len(hdrContentLength) && name[0]|0x20 == 'c':
			cl = cl || bytes.EqualFold(name, hdrContentLength)
		case len(name) == len(hdrTransferEncoding) && name[0]|0x20 == 't':
			te = te || bytes.EqualFold(name, hdrTransferEncoding)
		case len(name) == len(hdrExpect) && name[0]|0x20 == 'e' && bytes.EqualFold(name, hdrExpect):
			expect = bytes.Trim(line[colon+1:], " \t")
		}
	}
	switch {
	case te && (cl || h.ContentLength() != -1), !validHost(h.Host()):
		return errBadRequest
	case len(h.RequestURI()) > 0 && h.RequestURI()[0] != '/' && userinfo(h.RequestURI()):
		return errBadRequest
	case h.IsConnect():
		return errMethod
	case expect != nil && !bytes.EqualFold(expect, str100Continue):
		return errExpectation
	}
	return nil
}

// dropTrailers deletes the trailer fields of an HTTP/1.1 request whose chunked body
// was read whole: fasthttp would otherwise forward them in the header section once
// edge strips the Trailer field, where a proxy in front saw none (RFC 9110 §6.5.1:
// trailers are not merged into the header section). A field of the same name in the
// header section goes too. HTTP/2 requests' trailers never reach the request (h2).
func dropTrailers(h *fasthttp.RequestHeader) {
	for k := range h.Trailers() {
		h.DelBytes(k)
	}
}

// hostByte marks the bytes of uri-host [":" port] (RFC 3986 §3.2.2): reg-name
// (unreserved, pct-encoded, sub-delims), IP literals in brackets and the port colon.
var hostByte = func() (t [256]bool) {
	for _, c := range "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~%!$&'()*+,;=:[]" {
		t[c] = true
	}
	return t
}()

// validHost reports whether host, a Host field value, holds only bytes of a host and
// port; empty is left to fasthttp, which refuses an HTTP/1.1 request without a Host.
func validHost(host []byte) bool {
	for _, c := range host {
		if !hostByte[c] {
			return false
		}
	}
	return true
}

// userinfo reports whether the authority of absolute-form target uri has a userinfo
// part ("user@"): RFC 9110 §4.2.4 deprecates it in http(s) URIs, and a proxy in front
// may take the host from either side of the '@'.
func userinfo(uri []byte) bool {
	i := bytes.Index(uri, []byte("://"))
	if i < 0 {
		return false
	}
	auth := uri[i+3:]
	if end := bytes.IndexAny(auth, "/?#"); end >= 0 {
		auth = auth[:end]
	}
	return bytes.IndexByte(auth, '@') >= 0
}
