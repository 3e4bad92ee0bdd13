package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/edge-gw/edge/config"
	"github.com/valyala/fasthttp"
)

// accessLog formats one line per request on the request path into a pooled
// buffer and hands it to a writer goroutine through a bounded queue. When the
// writer falls behind, lines are dropped and counted instead of slowing requests.
type accessLog struct {
	cfg     config.AccessLog
	queue   chan *[]byte
	out     io.Writer
	closer  io.Closer
	dropped interface{ Inc() }
	done    chan struct{}
	reopen  chan chan error // asks the writer to reopen the file (logrotate); it answers
	// upstreamTime says the template uses $upstream_response_time, so that requests time
	// their upstream exchange (no clock is read for it otherwise).
	upstreamTime bool
}

var lineBufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// openAccessLog starts the writer. It returns nil when the log is off.
func openAccessLog(c config.AccessLog, dropped interface{ Inc() }) (*accessLog, error) {
	if !c.Enabled {
		return nil, nil
	}
	l := &accessLog{cfg: c, queue: make(chan *[]byte, c.Buffer), dropped: dropped, done: make(chan struct{}),
		reopen: make(chan chan error)}
	for _, p := range c.Parts {
		l.upstreamTime = l.upstreamTime || p.Var == "upstream_response_time"
	}
	switch c.Path {
	case "stdout", "":
		l.out = os.Stdout
	case "stderr":
		l.out = os.Stderr
	default:
		f, err := openLogFile(c.Path)
		if err != nil {
			return nil, err
		}
		l.out, l.closer = f, f
	}
	go l.run()
	return l, nil
}

// sameLog reports whether two access_log blocks are the same (Parts follow from the
// fields compared).
func sameLog(a, b config.AccessLog) bool {
	return a.Enabled == b.Enabled && a.Path == b.Path && a.Format == b.Format &&
		a.Template == b.Template && a.Buffer == b.Buffer
}

// ReopenLog makes the access log reopen its file (SIGUSR1, after logrotate moved it):
// lines written before go to the old file, lines after to the new one, none lost.
func (p *Proxy) ReopenLog() error { return p.log.Load().reopenFile() }

func openLogFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("cannot open access log: %w", err)
	}
	return f, nil
}

// reopenFile makes the writer close its file and open the path again, after every line
// queued before was written to the old one: what logrotate's postrotate asks with
// SIGUSR1. A log to stdout or stderr has nothing to reopen.
func (l *accessLog) reopenFile() error {
	if l == nil || l.closer == nil {
		return nil
	}
	answer := make(chan error, 1)
	select {
	case l.reopen <- answer:
		return <-answer
	case <-l.done:
		return nil
	}
}

func (l *accessLog) run() {
	defer close(l.done)
	w := bufio.NewWriterSize(l.out, 64<<10)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case b, ok := <-l.queue:
			if !ok {
				w.Flush()
				if l.closer != nil {
					l.closer.Close()
				}
				return
			}
			w.Write(*b)
			*b = (*b)[:0]
			lineBufs.Put(b)
			if len(l.queue) == 0 {
				w.Flush()
			}
		case <-tick.C:
			w.Flush()
		case answer := <-l.reopen:
			// Lines already queued were taken before the rotation: they go to the old
			// file first, so none is lost or split between the two.
			for drained := false; !drained; {
				select {
				case b := <-l.queue:
					w.Write(*b)
					*b = (*b)[:0]
					lineBufs.Put(b)
				default:
					drained = true
				}
			}
			w.Flush()
			f, err := openLogFile(l.cfg.Path)
			if err == nil {
				l.closer.Close()
				l.out, l.closer = f, f
				w.Reset(f)
			}
			answer <- err
		}
	}
}

// close stops the writer after it has written every queued line.
func (l *accessLog) close() {
	if l == nil {
		return
	}
	close(l.queue)
	<-l.done
}

// entry is what one access log line says.
type entry struct {
	start    time.Time
	client   netip.Addr
	route    string
	upstream string
	listener string
	proto    Proto
	limit    string        // the limit that rejected the request, if one did
	upTime   time.Duration // the upstream exchanges' time, when the log asks for it
	timeUp   bool          // measure upTime (accessLog.upstreamTime)
}

