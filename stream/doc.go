// Package stream is edge's L4: connections relayed as bytes, without HTTP (the stream
// blocks of the config). So far it holds what routing a TLS connection by its server
// name takes without terminating TLS:
//
//   - PeekServerName reads a client's ClientHello, exactly the TLS records that carry
//     it and not a byte more, and returns the server name it asks for with the bytes
//     read. The caller forwards those bytes unchanged to the upstream it picks, then
//     relays the rest (with a splice when it can: nothing of the connection is left
//     buffered in a wrapper).
//   - An SNIRouter maps a server name to a target: exact names, then one-label
//     wildcards, then a default. It is immutable once built, safe for concurrent use,
//     and Pick allocates nothing; a config reload builds a new one.
//
// Neither trusts the client: every length is checked before it is used, reads are
// bounded in bytes and in time, and malformed input is an error that says what is
// wrong, never a panic.
//
// The package imports nothing of edge.
package stream
