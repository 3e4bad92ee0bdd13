package config

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestListenerBlocks(t *testing.T) {
	c, err := parseFile(t, "testdata/good/listeners.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "" || len(c.Listeners) != 4 {
		t.Fatalf("listen %q, %d listeners", c.Listen, len(c.Listeners))
	}
	if c.TLSTickets == nil || c.TLSTickets.Secret != "a ticket secret of 32 bytes or more" {
		t.Errorf("tls_tickets: %+v", c.TLSTickets)
	}
	https, http, internal := c.Listeners[0], c.Listeners[1], c.Listeners[2]
	if a := c.Listeners[3].TLS.ACME; a == nil || len(a.Domains) != 2 || a.Email != "ops@example.com" ||
		a.Storage != "state_dir" || !strings.HasPrefix(a.Directory, "https://acme-staging") || len(c.Listeners[3].TLS.Certificates) != 0 {
		t.Errorf("acme listener: %+v", c.Listeners[3].TLS)
	}
	if h := https.HTTP3; h.MaxStreams != 50 || h.MaxConnsPerIP != 20 || h.MaxConns != 0 || h.RetryThreshold != 0 || !h.EarlyData {
		t.Errorf("http3 = %+v", h)
	}
	if h := c.Listeners[3].HTTP3; h.RetryThreshold != DefaultRetryThreshold || h.EarlyData {
		t.Errorf("http3 defaults = %+v", h)
	}
	if !reflect.DeepEqual(https.Protocols, []string{"h2", "http/1.1", "h3"}) || https.TLS == nil ||
		len(https.TLS.Certificates) != 2 || https.TLS.MinVersion != "1.3" ||
		https.TLS.Certificates[1].KeyFile != "testdata/good/certs/shop-rsa.key" || https.TLS.Certificates[1].Pos.Start.Line != 10 {
		t.Errorf("https = %+v tls %+v", https, https.TLS)
	}
	if https.HSTS != 365*24*time.Hour || !https.HSTSSubdomains || https.HandshakeTimeout != 10*time.Second {
		t.Errorf("https hsts %v %v handshake %v", https.HSTS, https.HSTSSubdomains, https.HandshakeTimeout)
	}
	if h := https.HTTP2; h.MaxConcurrentStreams != 64 || h.InitialWindowSize != 1<<20 || h.PingInterval != 5*time.Second {
		t.Errorf("http2 = %+v", h)
	}
	if !reflect.DeepEqual(http.Protocols, []string{"http/1.1"}) || !http.HTTPSRedirect || http.TLS != nil {
		t.Errorf("http = %+v", http)
	}
	if !reflect.DeepEqual(internal.Protocols, []string{"h2c", "http/1.1"}) {
		t.Errorf("internal = %+v", internal)
	}
	if c.Routes[0].Match.Listener != "https" {
		t.Errorf("route match listener = %q", c.Routes[0].Match.Listener)
	}
	if f := c.Routes[1]; !f.WebSocket || f.MaxTunnels != 50000 || f.TunnelIdleTimeout != 2*time.Minute {
		t.Errorf("websocket route = %v %d %v", f.WebSocket, f.MaxTunnels, f.TunnelIdleTimeout)
	}
	if r := c.Routes[0]; r.WebSocket || r.MaxTunnels != 10000 || r.TunnelIdleTimeout != 5*time.Minute {
		t.Errorf("defaults = %v %d %v", r.WebSocket, r.MaxTunnels, r.TunnelIdleTimeout)
	}
	if p := c.HTTPSPort(); p != "8443" {
		t.Errorf("HTTPSPort = %q", p)
	}
}

func TestParseLongDuration(t *testing.T) {
	f := func(in string, want time.Duration, ok bool) {
		t.Helper()
		d, err := ParseLongDuration(in)
		if (err == nil) != ok || d != want {
			t.Errorf("ParseLongDuration(%q) = %v, %v; want %v ok=%v", in, d, err, want, ok)
		}
	}
	f("365d", 365*24*time.Hour, true)
	f("1d", 24*time.Hour, true)
	f("8760h", 8760*time.Hour, true)
	f("0d", 0, false)
	f("-1d", 0, false)
	f("d", 0, false)
	f("0s", 0, false)
	f("forever", 0, false)
}

func TestNothingToServe(t *testing.T) {
	_, err := Parse("x.hcl", []byte("listen = \"\"\n"), testEnv)
	if err == nil || err.Error() != `x.hcl:1,10: listen is off and there is no listener block: nothing would serve clients` {
		t.Errorf("err = %v", err)
	}
}
