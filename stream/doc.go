// Package stream is edge's L4: connections relayed as bytes, without HTTP (the stream
// blocks of the config; docs/streams-l4.md).
//
//   - A Set holds the running streams keyed by protocol and address, kept across
//     reloads: Prepare binds new addresses (a failure changes nothing), Commit swaps the
//     Spec of kept streams (open connections go on), starts new ones and stops removed
//     ones; Shutdown stops accepting and gives open connections until its deadline.
//   - A TCP connection passes, in order: max_conns at accept, the PROXY header (only
//     from trusted peers, package proxyproto), the blacklist, the per-address bounds
//     (a guard: connections at once and a token bucket of new ones, in a bounded
//     table), the server name of its ClientHello when the stream routes by SNI, a Pool
//     (round robin, skipping a server that refused) or the client's cell (Cells, the
//     proxy's consistent-hash ring), an optional PROXY header to the server, and then
//     package tunnel's relay (splice on Linux), with half-close and an idle timeout.
//   - A UDP stream keeps a session per client address, with its own socket to a
//     server, bounded by MaxSessions and ended when idle.
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
// The package imports only edge's leaves proxyproto, shard and tunnel.
package stream
