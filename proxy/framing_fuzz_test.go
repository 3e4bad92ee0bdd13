package proxy

import (
	"bufio"
	"bytes"
	"net/http"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

// FuzzRequestFraming reads each input as a request head twice: as edge does (fasthttp's
// parser, then framingFault) and as Go's net/http does, a second strict parser written
// apart from fasthttp. Whatever edge accepts net/http must accept too, and read with the
// same method, target, Host and body framing.
func FuzzRequestFraming(f *testing.F) {
	for _, seed := range []string{
		"GET /p HTTP/1.1\r\nHost: shop.example\r\n\r\n",
		"POST /p HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 5\r\n\r\nhello",
		"POST /p HTTP/1.1\r\nHost: shop.example\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		"GET /p HTTP/1.1\r\nHost: shop.example\r\nX-A: a\r\n b\r\n\r\n",
		"GET /p HTTP/1.1\r\nHost: shop.example\nX-A: 1\r\n\r\n",
		"GET http://shop.example/p HTTP/1.1\r\nHost: other\r\n\r\n",
		"GET /p HTTP/1.1\r\nHost: shop.example\r\nX A: 1\r\nExpect: 100-continue\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var h fasthttp.RequestHeader
		if err := h.Read(bufio.NewReader(bytes.NewReader(data))); err != nil {
			return // fasthttp refuses it
		}
		if framingFault(&h) != nil {
			return // edge refuses it
		}
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(data)))
		if err != nil {
			t.Fatalf("edge accepts what net/http refuses (%v):\n%q", err, data)
		}
		if req.Method != string(h.Method()) || req.RequestURI != string(h.RequestURI()) {
			t.Fatalf("request line: net/http %s %s, edge %s %s\n%q", req.Method, req.RequestURI, h.Method(), h.RequestURI(), data)
		}
		if req.Host != string(h.Host()) && !strings.Contains(req.RequestURI, "://") {
			t.Fatalf("Host: net/http %q, edge %q\n%q", req.Host, h.Host(), data)
		}
		chunked := len(req.TransferEncoding) > 0
		if chunked != (h.ContentLength() == -1) || !chunked && req.ContentLength != max(int64(h.ContentLength()), 0) {
			t.Fatalf("body framing: net/http TE %v CL %d, edge CL %d\n%q", req.TransferEncoding, req.ContentLength, h.ContentLength(), data)
		}
	})
}
