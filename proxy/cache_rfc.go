package proxy

import (
	"bytes"
	"net/url"

	"github.com/valyala/fasthttp"
)

// Cache rules of issue 27 that act on answers rather than on the store: invalidation
// after unsafe requests (RFC 9111 §4.4), stale-if-error answers (RFC 5861) and the
// targeted fields (RFC 9213) edge consumes. See docs/cache.md.

// safeMethods are the methods RFC 9110 §9.2.1 defines as safe; every other method,
// known to edge or not, invalidates on a non-error answer.
const safeMethods = 1 | 2 | 64 | 256 // GET, HEAD, OPTIONS, TRACE (methodBit)

var (
	hdrLocation        = []byte(fasthttp.HeaderLocation)
	hdrContentLocation = []byte(fasthttp.HeaderContentLocation)
)

// invalidateAfter applies RFC 9111 §4.4 once the origin answered a request on a cached
// route: a non-error answer (status below 400) to an unsafe method invalidates what is
// stored for the target URI and for the Location and Content-Location URIs of the
// answer that are on the request's host, here and, through gossip, on the other nodes.
// It allocates only for a relative reference such as "b" or "../b", or in a cluster.
func (p *Proxy) invalidateAfter(ctx *fasthttp.RequestCtx, rc *routeCache) {
	if methodBit(ctx.Method())&safeMethods != 0 {
		return
	}
	if st := ctx.Response.StatusCode(); st < 200 || st >= 400 {
		return
	}
	target := ctx.Request.Header.RequestURI()
	p.invalidateURI(rc, target)
	host := ctx.Request.Header.Host()
	for _, name := range [...][]byte{hdrLocation, hdrContentLocation} {
		if ref := ctx.Response.Header.PeekBytes(name); len(ref) > 0 {
			if uri, ok := sameHostURI(ref, host, target); ok {
				p.invalidateURI(rc, uri)
			}
		}
	}
}

// invalidateURI invalidates uri (path and query) on this node's cache and shares the
// invalidation with the cluster.
func (p *Proxy) invalidateURI(rc *routeCache, uri []byte) {
	rc.c.InvalidateURI(uri)
	p.clusterInvalidated(uri) // cluster.go
}

// sameHostURI resolves a Location or Content-Location reference against the request's
// target and returns its path and query when it names the request's host; a reference
// to another host (RFC 9111 §4.4: another origin) is not invalidated. Scheme is not
// compared: the cache key has none either.
func sameHostURI(ref, host, target []byte) ([]byte, bool) {
	if i := bytes.IndexByte(ref, '#'); i >= 0 {
		ref = ref[:i]
	}
	switch {
	case len(ref) == 0:
		return nil, false
	case ref[0] == '/' && (len(ref) == 1 || ref[1] != '/'):
		return ref, true // absolute path, the usual case
	}
	rest, ok := bytes.CutPrefix(ref, []byte("//"))
	if !ok {
		if i := bytes.Index(ref, []byte("://")); i > 0 && !bytes.ContainsAny(ref[:i], "/?") {
			scheme := ref[:i]
			if !bytes.EqualFold(scheme, []byte("http")) && !bytes.EqualFold(scheme, []byte("https")) {
				return nil, false
			}
			rest, ok = ref[i+3:], true
		}
	}
	if ok { // absolute URI or network-path reference: compare the authority
		j := bytes.IndexAny(rest, "/?")
		if j < 0 {
			j = len(rest)
		}
		if !bytes.EqualFold(rest[:j], host) {
			return nil, false
		}
		if j == len(rest) {
			return []byte("/"), true
		}
		if rest[j] == '?' {
			return append([]byte("/"), rest[j:]...), true
		}
		return rest[j:], true
	}
	// A relative reference ("b", "../b", "?q"): resolve it as a browser would.
	base, err := url.Parse(string(target))
	if err != nil {
		return nil, false
	}
	r, err := url.Parse(string(ref))
	if err != nil || r.IsAbs() || r.Host != "" {
		return nil, false
	}
	return []byte(base.ResolveReference(r).RequestURI()), true
}

// originError reports whether resp is an error RFC 5861's stale-if-error covers: 500,
// 502, 503 or 504, from the origin or edge's own answer to a failed or silent upstream.
func originError(resp *fasthttp.Response) bool {
	switch resp.StatusCode() {
	case fasthttp.StatusInternalServerError, fasthttp.StatusBadGateway,
		fasthttp.StatusServiceUnavailable, fasthttp.StatusGatewayTimeout:
		return true
	}
	return false
}
