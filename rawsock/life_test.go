//go:build unix

package rawsock

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// Close ends a blocked Read and a blocked Write with net.ErrClosed, closes the socket
// (the peer sees EOF) once they have returned, refuses later calls, and reports a
// second Close as an error.
func TestCloseWithCallsInFlight(t *testing.T) {
	c, srv := pair(t)
	if c.poll == 0 {
		t.Fatal("no poller descriptor: this test needs the direct path")
	}
	calls := blockedRead(c)
	calls["write"] = func() error { _, err := c.Write(make([]byte, 64<<20)); return err } // the peer does not read yet
	if err := closeDuring(t, c, calls); err != nil {
		t.Fatalf("Close with calls in flight: %v", err)
	}
	srv.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.Copy(io.Discard, srv); err != nil {
		t.Errorf("peer reading to EOF after Close: %v (the socket was not closed)", err)
	}
	if _, err := c.Read(make([]byte, 8)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Read after Close: %v", err)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write after Close: %v", err)
	}
	if err := c.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close: %v, want net.ErrClosed", err)
	}
}

// A closed Conn never touches the descriptor number again, even once the kernel has
// given it to a new connection.
func TestClosedDescriptorNotReused(t *testing.T) {
	for i := 0; i < 20; i++ {
		old, _ := pair(t)
		oldFD := old.fd
		old.Close()
		c, srv := pair(t)
		if _, err := srv.Write([]byte("for the new connection")); err != nil {
			t.Fatal(err)
		}
		if _, err := old.Read(make([]byte, 64)); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read on a closed Conn (fd %d, new fd %d): %v", oldFD, c.fd, err)
		}
		buf := make([]byte, 64)
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if n, err := c.Read(buf); err != nil || string(buf[:n]) != "for the new connection" {
			t.Fatalf("new connection read %q, %v", buf[:n], err)
		}
	}
}
