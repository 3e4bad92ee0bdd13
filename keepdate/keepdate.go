// Package keepdate lets a fasthttp response go out with a Date of its own: the origin's,
// or the one a cache stored with the answer, instead of the server's clock.
//
// fasthttp's server writes the current Date on every response and drops a Date set
// through the header API ("managed automatically"). Its one switch, Server.NoDefaultDate,
// is server-wide, and would leave the answers edge makes itself with no Date at all,
// which RFC 9110 §6.6.1 forbids. What fasthttp does keep is per header: a response header
// that starts out under NoDefaultDate (a flag fasthttp sets only from its server, and
// copies with ResponseHeader.CopyTo) writes the Date fields it holds instead of its own,
// and the only way a Date field gets into a header is by parsing it from the wire.
//
// So: Hold resets a header to an empty one carrying that flag, copied from a template
// taken once from a real fasthttp server; a header parsed afterwards (ResponseHeader.Read
// keeps the flag) writes the Date it read. Ensure adds the current Date to a held header
// that read none, the way RFC 9110 asks of a recipient that forwards or stores an answer
// without one. A header never held behaves as fasthttp's always did.
package keepdate

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

var (
	tmplOnce sync.Once
	tmpl     fasthttp.ResponseHeader
)

// template returns an empty response header that carries fasthttp's NoDefaultDate and
// NoDefaultContentType flags, copied from the one a fasthttp.Server with both set hands
// its handler. It is taken once, over an in-memory connection, and only read afterwards.
func template() *fasthttp.ResponseHeader {
	tmplOnce.Do(func() {
		srv := &fasthttp.Server{
			NoDefaultDate:         true,
			NoDefaultContentType:  true,
			NoDefaultServerHeader: true,
			Handler:               func(ctx *fasthttp.RequestCtx) { ctx.Response.Header.CopyTo(&tmpl) },
		}
		client, server := net.Pipe()
		done := make(chan struct{})
		go func() {
			_ = srv.ServeConn(server)
			server.Close()
			close(done)
		}()
		go func() { _, _ = io.Copy(io.Discard, client) }()
		_, _ = client.Write([]byte("GET / HTTP/1.1\r\nHost: keepdate\r\nConnection: close\r\n\r\n"))
		<-done
		client.Close()
		tmpl.SetStatusCode(0) // the template says nothing but the flag
	})
	return &tmpl
}

// Hold resets h to an empty header that goes out with the fields it is given and adds
// none of its own: the Date parsed into it is written as it is, and it gets no default
// Content-Type (edge's server sets NoDefaultContentType too: what a proxy forwards, or a
// cache replays, is the origin's). Everything else about h is as after h.Reset.
func Hold(h *fasthttp.ResponseHeader) {
	template().CopyTo(h)
}

// Ensure gives h, a held header that has been read from the wire, the Date of now when
// it read none; a header that has one is left alone. It re-parses h's own serialization
// with the field added (the only way fasthttp takes a Date), so it allocates a little: it
// is for the rare answer that came without a Date. An error means h could not be parsed
// again; h is then reset.
func Ensure(h *fasthttp.ResponseHeader, now time.Time) error {
	if len(h.Peek(fasthttp.HeaderDate)) > 0 {
		return nil
	}
	b := bufPool.Get().(*buffer)
	defer bufPool.Put(b)
	raw := h.AppendBytes(b.raw[:0])
	raw = raw[:len(raw)-2] // the blank line that ends the head
	raw = append(raw, "Date: "...)
	raw = fasthttp.AppendHTTPDate(raw, now)
	raw = append(raw, "\r\n\r\n"...)
	b.raw = raw
	return b.parse(h, raw)
}

// Parse reads the response head in raw (status line, fields, blank line) into h, which
// keeps whether it was held. The status line's protocol and reason phrase are not kept,
// so a later SetStatusCode writes the standard line for the new status. It does not
// allocate once its pooled reader has grown to the size of raw. An error means raw is
// not a response head; h is then reset.
func Parse(h *fasthttp.ResponseHeader, raw []byte) error {
	b := bufPool.Get().(*buffer)
	defer bufPool.Put(b)
	return b.parse(h, raw)
}

func (b *buffer) parse(h *fasthttp.ResponseHeader, raw []byte) error {
	if len(raw) > b.br.Size() {
		b.br = bufio.NewReaderSize(nil, len(raw))
	}
	b.rd.Reset(raw)
	b.br.Reset(&b.rd)
	err := h.Read(b.br)
	b.br.Reset(nil)
	if err != nil {
		h.Reset()
		return err
	}
	h.SetProtocol(nil)
	h.SetStatusMessage(nil)
	return nil
}

// buffer is the scratch Ensure and Parse borrow from a pool: the head Ensure rebuilds,
// and a reader over it.
type buffer struct {
	raw []byte
	rd  bytes.Reader
	br  *bufio.Reader
}

var bufPool = sync.Pool{New: func() any {
	return &buffer{br: bufio.NewReaderSize(nil, 4096)}
}}
