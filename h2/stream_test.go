package h2

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/net/http2"
)

// pattern is what generated bodies repeat; its odd length makes every piece of a body
// differ from its neighbours, so a reordered or repeated piece changes the checksum.
var pattern = func() []byte {
	b := make([]byte, 65521)
	for i := range b {
		b[i] = byte(i*31 + i>>8)
	}
	return b
}()

// fillAt fills p with the generated body from offset off.
func fillAt(p []byte, off int64) {
	for i := 0; i < len(p); {
		i += copy(p[i:], pattern[(off+int64(i))%int64(len(pattern)):])
	}
}

var errUpstream = errors.New("upstream broke")

// genReader is a body stream generated as it is read: size bytes (endless if size < 0).
// It counts its reads and closes and keeps the CRC-32 of what it produced.
type genReader struct {
	size   int64
	failAt int64             // > 0: Read fails with errUpstream once this much was produced
	gate   chan struct{}     // not nil: every Read but the first waits for a value
	onRead func(total int64) // not nil: called after each Read with the bytes produced
	extra  int64             // bytes available beyond size, for a reader longer than declared
	sum    uint32            // CRC-32 of the bytes produced (reader's goroutine only)
	off    atomic.Int64      // bytes produced
	reads  atomic.Int64      // Read calls
	closes atomic.Int64      // Close calls
	closed chan struct{}     // closed by the first Close
	once   sync.Once
}

// waitClosed waits up to 5s for g's first Close.
func (g *genReader) waitClosed(t testing.TB) {
	t.Helper()
	select {
	case <-g.closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the body stream was not closed")
	}
}

func newGen(size int64) *genReader { return &genReader{size: size, closed: make(chan struct{})} }

func (g *genReader) Read(p []byte) (int, error) {
	if g.reads.Add(1) > 1 && g.gate != nil {
		<-g.gate
	}
	off := g.off.Load()
	if g.failAt > 0 && off >= g.failAt {
		return 0, errUpstream
	}
	if g.size >= 0 {
		left := g.size + g.extra - off
		if left <= 0 {
			return 0, io.EOF
		}
		p = p[:min(int64(len(p)), left)]
	}
	if g.failAt > 0 {
		p = p[:min(int64(len(p)), g.failAt-off)]
	}
	fillAt(p, off)
	g.sum = crc32.Update(g.sum, crc32.IEEETable, p)
	total := g.off.Add(int64(len(p)))
	if g.onRead != nil {
		g.onRead(total)
	}
	return len(p), nil
}

func (g *genReader) Close() error {
	g.closes.Add(1)
	g.once.Do(func() { close(g.closed) })
	return nil
}

// streamClient is net/http's HTTP/2 client with receive buffers of 1 MiB.
func streamClient(t testing.TB) *http.Client {
	t1 := &http.Transport{
		Protocols: new(http.Protocols),
		HTTP2:     &http.HTTP2Config{MaxReceiveBufferPerConnection: 1 << 20, MaxReceiveBufferPerStream: 1 << 20},
	}
	t1.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(t1.CloseIdleConnections)
	return &http.Client{Transport: t1}
}

// crcCounter counts and checksums what is written to it.
type crcCounter struct {
	n   int64
	sum uint32
}

func (w *crcCounter) Write(p []byte) (int, error) {
	w.n += int64(len(p))
	w.sum = crc32.Update(w.sum, crc32.IEEETable, p)
	return len(p), nil
}

// heapWatch samples the heap in use every 5ms, from a GC at its start until stop.
type heapWatch struct {
	base    uint64 // heap in use at the start
	peak    atomic.Uint64
	stopped chan struct{}
	sampled chan struct{}
}

func watchHeap() *heapWatch {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	h := &heapWatch{base: ms.HeapInuse, stopped: make(chan struct{}), sampled: make(chan struct{})}
	go func() {
		defer close(h.sampled)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		var ms runtime.MemStats
		for {
			select {
			case <-h.stopped:
				return
			case <-tick.C:
				runtime.ReadMemStats(&ms)
				if ms.HeapInuse > h.peak.Load() {
					h.peak.Store(ms.HeapInuse)
				}
			}
		}
	}()
	return h
}

