package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// The L4 loads and origins: plain TCP, no HTTP. Both ends live in the bench process,
// so what differs between two runs is only the proxy in the middle.

const (
	l4BulkBuf   = 256 << 10 // bytes per write of a bulk client, per read of the sink
	l4EchoSize  = 16        // bytes a connect client sends and wants back
	l4DrainWait = 10 * time.Second
)

// sinkServer is the origin of l4_bulk: it reads and drops what a connection sends and,
// when the connection's sender half-closes, answers with the count of bytes it got (8
// bytes, big endian) and closes. That count lets a client check that every byte it
// wrote went through the proxy, and that the proxy passed the half-close on.
type sinkServer struct {
	ln    net.Listener
	bytes atomic.Int64 // bytes received, all connections, since start
	wg    sync.WaitGroup
}

// echoServer is the origin of l4_connect: it writes back what it reads until the
// client half-closes, then closes.
type echoServer struct {
	ln net.Listener
	wg sync.WaitGroup
}

func listenLoopback() (net.Listener, error) {
	return net.Listen("tcp", "127.0.0.1:0")
}

func newSink() (*sinkServer, error) {
	ln, err := listenLoopback()
	if err != nil {
		return nil, fmt.Errorf("cannot listen for the sink origin: %w", err)
	}
	s := &sinkServer{ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		serveConns(ln, s.serve)
	}()
	return s, nil
}

func (s *sinkServer) addr() string { return s.ln.Addr().String() }

func (s *sinkServer) serve(c net.Conn) {
	defer c.Close()
	buf := make([]byte, l4BulkBuf)
	var total int64
	for {
		n, err := c.Read(buf)
		total += int64(n)
		s.bytes.Add(int64(n))
		if errors.Is(err, io.EOF) {
			c.Write(binary.BigEndian.AppendUint64(nil, uint64(total)))
			return
		}
		if err != nil {
			return
		}
	}
}

func (s *sinkServer) close() { s.ln.Close(); s.wg.Wait() }

func newEcho() (*echoServer, error) {
	ln, err := listenLoopback()
	if err != nil {
		return nil, fmt.Errorf("cannot listen for the echo origin: %w", err)
	}
	s := &echoServer{ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		serveConns(ln, s.serve)
	}()
	return s, nil
}

func (s *echoServer) addr() string { return s.ln.Addr().String() }

// serve copies with its own buffer: io.Copy(c, c) would try splice on a TCP conn.
func (s *echoServer) serve(c net.Conn) {
	defer c.Close()
	var buf [4096]byte
	for {
		n, err := c.Read(buf[:])
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (s *echoServer) close() { s.ln.Close(); s.wg.Wait() }

// serveConns accepts until ln is closed, each connection in its own goroutine.
func serveConns(ln net.Listener, serve func(net.Conn)) {
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			time.Sleep(delay)
			continue
		}
		delay = 0
		go serve(c)
	}
}

// l4Run is one run of an L4 load against one proxy.
type l4Run struct {
	Amount   float64 // bulk: bytes the sink received in the window; connect: connections done in it
	Window   time.Duration
	Errors   int64
	Checked  int64  // bulk: connections whose byte count the sink confirmed
	FirstErr string // the first error or wrong answer
	Hist     *Histogram
	// cpu is the proxy's CPU seconds over the window; cpuOK is false when unknown.
	cpu   float64
	cpuOK bool
	// loadCPU is the bench process's CPU seconds over the window: clients and origin.
	loadCPU float64
	// otherCPU is the CPU seconds of the rest of the machine over the window: neither
	// the proxy nor bench (someone else's work, which disturbs the figures).
	otherCPU float64
}

// Rate is Amount per second of the window.
func (r *l4Run) Rate() float64 {
	if r.Window <= 0 {
		return 0
	}
	return r.Amount / r.Window.Seconds()
}

// firstErr keeps the first error of a run's workers.
type firstErr struct {
	mu  sync.Mutex
	err string
	n   atomic.Int64
}

func (f *firstErr) add(format string, a ...any) {
	f.n.Add(1)
	f.mu.Lock()
	if f.err == "" {
		f.err = fmt.Sprintf(format, a...)
	}
	f.mu.Unlock()
}

