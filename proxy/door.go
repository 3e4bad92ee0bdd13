package proxy

import (
	"strconv"
	"sync"

	"github.com/edge-gw/edge/config"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
)

// Proto is the protocol a request arrived in, for metrics and the access log. The
// funnel answers alike whatever it is; upstreams always get HTTP/1.1.
type Proto uint8

// The protocols a listener hands requests in with.
const (
	ProtoHTTP1 Proto = iota // HTTP/1.x
	ProtoH2                 // HTTP/2 (h2 over TLS, or h2c)
	ProtoH3                 // HTTP/3 over QUIC
	protoCount
)

var protoNames = [protoCount]string{ProtoHTTP1: "http/1.1", ProtoH2: "h2", ProtoH3: "h3"}

// String is the protocol's name in metrics: "http/1.1", "h2" or "h3".
func (p Proto) String() string { return protoNames[p] }

// door is a listener as the funnel sees it: what the listener changes about a request.
// A snapshot has one door per listener name the proxy has ever served (a listener
// removed by a reload still drains through its door, with plain settings).
type door struct {
	id       int
	name     string
	fwdProto []byte // X-Forwarded-Proto to upstreams: "http" or "https"
	hsts     []byte // Strict-Transport-Security value; nil: none
	redirect bool   // answer 308 to https
	acme     bool   // a plain listener while ACME is configured: it answers HTTP-01 challenges (acme.go)
	// httpsPort is ":PORT" for redirects to a TLS listener on a port other than 443.
	httpsPort string
	counts    *doorCounts
}

// doorCounts are the requests of one listener by protocol; they outlive snapshots.
type doorCounts [protoCount]stripedCounter

// doorState interns listener names: a name keeps its id (and its counters) for the
// life of the Proxy, so handlers bound to an id stay valid across reloads.
type doorState struct {
	mu     sync.Mutex
	ids    map[string]int
	names  []string
	counts []*doorCounts
}

func (p *Proxy) initDoors() {
	p.doors = &doorState{ids: map[string]int{}}
	p.doorID(config.DefaultListener) // id 0: the top-level listen
	p.metrics.Reg.MustRegister(doorCollector{p.doors})
}

// doorID returns the id of listener name, assigning the next one to a new name.
func (p *Proxy) doorID(name string) int {
	d := p.doors
	d.mu.Lock()
	defer d.mu.Unlock()
	if id, ok := d.ids[name]; ok {
		return id
	}
	id := len(d.names)
	d.ids[name] = id
	d.names = append(d.names, name)
	d.counts = append(d.counts, new(doorCounts))
	return id
}

// buildDoors gives s a door for every listener name known so far; the listeners of
// cfg get their settings, the others (draining) plain ones.
func (p *Proxy) buildDoors(s *Snapshot, cfg *config.Config) {
	byName := map[string]*config.Listener{}
	for _, l := range cfg.Listeners {
		byName[l.Name] = l
		p.doorID(l.Name)
	}
	d := p.doors
	d.mu.Lock()
	defer d.mu.Unlock()
	port := ""
	if hp := cfg.HTTPSPort(); hp != "443" {
		port = ":" + hp
	}
	acme := false
	for _, l := range cfg.Listeners {
		acme = acme || l.TLS != nil && l.TLS.ACME != nil
	}
	s.doors = make([]*door, len(d.names))
	for id, name := range d.names {
		dr := &door{id: id, name: name, fwdProto: strHTTP, counts: d.counts[id], acme: acme}
		if l := byName[name]; l != nil {
			if l.TLS != nil {
				dr.fwdProto, dr.acme = strHTTPS, false
			}
			if l.HSTS > 0 {
				v := "max-age=" + strconv.FormatInt(int64(l.HSTS.Seconds()), 10)
				if l.HSTSSubdomains {
					v += "; includeSubDomains"
				}
				dr.hsts = []byte(v)
			}
			dr.redirect, dr.httpsPort = l.HTTPSRedirect, port
		}
		s.doors[id] = dr
	}
}

// door returns the door of listener id; a handler made after s was built (a listener
// added by a later reload) may ask for an id s does not know yet.
func (s *Snapshot) door(id int) *door {
	if id < len(s.doors) {
		return s.doors[id]
	}
	return s.doors[0]
}

// Handler serves one request of the top-level listen over HTTP/1.1 (listener
// "default"); ListenerHandler makes the handler of any other listener.
func (p *Proxy) Handler(ctx *fasthttp.RequestCtx) { p.serve(ctx, 0, ProtoHTTP1) }

// ListenerHandler returns the handler of listener name for requests arriving in
// proto. It stays valid across reloads, which may change the listener's settings
// (TLS, HSTS, redirect) or remove it (its requests then get plain settings while it
// drains). Safe for concurrent use.
func (p *Proxy) ListenerHandler(name string, proto Proto) fasthttp.RequestHandler {
	id := p.doorID(name)
	if id == 0 && proto == ProtoHTTP1 {
		return p.Handler
	}
	return func(ctx *fasthttp.RequestCtx) { p.serve(ctx, id, proto) }
}

var (
	strHTTPS  = []byte("https")
	hdrHSTS   = []byte("Strict-Transport-Security")
	hdrLoc    = []byte("Location")
	errNoHost = jsonError(400, "missing_host")
)

// redirectHTTPS answers 308 to the request's target on https: the same host (its
// port replaced by that of the TLS listener) and the same path and query.
func redirectHTTPS(ctx *fasthttp.RequestCtx, d *door, sc *scratch) {
	host := hostOnly(ctx.Host())
	if len(host) == 0 || !saneHost(host) {
		errNoHost.write(ctx)
		return
	}
	b := append(sc.buf[:0], "https://"...)
	if ctx.Host()[0] == '[' {
		b = append(append(append(b, '['), host...), ']')
	} else {
		b = append(b, host...)
	}
	b = append(b, d.httpsPort...)
	uri := ctx.Request.Header.RequestURI()
	if len(uri) == 0 || uri[0] != '/' { // absolute-form or "*": keep only what is safe
		uri = ctx.Path()
	}
	b = append(b, uri...)
	ctx.Response.Header.SetCanonical(hdrLoc, b)
	ctx.SetStatusCode(fasthttp.StatusPermanentRedirect)
	sc.buf = b
}

// saneHost accepts the bytes of a DNS name or an IP literal, so that a Host header
// cannot put anything else into a Location.
func saneHost(h []byte) bool {
	for _, c := range h {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == ':' || c == '_') {
			return false
		}
	}
	return true
}

// doorCollector exports edge_listener_requests_total{listener,protocol}.
type doorCollector struct{ d *doorState }

var doorDesc = prometheus.NewDesc("edge_listener_requests_total",
	"Requests by the listener they came through (\"default\" is the top-level listen) and protocol (http/1.1, h2, h3).",
	[]string{"listener", "protocol"}, nil)

func (c doorCollector) Describe(ch chan<- *prometheus.Desc) { ch <- doorDesc }

func (c doorCollector) Collect(ch chan<- prometheus.Metric) {
	c.d.mu.Lock()
	defer c.d.mu.Unlock()
	for id, name := range c.d.names {
		for proto := range protoCount {
			n := c.d.counts[id][proto].load()
			if n == 0 && proto != ProtoHTTP1 {
				continue
			}
			ch <- prometheus.MustNewConstMetric(doorDesc, prometheus.CounterValue, float64(n), name, proto.String())
		}
	}
}
