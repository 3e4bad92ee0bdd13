package h3

import (
	"bytes"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

func TestDateFollowsTheSecond(t *testing.T) {
	east := time.FixedZone("UTC+3", 3*3600)
	t0 := time.Date(2026, 12, 6, 22, 0, 0, 100, east) // 19:00:00 UTC
	for _, c := range []struct {
		at   time.Time
		want string
	}{
		{t0, "Sun, 06 Dec 2026 19:00:00 GMT"},
		{t0.Add(500 * time.Millisecond), "Sun, 06 Dec 2026 19:00:00 GMT"},
		{t0.Add(time.Second), "Sun, 06 Dec 2026 19:00:01 GMT"},
		{t0.Add(-time.Hour), "Sun, 06 Dec 2026 18:00:00 GMT"},
	} {
		if got := date(c.at); string(got) != c.want {
			t.Errorf("date(%v) = %q, want %q", c.at, got, c.want)
		}
	}
}

// An answer is sent as the handler left it: no Content-Type guessed from the body
// (as HTTP/1.1 and HTTP/2 add none), and bodies on either side of the size copied
// behind the HEADERS frame arrive whole with their length.
func TestAnswerBodyAsIs(t *testing.T) {
	ts := startServer(t, Config{}, func(ctx *fasthttp.RequestCtx) {
		n, _ := strconv.Atoi(string(ctx.QueryArgs().Peek("n")))
		ctx.Response.Header.SetNoDefaultContentType(true)
		ctx.SetBody(append([]byte("<html>"), bytes.Repeat([]byte("x"), n)...))
	})
	c := ts.client(t)
	for _, n := range []int{0, 1000, 4090, 5000, smallBody - 6, smallBody - 5, 100 << 10} {
		resp, err := c.Get(ts.url("/?n=" + strconv.Itoa(n)))
		if err != nil {
			t.Fatalf("n=%d: %v", n, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("n=%d: reading the body: %v", n, err)
		}
		want := 6 + n
		if resp.StatusCode != 200 || len(body) != want || resp.ContentLength != int64(want) || !bytes.HasPrefix(body, []byte("<html>x")) && n > 0 {
			t.Errorf("n=%d: status %d, %d bytes, Content-Length %d; want 200, %d, %d", n, resp.StatusCode, len(body), resp.ContentLength, want, want)
		}
		if ct, ok := resp.Header["Content-Type"]; ok {
			t.Errorf("n=%d: Content-Type %q; want none (the handler set none)", n, ct)
		}
	}
}

// Header fields reach the client with every value, in whatever case the handler wrote
// them.
func TestAnswerHeaderFields(t *testing.T) {
	ts := startServer(t, Config{}, func(ctx *fasthttp.RequestCtx) {
		ctx.Response.Header.DisableNormalizing()
		ctx.Response.Header.Add("Set-Cookie", "a=1")
		ctx.Response.Header.Add("set-cookie", "b=2")
		ctx.Response.Header.Add("X-Thing", "one")
		ctx.Response.Header.Add("x-thing", "two")
		ctx.Response.Header.Add("ETAG", `"v1"`)
		ctx.Response.Header.Add("x-rare-field", "r")
		ctx.SetBodyString("ok")
	})
	resp, err := ts.client(t).Get(ts.url("/"))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	for k, want := range map[string][]string{
		"Set-Cookie":     {"a=1", "b=2"},
		"X-Thing":        {"one", "two"},
		"Etag":           {`"v1"`},
		"X-Rare-Field":   {"r"},
		"Content-Length": {"2"},
	} {
		if got := resp.Header[k]; strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
}