// log formats and queues one line; it never blocks.
func (l *accessLog) log(ctx *fasthttp.RequestCtx, e *entry) {
	bp := lineBufs.Get().(*[]byte)
	b := (*bp)[:0]
	req, resp := &ctx.Request, &ctx.Response
	dur := time.Since(e.start)
	if l.cfg.Parts != nil {
		b = l.appendTemplate(b, ctx, e, dur)
	} else if l.cfg.Format == "text" {
		b = e.client.AppendTo(b)
		b = append(b, " - - ["...)
		b = e.start.AppendFormat(b, "02/Jan/2006:15:04:05 -0700")
		b = append(b, "] \""...)
		b = appendText(b, req.Header.Method())
		b = append(b, ' ')
		b = appendText(b, req.Header.RequestURI())
		b = append(append(append(b, ' '), serverProtocol(e.proto)...), `" `...)
		b = strconv.AppendInt(b, int64(resp.StatusCode()), 10)
		b = append(b, ' ')
		b = strconv.AppendInt(b, bodySize(resp), 10)
		b = append(b, ' ')
		b = strconv.AppendFloat(b, dur.Seconds(), 'f', 6, 64)
		b = append(b, ' ')
		b = appendText(b, e.route)
		b = append(b, ' ')
		b = appendText(b, req.Header.Peek(hdrRequestID))
		b = append(b, ' ')
		b = appendText(b, e.listener)
		b = append(b, '\n')
	} else {
		b = append(b, `{"ts":"`...)
		b = e.start.UTC().AppendFormat(b, time.RFC3339Nano)
		b = append(b, `","client":"`...)
		b = e.client.AppendTo(b)
		b = append(b, `","method":"`...)
		b = appendJSON(b, req.Header.Method())
		b = append(b, `","host":"`...)
		b = appendJSON(b, req.Header.Host())
		b = append(b, `","uri":"`...)
		b = appendJSON(b, req.Header.RequestURI())
		b = append(b, `","status":`...)
		b = strconv.AppendInt(b, int64(resp.StatusCode()), 10)
		b = append(b, `,"bytes":`...)
		b = strconv.AppendInt(b, bodySize(resp), 10)
		b = append(b, `,"duration_ms":`...)
		b = strconv.AppendFloat(b, float64(dur.Microseconds())/1000, 'f', 3, 64)
		b = append(b, `,"route":"`...)
		b = appendJSON(b, e.route)
		b = append(b, `","upstream":"`...)
		b = appendJSON(b, e.upstream)
		b = append(b, `","request_id":"`...)
		b = appendJSON(b, req.Header.Peek(hdrRequestID))
		b = append(b, `","listener":"`...)
		b = appendJSON(b, e.listener)
		b = append(b, `","protocol":"`...)
		b = append(b, e.proto.String()...)
		b = append(b, "\"}\n"...)
	}
	*bp = b
	select {
	case l.queue <- bp:
	default:
		*bp = b[:0]
		lineBufs.Put(bp)
		l.dropped.Inc()
	}
}

// appendTemplate appends the line of a template (format "combined" or a template).
func (l *accessLog) appendTemplate(b []byte, ctx *fasthttp.RequestCtx, e *entry, dur time.Duration) []byte {
	req, resp := &ctx.Request, &ctx.Response
	dash := func(b, v []byte) []byte {
		if len(v) == 0 {
			return append(b, '-')
		}
		return appendText(b, v)
	}
	for _, p := range l.cfg.Parts {
		switch p.Var {
		case "":
			b = append(b, p.Text...)
		case "remote_addr":
			b = e.client.AppendTo(b)
		case "remote_user":
			b = append(b, '-')
		case "time_local":
			b = e.start.AppendFormat(b, "02/Jan/2006:15:04:05 -0700")
		case "time_iso8601":
			b = e.start.AppendFormat(b, time.RFC3339)
		case "msec":
			b = strconv.AppendFloat(b, float64(e.start.UnixMilli())/1000, 'f', 3, 64)
		case "request":
			b = appendText(b, req.Header.Method())
			b = append(b, ' ')
			b = appendText(b, req.Header.RequestURI())
			b = append(b, ' ')
			b = append(b, serverProtocol(e.proto)...)
		case "request_method":
			b = appendText(b, req.Header.Method())
		case "request_uri":
			b = appendText(b, req.Header.RequestURI())
		case "uri":
			b = appendText(b, req.URI().PathOriginal())
		case "args":
			b = appendText(b, req.URI().QueryString())
		case "server_protocol":
			b = append(b, serverProtocol(e.proto)...)
		case "host":
			b = dash(b, req.Header.Host())
		case "status":
			b = strconv.AppendInt(b, int64(resp.StatusCode()), 10)
		case "body_bytes_sent":
			b = strconv.AppendInt(b, bodySize(resp), 10)
		case "request_time":
			b = strconv.AppendFloat(b, dur.Seconds(), 'f', 3, 64)
		case "upstream_addr":
			b = dash(b, []byte(e.upstream))
		case "upstream_response_time":
			if e.upstream == "" {
				b = append(b, '-')
			} else {
				b = strconv.AppendFloat(b, e.upTime.Seconds(), 'f', 3, 64)
			}
		case "request_id":
			b = dash(b, req.Header.Peek(hdrRequestID))
		case "http_":
			b = dash(b, req.Header.Peek(p.Header))
		case "route":
			b = dash(b, []byte(e.route))
		case "cell":
			b = dash(b, resp.Header.PeekBytes(cellHeader))
		case "cache":
			b = dash(b, resp.Header.Peek("X-Cache"))
		case "limit":
			b = dash(b, []byte(e.limit))
		case "listener":
			b = dash(b, []byte(e.listener))
		}
	}
	return append(b, '\n')
}

func serverProtocol(p Proto) string {
	switch p {
	case ProtoH2:
		return "HTTP/2.0"
	case ProtoH3:
		return "HTTP/3.0"
	}
	return "HTTP/1.1"
}

// bodySize is the size of the answer's body; for a streamed one its Content-Length,
// or 0 when not known yet (never Body(), which would read the stream into memory).
func bodySize(resp *fasthttp.Response) int64 {
	if resp.IsBodyStream() {
		return int64(max(resp.Header.ContentLength(), 0))
	}
	return int64(len(resp.Body()))
}

// appendJSON appends s as the inside of a JSON string.
func appendJSON[T string | []byte](b []byte, s T) []byte {
	const hex = "0123456789abcdef"
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20 || c == 0x7f:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&15])
		default:
			b = append(b, c)
		}
	}
	return b
}

// appendText appends s with control characters and quotes escaped, so that one
// request is always one line.
func appendText[T string | []byte](b []byte, s T) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c == 0x7f || c == '"' {
			b = append(b, '\\', 'x', "0123456789abcdef"[c>>4], "0123456789abcdef"[c&15])
			continue
		}
		b = append(b, c)
	}
	return b
}
