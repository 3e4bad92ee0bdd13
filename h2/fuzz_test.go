package h2

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// frameSeeds are client frame sequences (after the preface and SETTINGS): requests of
// every shape, and the frames and header blocks of known HTTP/2 attacks and mistakes.
func frameSeeds() [][]byte {
	var out [][]byte
	var eb bytes.Buffer
	enc := hpack.NewEncoder(&eb)
	block := func(kv ...string) []byte {
		eb.Reset()
		for i := 0; i+1 < len(kv); i += 2 {
			enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
		}
		return bytes.Clone(eb.Bytes())
	}
	get := []string{":method", "GET", ":scheme", "http", ":path", "/x?q=1", ":authority", "example.com", "cookie", "a=1", "cookie", "b=2"}
	post := []string{":method", "POST", ":scheme", "https", ":path", "/up", ":authority", "example.com", "content-length", "5"}
	seq := func(write func(fr *http2.Framer)) {
		var b bytes.Buffer
		enc = hpack.NewEncoder(&eb) // each input is a new connection, with a new table
		fr := http2.NewFramer(&b, nil)
		fr.AllowIllegalWrites = true
		write(fr)
		out = append(out, b.Bytes())
	}
	seq(func(fr *http2.Framer) {
		fr.WriteSettingsAck()
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(get...), EndStream: true, EndHeaders: true})
	})
	seq(func(fr *http2.Framer) {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(post...), EndHeaders: true})
		fr.WriteData(1, false, []byte("hel"))
		fr.WriteWindowUpdate(0, 1000)
		fr.WriteData(1, true, []byte("lo"))
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: block(get...), EndStream: true, EndHeaders: true, Priority: http2.PriorityParam{StreamDep: 1, Weight: 9}})
	})
	seq(func(fr *http2.Framer) { // a header block in pieces
		b := block(get...)
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: b[:3], EndStream: true})
		fr.WriteContinuation(1, false, b[3:6])
		fr.WriteContinuation(1, true, b[6:])
	})
	seq(func(fr *http2.Framer) { // rapid reset
		for id := uint32(1); id < 20; id += 2 {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block(get...), EndHeaders: true})
			fr.WriteRSTStream(id, http2.ErrCodeCancel)
		}
	})
	seq(func(fr *http2.Framer) { // CONTINUATION without end
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(get...)})
		for range 10 {
			fr.WriteContinuation(1, false, block("x-pad", "0123456789"))
		}
	})
	seq(func(fr *http2.Framer) { // content-length that the DATA contradicts, and a trailer
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(post...), EndHeaders: true})
		fr.WriteData(1, false, []byte("too long!"))
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block("x-trailer", "1"), EndStream: true, EndHeaders: true})
	})
	seq(func(fr *http2.Framer) { // malformed fields
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(":method", "GET", ":path", "/", "Upper", "x", "connection", "close", "te", "gzip"), EndStream: true, EndHeaders: true})
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: block(":method", "CONNECT", ":protocol", "websocket", ":scheme", "https", ":path", "/ws", ":authority", "a"), EndHeaders: true})
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 5, BlockFragment: block(":method", "CONNECT", ":authority", "a:443"), EndHeaders: true})
	})
	seq(func(fr *http2.Framer) { // control frames, odd settings
		fr.WritePing(false, [8]byte{1, 2, 3})
		fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 31}, http2.Setting{ID: http2.SettingMaxFrameSize, Val: 100})
		fr.WritePriority(1, http2.PriorityParam{StreamDep: 1})
		fr.WriteWindowUpdate(1, 0)
		fr.WriteGoAway(0, http2.ErrCodeNo, []byte("bye"))
	})
	seq(func(fr *http2.Framer) { // an HPACK table size update and an oversized index
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0x3f, 0xe1, 0x1f, 0xff, 0xff, 0xff, 0x0f}, EndStream: true, EndHeaders: true})
	})
	return out
}

