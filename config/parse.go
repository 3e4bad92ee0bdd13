package config

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

// Load reads and validates the config file at path. The error is a Problems listing
// every problem, or an error naming the file when it cannot be read.
func Load(path string) (*Config, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read config: %w", err)
	}
	return Parse(path, src, os.LookupEnv)
}

// Parse validates src, the contents of file filename; env looks up env("NAME")
// (os.LookupEnv when nil). It returns all problems at once as Problems.
func Parse(filename string, src []byte, env func(string) (string, bool)) (*Config, error) {
	var ps Problems
	f, diags := hclsyntax.ParseConfig(src, filename, hcl.InitialPos)
	if diags.HasErrors() {
		ps.addDiags(diags)
		return nil, ps.sorted()
	}
	c := &Config{File: filename, Hash: xxhash.Sum64(src)}
	top := newBody(&ps, evalContext(env), f.Body.(*hclsyntax.Body), "the top level")
	c.decodeTop(top)
	top.finish()
	if len(ps) > 0 {
		return nil, ps.sorted()
	}
	return c, nil
}

func (c *Config) decodeTop(b *body) {
	c.Listen = "127.0.0.1:8080"
	c.ShutdownTimeout = 10 * time.Second
	c.StateDir = "./state"
	c.CacheSize = 256 << 20
	c.ReadTimeout = 10 * time.Second
	c.WriteTimeout = 30 * time.Second
	c.IdleTimeout = 60 * time.Second
	c.MaxHeaderSize = 16 << 10
	c.MaxBodySize = 4 << 20
	c.MaxConns = 20000

	if r, ok := b.str("listen", &c.Listen); ok {
		c.ListenRange = r
		if c.Listen != "" { // "" turns the plain listener off (listener blocks serve)
			checkHostPort(b.ps, r, "listen", c.Listen)
		}
	}
	var proxies []string
	if ranges, ok := b.strList("trusted_proxies", &proxies); ok {
		c.TrustedProxies = parsePrefixes(b.ps, ranges, "trusted_proxies", proxies)
	}
	b.duration("shutdown_timeout", &c.ShutdownTimeout)
	b.str("state_dir", &c.StateDir)
	b.size("cache_size", &c.CacheSize)
	if c.CacheSize < 32<<20 && b.has("cache_size") {
		b.ps.add(b.rangeOf("cache_size"), "cache_size must be at least 32MB")
	}
	b.duration("read_timeout", &c.ReadTimeout)
	b.duration("write_timeout", &c.WriteTimeout)
	b.duration("idle_timeout", &c.IdleTimeout)
	b.size("max_header_size", &c.MaxHeaderSize)
	if c.MaxHeaderSize < 1024 || c.MaxHeaderSize > 1<<20 {
		b.ps.add(b.rangeOf("max_header_size"), "max_header_size must be between 1KB and 1MB")
	}
	b.size("max_body_size", &c.MaxBodySize)
	b.integer("max_conns", &c.MaxConns, 1)
	b.integer("workers", &c.Workers, 0)
	if c.Workers > 1024 {
		b.ps.add(b.rangeOf("workers"), "workers must be at most 1024, got %d", c.Workers)
	}

	c.AccessLog = decodeAccessLog(b)
	c.Admin = decodeAdmin(b)

	names := map[string]hcl.Range{}
	unique := func(kind string, blk *hclsyntax.Block) bool {
		key := kind + " " + blk.Labels[0]
		if first, dup := names[key]; dup {
			b.ps.add(blk.LabelRanges[0], "duplicate %s %q; the first is at line %d", kind, blk.Labels[0], first.Start.Line)
			return false
		}
		if !isName(blk.Labels[0]) {
			b.ps.add(blk.LabelRanges[0], "%s name %q must be letters, digits, '-' or '_'", kind, blk.Labels[0])
		}
		names[key] = blk.DefRange()
		return true
	}
	for _, blk := range b.blocks("upstream", 1) {
		if unique("upstream", blk) {
			c.Upstreams = append(c.Upstreams, decodeUpstream(b, blk))
		}
	}
	for _, blk := range b.blocks("cells", 1) {
		if unique("cells", blk) {
			c.Cells = append(c.Cells, decodeCells(b, blk))
		}
	}
	for _, blk := range b.blocks("route", 1) {
		if unique("route", blk) {
			c.Routes = append(c.Routes, decodeRoute(b, blk))
		}
	}
	for _, blk := range b.blocks("listener", 1) {
		if unique("listener", blk) {
			c.Listeners = append(c.Listeners, decodeListener(b, blk))
		}
	}
	for _, blk := range b.blocks("waiting_room", 1) {
		if unique("waiting_room", blk) {
			c.WaitingRooms = append(c.WaitingRooms, decodeWaitingRoom(b, blk))
		}
	}
	for _, blk := range b.blocks("stream", 1) {
		if unique("stream", blk) {
			c.Streams = append(c.Streams, decodeStream(b, blk))
		}
	}
	if blk := b.block("blacklist"); blk != nil {
		c.Blacklist = decodeBlacklist(b.child(blk, "blacklist"))
	}
	if blk := b.block("seckill"); blk != nil {
		c.Seckill = decodeSeckill(b.child(blk, "seckill"), blk)
	}
	if blk := b.block("cluster"); blk != nil {
		c.Cluster = decodeCluster(b.child(blk, "cluster"))
	}
	if blk := b.block("compression"); blk != nil {
		c.Compression = decodeCompression(b.child(blk, "compression"))
	}
	if blk := b.block("overload"); blk != nil {
		c.Overload = decodeOverload(b.child(blk, "overload"), blk)
	}
	if blk := b.block("tls_tickets"); blk != nil {
		c.TLSTickets = decodeTLSTickets(b.child(blk, "tls_tickets"), blk)
	}
	c.crossCheck(b.ps, names)
	c.checkListeners(b.ps)
	c.checkStreams(b.ps, names)
	c.checkWaitingRooms(b.ps)
}

