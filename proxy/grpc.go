package proxy

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"time"

	"github.com/edge-gw/edge/h2up"
	"github.com/valyala/fasthttp"
)

// Upstreams spoken to over HTTP/2 (protocol = "h2c" | "h2"), for gRPC. Their servers
// carry an h2up.Client instead of a fasthttp pool; send hands such exchanges to
// exchangeH2. The answer streams back as it comes, trailers included. edge's own answers
// to a gRPC request (a limit, a ban, an unreachable upstream) become gRPC answers:
// HTTP 200 with grpc-status and grpc-message (grpcAnswer).

// StreamRequest returns the h2.Config.StreamRequest of a server whose max_body_size is
// maxBody: which HTTP/2 requests reach the handler with their body still arriving.
// gRPC calls, so that client-streaming and bidirectional calls flow both ways at once;
// and bodies that may not fit maxBody (no content-length, or a larger one), which the
// funnel then holds if they turn out to fit and streams to a route that takes big bodies
// otherwise (upload.go), as it does over HTTP/1.1. Other bodies are read whole first.
func StreamRequest(maxBody int64) func(h *fasthttp.RequestHeader) bool {
	return func(h *fasthttp.RequestHeader) bool {
		if h2up.IsGRPC(h) {
			return true
		}
		return len(h.Peek(fasthttp.HeaderContentLength)) == 0 || int64(h.ContentLength()) > maxBody
	}
}

// grpcIdle sets how long the streamed request of a gRPC call may stay quiet between
// messages: a call with grpc-timeout is bounded by that deadline, so no idle limit then;
// idle_timeout otherwise, not read_timeout (which bounds what edge holds: a client or
// bidirectional stream may rightly pause longer).
func grpcIdle(ctx *fasthttp.RequestCtx, idle time.Duration) {
	b, ok := ctx.Request.BodyStream().(interface{ SetIdleTimeout(time.Duration) })
	if !ok {
		return
	}
	if len(ctx.Request.Header.Peek("Grpc-Timeout")) > 0 {
		idle = 0
	}
	b.SetIdleTimeout(idle)
}

// newH2Client makes the HTTP/2 client of one upstream server.
func newH2Client(s poolSettings) *h2up.Client {
	o := h2up.Options{Addr: s.addr, TLS: s.protocol == "h2", ServerName: s.serverName,
		ConnectTimeout: s.connectTimeout, MaxConns: s.maxConns, IdleConnTimeout: s.keepalive}
	if s.caFile != "" {
		o.RootCAs, _ = h2up.LoadCAs(s.caFile) // checked by build (checkH2Settings) before
	}
	if o.ServerName == "" {
		o.ServerName, _, _ = net.SplitHostPort(s.addr)
	}
	return h2up.New(o)
}

// checkH2Settings reports a tls_ca_file that cannot be used, naming the block.
func checkH2Settings(what string, s poolSettings) error {
	if s.caFile == "" {
		return nil
	}
	if _, err := h2up.LoadCAs(s.caFile); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// exchangeH2 sends req over HTTP/2 and returns once the answer's headers are in resp;
// its body streams afterwards. timeout bounds the wait for those headers unless the
// request carries its own deadline (grpc-timeout, which h2up honours).
//
// The context given to h2up is cancelled only by the timer or a failure: the exchange
// goes on streaming after this returns, and h2up ends the context it derives from this
// one when the exchange ends, so nothing is left to release here.
func exchangeH2(c *h2up.Client, req *fasthttp.Request, resp *fasthttp.Response, timeout time.Duration) error {
	var hd headerDeadline
	hd.ctx, hd.cancel = context.WithCancel(context.Background())
	var t *time.Timer
	if len(req.Header.Peek("Grpc-Timeout")) == 0 {
		t = time.AfterFunc(timeout, hd.cancel)
	}
	_, err := c.Do(hd.ctx, req, resp)
	if t != nil && !t.Stop() && err == nil {
		err = h2up.ErrTimeout // the headers came just as the timer fired
	}
	if err != nil {
		hd.cancel()
	}
	return err
}

// headerDeadline is the context of one HTTP/2 exchange and what cancels it.
type headerDeadline struct {
	ctx    context.Context
	cancel context.CancelFunc
}

// classifyH2 maps an h2up error to edge's failure kinds.
func classifyH2(err error) failure {
	switch h2up.Classify(err) {
	case "":
		return failNone
	case "connect":
		return failConnect
	case "timeout":
		return failTimeout
	}
	return failBroken
}

var strGRPC = []byte("application/grpc")

// grpcAnswer turns edge's own answer to a gRPC request into a gRPC one. An answer that
// is gRPC already (from the upstream) is left alone.
func grpcAnswer(ctx *fasthttp.RequestCtx) {
	resp := &ctx.Response
	if bytes.HasPrefix(resp.Header.ContentType(), strGRPC) {
		return
	}
	code := h2up.CodeForHTTP(resp.StatusCode())
	msg := errorCode(resp.Body())
	if msg == "" {
		msg = fasthttp.StatusMessage(resp.StatusCode())
	}
	h2up.WriteStatus(resp, code, msg)
}

// errorCode returns the code of an edge error body {"error":"code",…}, or "".
func errorCode(body []byte) string {
	const key = `{"error":"`
	if !bytes.HasPrefix(body, []byte(key)) {
		return ""
	}
	rest := body[len(key):]
	if i := bytes.IndexByte(rest, '"'); i > 0 {
		return string(rest[:i])
	}
	return ""
}
