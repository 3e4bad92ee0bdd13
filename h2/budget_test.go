package h2

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/net/http2"
)

func TestConfigResolvedBodyBuffer(t *testing.T) {
	f := func(cfg Config, want int64) {
		t.Helper()
		if got := cfg.resolved().MaxConnBodyBuffer; got != want {
			t.Errorf("%+v: MaxConnBodyBuffer %d, want %d", cfg, got, want)
		}
	}
	f(Config{}, 2*DefaultMaxBodySize)                                      // 8 MiB
	f(Config{MaxBodySize: 64 << 10}, DefaultConnWindowSize)                // not below the window
	f(Config{MaxBodySize: 1 << 20, MaxConnBodyBuffer: 1}, 1<<20)           // raised to MaxBodySize
	f(Config{MaxBodySize: 1 << 20, MaxConnBodyBuffer: 5 << 20}, 5<<20)     // as given
	f(Config{MaxBodySize: 1 << 62}, math.MaxInt64-1)                       // no overflow
	f(Config{MaxConnBodyBuffer: -1, ConnWindowSize: 64 << 20}, 64<<20)     // negative: default
	f(Config{MaxConnBodyBuffer: 3 << 20, ConnWindowSize: 64 << 20}, 4<<20) // MaxBodySize floor only
}

// TestSetConfig: a connection keeps the config it was accepted with; the ones accepted
// after SetConfig get the new one, in their SETTINGS and in what they allow.
func TestSetConfig(t *testing.T) {
	ts := startServer(t, Config{MaxConcurrentStreams: 2}, nil)
	block := []string{":method", "GET", ":scheme", "http", ":path", "/block", ":authority", "x"}
	old := dialRaw(t, ts.addr)
	if got := old.settings[http2.SettingMaxConcurrentStreams]; got != 2 {
		t.Fatalf("SETTINGS_MAX_CONCURRENT_STREAMS %d, want 2", got)
	}
	old.headers(1, true, block...) // opened before SetConfig, on a connection from before
	waitFor(t, "first handler running", func() bool { return ts.blockedN.Load() == 1 })

	ts.srv.SetConfig(Config{MaxConcurrentStreams: 3})
	if ts.srv.Config.MaxConcurrentStreams != 2 {
		t.Error("SetConfig changed Server.Config")
	}
	cur := dialRaw(t, ts.addr)
	if got := cur.settings[http2.SettingMaxConcurrentStreams]; got != 3 {
		t.Errorf("new connection: SETTINGS_MAX_CONCURRENT_STREAMS %d, want 3", got)
	}
	// Zero fields of the new config take the defaults.
	if got := cur.settings[http2.SettingInitialWindowSize]; got != DefaultInitialWindowSize {
		t.Errorf("new connection: SETTINGS_INITIAL_WINDOW_SIZE %d, want %d", got, DefaultInitialWindowSize)
	}

	// The old connection still allows 2 streams, the new one 3.
	old.headers(3, true, block...)
	for _, id := range []uint32{1, 3, 5} {
		cur.headers(id, true, block...)
	}
	waitFor(t, "five handlers running", func() bool { return ts.blockedN.Load() == 5 })
	old.headers(5, true, getFields...)
	old.expectRST(5, http2.ErrCodeRefusedStream)
	cur.headers(7, true, getFields...)
	cur.expectRST(7, http2.ErrCodeRefusedStream)

	ts.closeUnblock()
	// statuses collects the response statuses of n streams, in whatever order they come.
	statuses := func(r *rawClient, n int) map[uint32]string {
		got := map[uint32]string{}
		for len(got) < n {
			if ev := r.expect("HEADERS", func(ev event) bool { return ev.typ == http2.FrameHeaders }); ev.status != "" {
				got[ev.stream] = ev.status
			}
		}
		return got
	}
	if got := statuses(old, 2); fmt.Sprint(got) != "map[1:200 3:200]" {
		t.Errorf("old connection: statuses %v", got)
	}
	if got := statuses(cur, 3); fmt.Sprint(got) != "map[1:200 3:200 5:200]" {
		t.Errorf("new connection: statuses %v", got)
	}
	if s := ts.srv.Stats(); s.StreamsRefused != 2 || s.HandlerRuns != 5 {
		t.Errorf("refused %d, handler runs %d; want 2 and 5", s.StreamsRefused, s.HandlerRuns)
	}
}

