package h3

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/quic-go/quic-go"
	"github.com/valyala/fasthttp"
)

// Bodies StreamRequest picks reach the handler as a stream of the DATA as it arrives,
// whatever their size; the others are held, within MaxBodySize. A body its
// Content-Length belies fails the handler's Read and resets the stream.
func TestStreamedRequestBodies(t *testing.T) {
	ts := startServer(t, Config{
		MaxBodySize: 100,
		StreamRequest: func(h *fasthttp.RequestHeader) bool { // proxy.StreamRequest's rule
			return len(h.Peek("Content-Length")) == 0 || h.ContentLength() > 100
		},
	}, func(ctx *fasthttp.RequestCtx) {
		if !ctx.Request.IsBodyStream() {
			fmt.Fprintf(ctx, "held %d", len(ctx.PostBody()))
			return
		}
		n, err := io.Copy(io.Discard, ctx.RequestBodyStream())
		fmt.Fprintf(ctx, "streamed %d %v", n, err)
	})
	qc := rawConn(t, ts)
	post := func(kv ...string) []byte {
		return section(append([]string{":method", "POST", ":scheme", "https", ":authority", "localhost", ":path", "/up"}, kv...)...)
	}
	data := func(sizes ...int) (b []byte) {
		for _, n := range sizes {
			b = append(b, dataFrame(strings.Repeat("d", n))...)
		}
		return b
	}
	cat := func(parts ...[]byte) (b []byte) {
		for _, p := range parts {
			b = append(b, p...)
		}
		return b
	}
	for _, c := range []struct {
		name string
		b    []byte
		body string // the answer; "" for a stream reset with H3_MESSAGE_ERROR
	}{
		{"a body over MaxBodySize, with its length", cat(post("content-length", "300"), data(100, 150, 50)), "streamed 300 <nil>"},
		{"a body of unknown length, then trailers", cat(post(), data(200, 50), section("x-sum", "1")), "streamed 250 <nil>"},
		{"one frame larger than the read buffer, read past it", cat(post("content-length", "20000"), data(20000)), "streamed 20000 <nil>"},
		{"unknown frames between DATA", cat(post(), data(10), appendFrameHeader(nil, 0x21, 2), []byte("zz"), data(5)), "streamed 15 <nil>"},
		{"a small body with its length is held", cat(post("content-length", "50"), data(50)), "held 50"},
		{"a GET without a length is not streamed", section(":method", "GET", ":scheme", "https", ":authority", "localhost", ":path", "/"), "held 0"},
		{"less than its Content-Length", cat(post("content-length", "300"), data(200)), ""},
		{"more than its Content-Length", cat(post("content-length", "150"), data(100, 100)), ""},
	} {
		r, err := sendRaw(t, qc, c.b)
		if c.body == "" {
			var se *quic.StreamError
			if !errors.As(err, &se) || se.ErrorCode != errMessage {
				t.Errorf("%s: %d %q %v, want the stream reset with H3_MESSAGE_ERROR", c.name, r.status, r.body, err)
			}
			continue
		}
		if err != nil || r.status != 200 || string(r.body) != c.body {
			t.Errorf("%s: %d %q %v, want 200 %q", c.name, r.status, r.body, err, c.body)
		}
	}
}
