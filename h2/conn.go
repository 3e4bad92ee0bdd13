package h2

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

const (
	bufSize        = 8 << 10
	maxIdleWorkers = 4              // idle handler goroutines a connection keeps for its next streams
	lingerTimeout  = time.Second    // how long a closing connection drains what the peer still sends
	lingerBytes    = 256 << 10      // and how much of it
	closeDeadline  = time.Second    // write deadline for the last GOAWAY of a connection in error
	bigBody        = 64 << 10       // bodies above this are not kept with a pooled stream
	closedRing     = 32             // recently closed stream ids remembered, to tell closed from idle
	freeCtlPerSec  = 4              // SETTINGS and PINGs per second that cost no glitch
	never          = int64(1) << 62 // a monotonic time that never comes
)

// epoch anchors monoNow; time.Since reads the monotonic clock.
var epoch = time.Now()

func monoNow() int64 { return int64(time.Since(epoch)) }

// goErr is a connection error: the GOAWAY code to send and the reason to count. Values are
// package-level so returning one does not allocate.
type goErr struct {
	code   http2.ErrCode
	reason Reason
}

var (
	errProtocol     = &goErr{http2.ErrCodeProtocol, ReasonProtocol}
	errFrameSize    = &goErr{http2.ErrCodeFrameSize, ReasonProtocol}
	errFlow         = &goErr{http2.ErrCodeFlowControl, ReasonProtocol}
	errCompression  = &goErr{http2.ErrCodeCompression, ReasonProtocol}
	errStreamClosed = &goErr{http2.ErrCodeStreamClosed, ReasonProtocol}
	errRapidReset   = &goErr{http2.ErrCodeEnhanceYourCalm, ReasonRapidReset}
	errControlFlood = &goErr{http2.ErrCodeEnhanceYourCalm, ReasonControlFlood}
	errContFlood    = &goErr{http2.ErrCodeEnhanceYourCalm, ReasonContinuationFlood}
	errIO           = &goErr{} // the read failed; conn.ioErr says why
)

// stState is where a stream is in its life; it says who owns the stream.
type stState uint8

const (
	stOpen      stState = iota // receiving headers and body: owned by the reader
	stRunning                  // request complete: owned by its worker
	stAbandoned                // answered 408 by the timer: owned by nobody, left to the GC
)

// stream is one request/response exchange; pooled with its RequestCtx.
type stream struct {
	id  uint32
	ctx fasthttp.RequestCtx

	// Reader-owned while stOpen.
	recvWin     int64
	recvUnacked int64
	bodyLen     int64
	cl          int64 // declared content-length, -1 if none
	cookie      []byte

	// Under conn.mu.
	held     int64 // body bytes counted in conn.bodyBuf: until the handler starts or the stream ends
	state    stState
	deadline int64 // stOpen: when ReadTimeout ends; 0: none
	sendWin  int64
	blocked  int64    // when the worker began waiting for send window; 0: not waiting
	body     *reqBody // a streamed request body (Config.StreamRequest), until the worker ends the stream

	reset    atomic.Bool // the answer is not wanted: client reset, or the connection is going
	answered atomic.Bool // response HEADERS written
	ended    atomic.Bool // the frame with our END_STREAM is being or was written: the stream is closed

	// view is what st.ctx.Conn() returns: addresses and WriteInterim (interim.go).
	view streamConn

	// Worker-owned.
	hdr   []byte
	lower []byte
	sent  []byte // a streamed response: the names its header block carried, each ended by a 0
}

var streamPool = sync.Pool{New: func() any { return new(stream) }}

// closedID remembers a closed stream: HEADERS on it is STREAM_CLOSED, not an idle stream,
// and DATA still in flight on a stream we reset is dropped quietly (RFC 9113 §5.4.2).
type closedID struct {
	id   uint32
	byUs bool
}

// bucket is the glitch budget: a token bucket refilled continuously.
type bucket struct {
	tokens, max, perSec, last int64
}

func (b *bucket) take(now int64) bool {
	if b.tokens >= b.max {
		b.last = now
	} else if add := (now - b.last) * b.perSec / int64(time.Second); add > 0 {
		b.tokens = min(b.max, b.tokens+add)
		b.last += add * int64(time.Second) / b.perSec
		if b.tokens == b.max {
			b.last = now
		}
	}
	if b.tokens <= 0 {
		return false
	}
	b.tokens--
	return true
}

// AddrConn is the net.Conn handed to RequestCtx.Init2 for a request of a multiplexed
// connection (a stream of HTTP/2 here, of HTTP/3 in package h3): it reports the
// connection's addresses and refuses I/O, so a handler cannot write around the framing.
type AddrConn struct {
	Local, Remote net.Addr
}

var errNoConnIO = errors.New("the connection of a multiplexed stream (HTTP/2, HTTP/3) cannot be used directly")