// FuzzServeConn sends any frames, after the client preface and SETTINGS, on a real
// connection served by ServeConn, then half-closes, and checks that the server never
// panics, that everything it writes reads as HTTP/2 frames (first its SETTINGS; header
// blocks that decode, with a valid :status on responses) and ends with the connection
// closed, and that every so many inputs no connection, stream or goroutine is left.
func FuzzServeConn(f *testing.F) {
	ts := startServer(f, Config{ReadTimeout: 5 * time.Second}, func(ctx *fasthttp.RequestCtx) {
		fmt.Fprintf(ctx, "%s %s %d", ctx.Method(), ctx.RequestURI(), len(ctx.PostBody()))
	})
	for _, s := range frameSeeds() {
		f.Add(s)
	}
	var settings, endPing bytes.Buffer
	http2.NewFramer(&settings, nil).WriteSettings()
	http2.NewFramer(&endPing, nil).WritePing(false, endPingData)
	execs, baseline := 0, 0
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 64<<10 {
			return
		}
		execs++
		if execs == 1 {
			baseline = runtime.NumGoroutine()
		}
		c, err := net.Dial("tcp", ts.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		_, _ = c.Write([]byte(ClientPreface))
		_, _ = c.Write(settings.Bytes())
		_, _ = c.Write(completeFrames(data)) // a server that ends the connection early makes this fail
		_, _ = c.Write(endPing.Bytes())

		// Read as the server writes. Its answer to the final PING means it has read
		// everything before; once the requests it read are answered (or a moment has
		// passed: a stream may wait for more DATA), the client half-closes and the
		// server must end the connection.
		fr := http2.NewFramer(nil, c)
		dec := hpack.NewDecoder(4096, nil)
		for i := 0; ; i++ {
			fh, err := fr.ReadFrame()
			if err != nil {
				if isTimeout(err) {
					t.Fatalf("after %d frames: %v (the server neither wrote nor closed)", i, err)
				}
				var ce http2.ConnectionError
				if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || !errors.As(err, &ce) && isReset(err) {
					break
				}
				t.Fatalf("server frame %d does not read: %v", i+1, err)
			}
			if i == 0 {
				if s, ok := fh.(*http2.SettingsFrame); !ok || s.IsAck() {
					t.Fatalf("first server frame %v, want SETTINGS", fh)
				}
			}
			switch fh := fh.(type) {
			case *http2.PingFrame:
				if fh.IsAck() && fh.Data == endPingData {
					for range 20 {
						if ts.srv.Stats().StreamsActive == 0 {
							break
						}
						time.Sleep(time.Millisecond)
					}
					_ = c.(*net.TCPConn).CloseWrite()
				}
			case *http2.HeadersFrame:
				if !fh.HeadersEnded() {
					t.Fatalf("server HEADERS without END_HEADERS: %v", fh)
				}
				fields, err := dec.DecodeFull(fh.HeaderBlockFragment())
				if err != nil {
					t.Fatalf("server header block does not decode: %v", err)
				}
				if len(fields) > 0 && fields[0].Name == ":status" {
					if code, err := strconv.Atoi(fields[0].Value); err != nil || code < 100 || code > 599 {
						t.Fatalf("server answered :status %q", fields[0].Value)
					}
				}
			}
		}

		if execs%200 == 0 {
			deadline := time.Now().Add(20 * time.Second)
			for st := ts.srv.Stats(); st.ConnsOpen > 0 || st.StreamsActive > 0 || runtime.NumGoroutine() > baseline+20; st = ts.srv.Stats() {
				if time.Now().After(deadline) {
					buf := make([]byte, 1<<20)
					t.Fatalf("%d connections, %d streams, %d goroutines (%d at the start) left:\n%s",
						st.ConnsOpen, st.StreamsActive, runtime.NumGoroutine(), baseline, buf[:runtime.Stack(buf, true)])
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
	})
}

// completeFrames returns data with zeros added to complete its last frame, when the
// server would read that frame whole (DefaultMaxFrameSize), so that the server reads the
// PING that follows instead of waiting for the rest until its idle timeout.
func completeFrames(data []byte) []byte {
	i := 0
	for i+9 <= len(data) {
		n := int(data[i])<<16 | int(data[i+1])<<8 | int(data[i+2])
		if n > DefaultMaxFrameSize {
			return data // refused as soon as its header is read
		}
		i += 9 + n
	}
	if i == len(data) {
		return data
	}
	data = bytes.Clone(data)
	if i < len(data) { // a partial header, completed with zeros, then its payload
		data = append(data, make([]byte, i+9-len(data))...)
		n := int(data[i])<<16 | int(data[i+1])<<8 | int(data[i+2])
		if n > DefaultMaxFrameSize {
			return data
		}
		i += 9 + n
	}
	return append(data, make([]byte, i-len(data))...)
}

// endPingData is the payload of the PING that ends each input.
var endPingData = [8]byte{'f', 'u', 'z', 'z', 'e', 'n', 'd', '!'}

// isReset reports whether err is the server resetting the connection: closing it with
// unread client bytes in its socket, which the kernel answers with RST.
func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
