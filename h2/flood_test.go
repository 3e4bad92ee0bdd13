package h2

import (
	"bytes"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// cpuTime is the CPU the whole test process used so far.
func cpuTime(t *testing.T) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// frames pre-encodes n repetitions of what add writes, so sending a flood costs the
// test's client almost nothing.
func frames(n int, add func(fr *http2.Framer, i int)) []byte {
	var buf bytes.Buffer
	fr := http2.NewFramer(&buf, nil)
	fr.AllowIllegalWrites = true
	for i := range n {
		add(fr, i)
	}
	return buf.Bytes()
}

// background keeps a well-behaved client busy on its own connection until stop is
// called, and reports how many of its requests were answered 200 and how many not.
func background(t *testing.T, addr string) (stop func() (ok, bad int64)) {
	var okN, badN atomic.Int64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		cl := h2cClient()
		for {
			select {
			case <-done:
				return
			default:
			}
			resp, err := cl.Get("http://" + addr + "/bg")
			if err != nil {
				badN.Add(1)
				continue
			}
			var b bytes.Buffer
			b.ReadFrom(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && bytes.Contains(b.Bytes(), []byte("path=/bg")) {
				okN.Add(1)
			} else {
				badN.Add(1)
			}
		}
	}()
	return func() (int64, int64) {
		close(done)
		wg.Wait()
		return okN.Load(), badN.Load()
	}
}

func TestRapidReset(t *testing.T) {
	ts := startServer(t, Config{}, nil)
	stop := background(t, ts.addr)
	r := dialRaw(t, ts.addr)
	block := r.block(":method", "GET", ":scheme", "http", ":path", "/flood", ":authority", "x")
	const pairs = 20000
	flood := frames(pairs, func(fr *http2.Framer, i int) {
		id := uint32(2*i + 1)
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block, EndStream: true, EndHeaders: true})
		fr.WriteRSTStream(id, http2.ErrCodeCancel)
	})
	waitFor(t, "background traffic", func() bool { return ts.handled.Load() > 10 })
	cpu0, start := cpuTime(t), time.Now()
	go r.c.Write(flood) // fails once the server has closed
	ev := r.expectGoAway(http2.ErrCodeEnhanceYourCalm)
	cpu := cpuTime(t) - cpu0
	elapsed := time.Since(start)
	ok, bad := stop()

	s := ts.srv.Stats()
	floodRuns := ts.floodN.Load()
	t.Logf("rapid reset: GOAWAY last stream %d after %v; process CPU %v; flood handler runs ≈ %d of %d streams; resets received %d; refused %d; background client %d ok, %d failed",
		ev.last, elapsed, cpu, floodRuns, pairs, s.ResetsReceived, s.StreamsRefused, ok, bad)
	if s.GoAwayByReason[ReasonRapidReset] != 1 {
		t.Errorf("rapid_reset GOAWAYs %d, want 1", s.GoAwayByReason[ReasonRapidReset])
	}
	if ev.last >= 2*pairs/4 {
		t.Errorf("GOAWAY after stream %d: the flood went on too long", ev.last)
	}
	if floodRuns > 2000 {
		t.Errorf("the handler ran about %d times for the flood", floodRuns)
	}
	if cpu > time.Second {
		t.Errorf("process CPU %v for the flood", cpu)
	}
	if bad != 0 || ok == 0 {
		t.Errorf("background client: %d ok, %d failed", ok, bad)
	}
}

