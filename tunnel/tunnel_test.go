package tunnel

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/edge-gw/edge/internal/tcptest"
)

// pair returns both ends of a real loopback TCP connection: the one dialed (a
// client's) and the one accepted (a server's).
var pair = tcptest.Pair

// wrappedTCP hides *net.TCPConn from the splice check but keeps CloseWrite: the copy
// path with half-close, as with a tls.Conn.
type wrappedTCP struct{ *net.TCPConn }

// hijacked is what fasthttp hands a hijack handler: no CloseWrite, and a Close that does
// nothing (fasthttp closes the conn after the handler returns).
type hijacked struct{ net.Conn }

func (hijacked) Close() error { return nil }

// mode is how the proxy's ends of a tunnel look to Run.
type mode struct {
	name     string
	client   func(*net.TCPConn) net.Conn
	upstream func(*net.TCPConn) net.Conn
	halfOpen bool // the client side can be half-closed (CloseWrite)
}

func bare(c *net.TCPConn) net.Conn { return c }
func half(c *net.TCPConn) net.Conn { return wrappedTCP{c} }
func hijack(c *net.TCPConn) net.Conn {
	return hijacked{c}
}

var modes = []mode{
	{"splice", bare, bare, true},
	{"copy", half, half, true},
	{"hijacked", hijack, half, false},
}

// rig is a tunnel under test: the test plays the client app and the upstream app on
// real TCP conns, and Run relays between the proxy's ends of them.
type rig struct {
	client   *net.TCPConn // the client app's end
	upstream *net.TCPConn // the upstream app's end
	res      chan Result
}

// start runs a tunnel of g between two fresh loopback connections; before is called
// with the apps' ends before Run starts. It takes the slot itself.
func start(t testing.TB, g *Group, m mode, o Options, before func(client, upstream *net.TCPConn)) *rig {
	t.Helper()
	if !g.Acquire() {
		t.Fatal("Acquire: false")
	}
	return startAcquired(t, g, m, o, before)
}

func startAcquired(t testing.TB, g *Group, m mode, o Options, before func(client, upstream *net.TCPConn)) *rig {
	t.Helper()
	capp, pclient := pair(t)
	pup, uapp := pair(t)
	if before != nil {
		before(capp, uapp)
	}
	rg := &rig{client: capp, upstream: uapp, res: make(chan Result, 1)}
	go func() {
		res := g.Run(m.client(pclient), m.upstream(pup), o)
		// What fasthttp does after the hijack handler; a second Close is harmless.
		pclient.Close()
		pup.Close()
		rg.res <- res
	}()
	return rg
}

// wait returns the tunnel's Result, failing when it takes longer than a generous bound.
func (rg *rig) wait(t testing.TB) Result {
	t.Helper()
	select {
	case res := <-rg.res:
		return res
	case <-time.After(10 * time.Second):
		t.Fatal("the tunnel did not end")
		return Result{}
	}
}

func (rg *rig) running() bool {
	select {
	case res := <-rg.res:
		rg.res <- res
		return false
	default:
		return true
	}
}

// readAll reads c to its end, with a bound on the wait.
func readAll(t testing.TB, c net.Conn) ([]byte, error) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	return io.ReadAll(c)
}

