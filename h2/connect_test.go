package h2

import (
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/net/http2"
)

// TestExtendedConnect: RFC 8441. h2 advertises SETTINGS_ENABLE_CONNECT_PROTOCOL, hands an
// extended CONNECT to the handler with its protocol in ProtocolHeader (never a client's
// own field of that name) and its body streamed even without Config.StreamRequest, and
// the answer streams back while the request body still flows.
func TestExtendedConnect(t *testing.T) {
	ts := startServer(t, Config{}, func(ctx *fasthttp.RequestCtx) {
		ctx.Response.Header.Set("X-Method", string(ctx.Method()))
		ctx.Response.Header.Set("X-Proto", string(ctx.Request.Header.Peek(ProtocolHeader)))
		if ctx.Request.IsBodyStream() {
			ctx.Response.SetBodyStream(ctx.Request.BodyStream(), -1) // echo, full duplex
		}
	})
	r := dialRaw(t, ts.addr)
	if v := r.settings[http2.SettingEnableConnectProtocol]; v != 1 {
		t.Fatalf("SETTINGS_ENABLE_CONNECT_PROTOCOL = %d, want 1", v)
	}
	field := func(ev event, name string) string {
		for _, f := range ev.fields {
			if f.Name == name {
				return f.Value
			}
		}
		return ""
	}
	id := uint32(1)
	r.headers(id, false, ":method", "CONNECT", ":protocol", "websocket", ":scheme", "https", ":path", "/chat",
		":authority", "x", "x-edge-protocol", "spoofed")
	ev := r.expect("HEADERS(1)", func(ev event) bool { return ev.stream == id })
	if ev.status != "200" || ev.end || field(ev, "x-method") != "CONNECT" || field(ev, "x-proto") != "websocket" {
		t.Fatalf("extended CONNECT: %v %v", ev, ev.fields)
	}
	for _, msg := range []string{"hello", "world"} {
		r.fr.WriteData(id, false, []byte(msg))
		ev = r.expect("DATA(1)", func(ev event) bool { return ev.stream == id })
		if ev.typ != http2.FrameData || string(ev.data) != msg || ev.end {
			t.Fatalf("echo of %q: %v %q", msg, ev, ev.data)
		}
	}
	r.fr.WriteData(id, true, nil)
	ev = r.expect("END_STREAM(1)", func(ev event) bool { return ev.stream == id })
	if ev.typ != http2.FrameData || !ev.end {
		t.Fatalf("after END_STREAM: %v", ev)
	}

	// The client's own field of that name is dropped on any request.
	id += 2
	r.headers(id, true, ":method", "GET", ":scheme", "http", ":path", "/", ":authority", "x", "x-edge-protocol", "websocket")
	ev = r.expect("HEADERS(3)", func(ev event) bool { return ev.stream == id })
	if ev.status != "200" || field(ev, "x-proto") != "" {
		t.Fatalf("GET with x-edge-protocol: %v %v", ev, ev.fields)
	}
	// Malformed: :protocol without CONNECT, or without :path or :scheme.
	for _, kv := range [][]string{
		{":method", "GET", ":protocol", "websocket", ":scheme", "http", ":path", "/", ":authority", "x"},
		{":method", "CONNECT", ":protocol", "websocket", ":scheme", "http", ":authority", "x"},
		{":method", "CONNECT", ":protocol", "websocket", ":path", "/", ":authority", "x"},
		{":method", "CONNECT", ":protocol", "websocket", ":scheme", "http", ":path", "/"},
	} {
		id += 2
		r.headers(id, false, kv...)
		r.expectRST(id, http2.ErrCodeProtocol)
	}
	// A plain CONNECT is still not served.
	id += 2
	r.headers(id, true, ":method", "CONNECT", ":authority", "x:443")
	if status, _ := r.expectStatus(id); status != 405 {
		t.Errorf("plain CONNECT: %d", status)
	}
}

// TestExtendedConnectQuiet: a tunnel's bytes may pause longer than ReadTimeout (the
// handler's tunnel has its own idle limit); a streamed request body of another kind may not.
func TestExtendedConnectQuiet(t *testing.T) {
	ts := startServer(t, Config{ReadTimeout: 150 * time.Millisecond, StreamRequest: func(*fasthttp.RequestHeader) bool { return true }},
		func(ctx *fasthttp.RequestCtx) {
			if ctx.Request.IsBodyStream() {
				ctx.Response.SetBodyStream(ctx.Request.BodyStream(), -1) // echo
			}
		})
	r := dialRaw(t, ts.addr)
	r.headers(1, false, ":method", "CONNECT", ":protocol", "websocket", ":scheme", "https", ":path", "/chat", ":authority", "x")
	if ev := r.expect("HEADERS(1)", func(ev event) bool { return ev.stream == 1 }); ev.status != "200" {
		t.Fatalf("extended CONNECT: %v", ev)
	}
	time.Sleep(500 * time.Millisecond) // quiet for over three ReadTimeouts
	r.fr.WriteData(1, false, []byte("still here"))
	if ev := r.expect("DATA(1)", func(ev event) bool { return ev.stream == 1 }); ev.typ != http2.FrameData || string(ev.data) != "still here" {
		t.Fatalf("after a quiet spell: %v %q", ev, ev.data)
	}
	// A streamed POST that goes quiet is still reset.
	r.headers(3, false, ":method", "POST", ":scheme", "http", ":path", "/up", ":authority", "x")
	r.expect("HEADERS(3)", func(ev event) bool { return ev.stream == 3 })
	r.expectRST(3, http2.ErrCodeCancel)
}