func (a *AddrConn) Read([]byte) (int, error)         { return 0, errNoConnIO }
func (a *AddrConn) Write([]byte) (int, error)        { return 0, errNoConnIO }
func (a *AddrConn) Close() error                     { return nil }
func (a *AddrConn) LocalAddr() net.Addr              { return a.Local }
func (a *AddrConn) RemoteAddr() net.Addr             { return a.Remote }
func (a *AddrConn) SetDeadline(time.Time) error      { return nil }
func (a *AddrConn) SetReadDeadline(time.Time) error  { return nil }
func (a *AddrConn) SetWriteDeadline(time.Time) error { return nil }

// conn is one HTTP/2 connection. Goroutines: the reader (ServeConn's own), one worker per
// running stream (kept for the next stream while few are idle), and the timer's callback.
// Lock order: wmu may be taken while holding nothing or mu... never: mu is never held
// while taking wmu.
type conn struct {
	srv  *Server
	cfg  *Config
	nc   net.Conn
	addr *AddrConn // its own allocation: a pooled ctx still pointing at it pins nothing else
	br   *bufio.Reader
	bw   *bufio.Writer
	fr   *http2.Framer
	dec  *hpack.Decoder

	// Reader-owned.
	rbuf          []byte
	hbuf          []byte // header block being accumulated from HEADERS+CONTINUATION
	hd            hdrState
	inBlock       bool
	maxID         uint32 // highest client stream id seen; written under mu
	settingsAcked bool
	sawSettings   bool
	glitches      bucket
	ctlSec        int64
	ctlN          int
	ioErr         error

	mu          sync.Mutex
	cond        sync.Cond // on mu: send windows changed, a stream was reset, the conn closes
	streams     []*stream
	recvWin     int64 // connection receive window left
	recvUnacked int64 // received, not yet returned with WINDOW_UPDATE: recvWin+recvUnacked == ConnWindowSize
	bodyBuf     int64 // sum of the streams' held bytes, bounded by cfg.MaxConnBodyBuffer
	closed      [closedRing]closedID
	closedPos   int
	sendWin     int64
	peerInit    int64
	goingAway   bool // no new streams
	goAwaySent  bool // our GOAWAY is being or was written
	drainOK     bool // GOAWAY written (or the client's received): close once no stream is left
	dead        bool
	idleSince   int64
	pingAt      int64 // when our outstanding PING was sent; 0: none
	timer       *time.Timer
	timerAt     int64
	closeErr    error

	peerFrame atomic.Uint32 // peer's SETTINGS_MAX_FRAME_SIZE
	lastRead  atomic.Int64
	closing   atomic.Bool

	wmu     sync.Mutex
	wwait   atomic.Int32
	wfailed bool
	wdl     int64 // when the write deadline was last pushed
	ebuf    []byte

	work        chan *stream
	idleWorkers atomic.Int32
	wg          sync.WaitGroup
	done        chan struct{}
}

func newConn(s *Server, nc net.Conn) *conn {
	cfg := s.cfg.Load() // this connection's config for its whole life, whatever SetConfig does
	c := &conn{srv: s, cfg: cfg, nc: nc}
	c.addr = &AddrConn{Local: nc.LocalAddr(), Remote: nc.RemoteAddr()}
	c.br = bufio.NewReaderSize(nc, bufSize)
	c.bw = bufio.NewWriterSize(nc, bufSize)
	c.fr = http2.NewFramer(c.bw, c.br)
	c.fr.SetMaxReadFrameSize(cfg.MaxFrameSize)
	c.fr.SetReuseFrames()
	c.dec = hpack.NewDecoder(4096, nil)
	c.dec.SetEmitFunc(c.onField)
	c.dec.SetMaxStringLength(2 * int(cfg.MaxHeaderListSize))
	c.cond.L = &c.mu
	c.sendWin = defaultWindow
	c.peerInit = defaultWindow
	c.peerFrame.Store(minFrameSize)
	c.recvWin = defaultWindow
	m := int64(cfg.MaxControlFrames)
	c.glitches = bucket{tokens: m, max: m, perSec: max(m/10, 1)}
	c.work = make(chan *stream)
	c.done = make(chan struct{})
	c.timerAt = never
	return c
}

func (c *conn) serve() error {
	st := &c.srv.stats
	st.connsOpen.Add(1)
	st.connsTotal.Add(1)
	err := c.run()
	c.teardown()
	st.connsOpen.Add(-1)
	return err
}

