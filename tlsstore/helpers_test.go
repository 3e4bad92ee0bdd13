package tlsstore

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/edge-gw/edge/internal/testcert"
)

// serve runs a TLS echo server with cfg on 127.0.0.1:0 until the test ends
// and returns its address. Each connection runs the server handshake, then
// copies what it reads back.
func serve(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
	)
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Go(func() {
				defer func() {
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
					c.Close()
				}()
				tc := tls.Server(c, cfg)
				if tc.Handshake() != nil {
					return
				}
				_, _ = io.Copy(tc, tc)
			})
		}
	})
	return ln.Addr().String()
}

// open dials addr with cfg, runs the handshake and one echo round trip (so a
// TLS 1.3 client has read the session tickets) and returns the open
// connection, closed when the test ends.
func open(t *testing.T, addr string, cfg *tls.Config) (*tls.Conn, error) {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	echo(t, c)
	return c, nil
}

// handshake is open for one connection: it returns the connection state and
// closes the connection.
func handshake(t *testing.T, addr string, cfg *tls.Config) (tls.ConnectionState, error) {
	t.Helper()
	c, err := open(t, addr, cfg)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer c.Close()
	return c.ConnectionState(), nil
}

// echo sends a message on c and checks it comes back.
func echo(t *testing.T, c *tls.Conn) {
	t.Helper()
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	msg := []byte("ping")
	if _, err := c.Write(msg); err != nil {
		t.Fatalf("write: %v", err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read: %v", err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("echo: got %q, want %q", got, msg)
	}
}

// served is the serial of the leaf a connection got.
func served(st tls.ConnectionState) int64 {
	return st.PeerCertificates[0].SerialNumber.Int64()
}

// mustLoad loads leaves as blocks "test.hcl:N,1" and fails the test on error.
func mustLoad(t *testing.T, leaves ...testcert.Leaf) *Certs {
	t.Helper()
	c, err := Load(blocks(leaves...), time.Now())
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return c
}

func blocks(leaves ...testcert.Leaf) []CertFile {
	files := make([]CertFile, len(leaves))
	for i, l := range leaves {
		files[i] = CertFile{CertFile: l.CertFile, KeyFile: l.KeyFile, Where: where(i)}
	}
	return files
}

func where(i int) string {
	return "test.hcl:" + strconv.Itoa(i+1) + ",1"
}
