package config

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// DefaultListener is the name the top-level listen goes by in metrics, the access
// log, GET /listeners and route matches (match { listener = "default" }). No
// listener block may take it.
const DefaultListener = "default"

// The protocols a listener may serve (its protocols list).
const (
	ProtoHTTP1 = "http/1.1"
	ProtoH2    = "h2"  // HTTP/2 over TLS, chosen by ALPN
	ProtoH2C   = "h2c" // HTTP/2 over plain TCP, by prior knowledge only (never Upgrade: h2c)
	ProtoH3    = "h3"  // HTTP/3 over QUIC on UDP at the same address (TLS listeners only)
)

// Listener is a listener "NAME" block: one more address that runs the whole funnel,
// beside the top-level listen. A reload may add, remove or change listener blocks;
// see docs/tls.md.
type Listener struct {
	Name    string
	Address string // address: "host:port"; required; unique among listeners and listen

	// Protocols (protocols) is what the listener serves. On TLS it is the ALPN offer, in
	// order: default ["h2", "http/1.1"]; "h3" adds HTTP/3 over QUIC on UDP at the same
	// address (advertised with Alt-Svc on the TCP answers; needs "h2" or "http/1.1"
	// beside it, its place in the list does not matter). On plain TCP: "http/1.1"
	// (default) and "h2c" (HTTP/2 by prior knowledge). At least one.
	Protocols []string

	TLS *TLS // tls block; nil: plain TCP

	// HSTS (hsts) is the max-age of the Strict-Transport-Security header added to every
	// answer of a TLS listener, written as a duration ("365d", "8760h"); 0 (default):
	// none. Only on TLS listeners (browsers ignore it over plain HTTP).
	HSTS time.Duration
	// HSTSSubdomains (hsts_include_subdomains) adds includeSubDomains; default false.
	HSTSSubdomains bool

	// HTTPSRedirect (https_redirect) answers every request with 308 to the same host and
	// target on https (the port of the first TLS listener when it is not 443). Plain
	// listeners only; default false.
	HTTPSRedirect bool

	// HandshakeTimeout (handshake_timeout): a TLS handshake, or on an h2c listener the
	// first bytes that tell HTTP/2 from HTTP/1.1, must arrive within; default 10s.
	HandshakeTimeout time.Duration

	HTTP2 HTTP2 // http2 block: bounds of HTTP/2 connections (h2 and h2c)
	HTTP3 HTTP3 // http3 block: bounds of HTTP/3 (QUIC) connections; only with "h3"

	// ProxyProtocol (proxy_protocol): every connection starts with a PROXY protocol
	// header (v1 or v2), read before TLS; accepted only from trusted_proxies (others are
	// closed before a byte past the header is read). Its address is the client for
	// everything after: blacklist, limits, cells, X-Forwarded-For, logs. Default false.
	ProxyProtocol bool

	Pos hcl.Range
}

// TLS is the tls block of a listener.
type TLS struct {
	// Certificates (certificate blocks, repeated) are served by SNI: the certificate whose
	// names match the client's server name (exact, then wildcard), else the first one.
	// An ECDSA and an RSA certificate for the same names may stand side by side: ECDSA
	// goes to clients that support it. At least one.
	Certificates []Certificate
	MinVersion   string // min_version: "1.2" (default) or "1.3"
	ACME         *ACME  // acme block: certificates ordered and renewed automatically; nil: files only
	Pos          hcl.Range
}

// ACME is the acme block of a listener's tls: a certificate for Domains obtained and
// renewed from an RFC 8555 server, shared by every node with storage "redis"
// (docs/acme.md). Certificate files and an acme block may stand side by side: the ACME
// certificate answers its domains, the files the other names.
type ACME struct {
	Domains   []string // domains: the names of the certificate; required
	Email     string   // email: the ACME account's contact; required
	Directory string   // directory: the ACME server; default Let's Encrypt production
	CARoots   []string // ca_roots: PEM files of CAs to trust for the ACME server's own HTTPS (a private server); relative to the config file
	Storage   string   // storage: "state_dir" (default: files under state_dir/acme) or "redis" (the seckill block's Redis: one order for the whole cluster)
	Pos       hcl.Range
}

// LetsEncrypt is the default ACME directory.
const LetsEncrypt = "https://acme-v02.api.letsencrypt.org/directory"

