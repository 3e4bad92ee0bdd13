package config

import (
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// Stream is a stream "NAME" block: an L4 listener that relays bytes (TCP) or datagrams
// (UDP) to the servers of an upstream or a cell, with no HTTP in between (the role of
// LVS or nginx's stream module). See docs/streams-l4.md.
type Stream struct {
	Name   string
	Listen string // listen: "host:port"; required; unique among all listening addresses
	// Protocol (protocol): "tcp" (default) or "udp".
	Protocol string

	// Upstream (upstream) names the upstream block whose servers take the connections,
	// round robin, skipping a server that refused a connection for a while. With sni
	// blocks it is the default for a ClientHello with no or an unknown name; absent
	// there, such a connection is closed.
	Upstream string
	// Cells (cells) names a cells block: a client goes to the cell its address hashes
	// to, as HTTP requests with key = "ip" do, so an L4 client and its HTTP requests land
	// in the same cell. Exclusive with upstream and sni.
	Cells string
	// SNI (sni "PATTERN" blocks) routes TLS connections by the ClientHello's server name
	// without terminating TLS: an exact name, then a "*.example.com" wildcard (one label),
	// then upstream. TCP only.
	SNI []SNIRoute

	// ProxyProtocol (proxy_protocol): every connection starts with a PROXY protocol
	// header (v1 or v2), accepted only from trusted_proxies; its address is the client's.
	// Default false. A header *to* the servers is their upstream's proxy_protocol.
	ProxyProtocol bool

	// IdleTimeout (idle_timeout): a TCP connection with no byte either way, or a UDP
	// session with no datagram, this long is closed; default 10m for TCP, 1m for UDP.
	IdleTimeout time.Duration
	// HandshakeTimeout (handshake_timeout): the PROXY header and, with sni blocks, the
	// ClientHello must arrive within; default 5s.
	HandshakeTimeout time.Duration
	// MaxConns (max_conns): connections (TCP) at once on the stream; default 10000.
	MaxConns int
	// MaxConnsPerIP (max_conns_per_ip): connections at once from one client address;
	// 0 (default): no bound beyond max_conns.
	MaxConnsPerIP int
	// ConnRate (conn_rate): new connections per second from one client address, a token
	// bucket of ConnBurst (conn_burst, default 10); zero (default): no bound.
	ConnRate  Rate
	ConnBurst int
	// MaxSessions (max_sessions): UDP sessions (client addresses) at once; datagrams of a
	// new client beyond it are dropped and counted. Default 10000.
	MaxSessions int

	Pos hcl.Range
}

// SNIRoute is an sni "PATTERN" block of a stream.
type SNIRoute struct {
	Pattern  string // the label: "api.example.com" or "*.example.com"
	Upstream string // upstream: required
	Pos      hcl.Range
}

// The protocols of a stream.
const (
	StreamTCP = "tcp"
	StreamUDP = "udp"
)

func decodeStream(top *body, blk *hclsyntax.Block) *Stream {
	s := &Stream{Name: blk.Labels[0], Pos: blk.DefRange(), Protocol: StreamTCP,
		HandshakeTimeout: 5 * time.Second, MaxConns: 10000, MaxSessions: 10000, ConnBurst: 10}
	what := fmt.Sprintf("stream %q", s.Name)
	b := top.child(blk, what)
	if r, ok := b.str("listen", &s.Listen); ok {
		checkHostPort(b.ps, r, what+" listen", s.Listen)
	} else if !b.has("listen") {
		b.ps.add(blk.DefRange(), "%s needs listen = \"host:port\"", what)
	}
	b.oneOf("protocol", &s.Protocol, StreamTCP, StreamUDP)
	s.IdleTimeout = 10 * time.Minute
	if s.Protocol == StreamUDP {
		s.IdleTimeout = time.Minute
	}
	b.str("upstream", &s.Upstream)
	b.str("cells", &s.Cells)
	b.boolean("proxy_protocol", &s.ProxyProtocol)
	b.duration("idle_timeout", &s.IdleTimeout)
	b.duration("handshake_timeout", &s.HandshakeTimeout)
	b.integer("max_conns", &s.MaxConns, 1)
	b.integer("max_conns_per_ip", &s.MaxConnsPerIP, 0)
	var rate string
	if r, ok := b.str("conn_rate", &rate); ok {
		var err error
		if s.ConnRate, err = ParseRate(rate); err != nil {
			b.ps.add(r, "conn_rate: %v", err)
		}
	}
	b.integer("conn_burst", &s.ConnBurst, 1)
	b.integer("max_sessions", &s.MaxSessions, 1)

	seen := map[string]bool{}
	for _, sb := range b.blocks("sni", 1) {
		rt := SNIRoute{Pattern: strings.ToLower(sb.Labels[0]), Pos: sb.DefRange()}
		sbody := b.child(sb, fmt.Sprintf("sni %q", rt.Pattern))
		if msg := checkSNIPattern(rt.Pattern); msg != "" {
			b.ps.add(sb.LabelRanges[0], "%s sni %q: %s", what, sb.Labels[0], msg)
		} else if seen[rt.Pattern] {
			b.ps.add(sb.LabelRanges[0], "%s: sni %q is listed twice", what, rt.Pattern)
		}
		seen[rt.Pattern] = true
		if _, ok := sbody.str("upstream", &rt.Upstream); !ok && !sbody.has("upstream") {
			b.ps.add(sb.DefRange(), "%s sni %q needs upstream = \"…\"", what, rt.Pattern)
		}
		sbody.finish()
		s.SNI = append(s.SNI, rt)
	}
	switch {
	case s.Cells != "" && (s.Upstream != "" || len(s.SNI) > 0):
		b.ps.add(b.rangeOf("cells"), "%s: cells picks the servers by the client's address; it cannot go with upstream or sni", what)
	case s.Cells == "" && s.Upstream == "" && len(s.SNI) == 0:
		b.ps.add(blk.DefRange(), "%s needs upstream = \"…\", cells = \"…\" or sni blocks", what)
	}
	if s.Protocol == StreamUDP {
		if len(s.SNI) > 0 {
			b.ps.add(s.SNI[0].Pos, "%s: sni routes TLS over TCP; a udp stream cannot use it", what)
		}
		if s.ProxyProtocol {
			b.ps.add(b.rangeOf("proxy_protocol"), "%s: proxy_protocol is read from TCP connections; a udp stream cannot use it", what)
		}
	}
	b.finish()
	return s
}

// checkSNIPattern says what is wrong with an sni label, or "".
func checkSNIPattern(p string) string {
	name := strings.TrimPrefix(p, "*.")
	if strings.Contains(name, "*") {
		return "a wildcard is allowed only as the whole first label (\"*.example.com\")"
	}
	if name == "" || len(name) > 253 || strings.HasPrefix(name, ".") || strings.HasSuffix(name, ".") || strings.Contains(name, "..") {
		return "not a host name"
	}
	for i := 0; i < len(name); i++ {
		ch := name[i]
		if !(ch >= 'a' && ch <= 'z' || ch >= '0' && ch <= '9' || ch == '-' || ch == '.' || ch == '_') {
			return "not a host name"
		}
	}
	return ""
}

// checkStreams validates what spans streams: the upstreams and cells they name, and
// addresses unique among streams and listeners (a TCP and a UDP stream may share one).
func (c *Config) checkStreams(ps *Problems, names map[string]hcl.Range) {
	used := map[string]string{}
	if c.Listen != "" {
		used["tcp "+c.Listen] = "listen"
	}
	used["tcp "+c.Admin.Listen] = "admin listen"
	for _, l := range c.Listeners {
		used["tcp "+l.Address] = fmt.Sprintf("listener %q", l.Name)
	}
	for _, s := range c.Streams {
		what := fmt.Sprintf("stream %q", s.Name)
		for _, u := range append([]string{s.Upstream}, sniUpstreams(s)...) {
			if _, ok := names["upstream "+u]; u != "" && !ok {
				ps.add(s.Pos, "%s: upstream %q is not defined", what, u)
			}
		}
		if s.Protocol == StreamUDP {
			for _, u := range c.Upstreams {
				if u.Name == s.Upstream && u.Proto.ProxyProtocol != "" {
					ps.add(s.Pos, "%s: upstream %q has proxy_protocol, which edge sends on TCP streams only", what, u.Name)
				}
			}
		}
		if _, ok := names["cells "+s.Cells]; s.Cells != "" && !ok {
			ps.add(s.Pos, "%s: cells %q is not defined", what, s.Cells)
		}
		if s.Listen == "" || strings.HasSuffix(s.Listen, ":0") {
			continue
		}
		key := s.Protocol + " " + s.Listen
		if other, dup := used[key]; dup {
			ps.add(s.Pos, "%s: %s address %q is already used by %s", what, s.Protocol, s.Listen, other)
			continue
		}
		used[key] = what
	}
}

func sniUpstreams(s *Stream) []string {
	out := make([]string, len(s.SNI))
	for i, r := range s.SNI {
		out[i] = r.Upstream
	}
	return out
}