func isName(s string) bool {
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '-' || ch == '_') {
			return false
		}
	}
	return s != ""
}

func checkHostPort(ps *Problems, r hcl.Range, what, addr string) bool {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		ps.add(r, "%s: %q is not host:port", what, addr)
		return false
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		ps.add(r, "%s: %q has a bad port", what, addr)
		return false
	}
	if strings.ContainsAny(host, " /") {
		ps.add(r, "%s: %q has a bad host", what, addr)
		return false
	}
	return true
}

// parsePrefixes reads IPs and CIDRs; a bare IP is a /32 (or /128).
func parsePrefixes(ps *Problems, ranges []hcl.Range, what string, in []string) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(in))
	for i, s := range in {
		p, err := ParsePrefix(s)
		if err != nil {
			ps.add(ranges[i], "%s: %v", what, err)
			continue
		}
		out = append(out, p)
	}
	return out
}

// ParsePrefix reads an IP address or a CIDR; a bare address is a full-length prefix.
// IPv4-mapped IPv6 addresses are unmapped.
func ParsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not an IP or CIDR", s)
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP or CIDR", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func decodeAccessLog(b *body) AccessLog {
	a := AccessLog{Path: "stdout", Format: "json", Buffer: 8192}
	blk := b.block("access_log")
	if blk == nil {
		return a
	}
	lb := b.child(blk, "access_log")
	a.Enabled = true
	lb.boolean("enabled", &a.Enabled)
	lb.str("path", &a.Path)
	lb.oneOf("format", &a.Format, "json", "text", "combined")
	if r, ok := lb.str("template", &a.Template); ok {
		if lb.has("format") {
			b.ps.add(r, "access_log: give format or template, not both")
		}
		var err error
		if a.Parts, err = ParseLogTemplate(a.Template); err != nil {
			b.ps.add(r, "access_log %v", err)
		}
		a.Format = "template"
	} else if a.Format == "combined" {
		a.Parts, _ = ParseLogTemplate(CombinedLog)
	}
	lb.integer("buffer", &a.Buffer, 16)
	lb.finish()
	return a
}

func decodeAdmin(b *body) Admin {
	a := Admin{Listen: "127.0.0.1:9901"}
	blk := b.block("admin")
	if blk == nil {
		return a
	}
	ab := b.child(blk, "admin")
	r, ok := ab.str("listen", &a.Listen)
	if ok {
		ok = checkHostPort(b.ps, r, "admin listen", a.Listen)
	}
	ab.str("token", &a.Token)
	ab.boolean("pprof", &a.Pprof)
	if ok && a.Token == "" && !isLoopback(a.Listen) {
		b.ps.add(r, "admin listen %q is not a loopback address, so admin needs a token (token = env(\"EDGE_ADMIN_TOKEN\"))", a.Listen)
	}
	ab.finish()
	return a
}

func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

type poolSettings struct {
	timeout, connect, keepalive *time.Duration
	maxConns                    *int
	maxResp                     *int64
	hc                          **HealthCheck
	brk                         **Breaker
	proto                       *UpstreamProtocol
}

