package proxy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// headSeeds are real request heads: ordinary requests, and the shapes request
// smuggling and parser confusion are made of.
var headSeeds = []string{
	"GET /app/x HTTP/1.1\r\nHost: shop.example\r\n\r\n",
	"HEAD /app/x HTTP/1.1\r\nHost: shop.example\r\n\r\n",
	"GET /c/page HTTP/1.1\r\nHost: shop.example\r\nAccept-Encoding: gzip\r\n\r\nGET /c/page HTTP/1.1\r\nHost: shop.example\r\n\r\n",
	"POST /app/orders HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 5\r\n\r\nhello",
	"POST /app/orders HTTP/1.1\r\nHost: shop.example\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
	"POST /app/orders HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /app/smuggled HTTP/1.1\r\nHost: shop.example\r\n\r\n",
	"POST /app/orders HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 5\r\nContent-Length: 40\r\n\r\nhelloGET /app/smuggled HTTP/1.1\r\n\r\n",
	"POST /app/orders HTTP/1.1\r\nHost: shop.example\r\nTransfer-Encoding: chunked, identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
	"POST /app/orders HTTP/1.1\r\nHost: shop.example\r\nTransfer-Encoding: xchunked\r\nContent-Length: 3\r\n\r\nabc",
	"POST /app/orders HTTP/1.1\r\nHost: shop.example\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nTrailer: x\r\n\r\n",
	"POST /app/orders HTTP/1.1\r\nHost: shop.example\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff1\r\nx\r\n0\r\n\r\n",
	"GET /app/x HTTP/1.1\r\nHost: shop.example\r\nX-Folded: a\r\n b\r\n\r\n",
	"GET /app/x HTTP/1.1\nHost: shop.example\n\n",
	"GET /app/x HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /app/y HTTP/1.0\r\n\r\n",
	"GET http://other.example/app/x HTTP/1.1\r\nHost: shop.example\r\n\r\n",
	"POST /app/orders HTTP/1.1\r\nHost: shop.example\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok",
	"GET /app/x HTTP/1.1\r\nHost: shop.example\r\nConnection: close, X-Drop\r\nX-Drop: 1\r\nUpgrade: websocket\r\nTE: trailers\r\n\r\n",
	"GET /app/x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
	"GET /app/../../etc/passwd?a=%00 HTTP/1.1\r\nHost: shop.example\r\n\r\n",
	"CONNECT shop.example:443 HTTP/1.1\r\nHost: shop.example:443\r\n\r\n",
	"OPTIONS * HTTP/1.1\r\nHost: shop.example\r\n\r\n",
	"GET /app/x HTTP/1.1\r\nHost: shop.example\r\nContent-Length: -1\r\n\r\n",
	"GET /app/x HTTP/1.1\r\nHost: shop.example\r\nContent-Length : 3\r\n\r\nabc",
	"GET /app/x HTTP/1.1\r\nHost: shop.example\r\n\x00Bad: header\r\n\r\n",
	"GET /app/x HTTP/2.0\r\n\r\n",
	"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
	"\r\n\r\nGET /app/x HTTP/1.1\r\nHost: shop.example\r\n\r\n",
}

