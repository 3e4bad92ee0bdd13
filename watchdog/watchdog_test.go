package watchdog

import (
	"bufio"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// serve starts a fasthttp server with no deadlines of its own behind a watchdog
// listener, answering every request with body after delay.
func serve(t *testing.T, to Timeouts, delay time.Duration, body []byte) *Listener {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := Listen(inner, to)
	srv := &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			time.Sleep(delay)
			ctx.Response.SetBodyRaw(body)
		},
		ErrorHandler: func(ctx *fasthttp.RequestCtx, err error) {
			var to interface{ Timeout() bool }
			if errors.As(err, &to) && to.Timeout() {
				ctx.SetStatusCode(fasthttp.StatusRequestTimeout)
			} else {
				ctx.SetStatusCode(fasthttp.StatusBadRequest)
			}
		},
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown() })
	return ln
}

func dial(t *testing.T, ln *Listener) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// closedWithin reports how long the server took to close c, reading whatever it sends;
// it fails the test if c is still open after limit.
func closedWithin(t *testing.T, c net.Conn, limit time.Duration) (time.Duration, string) {
	t.Helper()
	start := time.Now()
	c.SetReadDeadline(start.Add(limit))
	got, err := io.ReadAll(c)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("connection still open after %v", limit)
	}
	return time.Since(start), string(got)
}

const get = "GET / HTTP/1.1\r\nHost: x\r\n\r\n"

func TestIdleKeepAliveClosed(t *testing.T) {
	ln := serve(t, Timeouts{Read: 5 * time.Second, Idle: 200 * time.Millisecond, Write: 5 * time.Second}, 0, []byte("ok"))
	c := dial(t, ln)
	io.WriteString(c, get)
	r := bufio.NewReader(c)
	resp := fasthttp.AcquireResponse()
	if err := resp.Read(r); err != nil || string(resp.Body()) != "ok" {
		t.Fatalf("first response: %v %q", err, resp.Body())
	}
	d, _ := closedWithin(t, c, 3*time.Second)
	if d < 150*time.Millisecond || d > time.Second {
		t.Errorf("idle connection closed after %v, want about 200ms", d)
	}
}

func TestSlowRequestCutOff(t *testing.T) {
	ln := serve(t, Timeouts{Read: 300 * time.Millisecond, Idle: 10 * time.Second, Write: 5 * time.Second}, 0, nil)
	c := dial(t, ln)
	stop := make(chan struct{})
	defer close(stop)
	go func() { // a header line every 50ms: each read is quick, the request never ends
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n")
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
				if _, err := io.WriteString(c, "X-Drip: 1\r\n"); err != nil {
					return
				}
			}
		}
	}()
	d, got := closedWithin(t, c, 3*time.Second)
	if d > 1500*time.Millisecond {
		t.Errorf("dripping client held the connection %v, want cut at about 300ms", d)
	}
	if !strings.HasPrefix(got, "HTTP/1.1 408") {
		t.Errorf("dripping client got %q, want a 408 before the close", got)
	}
}

func TestUnreadResponseCutOff(t *testing.T) {
	big := make([]byte, 32<<20) // far more than the socket buffers hold
	ln := serve(t, Timeouts{Read: 5 * time.Second, Idle: 5 * time.Second, Write: 300 * time.Millisecond}, 0, big)
	c := dial(t, ln)
	io.WriteString(c, get)
	// The client never reads, so the server's write blocks; the watchdog must end it and
	// let the server close the connection. Time it from when the write is under way.
	writing := func() bool {
		ln.mu.Lock()
		defer ln.mu.Unlock()
		return len(ln.conns) == 1 && ln.conns[0].stamp.Load()&1 != 0
	}
	for end := time.Now().Add(10 * time.Second); !writing(); time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("the server never started writing the response")
		}
	}
	start := time.Now()
	for ln.Watched() != 0 {
		if time.Since(start) > 5*time.Second {
			t.Fatal("server connection still open 5s after its write began, with a 300ms write timeout")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The handler's own time is not limited: a slow answer on a connection whose read and
// write limits are shorter arrives whole.
func TestSlowHandlerNotCut(t *testing.T) {
	ln := serve(t, Timeouts{Read: 100 * time.Millisecond, Idle: 100 * time.Millisecond, Write: 100 * time.Millisecond}, 600*time.Millisecond, []byte("late"))
	c := dial(t, ln)
	for range 2 { // twice on one connection: the second request starts idle
		io.WriteString(c, get)
		resp := fasthttp.AcquireResponse()
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		if err := resp.Read(bufio.NewReader(c)); err != nil || string(resp.Body()) != "late" {
			t.Fatalf("slow handler: %v %q", err, resp.Body())
		}
		fasthttp.ReleaseResponse(resp)
	}
}

func TestClosedConnectionsForgotten(t *testing.T) {
	ln := serve(t, Timeouts{Read: time.Second, Idle: time.Second, Write: time.Second}, 0, []byte("ok"))
	cs := make([]net.Conn, 20)
	for i := range cs {
		cs[i] = dial(t, ln)
		io.WriteString(cs[i], get)
		resp := fasthttp.AcquireResponse()
		if err := resp.Read(bufio.NewReader(cs[i])); err != nil {
			t.Fatal(err)
		}
	}
	if n := ln.Watched(); n != len(cs) {
		t.Fatalf("watching %d connections, want %d", n, len(cs))
	}
	for _, c := range cs {
		c.Close()
	}
	for end := time.Now().Add(3 * time.Second); ln.Watched() != 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("still watching %d closed connections", ln.Watched())
		}
	}
}