func (c *conn) run() error {
	cfg := c.cfg
	if cfg.ReadTimeout > 0 {
		c.nc.SetReadDeadline(time.Now().Add(cfg.ReadTimeout))
	}
	var p [len(ClientPreface)]byte
	if _, err := io.ReadFull(c.br, p[:]); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return ErrTimeout
		}
		return err
	}
	if string(p[:]) != ClientPreface {
		return ErrBadPreface
	}
	if !c.lockWrite() {
		return c.ioErr
	}
	err := c.fr.WriteSettings(
		http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: cfg.MaxConcurrentStreams},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: cfg.InitialWindowSize},
		http2.Setting{ID: http2.SettingMaxFrameSize, Val: cfg.MaxFrameSize},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: cfg.MaxHeaderListSize},
		http2.Setting{ID: http2.SettingEnableConnectProtocol, Val: 1}, // RFC 8441
	)
	if err == nil && cfg.ConnWindowSize > defaultWindow {
		err = c.fr.WriteWindowUpdate(0, cfg.ConnWindowSize-defaultWindow)
	}
	c.unlockWrite(err)
	c.recvWin = int64(cfg.ConnWindowSize)

	now := monoNow()
	c.lastRead.Store(now)
	c.mu.Lock()
	c.idleSince = now
	c.timer = time.AfterFunc(time.Hour, c.onTimer)
	c.armLocked(now, c.nextIdleLocked())
	c.mu.Unlock()
	if !c.srv.track(c, true) {
		c.goAway(http2.ErrCodeNo, ReasonShutdown)
	}
	return c.readLoop()
}

// teardown runs when the reader is done: it ends the workers and the timer and closes the
// connection. Handlers still running are waited for (they cannot be cancelled).
func (c *conn) teardown() {
	c.mu.Lock()
	c.dead = true
	for _, st := range c.streams {
		c.abortLocked(st, ErrBodyConnClosed)
	}
	c.cond.Broadcast()
	if c.timer != nil {
		c.timer.Stop()
	}
	c.mu.Unlock()
	close(c.done)
	c.nc.Close()
	c.wg.Wait()
	c.srv.track(c, false)
	c.mu.Lock()
	// Streams the reader owned are dropped with the connection; the workers' are gone.
	c.srv.stats.streamsActive.Add(-int64(len(c.streams)))
	c.streams = nil
	c.mu.Unlock()
}

func (c *conn) readLoop() error {
	for {
		if c.closing.Load() {
			return c.drain()
		}
		fh, err := c.fr.ReadFrameHeader()
		if err != nil {
			if c.closing.Load() {
				return c.drain()
			}
			switch {
			case errors.Is(err, http2.ErrFrameTooLarge):
				c.fail(errFrameSize)
			default:
				var ce http2.ConnectionError
				if errors.As(err, &ce) {
					c.fail(&goErr{http2.ErrCode(ce), ReasonProtocol})
					continue
				}
				return c.readErr(err)
			}
			continue
		}
		c.lastRead.Store(monoNow())
		if e := c.processFrame(fh); e != nil {
			if e == errIO {
				return c.readErr(c.ioErr)
			}
			c.fail(e)
		}
	}
}