// FuzzRequestHead sends any bytes to a real edge server, as one client connection whose
// sending side is then closed, in front of a real fasthttp origin, and checks what a
// client and the origin see:
//   - edge answers with complete, well-formed HTTP/1.1 responses and then closes: no
//     trailing bytes, no stall (bounded by a generous deadline), no panic; those that
//     are not the origin's 200 are edge's JSON {"error":...};
//   - the origin never receives bytes it cannot read as a request, and never more
//     requests than edge answered (a request smuggled inside another would be one
//     more), not even after the connection closed;
//   - every so many inputs, the goroutines come back down to where they started.
func FuzzRequestHead(f *testing.F) {
	var (
		originReqs atomic.Int64 // requests the origin read
		originBad  atomic.Int64 // bytes it could not read as a request
		badMu      sync.Mutex
		badErr     error
	)
	origin := &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			originReqs.Add(1)
			ctx.SetContentType("text/plain")
			ctx.Response.Header.Set("Cache-Control", "max-age=60")
			fmt.Fprintf(ctx, "origin saw %s %s, %d body bytes", ctx.Method(), ctx.RequestURI(), len(ctx.PostBody()))
		},
		ErrorHandler: func(ctx *fasthttp.RequestCtx, err error) {
			originBad.Add(1)
			badMu.Lock()
			badErr = err
			badMu.Unlock()
			ctx.Error("bad request", fasthttp.StatusBadRequest)
		},
		NoDefaultServerHeader: true,
		ReadBufferSize:        64 << 10, // above edge's max_header_size: its limit, not the origin's, applies
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	go origin.Serve(ln)
	f.Cleanup(func() { origin.Shutdown() })
	px := benchProxy(f, fmt.Sprintf(`
upstream "app" {
  servers = [%q]
  timeout = "5s"
}
route "cached" {
  match { path = "/c/" }
  upstream = "app"
  cache { ttl = "1m" }
}
route "app" {
  match { path = "/" }
  upstream = "app"
}
`, ln.Addr().String()))
	eln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	// Edge's own fasthttp server (handler, error handler, limits), on plain sockets: a
	// rawsock connection that has written waits for its next read in the poller, which
	// does not report a FIN that came with the last data, so a client that half-closes
	// is closed only at its idle timeout (rawsock/poll_unix.go), and each input would
	// cost that long.
	srv := px.NewServer(px.Current().Config).Server
	srv.Logger = quietLogger
	go srv.Serve(eln)
	f.Cleanup(func() { srv.Shutdown(); px.Close() })
	edgeAddr := eln.Addr().String()

	for _, s := range headSeeds {
		f.Add([]byte(s))
	}
	var (
		execs     int
		baseline  int
		lastReqs  int64
		reqBuf    fasthttp.Request
		resp      fasthttp.Response
		responses []int
	)
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 16<<10 {
			return
		}
		if n, last := originReqs.Load(), lastReqs; n != last {
			lastReqs = n
			t.Fatalf("the origin received %d requests after the connection that sent them closed", n-last)
		}
		defer func() {
			if t.Failed() { // the next input starts from here
				lastReqs = originReqs.Load()
			}
		}()
		badBefore := originBad.Load()
		execs++
		if execs == 1 {
			baseline = runtime.NumGoroutine()
		}

		c, err := net.Dial("tcp", edgeAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
			t.Fatal(err)
		}
		// Edge may answer and close before it has read everything: a failed write is
		// what a client would see then, not a failure of edge.
		_, _ = c.Write(data)
		_ = c.(*net.TCPConn).CloseWrite()

		// The methods of the requests as fasthttp reads the bytes, to know which
		// answers carry no body.
		heads := map[int]bool{}
		br := bufio.NewReader(bytes.NewReader(data))
		for i := 0; ; i++ {
			reqBuf.Reset()
			if err := reqBuf.ReadLimitBody(br, 8<<20); err != nil {
				break
			}
			heads[i] = reqBuf.Header.IsHead()
		}

		responses = responses[:0]
		reset, notJSON := false, ""
		rr := bufio.NewReader(c)
		for i := 0; ; i++ {
			if _, err := rr.Peek(1); err != nil {
				reset = isReset(err)
				if errors.Is(err, io.EOF) || reset {
					break
				}
				t.Fatalf("after %d answers: %v (edge neither answered nor closed)", i, err)
			}
			resp.Reset()
			resp.SkipBody = heads[i]
			if err := resp.Read(rr); err != nil {
				rest, _ := io.ReadAll(rr)
				t.Fatalf("answer %d is not a well-formed response: %v; rest %q", i+1, err, rest)
			}
			code := resp.StatusCode()
			if code < 200 || code > 599 {
				t.Fatalf("answer %d has status %d", i+1, code)
			}
			// The origin answers 200 to what it reads: any other answer is edge's own, in
			// JSON (checked below, once a 400 of the origin's is ruled out).
			if code >= 300 && !heads[i] && notJSON == "" {
				var body struct{ Error string }
				if err := json.Unmarshal(resp.Body(), &body); err != nil || body.Error == "" {
					notJSON = fmt.Sprintf("answer %d, status %d, is not edge's JSON error: %q", i+1, code, resp.Body())
				}
			}
			responses = append(responses, code)
		}

		if n := originBad.Load() - badBefore; n > 0 {
			badMu.Lock()
			defer badMu.Unlock()
			t.Fatalf("edge forwarded %d requests the origin could not read: %v", n, badErr)
		}
		if notJSON != "" {
			t.Fatal(notJSON)
		}
		got := originReqs.Load()
		// A reset connection may have lost answers the kernel had not handed over yet.
		if forwarded := got - lastReqs; forwarded > int64(len(responses)) && !reset {
			t.Fatalf("the origin received %d requests, edge answered %d (%v)", forwarded, len(responses), responses)
		}
		lastReqs = got

		if execs%500 == 0 {
			deadline := time.Now().Add(20 * time.Second)
			for runtime.NumGoroutine() > baseline+20 {
				if time.Now().After(deadline) {
					buf := make([]byte, 1<<20)
					t.Fatalf("%d goroutines, %d at the start:\n%s", runtime.NumGoroutine(), baseline, buf[:runtime.Stack(buf, true)])
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
	})
}

// isReset reports whether err is the peer resetting the connection: edge closing
// with unread request bytes still in its socket, which the kernel answers with RST.
func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && !op.Timeout()
}