func TestContinuationFlood(t *testing.T) {
	ts := startServer(t, Config{}, nil)
	stop := background(t, ts.addr)
	f := func(name string, frameLen, n int) {
		t.Helper()
		r := dialRaw(t, ts.addr)
		in0 := ts.bytesIn.Load()
		payload := make([]byte, frameLen)
		flood := frames(n, func(fr *http2.Framer, i int) {
			if i == 0 {
				fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: r.block(getFields...)})
				return
			}
			fr.WriteContinuation(1, false, payload)
		})
		go r.c.Write(flood)
		r.expectGoAway(http2.ErrCodeEnhanceYourCalm)
		read := ts.bytesIn.Load() - in0
		t.Logf("%s: sent up to %d bytes, server read %d", name, len(flood), read)
		if read > 512<<10 {
			t.Errorf("%s: server read %d bytes", name, read)
		}
	}
	f("16 KiB CONTINUATIONs", 16<<10, 256) // 4 MiB
	f("empty CONTINUATIONs", 0, 200000)    // 1.8 MB of frame headers
	s := ts.srv.Stats()
	if s.GoAwayByReason[ReasonContinuationFlood] != 2 {
		t.Errorf("continuation_flood GOAWAYs %d, want 2", s.GoAwayByReason[ReasonContinuationFlood])
	}
	if ok, bad := stop(); bad != 0 || ok == 0 {
		t.Errorf("background client: %d ok, %d failed", ok, bad)
	}
}

func TestControlFloods(t *testing.T) {
	ts := startServer(t, Config{}, nil)
	f := func(name string, setup func(r *rawClient), add func(fr *http2.Framer, i int)) {
		t.Helper()
		r := dialRaw(t, ts.addr)
		setup(r)
		go r.c.Write(frames(5000, add))
		r.expectGoAway(http2.ErrCodeEnhanceYourCalm)
	}
	none := func(*rawClient) {}
	f("SETTINGS", none, func(fr *http2.Framer, _ int) { fr.WriteSettings() })
	f("PING", none, func(fr *http2.Framer, i int) { fr.WritePing(false, [8]byte{byte(i)}) })
	f("empty DATA", func(r *rawClient) {
		r.headers(1, false, ":method", "POST", ":scheme", "http", ":path", "/", ":authority", "x")
	}, func(fr *http2.Framer, _ int) { fr.WriteData(1, false, nil) })
	f("stream WINDOW_UPDATE 0", func(r *rawClient) {
		r.headers(1, false, ":method", "POST", ":scheme", "http", ":path", "/", ":authority", "x")
	}, func(fr *http2.Framer, _ int) { fr.WriteWindowUpdate(1, 0) })
	f("unknown frames", none, func(fr *http2.Framer, _ int) { fr.WriteRawFrame(0xfa, 0, 0, []byte("x")) })
	if n := ts.srv.Stats().GoAwayByReason[ReasonControlFlood]; n != 5 {
		t.Errorf("control_flood GOAWAYs %d, want 5", n)
	}
	// A few SETTINGS and PINGs a second cost nothing.
	r := dialRaw(t, ts.addr)
	for range 3 {
		r.fr.WriteSettings()
		r.fr.WritePing(false, [8]byte{})
	}
	r.headers(1, true, getFields...)
	if status, _ := r.expectStatus(1); status != 200 {
		t.Errorf("after a few SETTINGS and PINGs: %d", status)
	}
}

func TestBodyTimeout(t *testing.T) {
	ts := startServer(t, Config{ReadTimeout: 300 * time.Millisecond}, nil)
	stop := background(t, ts.addr)
	r := dialRaw(t, ts.addr)
	start := time.Now()
	r.headers(1, false, ":method", "POST", ":scheme", "http", ":path", "/", ":authority", "x", "content-length", "10")
	r.fr.WriteData(1, false, []byte("abc")) // and never the rest
	r.headers(3, true, ":method", "GET", ":scheme", "http", ":path", "/block", ":authority", "x")
	status, body := r.expectStatus(1)
	if status != 408 || string(body) != `{"error":"request_timeout"}` {
		t.Errorf("stalled body: %d %q", status, body)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("408 after %v", d)
	}
	r.expectRST(1, http2.ErrCodeNo)
	ev := r.expect("GOAWAY", func(ev event) bool { return ev.typ == http2.FrameGoAway })
	if ev.code != http2.ErrCodeNo || ev.last != 3 {
		t.Errorf("GOAWAY %v last %d, want NO_ERROR 3", ev.code, ev.last)
	}
	// The other stream finishes, then the connection closes.
	ts.closeUnblock()
	if status, _ := r.expectStatus(3); status != 200 {
		t.Errorf("stream 3: %d", status)
	}
	r.expectClosed()
	if n := ts.srv.Stats().GoAwayByReason[ReasonBodyTimeout]; n != 1 {
		t.Errorf("body_timeout GOAWAYs %d, want 1", n)
	}
	if ok, bad := stop(); bad != 0 || ok == 0 {
		t.Errorf("background client: %d ok, %d failed", ok, bad)
	}
}

