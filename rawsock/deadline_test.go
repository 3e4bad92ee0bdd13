//go:build unix

package rawsock

import (
	"errors"
	"os"
	"testing"
	"time"
)

// readErrAfter reads from c, which nobody writes to, and returns how long the read
// took and its error.
func readErrAfter(c *Conn) (time.Duration, error) {
	start := time.Now()
	_, err := c.Read(make([]byte, 8))
	return time.Since(start), err
}

// A client moving its deadline forward on every request arms the runtime's timer
// once per DeadlineSlack, not once per request.
func TestDeadlineArmedCoarsely(t *testing.T) {
	c, _ := pair(t)
	start := time.Now()
	for i := 0; i < 1000; i++ {
		c.SetReadDeadline(time.Now().Add(time.Second))
		c.SetWriteDeadline(time.Now().Add(time.Second))
	}
	elapsed := time.Since(start)
	most := 2 * (1 + int(elapsed/DeadlineSlack))
	if arms := c.rd.arms + c.wd.arms; arms > most {
		t.Errorf("2000 deadline moves over %v armed the socket %d times, want at most %d", elapsed, arms, most)
	}
}

// A deadline fires no earlier than asked and at most DeadlineSlack later; an earlier
// deadline replaces a later one at once; a deadline in the past cuts off at once;
// clearing it lets a read wait for data.
func TestDeadlineSemantics(t *testing.T) {
	c, srv := pair(t)

	c.SetReadDeadline(time.Now().Add(60 * time.Millisecond))
	d, err := readErrAfter(c)
	if !errors.Is(err, os.ErrDeadlineExceeded) || d < 60*time.Millisecond || d > 60*time.Millisecond+DeadlineSlack+time.Second {
		t.Errorf("60ms deadline: %v after %v", err, d)
	}

	c.SetReadDeadline(time.Now().Add(time.Hour))
	c.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
	if d, err := readErrAfter(c); !errors.Is(err, os.ErrDeadlineExceeded) || d > time.Second {
		t.Errorf("deadline moved from an hour to 30ms: %v after %v", err, d)
	}

	c.SetReadDeadline(time.Now().Add(time.Hour))
	c.SetReadDeadline(time.Unix(1, 0))
	if d, err := readErrAfter(c); !errors.Is(err, os.ErrDeadlineExceeded) || d > 100*time.Millisecond {
		t.Errorf("deadline in the past: %v after %v", err, d)
	}

	c.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
	c.SetReadDeadline(time.Time{})
	go func() { time.Sleep(100 * time.Millisecond); srv.Write([]byte("late")) }()
	buf := make([]byte, 8)
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "late" {
		t.Errorf("read with the deadline cleared: %q, %v; want the data sent at 100ms", buf[:n], err)
	}

	c.SetDeadline(time.Now().Add(40 * time.Millisecond))
	if _, err := readErrAfter(c); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("SetDeadline: read %v, want a timeout", err)
	}
}
