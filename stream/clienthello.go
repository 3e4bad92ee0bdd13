package stream

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// DefaultMaxHello bounds PeekServerName when its limit is 0 or less: the bytes of the
// records that carry a ClientHello, record headers included. A ClientHello is a few
// hundred bytes, about 2 KiB with a post-quantum key share.
const DefaultMaxHello = 16 << 10

// The errors of PeekServerName wrap one of these, or io.EOF (the client sent nothing),
// io.ErrUnexpectedEOF (it closed inside the ClientHello) or os.ErrDeadlineExceeded
// (the timeout), besides any other error of the conn's Read.
var (
	// ErrNotTLS: the client's first bytes are not a TLS handshake record that starts a
	// ClientHello.
	ErrNotTLS = errors.New("stream: not a TLS ClientHello")
	// ErrMalformedHello: the bytes start a ClientHello, but not a well-formed one.
	ErrMalformedHello = errors.New("stream: malformed TLS ClientHello")
	// ErrHelloTooLarge: the ClientHello's records are longer than the limit.
	ErrHelloTooLarge = errors.New("stream: TLS ClientHello over the size limit")
)

// helloError says what is wrong in its own words and wraps its kind, whose text it does
// not repeat.
type helloError struct {
	msg  string
	kind error
}

func (e *helloError) Error() string { return e.msg }
func (e *helloError) Unwrap() error { return e.kind }

func helloErr(kind error, format string, args ...any) error {
	return &helloError{msg: "stream: ClientHello: " + fmt.Sprintf(format, args...), kind: kind}
}

// TLS's framing (RFC 8446) and the server_name extension (RFC 6066).
const (
	recordHeader     = 5       // type (1), version (2), length (2)
	maxRecord        = 1 << 14 // a TLSPlaintext fragment's limit
	recordHandshake  = 0x16
	handshakeHeader  = 4 // type (1), length (3)
	typeClientHello  = 0x01
	extServerName    = 0x0000
	serverNameHost   = 0x00
	maxHostName      = 253
	maxHostNameLabel = 63
)

// helloAlloc is the buffer PeekServerName starts with: most ClientHellos fit.
const helloAlloc = 2 << 10

// PeekServerName reads the ClientHello that starts c, a client's TLS connection, and
// returns the server name it asks for (SNI) with every byte it read from c.
//
// It reads exactly the TLS records that carry the ClientHello, however many there
// are, and not a byte past them: the caller writes hello unchanged to the upstream it
// picks by name, then relays the rest of c. The name is the server_name extension's
// host_name, lowercased (ASCII); "" with a nil error when the client sent none (a
// client dialing an IP address). A name that is not a host name (empty, a trailing
// dot, a byte other than a letter, digit, '-', '_' or '.') is an error.
//
// limit bounds the bytes read, record headers included (DefaultMaxHello when 0 or
// less).
// When timeout is positive, PeekServerName sets a read deadline on c that far ahead
// and clears it before returning (a deadline the caller set before is lost); otherwise
// it leaves c's deadline alone. On error, hello still holds what was read (to log), and
// the caller closes c. hello is the caller's: PeekServerName keeps no reference to it.
func PeekServerName(c net.Conn, limit int, timeout time.Duration) (name string, hello []byte, err error) {
	if limit <= 0 {
		limit = DefaultMaxHello
	}
	if timeout > 0 {
		if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
			return "", nil, fmt.Errorf("stream: cannot set the ClientHello's read deadline: %w", err)
		}
		defer c.SetReadDeadline(time.Time{})
	}
	p := peeker{c: c, limit: limit, timeout: timeout, buf: make([]byte, 0, min(limit, helloAlloc))}
	name, err = p.run()
	return name, p.buf, err
}

// peeker reads the records of one ClientHello.
type peeker struct {
	c       net.Conn
	limit   int
	timeout time.Duration
	buf     []byte // every byte read from c
	msg     []byte // the handshake bytes of the records so far, when they took more than one record
}

