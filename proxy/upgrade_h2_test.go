package proxy

import (
	"bufio"
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/edge-gw/edge/h2"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// wsH2Client is a raw HTTP/2 client, enough for RFC 8441 extended CONNECT.
type wsH2Client struct {
	t        *testing.T
	c        net.Conn
	fr       *http2.Framer
	eb       bytes.Buffer
	enc      *hpack.Encoder
	dec      *hpack.Decoder
	settings map[http2.SettingID]uint32
	nextID   uint32
}

func dialWSH2(t *testing.T, addr string) *wsH2Client {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	w := &wsH2Client{t: t, c: c, fr: http2.NewFramer(c, bufio.NewReader(c)), dec: hpack.NewDecoder(4096, nil),
		settings: map[http2.SettingID]uint32{}, nextID: 1}
	w.enc = hpack.NewEncoder(&w.eb)
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := w.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := w.fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading the server's SETTINGS: %v", err)
		}
		if sf, ok := f.(*http2.SettingsFrame); ok && !sf.IsAck() {
			sf.ForeachSetting(func(s http2.Setting) error { w.settings[s.ID] = s.Val; return nil })
			if err := w.fr.WriteSettingsAck(); err != nil {
				t.Fatal(err)
			}
			return w
		}
	}
}

// open sends a request's HEADERS (without END_STREAM unless end) on a new stream.
func (w *wsH2Client) open(end bool, kv ...string) uint32 {
	w.t.Helper()
	w.eb.Reset()
	for i := 0; i+1 < len(kv); i += 2 {
		w.enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
	}
	id := w.nextID
	w.nextID += 2
	if err := w.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: w.eb.Bytes(), EndHeaders: true, EndStream: end}); err != nil {
		w.t.Fatal(err)
	}
	return id
}

// frame returns the next frame of stream id, answering what the connection needs on
// the way and giving back the window of DATA.
func (w *wsH2Client) frame(id uint32) http2.Frame {
	w.t.Helper()
	for {
		f, err := w.fr.ReadFrame()
		if err != nil {
			w.t.Fatalf("stream %d: %v", id, err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				w.fr.WriteSettingsAck()
			}
			continue
		case *http2.PingFrame:
			if !f.IsAck() {
				w.fr.WritePing(true, f.Data)
			}
			continue
		case *http2.DataFrame:
			if n := uint32(len(f.Data())); n > 0 {
				w.fr.WriteWindowUpdate(0, n)
				w.fr.WriteWindowUpdate(id, n)
			}
		case *http2.GoAwayFrame:
			w.t.Fatalf("GOAWAY %v", f.ErrCode)
		}
		if f.Header().StreamID == id {
			return f
		}
	}
}

// response reads the answer's HEADERS: its fields, and whether it ended the stream.
func (w *wsH2Client) response(id uint32) (map[string]string, bool) {
	w.t.Helper()
	f := w.frame(id)
	hf, ok := f.(*http2.HeadersFrame)
	if !ok {
		w.t.Fatalf("stream %d: %T instead of HEADERS", id, f)
	}
	fields, err := w.dec.DecodeFull(hf.HeaderBlockFragment())
	if err != nil {
		w.t.Fatal(err)
	}
	m := map[string]string{}
	for _, f := range fields {
		m[f.Name] = f.Value
	}
	return m, hf.StreamEnded()
}

// body reads the rest of a stream's DATA until END_STREAM.
func (w *wsH2Client) body(id uint32) string {
	w.t.Helper()
	var b []byte
	for {
		switch f := w.frame(id).(type) {
		case *http2.DataFrame:
			b = append(b, f.Data()...)
			if f.StreamEnded() {
				return string(b)
			}
		case *http2.RSTStreamFrame:
			w.t.Fatalf("stream %d: RST_STREAM %v", id, f.ErrCode)
		}
	}
}

// wsFrame builds a masked client frame (RFC 6455 §5.2).
func wsFrame(opcode byte, payload []byte) []byte {
	b := []byte{0x80 | opcode}
	switch n := len(payload); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n < 1<<16:
		b = append(b, 0x80|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		panic("frame too large for the test")
	}
	mask := [4]byte{0x12, 0x34, 0x56, 0x78}
	b = append(b, mask[:]...)
	for i, c := range payload {
		b = append(b, c^mask[i%4])
	}
	return b
}

// wsRead parses one unmasked server frame from the stream's DATA, reading more as needed.
type wsReader struct {
	w   *wsH2Client
	id  uint32
	buf []byte
	eos bool // END_STREAM seen
}

