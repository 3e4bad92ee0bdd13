package listener

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"

	"github.com/edge-gw/edge/h2"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the listeners' Prometheus metrics. Handshake counters are kept here
// and outlive listeners; connection counts and certificate expiry are read from the
// running listeners at scrape time.
type Metrics struct {
	handshakes *prometheus.CounterVec
	hsErrors   *prometheus.CounterVec
	set        *Set
}

// NewMetrics registers the listener metrics with reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_tls_handshakes_total",
			Help: "TLS handshakes by listener, protocol version (1.2, 1.3; \"unknown\" when none was agreed) and result (ok, error).",
		}, []string{"listener", "version", "result"}),
		hsErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_tls_handshake_errors_total",
			Help: "Failed TLS handshakes by listener and reason: timeout, eof, not_tls, protocol_version, no_shared_cipher, bad_certificate (the client refused ours), other.",
		}, []string{"listener", "reason"}),
	}
	if reg != nil {
		reg.MustRegister(m.handshakes, m.hsErrors, collector{m})
	}
	return m
}

func (m *Metrics) handshake(listener string, version uint16, err error) {
	if err == nil {
		m.handshakes.WithLabelValues(listener, versionName(version), "ok").Inc()
		return
	}
	m.handshakes.WithLabelValues(listener, versionName(version), "error").Inc()
	m.hsErrors.WithLabelValues(listener, handshakeReason(err)).Inc()
}

func versionName(v uint16) string {
	switch v {
	case tls.VersionTLS10:
		return "1.0"
	case tls.VersionTLS11:
		return "1.1"
	case tls.VersionTLS12:
		return "1.2"
	case tls.VersionTLS13:
		return "1.3"
	}
	return "unknown"
}

// handshakeReason sorts a failed handshake into a few reasons an operator can act on.
// crypto/tls keeps most of its errors unexported, so the rest is read from the text.
func handshakeReason(err error) string {
	var ne net.Error
	var rh tls.RecordHeaderError
	var alert tls.AlertError
	msg := err.Error()
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), strings.Contains(msg, "connection reset"):
		return "eof"
	case errors.As(err, &rh):
		return "not_tls"
	case strings.Contains(msg, "protocol version"), strings.Contains(msg, "unsupported versions"):
		return "protocol_version"
	case strings.Contains(msg, "no cipher suite"), strings.Contains(msg, "no mutually supported"):
		return "no_shared_cipher"
	case strings.Contains(msg, "bad certificate"), strings.Contains(msg, "unknown certificate"), strings.Contains(msg, "certificate"):
		return "bad_certificate"
	case errors.As(err, &alert) && tls.AlertError(alert) == 70: // protocol_version alert sent
		return "protocol_version"
	}
	return "other"
}

// collector exports what is read from the running listeners at scrape time.
type collector struct{ m *Metrics }

var (
	descConns = prometheus.NewDesc("edge_listener_connections",
		"Client connections open now, by listener and kind (http1, http2, handshaking; http3: QUIC connections, handshaking ones included).", []string{"listener", "kind"}, nil)
	descAccepted = prometheus.NewDesc("edge_listener_accepted_total",
		"Client connections accepted, by listener.", []string{"listener"}, nil)
	descRefused = prometheus.NewDesc("edge_listener_refused_total",
		"Client connections closed at accept because the listener was at max_conns.", []string{"listener"}, nil)
	descProxyRefused = prometheus.NewDesc("edge_listener_proxy_refused_total",
		"Client connections closed for their PROXY header (proxy_protocol): a peer not in trusted_proxies, a malformed or slow header.", []string{"listener"}, nil)
	descExpiry = prometheus.NewDesc("edge_tls_certificate_expiry_seconds",
		"Unix time at which a certificate a listener serves expires (its not_after), by listener and name (the first name of the certificate).",
		[]string{"listener", "name"}, nil)
	descH2Streams = prometheus.NewDesc("edge_http2_streams_total",
		"HTTP/2 streams opened by clients, by listener.", []string{"listener"}, nil)
	descH2Resets = prometheus.NewDesc("edge_http2_resets_received_total",
		"RST_STREAM frames received from HTTP/2 clients, by listener.", []string{"listener"}, nil)
	descH2Refused = prometheus.NewDesc("edge_http2_refused_streams_total",
		"HTTP/2 streams refused (REFUSED_STREAM) beyond max_concurrent_streams, by listener.", []string{"listener"}, nil)
	descH2Goaway = prometheus.NewDesc("edge_http2_goaway_total",
		"GOAWAY frames sent to HTTP/2 clients, by listener and reason (rapid_reset, control_flood, continuation_flood, body_timeout, ping_timeout, idle, protocol, shutdown).",
		[]string{"listener", "reason"}, nil)
)

