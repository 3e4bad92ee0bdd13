package h3

import (
	"bufio"
	"context"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
)

// conn is one HTTP/3 connection: its control stream, the client's unidirectional
// streams, and the request streams being served.
type conn struct {
	s  *Server
	qc *quic.Conn

	mu        sync.Mutex
	ctrl      *quic.SendStream // edge's control stream: SETTINGS, then GOAWAY
	next      quic.StreamID    // the id after the last request stream taken
	active    int              // request streams being served
	idle      *time.Timer      // closes the connection idleAfter its last request
	idleAfter time.Duration    // its Config's IdleTimeout
	goingAway bool             // GOAWAY sent: streams from next on are rejected

	peerControl, peerEncoder, peerDecoder atomic.Bool
}

// serveConn serves qc until it closes: it opens edge's control stream with its
// SETTINGS, reads the client's unidirectional streams, and hands each request stream
// to a worker (bridge.go).
func (s *Server) serveConn(qc *quic.Conn) {
	c := &conn{s: s, qc: qc}
	ctrl, err := qc.OpenUniStream()
	if err != nil {
		return
	}
	b := appendVarint(nil, streamControl)
	settings := appendVarint(appendVarint(nil, settingMaxFieldSectionSize), uint64(s.cfg.Load().MaxHeaderBytes))
	b = appendFrameHeader(b, frameSettings, uint64(len(settings)))
	b = append(b, settings...)
	if _, err := ctrl.Write(b); err != nil {
		return
	}
	c.ctrl = ctrl
	if !s.track(c) { // shutting down
		qc.CloseWithError(errNoError, "")
		return
	}
	defer s.untrack(c)
	c.idleAfter = s.cfg.Load().IdleTimeout
	c.idle = time.AfterFunc(c.idleAfter, func() { c.closeWith(errNoError, "idle") })
	defer c.idle.Stop()
	go c.acceptUni()
	for {
		str, err := qc.AcceptStream(context.Background())
		if err != nil {
			return // the connection ended
		}
		if !c.take(str.StreamID()) {
			str.CancelRead(errRequestRejected)
			str.CancelWrite(errRequestRejected)
			continue
		}
		s.dispatch(c, str)
	}
}

// take counts a new request stream as active, unless a GOAWAY sent before it names an
// earlier id. The connection's idle timer stops while a request is active.
func (c *conn) take(id quic.StreamID) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.goingAway && id >= c.next {
		return false
	}
	if id >= c.next {
		c.next = id + 4 // client-initiated bidirectional ids go up by 4
	}
	if c.active == 0 {
		c.idle.Stop()
	}
	c.active++
	return true
}

// done ends a request stream taken by take; the last one starts the idle timer again.
func (c *conn) done() {
	c.mu.Lock()
	if c.active--; c.active == 0 {
		c.idle.Reset(c.idleAfter)
	}
	c.mu.Unlock()
}

// goAway sends GOAWAY (RFC 9114 §5.2): the streams taken so far are served, later ones
// rejected, so the client retries them on a new connection.
func (c *conn) goAway() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.goingAway {
		return
	}
	c.goingAway = true
	var id [8]byte
	payload := appendVarint(id[:0], uint64(c.next))
	c.ctrl.Write(append(appendFrameHeader(nil, frameGoAway, uint64(len(payload))), payload...))
}

// closeWith closes the connection with an HTTP/3 error code.
func (c *conn) closeWith(code quic.ApplicationErrorCode, msg string) {
	c.qc.CloseWithError(code, msg)
}

// acceptUni reads the unidirectional streams the client opens.
func (c *conn) acceptUni() {
	for {
		rs, err := c.qc.AcceptUniStream(context.Background())
		if err != nil {
			return
		}
		go c.serveUni(rs)
	}
}

// serveUni reads one unidirectional stream by its type (RFC 9114 §6.2): the control
// stream's frames, QPACK streams (drained: with a table capacity of 0 they carry
// nothing edge needs), no push streams from a client, and unknown types not read.
func (c *conn) serveUni(rs *quic.ReceiveStream) {
	br := bufio.NewReaderSize(rs, 256)
	typ, err := readVarint(br)
	if err != nil {
		return
	}
	switch typ {
	case streamControl:
		if c.peerControl.Swap(true) {
			c.closeWith(errStreamCreation, "a second control stream")
			return
		}
		c.readControl(br)
	case streamQPACKEncoder, streamQPACKDecoder:
		seen := &c.peerEncoder
		if typ == streamQPACKDecoder {
			seen = &c.peerDecoder
		}
		if seen.Swap(true) {
			c.closeWith(errStreamCreation, "a second QPACK stream of one type")
			return
		}
		io.Copy(io.Discard, br)
	case streamPush:
		c.closeWith(errStreamCreation, "a push stream from a client")
	default:
		rs.CancelRead(errStreamCreation)
	}
}

// maxControlFrame bounds a control-stream frame edge reads (SETTINGS, GOAWAY, ...).
const maxControlFrame = 16 << 10

// readControl reads the client's control stream: SETTINGS first and once, no request
// frames; it may not end while the connection lives (RFC 9114 §6.2.1, §7.2).
func (c *conn) readControl(br *bufio.Reader) {
	for first := true; ; first = false {
		typ, err := readVarint(br)
		var n uint64
		if err == nil {
			n, err = readVarint(br)
		}
		if err == nil && n > maxControlFrame {
			c.closeWith(errFrame, "control frame too large")
			return
		}
		if err == nil {
			_, err = br.Discard(int(n))
		}
		if err != nil {
			if c.qc.Context().Err() == nil {
				c.closeWith(errClosedCriticalStream, "control stream ended")
			}
			return
		}
		switch {
		case first && typ != frameSettings:
			c.closeWith(errMissingSettings, "")
			return
		case !first && typ == frameSettings, typ == frameData, typ == frameHeaders, typ == framePushPromise:
			c.closeWith(errFrameUnexpected, "")
			return
		}
	}
}

// track adds c to the connections Shutdown sends GOAWAY to; false once it has begun.
func (s *Server) track(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) untrack(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}
