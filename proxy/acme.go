package proxy

import (
	"github.com/valyala/fasthttp"
)

// ACME HTTP-01 challenges (docs/acme.md). While a TLS listener gets its certificate
// from ACME, every plain listener answers GET /.well-known/acme-challenge/{token} with
// the key authorization the ACME client has for the request's host, before routes and
// before https_redirect (the validation must not be redirected). Anything else under
// the prefix goes on as an ordinary request.

var acmeChallengePrefix = []byte("/.well-known/acme-challenge/")

// ACMEResponder answers an HTTP-01 challenge: the body for host and path, or false
// when it has no challenge by that token. It must be safe for concurrent use.
type ACMEResponder func(host, path string) (body []byte, ok bool)

// SetACME sets the responder of HTTP-01 challenges (nil: none). cmd/edge sets it when a
// listener has an acme block.
func (p *Proxy) SetACME(r ACMEResponder) {
	if r == nil {
		p.acme.Store(nil)
		return
	}
	p.acme.Store(&r)
}

// answerACME answers ctx if it is a challenge the responder knows, and reports whether
// it did.
func (p *Proxy) answerACME(ctx *fasthttp.RequestCtx) bool {
	r := p.acme.Load()
	if r == nil || !ctx.IsGet() {
		return false
	}
	body, ok := (*r)(string(hostOnly(ctx.Host())), string(ctx.Path()))
	if !ok {
		return false
	}
	ctx.Response.SetStatusCode(fasthttp.StatusOK)
	ctx.Response.Header.SetContentType("text/plain")
	ctx.Response.SetBody(body)
	return true
}
