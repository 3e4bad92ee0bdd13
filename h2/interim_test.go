package h2

import (
	"fmt"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/net/http2"
)

// A handler's interim answers (WriteInterim through ctx.Conn()) are HEADERS frames
// without END_STREAM ahead of the final answer's, their fields lowercased, without
// connection-specific ones or content-length; a final status is refused.
func TestWriteInterim(t *testing.T) {
	type interimWriter interface {
		WriteInterim(*fasthttp.ResponseHeader) error
	}
	errs := make(chan error, 4)
	ts := startServer(t, Config{}, func(ctx *fasthttp.RequestCtx) {
		w, ok := ctx.Conn().(interimWriter)
		if !ok {
			errs <- fmt.Errorf("ctx.Conn() is %T, without WriteInterim", ctx.Conn())
			return
		}
		var h fasthttp.ResponseHeader
		h.SetStatusCode(fasthttp.StatusEarlyHints)
		h.Add("Link", "</a.css>; rel=preload")
		h.Add("Link", "</b.js>; rel=preload")
		h.Set("Connection", "keep-alive")
		errs <- w.WriteInterim(&h)
		h.SetStatusCode(fasthttp.StatusOK)
		errs <- w.WriteInterim(&h) // a final status is the handler's answer, not an interim one
		ctx.SetBodyString("final")
	})
	r := dialRaw(t, ts.addr)
	r.headers(1, true, getFields...)
	ev := r.expect("HEADERS(1) 103", func(ev event) bool { return ev.typ == http2.FrameHeaders && ev.stream == 1 })
	if ev.status != "103" || ev.end {
		t.Fatalf("first HEADERS: %v, want 103 without END_STREAM", ev)
	}
	var links []string
	for _, f := range ev.fields {
		switch f.Name {
		case "link":
			links = append(links, f.Value)
		case ":status":
		default:
			t.Errorf("103 carries %q: %q", f.Name, f.Value)
		}
	}
	if fmt.Sprint(links) != "[</a.css>; rel=preload </b.js>; rel=preload]" {
		t.Errorf("103 links %q", links)
	}
	if status, body := r.expectStatus(1); status != 200 || string(body) != "final" {
		t.Errorf("final answer %d %q, want 200 final", status, body)
	}
	select {
	case err := <-errs:
		if err != nil {
			t.Errorf("WriteInterim(103): %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("handler did not run")
	}
	if err := <-errs; err == nil {
		t.Error("WriteInterim(200) succeeded, want an error")
	}
}
