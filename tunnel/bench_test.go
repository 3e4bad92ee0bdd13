package tunnel

import (
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Round trips of 64-byte messages: straight to an echo server, and through a tunnel by
// each copy path. Compare ns/op of "direct" and a tunnel for the round-trip ratio; the
// parallel variants put 8 connections on the 2 cores, where the tunnel's copies compete
// with the client and the server for CPU.
func BenchmarkRoundTrip(b *testing.B) {
	paths := []struct {
		name string
		m    *mode
		o    Options
	}{
		{"direct", nil, Options{}},
		{"tunnel-copy", &modes[1], Options{}},
		{"tunnel-copy-idle", &modes[0], Options{IdleTimeout: time.Minute}},
		{"tunnel-splice", &modes[0], Options{}},
	}
	// dial returns the client end of a connection to a fresh echo server, direct or
	// through a tunnel of g.
	dial := func(b *testing.B, g *Group, m *mode, o Options) *net.TCPConn {
		if m == nil {
			c, s := pair(b)
			go echo(s)
			return c
		}
		rg := start(b, g, *m, o, nil)
		go echo(rg.upstream)
		b.Cleanup(func() { rg.client.Close(); rg.wait(b) })
		return rg.client
	}
	pingPong := func(b *testing.B, c net.Conn, next func() bool) {
		msg := make([]byte, 64)
		for next() {
			if _, err := c.Write(msg); err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(c, msg); err != nil {
				b.Fatal(err)
			}
		}
	}
	for _, p := range paths {
		b.Run(p.name, func(b *testing.B) {
			c := dial(b, NewRegistry().NewGroup(0), p.m, p.o)
			b.ReportAllocs()
			pingPong(b, c, b.Loop)
		})
		b.Run(p.name+"-parallel8", func(b *testing.B) {
			g := NewRegistry().NewGroup(0)
			conns := make(chan net.Conn, 8)
			for range 8 {
				conns <- dial(b, g, p.m, p.o)
			}
			b.ReportAllocs()
			b.SetParallelism(4) // 8 goroutines on 2 cores
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) { pingPong(b, <-conns, pb.Next) })
		})
	}
}

// 1 GiB one way through a tunnel, per op. Reports throughput, and the heap in use and the
// RSS before and at most during the transfers, which should stay flat, and the CPU time
// (all parties: client, tunnel, sink) per GiB.
func BenchmarkBulk(b *testing.B) {
	const size = 1 << 30
	for _, p := range []struct {
		name string
		m    mode
	}{{"copy", modes[1]}, {"splice", modes[0]}} {
		b.Run(p.name, func(b *testing.B) {
			rg := start(b, NewRegistry().NewGroup(0), p.m, Options{}, nil)
			var received atomic.Int64
			go func() {
				buf := make([]byte, 256<<10)
				for {
					n, err := rg.upstream.Read(buf)
					received.Add(int64(n))
					if err != nil {
						return
					}
				}
			}()
			b.Cleanup(func() { rg.client.Close(); rg.upstream.Close(); rg.wait(b) })

			runtime.GC()
			heap0, rss0 := heapInUse(), rss()
			var heapMax, rssMax atomic.Uint64
			stop := make(chan struct{})
			sampled := make(chan struct{})
			go func() {
				defer close(sampled)
				t := time.NewTicker(50 * time.Millisecond)
				defer t.Stop()
				for {
					heapMax.Store(max(heapMax.Load(), heapInUse()))
					rssMax.Store(max(rssMax.Load(), rss()))
					select {
					case <-stop:
						return
					case <-t.C:
					}
				}
			}()

			chunk := make([]byte, 256<<10)
			cpu0 := cpuTime()
			b.SetBytes(size)
			sent := int64(0)
			for b.Loop() {
				for range size / len(chunk) {
					if _, err := rg.client.Write(chunk); err != nil {
						b.Fatal(err)
					}
				}
				sent += size
				for received.Load() < sent { // the tail is still in flight
					runtime.Gosched()
				}
			}
			b.StopTimer()
			b.ReportMetric((cpuTime()-cpu0).Seconds()/float64(b.N), "cpu-s/op")
			close(stop)
			<-sampled
			const mib = 1 << 20
			b.ReportMetric(float64(heap0)/mib, "heap-MiB-start")
			b.ReportMetric(float64(heapMax.Load())/mib, "heap-MiB-max")
			b.ReportMetric(float64(rss0)/mib, "rss-MiB-start")
			b.ReportMetric(float64(rssMax.Load())/mib, "rss-MiB-max")
		})
	}
}

// cpuTime returns the user and system CPU time of the process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func heapInUse() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// rss returns the resident set size from /proc (Linux), or 0.
func rss() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseUint(f[1], 10, 64)
	return pages * uint64(os.Getpagesize())
}
