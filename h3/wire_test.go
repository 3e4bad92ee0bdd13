package h3

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edge-gw/edge/h2"
	"github.com/quic-go/qpack"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/quicvarint"
	"github.com/valyala/fasthttp"
)

// The static table matches quic-go's qpack, an implementation written apart from this
// one: each index decodes to the same field there.
func TestStaticTableMatchesQPACK(t *testing.T) {
	if len(staticEntries) != 99 {
		t.Fatalf("%d static entries, RFC 9204 Appendix A has 99", len(staticEntries))
	}
	for i, e := range staticEntries {
		blk := h2.AppendPrefixInt([]byte{0, 0}, 0xc0, 6, uint64(i))
		f, err := qpack.NewDecoder().Decode(blk)()
		if err != nil || f.Name != e.name || f.Value != e.value {
			t.Errorf("index %d: ours %q: %q, qpack's %q: %q (%v)", i, e.name, e.value, f.Name, f.Value, err)
		}
	}
}

// What appendStatus and appendField write, qpack reads back; and what qpack writes
// (Huffman and static name references included), fieldDecoder reads.
func TestQPACKBothWays(t *testing.T) {
	for _, code := range []int{200, 204, 206, 304, 404, 425, 503, 100, 103, 201, 299, 418, 599} {
		blk := appendField(appendStatus([]byte{0, 0}, code), []byte("x-long-name-"+strings.Repeat("n", 40)), []byte(strings.Repeat("v", 200)))
		next := qpack.NewDecoder().Decode(blk)
		f1, err1 := next()
		f2, err2 := next()
		if err1 != nil || err2 != nil || f1.Name != ":status" || f1.Value != strconv.Itoa(code) || len(f2.Value) != 200 {
			t.Errorf("status %d: qpack read %q %q (%v %v)", code, f1, f2.Name, err1, err2)
		}
	}
	var hb bytes.Buffer
	enc := qpack.NewEncoder(&hb)
	in := [][2]string{{":method", "GET"}, {":path", "/a/b?c=d"}, {":authority", "shop.example"}, {"cookie", "k=v"},
		{"user-agent", "curl/8"}, {"x-custom", "Hüffman value"}, {"accept", "*/*"}, {"content-type", "text/plain"}}
	for _, f := range in {
		enc.WriteField(qpack.HeaderField{Name: f[0], Value: f[1]})
	}
	var d fieldDecoder
	var out [][2]string
	if err := d.decode(hb.Bytes(), func(n, v []byte) { out = append(out, [2]string{string(n), string(v)}) }); err != nil {
		t.Fatal(err)
	}
	if len(out) != len(in) {
		t.Fatalf("decoded %q, want %q", out, in)
	}
	for i := range in {
		if out[i] != in[i] {
			t.Errorf("field %d: %q, want %q", i, out[i], in[i])
		}
	}
	// The dynamic table is never used: a section that names it is refused.
	for _, blk := range [][]byte{{1, 0, 0x80}, {0, 0, 0x80}, {0, 0, 0x40, 0}, {0, 0, 0x10}, {0, 0, 0x00, 0}, {0, 0, 0xff}} {
		if err := d.decode(blk, func(n, v []byte) {}); err == nil {
			t.Errorf("section %x decoded", blk)
		}
	}
}

// rawConn dials ts as an HTTP/3 client that writes its own frames.
func rawConn(t *testing.T, ts *testServer) *quic.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	qc, err := quic.DialAddr(ctx, ts.addr, ts.tlsConfig(), &quic.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { qc.CloseWithError(0, "") })
	ctrl, err := qc.OpenUniStream()
	if err != nil {
		t.Fatal(err)
	}
	ctrl.Write([]byte{streamControl, frameSettings, 0}) // an empty SETTINGS
	return qc
}

// section encodes fields (name, value pairs) as a HEADERS frame.
func section(kv ...string) []byte {
	var hb bytes.Buffer
	enc := qpack.NewEncoder(&hb)
	for i := 0; i+1 < len(kv); i += 2 {
		enc.WriteField(qpack.HeaderField{Name: kv[i], Value: kv[i+1]})
	}
	return append(appendFrameHeader(nil, frameHeaders, uint64(hb.Len())), hb.Bytes()...)
}

func dataFrame(b string) []byte {
	return append(appendFrameHeader(nil, frameData, uint64(len(b))), b...)
}