// echo serves c as an echo server until end of file, then closes it.
func echo(c net.Conn) {
	defer c.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, err := c.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func TestEcho(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			g := NewRegistry().NewGroup(0)
			rg := start(t, g, m, Options{}, nil)
			go echo(rg.upstream)

			const count = 10_000
			rng := rand.New(rand.NewPCG(1, 2))
			sizes := make([]int, count)
			total := 0
			for i := range sizes {
				sizes[i] = 1 + rng.IntN(1<<rng.IntN(17)) // mostly small, some up to 64 KiB
				total += sizes[i]
			}
			msg := func(i int) []byte {
				b := make([]byte, sizes[i])
				for j := range b {
					b[j] = byte(i*31 + j*7)
				}
				return b
			}
			werr := make(chan error, 1)
			go func() {
				for i := range count {
					if _, err := rg.client.Write(msg(i)); err != nil {
						werr <- err
						return
					}
				}
				werr <- nil
			}()
			got := make([]byte, 64<<10)
			for i := range count {
				want := msg(i)
				if _, err := io.ReadFull(rg.client, got[:len(want)]); err != nil {
					t.Fatalf("message %d: %v", i, err)
				}
				if !bytes.Equal(got[:len(want)], want) {
					t.Fatalf("message %d of %d bytes differs", i, len(want))
				}
			}
			if err := <-werr; err != nil {
				t.Fatal(err)
			}
			rg.client.CloseWrite()
			if rest, err := readAll(t, rg.client); len(rest) != 0 || err != nil {
				t.Fatalf("after the last echo: %d bytes, %v; want end of file", len(rest), err)
			}
			res := rg.wait(t)
			want := Result{Up: int64(total), Down: int64(total), Reason: ReasonClosed}
			if res != want {
				t.Fatalf("Result %+v, want %+v", res, want)
			}
			if up, down := g.Bytes(); up != uint64(total) || down != uint64(total) {
				t.Fatalf("Bytes %d, %d; want %d both", up, down, total)
			}
			if g.Active() != 0 || g.Total() != 1 {
				t.Fatalf("Active %d, Total %d; want 0, 1", g.Active(), g.Total())
			}
		})
	}
}

func TestPending(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			g := NewRegistry().NewGroup(0)
			o := Options{
				ClientPending:   []byte("client-pending|"),
				UpstreamPending: []byte("upstream-pending|"),
			}
			// Bytes sent before Run starts wait in the kernel: pending must still go first.
			rg := start(t, g, m, o, func(client, upstream *net.TCPConn) {
				client.Write([]byte("client-later"))
				upstream.Write([]byte("upstream-later"))
			})
			f := func(c net.Conn, want string) {
				t.Helper()
				got := make([]byte, len(want))
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				if _, err := io.ReadFull(c, got); err != nil {
					t.Fatal(err)
				}
				if string(got) != want {
					t.Fatalf("got %q, want %q", got, want)
				}
			}
			f(rg.upstream, "client-pending|client-later")
			f(rg.client, "upstream-pending|upstream-later")
			rg.client.Close()
			rg.upstream.Close()
			res := rg.wait(t)
			if res.Up != 27 || res.Down != 31 {
				t.Fatalf("Up %d, Down %d; want 27, 31", res.Up, res.Down)
			}
		})
	}
}

func TestHalfClose(t *testing.T) {
	// f: one side says something and half-closes; the other reads it to its end of file
	// and still answers, which the first side reads to the end.
	f := func(m mode, first, second func(*rig) *net.TCPConn, wantUp, wantDown int64) {
		t.Helper()
		g := NewRegistry().NewGroup(0)
		rg := start(t, g, m, Options{}, nil)
		a, b := first(rg), second(rg)
		a.Write([]byte("question"))
		a.CloseWrite()
		if got, err := readAll(t, b); string(got) != "question" || err != nil {
			t.Fatalf("got %q, %v; want the question, then end of file", got, err)
		}
		b.Write([]byte("final answer"))
		b.Close()
		if got, err := readAll(t, a); string(got) != "final answer" || err != nil {
			t.Fatalf("got %q, %v; want the final answer, then end of file", got, err)
		}
		res := rg.wait(t)
		if want := (Result{Up: wantUp, Down: wantDown, Reason: ReasonClosed}); res != want {
			t.Fatalf("Result %+v, want %+v", res, want)
		}
	}
	client := func(rg *rig) *net.TCPConn { return rg.client }
	upstream := func(rg *rig) *net.TCPConn { return rg.upstream }
	for _, m := range modes {
		if !m.halfOpen {
			continue
		}
		t.Run(m.name+"/client-first", func(t *testing.T) { f(m, client, upstream, 8, 12) })
		t.Run(m.name+"/upstream-first", func(t *testing.T) { f(m, upstream, client, 12, 8) })
	}
}

