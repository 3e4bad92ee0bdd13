package proxyproto

import (
	"io"
	"net"
	"time"

	"github.com/edge-gw/edge/internal/tcptest"
)

// pair returns both ends of a real loopback TCP connection: the one dialed (a
// client's) and the one accepted (a server's).
var pair = tcptest.Pair

// memConn is a net.Conn over data that returns at most chunk bytes a Read, then
// io.EOF, and counts what it returned: the fuzz test's conn, where real sockets would
// be too slow.
type memConn struct {
	data  []byte
	chunk int
	read  int
}

func (m *memConn) Read(p []byte) (int, error) {
	if m.read == len(m.data) {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), m.chunk)], m.data[m.read:])
	m.read += n
	return n, nil
}

func (m *memConn) Write(p []byte) (int, error)      { return len(p), nil }
func (m *memConn) Close() error                     { return nil }
func (m *memConn) LocalAddr() net.Addr              { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }
func (m *memConn) RemoteAddr() net.Addr             { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2), Port: 2} }
func (m *memConn) SetDeadline(time.Time) error      { return nil }
func (m *memConn) SetReadDeadline(time.Time) error  { return nil }
func (m *memConn) SetWriteDeadline(time.Time) error { return nil }

func tcp(s string) *net.TCPAddr {
	a, err := net.ResolveTCPAddr("tcp", s)
	if err != nil {
		panic(err)
	}
	return a
}

func udp(s string) *net.UDPAddr {
	a, err := net.ResolveUDPAddr("udp", s)
	if err != nil {
		panic(err)
	}
	return a
}
