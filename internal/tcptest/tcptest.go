// Package tcptest gives tests real loopback TCP connections.
package tcptest

import (
	"net"
	"testing"
)

// Pair returns both ends of a real loopback TCP connection: the one dialed and the one
// accepted, both closed when the test ends. It fails the test if either cannot be made.
func Pair(t testing.TB) (dialed, accepted *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}
