package main

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/edge-gw/edge/config"
	"github.com/edge-gw/edge/h2"
	"github.com/edge-gw/edge/h3"
	"github.com/edge-gw/edge/listener"
	"github.com/edge-gw/edge/proxy"
	"github.com/edge-gw/edge/tlsstore"
	"github.com/hashicorp/hcl/v2"
	"github.com/valyala/fasthttp"
)

// loadCerts reads the certificate files of every TLS listener of cfg, as startup,
// reload and edge -check all do. A problem is reported as config.Problems at the
// certificate block, so it reads like any other config problem.
func loadCerts(cfg *config.Config, now time.Time) (map[string]*tlsstore.Certs, error) {
	out := map[string]*tlsstore.Certs{}
	var ps config.Problems
	for _, l := range cfg.Listeners {
		if l.TLS == nil || len(l.TLS.Certificates) == 0 { // none: an acme block serves
			continue
		}
		files := make([]tlsstore.CertFile, len(l.TLS.Certificates))
		where := map[string]hcl.Range{}
		for i, c := range l.TLS.Certificates {
			w := fmt.Sprintf("%s:%d,%d", c.Pos.Filename, c.Pos.Start.Line, c.Pos.Start.Column)
			files[i] = tlsstore.CertFile{CertFile: c.CertFile, KeyFile: c.KeyFile, Where: w}
			where[w] = c.Pos
		}
		certs, err := tlsstore.Load(files, now)
		var tp tlsstore.Problems
		switch {
		case errors.As(err, &tp):
			for _, e := range tp {
				ps = append(ps, config.Problem{Range: where[e.Where], Msg: fmt.Sprintf("listener %q: %s", l.Name, e.Msg)})
			}
		case err != nil:
			ps = append(ps, config.Problem{Range: l.TLS.Pos, Msg: fmt.Sprintf("listener %q: %v", l.Name, err)})
		default:
			out[l.Name] = certs
		}
	}
	if len(ps) > 0 {
		return nil, ps
	}
	return out, nil
}

// listenerSpecs builds the listeners of cfg: the top-level listen (named "default")
// and every listener block, serving through px.
func listenerSpecs(cfg *config.Config, certs map[string]*tlsstore.Certs, px *proxy.Proxy, ap *acmePrepared) []*listener.Spec {
	srv := px.NewServer(cfg)
	base := listener.Spec{
		HandshakeTimeout: 10 * time.Second,
		MaxConns:         cfg.MaxConns,
		NewHTTP1:         func() *fasthttp.Server { return px.NewServer(cfg).Server },
		Timeouts:         srv.Timeouts(),
	}
	h2base := h2.Config{
		MaxHeaderListSize: uint32(cfg.MaxHeaderSize),
		MaxBodySize:       cfg.MaxBodySize,
		ReadTimeout:       cfg.ReadTimeout,
		WriteTimeout:      cfg.WriteTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		StreamRequest:     proxy.StreamRequest(cfg.MaxBodySize),
	}
	var specs []*listener.Spec
	if cfg.Listen != "" {
		sp := base
		sp.Name, sp.Address, sp.Protocols = config.DefaultListener, cfg.Listen, []string{config.ProtoHTTP1}
		sp.Handler = px.Handler
		sp.H2Handler = px.ListenerHandler(sp.Name, proxy.ProtoH2)
		sp.H2Config = h2base
		specs = append(specs, &sp)
	}
	for _, l := range cfg.Listeners {
		sp := base
		sp.Name, sp.Address, sp.Protocols = l.Name, l.Address, l.Protocols
		sp.HandshakeTimeout = l.HandshakeTimeout
		sp.ProxyProtocol, sp.Trusted = l.ProxyProtocol, cfg.TrustedProxies
		sp.Handler = px.ListenerHandler(l.Name, proxy.ProtoHTTP1)
		sp.H2Handler = px.ListenerHandler(l.Name, proxy.ProtoH2)
		hc := h2base
		hc.MaxConcurrentStreams = uint32(l.HTTP2.MaxConcurrentStreams)
		hc.InitialWindowSize = uint32(l.HTTP2.InitialWindowSize)
		hc.ConnWindowSize = uint32(l.HTTP2.ConnWindowSize)
		hc.PingInterval = l.HTTP2.PingInterval
		hc.PingTimeout = l.HTTP2.PingTimeout
		hc.MaxControlFrames = l.HTTP2.MaxControlFrames
		if l.HTTP2.IdleTimeout > 0 {
			hc.IdleTimeout = l.HTTP2.IdleTimeout
		}
		sp.H2Config = hc
		if l.TLS != nil {
			min, _ := tlsstore.ParseVersion(l.TLS.MinVersion) // config checked it
			sp.Certs = certs[l.Name]
			var store *tlsstore.Store
			if sp.Certs != nil {
				store = tlsstore.NewStore(sp.Certs)
			}
			alpn := slices.DeleteFunc(slices.Clone(l.Protocols), func(p string) bool { return p == config.ProtoH3 }) // UDP's, not an ALPN offer on TCP
			if e := ap.manager(cfg, l); e != nil {
				sp.TLS = acmeTLS(store, e, min, alpn)
				sp.ACME = e.certs
			} else {
				sp.TLS = tlsstore.ServerConfig(store, min, alpn)
			}
			sp.H3Handler = px.ListenerHandler(l.Name, proxy.ProtoH3)
			sp.H3Config = h3Config(cfg, l)
		}
		specs = append(specs, &sp)
	}
	return specs
}

// h3Config is the HTTP/3 side of listener l: its http3 block, and the top-level body
// and header limits.
func h3Config(cfg *config.Config, l *config.Listener) h3.Config {
	c := h3.Config{
		MaxStreams:       int64(l.HTTP3.MaxStreams),
		MaxConns:         l.HTTP3.MaxConns,
		MaxConnsPerIP:    l.HTTP3.MaxConnsPerIP,
		HandshakeTimeout: l.HandshakeTimeout,
		IdleTimeout:      l.HTTP3.IdleTimeout,
		RetryThreshold:   l.HTTP3.RetryThreshold,
		EarlyData:        l.HTTP3.EarlyData,
		MaxBodySize:      cfg.MaxBodySize,
		MaxHeaderBytes:   int(cfg.MaxHeaderSize),
		StreamRequest:    proxy.StreamRequest(cfg.MaxBodySize),
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = cfg.IdleTimeout
	}
	if c.RetryThreshold == 0 { // retry_threshold = 0: every new connection
		c.RetryThreshold = -1
	}
	return c
}