// stop ends the sampling and waits for it.
func (h *heapWatch) stop() {
	close(h.stopped)
	<-h.sampled
}

// check logs a transfer of total bytes that took elapsed with the heap it saw, and
// fails if the heap in use peaked over 64 MiB.
func (h *heapWatch) check(t *testing.T, total int64, elapsed time.Duration) {
	t.Helper()
	t.Logf("%d MiB in %v (%.0f MiB/s); heap in use: %.1f MiB before, peak %.1f MiB during the transfer (client included)",
		total>>20, elapsed.Round(time.Millisecond), float64(total>>20)/elapsed.Seconds(), float64(h.base)/(1<<20), float64(h.peak.Load())/(1<<20))
	if p := h.peak.Load(); p > 64<<20 {
		t.Errorf("peak heap in use %.1f MiB, want under 64 MiB", float64(p)/(1<<20))
	}
}

// TestStreamedBodyHuge: a body stream of 1 GiB of unknown size, written into an io.Pipe
// in blocks of 64 KiB as a proxied upstream would deliver it, reaches the client whole
// while the process's heap stays small: h2 holds one piece of it at a time.
func TestStreamedBodyHuge(t *testing.T) {
	total := int64(1 << 30)
	if testing.Short() || raceEnabled {
		total = 128 << 20
	}
	const block = 64 << 10
	var (
		producers sync.WaitGroup
		prodSum   uint32
		prodN     int64
		prodErr   error
	)
	ts := startServer(t, Config{}, func(ctx *fasthttp.RequestCtx) {
		pr, pw := io.Pipe()
		producers.Add(1)
		go func() {
			defer producers.Done()
			buf := make([]byte, block)
			var off int64
			for off < total {
				fillAt(buf, off)
				if _, err := pw.Write(buf); err != nil {
					prodErr = err
					return
				}
				prodSum = crc32.Update(prodSum, crc32.IEEETable, buf)
				off += block
			}
			prodN = off
			pw.Close()
		}()
		ctx.SetContentType("application/octet-stream")
		ctx.Response.SetBodyStream(pr, -1)
	})

	heap := watchHeap()

	start := time.Now()
	resp, err := streamClient(t).Get("http://" + ts.addr + "/huge")
	if err != nil {
		t.Fatal(err)
	}
	var got crcCounter
	_, err = io.CopyBuffer(&got, resp.Body, make([]byte, 64<<10))
	resp.Body.Close()
	elapsed := time.Since(start)
	heap.stop()
	producers.Wait()
	if err != nil {
		t.Fatalf("reading the body: %v after %d bytes", err, got.n)
	}
	if resp.StatusCode != 200 || resp.ContentLength != -1 || resp.Header.Get("Content-Type") != "application/octet-stream" {
		t.Errorf("status %d, content-length %d, headers %v", resp.StatusCode, resp.ContentLength, resp.Header)
	}
	if prodErr != nil || prodN != total || got.n != total || got.sum != prodSum {
		t.Errorf("produced %d bytes (crc %08x, err %v), received %d (crc %08x)", prodN, prodSum, prodErr, got.n, got.sum)
	}
	heap.check(t, total, elapsed)
}