// Certificate is a certificate block: PEM files, re-read on every reload. A relative
// path is taken from the directory of the config file.
type Certificate struct {
	CertFile string // cert_file: the chain, leaf first; required
	KeyFile  string // key_file: its private key (readable by edge's user only); required
	Pos      hcl.Range
}

// HTTP2 bounds a listener's HTTP/2 connections. Zero fields take the defaults.
type HTTP2 struct {
	MaxConcurrentStreams int           // max_concurrent_streams: streams at once per connection; default 128
	InitialWindowSize    int64         // initial_window_size: receive window per stream; default 256KB
	ConnWindowSize       int64         // conn_window_size: receive window per connection; default 1MB
	IdleTimeout          time.Duration // idle_timeout: a connection with no stream open this long gets GOAWAY; default the top-level idle_timeout
	PingInterval         time.Duration // ping_interval: silence while streams are open before edge sends PING; default 15s
	PingTimeout          time.Duration // ping_timeout: a PING unanswered this long closes the connection; default 15s
	MaxControlFrames     int           // max_control_frames: budget of resets, SETTINGS, PINGs and empty frames per connection (refilled at a tenth per second) before GOAWAY ENHANCE_YOUR_CALM; default 1000
}

// HTTP3 bounds a listener's HTTP/3 side (protocol "h3"): QUIC connections on UDP at the
// listener's address. Zero fields take the defaults. See docs/tls.md.
type HTTP3 struct {
	MaxStreams    int           // max_streams: request streams open at once per connection; default 100
	MaxConns      int           // max_conns: QUIC connections open at once (handshaking included), new ones refused beyond; default 10000
	MaxConnsPerIP int           // max_conns_per_ip: the same per client IP address; default 100
	IdleTimeout   time.Duration // idle_timeout: a connection quiet this long is closed; default 60s
	// RetryThreshold (retry_threshold): new connections per second above which clients
	// must prove their address with a QUIC Retry round trip before edge does any TLS
	// work for them (spoofed sources then cost one small packet each); default 1000;
	// 0: always.
	RetryThreshold int
	// EarlyData (early_data) accepts 0-RTT from resuming clients: safe methods run
	// at once, others wait for the handshake to complete (a replayed 0-RTT POST never
	// reaches a route); default false.
	EarlyData bool
	Pos       hcl.Range
}

// DefaultRetryThreshold is the default retry_threshold of an http3 block.
const DefaultRetryThreshold = 1000

func decodeHTTP3(b *body, blk *hclsyntax.Block) HTTP3 {
	h := HTTP3{RetryThreshold: DefaultRetryThreshold, Pos: blk.DefRange()}
	b.integer("max_streams", &h.MaxStreams, 1)
	b.integer("max_conns", &h.MaxConns, 1)
	b.integer("max_conns_per_ip", &h.MaxConnsPerIP, 1)
	b.duration("idle_timeout", &h.IdleTimeout)
	b.integer("retry_threshold", &h.RetryThreshold, 0)
	b.boolean("early_data", &h.EarlyData)
	b.finish()
	return h
}