func (c *conn) readErr(err error) error {
	if c.closing.Load() {
		return c.drain()
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return ErrTimeout
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// drain discards what the peer still sends after our last frame, so that closing the
// socket does not reset the connection before the peer has read our GOAWAY.
func (c *conn) drain() error {
	var buf [4096]byte
	for n := 0; n < lingerBytes; {
		m, err := c.br.Read(buf[:])
		n += m
		if err != nil {
			break
		}
	}
	c.mu.Lock()
	err := c.closeErr
	c.mu.Unlock()
	return err
}

// fail sends GOAWAY for a connection error and closes the connection.
func (c *conn) fail(e *goErr) {
	c.goAway(e.code, e.reason)
}

// readPayload reads the payload of the frame whose header was just read.
func (c *conn) readPayload(n uint32) ([]byte, *goErr) {
	if uint32(cap(c.rbuf)) < n {
		c.rbuf = make([]byte, n, max(n, minFrameSize))
	}
	p := c.rbuf[:n]
	if _, err := io.ReadFull(c.br, p); err != nil {
		c.ioErr = err
		return nil, errIO
	}
	return p, nil
}

func (c *conn) processFrame(fh http2.FrameHeader) *goErr {
	if !c.sawSettings {
		if fh.Type != http2.FrameSettings || fh.Flags.Has(http2.FlagSettingsAck) {
			return errProtocol
		}
	}
	switch fh.Type {
	case http2.FrameData:
		return c.onData(fh)
	case http2.FrameHeaders:
		return c.onHeaders(fh)
	case http2.FrameContinuation:
		return c.onContinuation(fh)
	case http2.FrameRSTStream:
		return c.onRSTStream(fh)
	case http2.FrameWindowUpdate:
		return c.onWindowUpdate(fh)
	case http2.FrameSettings, http2.FramePing, http2.FrameGoAway, http2.FramePriority, http2.FramePushPromise:
		// Rare frames: let the Framer parse and validate them (it allocates the frame).
		f, err := c.fr.ReadFrameForHeader(fh)
		if err != nil {
			var ce http2.ConnectionError
			var se http2.StreamError
			switch {
			case errors.As(err, &ce):
				return &goErr{http2.ErrCode(ce), ReasonProtocol}
			case errors.As(err, &se):
				c.resetStream(se.StreamID, se.Code)
				return nil
			}
			c.ioErr = err
			return errIO
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			return c.onSettings(f)
		case *http2.PingFrame:
			return c.onPing(f)
		case *http2.GoAwayFrame:
			c.onGoAway()
		case *http2.PriorityFrame:
			if f.StreamDep == f.StreamID {
				c.resetStream(f.StreamID, http2.ErrCodeProtocol)
			}
		case *http2.PushPromiseFrame:
			return errProtocol
		}
		return nil
	default:
		// Unknown frame types are ignored (RFC 9113 §4.1), but not for free.
		if _, e := c.readPayload(fh.Length); e != nil {
			return e
		}
		return c.ctlGlitch()
	}
}

// glitch spends one token of the budget; when none is left the connection must go.
func (c *conn) glitch(e *goErr) *goErr {
	if c.glitches.take(monoNow()) {
		return nil
	}
	return e
}

// ctlGlitch charges SETTINGS, PING and unknown frames beyond the first few per second.
func (c *conn) ctlGlitch() *goErr {
	now := monoNow()
	if sec := now / int64(time.Second); sec != c.ctlSec {
		c.ctlSec, c.ctlN = sec, 0
	}
	c.ctlN++
	if c.ctlN <= freeCtlPerSec {
		return nil
	}
	return c.glitch(errControlFlood)
}

func (c *conn) onSettings(f *http2.SettingsFrame) *goErr {
	if f.IsAck() {
		c.settingsAcked = true
		return nil
	}
	if !c.sawSettings {
		c.sawSettings = true
		c.mu.Lock()
		if !c.closing.Load() {
			c.nc.SetReadDeadline(time.Time{})
		}
		c.mu.Unlock()
	} else if e := c.ctlGlitch(); e != nil {
		return e
	}
	var bad *goErr
	f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			if ce, ok := err.(http2.ConnectionError); ok && http2.ErrCode(ce) == http2.ErrCodeFlowControl {
				bad = errFlow
			} else {
				bad = errProtocol
			}
			return err
		}
		switch s.ID {
		case http2.SettingInitialWindowSize:
			c.mu.Lock()
			delta := int64(s.Val) - c.peerInit
			c.peerInit = int64(s.Val)
			for _, st := range c.streams {
				st.sendWin += delta
				if st.sendWin > maxWindow {
					bad = errFlow
				}
			}
			c.cond.Broadcast()
			c.mu.Unlock()
		case http2.SettingMaxFrameSize:
			c.peerFrame.Store(s.Val)
		}
		return nil
	})
	if bad != nil {
		return bad
	}
	c.write(func() error { return c.fr.WriteSettingsAck() })
	return nil
}

func (c *conn) onPing(f *http2.PingFrame) *goErr {
	if f.IsAck() {
		if f.Data == pingData {
			c.mu.Lock()
			c.pingAt = 0
			c.mu.Unlock()
		}
		return nil
	}
	if e := c.ctlGlitch(); e != nil {
		return e
	}
	data := f.Data
	c.write(func() error { return c.fr.WritePing(true, data) })
	return nil
}

// onGoAway: the client will open no more streams; finish the ones in flight, then close.
func (c *conn) onGoAway() {
	c.mu.Lock()
	c.goingAway = true
	c.drainOK = true
	n := len(c.streams)
	c.mu.Unlock()
	if n == 0 {
		c.beginClose(nil)
	}
}

func (c *conn) onRSTStream(fh http2.FrameHeader) *goErr {
	p, e := c.readPayload(fh.Length)
	if e != nil {
		return e
	}
	if fh.StreamID == 0 {
		return errProtocol
	}
	if len(p) != 4 {
		return errFrameSize
	}
	if fh.StreamID > c.maxID {
		return errProtocol
	}
	c.srv.stats.resetsReceived.Add(1)
	c.mu.Lock()
	st := c.findLocked(fh.StreamID)
	if st == nil {
		c.mu.Unlock()
		return nil
	}
	c.abortLocked(st, ErrBodyReset)
	owned := st.state == stOpen
	answered := st.answered.Load()
	incr := c.grantLocked() // what a streamed body held unread is dropped
	c.mu.Unlock()
	c.sendConnWindow(incr)
	if owned {
		c.dropStream(st, false)
	}
	if !answered {
		return c.glitch(errRapidReset)
	}
	return nil
}