// TestStreamedBodySlowClient: a client with a 16 KiB stream window that reads slowly for
// a while paces the producer: what was read from the stream and not yet received by the
// client never exceeds the window plus h2's one buffer.
func TestStreamedBodySlowClient(t *testing.T) {
	const (
		total  = 4 << 20
		window = 16 << 10
		slow   = 512 << 10 // the client sleeps after each frame until it has this much
	)
	var received, ahead atomic.Int64
	gens := make(chan *genReader, 1)
	ts := startServer(t, Config{}, func(ctx *fasthttp.RequestCtx) {
		g := newGen(total)
		g.onRead = func(produced int64) {
			if d := produced - received.Load(); d > ahead.Load() {
				ahead.Store(d)
			}
		}
		gens <- g
		ctx.Response.SetBodyStream(g, -1)
	})
	r := dialRaw(t, ts.addr)
	if err := r.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: window}); err != nil {
		t.Fatal(err)
	}
	r.headers(1, true, getFields...)
	var sum uint32
	start := time.Now()
	for end := false; !end; {
		ev := r.next(5 * time.Second)
		switch {
		case ev.closed:
			t.Fatalf("connection closed after %d bytes: %v", received.Load(), r.closeErr)
		case ev.typ == http2.FrameRSTStream:
			t.Fatalf("RST_STREAM %v after %d bytes", ev.code, received.Load())
		case ev.typ != http2.FrameData:
			continue
		}
		end = ev.end
		sum = crc32.Update(sum, crc32.IEEETable, ev.data)
		n := received.Add(int64(len(ev.data)))
		if n < slow {
			time.Sleep(2 * time.Millisecond) // a slow reader, not a wait for something
		}
		if len(ev.data) > 0 {
			r.fr.WriteWindowUpdate(1, uint32(len(ev.data)))
			r.fr.WriteWindowUpdate(0, uint32(len(ev.data)))
		}
	}
	g := <-gens
	waitFor(t, "the stream closed", func() bool { return g.closes.Load() == 1 })
	if received.Load() != total || sum != g.sum {
		t.Errorf("received %d bytes (crc %08x), want %d (crc %08x)", received.Load(), sum, total, g.sum)
	}
	bound := int64(window + streamBufSize)
	t.Logf("%d MiB in %v; the producer got at most %d bytes ahead of the client (bound %d)",
		total>>20, time.Since(start).Round(time.Millisecond), ahead.Load(), bound)
	if ahead.Load() > bound {
		t.Errorf("producer %d bytes ahead of the client, want at most window+buffer = %d", ahead.Load(), bound)
	}
}

// TestStreamedBodySSE: events of a server-sent-event stream reach the client as they are
// produced, and a stream quiet for longer than IdleTimeout, ReadTimeout and WriteTimeout
// between events is not cut by any of them.
func TestStreamedBodySSE(t *testing.T) {
	f := func(t *testing.T, cfg Config, events int, every time.Duration) []time.Duration {
		t.Helper()
		produced := make([]atomic.Int64, events) // UnixNano just before the event is written
		var producers sync.WaitGroup
		ts := startServer(t, cfg, func(ctx *fasthttp.RequestCtx) {
			pr, pw := io.Pipe()
			producers.Add(1)
			go func() {
				defer producers.Done()
				for i := range events {
					time.Sleep(every) // the upstream's pace
					produced[i].Store(time.Now().UnixNano())
					if _, err := fmt.Fprintf(pw, "data: %d\n\n", i); err != nil {
						return
					}
				}
				pw.Close()
			}()
			ctx.SetContentType("text/event-stream")
			ctx.Response.SetBodyStream(pr, -1)
		})
		resp, err := streamClient(t).Get("http://" + ts.addr + "/events")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 || resp.ContentLength != -1 || resp.Header.Get("Content-Type") != "text/event-stream" {
			t.Errorf("status %d, content-length %d, headers %v", resp.StatusCode, resp.ContentLength, resp.Header)
		}
		var (
			lat  []time.Duration
			pend []byte
			buf  = make([]byte, 4096)
		)
		for {
			n, err := resp.Body.Read(buf)
			now := time.Now().UnixNano()
			pend = append(pend, buf[:n]...)
			for {
				ev, rest, ok := bytes.Cut(pend, []byte("\n\n"))
				if !ok {
					break
				}
				pend = rest
				i, perr := strconv.Atoi(strings.TrimPrefix(string(ev), "data: "))
				if perr != nil || i != len(lat) {
					t.Fatalf("event %q, want number %d", ev, len(lat))
				}
				lat = append(lat, time.Duration(now-produced[i].Load()))
				if i == events-1 && ts.srv.Stats().GoAwayByReason[ReasonIdle] != 0 {
					t.Errorf("idle GOAWAY while the stream was open")
				}
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("after %d events: %v", len(lat), err)
			}
		}
		producers.Wait()
		if len(lat) != events || len(pend) != 0 {
			t.Fatalf("%d events and %q, want %d events", len(lat), pend, events)
		}
		if s := ts.srv.Stats(); s.ConnsTotal != 1 {
			t.Errorf("%d connections, want 1", s.ConnsTotal)
		}
		return lat
	}
	t.Run("latency", func(t *testing.T) {
		lat := f(t, Config{}, 5, 100*time.Millisecond)
		t.Logf("production to arrival: %v", lat)
		for i, d := range lat {
			if d > 50*time.Millisecond {
				t.Errorf("event %d arrived %v after it was produced, want under 50ms", i, d)
			}
		}
	})
	t.Run("quiet", func(t *testing.T) {
		cfg := Config{IdleTimeout: 150 * time.Millisecond, ReadTimeout: 150 * time.Millisecond, WriteTimeout: 150 * time.Millisecond}
		lat := f(t, cfg, 3, 300*time.Millisecond)
		t.Logf("3 events 300ms apart with idle, read and write timeouts of 150ms: %v", lat)
	})
}

