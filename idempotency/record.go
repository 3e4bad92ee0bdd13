package idempotency

import (
	"encoding/binary"
	"iter"

	"github.com/valyala/fasthttp"
)

// Record is one recorded response in a compact binary encoding:
//
//	version   1 byte, recordVersion (1)
//	status    2 bytes, big-endian
//	headers   repeated: uvarint len(name) (> 0), name, uvarint len(value), value
//	end       1 byte 0x00 (a zero name length)
//	body      the rest, raw
//
// Build one with AppendRecordStart, AppendRecordHeader (once per header, in order) and
// AppendRecordBody, or from a response with AppendResponse. A Record is a plain byte slice:
// the encoding adds 4 bytes plus about 2 per header to the header and body bytes.
type Record []byte

const recordVersion = 1

// AppendRecordStart appends the start of a record of status to dst. Status is kept modulo
// 65536 (HTTP statuses are 100..999).
func AppendRecordStart(dst []byte, status int) []byte {
	return append(dst, recordVersion, byte(status>>8), byte(status))
}

// AppendRecordHeader appends one header to a record started by AppendRecordStart. A header
// with an empty name is skipped (the encoding reserves length 0 for the end of headers).
func AppendRecordHeader(dst, name, value []byte) []byte {
	if len(name) == 0 {
		return dst
	}
	dst = binary.AppendUvarint(dst, uint64(len(name)))
	dst = append(dst, name...)
	dst = binary.AppendUvarint(dst, uint64(len(value)))
	return append(dst, value...)
}

// AppendRecordBody ends the headers and appends body, completing the record.
func AppendRecordBody(dst, body []byte) []byte {
	dst = append(dst, 0)
	return append(dst, body...)
}

// parse checks the whole record and returns the status and the offset of the body.
func (r Record) parse() (status, body int, ok bool) {
	if len(r) < 4 || r[0] != recordVersion {
		return 0, 0, false
	}
	i := 3
	for {
		n, w := binary.Uvarint(r[i:])
		if w <= 0 {
			return 0, 0, false
		}
		i += w
		if n == 0 {
			return int(r[1])<<8 | int(r[2]), i, true
		}
		if n > uint64(len(r)-i) {
			return 0, 0, false
		}
		i += int(n)
		n, w = binary.Uvarint(r[i:])
		if w <= 0 || n > uint64(len(r)-i-w) {
			return 0, 0, false
		}
		i += w + int(n)
	}
}

// Valid reports whether r parses as a record.
func (r Record) Valid() bool {
	_, _, ok := r.parse()
	return ok
}

// Status returns the recorded status, or 0 when r does not parse.
func (r Record) Status() int {
	s, _, _ := r.parse()
	return s
}

// Body returns the recorded body, aliasing r, or nil when r does not parse.
func (r Record) Body() []byte {
	_, b, ok := r.parse()
	if !ok {
		return nil
	}
	return r[b:]
}

// Headers iterates over the recorded headers in order; name and value alias r. It yields
// nothing when r does not parse.
func (r Record) Headers() iter.Seq2[[]byte, []byte] {
	return func(yield func(name, value []byte) bool) {
		if !r.Valid() {
			return
		}
		i := 3
		for {
			n, w := binary.Uvarint(r[i:])
			i += w
			if n == 0 {
				return
			}
			name := r[i : i+int(n)]
			i += int(n)
			n, w = binary.Uvarint(r[i:])
			i += w
			value := r[i : i+int(n)]
			i += int(n)
			if !yield(name, value) {
				return
			}
		}
	}
}