func (c *conn) onWindowUpdate(fh http2.FrameHeader) *goErr {
	p, e := c.readPayload(fh.Length)
	if e != nil {
		return e
	}
	if len(p) != 4 {
		return errFrameSize
	}
	incr := int64(binary.BigEndian.Uint32(p) & 0x7fffffff)
	id := fh.StreamID
	if id == 0 {
		if incr == 0 {
			return errProtocol
		}
		c.mu.Lock()
		c.sendWin += incr
		over := c.sendWin > maxWindow
		c.cond.Broadcast()
		c.mu.Unlock()
		if over {
			return errFlow
		}
		return nil
	}
	if id > c.maxID {
		return errProtocol
	}
	if incr == 0 {
		c.resetStream(id, http2.ErrCodeProtocol)
		return c.glitch(errControlFlood)
	}
	c.mu.Lock()
	st := c.findLocked(id)
	over := false
	if st != nil {
		st.sendWin += incr
		over = st.sendWin > maxWindow
		c.cond.Broadcast()
	}
	c.mu.Unlock()
	if over {
		c.resetStream(id, http2.ErrCodeFlowControl)
	}
	return nil
}

func (c *conn) onData(fh http2.FrameHeader) *goErr {
	id := fh.StreamID
	if id == 0 {
		return errProtocol
	}
	p, e := c.readPayload(fh.Length)
	if e != nil {
		return e
	}
	data := p
	if fh.Flags.Has(http2.FlagDataPadded) {
		if len(p) == 0 || int(p[0]) >= len(p) {
			return errProtocol
		}
		data = p[1 : len(p)-int(p[0])]
	}
	if id > c.maxID {
		return errProtocol
	}
	n := int64(fh.Length)
	end := fh.Flags.Has(http2.FlagDataEndStream)

	c.mu.Lock()
	if n > c.recvWin {
		c.mu.Unlock()
		return errFlow
	}
	c.recvWin -= n
	st := c.findLocked(id)
	if st != nil && st.body != nil {
		// A streamed body: its connection window comes back as it is read.
		code, reset := c.bodyData(st, n, data, end)
		incr := c.grantLocked()
		c.mu.Unlock()
		c.sendConnWindow(incr)
		if reset {
			c.write(func() error { return c.fr.WriteRSTStream(id, code) })
		}
		if len(data) == 0 && !end {
			return c.glitch(errControlFlood)
		}
		return nil
	}
	c.recvUnacked += n
	var byUs, open bool
	if st == nil {
		byUs = c.closedByUsLocked(id)
	} else if open = st.state == stOpen; !open {
		st.reset.Store(true) // DATA after END_STREAM: the exchange is broken
		c.cond.Broadcast()
	} else {
		// Counted before it is known to be kept: a stream dropped below releases it.
		st.held += int64(len(data))
		c.bodyBuf += int64(len(data))
	}
	incr := c.grantLocked()
	c.mu.Unlock()
	c.sendConnWindow(incr)
	if !open {
		if !byUs {
			c.resetStream(id, http2.ErrCodeStreamClosed)
		}
		return nil
	}
	if n > st.recvWin {
		c.rejectStream(st, http2.ErrCodeFlowControl)
		return nil
	}
	st.recvWin -= n
	if len(data) == 0 && !end {
		if e := c.glitch(errControlFlood); e != nil {
			return e
		}
	}
	st.bodyLen += int64(len(data))
	switch {
	case st.bodyLen > c.cfg.MaxBodySize:
		c.answer(st, 413, bodyTooLarge, end)
		return nil
	case st.cl >= 0 && st.bodyLen > st.cl:
		c.rejectStream(st, http2.ErrCodeProtocol)
		return nil
	}
	if len(data) > 0 {
		st.ctx.Request.AppendBody(data)
	}
	if end {
		c.endOfRequest(st)
		return nil
	}
	st.recvUnacked += n
	if st.recvUnacked >= int64(c.cfg.InitialWindowSize)/2 {
		incr := st.recvUnacked
		st.recvUnacked = 0
		st.recvWin += incr
		c.write(func() error { return c.fr.WriteWindowUpdate(id, uint32(incr)) })
	}
	return nil
}

// grantLocked decides how much connection window to return: what was received, once it
// is half the window, unless the streams waiting for their handler hold MaxConnBodyBuffer
// or more. Withholding it is what bounds a connection's buffered bodies: the client may
// send at most recvWin more, so bodyBuf stays below MaxConnBodyBuffer + ConnWindowSize.
// Called with mu held after bytes arrive or are released; the caller sends the result
// with sendConnWindow once mu is released.
func (c *conn) grantLocked() int64 {
	if c.recvUnacked < int64(c.cfg.ConnWindowSize)/2 || c.bodyBuf >= c.cfg.MaxConnBodyBuffer {
		return 0
	}
	incr := c.recvUnacked
	c.recvUnacked = 0
	c.recvWin += incr
	return incr
}