func (p *peeker) run() (string, error) {
	payload := 0 // where the first record's payload starts in buf; its end once a second record comes
	for records := 0; ; records++ {
		start := len(p.buf)
		if start+recordHeader > p.limit {
			return "", helloErr(ErrHelloTooLarge, "not whole after %d bytes, the limit is %d", start, p.limit)
		}
		if err := p.read(recordHeader); err != nil {
			return "", err
		}
		h := p.buf[start:]
		typ, version, length := h[0], binary.BigEndian.Uint16(h[1:3]), int(binary.BigEndian.Uint16(h[3:5]))
		switch {
		case records == 0 && typ != recordHandshake:
			return "", helloErr(ErrNotTLS, "first byte 0x%02x is not a TLS handshake record (0x16)", typ)
		case records == 0 && version>>8 != 3:
			return "", helloErr(ErrNotTLS, "record version 0x%04x is not TLS (0x03xx)", version)
		case typ != recordHandshake:
			return "", helloErr(ErrMalformedHello, "record %d has type %d, not handshake (22), before the ClientHello ends", records+1, typ)
		case version>>8 != 3:
			return "", helloErr(ErrMalformedHello, "record %d has version 0x%04x, not TLS (0x03xx)", records+1, version)
		case length == 0:
			return "", helloErr(ErrMalformedHello, "record %d is empty", records+1)
		case length > maxRecord:
			return "", helloErr(ErrMalformedHello, "record %d of %d bytes, over TLS's %d", records+1, length, maxRecord)
		case start+recordHeader+length > p.limit:
			return "", helloErr(ErrHelloTooLarge, "record %d of %d bytes takes it to %d bytes, the limit is %d", records+1, length, start+recordHeader+length, p.limit)
		}
		if err := p.read(length); err != nil {
			return "", err
		}

		// The handshake bytes so far: the first record's payload in place, else copied
		// together.
		var hs []byte
		switch records {
		case 0:
			payload = start + recordHeader
			hs = p.buf[payload:]
		case 1:
			p.msg = append(p.msg, p.buf[payload:start]...)
			fallthrough
		default:
			p.msg = append(p.msg, p.buf[start+recordHeader:]...)
			hs = p.msg
		}
		if len(hs) < handshakeHeader {
			continue
		}
		if hs[0] != typeClientHello {
			return "", helloErr(ErrNotTLS, "handshake message type %d is not a ClientHello (1)", hs[0])
		}
		body := int(hs[1])<<16 | int(hs[2])<<8 | int(hs[3])
		// The fewest bytes that can carry the message: one record header.
		if least := payload + handshakeHeader + body; least > p.limit {
			return "", helloErr(ErrHelloTooLarge, "%d bytes long (%d with a record header), the limit is %d", handshakeHeader+body, least, p.limit)
		}
		if len(hs) < handshakeHeader+body {
			continue
		}
		// Bytes past the message in its last record are read and forwarded, and not
		// looked at: a client sends nothing after a ClientHello before an answer.
		return serverName(hs[handshakeHeader : handshakeHeader+body])
	}
}

