//go:build unix

package rawsock

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// pair returns a wrapped client connection and the server end it is connected to,
// over real loopback TCP.
func pair(t *testing.T) (*Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := Listener{ln}.Accept()
		if err != nil {
			t.Error(err)
		}
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	srv := <-accepted
	if _, ok := srv.(*Conn); !ok {
		t.Fatalf("Listener accepted a %T, want *Conn", srv)
	}
	w := Wrap(c)
	rc, ok := w.(*Conn)
	if !ok {
		t.Fatalf("Wrap(*net.TCPConn) = %T", w)
	}
	t.Cleanup(func() { rc.Close(); srv.Close() })
	return rc, srv
}

func TestRoundTrip(t *testing.T) {
	c, srv := pair(t)
	if n, err := c.Write([]byte("GET / HTTP/1.1\r\n\r\n")); n != 18 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	buf := make([]byte, 64)
	n, err := io.ReadAtLeast(srv, buf, 18)
	if err != nil || string(buf[:n]) != "GET / HTTP/1.1\r\n\r\n" {
		t.Fatalf("server read %q, %v", buf[:n], err)
	}
	go srv.Write([]byte("HTTP/1.1 200 OK\r\n\r\n"))
	// The reply is not there when Read starts: it waits on the poller, then reads.
	n, err = io.ReadAtLeast(c, buf, 19)
	if err != nil || string(buf[:n]) != "HTTP/1.1 200 OK\r\n\r\n" {
		t.Fatalf("client read %q, %v", buf[:n], err)
	}
	if n, err := c.Read(nil); n != 0 || err != nil {
		t.Errorf("Read(nil) = %d, %v", n, err)
	}
}

// A write larger than the socket buffers completes across many EAGAIN waits, byte-exact,
// while the peer reads slowly; a large read returns at most MaxChunk.
func TestLargeWriteSlowReader(t *testing.T) {
	c, srv := pair(t)
	want := make([]byte, 8<<20)
	for i := range want {
		want[i] = byte(i * 7)
	}
	got := make(chan []byte, 1)
	go func() {
		var b bytes.Buffer
		buf := make([]byte, 64<<10)
		for b.Len() < len(want) {
			n, err := srv.Read(buf)
			if err != nil {
				t.Error(err)
				break
			}
			b.Write(buf[:n])
			if b.Len() < 1<<20 {
				time.Sleep(time.Millisecond) // slow at first: the writer hits a full buffer
			}
		}
		got <- b.Bytes()
	}()
	if n, err := c.Write(want); n != len(want) || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if b := <-got; !bytes.Equal(b, want) {
		t.Fatalf("peer got %d bytes, not the %d written", len(b), len(want))
	}

	go srv.Write(want[:2*MaxChunk])
	time.Sleep(50 * time.Millisecond)
	big := make([]byte, 4*MaxChunk)
	if n, err := c.Read(big); err != nil || n > MaxChunk {
		t.Fatalf("Read of a full buffer = %d, %v; want at most %d", n, err, MaxChunk)
	}
}

// Deadlines, set directly or by a watchdog, cut a blocked call with the error net gives.
func TestDeadline(t *testing.T) {
	c, _ := pair(t)
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	start := time.Now()
	_, err := c.Read(make([]byte, 10))
	var oe *net.OpError
	if !errors.As(err, &oe) || !oe.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past its deadline: %v (%T)", err, err)
	}
	if d := time.Since(start); d < 40*time.Millisecond || d > 2*time.Second {
		t.Errorf("read returned after %v", d)
	}

	c.SetReadDeadline(time.Time{})
	c.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
	_, err = c.Write(make([]byte, 64<<20)) // the peer never reads
	if !errors.As(err, &oe) || !oe.Timeout() {
		t.Fatalf("write past its deadline: %v", err)
	}
}

func TestEOFResetClose(t *testing.T) {
	c, srv := pair(t)
	srv.Close()
	if _, err := c.Read(make([]byte, 10)); err != io.EOF {
		t.Fatalf("read after the peer closed: %v, want io.EOF", err)
	}

	c, srv = pair(t)
	srv.(*Conn).Conn.(*net.TCPConn).SetLinger(0) // close with RST
	srv.Close()
	time.Sleep(20 * time.Millisecond)
	_, err := c.Read(make([]byte, 10))
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "read" || !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read after a reset: %v, want an OpError around ECONNRESET", err)
	}

	c, _ = pair(t)
	closeDuring(t, c, blockedRead(c))
}

// blockedRead is a Read of c, for closeDuring.
func blockedRead(c *Conn) map[string]func() error {
	return map[string]func() error{"read": func() error { _, err := c.Read(make([]byte, 10)); return err }}
}

// closeDuring starts the calls, lets them block, closes c, and checks that each call
// then ended with an error wrapping net.ErrClosed. It returns Close's error.
func closeDuring(t *testing.T, c *Conn, calls map[string]func() error) error {
	t.Helper()
	ended := map[string]chan error{}
	for name, call := range calls {
		ch := make(chan error, 1)
		ended[name] = ch
		go func() { ch <- call() }()
	}
	time.Sleep(50 * time.Millisecond)
	err := c.Close()
	for name, ch := range ended {
		select {
		case err := <-ch:
			if !errors.Is(err, net.ErrClosed) {
				t.Errorf("%s blocked at Close: %v, want net.ErrClosed", name, err)
			}
		case <-time.After(2 * time.Second):
			t.Fatalf("Close did not end a blocked %s", name)
		}
	}
	return err
}

// Connections without a raw socket are returned as they are.
func TestWrapOther(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if w := Wrap(a); w != a {
		t.Errorf("Wrap(pipe) = %T, want the pipe itself", w)
	}
}

// CloseWrite passes a half-close on: the peer reads EOF and can still answer.
func TestCloseWrite(t *testing.T) {
	c, srv := pair(t)
	if _, err := c.Write([]byte("last")); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(srv)
	if err != nil || string(got) != "last" {
		t.Fatalf("peer read %q, %v; want \"last\" then EOF", got, err)
	}
	srv.Write([]byte("reply"))
	srv.Close()
	if got, _ := io.ReadAll(c); string(got) != "reply" {
		t.Errorf("after CloseWrite the conn read %q, want reply", got)
	}
}