// sendConnWindow writes WINDOW_UPDATE(0, incr) if incr is not 0.
func (c *conn) sendConnWindow(incr int64) {
	if incr > 0 {
		c.write(func() error { return c.fr.WriteWindowUpdate(0, uint32(incr)) })
	}
}

func (c *conn) onHeaders(fh http2.FrameHeader) *goErr {
	id := fh.StreamID
	p, e := c.readPayload(fh.Length)
	if e != nil {
		return e
	}
	if id == 0 || id%2 == 0 {
		return errProtocol
	}
	frag := p
	if fh.Flags.Has(http2.FlagHeadersPadded) {
		if len(frag) == 0 {
			return errProtocol
		}
		pad := int(frag[0])
		frag = frag[1:]
		if pad > len(frag) {
			return errProtocol
		}
		frag = frag[:len(frag)-pad]
	}
	selfDep := false
	if fh.Flags.Has(http2.FlagHeadersPriority) {
		if len(frag) < 5 {
			return errFrameSize
		}
		selfDep = binary.BigEndian.Uint32(frag)&0x7fffffff == id
		frag = frag[5:]
	}
	end := fh.Flags.Has(http2.FlagHeadersEndStream)
	h := &c.hd
	*h = hdrState{id: id, end: end}

	if id <= c.maxID {
		closed, byUs := false, false
		c.mu.Lock()
		st := c.findLocked(id)
		// A streamed body still expecting data may end with trailers, even once the
		// answer was sent in full.
		streamed := st != nil && st.body != nil && !st.body.eof
		if st != nil && st.ended.Load() && !streamed {
			st = nil // answered in full; the worker has yet to take it off the list
			closed = true
		}
		if st == nil && !closed {
			closed, byUs = c.closedLocked(id), c.closedByUsLocked(id)
		}
		open := st != nil && st.state == stOpen
		c.mu.Unlock()
		switch {
		case st == nil && byUs:
			// We reset it: what the client sent before seeing that is ignored (RFC 9113
			// §5.4.2), decoded only to keep the HPACK state.
			h.kind = hkIgnore
		case st == nil && closed:
			return errStreamClosed
		case st == nil:
			return errProtocol
		case open:
			h.kind, h.st = hkTrailers, st
		case streamed:
			// Owned by its worker: h.st stays nil, the block is checked, then the
			// stream is looked up again by id (bodyTrailers).
			h.kind, h.streamed = hkTrailers, true
		default:
			h.kind, h.rst = hkIgnore, http2.ErrCodeStreamClosed
			h.hasRST = true
		}
	} else {
		c.mu.Lock()
		c.maxID = id
		switch {
		case c.goingAway:
			h.kind = hkIgnore
		case uint32(len(c.streams)) >= c.cfg.MaxConcurrentStreams:
			h.kind, h.rst, h.hasRST = hkIgnore, http2.ErrCodeRefusedStream, true
			h.refused = true
		default:
			h.kind = hkNew
			h.st = c.openStreamLocked(id)
		}
		c.mu.Unlock()
		if h.refused {
			c.srv.stats.streamsRefused.Add(1)
			if e := c.glitch(errRapidReset); e != nil {
				return e
			}
		}
	}
	if selfDep {
		h.selfDep = true
	}
	if len(frag) > int(c.cfg.MaxHeaderListSize) {
		return errContFlood
	}
	if !fh.Flags.Has(http2.FlagHeadersEndHeaders) {
		c.inBlock = true
		c.hbuf = append(c.hbuf[:0], frag...)
		return nil
	}
	return c.decodeBlock(frag)
}

func (c *conn) onContinuation(fh http2.FrameHeader) *goErr {
	// The Framer has checked that CONTINUATION follows HEADERS of the same stream.
	p, e := c.readPayload(fh.Length)
	if e != nil {
		return e
	}
	if !c.inBlock {
		return errProtocol
	}
	if len(c.hbuf)+len(p) > int(c.cfg.MaxHeaderListSize) {
		return errContFlood
	}
	endHeaders := fh.Flags.Has(http2.FlagContinuationEndHeaders)
	if len(p) == 0 && !endHeaders {
		if e := c.glitch(errContFlood); e != nil {
			return e
		}
	}
	c.hbuf = append(c.hbuf, p...)
	if !endHeaders {
		return nil
	}
	c.inBlock = false
	return c.decodeBlock(c.hbuf)
}

