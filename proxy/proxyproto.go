package proxy

import (
	"net"
	"net/netip"

	"github.com/edge-gw/edge/proxyproto"
	"github.com/valyala/fasthttp"
)

// PROXY protocol to upstreams (upstream or cells proxy_protocol = "v1" | "v2"). A header
// names one client, so a connection that starts with one must carry that client's
// requests only: such a pool keeps no idle connection, every exchange dials its own,
// writes the header and the request (with Connection: close) and closes the connection
// after the answer. That costs a connect per request, as HAProxy's send-proxy on HTTP
// backends without connection reuse does, and a small allocation for the addresses;
// pools without proxy_protocol are untouched.

// proxyHeader builds the PROXY header of ctx's request in sc's scratch: the client
// address (after trusted_proxies; with the peer's port when the client is the peer) as
// the source and the address the client connected to on edge as the destination.
func proxyHeader(ctx *fasthttp.RequestCtx, version string, client, peer netip.Addr, sc *scratch) []byte {
	src := &net.TCPAddr{IP: client.AsSlice()}
	if client == peer {
		if ra, ok := ctx.RemoteAddr().(*net.TCPAddr); ok {
			src.Port = ra.Port
		}
	}
	dst := ctx.LocalAddr()
	if version == "v1" {
		sc.pp = proxyproto.AppendV1(sc.pp[:0], src, dst)
	} else {
		sc.pp = proxyproto.AppendV2(sc.pp[:0], src, dst)
	}
	return sc.pp
}