func (r *wsReader) need(n int) bool {
	for len(r.buf) < n {
		if r.eos {
			return false
		}
		switch f := r.w.frame(r.id).(type) {
		case *http2.DataFrame:
			r.buf = append(r.buf, f.Data()...)
			r.eos = f.StreamEnded()
		case *http2.RSTStreamFrame:
			r.w.t.Fatalf("stream %d: RST_STREAM %v", r.id, f.ErrCode)
		}
	}
	return true
}

func (r *wsReader) next() (opcode byte, payload []byte) {
	t := r.w.t
	t.Helper()
	if !r.need(2) {
		t.Fatal("END_STREAM before a frame")
	}
	if r.buf[1]&0x80 != 0 {
		t.Fatal("server frame masked")
	}
	opcode, n, hl := r.buf[0]&0x0f, int(r.buf[1]&0x7f), 2
	if r.buf[0]&0x80 == 0 {
		t.Fatal("fragmented frame")
	}
	if n == 126 {
		if !r.need(4) {
			t.Fatal("short frame")
		}
		n, hl = int(binary.BigEndian.Uint16(r.buf[2:])), 4
	} else if n == 127 {
		t.Fatal("frame too large for the test")
	}
	if !r.need(hl + n) {
		t.Fatal("short frame")
	}
	payload = bytes.Clone(r.buf[hl : hl+n])
	r.buf = r.buf[hl+n:]
	return opcode, payload
}

func TestWebSocketH2(t *testing.T) {
	if string(hdrEdgeProtocol) != h2.ProtocolHeader {
		t.Fatalf("hdrEdgeProtocol %q, h2.ProtocolHeader %q", hdrEdgeProtocol, h2.ProtocolHeader)
	}
	o := startWSOrigin(t)
	e := startEdge(t, wsConfig(o.addr, ""))
	addr := serveH2C(t, e.px.ListenerHandler("default", ProtoH2))
	g := e.px.tunnelState.groups["ws"]
	w := dialWSH2(t, addr)
	if v, ok := w.settings[http2.SettingEnableConnectProtocol]; !ok || v != 1 {
		t.Fatalf("SETTINGS_ENABLE_CONNECT_PROTOCOL = %d (sent: %v)", v, ok)
	}

	id := w.open(false, ":method", "CONNECT", ":protocol", "websocket", ":scheme", "http", ":path", "/ws/echo",
		":authority", "x", "sec-websocket-version", "13")
	h, ended := w.response(id)
	if h[":status"] != "200" || ended {
		t.Fatalf("extended CONNECT: %v, ended %v", h, ended)
	}
	if _, ok := h["sec-websocket-accept"]; ok || h["content-type"] != "" {
		t.Errorf("sec-websocket-accept passed on: %v", h)
	}
	// Run counts the tunnel on its goroutine, which may start after the 200 went out.
	waitUntil(t, 5*time.Second, "the tunnel counted", func() bool { return g.Active() == 1 })
	r := &wsReader{w: w, id: id}
	for i := range 10000 {
		msg := strings.Repeat(fmt.Sprintf("m%d-", i), 1+i%50)
		if err := w.fr.WriteData(id, false, wsFrame(1, []byte(msg))); err != nil {
			t.Fatal(err)
		}
		op, got := r.next()
		if op != 1 || string(got) != msg {
			t.Fatalf("message %d: opcode %d %q", i, op, got)
		}
	}
	// Close: the origin answers with its close frame and ends the connection, which
	// ends the stream.
	if err := w.fr.WriteData(id, false, wsFrame(8, []byte{0x03, 0xe8})); err != nil {
		t.Fatal(err)
	}
	if op, got := r.next(); op != 8 || !bytes.HasPrefix(got, []byte{0x03, 0xe8}) {
		t.Fatalf("close: opcode %d %x", op, got)
	}
	if r.need(len(r.buf)+1) || len(r.buf) != 0 {
		t.Fatalf("bytes after the close frame: %q", r.buf)
	}
	// The origin's end was END_STREAM (a half-close); the client ends its side too.
	if err := w.fr.WriteData(id, true, nil); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 5*time.Second, "the tunnel closed", func() bool { return g.Active() == 0 })
	if n := g.Total(); n != 1 {
		t.Errorf("tunnels opened %d, want 1", n)
	}

	// The connection still serves: the origin refuses, edge relays, no tunnel.
	id = w.open(false, ":method", "CONNECT", ":protocol", "websocket", ":scheme", "http", ":path", "/ws/deny",
		":authority", "x", "sec-websocket-version", "13")
	if h, ended := w.response(id); h[":status"] != "403" || ended {
		t.Fatalf("/ws/deny: %v, ended %v", h, ended)
	}
	if b := w.body(id); !strings.Contains(b, "origin_says_no") {
		t.Errorf("/ws/deny body %q", b)
	}
	// A banned client never reaches the origin.
	id = w.open(false, ":method", "CONNECT", ":protocol", "websocket", ":scheme", "http", ":path", "/ws/echo",
		":authority", "x", "sec-websocket-version", "13", "x-forwarded-for", "10.1.1.1")
	if h, _ := w.response(id); h[":status"] != "403" {
		t.Fatalf("banned: %v", h)
	}
	// A plain CONNECT is still not served.
	id = w.open(true, ":method", "CONNECT", ":authority", "x:443")
	if h, _ := w.response(id); h[":status"] != "405" {
		t.Fatalf("plain CONNECT: %v", h)
	}
	if n := g.Total(); n != 1 || g.Active() != 0 {
		t.Errorf("tunnels opened %d (active %d), want 1 (0)", n, g.Active())
	}
}