// flowClient sends request bodies on a rawClient within the windows the server grants,
// counts the connection window it grants and collects the answers.
type flowClient struct {
	*rawClient
	connWin int64            // connection window left
	granted int64            // sum of the WINDOW_UPDATE increments on stream 0
	initWin int64            // the server's SETTINGS_INITIAL_WINDOW_SIZE
	win     map[uint32]int64 // stream windows left
	status  map[uint32]int
	body    map[uint32][]byte
	done    map[uint32]bool // the answer ended (or the stream was reset)
	rst     map[uint32]http2.ErrCode
	goAway  []http2.ErrCode
	buf     []byte
}

func dialFlow(t *testing.T, addr string) *flowClient {
	r := dialRaw(t, addr)
	return &flowClient{
		rawClient: r,
		connWin:   defaultWindow,
		initWin:   int64(r.settings[http2.SettingInitialWindowSize]),
		win:       map[uint32]int64{},
		status:    map[uint32]int{},
		body:      map[uint32][]byte{},
		done:      map[uint32]bool{},
		rst:       map[uint32]http2.ErrCode{},
		buf:       make([]byte, 16<<10),
	}
}

// open sends the HEADERS of a POST without END_STREAM.
func (fc *flowClient) open(id uint32, path string, kv ...string) {
	fc.t.Helper()
	fc.headers(id, false, append([]string{":method", "POST", ":scheme", "http", ":path", path, ":authority", "x"}, kv...)...)
	fc.win[id] = fc.initWin
}

// sendSome sends one DATA frame of up to want bytes on id within the windows; it returns
// how many bytes it sent.
func (fc *flowClient) sendSome(id uint32, want int) int {
	fc.t.Helper()
	n := int(min(int64(want), int64(len(fc.buf)), fc.connWin, fc.win[id]))
	if n <= 0 {
		return 0
	}
	for i := range fc.buf[:n] {
		fc.buf[i] = byte(id)
	}
	if err := fc.fr.WriteData(id, false, fc.buf[:n]); err != nil {
		fc.t.Fatal(err)
	}
	fc.connWin -= int64(n)
	fc.win[id] -= int64(n)
	return n
}

// end sends an empty DATA frame with END_STREAM: it costs no window.
func (fc *flowClient) end(id uint32) {
	fc.t.Helper()
	if err := fc.fr.WriteData(id, true, nil); err != nil {
		fc.t.Fatal(err)
	}
}

// pump handles the next frame; false if none came within quiet.
func (fc *flowClient) pump(quiet time.Duration) bool {
	fc.t.Helper()
	fc.c.SetReadDeadline(time.Now().Add(quiet))
	f, err := fc.fr.ReadFrame()
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return false
		}
		fc.t.Fatalf("reading: %v", err)
	}
	switch f := f.(type) {
	case *http2.WindowUpdateFrame:
		if f.StreamID == 0 {
			fc.connWin += int64(f.Increment)
			fc.granted += int64(f.Increment)
		} else {
			fc.win[f.StreamID] += int64(f.Increment)
		}
	case *http2.HeadersFrame:
		fields, err := fc.dec.DecodeFull(f.HeaderBlockFragment())
		if err != nil {
			fc.t.Fatal(err)
		}
		for _, hf := range fields {
			if hf.Name == ":status" {
				fc.status[f.StreamID], _ = strconv.Atoi(hf.Value)
			}
		}
		fc.done[f.StreamID] = f.StreamEnded()
	case *http2.DataFrame:
		fc.body[f.StreamID] = append(fc.body[f.StreamID], f.Data()...)
		fc.done[f.StreamID] = f.StreamEnded()
	case *http2.RSTStreamFrame:
		fc.rst[f.StreamID] = f.ErrCode
		fc.done[f.StreamID] = true
	case *http2.GoAwayFrame:
		fc.goAway = append(fc.goAway, f.ErrCode)
	case *http2.PingFrame:
		if !f.IsAck() {
			fc.fr.WritePing(true, f.Data)
		}
	}
	return true
}

