package proxyproto

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"time"
)

// Options bound Read. The zero value is the defaults.
type Options struct {
	// Timeout bounds the reading of the header, from the call of Read. Zero means
	// DefaultTimeout; a negative value sets no deadline (the caller's stays).
	Timeout time.Duration
	// MaxSize bounds a version 2 header, its 16-byte preamble and TLVs included; a
	// longer one is rejected before its body is read. Zero means DefaultMaxSize;
	// values under 232 (the largest header without TLVs: UNIX addresses) are raised
	// to it. A version 1 line is bounded by the specification's 107 bytes.
	MaxSize int
}

// The defaults of Options.
const (
	DefaultTimeout = 3 * time.Second
	DefaultMaxSize = 4096
)

// minMaxSize is the largest v2 header without TLVs.
const minMaxSize = v2Preamble + unixAddrLen

// inline is the size of the buffer inside a Conn: a v1 line and most v2 headers fit,
// so that Read allocates no other buffer for them.
const inline = 256

// maxZeroReads bounds the reads that return nothing and no error in a row (a broken
// net.Conn), which would otherwise spin until the deadline.
const maxZeroReads = 100

// Read reads the PROXY header at the start of c, which the caller has accepted from a
// trusted proxy, and returns c wrapped in a *Conn that answers with the header's
// addresses (see the package doc). Read waits for no byte past the header.
//
// When Options.Timeout is not negative, Read sets a read deadline on c and clears it
// before returning (a deadline the caller set before is lost). On error, the caller
// closes c; Read does not.
func Read(c net.Conn, o Options) (*Conn, error) {
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	if o.MaxSize == 0 {
		o.MaxSize = DefaultMaxSize
	}
	o.MaxSize = max(o.MaxSize, minMaxSize)
	if o.Timeout > 0 {
		if err := c.SetReadDeadline(time.Now().Add(o.Timeout)); err != nil {
			return nil, fmt.Errorf("proxyproto: cannot set the header's read deadline: %w", err)
		}
		defer c.SetReadDeadline(time.Time{})
	}

	pc := &Conn{Conn: c}
	buf := pc.inline[:]
	n, zeros := 0, 0
	var rerr error
	for {
		version, hlen, err := frame(buf[:n], o.MaxSize)
		if err != nil {
			return nil, err
		}
		if hlen > 0 {
			h, err := decode(version, buf[:hlen])
			if err != nil {
				return nil, err
			}
			pc.hdr = h
			pc.pending = buf[hlen:n]
			pc.remote = h.SourceAddr()
			return pc, nil
		}
		if rerr != nil {
			return nil, readError(version, buf[:n], rerr, o.Timeout)
		}
		// Read no further than the header can end, as far as it is known: the
		// preamble of either version, a v1 line's limit, a v2 header's length.
		want := v2Preamble
		switch {
		case version == 1:
			want = v1Max
		case version == 2 && n >= v2Preamble:
			want = v2Preamble + int(binary.BigEndian.Uint16(buf[14:16]))
			if want > len(buf) {
				grown := make([]byte, want)
				copy(grown, buf[:n])
				buf = grown
			}
		}
		var k int
		k, rerr = c.Read(buf[n:want])
		n += k
		if k == 0 && rerr == nil {
			if zeros++; zeros == maxZeroReads {
				rerr = io.ErrNoProgress
			}
		}
	}
}

// readError is the error for a read that failed after the start b of a header.
func readError(version int, b []byte, err error, timeout time.Duration) error {
	if err == io.EOF {
		return truncated(version, b)
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() && timeout > 0 {
		return fmt.Errorf("proxyproto: no whole PROXY header within %v (%d bytes read): %w", timeout, len(b), err)
	}
	return fmt.Errorf("proxyproto: reading the PROXY header (%d bytes read): %w", len(b), err)
}

// Conn is a connection whose PROXY header Read has read. Its Read returns the bytes
// after the header, starting with any Read read past it; RemoteAddr is the client
// address of the header when it has one (see the package doc). Every other method is
// the underlying conn's. Unlike a net.Conn's, its Read must not be called from two
// goroutines at once; one reader and one writer at a time are fine.
type Conn struct {
	net.Conn
	hdr     Header
	remote  net.Addr // nil: the real peer's
	pending []byte
	inline  [inline]byte
}

// Header returns the header read. It is valid for the Conn's life and must not be
// modified.
func (c *Conn) Header() *Header { return &c.hdr }

// Read returns the bytes Read read past the header first, then reads from the
// underlying conn.
func (c *Conn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// RemoteAddr returns the client address of the header, or the real peer's when the
// header carries none (LOCAL, UNKNOWN, UNSPEC, UNIX).
func (c *Conn) RemoteAddr() net.Addr {
	if c.remote != nil {
		return c.remote
	}
	return c.Conn.RemoteAddr()
}

// NetConn returns the underlying conn, for a caller that copies from it directly (to
// splice): it must first take Pending, and not call the Conn's Read afterwards.
func (c *Conn) NetConn() net.Conn { return c.Conn }

// Pending returns the bytes read past the header that the Conn's Read has not returned
// yet: empty after a version 2 header, which is read exactly. The slice aliases the
// Conn's buffer and must not be modified.
func (c *Conn) Pending() []byte { return c.pending }

// CloseWrite half-closes the underlying conn when it can (a *net.TCPConn), else closes
// it, so that a tunnel passes an end of file through a Conn.
func (c *Conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}
