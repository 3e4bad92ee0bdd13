package stream

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"io"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/edge-gw/edge/internal/tcptest"
)

// pair returns both ends of a real loopback TCP connection: the one dialed (a
// client's) and the one accepted (a server's).
var pair = tcptest.Pair

// recorder is the server side of a crypto/tls client that never answers: it keeps
// what the client writes, and its first Read ends the handshake. What was written by
// then is the client's first flight: its ClientHello.
type recorder struct{ w bytes.Buffer }

func (r *recorder) Read([]byte) (int, error)         { return 0, io.EOF }
func (r *recorder) Write(p []byte) (int, error)      { return r.w.Write(p) }
func (r *recorder) Close() error                     { return nil }
func (r *recorder) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (r *recorder) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (r *recorder) SetDeadline(time.Time) error      { return nil }
func (r *recorder) SetReadDeadline(time.Time) error  { return nil }
func (r *recorder) SetWriteDeadline(time.Time) error { return nil }

// clientHello returns the ClientHello a crypto/tls client with cfg sends.
func clientHello(t testing.TB, cfg *tls.Config) []byte {
	t.Helper()
	r := &recorder{}
	if err := tls.Client(r, cfg).Handshake(); err == nil {
		t.Fatal("a handshake without a server succeeded")
	}
	if r.w.Len() == 0 {
		t.Fatal("the client wrote nothing")
	}
	return r.w.Bytes()
}

// reframe returns the handshake bytes of hello's records in new records whose
// payloads have the sizes given, in turn and then the last size repeated.
func reframe(hello []byte, sizes ...int) []byte {
	var hs []byte
	version := hello[1:3]
	for b := hello; len(b) >= 5; {
		n := int(binary.BigEndian.Uint16(b[3:5]))
		hs = append(hs, b[5:5+n]...)
		b = b[5+n:]
	}
	var out []byte
	for i := 0; len(hs) > 0; i++ {
		n := min(sizes[min(i, len(sizes)-1)], len(hs))
		out = append(out, 0x16, version[0], version[1], byte(n>>8), byte(n))
		out = append(out, hs[:n]...)
		hs = hs[n:]
	}
	return out
}

// memConn is a net.Conn over data that returns at most chunk bytes a Read, then
// io.EOF, and counts what it returned: the fuzz test's conn.
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
func (m *memConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (m *memConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (m *memConn) SetDeadline(time.Time) error      { return nil }
func (m *memConn) SetReadDeadline(time.Time) error  { return nil }
func (m *memConn) SetWriteDeadline(time.Time) error { return nil }

// selfSigned returns a certificate for names, and a pool that trusts it.
func selfSigned(t testing.TB, names ...string) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}