// sendRaw writes b on a new request stream and reads the answer, or the stream error.
func sendRaw(t *testing.T, qc *quic.Conn, b []byte) (rawResponse, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	str, err := qc.OpenStreamSync(ctx)
	if err != nil {
		return rawResponse{}, err
	}
	str.Write(b)
	str.Close()
	return readRaw(ctx, str)
}

// Requests HTTP/3 forbids are reset with H3_MESSAGE_ERROR (RFC 9114 §4.1.2) and the
// connection goes on serving; frames only a control stream may carry close it.
func TestMalformedRequests(t *testing.T) {
	ts := startServer(t, Config{MaxHeaderBytes: 1024, MaxBodySize: 100}, nil)
	qc := rawConn(t, ts)
	get := []string{":method", "GET", ":scheme", "https", ":authority", "localhost", ":path", "/"}
	with := func(kv ...string) []byte { return section(append(append([]string{}, get...), kv...)...) }
	for _, c := range []struct {
		name string
		b    []byte
	}{
		{"uppercase name", with("X-Upper", "1")},
		{"connection field", with("connection", "close")},
		{"transfer-encoding", with("transfer-encoding", "chunked")},
		{"te other than trailers", with("te", "gzip")},
		{"pseudo after regular", section(":method", "GET", ":scheme", "https", "x-a", "1", ":path", "/")},
		{"duplicate :path", with(":path", "/again")},
		{"unknown pseudo", with(":foo", "1")},
		{":protocol (no extended CONNECT)", with(":protocol", "websocket")},
		{"no :scheme", section(":method", "GET", ":authority", "localhost", ":path", "/")},
		{"no :path", section(":method", "GET", ":scheme", "https", ":authority", "localhost")},
		{"a space in :path", section(":method", "GET", ":scheme", "https", ":authority", "localhost", ":path", "/a b")},
		{"newline in a value", with("x-a", "a\nb")},
		{"host naming another entity", with("host", "other.example")},
		{"content-length the body belies", append(with("content-length", "5"), dataFrame("abc")...)},
		{"two content-lengths", with("content-length", "1", "content-length", "2")},
		{"CONNECT with a :path", section(":method", "CONNECT", ":authority", "x:443", ":path", "/")},
		{"uppercase in trailers", append(append(with(), dataFrame("a")...), section("X-T", "1")...)},
		{"no HEADERS at all", nil},
	} {
		r, err := sendRaw(t, qc, c.b)
		want := errMessage
		if c.b == nil {
			want = errRequestIncomplete
		}
		var se *quic.StreamError
		if !errors.As(err, &se) || se.ErrorCode != quic.StreamErrorCode(want) {
			t.Errorf("%s: answer %d %v, want stream error %#x", c.name, r.status, err, want)
		}
	}
	if got := ts.requests(); len(got) != 0 {
		t.Errorf("malformed requests reached the handler: %q", got)
	}
	// Still serving: and what is allowed gets through.
	for _, c := range []struct {
		name   string
		b      []byte
		status int
		body   string
	}{
		{"a plain GET", with(), 200, "GET / "},
		{"host repeating :authority with the default port", with("host", "localhost:443"), 200, "GET / "},
		{"te: trailers", with("te", "trailers"), 200, "GET / "},
		{"a body, then trailers", append(append(section(":method", "POST", ":scheme", "https", ":authority", "localhost", ":path", "/p"),
			dataFrame("ab")...), append(dataFrame("c"), section("x-trailer", "1")...)...), 200, "POST /p abc"},
		{"an unknown frame type is skipped", append(append(appendFrameHeader(nil, 0x21, 3), "xyz"...), with()...), 200, "GET / "},
		{"CONNECT is not served", section(":method", "CONNECT", ":authority", "x:443"), 405, `{"error":"method_not_allowed"}`},
		{"a header section over max", with("x-big", strings.Repeat("b", 1100)), 431, `{"error":"header_too_large"}`},
		{"a Content-Length over max", append(with("content-length", "101"), dataFrame("a")...), 413, `{"error":"body_too_large"}`},
		{"a body over max", append(section(":method", "POST", ":scheme", "https", ":authority", "localhost", ":path", "/p"),
			dataFrame(strings.Repeat("a", 101))...), 413, `{"error":"body_too_large"}`},
	} {
		r, err := sendRaw(t, qc, c.b)
		if err != nil || r.status != c.status || string(r.body) != c.body {
			t.Errorf("%s: %d %q %v, want %d %q", c.name, r.status, r.body, err, c.status, c.body)
		}
	}
	// Cookie crumbs are joined for HTTP/1.1.
	r, err := sendRaw(t, qc, with("cookie", "a=1", "cookie", "b=2"))
	if err != nil || r.header["x-cookie"] != "a=1; b=2" {
		t.Errorf("cookies: %v %q, want a=1; b=2", err, r.header["x-cookie"])
	}
	// A control frame on a request stream ends the connection.
	sendRaw(t, qc, append(with(), appendFrameHeader(nil, frameSettings, 0)...))
	select {
	case <-qc.Context().Done():
		var ae *quic.ApplicationError
		if err := context.Cause(qc.Context()); !errors.As(err, &ae) || ae.ErrorCode != errFrameUnexpected {
			t.Errorf("connection closed with %v, want H3_FRAME_UNEXPECTED", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("SETTINGS on a request stream: the connection stayed open")
	}
}

// A client's control stream must start with SETTINGS, come once and never end.
func TestClientControlStream(t *testing.T) {
	ts := startServer(t, Config{}, nil)
	for _, c := range []struct {
		name string
		b    []byte
		fin  bool
		want quic.ApplicationErrorCode
	}{
		{"no SETTINGS first", []byte{streamControl, frameGoAway, 1, 0}, false, errMissingSettings},
		{"the control stream ended", []byte{streamControl, frameSettings, 0}, true, errClosedCriticalStream},
		{"DATA on the control stream", []byte{streamControl, frameSettings, 0, frameData, 1, 'x'}, false, errFrameUnexpected},
		{"a push stream", []byte{streamPush, 0}, false, errStreamCreation},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		qc, err := quic.DialAddr(ctx, ts.addr, ts.tlsConfig(), &quic.Config{})
		if err != nil {
			t.Fatal(err)
		}
		s, _ := qc.OpenUniStream()
		s.Write(c.b)
		if c.fin {
			s.Close()
		}
		select {
		case <-qc.Context().Done():
			var ae *quic.ApplicationError
			if err := context.Cause(qc.Context()); !errors.As(err, &ae) || ae.ErrorCode != c.want {
				t.Errorf("%s: closed with %v, want %#x", c.name, err, c.want)
			}
		case <-ctx.Done():
			t.Errorf("%s: the connection stayed open", c.name)
		}
		cancel()
		qc.CloseWithError(0, "")
	}
}

// pingingConn dials ts as a client that keeps its connection alive with pings.
func pingingConn(t *testing.T, ctx context.Context, ts *testServer) *quic.Conn {
	t.Helper()
	qc, err := quic.DialAddr(ctx, ts.addr, ts.tlsConfig(), &quic.Config{KeepAlivePeriod: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { qc.CloseWithError(0, "") })
	return qc
}

// A connection kept alive by its client's pings is closed IdleTimeout after its last
// request ended, and not while a request runs longer than that.
func TestIdleConnectionClosed(t *testing.T) {
	release := make(chan struct{})
	ts := startServer(t, Config{IdleTimeout: 300 * time.Millisecond}, func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/slow" {
			<-release
		}
		ctx.WriteString("ok")
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	qc := pingingConn(t, ctx, ts)
	get := section(":method", "GET", ":scheme", "https", ":authority", "localhost", ":path", "/slow")
	go func() { time.Sleep(time.Second); close(release) }()
	start := time.Now()
	if r, err := sendRaw(t, qc, get); err != nil || r.status != 200 {
		t.Fatalf("a request running past the idle timeout: %d %v", r.status, err)
	}
	select {
	case <-qc.Context().Done():
		var ae *quic.ApplicationError
		if err := context.Cause(qc.Context()); !errors.As(err, &ae) || ae.ErrorCode != errNoError || ae.Remote != true {
			t.Errorf("closed with %v, want edge's H3_NO_ERROR", err)
		}
		if d := time.Since(start); d < time.Second+250*time.Millisecond {
			t.Errorf("closed %v after the start, before the idle timeout ran from the answer", d)
		}
	case <-ctx.Done():
		t.Error("an idle connection kept open by pings was never closed")
	}
}

// A request stream that never finishes, on a connection kept alive by pings, is reset
// after the idle timeout, and so is one whose answer is never read.
func TestStalledStreamsReset(t *testing.T) {
	ts := startServer(t, Config{IdleTimeout: 300 * time.Millisecond}, func(ctx *fasthttp.RequestCtx) {
		ctx.SetBody(make([]byte, 4<<20)) // more than the stream's flow-control window
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	qc := pingingConn(t, ctx, ts)
	get := section(":method", "GET", ":scheme", "https", ":authority", "localhost", ":path", "/")
	str, _ := qc.OpenStreamSync(ctx)
	str.Write(get[:len(get)-2]) // HEADERS, cut short
	if r, err := readRaw(ctx, str); err == nil || ctx.Err() != nil {
		t.Fatalf("an unfinished request: %d %v, want the stream reset within the idle timeout", r.status, err)
	}
	str, _ = qc.OpenStreamSync(ctx)
	str.Write(get)
	str.Close()
	time.Sleep(time.Second) // read nothing: the answer stalls on flow control
	if _, err := io.ReadAll(str); err == nil || ctx.Err() != nil {
		t.Fatalf("an answer never read: %v, want the stream reset", err)
	}
}

// Interim answers a handler sends (ctx.Conn()'s WriteInterim, as over HTTP/2) go out
// as HEADERS frames ahead of the final answer, without content fields; a final status
// is refused there.
func TestInterimAnswers(t *testing.T) {
	type interimWriter interface {
		WriteInterim(h *fasthttp.ResponseHeader) error
	}
	ts := startServer(t, Config{}, func(ctx *fasthttp.RequestCtx) {
		w, ok := ctx.Conn().(interimWriter)
		if !ok {
			ctx.Error("no WriteInterim", 500)
			return
		}
		var h fasthttp.ResponseHeader
		h.SetStatusCode(fasthttp.StatusEarlyHints)
		h.Add("Link", "</app.css>; rel=preload; as=style")
		h.SetContentType("text/plain")
		if w.WriteInterim(&h) != nil {
			ctx.Error("103 refused", 500)
			return
		}
		h.SetStatusCode(200)
		if w.WriteInterim(&h) == nil {
			ctx.Error("a 200 went out as interim", 500)
			return
		}
		ctx.WriteString("final")
	})
	qc := rawConn(t, ts)
	r, err := sendRaw(t, qc, section(":method", "GET", ":scheme", "https", ":authority", "localhost", ":path", "/"))
	if err != nil || len(r.statuses) != 2 || r.statuses[0] != 103 || r.status != 200 || string(r.body) != "final" {
		t.Fatalf("%v %v %q, want 103 then 200 final", r.statuses, err, r.body)
	}
	if h := r.heads[0]; h["link"] != "</app.css>; rel=preload; as=style" || h["content-type"] != "" || h["content-length"] != "" {
		t.Errorf("the 103's fields %q, want its Link and no content fields", h)
	}
}

// readRaw reads an answer's frames off str.
func readRaw(ctx context.Context, str *quic.Stream) (rawResponse, error) {
	stop := context.AfterFunc(ctx, func() { str.CancelRead(0) })
	defer stop()
	in, err := io.ReadAll(str)
	if err != nil {
		return rawResponse{}, err
	}
	r := rawResponse{header: map[string]string{}}
	for len(in) > 0 {
		typ, n, err := quicvarint.Parse(in)
		if err != nil {
			return r, err
		}
		in = in[n:]
		l, n, err := quicvarint.Parse(in)
		if err != nil || uint64(len(in)-n) < l {
			return r, errors.New("truncated frame")
		}
		payload := in[n : n+int(l)]
		in = in[n+int(l):]
		switch typ {
		case frameHeaders:
			head := map[string]string{}
			r.heads = append(r.heads, head)
			next := qpack.NewDecoder().Decode(payload)
			for {
				f, err := next()
				if err == io.EOF {
					break
				}
				if err != nil {
					return r, err
				}
				if f.Name == ":status" {
					r.status, _ = strconv.Atoi(f.Value)
					r.statuses = append(r.statuses, r.status)
				}
				r.header[f.Name] = f.Value
				head[f.Name] = f.Value
			}
		case frameData:
			r.body = append(r.body, payload...)
		}
	}
	return r, nil
}
