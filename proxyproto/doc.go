// Package proxyproto reads and writes the PROXY protocol header (HAProxy's "PROXY
// protocol", versions 1 and 2), which a load balancer in front of edge puts at the
// start of a TCP connection to tell the client's address, and which edge puts in front
// of the bytes it sends to an upstream for the same reason.
//
// Reading. Read takes a freshly accepted connection, reads its header under its own
// deadline and returns a *Conn whose RemoteAddr is the client address the header
// carries. Its contract:
//
//   - Trust is the caller's job. A PROXY header lets its sender claim any address, so
//     call Read only for a peer in the configured trusted_proxies, and treat any other
//     peer's connection as plain (never parse a header it sends).
//   - Bounded. A version 1 line is at most 107 bytes (the specification's limit); a
//     version 2 header is at most Options.MaxSize bytes, TLVs included. Read never
//     holds more than that, and gives up after Options.Timeout.
//   - Nothing lost, nothing waited for. Read never waits for a byte past the header, so
//     a protocol in which the server speaks first (MySQL, SMTP) works behind it. A
//     version 2 header is read exactly; reading a version 1 line may read some bytes
//     past its CRLF when they arrived with it: the Conn's Read returns those first, and
//     Pending shows them to a caller that copies from NetConn directly (to splice).
//   - Addresses. For a PROXY command over TCP or UDP (v1 TCP4 or TCP6; v2 INET or
//     INET6, stream or datagram) RemoteAddr is the header's source address. For a v2
//     LOCAL command (a balancer's health check), a v1 UNKNOWN line, a v2 UNSPEC family
//     or a v2 UNIX address, RemoteAddr stays the real peer's. LocalAddr is always the
//     real local address; the header's destination is in Header.
//   - Errors. Every malformed header is an error that says what is wrong and wraps
//     ErrInvalid; bytes that do not start a PROXY header at all wrap ErrNotProxy; a
//     connection that ends inside a header wraps io.ErrUnexpectedEOF, and one that ends
//     before any byte wraps io.EOF; a timeout wraps os.ErrDeadlineExceeded. Nothing
//     read panics, whatever the bytes.
//
// Parse decodes a header from a byte slice (a UDP datagram's prefix, a test), with the
// same checks.
//
// Writing. AppendV1, AppendV2 and AppendV2Local append a header to a byte slice, in
// the style of strconv.Append*: they allocate only when dst must grow.
//
// The package imports nothing of edge.
package proxyproto
