package proxy

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/edge-gw/edge/internal/origintest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
)

// testutilCount returns edge_compress_total{encoding, result} (any counter family with
// those two labels) of px's registry.
func testutilCount(t testing.TB, px *Proxy, name, enc, result string) float64 {
	t.Helper()
	return gathered(t, px.metrics.Reg.(prometheus.Gatherer), name, "encoding", enc, "result", result)
}

// Answers are compressed by what the client accepts, decode to the origin's bytes, and
// carry Vary and a weak ETag; what must not be compressed is not.
func TestCompression(t *testing.T) {
	body := []byte(strings.Repeat(`{"item":42,"name":"a fine thing"},`, 200))
	o := origintest.Start(t, func(ctx *fasthttp.RequestCtx) {
		switch string(ctx.Path()) {
		case "/small":
			ctx.SetContentType("application/json")
			ctx.SetBodyString(`{"ok":true}`)
			return
		case "/png":
			ctx.SetContentType("image/png")
		case "/no-transform":
			ctx.SetContentType("application/json")
			ctx.Response.Header.Set("Cache-Control", "no-transform")
		case "/encoded":
			ctx.SetContentType("application/json")
			ctx.Response.Header.Set("Content-Encoding", "gzip")
			ctx.SetBody(fasthttp.AppendGzipBytes(nil, body))
			return
		default:
			ctx.SetContentType("application/json; charset=utf-8")
			ctx.Response.Header.Set("ETag", `"v7"`)
			ctx.Response.Header.Set("Vary", "Cookie")
		}
		ctx.SetBody(body)
	})
	e := startEdge(t, fmt.Sprintf(`
compression {}
upstream "o" { servers = [%q] }
route "all" {
  match { path = "/" }
  upstream = "o"
}
`, o.Addr))
	decode := func(r *fasthttp.Response) []byte {
		t.Helper()
		var out []byte
		var err error
		switch string(r.Header.Peek("Content-Encoding")) {
		case "gzip":
			out, err = fasthttp.AppendGunzipBytes(nil, r.Body())
		case "br":
			out, err = fasthttp.AppendUnbrotliBytes(nil, r.Body())
		default:
			out = r.Body()
		}
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	for _, c := range []struct {
		path, ae, want string
	}{
		{"/json", "gzip", "gzip"},
		{"/json", "gzip, deflate, br", "br"},
		{"/json", "br;q=0.2, gzip;q=0.8", "gzip"},
		{"/json", "gzip;q=0, br;q=0", ""},
		{"/json", "", ""},
		{"/small", "gzip", ""},
		{"/png", "gzip", ""},
		{"/no-transform", "gzip", ""},
	} {
		r := e.do(t, "GET", c.path, "Accept-Encoding", c.ae)
		got := string(r.Header.Peek("Content-Encoding"))
		if got != c.want || r.StatusCode() != 200 {
			t.Errorf("%s with Accept-Encoding %q: %d, Content-Encoding %q, want %q", c.path, c.ae, r.StatusCode(), got, c.want)
		}
		if c.path == "/json" {
			if !bytes.Equal(decode(r), body) {
				t.Errorf("%s %q: body does not decode to the origin's", c.path, c.ae)
			}
			if v := string(r.Header.Peek("Vary")); v != "Cookie, Accept-Encoding" {
				t.Errorf("%s %q: Vary %q", c.path, c.ae, v)
			}
			wantTag := `"v7"`
			if c.want != "" {
				wantTag = `W/"v7"`
				if len(r.Body()) >= len(body)/4 {
					t.Errorf("%s %q: %d bytes for %d", c.path, c.ae, len(r.Body()), len(body))
				}
			}
			if et := string(r.Header.Peek("ETag")); et != wantTag {
				t.Errorf("%s %q: ETag %q, want %q", c.path, c.ae, et, wantTag)
			}
		}
	}
	// A range, and an answer the origin encoded, pass untouched.
	if r := e.do(t, "GET", "/json", "Accept-Encoding", "gzip", "Range", "bytes=0-9"); len(r.Header.Peek("Content-Encoding")) > 0 {
		t.Errorf("a Range request was compressed")
	}
	r := e.do(t, "GET", "/encoded", "Accept-Encoding", "br")
	if string(r.Header.Peek("Content-Encoding")) != "gzip" || !bytes.Equal(decode(r), body) {
		t.Errorf("an answer the origin encoded: %q", r.Header.Peek("Content-Encoding"))
	}
}