// TestStreamedBodyKnownSize: SetBodyStream(r, n) sends content-length n and exactly n
// bytes without reading further; a stream shorter than it declared is reset.
func TestStreamedBodyKnownSize(t *testing.T) {
	const n = 100_000
	gens := make(chan *genReader, 1)
	ts := startServer(t, Config{}, func(ctx *fasthttp.RequestCtx) {
		g := newGen(n)
		size := n
		switch string(ctx.Path()) {
		case "/longer": // the reader has more than it declared
			g.extra = 5000
		case "/shorter": // and ends within the first window
			g.size = 1000
		case "/zero":
			size = 0
		}
		gens <- g
		ctx.Response.SetBodyStream(g, size)
	})
	cl := streamClient(t)
	for _, path := range []string{"/exact", "/longer"} {
		resp, b := do(t, cl, "GET", "http://"+ts.addr+path, nil)
		g := <-gens
		g.waitClosed(t)
		want := make([]byte, n)
		fillAt(want, 0)
		if resp.StatusCode != 200 || resp.ContentLength != n || !bytes.Equal(b, want) {
			t.Errorf("%s: status %d, content-length %d, %d bytes (equal %v)", path, resp.StatusCode, resp.ContentLength, len(b), bytes.Equal(b, want))
		}
		if g.off.Load() != n || g.closes.Load() != 1 {
			t.Errorf("%s: %d bytes read from the stream, %d closes; want %d and 1", path, g.off.Load(), g.closes.Load(), n)
		}
	}

	// On the wire: content-length on HEADERS, END_STREAM on the DATA frame carrying the
	// last byte; HEAD and a size of 0 end on HEADERS without reading the stream.
	r := dialRaw(t, ts.addr)
	r.fr.WriteWindowUpdate(0, 1<<20)
	id := uint32(1)
	f := func(method, path string, wantLen string, wantBody int) {
		t.Helper()
		r.headers(id, true, ":method", method, ":scheme", "http", ":path", path, ":authority", "x")
		ev := r.expect("HEADERS", func(ev event) bool { return ev.typ == http2.FrameHeaders && ev.stream == id })
		cl := ""
		for _, hf := range ev.fields {
			if hf.Name == "content-length" {
				cl = hf.Value
			}
		}
		got := 0
		for end := ev.end; !end; {
			ev := r.expect("DATA", func(ev event) bool { return ev.stream == id })
			if ev.typ != http2.FrameData {
				t.Fatalf("%s %s: %v", method, path, ev)
			}
			got += len(ev.data)
			end = ev.end
			r.fr.WriteWindowUpdate(id, uint32(max(len(ev.data), 1)))
			r.fr.WriteWindowUpdate(0, uint32(max(len(ev.data), 1)))
		}
		g := <-gens
		g.waitClosed(t)
		if cl != wantLen || got != wantBody || g.off.Load() != int64(wantBody) || g.closes.Load() != 1 {
			t.Errorf("%s %s: content-length %q, %d bytes sent, %d read, %d closes; want %q, %d, %d, 1",
				method, path, cl, got, g.off.Load(), g.closes.Load(), wantLen, wantBody, wantBody)
		}
		id += 2
	}
	f("GET", "/exact", "100000", n)
	f("HEAD", "/exact", "100000", 0)
	f("GET", "/zero", "0", 0)

	// Shorter than declared: the client must not take it for a whole body.
	r.headers(id, true, ":method", "GET", ":scheme", "http", ":path", "/shorter", ":authority", "x")
	r.expectRST(id, http2.ErrCodeInternal)
	g := <-gens
	g.waitClosed(t)
	if g.closes.Load() != 1 || g.off.Load() != 1000 {
		t.Errorf("short stream: %d closes, %d bytes read; want 1, 1000", g.closes.Load(), g.off.Load())
	}
}

