package h2

import (
	"errors"

	"github.com/valyala/fasthttp"
)

// Interim responses (RFC 9113 §8.1: a response may start with HEADERS frames carrying a
// 1xx :status, without END_STREAM, before the final HEADERS). A handler relaying an
// origin's 103 Early Hints (or 100, 102) reaches them through ctx.Conn(), which for a
// stream is its streamConn:
//
//	if w, ok := ctx.Conn().(interface{ WriteInterim(*fasthttp.ResponseHeader) error }); ok {
//		w.WriteInterim(&interim)
//	}

// streamConn is the net.Conn a stream's RequestCtx sees: the connection's addresses
// (its I/O is refused, as AddrConn's) and WriteInterim.
type streamConn struct {
	*AddrConn
	c  *conn
	st *stream
}

var errInterim = errors.New("h2: interim response not sent: the stream is answered, reset or closing")

// WriteInterim sends h, a 1xx other than 101, as a HEADERS frame of the stream ahead of
// its answer: its fields lowercased, minus the connection-specific ones, content-length
// and content-type (a 1xx has no content). Call it only from the handler, before it
// returns; each call sends one frame block. It fails once the stream is reset or its
// connection is gone, and for a status that is not informational (a final answer is the
// handler's ctx.Response).
func (v *streamConn) WriteInterim(h *fasthttp.ResponseHeader) error {
	st, code := v.st, h.StatusCode()
	if code < 100 || code > 199 || code == fasthttp.StatusSwitchingProtocols ||
		v.c == nil || st.reset.Load() || st.answered.Load() {
		return errInterim
	}
	b, _ := st.appendFields(appendStatus(st.hdr[:0], code), h, fieldsInterim)
	st.hdr = b
	if !v.c.writeHeaders(st.id, b, false) {
		return errInterim
	}
	return nil
}
