// Package tcptest gives tests real loopback TCP connections.
package tcptest

import (
	"io"
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

// Serve listens on a loopback port until the test ends and runs handle on each
// connection accepted, in a goroutine of its own; the connection is closed when handle
// returns. It returns the address to dial.
func Serve(t testing.TB, handle func(c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return ln.Addr().String()
}

// Echo serves a TCP echo (each connection gets back what it sends) on a loopback port
// until the test ends, and returns its address.
func Echo(t testing.TB) string {
	t.Helper()
	return Serve(t, func(c net.Conn) { io.Copy(c, c) })
}