// TestStreamedBodyReset: a client resetting a stream mid-body, or going away, stops the
// reads and closes the body stream once; the stream's slot is freed and the connection
// goes on serving.
func TestStreamedBodyReset(t *testing.T) {
	gens := make(chan *genReader, 1)
	var ts *testServer
	ts = startServer(t, Config{WriteTimeout: 300 * time.Millisecond}, func(ctx *fasthttp.RequestCtx) {
		g := newGen(-1)
		switch string(ctx.Path()) {
		case "/endless":
		case "/gated":
			g.gate = make(chan struct{})
		default:
			ts.echo(ctx)
			return
		}
		gens <- g
		ctx.Response.SetBodyStream(g, -1)
	})
	get := func(r *rawClient, id uint32, path string) *genReader {
		t.Helper()
		r.headers(id, true, ":method", "GET", ":scheme", "http", ":path", path, ":authority", "x")
		r.expect("HEADERS", func(ev event) bool { return ev.typ == http2.FrameHeaders && ev.stream == id })
		r.expect("DATA", func(ev event) bool { return ev.typ == http2.FrameData && ev.stream == id })
		return <-gens
	}
	// fresh waits for the connections of the previous subtests to end, so that ts.errs
	// holds only what the next connection's ServeConn returns.
	fresh := func() {
		t.Helper()
		waitFor(t, "no connection open", func() bool { return ts.srv.Stats().ConnsOpen == 0 })
		for len(ts.errs) > 0 {
			<-ts.errs
		}
	}
	serveErr := func() error {
		t.Helper()
		select {
		case err := <-ts.errs:
			return err
		case <-time.After(5 * time.Second):
			t.Fatal("ServeConn did not return")
			return nil
		}
	}
	released := func(g *genReader) {
		t.Helper()
		waitFor(t, "the body stream closed", func() bool { return g.closes.Load() > 0 })
		waitFor(t, "the stream's slot released", func() bool { return ts.srv.Stats().StreamsActive == 0 })
		if c := g.closes.Load(); c != 1 {
			t.Errorf("%d closes, want 1", c)
		}
	}

	t.Run("reset while waiting for window", func(t *testing.T) {
		r := dialRaw(t, ts.addr)
		g := get(r, 1, "/endless")
		if err := r.fr.WriteRSTStream(1, http2.ErrCodeCancel); err != nil {
			t.Fatal(err)
		}
		released(g)
		reads := g.reads.Load()
		// The connection window the reset stream used is given back; the next stream works.
		r.fr.WriteWindowUpdate(0, 1<<20)
		r.headers(3, true, getFields...)
		if status, body := r.expectStatus(3); status != 200 || parseEcho(t, body)["method"] != "GET" {
			t.Errorf("next stream: %d %q", status, body)
		}
		if g.reads.Load() != reads {
			t.Errorf("reads went on after the reset: %d, then %d", reads, g.reads.Load())
		}
	})

	t.Run("reset while blocked in Read", func(t *testing.T) {
		r := dialRaw(t, ts.addr)
		resets := ts.srv.Stats().ResetsReceived
		g := get(r, 1, "/gated")
		waitFor(t, "the second Read", func() bool { return g.reads.Load() == 2 })
		r.fr.WriteRSTStream(1, http2.ErrCodeCancel)
		waitFor(t, "the reset received", func() bool { return ts.srv.Stats().ResetsReceived == resets+1 })
		// A Read in progress cannot be interrupted: the stream holds its slot until it returns.
		if s := ts.srv.Stats().StreamsActive; s != 1 || g.closes.Load() != 0 {
			t.Errorf("while the Read blocks: %d streams active, %d closes; want 1, 0", s, g.closes.Load())
		}
		g.gate <- struct{}{}
		released(g)
		if n := g.reads.Load(); n != 2 {
			t.Errorf("%d reads, want 2 (none after the reset was seen)", n)
		}
		r.fr.WriteWindowUpdate(0, 1<<20)
		r.headers(3, true, getFields...)
		if status, _ := r.expectStatus(3); status != 200 {
			t.Errorf("next stream: %d", status)
		}
	})

	t.Run("connection closed", func(t *testing.T) {
		fresh()
		r := dialRaw(t, ts.addr)
		g := get(r, 1, "/endless")
		r.c.Close() // with unread DATA: the kernel resets the connection
		released(g)
		serveErr() // whatever it says: the connection was reset
	})

	t.Run("connection closed while blocked in Read", func(t *testing.T) {
		fresh()
		r := dialRaw(t, ts.addr)
		g := get(r, 1, "/gated")
		waitFor(t, "the second Read", func() bool { return g.reads.Load() == 2 })
		r.c.Close()
		g.gate <- struct{}{}
		released(g)
		serveErr()
	})

	t.Run("stalled client", func(t *testing.T) {
		fresh()
		// The client takes the first window's worth and grants no more: WriteTimeout
		// bounds the flow-control stall and the connection is closed.
		r := dialRaw(t, ts.addr)
		g := get(r, 1, "/endless")
		released(g)
		if err := serveErr(); err != ErrTimeout {
			t.Errorf("ServeConn: %v, want ErrTimeout", err)
		}
	})
}

