package proxy

import (
	"strconv"

	"github.com/valyala/fasthttp"
)

// Interim responses (issue 27, item 6). An origin's 1xx answers other than 101 (100
// Continue, 102 Processing, 103 Early Hints) reach the client as they arrive, before the
// final answer, so a browser preloads what 103's Link headers name while the origin is
// still working. They are never stored: the cache only ever sees the final answer. Over
// HTTP/1.1 each is written to the client connection at once (the final answer follows
// when the handler returns); HTTP/1.0 clients never get one (RFC 9110 §15.2); over
// HTTP/2 each is a HEADERS frame without END_STREAM (h2's WriteInterim), over HTTP/3 a
// HEADERS frame ahead of the final one (h3's WriteInterim). Hop-by-hop
// headers are dropped, as from any answer. Background refreshes have no client: their
// interim answers are read and dropped, as are those of a client that went away.
//
// One limit: fasthttp batches the answers of pipelined HTTP/1.1 requests and flushes
// them when no request is waiting; an interim answer to a request that arrived
// pipelined behind another may then reach the client ahead of that earlier answer.
// Browsers do not pipeline.

// interimWriter is the view of an HTTP/2 or HTTP/3 stream's connection that sends a 1xx.
type interimWriter interface {
	WriteInterim(h *fasthttp.ResponseHeader) error
}

// relayInterim sends h, an interim answer of the origin, to the client of ctx (nil:
// there is none). Errors are not reported: the final answer is sent (or fails) anyway.
func relayInterim(ctx *fasthttp.RequestCtx, h *fasthttp.ResponseHeader) {
	code := h.StatusCode()
	if ctx == nil || code < 100 || code > 199 || code == fasthttp.StatusSwitchingProtocols {
		return
	}
	stripResponseHop(h)
	if w, ok := ctx.Conn().(interimWriter); ok {
		w.WriteInterim(h)
		return
	}
	if !ctx.Request.Header.IsHTTP11() {
		return
	}
	ctx.Conn().Write(appendInterim(make([]byte, 0, 256), h))
}

// appendInterim appends h as an HTTP/1.1 interim answer: status line, fields, blank line.
func appendInterim(dst []byte, h *fasthttp.ResponseHeader) []byte {
	code := h.StatusCode()
	dst = append(dst, "HTTP/1.1 "...)
	dst = strconv.AppendInt(dst, int64(code), 10)
	dst = append(dst, ' ')
	dst = append(dst, fasthttp.StatusMessage(code)...)
	dst = append(dst, "\r\n"...)
	for k, v := range h.All() {
		if string(k) == fasthttp.HeaderContentLength || string(k) == fasthttp.HeaderContentType {
			continue // a 1xx has no content (and fasthttp's header has a default type)
		}
		dst = append(append(append(append(dst, k...), ": "...), v...), "\r\n"...)
	}
	return append(dst, "\r\n"...)
}