// openStreamLocked takes a stream from the pool for a new request. Called with mu held.
func (c *conn) openStreamLocked(id uint32) *stream {
	st := streamPool.Get().(*stream)
	st.id = id
	st.state = stOpen
	st.reset.Store(false)
	st.answered.Store(false)
	st.ended.Store(false)
	st.bodyLen = 0
	st.held = 0
	st.cl = -1
	st.cookie = st.cookie[:0]
	st.recvUnacked = 0
	st.recvWin = int64(c.cfg.InitialWindowSize)
	if !c.settingsAcked {
		st.recvWin = max(st.recvWin, defaultWindow)
	}
	st.sendWin = c.peerInit
	st.blocked = 0
	st.deadline = 0
	st.body = nil
	now := monoNow()
	if rt := c.cfg.ReadTimeout; rt > 0 {
		st.deadline = now + int64(rt)
		c.armLocked(now, st.deadline)
	}
	if pi := c.cfg.PingInterval; pi > 0 {
		c.armLocked(now, now+int64(pi))
	}
	st.view = streamConn{AddrConn: c.addr, c: c, st: st}
	st.ctx.Init2(&st.view, c.srv.logger, false)
	c.streams = append(c.streams, st)
	c.srv.stats.streamsTotal.Add(1)
	c.srv.stats.streamsActive.Add(1)
	return st
}

func (c *conn) findLocked(id uint32) *stream {
	for _, st := range c.streams {
		if st.id == id {
			return st
		}
	}
	return nil
}

func (c *conn) closedLocked(id uint32) bool {
	for _, x := range c.closed {
		if x.id == id {
			return true
		}
	}
	return false
}

func (c *conn) closedByUsLocked(id uint32) bool {
	for _, x := range c.closed {
		if x.id == id {
			return x.byUs
		}
	}
	return false
}

// removeLocked takes st off the active list and releases the body bytes it held (the
// caller returns the window this frees with grantLocked); it reports whether the
// connection should now close (GOAWAY written and nothing left in flight).
func (c *conn) removeLocked(st *stream, byUs bool) bool {
	for i, x := range c.streams {
		if x == st {
			last := len(c.streams) - 1
			c.streams[i] = c.streams[last]
			c.streams[last] = nil
			c.streams = c.streams[:last]
			c.srv.stats.streamsActive.Add(-1)
			break
		}
	}
	c.bodyBuf -= st.held
	st.held = 0
	c.closed[c.closedPos] = closedID{id: st.id, byUs: byUs}
	c.closedPos = (c.closedPos + 1) % closedRing
	if len(c.streams) > 0 {
		return false
	}
	now := monoNow()
	c.idleSince = now
	c.armLocked(now, c.nextIdleLocked())
	return c.drainOK
}

// dropStream ends a stream the reader owns and returns it to the pool.
func (c *conn) dropStream(st *stream, byUs bool) {
	c.mu.Lock()
	closeNow := c.removeLocked(st, byUs)
	incr := c.grantLocked()
	c.mu.Unlock()
	release(st)
	c.sendConnWindow(incr)
	if closeNow {
		c.beginClose(nil)
	}
}

// rejectStream resets a stream the reader owns.
func (c *conn) rejectStream(st *stream, code http2.ErrCode) {
	id := st.id
	c.dropStream(st, true)
	c.resetStream(id, code)
}

// resetStream sends RST_STREAM; a stream with a running handler has its answer discarded.
func (c *conn) resetStream(id uint32, code http2.ErrCode) {
	c.mu.Lock()
	var incr int64
	if st := c.findLocked(id); st != nil && st.state == stRunning {
		c.abortLocked(st, ErrBodyReset)
		incr = c.grantLocked()
	}
	c.mu.Unlock()
	c.sendConnWindow(incr)
	c.write(func() error { return c.fr.WriteRSTStream(id, code) })
}

// answer sends one of our own JSON answers on a stream the reader owns and ends it;
// a request still being sent is reset with NO_ERROR (RFC 9113 §8.1).
func (c *conn) answer(st *stream, status int, body string, ended bool) {
	id := st.id
	c.dropStream(st, true)
	c.writeAnswer(id, status, body)
	if !ended {
		c.write(func() error { return c.fr.WriteRSTStream(id, http2.ErrCodeNo) })
	}
}

// endOfRequest runs when END_STREAM arrived on a stream the reader owns.
func (c *conn) endOfRequest(st *stream) {
	if st.cl >= 0 && st.cl != st.bodyLen {
		c.rejectStream(st, http2.ErrCodeProtocol)
		return
	}
	c.mu.Lock()
	if !runLocked(st) {
		c.mu.Unlock()
		return
	}
	// The handler takes the body: it no longer counts against MaxConnBodyBuffer.
	c.bodyBuf -= st.held
	st.held = 0
	incr := c.grantLocked()
	c.mu.Unlock()
	c.dispatch(st)
	c.sendConnWindow(incr)
}

// runLocked hands st from the reader to its worker (stOpen to stRunning, its
// ReadTimeout off) and reports whether it did: false if the timer answered it
// meanwhile. Called with mu held.
func runLocked(st *stream) bool {
	if st.state != stOpen {
		return false
	}
	st.state = stRunning
	st.deadline = 0
	return true
}

