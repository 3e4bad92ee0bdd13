package keepdate

import (
	"bufio"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

const originDate = "Tue, 01 Dec 2026 10:00:00 GMT"

// serve runs a real fasthttp server (defaults: it writes its own Date) whose handler is
// h, and returns the raw answer to one GET.
func serve(t *testing.T, h fasthttp.RequestHandler) *http.Response {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: h}
	go srv.Serve(ln) //nolint:errcheck
	t.Cleanup(func() { srv.Shutdown() })
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

func TestKeepDate(t *testing.T) {
	head := "HTTP/1.1 200 OK\r\nDate: " + originDate + "\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nX-Origin: 1\r\n\r\n"
	cases := []struct {
		name       string
		handler    fasthttp.RequestHandler
		status     int
		statusLine string
		date       string // "" means: the server's clock
		ct         string // the Content-Type that goes out ("": none)
	}{
		{"held header writes the Date it parsed", func(ctx *fasthttp.RequestCtx) {
			Hold(&ctx.Response.Header)
			if err := Parse(&ctx.Response.Header, []byte(head)); err != nil {
				t.Error(err)
			}
			ctx.Response.SetBodyString("ok")
		}, 200, "200 OK", originDate, "text/plain"},
		{"a header never held writes the server's Date", func(ctx *fasthttp.RequestCtx) {
			if err := Parse(&ctx.Response.Header, []byte(head)); err != nil {
				t.Error(err)
			}
			ctx.Response.SetBodyString("ok")
		}, 200, "200 OK", "", "text/plain"},
		{"a Date set through the API is still the server's", func(ctx *fasthttp.RequestCtx) {
			Hold(&ctx.Response.Header)
			ctx.Response.Header.Set("Date", originDate)
			if err := Ensure(&ctx.Response.Header, time.Now()); err != nil {
				t.Error(err)
			}
			ctx.Response.SetBodyString("ok")
		}, 200, "200 OK", "", ""},
		{"Ensure adds now to a held header that read none", func(ctx *fasthttp.RequestCtx) {
			Hold(&ctx.Response.Header)
			if err := Parse(&ctx.Response.Header, []byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n")); err != nil {
				t.Error(err)
			}
			if err := Ensure(&ctx.Response.Header, time.Now()); err != nil {
				t.Error(err)
			}
			ctx.Response.SetBodyString("ok")
		}, 200, "200 OK", "", ""},
		{"Ensure leaves a Date that was read", func(ctx *fasthttp.RequestCtx) {
			Hold(&ctx.Response.Header)
			if err := Parse(&ctx.Response.Header, []byte(head)); err != nil {
				t.Error(err)
			}
			if err := Ensure(&ctx.Response.Header, time.Now().Add(time.Hour)); err != nil {
				t.Error(err)
			}
			ctx.Response.SetBodyString("ok")
		}, 200, "200 OK", originDate, "text/plain"},
		{"a parsed reason phrase does not outlive a new status", func(ctx *fasthttp.RequestCtx) {
			Hold(&ctx.Response.Header)
			if err := Parse(&ctx.Response.Header, []byte(head)); err != nil {
				t.Error(err)
			}
			ctx.Response.SetStatusCode(fasthttp.StatusNotModified)
		}, 304, "304 Not Modified", originDate, "text/plain"},
		{"a held header adds no Content-Type", func(ctx *fasthttp.RequestCtx) {
			Hold(&ctx.Response.Header)
			if err := Parse(&ctx.Response.Header, []byte("HTTP/1.1 200 OK\r\nDate: "+originDate+"\r\nContent-Length: 2\r\n\r\n")); err != nil {
				t.Error(err)
			}
			ctx.Response.SetBodyString("ok")
		}, 200, "200 OK", originDate, ""},
		{"Reset drops the hold", func(ctx *fasthttp.RequestCtx) {
			Hold(&ctx.Response.Header)
			ctx.Response.Reset()
			ctx.Response.SetBodyString("ok")
		}, 200, "200 OK", "", "text/plain; charset=utf-8"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := time.Now().Add(-time.Second)
			resp := serve(t, tc.handler)
			if resp.StatusCode != tc.status || resp.Status != tc.statusLine {
				t.Fatalf("status %q, want %q", resp.Status, tc.statusLine)
			}
			if ct := strings.Join(resp.Header.Values("Content-Type"), ","); ct != tc.ct {
				t.Errorf("Content-Type %q, want %q", ct, tc.ct)
			}
			dates := resp.Header.Values("Date")
			if len(dates) != 1 {
				t.Fatalf("Date fields %q, want exactly one", dates)
			}
			if tc.date != "" {
				if dates[0] != tc.date {
					t.Fatalf("Date %q, want %q", dates[0], tc.date)
				}
				return
			}
			d, err := http.ParseTime(dates[0])
			if err != nil || d.Before(before.Truncate(time.Second)) || d.After(time.Now().Add(time.Second)) {
				t.Fatalf("Date %q is not the server's clock (%v)", dates[0], err)
			}
		})
	}
}

func TestParseRefusesGarbage(t *testing.T) {
	var h fasthttp.ResponseHeader
	Hold(&h)
	h.Set("X-Before", "1")
	for _, raw := range []string{"", "HTTP/1.1 20 OK\r\n\r\n", "nonsense\r\n\r\n", "HTTP/1.1 200 OK\r\nBad Key\x01: v\r\n\r\n"} {
		if err := Parse(&h, []byte(raw)); err == nil {
			t.Errorf("Parse(%q) succeeded", raw)
		}
		if len(h.Peek("X-Before")) != 0 || h.StatusCode() != 200 {
			t.Errorf("Parse(%q) left a half-read header: %q", raw, h.Header())
		}
	}
}

func TestParseLongHead(t *testing.T) {
	var h fasthttp.ResponseHeader
	Hold(&h)
	long := strings.Repeat("v", 10000)
	if err := Parse(&h, []byte("HTTP/1.1 200 OK\r\nDate: "+originDate+"\r\nX-Long: "+long+"\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	if string(h.Peek("X-Long")) != long || string(h.Peek("Date")) != originDate {
		t.Fatal("a head longer than the pooled reader lost fields")
	}
}

func TestParseAllocs(t *testing.T) {
	var h fasthttp.ResponseHeader
	raw := []byte("HTTP/1.1 200 OK\r\nDate: " + originDate + "\r\nContent-Length: 2\r\nX-Origin: 1\r\n\r\n")
	Hold(&h)
	_ = Parse(&h, raw)
	if n := testing.AllocsPerRun(100, func() {
		Hold(&h)
		if err := Parse(&h, raw); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("Hold+Parse allocates %.1f times", n)
	}
}