func TestPingTimeout(t *testing.T) {
	ts := startServer(t, Config{PingInterval: 100 * time.Millisecond, PingTimeout: 200 * time.Millisecond}, nil)
	r := dialRaw(t, ts.addr)
	r.noPingAck = true
	r.headers(1, true, ":method", "GET", ":scheme", "http", ":path", "/block", ":authority", "x")
	r.expectGoAway(http2.ErrCodeNo)
	if n := ts.srv.Stats().GoAwayByReason[ReasonPingTimeout]; n != 1 {
		t.Errorf("ping_timeout GOAWAYs %d, want 1", n)
	}
	// A client that answers PINGs keeps its connection while a handler runs.
	r2 := dialRaw(t, ts.addr)
	r2.headers(1, true, ":method", "GET", ":scheme", "http", ":path", "/sleep", ":authority", "x")
	ts.closeUnblock()
	if status, _ := r2.expectStatus(1); status != 200 {
		t.Errorf("/sleep with PINGs answered: %d", status)
	}
}

// TestSendWindow: the server never sends more than the client's windows allow.
func TestSendWindow(t *testing.T) {
	ts := startServer(t, Config{}, nil)
	r := dialRaw(t, ts.addr)
	r.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1000})
	r.headers(1, true, ":method", "GET", ":scheme", "http", ":path", "/big", ":authority", "x")
	var got []byte
	read := func(want int) {
		t.Helper()
		for len(got) < want {
			ev := r.next(5 * time.Second)
			if ev.closed || ev.typ == http2.FrameRSTStream {
				t.Fatalf("%v after %d bytes", ev, len(got))
			}
			got = append(got, ev.data...)
		}
		if len(got) != want {
			t.Fatalf("got %d bytes, window allowed %d", len(got), want)
		}
	}
	read(1000)
	// Nothing more comes until the window grows.
	r.c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if f, err := r.fr.ReadFrame(); err == nil {
		t.Fatalf("got %v with an empty window", f.Header())
	} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatal(err)
	}
	r.fr.WriteWindowUpdate(1, 50000)
	read(51000)
	// Now the connection window (65535) is the bound.
	r.fr.WriteWindowUpdate(1, 10<<20)
	read(65535)
	r.fr.WriteWindowUpdate(0, 10<<20)
	read(len(bigBody5M))
	if !bytes.Equal(got, bigBody5M) {
		t.Error("body differs")
	}
}

// TestWriteStall: a client that never opens its window holds the connection no longer
// than WriteTimeout.
func TestWriteStall(t *testing.T) {
	ts := startServer(t, Config{WriteTimeout: 300 * time.Millisecond}, nil)
	r := dialRaw(t, ts.addr)
	r.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	start := time.Now()
	r.headers(1, true, ":method", "GET", ":scheme", "http", ":path", "/big", ":authority", "x")
	r.expect("HEADERS", func(ev event) bool { return ev.typ == http2.FrameHeaders })
	r.expectClosed()
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("stalled connection closed after %v", d)
	}
	if err := <-ts.errs; err != ErrTimeout {
		t.Errorf("ServeConn: %v, want ErrTimeout", err)
	}
}