// decodePool reads the connection settings upstream and cells blocks share.
func decodePool(b *body, s poolSettings) {
	*s.timeout, *s.connect, *s.keepalive = 5*time.Second, time.Second, 30*time.Second
	*s.maxConns, *s.maxResp = 512, 64<<20
	b.duration("timeout", s.timeout)
	b.duration("connect_timeout", s.connect)
	b.duration("keepalive_timeout", s.keepalive)
	b.integer("max_conns", s.maxConns, 1)
	b.size("max_response_size", s.maxResp)
	s.proto.Protocol = "http1"
	b.oneOf("protocol", &s.proto.Protocol, "http1", "h2c", "h2")
	b.str("tls_server_name", &s.proto.TLSServerName)
	if r, ok := b.str("tls_ca_file", &s.proto.TLSCAFile); ok {
		s.proto.TLSCAFile = besideConfig(r.Filename, s.proto.TLSCAFile)
	}
	b.oneOf("proxy_protocol", &s.proto.ProxyProtocol, "", "v1", "v2")
	if s.proto.ProxyProtocol != "" && s.proto.Protocol != "http1" {
		b.ps.add(b.rangeOf("proxy_protocol"), "proxy_protocol needs protocol = \"http1\": a multiplexed HTTP/2 connection carries many clients")
	}
	if s.proto.Protocol != "h2" && (s.proto.TLSServerName != "" || s.proto.TLSCAFile != "") {
		b.ps.add(b.rangeOf("protocol"), "tls_server_name and tls_ca_file need protocol = \"h2\"")
	}
	if blk := b.block("health_check"); blk != nil {
		hb := b.child(blk, "health_check")
		hc := &HealthCheck{Path: "/healthz", Interval: 2 * time.Second, Timeout: time.Second, Rise: 2, Fall: 3}
		if r, ok := hb.str("path", &hc.Path); ok && !strings.HasPrefix(hc.Path, "/") {
			b.ps.add(r, "health_check path must start with /")
		}
		hb.duration("interval", &hc.Interval)
		hb.duration("timeout", &hc.Timeout)
		hb.integer("rise", &hc.Rise, 1)
		hb.integer("fall", &hc.Fall, 1)
		hb.finish()
		*s.hc = hc
	}
	if blk := b.block("breaker"); blk != nil {
		*s.brk = decodeBreaker(b.child(blk, b.what+" breaker"))
	}
}

// decodeBreaker reads a breaker block; the defaults are the breaker package's.
func decodeBreaker(b *body) *Breaker {
	br := &Breaker{Window: 10 * time.Second, MinRequests: 20, FailureRatio: 0.5, SlowRatio: 0.5,
		CoolOff: 5 * time.Second, Probes: 3}
	b.duration("window", &br.Window)
	if br.Window < 10*time.Millisecond {
		b.ps.add(b.rangeOf("window"), "breaker window must be at least 10ms")
	}
	b.integer("min_requests", &br.MinRequests, 1)
	b.ratio("failure_ratio", &br.FailureRatio)
	b.ratio("slow_ratio", &br.SlowRatio)
	b.duration("slow_threshold", &br.SlowThreshold)
	b.duration("cool_off", &br.CoolOff)
	b.integer("probes", &br.Probes, 1)
	if br.Probes > 1<<20 {
		b.ps.add(b.rangeOf("probes"), "breaker probes must be at most %d", 1<<20)
	}
	b.finish()
	return br
}

// ratio reads a number in (0, 1].
func (b *body) ratio(name string, dst *float64) {
	v, r, ok := b.value(name)
	if !ok {
		return
	}
	if v.Type() != cty.Number {
		b.ps.add(r, "%s must be a number between 0 and 1", name)
		return
	}
	f, _ := v.AsBigFloat().Float64()
	if !(f > 0 && f <= 1) {
		b.ps.add(r, "%s must be above 0 and at most 1, got %v", name, f)
		return
	}
	*dst = f
}

// decodeOverload reads the overload block.
func decodeOverload(b *body, blk *hclsyntax.Block) *Overload {
	o := &Overload{Low: 0.5, Normal: 0.8}
	if !b.has("max_inflight") {
		b.ps.add(blk.DefRange(), "overload needs max_inflight = N (routed requests in flight at which even core routes are shed)")
	}
	b.integer("max_inflight", &o.MaxInflight, 1)
	b.ratio("low", &o.Low)
	b.ratio("normal", &o.Normal)
	if o.Low > o.Normal {
		b.ps.add(b.rangeOf("low"), "overload low (%v) must not be above normal (%v): low routes are shed first", o.Low, o.Normal)
	}
	b.finish()
	return o
}