// read appends exactly n bytes from the conn to p.buf.
func (p *peeker) read(n int) error {
	have := len(p.buf)
	p.buf = append(p.buf, make([]byte, n)...)[:have+n]
	k, err := io.ReadFull(p.c, p.buf[have:])
	p.buf = p.buf[:have+k]
	switch {
	case err == nil:
		return nil
	case err == io.EOF && have == 0:
		return fmt.Errorf("stream: connection closed before a ClientHello: %w", io.EOF)
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		return helloErr(io.ErrUnexpectedEOF, "connection closed inside it, after %d bytes", len(p.buf))
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() && p.timeout > 0 {
		return fmt.Errorf("stream: no whole ClientHello within %v (%d bytes read): %w", p.timeout, len(p.buf), err)
	}
	return fmt.Errorf("stream: reading the ClientHello (%d bytes read): %w", len(p.buf), err)
}

// serverName returns the host_name of the server_name extension of the ClientHello
// body b (RFC 8446 §4.1.2, RFC 6066 §3), lowercased; "" without one.
func serverName(b []byte) (string, error) {
	r := reader{b: b}
	r.skip(2, "legacy_version")
	r.skip(32, "random")
	sid := r.u8("legacy_session_id length")
	if sid > 32 {
		return "", helloErr(ErrMalformedHello, "session ID of %d bytes, at most 32", sid)
	}
	r.skip(sid, "legacy_session_id")
	suites := r.u16("cipher_suites length")
	if r.err == nil && (suites == 0 || suites%2 != 0) {
		return "", helloErr(ErrMalformedHello, "cipher_suites of %d bytes, not a positive even number", suites)
	}
	r.skip(suites, "cipher_suites")
	methods := r.u8("legacy_compression_methods length")
	if r.err == nil && methods == 0 {
		return "", helloErr(ErrMalformedHello, "no compression method")
	}
	r.skip(methods, "legacy_compression_methods")
	if r.err != nil {
		return "", r.err
	}
	if len(r.b) == 0 {
		return "", nil // TLS 1.2 and before: extensions are optional
	}
	if n := r.u16("extensions length"); r.err == nil && n != len(r.b) {
		return "", helloErr(ErrMalformedHello, "extensions length %d, but %d bytes follow", n, len(r.b))
	}
	var name []byte
	seen := false
	for r.err == nil && len(r.b) > 0 {
		typ := r.u16("extension type")
		data := r.bytes(r.u16("extension length"), "extension data")
		if r.err != nil || typ != extServerName {
			continue
		}
		if seen {
			return "", helloErr(ErrMalformedHello, "two server_name extensions")
		}
		seen = true
		var err error
		if name, err = hostName(data); err != nil {
			return "", err
		}
	}
	if r.err != nil {
		return "", r.err
	}
	if name == nil {
		return "", nil
	}
	if err := checkHost(name); err != nil {
		return "", helloErr(ErrMalformedHello, "server_name %q: %v", name, err)
	}
	return lower(name), nil
}

// hostName returns the host_name in a server_name extension's data, nil without one.
func hostName(data []byte) ([]byte, error) {
	r := reader{b: data}
	if n := r.u16("server_name_list length"); r.err == nil && (n == 0 || n != len(r.b)) {
		return nil, helloErr(ErrMalformedHello, "server_name_list length %d, but %d bytes follow", n, len(r.b))
	}
	var host []byte
	for r.err == nil && len(r.b) > 0 {
		typ := r.u8("server name type")
		v := r.bytes(r.u16("server name length"), "server name")
		if r.err != nil || typ != serverNameHost {
			continue // RFC 6066 allows other types; none is defined
		}
		if host != nil {
			return nil, helloErr(ErrMalformedHello, "two host_name entries in server_name")
		}
		host = v[:len(v):len(v)]
		if len(host) == 0 {
			return nil, helloErr(ErrMalformedHello, "empty host_name in server_name")
		}
	}
	return host, r.err
}

// reader reads a ClientHello's fields; after the first error, every read is a no-op
// that returns zero, and err says which field ran past the end.
type reader struct {
	b   []byte
	err error
}

func (r *reader) short(n int, field string) bool {
	if r.err == nil && len(r.b) < n {
		r.err = helloErr(ErrMalformedHello, "%s needs %d bytes, %d left", field, n, len(r.b))
	}
	return r.err != nil
}

func (r *reader) u8(field string) int {
	if r.short(1, field) {
		return 0
	}
	v := int(r.b[0])
	r.b = r.b[1:]
	return v
}

func (r *reader) u16(field string) int {
	if r.short(2, field) {
		return 0
	}
	v := int(binary.BigEndian.Uint16(r.b))
	r.b = r.b[2:]
	return v
}

func (r *reader) bytes(n int, field string) []byte {
	if r.short(n, field) {
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) skip(n int, field string) { r.bytes(n, field) }

// checkHost reports why b is not a host name: 1 to 253 bytes of dot-separated labels
// of 1 to 63 letters, digits, '-' or '_', without a trailing dot.
func checkHost(b []byte) error {
	if len(b) == 0 || len(b) > maxHostName {
		return fmt.Errorf("%d bytes, a host name has 1 to %d", len(b), maxHostName)
	}
	label := 0
	for i, c := range b {
		switch {
		case c == '.':
			if label == 0 {
				return fmt.Errorf("empty label at byte %d", i)
			}
			label = 0
			continue
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_':
		default:
			return fmt.Errorf("byte %d (%q) is not a letter, digit, '-', '_' or '.'", i, c)
		}
		if label++; label > maxHostNameLabel {
			return fmt.Errorf("a label longer than %d bytes", maxHostNameLabel)
		}
	}
	if label == 0 {
		return errors.New("a trailing dot")
	}
	return nil
}

// lower returns b as a string, ASCII letters lowercased.
func lower(b []byte) string {
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			l := make([]byte, len(b))
			copy(l, b)
			for j := i; j < len(l); j++ {
				if 'A' <= l[j] && l[j] <= 'Z' {
					l[j] += 'a' - 'A'
				}
			}
			return string(l)
		}
	}
	return string(b)
}