var (
	descQUICHandshakes = prometheus.NewDesc("edge_quic_handshakes_total",
		"QUIC handshakes of HTTP/3 listeners, by listener and result (ok, error: failed or timed out after the ClientHello).", []string{"listener", "result"}, nil)
	descQUICRefused = prometheus.NewDesc("edge_quic_refused_total",
		"QUIC connections refused before any TLS work: over http3 max_conns or max_conns_per_ip.", []string{"listener"}, nil)
	descQUICRetries = prometheus.NewDesc("edge_quic_retries_total",
		"QUIC Initials answered with Retry (address validation) because new connections came faster than http3 retry_threshold.", []string{"listener"}, nil)
	descQUICEarly = prometheus.NewDesc("edge_quic_early_data_total",
		"0-RTT on HTTP/3 listeners with early_data: connections that used it (connections), unsafe requests held until the handshake completed (held), and of those dropped because it never did (dropped).",
		[]string{"listener", "kind"}, nil)
)

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descConns, descAccepted, descRefused, descProxyRefused, descExpiry, descH2Streams, descH2Resets, descH2Refused, descH2Goaway,
		descQUICHandshakes, descQUICRefused, descQUICRetries, descQUICEarly} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	s := c.m.set
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.live {
		sp := l.spec.Load()
		name := sp.Name
		h2s := l.h2.Stats()
		gauge := func(d *prometheus.Desc, v float64, labels ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
		}
		counter := func(d *prometheus.Desc, v float64, labels ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
		}
		gauge(descConns, float64(l.wd.Watched()), name, "http1")
		gauge(descConns, float64(h2s.ConnsOpen), name, "http2")
		gauge(descConns, float64(l.handshaking.Load()), name, "handshaking")
		counter(descAccepted, float64(l.stats.accepted.Load()), name)
		counter(descRefused, float64(l.stats.refused.Load()), name)
		counter(descProxyRefused, float64(l.stats.proxyRefused.Load()), name)
		seen := map[string]bool{}
		for _, ci := range sp.certList() {
			n := ""
			if len(ci.Names) > 0 {
				n = ci.Names[0]
			}
			if ci.KeyType != "" && seen[n] {
				n += " (" + ci.KeyType + ")" // an RSA twin of an ECDSA certificate
			}
			seen[n] = true
			gauge(descExpiry, float64(ci.NotAfter.Unix()), name, n)
		}
		if q := l.quic.Load(); q != nil {
			st := q.srv.Stats()
			gauge(descConns, float64(st.ConnsOpen), name, "http3")
			counter(descQUICHandshakes, float64(st.HandshakesOK), name, "ok")
			counter(descQUICHandshakes, float64(st.HandshakesFailed), name, "error")
			counter(descQUICRefused, float64(st.Refused), name)
			counter(descQUICRetries, float64(st.Retries), name)
			counter(descQUICEarly, float64(st.EarlyConns), name, "connections")
			counter(descQUICEarly, float64(st.EarlyHeld), name, "held")
			counter(descQUICEarly, float64(st.EarlyDropped), name, "dropped")
		}
		if sp.serves("h2") || sp.serves(h2c) {
			counter(descH2Streams, float64(h2s.StreamsTotal), name)
			counter(descH2Resets, float64(h2s.ResetsReceived), name)
			counter(descH2Refused, float64(h2s.StreamsRefused), name)
			for reason, n := range h2s.GoAwayByReason {
				counter(descH2Goaway, float64(n), name, h2.Reason(reason).String())
			}
		}
	}
}
