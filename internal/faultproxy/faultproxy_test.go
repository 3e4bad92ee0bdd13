package faultproxy

import (
	"bytes"
	"errors"
	"github.com/edge-gw/edge/internal/tcptest"
	"io"
	"net"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// echo starts a TCP server that writes back what it reads; a line "big\n" is answered with
// 64 KiB of 'x'.
func echo(t *testing.T) string {
	return tcptest.Serve(t, func(c net.Conn) {
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			if string(buf[:n]) == "big\n" {
				_, _ = c.Write(bytes.Repeat([]byte("x"), 64<<10))
				continue
			}
			if _, err := c.Write(buf[:n]); err != nil {
				return
			}
		}
	})
}

func dial(t *testing.T, p *Proxy) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip writes msg and reads len(msg) bytes back within 5 s.
func roundTrip(c net.Conn, msg string) (string, error) {
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		return "", err
	}
	b := make([]byte, len(msg))
	_, err := io.ReadFull(c, b)
	return string(b), err
}

func TestPassThroughAndLatency(t *testing.T) {
	p := Start(t, echo(t))
	c := dial(t, p)
	if got, err := roundTrip(c, "hello"); err != nil || got != "hello" {
		t.Fatalf("pass-through: %q %v", got, err)
	}
	p.SetLatency(Up, 150*time.Millisecond)
	p.SetLatency(Down, 150*time.Millisecond)
	start := time.Now()
	if got, err := roundTrip(c, "slow"); err != nil || got != "slow" {
		t.Fatalf("with latency: %q %v", got, err)
	}
	// A lower bound only: the proxy must have waited; how much longer it took is the machine's.
	if el := time.Since(start); el < 300*time.Millisecond {
		t.Errorf("round trip took %v with 150ms each way", el)
	}
	if p.Accepted() != 1 || p.Open() != 1 {
		t.Errorf("accepted %d open %d, want 1 and 1", p.Accepted(), p.Open())
	}
}

func TestBandwidth(t *testing.T) {
	p := Start(t, echo(t))
	p.SetBandwidth(Down, 64<<10) // 64 KiB/s: the 64 KiB answer takes about a second
	c := dial(t, p)
	start := time.Now()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Write([]byte("big\n")); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(io.LimitReader(c, 64<<10))
	if err != nil || len(got) != 64<<10 {
		t.Fatalf("read %d bytes: %v", len(got), err)
	}
	if el := time.Since(start); el < 800*time.Millisecond {
		t.Errorf("64 KiB at 64 KiB/s took %v", el)
	}
}

func isReset(err error) bool { return errors.Is(err, syscall.ECONNRESET) }

func TestResetAfter(t *testing.T) {
	p := Start(t, echo(t))
	p.ResetAfter(1000)
	c := dial(t, p)
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("big\n")); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if len(got) > 1000 || !isReset(err) {
		t.Errorf("read %d bytes then %v, want at most 1000 then connection reset", len(got), err)
	}
	if p.Resets() != 1 {
		t.Errorf("resets %d, want 1", p.Resets())
	}
}

func TestBlackholeAndHeal(t *testing.T) {
	p := Start(t, echo(t))
	c := dial(t, p)
	p.Blackhole(true)
	_ = c.SetDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := c.Write([]byte("held")); err != nil {
		t.Fatal(err)
	}
	var b [4]byte
	if n, err := c.Read(b[:]); !isTimeout(err) {
		t.Errorf("blackholed read: %d bytes, %v; want a timeout", n, err)
	}
	fresh := dial(t, p) // accepted, and silent too
	_ = fresh.SetDeadline(time.Now().Add(300 * time.Millisecond))
	_, _ = fresh.Write([]byte("late"))
	if n, err := fresh.Read(b[:]); !isTimeout(err) {
		t.Errorf("new connection while blackholed: %d bytes, %v; want a timeout", n, err)
	}
	p.Heal()
	// What was sent into the blackhole arrives once it ends, in order.
	for _, x := range []struct {
		c    net.Conn
		want string
	}{{c, "held"}, {fresh, "late"}} {
		_ = x.c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(x.c, b[:]); err != nil || string(b[:]) != x.want {
			t.Errorf("after heal: %q %v, want %q", b, err, x.want)
		}
	}
	if got, err := roundTrip(dial(t, p), "back"); err != nil || got != "back" {
		t.Errorf("new connection after heal: %q %v", got, err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestRefuseResetAllCutAll(t *testing.T) {
	p := Start(t, echo(t))
	live := dial(t, p)
	if _, err := roundTrip(live, "up"); err != nil {
		t.Fatal(err)
	}
	p.Refuse(true)
	// The reset may come before the dial returns or at the first read.
	if c, err := net.Dial("tcp", p.Addr); err == nil {
		defer c.Close()
		if _, err := roundTrip(c, "no"); err == nil {
			t.Errorf("a new connection while refusing worked")
		}
	} else if !isReset(err) {
		t.Errorf("dial while refusing: %v, want connection reset", err)
	}
	if got, err := roundTrip(live, "still"); err != nil || got != "still" {
		t.Errorf("an open connection while refusing: %q %v", got, err)
	}
	p.Refuse(false)

	p.ResetAll()
	if _, err := roundTrip(live, "gone"); !isReset(err) && !errors.Is(err, syscall.EPIPE) {
		t.Errorf("after ResetAll: %v, want connection reset", err)
	}
	c := dial(t, p)
	if _, err := roundTrip(c, "new"); err != nil {
		t.Fatalf("new connection after ResetAll: %v", err)
	}
	p.CutAll()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("after CutAll: %d bytes, %v; want EOF", n, err)
	}
}

// Close ends every goroutine the proxy started.
func TestCloseLeavesNoGoroutines(t *testing.T) {
	target := echo(t)
	before := runtime.NumGoroutine()
	p := Start(t, target)
	for range 10 {
		c := dial(t, p)
		if _, err := roundTrip(c, "x"); err != nil {
			t.Fatal(err)
		}
	}
	p.Blackhole(true)
	p.SetLatency(Down, time.Hour)
	p.Close()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before+10 { // the echo server's 10 handlers end as clients close
		if time.Now().After(deadline) {
			t.Fatalf("goroutines %d after Close, %d before Start", runtime.NumGoroutine(), before)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if p.Open() != 0 {
		t.Errorf("open %d after Close", p.Open())
	}
}