// sendBody sends n bytes on id as the windows allow, then ends the stream.
func (fc *flowClient) sendBody(id uint32, n int) {
	fc.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for n > 0 {
		if k := fc.sendSome(id, n); k > 0 {
			n -= k
			continue
		}
		fc.pump(100 * time.Millisecond)
		if time.Now().After(deadline) {
			fc.t.Fatalf("stream %d: window stayed closed with %d bytes to send", id, n)
		}
	}
	fc.end(id)
}

// wait pumps until the answers of ids have ended.
func (fc *flowClient) wait(ids ...uint32) {
	fc.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, id := range ids {
		for !fc.done[id] {
			fc.pump(100 * time.Millisecond)
			if time.Now().After(deadline) {
				fc.t.Fatalf("no answer on stream %d", id)
			}
		}
	}
}

// serverConn is the server's state of its only connection: connection receive window
// left and the body bytes it holds for streams whose handler has not started.
func (ts *testServer) serverConn(t *testing.T) (recvWin, bodyBuf int64) {
	t.Helper()
	ts.srv.mu.Lock()
	defer ts.srv.mu.Unlock()
	if len(ts.srv.conns) != 1 {
		t.Fatalf("%d connections, want 1", len(ts.srv.conns))
	}
	for c := range ts.srv.conns {
		c.mu.Lock()
		recvWin, bodyBuf = c.recvWin, c.bodyBuf
		c.mu.Unlock()
	}
	return recvWin, bodyBuf
}

// TestConnBodyBuffer: bodies arriving on many streams hold at most MaxConnBodyBuffer +
// ConnWindowSize: the server stops granting connection window, the client waits, and the
// window reopens when handlers take the bodies (even before the handlers return).
func TestConnBodyBuffer(t *testing.T) {
	const (
		budget  = 256 << 10
		window  = 64 << 10
		streams = 10
	)
	ts := startServer(t, Config{MaxConnBodyBuffer: budget, ConnWindowSize: window,
		InitialWindowSize: 64 << 10, MaxBodySize: 256 << 10}, nil)
	fc := dialFlow(t, ts.addr)
	sent := map[uint32]int{}
	for i := range streams {
		fc.open(uint32(2*i+1), "/block")
	}

	// (a) Each stream wants 200 KiB, 2000 KiB together: far more than the budget. Send
	// round-robin while any window allows; each stream keeps window of its own, so what
	// stops the client is the connection window.
	var total int64
	for total < streams*200<<10 {
		progress := false
		for i := range streams {
			id := uint32(2*i + 1)
			if k := fc.sendSome(id, 200<<10-sent[id]); k > 0 {
				sent[id] += k
				total += int64(k)
				progress = true
			}
		}
		if progress || fc.pump(100*time.Millisecond) {
			continue
		}
		// Quiet: stalled for good once the server has processed all we sent and
		// withholds the window (else a WINDOW_UPDATE is on its way).
		if recvWin, _ := ts.serverConn(t); recvWin == 0 {
			break
		}
	}
	if fc.connWin != 0 || total != defaultWindow+fc.granted {
		t.Fatalf("sent %d, connection window left %d, granted %d+%d", total, fc.connWin, defaultWindow, fc.granted)
	}
	if _, held := ts.serverConn(t); held != total {
		t.Errorf("server holds %d body bytes, client sent %d", held, total)
	}
	if total < budget || total >= budget+window {
		t.Errorf("connection window granted in all %d, want in [%d, %d)", total, budget, budget+window)
	}
	t.Logf("granted %d bytes of connection window for a budget of %d", total, budget)
	for i := range streams {
		if id := uint32(2*i + 1); sent[id] >= 200<<10 || fc.win[id] <= 0 {
			t.Fatalf("stream %d: sent %d, window %d: the stream's window, not the connection's, stopped it", id, sent[id], fc.win[id])
		}
	}

	// (b) Ending the streams (an empty DATA frame costs no window) starts their handlers,
	// which take the bodies: the window reopens while the handlers still block.
	for i := range streams {
		fc.end(uint32(2*i + 1))
	}
	waitFor(t, "handlers running", func() bool { return ts.blockedN.Load() == streams })
	for fc.connWin == 0 {
		if !fc.pump(5 * time.Second) {
			t.Fatal("connection window did not reopen once the handlers took the bodies")
		}
	}
	if _, held := ts.serverConn(t); held != 0 {
		t.Errorf("server holds %d body bytes with every handler started", held)
	}
	// Two more streams with bodies larger than the window go through in full meanwhile.
	for _, id := range []uint32{21, 23} {
		fc.open(id, "/block")
		fc.sendBody(id, 250<<10)
		sent[id] = 250 << 10
	}
	waitFor(t, "handlers running", func() bool { return ts.blockedN.Load() == streams+2 })
	ts.closeUnblock()
	for id, n := range sent {
		fc.wait(id)
		want := bytes.Repeat([]byte{byte(id)}, n)
		sum := sha256.Sum256(want)
		got := parseEcho(t, fc.body[id])
		if fc.status[id] != 200 || got["body"] != strconv.Itoa(n) || got["sum"] != fmt.Sprintf("%x", sum[:8]) {
			t.Errorf("stream %d: %d, body %s bytes, want 200 and %d", id, fc.status[id], got["body"], n)
		}
	}
	if s := ts.srv.Stats(); s.HandlerRuns != streams+2 || len(fc.goAway) != 0 || len(fc.rst) != 0 {
		t.Errorf("handler runs %d, GOAWAYs %v, resets %v", s.HandlerRuns, fc.goAway, fc.rst)
	}
}