func decodeListener(top *body, blk *hclsyntax.Block) *Listener {
	l := &Listener{Name: blk.Labels[0], Pos: blk.DefRange(), HandshakeTimeout: 10 * time.Second}
	what := fmt.Sprintf("listener %q", l.Name)
	b := top.child(blk, what)
	if l.Name == DefaultListener {
		b.ps.add(blk.LabelRanges[0], "listener name %q is the top-level listen's; pick another", DefaultListener)
	}
	if r, ok := b.str("address", &l.Address); ok {
		checkHostPort(b.ps, r, what+" address", l.Address)
	} else if !b.has("address") {
		b.ps.add(blk.DefRange(), "%s needs address = \"host:port\"", what)
	}
	if tblk := b.block("tls"); tblk != nil {
		l.TLS = decodeTLS(b.child(tblk, what+" tls"), tblk)
	}
	protoRanges, hasProtos := b.strList("protocols", &l.Protocols)
	if !hasProtos {
		l.Protocols = []string{ProtoHTTP1}
		if l.TLS != nil {
			l.Protocols = []string{ProtoH2, ProtoHTTP1}
		}
	} else {
		allowed := []string{ProtoHTTP1, ProtoH2C}
		if l.TLS != nil {
			allowed = []string{ProtoH2, ProtoHTTP1, ProtoH3}
		}
		seen := map[string]bool{}
		for i, p := range l.Protocols {
			switch {
			case !contains(allowed, p):
				kind := "a plain"
				if l.TLS != nil {
					kind = "a TLS"
				}
				b.ps.add(protoRanges[i], "protocol %q cannot be served on %s listener; use %s", p, kind, quoteList(allowed))
			case seen[p]:
				b.ps.add(protoRanges[i], "protocol %q is listed twice", p)
			}
			seen[p] = true
		}
		switch {
		case len(l.Protocols) == 0:
			b.ps.add(b.rangeOf("protocols"), "%s needs at least one protocol", what)
		case seen[ProtoH3] && !seen[ProtoH2] && !seen[ProtoHTTP1]:
			b.ps.add(b.rangeOf("protocols"), "%s: \"h3\" needs \"h2\" or \"http/1.1\" beside it: browsers learn of HTTP/3 from the Alt-Svc of a TCP answer", what)
		}
	}
	var hsts string
	if r, ok := b.str("hsts", &hsts); ok {
		{
			d, err := ParseLongDuration(hsts)
			switch {
			case err != nil:
				b.ps.add(r, "hsts: %v", err)
			case l.TLS == nil:
				b.ps.add(r, "hsts needs a tls block: browsers ignore Strict-Transport-Security over plain HTTP")
			default:
				l.HSTS = d
			}
		}
	}
	b.boolean("hsts_include_subdomains", &l.HSTSSubdomains)
	b.boolean("https_redirect", &l.HTTPSRedirect)
	if l.HTTPSRedirect && l.TLS != nil {
		b.ps.add(b.rangeOf("https_redirect"), "https_redirect is for plain listeners; this one already serves TLS")
	}
	b.duration("handshake_timeout", &l.HandshakeTimeout)
	b.boolean("proxy_protocol", &l.ProxyProtocol)
	if hblk := b.block("http2"); hblk != nil {
		l.HTTP2 = decodeHTTP2(b.child(hblk, what+" http2"))
	}
	l.HTTP3 = HTTP3{RetryThreshold: DefaultRetryThreshold}
	if hblk := b.block("http3"); hblk != nil {
		l.HTTP3 = decodeHTTP3(b.child(hblk, what+" http3"), hblk)
		if !contains(l.Protocols, ProtoH3) {
			b.ps.add(hblk.DefRange(), "%s: an http3 block needs \"h3\" in protocols", what)
		}
	}
	b.finish()
	return l
}

func decodeTLS(b *body, blk *hclsyntax.Block) *TLS {
	t := &TLS{MinVersion: "1.2", Pos: blk.DefRange()}
	for _, cblk := range b.blocks("certificate", 0) {
		cb := b.child(cblk, "certificate")
		c := Certificate{Pos: cblk.DefRange()}
		if _, ok := cb.str("cert_file", &c.CertFile); !ok && !cb.has("cert_file") {
			b.ps.add(cblk.DefRange(), "certificate needs cert_file = \"….pem\"")
		}
		if _, ok := cb.str("key_file", &c.KeyFile); !ok && !cb.has("key_file") {
			b.ps.add(cblk.DefRange(), "certificate needs key_file = \"….key\"")
		}
		cb.finish()
		c.CertFile, c.KeyFile = besideConfig(cblk.DefRange().Filename, c.CertFile), besideConfig(cblk.DefRange().Filename, c.KeyFile)
		t.Certificates = append(t.Certificates, c)
	}
	if ablk := b.block("acme"); ablk != nil {
		t.ACME = decodeACME(b.child(ablk, "acme"), ablk)
	}
	if len(t.Certificates) == 0 && t.ACME == nil {
		b.ps.add(blk.DefRange(), "tls needs at least one certificate { cert_file = \"…\", key_file = \"…\" } block or an acme { domains = […] } block")
	}
	b.oneOf("min_version", &t.MinVersion, "1.2", "1.3")
	b.finish()
	return t
}