// The protocol header is h2's to set: neither an HTTP/2 client nor an HTTP/1.1 one
// opens a tunnel by sending it.
func TestWebSocketH2Spoof(t *testing.T) {
	o := startWSOrigin(t)
	e := startEdge(t, wsConfig(o.addr, ""))
	w := dialWSH2(t, serveH2C(t, e.px.ListenerHandler("default", ProtoH2)))
	id := w.open(true, ":method", "GET", ":scheme", "http", ":path", "/ws/plain", ":authority", "x",
		"x-edge-protocol", "websocket")
	if h, _ := w.response(id); h[":status"] != "200" {
		t.Fatalf("GET with x-edge-protocol: %v", h)
	}
	if b := w.body(id); b != "plain /ws/plain" {
		t.Errorf("GET with x-edge-protocol: %q", b)
	}

	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "CONNECT /ws/echo HTTP/1.1\r\nHost: x\r\nX-Edge-Protocol: websocket\r\n\r\n")
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 405") {
		t.Fatalf("HTTP/1.1 CONNECT with X-Edge-Protocol: %q, %v", line, err)
	}
	if g := e.px.tunnelState.groups["ws"]; g.Total() != 0 {
		t.Errorf("tunnels opened %d", g.Total())
	}
}

// A half-close is passed on over HTTP/2 both ways: the origin's end of its bytes is the
// stream's END_STREAM while the client's bytes still flow up, and the client's
// END_STREAM is the origin's end of file while the origin's answer still flows down.
func TestWebSocketH2HalfClose(t *testing.T) {
	got := make(chan string, 1)
	origin, _ := rawOrigin(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		sum := sha1.Sum([]byte(req.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
		fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
			base64.StdEncoding.EncodeToString(sum[:]))
		switch req.URL.Path {
		case "/ws/origin-first":
			io.WriteString(c, "bye")
			c.(*net.TCPConn).CloseWrite()
			rest, err := io.ReadAll(br)
			got <- fmt.Sprintf("%s %v", rest, err)
		case "/ws/client-first":
			rest, err := io.ReadAll(br)
			fmt.Fprintf(c, "got %s %v", rest, err)
		}
	})
	e := startEdge(t, wsConfig(origin, ""))
	g := e.px.tunnelState.groups["ws"]
	w := dialWSH2(t, serveH2C(t, e.px.ListenerHandler("default", ProtoH2)))
	open := func(path string) uint32 {
		t.Helper()
		id := w.open(false, ":method", "CONNECT", ":protocol", "websocket", ":scheme", "http", ":path", path,
			":authority", "x", "sec-websocket-version", "13")
		if h, ended := w.response(id); h[":status"] != "200" || ended {
			t.Fatalf("%s: %v, ended %v", path, h, ended)
		}
		return id
	}

	id := open("/ws/origin-first")
	if b := w.body(id); b != "bye" { // to END_STREAM; an RST_STREAM fails the test
		t.Fatalf("origin-first: %q before END_STREAM", b)
	}
	if err := w.fr.WriteData(id, false, []byte("still ")); err != nil {
		t.Fatal(err)
	}
	if err := w.fr.WriteData(id, true, []byte("here")); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-got:
		if s != "still here <nil>" {
			t.Errorf("origin-first: the origin read %q after its half-close", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("origin-first: the client's bytes never reached the origin")
	}

	id = open("/ws/client-first")
	if err := w.fr.WriteData(id, true, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if b := w.body(id); b != "got hi <nil>" {
		t.Errorf("client-first: %q", b)
	}
	waitUntil(t, 5*time.Second, "both tunnels closed", func() bool { return g.Active() == 0 })
	if n := g.Total(); n != 2 {
		t.Errorf("tunnels opened %d, want 2", n)
	}
}
