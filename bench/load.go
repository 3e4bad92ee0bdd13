package main

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// IDs yields the per-request numbers substituted for {user} and {item}. The zero
// value always yields 0. An IDs is safe for concurrent use by the workers of one run.
type IDs struct {
	mode   idMode
	lo, hi uint64
	next   atomic.Uint64
}

type idMode int

const (
	idFixed  idMode = iota // always lo
	idRandom               // uniform in [lo, hi]
	idSeq                  // lo, lo+1, lo+2, …: every request a new id
	idCycle                // lo, lo+1, …, hi, lo, …
)

// ParseIDs reads an id spec: "42" (always 42), "1-1000" (uniform random in the
// range, both ends included), "cycle:1-1000" (the range in order, again and again),
// "seq" or "seq:5000" (distinct, counting up from 1 or 5000).
func ParseIDs(s string) (*IDs, error) {
	s = strings.TrimSpace(s)
	switch {
	case strings.HasPrefix(s, "cycle:"):
		g, err := ParseIDs(s[len("cycle:"):])
		if err != nil || g.mode != idRandom {
			return nil, fmt.Errorf("bad id spec %q: want cycle:LO-HI", s)
		}
		g.mode = idCycle
		return g, nil
	case s == "seq":
		return &IDs{mode: idSeq, lo: 1}, nil
	case strings.HasPrefix(s, "seq:"):
		lo, err := strconv.ParseUint(s[4:], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("bad id spec %q: %w", s, err)
		}
		return &IDs{mode: idSeq, lo: lo}, nil
	case strings.Contains(s, "-"):
		a, b, _ := strings.Cut(s, "-")
		lo, err1 := strconv.ParseUint(a, 10, 64)
		hi, err2 := strconv.ParseUint(b, 10, 64)
		if err1 != nil || err2 != nil || hi < lo {
			return nil, fmt.Errorf("bad id range %q: want LO-HI with LO <= HI", s)
		}
		return &IDs{mode: idRandom, lo: lo, hi: hi}, nil
	default:
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("bad id spec %q: want N, LO-HI, seq or seq:N", s)
		}
		return &IDs{mode: idFixed, lo: v}, nil
	}
}

// pick returns the next id; rng is the calling worker's own generator.
func (g *IDs) pick(rng *rand.Rand) uint64 {
	if g == nil {
		return 0
	}
	switch g.mode {
	case idRandom:
		return g.lo + rng.Uint64N(g.hi-g.lo+1)
	case idSeq:
		return g.lo + g.next.Add(1) - 1
	case idCycle:
		return g.lo + (g.next.Add(1)-1)%(g.hi-g.lo+1)
	}
	return g.lo
}

// Template is a path or header value with placeholders {user}, {item} and {seq}
// (the request's number within the run). It is immutable and safe for concurrent use.
type Template struct {
	parts []tplPart
}

type tplPart struct {
	lit string
	v   byte // 0: literal; 'u', 'i', 's': a placeholder
}

// ParseTemplate splits s into literals and placeholders; an unknown {name} is an error.
func ParseTemplate(s string) (Template, error) {
	var t Template
	for s != "" {
		i := strings.IndexByte(s, '{')
		if i < 0 {
			t.parts = append(t.parts, tplPart{lit: s})
			break
		}
		if i > 0 {
			t.parts = append(t.parts, tplPart{lit: s[:i]})
		}
		j := strings.IndexByte(s[i:], '}')
		if j < 0 {
			return Template{}, fmt.Errorf("template %q: unclosed {", s)
		}
		switch name := s[i+1 : i+j]; name {
		case "user":
			t.parts = append(t.parts, tplPart{v: 'u'})
		case "item":
			t.parts = append(t.parts, tplPart{v: 'i'})
		case "seq":
			t.parts = append(t.parts, tplPart{v: 's'})
		default:
			return Template{}, fmt.Errorf("template %q: unknown placeholder {%s} (want user, item or seq)", s, name)
		}
		s = s[i+j+1:]
	}
	return t, nil
}

// Append appends the template filled with the given values to dst.
func (t Template) Append(dst []byte, user, item, seq uint64) []byte {
	for _, p := range t.parts {
		switch p.v {
		case 0:
			dst = append(dst, p.lit...)
		case 'u':
			dst = strconv.AppendUint(dst, user, 10)
		case 'i':
			dst = strconv.AppendUint(dst, item, 10)
		case 's':
			dst = strconv.AppendUint(dst, seq, 10)
		}
	}
	return dst
}

// Header is one request header whose value is a Template.
type Header struct {
	Name  string
	Value Template
}

// ParseHeader reads "Name: value-template".
func ParseHeader(s string) (Header, error) {
	name, val, ok := strings.Cut(s, ":")
	if !ok || strings.TrimSpace(name) == "" {
		return Header{}, fmt.Errorf("bad header %q: want \"Name: value\"", s)
	}
	t, err := ParseTemplate(strings.TrimSpace(val))
	if err != nil {
		return Header{}, err
	}
	return Header{Name: strings.TrimSpace(name), Value: t}, nil
}