// bulkLoad pushes bytes through addr to sink on conns connections for d. Its window
// starts once every connection is up; around it, between (and only between) the two
// samples of sink's byte count, onWindow's two calls sample whatever the caller
// measures (the proxy's CPU). After the window each client half-closes and checks the
// sink's count of what it got.
func bulkLoad(addr string, conns int, d time.Duration, sink *sinkServer, onWindow func(start bool)) *l4Run {
	r := &l4Run{Hist: NewHistogram()}
	var fe firstErr
	cs := make([]net.Conn, 0, conns)
	for range conns {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			fe.add("dial %s: %v", addr, err)
			continue
		}
		cs = append(cs, c)
	}
	if len(cs) == 0 {
		r.Errors, r.FirstErr = fe.n.Load(), fe.err
		return r
	}
	buf := make([]byte, l4BulkBuf)
	for i := range buf {
		buf[i] = byte(i)
	}
	var checked atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	var end time.Time
	for _, c := range cs {
		wg.Add(1)
		go func(c net.Conn) {
			defer wg.Done()
			defer c.Close()
			<-start
			c.SetWriteDeadline(end)
			var wrote int64
			for {
				n, err := c.Write(buf)
				wrote += int64(n)
				if err != nil {
					if !errors.Is(err, os.ErrDeadlineExceeded) {
						fe.add("write: %v", err)
						return
					}
					break
				}
			}
			c.SetWriteDeadline(time.Time{})
			c.SetReadDeadline(time.Now().Add(l4DrainWait))
			if err := c.(*net.TCPConn).CloseWrite(); err != nil {
				fe.add("half-close: %v", err)
				return
			}
			var got [8]byte
			if _, err := io.ReadFull(c, got[:]); err != nil {
				fe.add("no byte count from the sink after a half-close (%d bytes written): %v", wrote, err)
				return
			}
			if n := int64(binary.BigEndian.Uint64(got[:])); n != wrote {
				fe.add("the sink got %d of the %d bytes written", n, wrote)
				return
			}
			checked.Add(1)
		}(c)
	}
	onWindow(true)
	b0, t0 := sink.bytes.Load(), time.Now()
	end = t0.Add(d)
	close(start)
	time.Sleep(time.Until(end))
	b1, t1 := sink.bytes.Load(), time.Now()
	onWindow(false)
	wg.Wait()
	r.Amount, r.Window = float64(b1-b0), t1.Sub(t0)
	r.Checked, r.Errors, r.FirstErr = checked.Load(), fe.n.Load()+int64(conns-len(cs)), fe.err
	return r
}

// connectLoad runs workers closed-loop clients for d, each doing connect, write 16
// bytes, read them back, close, again and again. onWindow samples around the window as
// in bulkLoad; connections that end after the window are not counted.
func connectLoad(addr string, workers int, d time.Duration, onWindow func(start bool)) *l4Run {
	r := &l4Run{Hist: NewHistogram()}
	var fe firstErr
	var done atomic.Int64
	hists := make([]*Histogram, workers)
	var wg sync.WaitGroup
	onWindow(true)
	start := time.Now()
	end := start.Add(d)
	for w := range workers {
		hists[w] = NewHistogram()
		wg.Add(1)
		go func(w int, h *Histogram) {
			defer wg.Done()
			var msg, got [l4EchoSize]byte
			for i := uint64(0); ; i++ {
				t0 := time.Now()
				if !t0.Before(end) {
					return
				}
				binary.BigEndian.PutUint64(msg[:8], uint64(w))
				binary.BigEndian.PutUint64(msg[8:], i)
				c, err := net.DialTimeout("tcp", addr, 5*time.Second)
				if err != nil {
					fe.add("dial: %v", err)
					h.Record(time.Since(t0))
					continue
				}
				c.SetDeadline(t0.Add(5 * time.Second))
				_, err = c.Write(msg[:])
				if err == nil {
					_, err = io.ReadFull(c, got[:])
				}
				c.Close()
				t1 := time.Now()
				h.Record(t1.Sub(t0))
				switch {
				case err != nil:
					fe.add("echo: %v", err)
				case got != msg:
					fe.add("echo answered %x to %x", got, msg)
				case !t1.After(end):
					done.Add(1)
				}
			}
		}(w, hists[w])
	}
	time.Sleep(time.Until(end))
	t1 := time.Now()
	onWindow(false)
	wg.Wait()
	for _, h := range hists {
		r.Hist.Merge(h)
	}
	r.Amount, r.Window = float64(done.Load()), t1.Sub(start)
	r.Errors, r.FirstErr = fe.n.Load(), fe.err
	return r
}