// A client conn without CloseWrite (a hijacked fasthttp conn) cannot be half-closed: the
// upstream's end of file ends the tunnel. The client's own end of file still half-closes
// the upstream.
func TestEndOfFileWithoutHalfClose(t *testing.T) {
	m := modes[2]
	g := NewRegistry().NewGroup(0)

	rg := start(t, g, m, Options{}, nil)
	rg.upstream.Write([]byte("bye"))
	rg.upstream.CloseWrite()
	if got, err := readAll(t, rg.client); string(got) != "bye" || err != nil {
		t.Fatalf("client got %q, %v; want bye, then end of file", got, err)
	}
	if res := rg.wait(t); res.Reason != ReasonClosed {
		t.Fatalf("Reason %v, want closed", res.Reason)
	}
	if _, err := readAll(t, rg.upstream); err != nil {
		t.Fatalf("upstream: %v, want end of file", err)
	}

	rg = start(t, g, m, Options{}, nil)
	rg.client.Write([]byte("question"))
	rg.client.CloseWrite()
	if got, err := readAll(t, rg.upstream); string(got) != "question" || err != nil {
		t.Fatalf("upstream got %q, %v; want the question, then end of file", got, err)
	}
	rg.upstream.Write([]byte("answer"))
	rg.upstream.Close()
	if got, err := readAll(t, rg.client); string(got) != "answer" || err != nil {
		t.Fatalf("client got %q, %v; want the answer, then end of file", got, err)
	}
	if res := rg.wait(t); res.Reason != ReasonClosed {
		t.Fatalf("Reason %v, want closed", res.Reason)
	}
}

func TestIdleTimeout(t *testing.T) {
	const idle = 200 * time.Millisecond
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			g := NewRegistry().NewGroup(0)
			begin := time.Now()
			rg := start(t, g, m, Options{IdleTimeout: idle}, nil)
			res := rg.wait(t)
			if d := time.Since(begin); d < idle {
				t.Fatalf("cut after %v of idleness, before the timeout %v", d, idle)
			}
			if res.Reason != ReasonIdle {
				t.Fatalf("Reason %v, want idle", res.Reason)
			}
			for _, c := range []net.Conn{rg.client, rg.upstream} {
				if got, err := readAll(t, c); len(got) != 0 || err != nil {
					t.Fatalf("after the cut: %q, %v; want end of file", got, err)
				}
			}
		})
	}
}

// Bytes in one direction only, every 50 ms for a second, keep a tunnel with a 300 ms idle
// timeout open.
func TestIdleTimeoutActive(t *testing.T) {
	r := NewRegistry()
	g := r.NewGroup(0)
	rg := start(t, g, modes[0], Options{IdleTimeout: 300 * time.Millisecond}, nil)
	received := make(chan int, 1)
	go func() {
		n, _ := io.Copy(io.Discard, rg.upstream)
		rg.upstream.Close()
		received <- int(n)
	}()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for range 20 {
		<-tick.C
		if _, err := rg.client.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
	}
	if !rg.running() {
		t.Fatalf("an active tunnel was cut: %+v", rg.wait(t))
	}
	rg.client.Close()
	if res := rg.wait(t); res.Reason != ReasonClosed || res.Up != 80 {
		t.Fatalf("Result %+v, want closed with 80 bytes up", res)
	}
	if n := <-received; n != 80 {
		t.Fatalf("upstream received %d bytes, want 80", n)
	}
	// The sweeper goes when the last tunnel with a timeout has.
	poll(t, "the sweeper to exit", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return !r.sweeping
	})
}

// poll waits, generously, until cond holds.
func poll(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestReset(t *testing.T) {
	// f: one side resets its connection; the tunnel ends and closes the other side.
	f := func(m mode, reset, other func(*rig) *net.TCPConn) {
		t.Helper()
		g := NewRegistry().NewGroup(0)
		rg := start(t, g, m, Options{}, nil)
		// Make sure the tunnel runs before the reset.
		rg.client.Write([]byte("x"))
		io.ReadFull(rg.upstream, make([]byte, 1))
		c := reset(rg)
		c.SetLinger(0)
		c.Close()
		res := rg.wait(t)
		if res.Reason != ReasonError || res.Err == nil {
			t.Fatalf("Result %+v, want an error", res)
		}
		// End of file, or a reset if the proxy closed with bytes unread: both say closed.
		var ne net.Error
		if _, err := readAll(t, other(rg)); errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("the other side was not closed")
		}
	}
	client := func(rg *rig) *net.TCPConn { return rg.client }
	upstream := func(rg *rig) *net.TCPConn { return rg.upstream }
	for _, m := range modes {
		t.Run(m.name+"/client", func(t *testing.T) { f(m, client, upstream) })
		t.Run(m.name+"/upstream", func(t *testing.T) { f(m, upstream, client) })
	}
}

