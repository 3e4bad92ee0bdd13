//go:build unix

package rawsock

import (
	"sync"
	"sync/atomic"
	"time"
)

// DeadlineSlack is how late a Conn's read or write deadline may fire.
//
// An HTTP client sets two deadlines per request (fasthttp's DoTimeout: one for writing
// the request, one for reading the response), each moving the previous one a few
// microseconds later. Every set is a lock and a timer-heap update in the runtime, and
// the timer almost never fires. A Conn arms the runtime's deadline DeadlineSlack past
// the one asked for and leaves it armed while later requests ask for a deadline at
// most DeadlineSlack before it: one timer update per connection every DeadlineSlack
// instead of two per request. A deadline that is earlier than the armed one (a
// deadline in the past that cuts a call off, a shorter timeout) or cleared is applied
// at once.
const DeadlineSlack = 20 * time.Millisecond

// deadline is one direction's deadline as armed in the runtime.
type deadline struct {
	mu    sync.Mutex   // serializes arming, so armed always says what is in force
	armed atomic.Int64 // Unix nanoseconds; 0 when none is armed
	arms  int          // deadlines applied to the socket, under mu; tests read it
}

// set asks for t; arm applies a deadline to the socket.
func (d *deadline) set(t time.Time, arm func(time.Time) error) error {
	want := int64(0)
	if !t.IsZero() {
		want = t.UnixNano()
	}
	if d.covers(d.armed.Load(), want) {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if a := d.armed.Load(); d.covers(a, want) {
		return nil
	}
	at := t
	if want != 0 {
		at = t.Add(DeadlineSlack)
	}
	if err := arm(at); err != nil {
		return err
	}
	if want != 0 {
		want = at.UnixNano()
	}
	d.armed.Store(want)
	d.arms++
	return nil
}

// covers reports whether the armed deadline a serves for want: both none, or a no
// earlier than want and at most DeadlineSlack later.
func (*deadline) covers(a, want int64) bool {
	if want == 0 || a == 0 {
		return want == a
	}
	return a >= want && a-want <= int64(DeadlineSlack)
}

// SetReadDeadline sets the read deadline like net.Conn, fired up to DeadlineSlack late.
func (c *Conn) SetReadDeadline(t time.Time) error {
	return c.rd.set(t, c.Conn.SetReadDeadline)
}

// SetWriteDeadline sets the write deadline like net.Conn, fired up to DeadlineSlack
// late.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	return c.wd.set(t, c.Conn.SetWriteDeadline)
}

// SetDeadline sets both deadlines like net.Conn, fired up to DeadlineSlack late.
func (c *Conn) SetDeadline(t time.Time) error {
	if err := c.rd.set(t, c.Conn.SetReadDeadline); err != nil {
		return err
	}
	return c.wd.set(t, c.Conn.SetWriteDeadline)
}
