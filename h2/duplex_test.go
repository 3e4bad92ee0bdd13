package h2

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/net/http2"
)

// isGRPC is the StreamRequest of these tests: gRPC requests stream, others buffer.
func isGRPC(h *fasthttp.RequestHeader) bool {
	return bytes.HasPrefix(h.ContentType(), []byte("application/grpc"))
}

// trailerReader mimics h2up's Exchange: the response body stream of a proxied gRPC call,
// which declares its trailers up front and fills them in as it returns io.EOF.
type trailerReader struct {
	r    io.Reader
	resp *fasthttp.Response
	kv   []string
}

func (t *trailerReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if err == io.EOF {
		for i := 0; i+1 < len(t.kv); i += 2 {
			t.resp.Header.AddTrailer(t.kv[i])
			t.resp.Header.Add(t.kv[i], t.kv[i+1])
		}
	}
	return n, err
}

func (t *trailerReader) Close() error {
	if c, ok := t.r.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

func fieldsOf(ev event) map[string]string {
	m := map[string]string{}
	for _, f := range ev.fields {
		m[f.Name] += f.Value
	}
	return m
}

// TestResponseTrailers: declared trailers (AddTrailer, then a value) follow a buffered
// or a streamed body in a HEADERS frame with END_STREAM, lowercase, without the Trailer
// announcement or connection-specific names; a Trailers-Only answer stays one HEADERS
// frame.
func TestResponseTrailers(t *testing.T) {
	ts := startServer(t, Config{}, func(ctx *fasthttp.RequestCtx) {
		h := &ctx.Response.Header
		switch string(ctx.Path()) {
		case "/buffered":
			h.AddTrailer("Grpc-Status, Grpc-Message, X-Sum, Upgrade")
			ctx.SetBodyString("hello")
			h.Set("Grpc-Status", "0")
			h.Set("Grpc-Message", "all good")
			h.Add("X-Sum", "1")
			h.Add("X-Sum", "2")
			h.Set("Upgrade", "h2c") // connection-specific: never sent
		case "/empty": // no body, trailers
			h.AddTrailer("Grpc-Status")
			h.Set("Grpc-Status", "0")
		case "/declared": // declared, never set: no trailers
			h.AddTrailer("Grpc-Status")
			ctx.SetBodyString("x")
		case "/streamed":
			ctx.SetContentType("application/grpc")
			h.AddTrailer("Grpc-Status, Grpc-Message") // what h2up declares up front
			ctx.Response.SetBodyStream(&trailerReader{
				r:    newGen(100_000),
				resp: &ctx.Response,
				kv:   []string{"Grpc-Status", "13", "Grpc-Message", "boom", "X-Custom-Bin", "AAEC"},
			}, -1)
		case "/late": // a header announced as a trailer after it was sent, as h2up does
			h.Set("X-Chat", "open")
			ctx.Response.SetBodyStream(&trailerReader{
				r:    newGen(10),
				resp: &ctx.Response,
				kv:   []string{"X-Chat", "closed", "Grpc-Status", "0"},
			}, -1)
		case "/trailers-only":
			ctx.SetContentType("application/grpc")
			h.Set("Grpc-Status", "5")
			h.Set("Grpc-Message", "not found")
		}
	})

	t.Run("net/http client", func(t *testing.T) {
		cl := streamClient(t)
		resp, body := do(t, cl, "GET", "http://"+ts.addr+"/buffered", nil)
		if string(body) != "hello" || resp.StatusCode != 200 {
			t.Fatalf("%d %q", resp.StatusCode, body)
		}
		want := http.Header{"Grpc-Status": {"0"}, "Grpc-Message": {"all good"}, "X-Sum": {"1", "2"}}
		if fmt.Sprint(resp.Trailer) != fmt.Sprint(want) {
			t.Errorf("trailers %v, want %v", resp.Trailer, want)
		}
		if v := resp.Header.Values("Trailer"); len(v) != 0 {
			t.Errorf("Trailer header sent: %q", v)
		}
		for _, k := range []string{"Grpc-Status", "X-Sum", "Upgrade"} {
			if v := resp.Header.Values(k); len(v) != 0 {
				t.Errorf("%s in the header section: %q", k, v)
			}
		}

		resp, body = do(t, cl, "GET", "http://"+ts.addr+"/streamed", nil)
		want = http.Header{"Grpc-Status": {"13"}, "Grpc-Message": {"boom"}, "X-Custom-Bin": {"AAEC"}}
		if len(body) != 100_000 || fmt.Sprint(resp.Trailer) != fmt.Sprint(want) {
			t.Errorf("streamed: %d bytes, trailers %v; want 100000, %v", len(body), resp.Trailer, want)
		}
	})

	t.Run("frames", func(t *testing.T) {
		r := dialRaw(t, ts.addr)
		r.fr.WriteWindowUpdate(0, 1<<20)
		id := uint32(1)
		// get returns the frames of the answer on a new stream, up to END_STREAM.
		get := func(path string) []event {
			t.Helper()
			r.headers(id, true, ":method", "GET", ":scheme", "http", ":path", path, ":authority", "x")
			var evs []event
			for {
				ev := r.expect("a frame of "+path, func(ev event) bool { return ev.stream == id })
				if ev.typ == http2.FrameRSTStream {
					t.Fatalf("%s: %v", path, ev)
				}
				evs = append(evs, ev)
				if ev.typ == http2.FrameData && len(ev.data) > 0 {
					r.fr.WriteWindowUpdate(id, uint32(len(ev.data)))
					r.fr.WriteWindowUpdate(0, uint32(len(ev.data)))
				}
				if ev.end {
					break
				}
			}
			id += 2
			return evs
		}
		// check: HEADERS, n DATA frames with no END_STREAM, trailers with END_STREAM.
		check := func(path string, evs []event, trailers map[string]string) {
			t.Helper()
			last := evs[len(evs)-1]
			if evs[0].typ != http2.FrameHeaders || last.typ != http2.FrameHeaders || len(evs) < 2 {
				t.Fatalf("%s: frames %v, want HEADERS, DATA…, HEADERS", path, evs)
			}
			for _, ev := range evs[1 : len(evs)-1] {
				if ev.typ != http2.FrameData || ev.end {
					t.Fatalf("%s: %v between the HEADERS", path, ev)
				}
			}
			if _, ok := fieldsOf(evs[0])["trailer"]; ok {
				t.Errorf("%s: trailer field in the headers", path)
			}
			if got := fieldsOf(last); fmt.Sprint(got) != fmt.Sprint(trailers) {
				t.Errorf("%s: trailers %v, want %v", path, got, trailers)
			}
		}
		check("/buffered", get("/buffered"), map[string]string{"grpc-status": "0", "grpc-message": "all good", "x-sum": "12"})
		check("/streamed", get("/streamed"), map[string]string{"grpc-status": "13", "grpc-message": "boom", "x-custom-bin": "AAEC"})
		evs := get("/late")
		check("/late", evs, map[string]string{"x-chat": "closed", "grpc-status": "0"})
		if v := fieldsOf(evs[0])["x-chat"]; v != "open" {
			t.Errorf("/late: x-chat header %q", v)
		}
		evs = get("/empty")
		if len(evs) != 2 || evs[0].end || fieldsOf(evs[1])["grpc-status"] != "0" {
			t.Errorf("/empty: %v, want HEADERS then trailers", evs)
		}
		evs = get("/declared")
		if len(evs) != 2 || evs[1].typ != http2.FrameData || !evs[1].end {
			t.Errorf("/declared: %v, want HEADERS, DATA with END_STREAM", evs)
		}
		evs = get("/trailers-only")
		f := fieldsOf(evs[0])
		if len(evs) != 1 || !evs[0].end || f["grpc-status"] != "5" || f["grpc-message"] != "not found" {
			t.Errorf("/trailers-only: %v %v, want one HEADERS with END_STREAM", evs, f)
		}
		// Nothing else follows on that stream: the next frame is the next answer's.
		r.headers(id, true, getFields...)
		if ev := r.next(5 * time.Second); ev.stream != id {
			t.Errorf("after the Trailers-Only answer: %v", ev)
		}
	})
}

// grpcFrame is a gRPC length-prefixed message.
func grpcFrame(msg []byte) []byte {
	b := make([]byte, 5, 5+len(msg))
	binary.BigEndian.PutUint32(b[1:], uint32(len(msg)))
	return append(b, msg...)
}

// echoHandler answers a streamed request with its own body, each piece as it is read:
// its response body stream reads the request's, so the request goes on being read after
// the handler returned. At the end it adds grpc-status 0 as a trailer.
func echoHandler(ctx *fasthttp.RequestCtx) {
	body := ctx.Request.BodyStream()
	if body == nil {
		ctx.Error("not streamed", 500)
		return
	}
	ctx.SetContentType("application/grpc")
	ctx.Response.Header.AddTrailer("Grpc-Status")
	ctx.Response.SetBodyStream(&trailerReader{r: body, resp: &ctx.Response, kv: []string{"Grpc-Status", "0"}}, -1)
}

// TestFullDuplex: a client writes a message, waits for its echo, writes the next… 100
// rounds on one stream: only possible when the request body streams to the handler
// while the response streams back.
func TestFullDuplex(t *testing.T) {
	ts := startServer(t, Config{StreamRequest: isGRPC}, echoHandler)
	pr, pw := io.Pipe()
	req, _ := http.NewRequest("POST", "http://"+ts.addr+"/chat", pr)
	req.Header.Set("Content-Type", "application/grpc")
	resp, err := streamClient(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	start := time.Now()
	const rounds = 100
	for i := range rounds {
		msg := grpcFrame(bytes.Repeat([]byte(strconv.Itoa(i)), 100+i*37))
		if _, err := pw.Write(msg); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(resp.Body, got); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		if !bytes.Equal(got, msg) {
			t.Fatalf("round %d: echo differs", i)
		}
		if i == 0 && ts.srv.Stats().StreamsActive != 1 {
			// The handler returned long ago; the stream keeps its slot.
			t.Errorf("%d streams active mid-call, want 1", ts.srv.Stats().StreamsActive)
		}
	}
	elapsed := time.Since(start)
	pw.Close()
	rest, err := io.ReadAll(resp.Body)
	if err != nil || len(rest) != 0 {
		t.Fatalf("after the last round: %q, %v", rest, err)
	}
	if resp.Trailer.Get("Grpc-Status") != "0" {
		t.Errorf("trailers %v", resp.Trailer)
	}
	t.Logf("%d round trips in %v (%v each)", rounds, elapsed.Round(time.Millisecond), (elapsed / rounds).Round(time.Microsecond))
	waitFor(t, "the stream's slot released", func() bool { return ts.srv.Stats().StreamsActive == 0 })

	// A request StreamRequest declines is buffered as before.
	_, body := do(t, streamClient(t), "POST", "http://"+ts.addr+"/plain", []byte("abc"))
	if !bytes.Contains(body, []byte("not streamed")) {
		t.Errorf("plain request: %q", body)
	}
}

// TestRequestBackpressure: a handler reading its streamed body slowly paces the client:
// the window is returned as the handler reads, so what the client has sent and the
// handler not read never exceeds one stream window.
func TestRequestBackpressure(t *testing.T) {
	const (
		window = 64 << 10
		total  = 1 << 20
		piece  = 8 << 10
	)
	var read atomic.Int64
	done := make(chan uint32, 1)
	ts := startServer(t, Config{StreamRequest: isGRPC, InitialWindowSize: window}, func(ctx *fasthttp.RequestCtx) {
		body := ctx.Request.BodyStream()
		buf := make([]byte, piece)
		var sum uint32
		for {
			n, err := body.Read(buf)
			sum = crc32.Update(sum, crc32.IEEETable, buf[:n])
			read.Add(int64(n))
			if err == io.EOF {
				break
			}
			if err != nil {
				ctx.Error(err.Error(), 500)
				return
			}
			time.Sleep(time.Millisecond) // a slow reader, not a wait for something
		}
		done <- sum
		ctx.SetBodyString(strconv.FormatInt(read.Load(), 10))
	})
	fc := dialFlow(t, ts.addr)
	fc.fr.WriteWindowUpdate(0, 1<<20) // the client receives freely; we measure its sending
	fc.open(1, "/slow", "content-type", "application/grpc")
	var sent, ahead int64
	blocked := 0
	var sum uint32
	deadline := time.Now().Add(20 * time.Second)
	for sent < total {
		n := fc.sendSome(1, int(min(total-sent, piece)))
		if n == 0 {
			blocked++
			fc.pump(50 * time.Millisecond)
			if time.Now().After(deadline) {
				t.Fatalf("stuck after %d bytes", sent)
			}
			continue
		}
		sum = crc32.Update(sum, crc32.IEEETable, fc.buf[:n])
		sent += int64(n)
		ahead = max(ahead, sent-read.Load())
	}
	fc.end(1)
	fc.wait(1)
	if got := <-done; got != sum || string(fc.body[1]) != strconv.Itoa(total) {
		t.Errorf("handler read %q (crc %08x), want %d (crc %08x)", fc.body[1], got, total, sum)
	}
	// The handler counts a piece once Read returned it, after Read returned its window:
	// the client may be one piece further than the count says.
	t.Logf("client blocked %d times; at most %d bytes sent ahead of the handler's reads (window %d + piece %d)", blocked, ahead, window, piece)
	if ahead > window+piece {
		t.Errorf("client got %d bytes ahead of the reader, want at most the window %d + a piece %d", ahead, window, piece)
	}
	if ahead < window/2 || blocked == 0 {
		t.Errorf("the client was not paced: %d ahead, blocked %d times", ahead, blocked)
	}
	if recvWin, bodyBuf := ts.serverConn(t); bodyBuf != 0 {
		t.Errorf("after the stream: recvWin %d, bodyBuf %d", recvWin, bodyBuf)
	}
}

// TestRequestBodyReset: a client resetting a stream, or closing its connection, while
// the handler waits in Read: the Read returns an error and the stream's slot is freed.
func TestRequestBodyReset(t *testing.T) {
	got := make(chan error, 1)
	reading := make(chan struct{}, 1)
	ts := startServer(t, Config{StreamRequest: isGRPC}, func(ctx *fasthttp.RequestCtx) {
		body := ctx.Request.BodyStream()
		buf := make([]byte, 1024)
		n, err := io.ReadFull(body, buf[:100])
		if n != 100 || err != nil {
			got <- fmt.Errorf("first read: %d, %v", n, err)
			return
		}
		reading <- struct{}{}
		_, err = body.Read(buf)
		got <- err
		ctx.SetStatusCode(500)
	})
	f := func(t *testing.T, end func(r *rawClient), want error) {
		r := dialRaw(t, ts.addr)
		r.headers(1, false, ":method", "POST", ":scheme", "http", ":path", "/", ":authority", "x", "content-type", "application/grpc")
		r.fr.WriteData(1, false, make([]byte, 100))
		<-reading
		end(r)
		select {
		case err := <-got:
			if !errors.Is(err, want) {
				t.Errorf("Read: %v, want %v", err, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Read did not return")
		}
		waitFor(t, "the stream's slot released", func() bool { return ts.srv.Stats().StreamsActive == 0 })
	}
	t.Run("RST_STREAM", func(t *testing.T) {
		f(t, func(r *rawClient) { r.fr.WriteRSTStream(1, http2.ErrCodeCancel) }, ErrBodyReset)
	})
	t.Run("connection closed", func(t *testing.T) {
		f(t, func(r *rawClient) { r.c.Close() }, ErrBodyConnClosed)
	})
}

// TestRequestBodyEnds: how a streamed body ends besides END_STREAM on DATA: trailers,
// the answer finishing first (RST_STREAM(NO_ERROR)), a content-length mismatch, and
// ReadTimeout as an idle limit.
func TestRequestBodyEnds(t *testing.T) {
	type result struct {
		n   int
		err error
	}
	results := make(chan result, 1)
	started := make(chan struct{}, 1)
	kept := make(chan io.Reader, 1)
	ts := startServer(t, Config{StreamRequest: isGRPC, ReadTimeout: 300 * time.Millisecond}, func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/early" { // answers without reading
			kept <- ctx.Request.BodyStream() // against the rules: for a late Read
			ctx.SetBodyString("early")
			return
		}
		if ctx.Request.BodyStream() == nil { // not streamed: a GET
			return
		}
		switch string(ctx.Path()) {
		case "/started":
			started <- struct{}{}
		case "/no-idle-limit":
			ctx.Request.BodyStream().(*Body).SetIdleTimeout(0)
		case "/idle-1s":
			ctx.Request.BodyStream().(*Body).SetIdleTimeout(time.Second)
		}
		b, err := io.ReadAll(ctx.Request.BodyStream())
		results <- result{len(b), err}
		ctx.SetBodyString(strconv.Itoa(len(b)))
	})
	post := func(r *rawClient, id uint32, path string, kv ...string) {
		r.headers(id, false, append([]string{":method", "POST", ":scheme", "http", ":path", path, ":authority", "x", "content-type", "application/grpc"}, kv...)...)
	}
	want := func(n int, err error) {
		t.Helper()
		select {
		case res := <-results:
			if res.n != n || !errors.Is(res.err, err) {
				t.Errorf("handler read %d bytes, %v; want %d, %v", res.n, res.err, n, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the handler's read did not end")
		}
	}

	r := dialRaw(t, ts.addr)
	// Trailers end the body; they are dropped.
	post(r, 1, "/")
	r.fr.WriteData(1, false, []byte("hello"))
	r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: r.block("x-trailer", "v"), EndStream: true, EndHeaders: true})
	want(5, nil)
	if status, body := r.expectStatus(1); status != 200 || string(body) != "5" {
		t.Errorf("trailers: %d %q", status, body)
	}

	// The answer ends first: RST_STREAM(NO_ERROR) after it; DATA still in flight is
	// dropped quietly and the connection goes on.
	post(r, 3, "/early")
	r.fr.WriteData(3, false, []byte("more to come"))
	if status, body := r.expectStatus(3); status != 200 || string(body) != "early" {
		t.Errorf("early answer: %d %q", status, body)
	}
	r.expectRST(3, http2.ErrCodeNo)
	// A Read after the stream is done (its ctx maybe serving another request already)
	// fails and touches nothing.
	if n, err := (<-kept).Read(make([]byte, 10)); n != 0 || err != ErrBodyClosed {
		t.Errorf("late Read: %d, %v; want 0, ErrBodyClosed", n, err)
	}
	r.fr.WriteData(3, false, []byte("late"))
	r.fr.WriteData(3, true, []byte("late"))
	r.headers(5, true, getFields...)
	if ev := r.next(5 * time.Second); ev.stream != 5 || ev.typ != http2.FrameHeaders {
		t.Errorf("after late DATA on a stream abandoned: %v", ev)
	}

	// content-length not matching the DATA: PROTOCOL_ERROR, and the Read fails. (Had
	// it come before the handler started, the handler would not have run.)
	post(r, 7, "/started", "content-length", "3")
	<-started
	r.fr.WriteData(7, true, []byte("four"))
	r.expectRST(7, http2.ErrCodeProtocol)
	want(0, ErrBodyReset)

	// ReadTimeout is an idle limit: a body trickling for 3×ReadTimeout is read whole…
	post(r, 9, "/")
	for range 10 {
		r.fr.WriteData(9, false, []byte("tick"))
		time.Sleep(100 * time.Millisecond) // the client's pace, not a wait for something
	}
	r.fr.WriteData(9, true, nil)
	want(40, nil)
	if status, body := r.expectStatus(9); status != 200 || string(body) != "40" {
		t.Errorf("trickle: %d %q", status, body)
	}
	// …a quiet one fails its Read with ErrBodyTimeout and is reset with CANCEL.
	post(r, 11, "/")
	r.fr.WriteData(11, false, []byte("tick"))
	r.expectRST(11, http2.ErrCodeCancel)
	want(4, ErrBodyTimeout)
	r.headers(13, true, getFields...)
	if status, _ := r.expectStatus(13); status != 200 {
		t.Errorf("after the timeout: %d", status)
	}
	// A handler may lift the idle limit (a gRPC call bounded by its own deadline)…
	post(r, 15, "/no-idle-limit")
	r.fr.WriteData(15, false, []byte("tick"))
	time.Sleep(700 * time.Millisecond) // quiet for over twice ReadTimeout
	r.fr.WriteData(15, true, []byte("tock"))
	want(8, nil)
	if status, body := r.expectStatus(15); status != 200 || string(body) != "8" {
		t.Errorf("no idle limit: %d %q", status, body)
	}
	// …or set another one, which then holds instead of ReadTimeout.
	post(r, 17, "/idle-1s")
	r.fr.WriteData(17, false, []byte("tick"))
	time.Sleep(500 * time.Millisecond)
	r.fr.WriteData(17, false, []byte("tock"))
	start := time.Now()
	r.expectRST(17, http2.ErrCodeCancel)
	want(8, ErrBodyTimeout)
	if d := time.Since(start); d < 800*time.Millisecond {
		t.Errorf("reset %v after the last DATA, want about the 1s the handler set", d)
	}
	if s := ts.srv.Stats(); s.GoAwayByReason[ReasonBodyTimeout] != 0 {
		t.Errorf("GOAWAY for a streamed body's timeout")
	}
	waitFor(t, "the streams' slots released", func() bool { return ts.srv.Stats().StreamsActive == 0 })
}

// TestStreamedRequestHuge: 512 MiB streamed to a handler that reads it as it comes,
// while the heap stays small: h2 holds at most a window of it.
func TestStreamedRequestHuge(t *testing.T) {
	total := int64(512 << 20)
	if testing.Short() || raceEnabled {
		total = 64 << 20
	}
	var (
		gotN   int64
		gotSum uint32
		wg     sync.WaitGroup
	)
	wg.Add(1)
	ts := startServer(t, Config{StreamRequest: isGRPC}, func(ctx *fasthttp.RequestCtx) {
		defer wg.Done()
		var w crcCounter
		_, err := io.CopyBuffer(&w, ctx.Request.BodyStream(), make([]byte, 64<<10))
		gotN, gotSum = w.n, w.sum
		if err != nil {
			ctx.Error(err.Error(), 500)
			return
		}
		ctx.SetBodyString("ok")
	})

	heap := watchHeap()

	g := newGen(total)
	req, _ := http.NewRequest("POST", "http://"+ts.addr+"/upload", struct{ io.Reader }{g})
	req.Header.Set("Content-Type", "application/grpc")
	start := time.Now()
	resp, err := streamClient(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	elapsed := time.Since(start)
	heap.stop()
	wg.Wait()
	if resp.StatusCode != 200 || string(body) != "ok" || gotN != total || gotSum != g.sum {
		t.Errorf("status %d %q; handler read %d bytes (crc %08x), sent %d (crc %08x)", resp.StatusCode, body, gotN, gotSum, total, g.sum)
	}
	heap.check(t, total, elapsed)
}

// TestBodyDetach: a handler that replaces its request's body stream with a reader built
// on it (fasthttp's SetBodyStream closes the stream it replaces) detaches it first and
// still reads the whole body; without Detach the replaced body is closed.
func TestBodyDetach(t *testing.T) {
	ts := startServer(t, Config{StreamRequest: func(*fasthttp.RequestHeader) bool { return true }}, func(ctx *fasthttp.RequestCtx) {
		src := ctx.Request.BodyStream()
		if string(ctx.Path()) == "/detach" {
			src = src.(*Body).Detach()
		}
		ctx.Request.SetBodyStream(io.MultiReader(strings.NewReader(">"), src), -1)
		b, err := io.ReadAll(ctx.Request.BodyStream())
		fmt.Fprintf(ctx, "%s %v", b, err)
	})
	c := streamClient(t)
	if _, body := do(t, c, "POST", "http://"+ts.addr+"/detach", []byte("abc")); string(body) != ">abc <nil>" {
		t.Errorf("detached: %q, want the whole body", body)
	}
	if _, body := do(t, c, "POST", "http://"+ts.addr+"/replace", []byte("abc")); !bytes.Contains(body, []byte(ErrBodyClosed.Error())) {
		t.Errorf("replaced without Detach: %q, want %v", body, ErrBodyClosed)
	}
}