func TestGroupMax(t *testing.T) {
	g := NewRegistry().NewGroup(2)
	f := func(want bool) {
		t.Helper()
		if got := g.Acquire(); got != want {
			t.Fatalf("Acquire: %v, want %v", got, want)
		}
	}
	f(true)
	f(true)
	f(false)

	rg := startAcquired(t, g, modes[0], Options{}, nil)
	poll(t, "the tunnel to open", func() bool { return g.Active() == 1 })
	f(false)
	rg.client.Close()
	rg.upstream.Close()
	rg.wait(t)
	if g.Active() != 0 || g.Total() != 1 {
		t.Fatalf("Active %d, Total %d; want 0, 1", g.Active(), g.Total())
	}
	f(true)
	f(false)

	g.SetMax(3) // raising lets one more in
	f(true)
	f(false)
	g.SetMax(1) // lowering keeps the 3 slots, refuses new ones until under the bound
	f(false)
	g.Release()
	g.Release()
	f(false)
	g.Release()
	f(true)
	g.SetMax(0) // unbounded
	for range 100 {
		f(true)
	}
	for range 101 {
		g.Release()
	}
	defer func() {
		if recover() == nil {
			t.Fatal("releasing a slot not acquired did not panic")
		}
	}()
	g.Release()
}

// Many tunnels at once on one Group: the counters add up.
func TestConcurrent(t *testing.T) {
	g := NewRegistry().NewGroup(0)
	const n, msgs = 32, 200
	var wg sync.WaitGroup
	rigs := make([]*rig, n)
	for i := range rigs {
		rigs[i] = start(t, g, modes[i%len(modes)], Options{IdleTimeout: time.Duration(i+1) * time.Second}, nil)
		go echo(rigs[i].upstream)
	}
	for _, rg := range rigs {
		wg.Go(func() {
			buf := make([]byte, 100)
			for range msgs {
				rg.client.Write(buf)
				if _, err := io.ReadFull(rg.client, buf); err != nil {
					t.Error(err)
					return
				}
			}
			rg.client.CloseWrite()
		})
	}
	wg.Wait()
	for _, rg := range rigs {
		if res := rg.wait(t); res.Up != msgs*100 || res.Down != msgs*100 {
			t.Errorf("Result %+v, want %d bytes each way", res, msgs*100)
		}
	}
	up, down := g.Bytes()
	if want := uint64(n * msgs * 100); up != want || down != want {
		t.Fatalf("Bytes %d, %d; want %d both", up, down, want)
	}
	if g.Active() != 0 || g.Total() != n {
		t.Fatalf("Active %d, Total %d; want 0, %d", g.Active(), g.Total(), n)
	}
}

