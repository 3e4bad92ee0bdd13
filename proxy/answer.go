package proxy

import (
	"github.com/edge-gw/edge/config"
	"github.com/valyala/fasthttp"
)

// answer is a fixed response built once per snapshot; writing it copies nothing.
type answer struct {
	status      int
	contentType []byte
	body        []byte
	headers     [][2][]byte
}

func newAnswer(a config.Answer) *answer {
	ans := &answer{status: a.Status, contentType: []byte(a.ContentType), body: []byte(a.Body)}
	if len(ans.contentType) == 0 {
		ans.contentType = []byte("application/json")
	}
	for k, v := range a.Headers {
		ans.headers = append(ans.headers, [2][]byte{[]byte(k), []byte(v)})
	}
	return ans
}

// write sets the response to the answer. The body is shared, not copied: answers
// are immutable for the life of their snapshot.
func (a *answer) write(ctx *fasthttp.RequestCtx) {
	r := &ctx.Response
	r.SetStatusCode(a.status)
	r.Header.SetContentTypeBytes(a.contentType)
	for _, h := range a.headers {
		r.Header.SetBytesKV(h[0], h[1])
	}
	r.SetBodyRaw(a.body)
}

// Error bodies. Every error a client sees is JSON {"error":"<code>"}; nothing from
// a Go error reaches a client.
var (
	errNoRoute       = jsonError(404, "no_route")
	errBadGateway    = jsonError(502, "bad_gateway")
	errTimeout       = jsonError(504, "gateway_timeout")
	errBusy          = jsonError(503, "upstream_busy")
	errBodyTooLarge  = jsonError(413, "body_too_large")
	errHeaderTooBig  = jsonError(431, "header_too_large")
	errBadRequest    = jsonError(400, "bad_request")
	errRequestTimout = jsonError(408, "request_timeout")
)

func jsonError(status int, code string) *answer {
	return &answer{status: status, contentType: []byte("application/json"), body: []byte(`{"error":"` + code + `"}`)}
}

// failureAnswer maps a forwarding failure to the client's answer.
func failureAnswer(f failure) *answer {
	switch f {
	case failTimeout:
		return errTimeout
	case failBusy:
		return errBusy
	}
	return errBadGateway
}