// TestConnBodyBufferTimeout: when incomplete bodies hold the whole budget, the stream
// whose ReadTimeout ends first is answered 408, which releases its bytes, and the other
// one completes (then the connection goes away, as after any 408).
func TestConnBodyBufferTimeout(t *testing.T) {
	const readTimeout = time.Second
	ts := startServer(t, Config{MaxConnBodyBuffer: 128 << 10, ConnWindowSize: 64 << 10,
		MaxBodySize: 128 << 10, ReadTimeout: readTimeout}, nil)
	fc := dialFlow(t, ts.addr)
	start := time.Now()
	fc.open(1, "/")
	for n := 100 << 10; n > 0; { // and never the end: stream 1 holds 100 KiB of the budget
		if k := fc.sendSome(1, n); k > 0 {
			n -= k
		} else if !fc.pump(5 * time.Second) {
			t.Fatal("stream 1: no window")
		}
	}
	// Not a wait for an event: stream 3's ReadTimeout must end well after stream 1's.
	time.Sleep(readTimeout / 2)
	fc.open(3, "/")
	fc.sendBody(3, 100<<10) // at most 92 KiB fit before stream 1 is answered 408
	fc.wait(1, 3)
	if fc.status[1] != 408 || fc.rst[1] != http2.ErrCodeNo {
		t.Errorf("stream 1: %d, RST_STREAM %v; want 408 and NO_ERROR", fc.status[1], fc.rst[1])
	}
	if d := time.Since(start); d < readTimeout {
		t.Errorf("stream 3 completed after %v, before stream 1's ReadTimeout released the budget", d)
	}
	if fc.status[3] != 200 || parseEcho(t, fc.body[3])["body"] != strconv.Itoa(100<<10) {
		t.Errorf("stream 3: %d %q", fc.status[3], fc.body[3])
	}
	if len(fc.goAway) != 1 || fc.goAway[0] != http2.ErrCodeNo {
		t.Errorf("GOAWAYs %v, want one NO_ERROR", fc.goAway)
	}
}

// TestBigBodyBudget: one stream with a body of MaxBodySize always completes: with the
// default budget, and with the smallest one (MaxBodySize).
func TestBigBodyBudget(t *testing.T) {
	f := func(cfg Config, n int) {
		t.Helper()
		ts := startServer(t, cfg, func(ctx *fasthttp.RequestCtx) {
			ctx.SetBodyString(strconv.Itoa(len(ctx.Request.Body())))
		})
		fc := dialFlow(t, ts.addr)
		fc.open(1, "/upload", "content-length", strconv.Itoa(n))
		fc.sendBody(1, n)
		fc.wait(1)
		if fc.status[1] != 200 || string(fc.body[1]) != strconv.Itoa(n) || len(fc.rst) != 0 {
			t.Errorf("%+v: %d %q, want 200 %d", cfg, fc.status[1], fc.body[1], n)
		}
	}
	f(Config{}, 3<<20)
	f(Config{}, DefaultMaxBodySize)
	f(Config{MaxBodySize: 1 << 20, MaxConnBodyBuffer: 1, ConnWindowSize: 64 << 10}, 1<<20)
}