func TestTick(t *testing.T) {
	for _, c := range []struct {
		t    Timeouts
		want time.Duration
	}{
		{Timeouts{}, 100 * time.Millisecond},
		{Timeouts{Read: 10 * time.Second, Idle: 60 * time.Second}, 100 * time.Millisecond},
		{Timeouts{Read: 300 * time.Millisecond, Write: time.Minute}, 30 * time.Millisecond},
		{Timeouts{Idle: time.Millisecond}, time.Millisecond},
	} {
		if got := c.t.Tick(); got != c.want {
			t.Errorf("%+v: tick %v, want %v", c.t, got, c.want)
		}
	}
}

// A Read and a Write on a watched connection do not allocate.
func TestNoAllocs(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := Listen(inner, Timeouts{Read: time.Second, Idle: time.Second, Write: time.Second})
	defer ln.Close()
	go func() {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, c) // echo
	}()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 1)
	if n := testing.AllocsPerRun(200, func() {
		c.Write(buf)
		io.ReadFull(c, buf)
	}); n != 0 {
		t.Errorf("%v allocs per write+read, want 0", n)
	}
}

// An unwatched connection is no longer cut off at the idle limit, and CloseWrite
// reaches the socket.
func TestUnwatchAndCloseWrite(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := Listen(inner, Timeouts{Idle: 50 * time.Millisecond})
	defer ln.Close()
	peer := make(chan net.Conn, 1)
	go func() {
		c, _ := net.Dial("tcp", ln.Addr().String())
		peer <- c
	}()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p := <-peer
	defer p.Close()
	c.(*Conn).Unwatch()
	if ln.Watched() != 0 {
		t.Errorf("watched = %d after Unwatch", ln.Watched())
	}
	go func() {
		time.Sleep(300 * time.Millisecond) // six idle limits
		p.Write([]byte("late"))
		p.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "late" {
		t.Errorf("unwatched read = %q, %v; want \"late\" then EOF", got, err)
	}
	if err := c.(*Conn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(p); err != nil || len(b) != 0 {
		t.Errorf("peer after CloseWrite read %q, %v; want EOF", b, err)
	}
}

// TestLimitRead: reads stop at the limit (what lies past it stays unread), the next one
// fails with ErrReadLimit, and writing the response lifts the limit.
func TestLimitRead(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := Listen(inner, Timeouts{Read: 5 * time.Second, Idle: 5 * time.Second})
	defer ln.Close()
	go func() {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return
		}
		defer c.Close()
		io.WriteString(c, "0123456789abcdef")
		io.Copy(io.Discard, c) // until the test closes its side
	}()
	nc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	c := nc.(*Conn)
	c.LimitRead(10)
	buf := make([]byte, 64)
	got := ""
	for len(got) < 10 {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("read within the limit: %v", err)
		}
		got += string(buf[:n])
	}
	if got != "0123456789" || c.ReadLimited() != true {
		t.Fatalf("read %q, limited %v; want the first 10 bytes and the limit reached", got, c.ReadLimited())
	}
	if n, err := c.Read(buf); n != 0 || !errors.Is(err, ErrReadLimit) {
		t.Fatalf("read past the limit = %d, %v; want ErrReadLimit", n, err)
	}
	if _, err := c.Write([]byte("answer")); err != nil {
		t.Fatal(err)
	}
	if c.ReadLimited() {
		t.Error("still limited after the response was written")
	}
	n, err := io.ReadAtLeast(c, buf, 6)
	if err != nil || string(buf[:n]) != "abcdef" {
		t.Errorf("read after the response = %q, %v; want the bytes past the limit, abcdef", buf[:n], err)
	}
}