func TestShutdownDeadline(t *testing.T) {
	base := runtime.NumGoroutine()
	func() {
		r := NewRegistry()
		g := r.NewGroup(0)
		ending := start(t, g, modes[0], Options{}, nil)
		staying := start(t, g, modes[1], Options{IdleTimeout: time.Hour}, nil)
		late := g.Acquire() // a slot for a tunnel that only runs after the deadline
		poll(t, "the tunnels to open", func() bool { return r.Active() == 2 })

		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- r.Shutdown(ctx) }()
		poll(t, "Shutdown to begin", func() bool {
			r.mu.Lock()
			defer r.mu.Unlock()
			return r.draining
		})
		if g.Acquire() {
			t.Fatal("Acquire during Shutdown: true")
		}

		// A tunnel may end by itself during the grace period.
		ending.client.CloseWrite()
		ending.upstream.Close()
		if res := ending.wait(t); res.Reason != ReasonClosed {
			t.Fatalf("Reason %v, want closed", res.Reason)
		}
		select {
		case err := <-done:
			t.Fatalf("Shutdown returned %v with a tunnel open", err)
		default:
		}

		cancel() // the deadline
		select {
		case err := <-done:
			if err != context.Canceled {
				t.Fatalf("Shutdown: %v, want %v", err, context.Canceled)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Shutdown did not return")
		}
		if r.Active() != 0 {
			t.Fatalf("Shutdown returned with %d tunnels open", r.Active())
		}
		if res := staying.wait(t); res.Reason != ReasonShutdown {
			t.Fatalf("Reason %v, want shutdown", res.Reason)
		}
		if _, err := readAll(t, staying.client); err != nil {
			t.Fatalf("client of a cut tunnel: %v, want end of file", err)
		}
		if !late {
			t.Fatal("Acquire before Shutdown: false")
		}
		if res := startAcquired(t, g, modes[1], Options{}, nil).wait(t); res.Reason != ReasonShutdown {
			t.Fatalf("Run after the deadline: %v, want shutdown", res.Reason)
		}
		if r.Active() != 0 || g.Active() != 0 || r.slots != 0 {
			t.Fatalf("Active %d, %d, slots %d after Shutdown; want 0", r.Active(), g.Active(), r.slots)
		}
		for _, rg := range []*rig{ending, staying} {
			rg.client.Close()
			rg.upstream.Close()
		}
	}()
	poll(t, "the goroutines to end", func() bool { return runtime.NumGoroutine() <= base })
}

// Shutdown returns nil once every tunnel and every slot acquired has gone.
func TestShutdownDrained(t *testing.T) {
	r := NewRegistry()
	g := r.NewGroup(0)
	rg := start(t, g, modes[1], Options{}, nil)
	if !g.Acquire() {
		t.Fatal("Acquire: false")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.Shutdown(ctx) }()

	rg.client.Close()
	rg.upstream.Close()
	if res := rg.wait(t); res.Reason != ReasonClosed {
		t.Fatalf("Reason %v, want closed", res.Reason)
	}
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned %v with a slot acquired", err)
	default:
	}
	g.Release()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Shutdown: %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return")
	}
}

// A deadline the caller left on a conn (a server's read timeout) does not cut the tunnel.
func TestDeadlineCleared(t *testing.T) {
	g := NewRegistry().NewGroup(0)
	capp, pclient := pair(t)
	pup, uapp := pair(t)
	pclient.SetReadDeadline(time.Now().Add(-time.Second))
	g.Acquire()
	res := make(chan Result, 1)
	go func() { res <- g.Run(wrappedTCP{pclient}, pup, Options{}) }()
	go echo(uapp)
	capp.Write([]byte("ping"))
	b := make([]byte, 4)
	capp.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(capp, b); err != nil || string(b) != "ping" {
		t.Fatalf("got %q, %v; want ping", b, err)
	}
	capp.Close()
	if r := <-res; r.Reason != ReasonClosed {
		t.Fatalf("Reason %v, want closed", r.Reason)
	}
}

func TestSpliceable(t *testing.T) {
	a, b := pair(t)
	f := func(client, upstream net.Conn, want bool) {
		t.Helper()
		if _, _, got := spliceable(client, upstream); got != want {
			t.Fatalf("spliceable(%T, %T) = %v, want %v", client, upstream, got, want)
		}
	}
	f(a, b, spliceSupported)
	f(wrappedTCP{a}, b, false)
	f(a, hijacked{b}, false)
}

func TestReasonString(t *testing.T) {
	f := func(r Reason, want string) {
		t.Helper()
		if got := r.String(); got != want {
			t.Fatalf("%d: %q, want %q", r, got, want)
		}
	}
	f(ReasonClosed, "closed")
	f(ReasonIdle, "idle")
	f(ReasonError, "error")
	f(ReasonShutdown, "shutdown")
	f(0, "unknown")
	f(9, "unknown")
}