func decodeACME(b *body, blk *hclsyntax.Block) *ACME {
	a := &ACME{Directory: LetsEncrypt, Storage: "state_dir", Pos: blk.DefRange()}
	if rs, ok := b.strList("domains", &a.Domains); ok {
		if len(a.Domains) == 0 {
			b.ps.add(b.rangeOf("domains"), "acme needs at least one domain")
		}
		for i, d := range a.Domains {
			a.Domains[i] = strings.ToLower(d)
			if msg := checkSNIPattern(a.Domains[i]); msg != "" {
				b.ps.add(rs[i], "acme domain %q: %s", d, msg)
			}
		}
	} else if !b.has("domains") {
		b.ps.add(blk.DefRange(), "acme needs domains = [\"…\"]")
	}
	if _, ok := b.str("email", &a.Email); !ok && !b.has("email") {
		b.ps.add(blk.DefRange(), "acme needs email = \"…\" (the ACME account's contact: expiry warnings go there)")
	}
	if r, ok := b.str("directory", &a.Directory); ok && !strings.HasPrefix(a.Directory, "https://") {
		b.ps.add(r, "acme directory %q must be an https:// URL", a.Directory)
	}
	if rs, ok := b.strList("ca_roots", &a.CARoots); ok {
		for i := range a.CARoots {
			a.CARoots[i] = besideConfig(rs[i].Filename, a.CARoots[i])
		}
	}
	b.oneOf("storage", &a.Storage, "state_dir", "redis")
	b.finish()
	return a
}

func decodeHTTP2(b *body) HTTP2 {
	var h HTTP2
	b.integer("max_concurrent_streams", &h.MaxConcurrentStreams, 1)
	b.size("initial_window_size", &h.InitialWindowSize)
	if h.InitialWindowSize > 1<<31-1 {
		b.ps.add(b.rangeOf("initial_window_size"), "initial_window_size must be below 2GB")
	}
	b.size("conn_window_size", &h.ConnWindowSize)
	if h.ConnWindowSize > 1<<31-1 {
		b.ps.add(b.rangeOf("conn_window_size"), "conn_window_size must be below 2GB")
	}
	b.duration("idle_timeout", &h.IdleTimeout)
	b.duration("ping_interval", &h.PingInterval)
	b.duration("ping_timeout", &h.PingTimeout)
	b.integer("max_control_frames", &h.MaxControlFrames, 10)
	b.finish()
	return h
}

// besideConfig resolves a relative path against the directory of the config file.
func besideConfig(configFile, path string) string {
	if path == "" || filepath.IsAbs(path) {
		return path
	}
	return filepath.Join(filepath.Dir(configFile), path)
}

// ParseLongDuration reads a Go duration ("8760h") or a whole number of days ("365d").
func ParseLongDuration(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.Atoi(n)
		if err != nil || days <= 0 || days > 100*365 {
			return 0, fmt.Errorf("%q is not a duration like \"365d\" or \"8760h\"", s)
		}
		return time.Duration(days) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%q is not a duration like \"365d\" or \"8760h\"", s)
	}
	return d, nil
}

// checkListeners validates what spans listeners: unique addresses, and route matches
// that name a listener.
func (c *Config) checkListeners(ps *Problems) {
	if c.Listen == "" && len(c.Listeners) == 0 {
		ps.add(c.ListenRange, "listen is off and there is no listener block: nothing would serve clients")
	}
	byAddr := map[string]string{}
	if c.Listen != "" {
		byAddr[c.Listen] = "listen"
	}
	names := map[string]bool{DefaultListener: c.Listen != ""}
	for _, l := range c.Listeners {
		names[l.Name] = true
		if l.Address == "" || strings.HasSuffix(l.Address, ":0") { // any free port: never the same
			continue
		}
		if other, dup := byAddr[l.Address]; dup {
			ps.add(l.Pos, "listener %q: address %q is already used by %s", l.Name, l.Address, other)
			continue
		}
		byAddr[l.Address] = fmt.Sprintf("listener %q", l.Name)
	}
	for _, l := range c.Listeners {
		if l.TLS != nil && l.TLS.ACME != nil && l.TLS.ACME.Storage == "redis" && (c.Seckill == nil || c.Seckill.Redis == nil) {
			ps.add(l.TLS.ACME.Pos, "listener %q: acme storage \"redis\" uses the seckill block's Redis, and there is none", l.Name)
		}
	}
	for _, rt := range c.Routes {
		if rt.Match.Listener != "" && !names[rt.Match.Listener] {
			ps.add(rt.Pos, "route %q: listener %q is not defined", rt.Name, rt.Match.Listener)
		}
	}
}

// HTTPSPort is the port https_redirect sends browsers to: that of the first TLS
// listener, or "443" when there is none or its address cannot be read.
func (c *Config) HTTPSPort() string {
	for _, l := range c.Listeners {
		if l.TLS == nil {
			continue
		}
		if i := strings.LastIndexByte(l.Address, ':'); i >= 0 && l.Address[i+1:] != "0" {
			return l.Address[i+1:]
		}
		break
	}
	return "443"
}
