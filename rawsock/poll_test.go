//go:build unix

package rawsock

import (
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// The runtime poller's descriptor is found for TCP and Unix sockets, so a proxy's
// reads wait first; a layout change in a future Go would fail here, not silently.
func TestPollDescFound(t *testing.T) {
	c, srv := pair(t)
	if c.poll == 0 || srv.(*Conn).poll == 0 {
		t.Fatal("no poller descriptor for a TCP connection: reads would try the socket first")
	}
	sock := filepath.Join(t.TempDir(), "s")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if s, err := ln.Accept(); err == nil {
			defer s.Close()
			io.Copy(io.Discard, s)
		}
	}()
	u, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if w, ok := Wrap(u).(*Conn); !ok || w.poll == 0 {
		t.Fatal("no poller descriptor for a Unix socket")
	}
}

// exchange writes req on c, has the peer answer after a pause, and reads the answer.
func exchange(t *testing.T, c *Conn, srv net.Conn, req, resp string) {
	t.Helper()
	if _, err := c.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(req))
	if _, err := io.ReadFull(srv, got); err != nil || string(got) != req {
		t.Fatalf("peer read %q, %v; want %q", got, err, req)
	}
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		time.Sleep(5 * time.Millisecond)
		srv.Write([]byte(resp))
	}()
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	<-wrote
	if err != nil || string(buf[:n]) != resp {
		t.Fatalf("read %q, %v; want %q", buf[:n], err, resp)
	}
}

// A read that follows a write waits for the poller instead of trying an empty socket:
// request/response exchanges make no failed reads at all.
func TestAnswerAwaitedWithoutEmptyReads(t *testing.T) {
	c, srv := pair(t)
	for i := 0; i < 20; i++ {
		exchange(t, c, srv, "GET / HTTP/1.1\r\n\r\n", "HTTP/1.1 200 OK\r\n\r\n")
	}
	if c.emptyReads != 0 {
		t.Errorf("%d reads found the socket empty over 20 exchanges, want 0", c.emptyReads)
	}
}

// An answer already there when the read starts (the peer was quicker than the reader)
// is read at once: the poller reported it while nobody waited.
func TestAnswerAlreadyThere(t *testing.T) {
	c, srv := pair(t)
	exchange(t, c, srv, "a", "b")
	c.Write([]byte("ping"))
	io.ReadFull(srv, make([]byte, 4))
	srv.Write([]byte("pong"))
	time.Sleep(20 * time.Millisecond)
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 16)
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "pong" {
		t.Fatalf("read %q, %v; want pong", buf[:n], err)
	}
}

// A peer that sends its last data and its FIN together, with no write of ours in
// between (a body read to EOF): the read after the data sees EOF at once.
func TestEOFAfterDataWithoutWrite(t *testing.T) {
	c, srv := pair(t)
	c.Write([]byte("GET"))
	io.ReadFull(srv, make([]byte, 3))
	srv.Write([]byte("body until close"))
	srv.Close()
	time.Sleep(20 * time.Millisecond) // data and FIN both arrive before the read
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "body until close" {
		t.Fatalf("read to EOF: %q, %v", got, err)
	}
}

// Data left in the socket by a read that filled its buffer is read after a write,
// without waiting for an event that will not come (pipelined requests).
func TestLeftoverReadAfterWrite(t *testing.T) {
	c, srv := pair(t)
	exchange(t, c, srv, "a", "b")
	srv.Write([]byte("first second"))
	time.Sleep(20 * time.Millisecond)
	buf := make([]byte, 6)
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "first " {
		t.Fatalf("first read %q, %v", buf[:n], err)
	}
	c.Write([]byte("answer to first"))
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "second" {
		t.Fatalf("read after the write: %q, %v; want the data left in the socket", buf[:n], err)
	}
}

// A wait for an answer ends at the read deadline, or at Close, with net's errors.
func TestAwaitDeadlineAndClose(t *testing.T) {
	c, srv := pair(t)
	exchange(t, c, srv, "a", "b")
	c.Write([]byte("no answer"))
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	start := time.Now()
	_, err := c.Read(make([]byte, 10))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("awaited answer past the deadline: %v, want a timeout", err)
	}
	if d := time.Since(start); d < 40*time.Millisecond || d > 2*time.Second {
		t.Errorf("timed out after %v, want ~50ms (+%v slack)", d, DeadlineSlack)
	}

	c.SetReadDeadline(time.Time{})
	c.Write([]byte("again")) // the read below awaits an answer
	closeDuring(t, c, blockedRead(c))
}