// TestStreamedBodyReadError: a body stream failing mid-way resets the stream with
// INTERNAL_ERROR: the client sees an error, not a clean end of a truncated body.
func TestStreamedBodyReadError(t *testing.T) {
	const failAt = 100 << 10
	gens := make(chan *genReader, 1)
	ts := startServer(t, Config{}, func(ctx *fasthttp.RequestCtx) {
		g := newGen(-1)
		g.failAt = failAt
		gens <- g
		ctx.Response.SetBodyStream(g, -1)
	})
	resp, err := streamClient(t).Get("http://" + ts.addr + "/fail")
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil || !strings.Contains(err.Error(), "INTERNAL_ERROR") || len(b) > failAt {
		t.Errorf("client read %d bytes, error %v; want a stream error INTERNAL_ERROR", len(b), err)
	}
	g := <-gens
	g.waitClosed(t) // after the RST_STREAM is written
	if g.closes.Load() != 1 {
		t.Errorf("%d closes, want 1", g.closes.Load())
	}

	r := dialRaw(t, ts.addr)
	r.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20})
	r.fr.WriteWindowUpdate(0, 1<<20)
	r.headers(1, true, getFields...)
	got := 0
	for {
		ev := r.expect("RST_STREAM", func(ev event) bool { return ev.stream == 1 })
		if ev.typ == http2.FrameRSTStream {
			if ev.code != http2.ErrCodeInternal {
				t.Errorf("RST_STREAM %v, want INTERNAL_ERROR", ev.code)
			}
			break
		}
		if ev.end {
			t.Fatalf("END_STREAM after %d bytes of a failed stream", got)
		}
		got += len(ev.data)
	}
	g = <-gens
	g.waitClosed(t)
	if got != failAt || g.closes.Load() != 1 {
		t.Errorf("%d bytes before the reset, %d closes; want %d, 1", got, g.closes.Load(), failAt)
	}
	waitFor(t, "the stream's slot released", func() bool { return ts.srv.Stats().StreamsActive == 0 })
}