// dispatch hands a stream whose handler is to run to an idle worker, or to a new one.
func (c *conn) dispatch(st *stream) {
	select {
	case c.work <- st:
	default:
		c.wg.Add(1)
		go c.worker(st)
	}
}

// release resets st and puts it back in the pool.
func release(st *stream) {
	if st.ctx.Hijacked() {
		return // the hijack handler cannot be cleared: let the GC have it
	}
	st.ctx.Request.ReleaseBody(bigBody)
	st.ctx.Response.ReleaseBody(bigBody)
	st.ctx.Request.Reset()
	st.ctx.Response.Reset()
	if cap(st.cookie) > bigBody {
		st.cookie = nil
	}
	if cap(st.sent) > bigBody {
		st.sent = nil
	}
	st.view.c = nil // a pooled stream keeps no connection alive
	streamPool.Put(st)
}

// goAway sends GOAWAY with the last stream id seen. With NO_ERROR streams in flight
// finish first; with an error code the connection closes now.
func (c *conn) goAway(code http2.ErrCode, reason Reason) {
	c.mu.Lock()
	c.goingAway = true
	sent := c.goAwaySent
	c.goAwaySent = true
	last := c.maxID
	c.mu.Unlock()
	var err error
	if code != http2.ErrCodeNo {
		err = ErrGoAway
	}
	if !sent {
		s := &c.srv.stats
		s.goAwayReason[reason].Add(1)
		if int(code) < NumErrCodes {
			s.goAwayCode[code].Add(1)
		}
		if c.lockWrite() {
			if err != nil {
				c.nc.SetWriteDeadline(time.Now().Add(closeDeadline))
			}
			werr := c.fr.WriteGoAway(last, code, nil)
			if werr == nil {
				werr = c.bw.Flush()
			}
			c.unlockWrite(werr)
		}
	}
	// Only now may the last stream's end close the connection: closing earlier would
	// stop the GOAWAY from being written.
	c.mu.Lock()
	c.drainOK = true
	n := len(c.streams)
	c.mu.Unlock()
	if err != nil || n == 0 {
		c.beginClose(err)
	}
}

// beginClose stops writing (FIN after what was written) and lets the reader drain the
// peer for a moment before ServeConn closes the socket.
func (c *conn) beginClose(err error) {
	c.mu.Lock()
	if c.closing.Load() {
		c.mu.Unlock()
		return
	}
	c.closeErr = err
	c.closing.Store(true)
	c.nc.SetReadDeadline(time.Now().Add(lingerTimeout))
	for _, st := range c.streams {
		c.abortLocked(st, ErrBodyConnClosed)
	}
	c.cond.Broadcast()
	c.mu.Unlock()
	c.wwait.Add(1)
	c.wmu.Lock()
	c.wwait.Add(-1)
	if !c.wfailed {
		c.nc.SetWriteDeadline(time.Now().Add(closeDeadline))
		c.bw.Flush()
		if cw, ok := c.nc.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
		c.wfailed = true
	}
	c.wmu.Unlock()
}

// closeNow closes the socket without a GOAWAY (the peer does not read).
func (c *conn) closeNow(err error) {
	c.mu.Lock()
	if c.closeErr == nil {
		c.closeErr = err
	}
	c.closing.Store(true)
	for _, st := range c.streams {
		c.abortLocked(st, ErrBodyConnClosed)
	}
	c.cond.Broadcast()
	c.mu.Unlock()
	c.nc.Close()
}

// lockWrite takes the write lock; false if the connection can no longer be written.
func (c *conn) lockWrite() bool {
	c.wwait.Add(1)
	c.wmu.Lock()
	c.wwait.Add(-1)
	if c.wfailed {
		c.wmu.Unlock()
		return false
	}
	if wt := c.cfg.WriteTimeout; wt > 0 {
		if now := monoNow(); c.wdl == 0 || now-c.wdl > int64(min(wt/4, 500*time.Millisecond)) {
			c.wdl = now
			c.nc.SetWriteDeadline(time.Now().Add(wt))
		}
	}
	return true
}

// unlockWrite flushes when no other writer waits, then releases the write lock. A write
// error (err, or the flush's) closes the connection.
func (c *conn) unlockWrite(err error) {
	if err == nil && c.wwait.Load() == 0 && c.bw.Buffered() > 0 {
		err = c.bw.Flush()
	}
	if err != nil && !c.wfailed {
		c.wfailed = true
		c.wmu.Unlock()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			err = ErrTimeout
		}
		c.closeNow(err)
		return
	}
	c.wmu.Unlock()
}

// write runs one framer write under the write lock.
func (c *conn) write(f func() error) bool {
	if !c.lockWrite() {
		return false
	}
	err := f()
	c.unlockWrite(err)
	return err == nil
}