func decodeServers(b *body, what string) []string {
	var servers []string
	ranges, ok := b.strList("servers", &servers)
	if !b.has("servers") {
		b.ps.add(b.b.SrcRange, "%s needs servers = [\"host:port\", …]", what)
		return nil
	}
	if ok && len(servers) == 0 {
		b.ps.add(b.rangeOf("servers"), "%s: servers must not be empty", what)
	}
	for i, s := range servers {
		checkHostPort(b.ps, ranges[i], what+" server", s)
	}
	return servers
}

func decodeUpstream(top *body, blk *hclsyntax.Block) *Upstream {
	u := &Upstream{Name: blk.Labels[0], Pos: blk.DefRange()}
	b := top.child(blk, fmt.Sprintf("upstream %q", u.Name))
	u.Servers = decodeServers(b, fmt.Sprintf("upstream %q", u.Name))
	decodePool(b, poolSettings{&u.Timeout, &u.ConnectTimeout, &u.KeepaliveTimeout, &u.MaxConns, &u.MaxResponseSize, &u.HealthCheck, &u.Breaker, &u.Proto})
	b.integer("max_inflight", &u.MaxInflight, 0)
	b.finish()
	return u
}

func decodeCells(top *body, blk *hclsyntax.Block) *Cells {
	cs := &Cells{Name: blk.Labels[0], Pos: blk.DefRange(), MissingKey: "reject"}
	what := fmt.Sprintf("cells %q", cs.Name)
	b := top.child(blk, what)
	cs.Key = b.key("key", true)
	b.str("missing_key", &cs.MissingKey)
	b.boolean("spill", &cs.Spill)
	decodePool(b, poolSettings{&cs.Timeout, &cs.ConnectTimeout, &cs.KeepaliveTimeout, &cs.MaxConns, &cs.MaxResponseSize, &cs.HealthCheck, &cs.Breaker, &cs.Proto})
	seen := map[string]bool{}
	for _, cb := range b.blocks("cell", 1) {
		c := &Cell{Name: cb.Labels[0], Weight: 1, Pos: cb.DefRange()}
		if seen[c.Name] {
			b.ps.add(cb.LabelRanges[0], "duplicate cell %q in %s", c.Name, what)
			continue
		}
		seen[c.Name] = true
		cellBody := b.child(cb, fmt.Sprintf("cell %q", c.Name))
		c.Servers = decodeServers(cellBody, fmt.Sprintf("cell %q", c.Name))
		if v, r, ok := cellBody.value("weight"); ok {
			if v.Type() != cty.Number {
				b.ps.add(r, "weight must be a number")
			} else if f, _ := v.AsBigFloat().Float64(); f <= 0 || f > 1e6 {
				b.ps.add(r, "weight must be a positive number")
			} else {
				c.Weight = f
			}
		}
		cellBody.finish()
		cs.Cells = append(cs.Cells, c)
	}
	if len(cs.Cells) == 0 {
		b.ps.add(blk.DefRange(), "%s needs at least one cell \"name\" { servers = […] } block", what)
	}
	if cs.MissingKey != "reject" && cs.MissingKey != "any" && !seen[cs.MissingKey] {
		b.ps.add(b.rangeOf("missing_key"), "missing_key must be \"reject\", \"any\" or a cell of %s, got %q", what, cs.MissingKey)
	}
	b.finish()
	return cs
}

// key reads a key expression: a string or a list of strings.
func (b *body) key(name string, required bool) Key {
	v, r, ok := b.value(name)
	if !ok {
		if required && !b.has(name) {
			b.ps.add(b.b.SrcRange, "%s needs %s = \"…\" (ip, host, header:NAME, cookie:NAME, query:NAME, path:N or const:TEXT)", b.what, name)
		}
		return Key{}
	}
	var texts []string
	switch {
	case v.Type() == cty.String:
		texts = []string{v.AsString()}
	case v.Type().IsListType() || v.Type().IsTupleType():
		for it := v.ElementIterator(); it.Next(); {
			_, e := it.Element()
			if e.IsNull() || e.Type() != cty.String {
				b.ps.add(r, "%s must be a string or a list of strings", name)
				return Key{}
			}
			texts = append(texts, e.AsString())
		}
	default:
		b.ps.add(r, "%s must be a string or a list of strings", name)
		return Key{}
	}
	if len(texts) == 0 {
		b.ps.add(r, "%s must not be empty", name)
		return Key{}
	}
	k := Key{Text: strings.Join(texts, "+")}
	for _, t := range texts {
		p, err := ParseKeyPart(t)
		if err != nil {
			b.ps.add(r, "%s: %v", name, err)
			return Key{}
		}
		k.Parts = append(k.Parts, p)
	}
	return k
}