// Expect says what a correct answer looks like; a run counts the answers that match
// and keeps the first one that does not, so a report can tell a wrong answer from a
// fast one.
type Expect struct {
	Status int    // wanted status; 0: any
	Header string // a response header that must be present; "" : none
	Value  string // its wanted value; "": any non-empty value
}

func (e Expect) String() string {
	s := "any status"
	if e.Status != 0 {
		s = "status " + strconv.Itoa(e.Status)
	}
	if e.Header != "" {
		if e.Value != "" {
			s += " with " + e.Header + ": " + e.Value
		} else {
			s += " with a " + e.Header + " header"
		}
	}
	return s
}

func (e Expect) match(resp *fasthttp.Response) bool {
	if e.Status != 0 && resp.StatusCode() != e.Status {
		return false
	}
	if e.Header != "" {
		v := resp.Header.Peek(e.Header)
		if len(v) == 0 || (e.Value != "" && string(v) != e.Value) {
			return false
		}
	}
	return true
}

// Load is one load run against one address. Fill it, then call Run once.
type Load struct {
	Addr     string   // "host:port" of the server
	Method   string   // default GET
	Path     Template // request path and query
	Headers  []Header // extra headers
	Body     []byte   // request body, sent as is
	Users    *IDs     // values of {user}; nil: 0
	Items    *IDs     // values of {item}; nil: 0
	Conns    int      // connections (and workers); default 64
	Rate     float64  // requests per second; 0: closed loop (each connection sends as soon as its answer came)
	Duration time.Duration
	Timeout  time.Duration // per request; default 5s
	Expect   Expect
	Progress *Progress // nil: silent
}

// Result is what one Load run measured. Latencies of an open-loop run are taken
// from the intended send time, so time a request spent waiting for a free
// connection counts (no coordinated omission).
type Result struct {
	Requests int64         // answers received
	Errors   int64         // requests that got no answer (timeout, refused, …)
	Unsent   int64         // open loop: scheduled requests still queued when the run gave up
	Matched  int64         // answers that matched Expect
	InWindow int64         // answers that arrived within Duration of the start
	Window   time.Duration // the Load's Duration
	Elapsed  time.Duration // from start to the last answer
	Status   map[int]int64 // answers by status code
	Hist     *Histogram    // latency of every answer and error
	Mismatch string        // the first answer that did not match Expect
	FirstErr string        // the first error
}

// RPS returns answers per second within the run's window, so that a straggler
// answered after the window does not stretch the time base.
func (r *Result) RPS() float64 {
	if r.Window <= 0 {
		return 0
	}
	return float64(r.InWindow) / r.Window.Seconds()
}

// run is what the workers of one run share: its window, the counts the progress line
// shows, and the first error and the first unexpected answer any of them saw.
type run struct {
	start, end time.Time
	window     time.Duration
	expect     Expect
	done       atomic.Int64 // requests ended, answered or not
	errsSeen   atomic.Int64
	mu         sync.Mutex // guards what follows
	mismatch   string
	firstErr   string
	workers    []*worker
}

// newRun starts the clock of a run of the given window, answers checked against expect.
func newRun(window time.Duration, expect Expect) *run {
	start := time.Now()
	return &run{start: start, end: start.Add(window), window: window, expect: expect}
}

// work runs n workers, each loop(w, wk, rng) with its own generator, shows progress
// (if p is not nil) while they run, and returns what they counted once all returned.
func (r *run) work(n int, p *Progress, loop func(w int, wk *worker, rng *rand.Rand)) *Result {
	if p != nil {
		p.begin(r.start, r.window, &r.done, &r.errsSeen)
		defer p.finish()
	}
	r.workers = make([]*worker, n)
	var wg sync.WaitGroup
	for w := range r.workers {
		wk := &worker{run: r, hist: NewHistogram()}
		r.workers[w] = wk
		wg.Add(1)
		go func() {
			defer wg.Done()
			loop(w, wk, rand.New(rand.NewPCG(uint64(w)+1, uint64(r.start.UnixNano()))))
		}()
	}
	wg.Wait()

	res := &Result{Status: map[int]int64{}, Hist: NewHistogram(), Mismatch: r.mismatch, FirstErr: r.firstErr, Window: r.window}
	var last time.Time
	for _, wk := range r.workers {
		res.Hist.Merge(wk.hist)
		res.Requests += wk.reqs
		res.Errors += wk.errs
		res.Matched += wk.matched
		res.InWindow += wk.inWin
		for sc, c := range wk.status {
			if c > 0 {
				res.Status[sc] += c
			}
		}
		if wk.last.After(last) {
			last = wk.last
		}
	}
	if last.IsZero() {
		last = time.Now()
	}
	res.Elapsed = last.Sub(r.start)
	return res
}