// WriteResponse replays the record into resp: it resets resp, then sets the status, adds
// the headers in recorded order and copies the body, so the client gets the recorded bytes
// (fasthttp derives Content-Length from the body; the caller adds Idempotent-Replayed
// afterwards). It does not retain r and does not allocate once resp's buffers have grown.
// It fails with ErrCorrupt, leaving resp untouched, when r does not parse.
//
// Named WriteResponse rather than WriteTo: go vet reserves WriteTo for io.WriterTo.
func (r Record) WriteResponse(resp *fasthttp.Response) error {
	status, body, ok := r.parse()
	if !ok {
		return ErrCorrupt
	}
	resp.Reset()
	resp.SetStatusCode(status)
	for name, value := range r.Headers() {
		resp.Header.AddBytesKV(name, value)
	}
	resp.SetBody(r[body:])
	return nil
}

// AppendResponse appends to dst the record of resp: its status, its body and the headers
// worth replaying, in resp's order. Hop-by-hop headers are always dropped (Connection and
// the headers it names, Keep-Alive, Proxy-*, TE, Trailer, Transfer-Encoding, Upgrade), and
// so is Content-Length (the replay derives it from the body). Of the rest, keep decides;
// nil means KeepDefault. It does not retain resp and does not allocate beyond growing dst.
func AppendResponse(dst []byte, resp *fasthttp.Response, keep func(name []byte) bool) []byte {
	if keep == nil {
		keep = KeepDefault
	}
	dst = AppendRecordStart(dst, resp.StatusCode())
	// Values of Connection headers, to drop the headers they name; more than a few
	// Connection headers is abuse, and the rest of them are ignored.
	var conn [4][]byte
	nconn := 0
	for name, value := range resp.Header.All() {
		if nconn < len(conn) && equalFold(name, "Connection") {
			conn[nconn] = value
			nconn++
		}
	}
	for name, value := range resp.Header.All() {
		if hopByHop(name) || equalFold(name, "Content-Length") || namedIn(conn[:nconn], name) || !keep(name) {
			continue
		}
		dst = AppendRecordHeader(dst, name, value)
	}
	return AppendRecordBody(dst, resp.Body())
}

// KeepDefault is the header choice of AppendResponse when the caller passes none: every
// end-to-end header (Content-Type, Content-Encoding, Location, ETag, Cache-Control, Server,
// X-…) except
//   - Set-Cookie: a record is replayed for up to its ttl (a day by default), while sessions
//     and CSRF cookies rotate; replaying a stale Set-Cookie could roll a user's session back,
//     and it would keep secrets in a shared Redis. A replay therefore sets no cookie.
//   - Date: the replay is sent now; fasthttp writes the current Date.
func KeepDefault(name []byte) bool {
	return !equalFold(name, "Set-Cookie") && !equalFold(name, "Date")
}

// hopByHop reports whether name is a hop-by-hop header (RFC 9110 7.6.1, plus the
// Proxy-* family and Keep-Alive).
func hopByHop(name []byte) bool {
	switch len(name) {
	case 2:
		return equalFold(name, "TE")
	case 7:
		return equalFold(name, "Trailer") || equalFold(name, "Upgrade")
	case 10:
		return equalFold(name, "Connection") || equalFold(name, "Keep-Alive")
	case 17:
		return equalFold(name, "Transfer-Encoding")
	}
	return len(name) >= 6 && equalFold(name[:6], "Proxy-")
}

// namedIn reports whether name is one of the comma-separated tokens of the Connection
// values conn.
func namedIn(conn [][]byte, name []byte) bool {
	for _, v := range conn {
		for len(v) > 0 {
			i := 0
			for i < len(v) && v[i] != ',' {
				i++
			}
			tok := trimSpace(v[:i])
			if len(tok) > 0 && equalFoldBytes(name, tok) {
				return true
			}
			if i == len(v) {
				break
			}
			v = v[i+1:]
		}
	}
	return false
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// equalFold compares ASCII case-insensitively without allocating.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		if lower(b[i]) != lower(s[i]) {
			return false
		}
	}
	return true
}

// equalFoldBytes is equalFold for two byte slices.
func equalFoldBytes(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		if lower(a[i]) != lower(b[i]) {
			return false
		}
	}
	return true
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}