func decodeAnswer(b *body, blk *hclsyntax.Block, what string, a *Answer) {
	ab := b.child(blk, what)
	if ab.has("status") {
		ab.integer("status", &a.Status, 100)
		if a.Status > 599 {
			b.ps.add(ab.rangeOf("status"), "%s status must be between 100 and 599", what)
		}
	}
	ab.str("body", &a.Body)
	ab.str("content_type", &a.ContentType)
	ab.strMap("headers", &a.Headers)
	for name := range a.Headers {
		if !isToken(name) {
			b.ps.add(ab.rangeOf("headers"), "%s headers: %q is not a valid header name", what, name)
		}
	}
	ab.finish()
}

// DefaultReject is the answer of a limit without a reject block.
var DefaultReject = Answer{Status: 429, Body: `{"error":"rate_limited"}`, ContentType: "application/json"}

// DefaultFallback is the degraded answer of a route without a fallback block.
var DefaultFallback = Answer{Status: 503, Body: `{"error":"unavailable"}`, ContentType: "application/json"}

var methodNames = []string{"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"}

func decodeRoute(top *body, blk *hclsyntax.Block) *Route {
	rt := &Route{Name: blk.Labels[0], Pos: blk.DefRange(), Priority: "normal",
		Reject: DefaultReject, Fallback: DefaultFallback}
	what := fmt.Sprintf("route %q", rt.Name)
	b := top.child(blk, what)

	rt.Match.Path = "/"
	if mblk := b.block("match"); mblk != nil {
		mb := b.child(mblk, what+" match")
		if r, ok := mb.str("path", &rt.Match.Path); ok && !strings.HasPrefix(rt.Match.Path, "/") {
			b.ps.add(r, "match path must start with /, got %q", rt.Match.Path)
		}
		if ranges, ok := mb.strList("methods", &rt.Match.Methods); ok {
			for i, m := range rt.Match.Methods {
				if !contains(methodNames, m) {
					b.ps.add(ranges[i], "unknown method %q; use %s", m, strings.Join(methodNames, ", "))
				}
			}
		}
		mb.str("host", &rt.Match.Host)
		mb.str("listener", &rt.Match.Listener)
		mb.strMap("query", &rt.Match.Query)
		mb.strMap("header", &rt.Match.Header)
		for name := range rt.Match.Header {
			if !isToken(name) {
				b.ps.add(mb.rangeOf("header"), "match header: %q is not a valid header name", name)
			}
		}
		mb.finish()
	}

	b.str("upstream", &rt.Upstream)
	b.str("cells", &rt.Cells)
	b.boolean("seckill", &rt.Seckill)
	if rblk := b.block("respond"); rblk != nil {
		rt.Respond = &Answer{Status: 200, ContentType: "application/json"}
		decodeAnswer(b, rblk, what+" respond", rt.Respond)
	}
	targets := 0
	for _, set := range []bool{rt.Upstream != "", rt.Cells != "", rt.Seckill, rt.Respond != nil} {
		if set {
			targets++
		}
	}
	if targets != 1 {
		b.ps.add(blk.DefRange(), "%s needs exactly one of upstream = \"…\", cells = \"…\", seckill = true or a respond block (has %d)", what, targets)
	}

	if cblk := b.block("cache"); cblk != nil {
		rt.Cache = decodeCache(b.child(cblk, what+" cache"))
	}
	seen := map[string]bool{}
	for _, lblk := range b.blocks("limit", 1) {
		name := lblk.Labels[0]
		if seen[name] {
			b.ps.add(lblk.LabelRanges[0], "duplicate limit %q in %s", name, what)
			continue
		}
		seen[name] = true
		rt.Limits = append(rt.Limits, decodeLimit(b.child(lblk, fmt.Sprintf("limit %q", name)), lblk))
	}
	if rblk := b.block("reject"); rblk != nil {
		decodeAnswer(b, rblk, what+" reject", &rt.Reject)
	}
	b.boolean("require_token", &rt.RequireToken)
	b.oneOf("priority", &rt.Priority, "core", "normal", "low")
	b.integer("max_inflight", &rt.MaxInflight, 0)
	if fblk := b.block("fallback"); fblk != nil {
		decodeAnswer(b, fblk, what+" fallback", &rt.Fallback)
	}
	if iblk := b.block("idempotency"); iblk != nil {
		rt.Idempotency = decodeIdempotency(b.child(iblk, what+" idempotency"))
	}
	if v, _, ok := b.value("max_body_size"); ok && v.Type() == cty.String && v.AsString() == "unlimited" {
		rt.MaxBodySize = -1
	} else if b.has("max_body_size") {
		b.size("max_body_size", &rt.MaxBodySize)
	}
	b.boolean("websocket", &rt.WebSocket)
	rt.MaxTunnels, rt.TunnelIdleTimeout = 10000, 5*time.Minute
	b.integer("max_tunnels", &rt.MaxTunnels, 0)
	b.duration("tunnel_idle_timeout", &rt.TunnelIdleTimeout)
	if !rt.WebSocket && (b.has("max_tunnels") || b.has("tunnel_idle_timeout")) {
		b.ps.add(blk.DefRange(), "%s: max_tunnels and tunnel_idle_timeout need websocket = true", what)
	}
	b.finish()
	return rt
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func decodeCache(b *body) *Cache {
	c := &Cache{TTL: time.Second, Statuses: []int{200, 203, 301, 404}, MaxEntry: 8 << 20, LockTimeout: 5 * time.Second,
		Targeted: []string{"CDN-Cache-Control"}}
	b.duration("ttl", &c.TTL)
	b.duration("stale", &c.Stale)
	c.Key = b.key("key", false)
	if v, r, ok := b.value("statuses"); ok {
		c.Statuses = nil
		if !v.Type().IsListType() && !v.Type().IsTupleType() {
			b.ps.add(r, "statuses must be a list of status codes")
		} else {
			for it := v.ElementIterator(); it.Next(); {
				_, e := it.Element()
				n, ok := toInt(e)
				if !ok || n < 100 || n > 599 {
					b.ps.add(r, "statuses must be status codes between 100 and 599")
					break
				}
				c.Statuses = append(c.Statuses, n)
			}
		}
	}
	b.size("max_entry", &c.MaxEntry)
	b.boolean("allow_cookie", &c.AllowCookie)
	b.duration("lock_timeout", &c.LockTimeout)
	decodeTargeted(b, c)
	b.boolean("forward_targeted", &c.ForwardTargeted)
	b.finish()
	return c
}

// maxTargeted is the most targeted fields a cache block may list (cache.MaxTargeted).
const maxTargeted = 4

// decodeTargeted reads targeted = ["Edge-Cache-Control", …]: field names, no
// duplicates, none of the fields edge reads otherwise.
func decodeTargeted(b *body, c *Cache) {
	var names []string
	ranges, ok := b.strList("targeted", &names)
	if !ok {
		return
	}
	if len(names) > maxTargeted {
		b.ps.add(b.rangeOf("targeted"), "targeted lists at most %d fields", maxTargeted)
		return
	}
	for i, n := range names {
		switch {
		case !isToken(n):
			b.ps.add(ranges[i], "targeted[%d]: %q is not a header field name", i, n)
			return
		case strings.EqualFold(n, "Cache-Control") || strings.EqualFold(n, "Surrogate-Control") ||
			strings.EqualFold(n, "Expires") || strings.EqualFold(n, "Pragma"):
			b.ps.add(ranges[i], "targeted[%d]: %s is not a targeted field (RFC 9213)", i, n)
			return
		}
		for _, m := range names[:i] {
			if strings.EqualFold(n, m) {
				b.ps.add(ranges[i], "targeted[%d]: %s is listed twice", i, n)
				return
			}
		}
	}
	c.Targeted = names
}

func decodeLimit(b *body, blk *hclsyntax.Block) *Limit {
	l := &Limit{Name: blk.Labels[0], Burst: 1, MissingKey: "skip", Scope: "local", MaxKeys: 1 << 20, Pos: blk.DefRange()}
	l.Key = b.key("key", true)
	var rate string
	if r, ok := b.str("rate", &rate); ok {
		var err error
		if l.Rate, err = ParseRate(rate); err != nil {
			b.ps.add(r, "rate: %v", err)
		}
	} else if !b.has("rate") {
		b.ps.add(blk.DefRange(), "%s needs rate = \"<n>r/s\"", b.what)
	}
	b.integer("burst", &l.Burst, 1)
	b.oneOf("missing_key", &l.MissingKey, "skip", "reject", "shared")
	b.duration("delay", &l.Delay)
	b.boolean("dry_run", &l.DryRun)
	b.boolean("headers", &l.Headers)
	b.oneOf("scope", &l.Scope, "local", "cluster", "redis")
	b.boolean("fail_open", &l.FailOpen)
	b.integer("max_keys", &l.MaxKeys, 1)
	b.finish()
	return l
}

func decodeIdempotency(b *body) *Idempotency {
	id := &Idempotency{Header: "Idempotency-Key", TTL: 24 * time.Hour, Methods: []string{"POST"}, Store: "memory", MaxEntries: 100000}
	if r, ok := b.str("header", &id.Header); ok && !isToken(id.Header) {
		b.ps.add(r, "header %q is not a valid header name", id.Header)
	}
	b.duration("ttl", &id.TTL)
	if ranges, ok := b.strList("methods", &id.Methods); ok {
		for i, m := range id.Methods {
			if !contains(methodNames, m) {
				b.ps.add(ranges[i], "unknown method %q", m)
			}
		}
	}
	id.UserKey = b.key("user_key", false)
	if id.UserKey.IsZero() {
		id.UserKey = Key{Parts: []KeyPart{{Kind: KeyHeader, Name: "X-User-Id"}}, Text: "header:X-User-Id"}
	}
	b.boolean("required", &id.Required)
	b.oneOf("store", &id.Store, "memory", "redis")
	b.boolean("fail_open", &id.FailOpen)
	b.duration("wait", &id.Wait)
	b.duration("lease", &id.Lease)
	b.integer("max_entries", &id.MaxEntries, 1)
	b.finish()
	return id
}

func decodeBlacklist(b *body) *Blacklist {
	bl := &Blacklist{}
	var ips []string
	if ranges, ok := b.strList("ips", &ips); ok {
		bl.IPs = parsePrefixes(b.ps, ranges, "ips", ips)
	}
	b.strList("users", &bl.Users)
	bl.UserKey = b.key("user_key", false)
	if bl.UserKey.IsZero() {
		bl.UserKey = Key{Parts: []KeyPart{{Kind: KeyHeader, Name: "X-User-Id"}}, Text: "header:X-User-Id"}
	}
	b.str("file", &bl.File)
	if blk := b.block("auto_ban"); blk != nil {
		ab := b.child(blk, "auto_ban")
		bl.AutoBan = &AutoBan{}
		for _, name := range []string{"rejects", "window", "ban"} {
			if !ab.has(name) {
				b.ps.add(blk.DefRange(), "auto_ban needs %s", name)
			}
		}
		ab.integer("rejects", &bl.AutoBan.Rejects, 1)
		ab.duration("window", &bl.AutoBan.Window)
		ab.duration("ban", &bl.AutoBan.Ban)
		ab.finish()
	}
	b.finish()
	return bl
}

func decodeSeckill(b *body, blk *hclsyntax.Block) *Seckill {
	s := &Seckill{Store: "memory", TokenTTL: 5 * time.Minute, Timeout: 200 * time.Millisecond}
	b.oneOf("store", &s.Store, "memory", "redis")
	if rblk := b.block("redis"); rblk != nil {
		rb := b.child(rblk, "seckill redis")
		s.Redis = &Redis{}
		ranges, ok := rb.strList("addrs", &s.Redis.Addrs)
		if ok && len(s.Redis.Addrs) == 0 || !rb.has("addrs") {
			b.ps.add(rblk.DefRange(), "seckill redis needs addrs = [\"host:port\", …]")
		}
		for i, a := range s.Redis.Addrs {
			checkHostPort(b.ps, ranges[i], "redis addrs", a)
		}
		rb.str("username", &s.Redis.Username)
		rb.str("password", &s.Redis.Password)
		rb.finish()
	}
	if s.Store == "redis" && s.Redis == nil {
		b.ps.add(b.rangeOf("store"), "seckill store \"redis\" needs a redis { addrs = […] } block")
	}
	if r, ok := b.str("secret", &s.Secret); ok && len(s.Secret) < 32 {
		b.ps.add(r, "seckill secret must be at least 32 bytes, got %d", len(s.Secret))
	} else if !b.has("secret") {
		b.ps.add(blk.DefRange(), "seckill needs secret = env(\"EDGE_SECKILL_SECRET\") (at least 32 bytes)")
	}
	b.duration("token_ttl", &s.TokenTTL)
	b.duration("timeout", &s.Timeout)
	s.UserKey = b.key("user_key", false)
	if s.UserKey.IsZero() {
		s.UserKey = Key{Parts: []KeyPart{{Kind: KeyHeader, Name: "X-User-Id"}}, Text: "header:X-User-Id"}
	}
	s.ItemKey = b.key("item_key", false)
	if s.ItemKey.IsZero() {
		s.ItemKey = Key{Parts: []KeyPart{{Kind: KeyPath, N: 2}}, Text: "path:2"}
	}
	b.finish()
	return s
}

func decodeCluster(b *body) *Cluster {
	c := &Cluster{Bind: "0.0.0.0:7946"}
	b.str("name", &c.Name)
	b.str("node_name", &c.NodeName)
	if r, ok := b.str("bind", &c.Bind); ok {
		checkHostPort(b.ps, r, "cluster bind", c.Bind)
	}
	if r, ok := b.str("advertise", &c.Advertise); ok {
		checkHostPort(b.ps, r, "cluster advertise", c.Advertise)
	}
	if ranges, ok := b.strList("join", &c.Join); ok {
		for i, j := range c.Join {
			checkHostPort(b.ps, ranges[i], "cluster join", j)
		}
	}
	if r, ok := b.str("secret", &c.Secret); ok {
		if n := len(c.Secret); n != 16 && n != 24 && n != 32 {
			b.ps.add(r, "cluster secret must be 16, 24 or 32 bytes, got %d", n)
		}
	}
	b.finish()
	return c
}

// decodeTLSTickets reads the tls_tickets block: a secret every edge of a cluster shares,
// from which they all derive the same session-ticket keys.
func decodeTLSTickets(b *body, blk *hclsyntax.Block) *TLSTickets {
	t := &TLSTickets{}
	if r, ok := b.str("secret", &t.Secret); ok {
		if len(t.Secret) < 32 {
			b.ps.add(r, "tls_tickets secret must be at least 32 bytes, got %d", len(t.Secret))
		}
	} else {
		b.ps.add(blk.DefRange(), "tls_tickets needs secret = env(\"EDGE_TLS_TICKET_SECRET\") (at least 32 bytes, the same on every edge)")
	}
	b.finish()
	return t
}

// crossCheck validates references between blocks.
func (c *Config) crossCheck(ps *Problems, names map[string]hcl.Range) {
	for _, rt := range c.Routes {
		if rt.Upstream != "" {
			if _, ok := names["upstream "+rt.Upstream]; !ok {
				ps.add(rt.Pos, "route %q: upstream %q is not defined", rt.Name, rt.Upstream)
			}
		}
		if rt.Cells != "" {
			if _, ok := names["cells "+rt.Cells]; !ok {
				ps.add(rt.Pos, "route %q: cells %q is not defined", rt.Name, rt.Cells)
			}
		}
		if (rt.Seckill || rt.RequireToken) && c.Seckill == nil {
			ps.add(rt.Pos, "route %q uses seckill tokens but there is no seckill block", rt.Name)
		}
		if rt.Seckill && rt.Cache != nil {
			ps.add(rt.Pos, "route %q: a seckill route cannot be cached", rt.Name)
		}
		if rt.MaxBodySize != 0 && (rt.Idempotency != nil || rt.Seckill || rt.Respond != nil) {
			ps.add(rt.Pos, "route %q: max_body_size streams bodies to an upstream; a route with idempotency, seckill or respond holds them (the top-level max_body_size applies)", rt.Name)
		}
		if rt.Idempotency != nil && rt.Upstream != "" {
			for _, u := range c.Upstreams {
				if u.Name == rt.Upstream && u.Proto.Protocol != "http1" {
					ps.add(rt.Pos, "route %q: idempotency records answers whole; upstream %q speaks %s, whose answers stream", rt.Name, u.Name, u.Proto.Protocol)
				}
			}
		}
		if rt.WebSocket && (rt.Seckill || rt.Respond != nil) {
			ps.add(rt.Pos, "route %q: websocket needs a route with upstream or cells", rt.Name)
		}
		if rt.Idempotency != nil && (rt.Seckill || rt.Respond != nil) {
			ps.add(rt.Pos, "route %q: idempotency needs a route with upstream or cells", rt.Name)
		}
		if rt.Idempotency != nil && rt.Idempotency.Store == "redis" && (c.Seckill == nil || c.Seckill.Redis == nil) {
			ps.add(rt.Pos, "route %q: idempotency store \"redis\" needs a seckill redis block", rt.Name)
		}
		for _, l := range rt.Limits {
			if l.Scope == "redis" && (c.Seckill == nil || c.Seckill.Redis == nil) {
				ps.add(l.Pos, "limit %q: scope \"redis\" needs a seckill redis block", l.Name)
			}
			if l.Scope == "cluster" && c.Cluster == nil {
				ps.add(l.Pos, "limit %q: scope \"cluster\" needs a cluster block", l.Name)
			}
		}
	}
}