// worker is what one worker of a run counts; only that worker touches it until the
// run's workers have all returned.
type worker struct {
	run     *run
	hist    *Histogram
	status  [600]int64
	reqs    int64
	errs    int64
	matched int64
	inWin   int64
	last    time.Time
}

// record counts a request sent at t0 and ended at now: failed with err, or (err nil)
// answered with resp. It does not allocate unless it keeps the run's first error or
// unexpected answer.
func (wk *worker) record(t0, now time.Time, resp *fasthttp.Response, err error) {
	r := wk.run
	wk.hist.Record(now.Sub(t0))
	wk.last = now
	if err != nil {
		wk.errs++
		r.errsSeen.Add(1)
		if wk.errs == 1 {
			r.mu.Lock()
			if r.firstErr == "" {
				r.firstErr = err.Error()
			}
			r.mu.Unlock()
		}
	} else {
		wk.reqs++
		if !now.After(r.end) {
			wk.inWin++
		}
		if sc := resp.StatusCode(); sc >= 0 && sc < len(wk.status) {
			wk.status[sc]++
		}
		if r.expect.match(resp) {
			wk.matched++
		} else if wk.reqs-wk.matched == 1 {
			r.mu.Lock()
			if r.mismatch == "" {
				r.mismatch = describe(resp)
			}
			r.mu.Unlock()
		}
	}
	r.done.Add(1)
}

// Run sends the load and returns what it measured. It returns an error only when
// the Load is malformed; failed requests are counted in the Result.
func (l *Load) Run() (*Result, error) {
	if l.Addr == "" || l.Duration <= 0 {
		return nil, errors.New("load needs an address and a positive duration")
	}
	conns := l.Conns
	if conns <= 0 {
		conns = 64
	}
	timeout := l.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	method := l.Method
	if method == "" {
		method = fasthttp.MethodGet
	}
	client := &fasthttp.HostClient{
		Addr:                          l.Addr,
		MaxConns:                      conns,
		MaxConnWaitTimeout:            timeout,
		ReadTimeout:                   timeout,
		WriteTimeout:                  timeout,
		MaxIdleConnDuration:           time.Minute,
		NoDefaultUserAgentHeader:      true,
		DisableHeaderNamesNormalizing: true,
		DisablePathNormalizing:        true,
		ReadBufferSize:                16 << 10,
	}
	defer client.CloseIdleConnections()

	var seq atomic.Uint64
	r := newRun(l.Duration, l.Expect)
	start, end := r.start, r.end
	giveUp := end.Add(2 * timeout)
	var interval float64
	if l.Rate > 0 {
		interval = float64(time.Second) / l.Rate
	}
	res := r.work(conns, l.Progress, func(_ int, wk *worker, rng *rand.Rand) {
		req := fasthttp.AcquireRequest()
		resp := fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		var buf []byte
		for {
			n := seq.Add(1) - 1
			var intended time.Time
			if interval > 0 {
				intended = start.Add(time.Duration(float64(n) * interval))
				if !intended.Before(end) {
					return
				}
				if wait := time.Until(intended); wait > 0 {
					time.Sleep(wait)
				}
			} else {
				intended = time.Now()
				if !intended.Before(end) {
					return
				}
			}
			user, item := l.Users.pick(rng), l.Items.pick(rng)
			req.Reset()
			req.Header.SetMethod(method)
			req.Header.SetHost(l.Addr)
			buf = l.Path.Append(buf[:0], user, item, n)
			req.SetRequestURIBytes(buf)
			for _, h := range l.Headers {
				buf = h.Value.Append(buf[:0], user, item, n)
				req.Header.SetBytesV(h.Name, buf)
			}
			if l.Body != nil {
				req.SetBodyRaw(l.Body)
			}
			err := client.DoTimeout(req, resp, timeout)
			now := time.Now()
			wk.record(intended, now, resp, err)
			if interval > 0 && now.After(giveUp) {
				return
			}
		}
	})
	if interval > 0 {
		if scheduled := int64(l.Duration.Seconds() * l.Rate); scheduled > res.Requests+res.Errors {
			res.Unsent = scheduled - res.Requests - res.Errors
		}
	}
	return res, nil
}

// describe renders a response briefly: status, the headers a reader checks, and the
// start of the body.
func describe(resp *fasthttp.Response) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d", resp.StatusCode())
	for _, h := range []string{"X-Cache", "X-Edge-Cell", "Retry-After", "Content-Type"} {
		if v := resp.Header.Peek(h); len(v) > 0 {
			fmt.Fprintf(&b, " %s: %s;", h, v)
		}
	}
	body := resp.Body()
	if len(body) > 100 {
		body = append(body[:100:100], "…"...)
	}
	body = bytes.ReplaceAll(body, []byte("\n"), []byte(" "))
	fmt.Fprintf(&b, " body %q", body)
	return b.String()
}
