package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/edge-gw/edge/acme"
	"github.com/edge-gw/edge/config"
	"github.com/edge-gw/edge/proxy"
	"github.com/edge-gw/edge/tlsstore"
)

// acmeSet keeps the ACME managers of the running config, one per acme block identity
// (domains, directory, account, storage), across reloads: a reload that keeps a block
// keeps its manager, its certificate and any order in flight. Prepare and commit are
// called by the reload loop only.
type acmeSet struct {
	px  *proxy.Proxy
	log *slog.Logger

	mu   sync.Mutex
	live map[string]*acmeEntry // by acmeKey
}

type acmeEntry struct {
	m       *acme.Manager
	release func() // the Redis reference of a redis storage; nil otherwise
	domains []string
}

func newACMESet(px *proxy.Proxy, log *slog.Logger) *acmeSet {
	return &acmeSet{px: px, log: log, live: map[string]*acmeEntry{}}
}

// acmeKey is an acme block's identity.
func acmeKey(cfg *config.Config, a *config.ACME) string {
	store := a.Storage
	if store == "redis" && cfg.Seckill != nil && cfg.Seckill.Redis != nil {
		store += fmt.Sprint(cfg.Seckill.Redis.Addrs)
	} else {
		store += " " + cfg.StateDir
	}
	return fmt.Sprintf("%q %q %q %q %s", a.Domains, a.Directory, a.Email, a.CARoots, store)
}

// acmePrepared is a config's managers: the kept ones and new ones not started yet.
type acmePrepared struct {
	s     *acmeSet
	byKey map[string]*acmeEntry
	fresh map[string]*acmeEntry
}

// prepare finds or makes the manager of every acme block of cfg. New managers are made,
// not started: a failed reload closes them with abort. It reads the ca_roots files.
func (s *acmeSet) prepare(cfg *config.Config, connect bool) (*acmePrepared, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := &acmePrepared{s: s, byKey: map[string]*acmeEntry{}, fresh: map[string]*acmeEntry{}}
	var ps config.Problems
	for _, l := range cfg.Listeners {
		if l.TLS == nil || l.TLS.ACME == nil {
			continue
		}
		a := l.TLS.ACME
		key := acmeKey(cfg, a)
		if p.byKey[key] != nil {
			continue
		}
		if e := s.live[key]; e != nil {
			p.byKey[key] = e
			continue
		}
		o := acme.Options{Domains: a.Domains, Email: a.Email, Directory: a.Directory,
			StateDir: filepath.Join(cfg.StateDir, "acme"), TLSPort: portOf(l.Address)}
		// HTTP-01 is answered by the plain listeners: the CA asks on port 80, or on the
		// port of edge's plain listener when that is not 80 (behind port mapping, tests).
		if hp := plainPort(cfg); hp < 0 {
			o.DisableHTTP01 = true
		} else {
			o.HTTPPort = hp
		}
		if len(a.CARoots) > 0 {
			pool := x509.NewCertPool()
			for _, f := range a.CARoots {
				pem, err := os.ReadFile(f)
				if err != nil || !pool.AppendCertsFromPEM(pem) {
					ps = append(ps, config.Problem{Range: a.Pos, Msg: fmt.Sprintf("listener %q: acme ca_roots %s: no PEM certificate could be read (%v)", l.Name, f, err)})
				}
			}
			o.CARoots = pool
		}
		e := &acmeEntry{domains: a.Domains}
		if a.Storage == "redis" && connect {
			o.Redis, e.release = s.px.SharedRedis(cfg.Seckill.Redis)
		}
		m, err := acme.New(o, s.log.With("acme", strings.Join(a.Domains, ",")))
		if err != nil {
			if e.release != nil {
				e.release()
			}
			ps = append(ps, config.Problem{Range: a.Pos, Msg: fmt.Sprintf("listener %q: acme: %v", l.Name, err)})
			continue
		}
		e.m = m
		p.byKey[key], p.fresh[key] = e, e
	}
	if len(ps) > 0 {
		p.abort()
		return nil, ps
	}
	return p, nil
}

// manager returns the manager of listener l's acme block, or nil.
func (p *acmePrepared) manager(cfg *config.Config, l *config.Listener) *acmeEntry {
	if p == nil || l.TLS == nil || l.TLS.ACME == nil {
		return nil
	}
	return p.byKey[acmeKey(cfg, l.TLS.ACME)]
}

// abort closes the managers prepare made.
func (p *acmePrepared) abort() {
	for _, e := range p.fresh {
		e.close()
	}
	p.fresh = nil
}

// certs lists the manager's certificates as a listener shows them.
func (e *acmeEntry) certs() []tlsstore.Info {
	var out []tlsstore.Info
	for _, c := range e.m.Certificates() {
		out = append(out, tlsstore.Info{Names: c.Names, NotAfter: c.NotAfter, Issuer: c.Issuer, CertFile: "acme"})
	}
	return out
}

func (e *acmeEntry) close() {
	e.m.Close()
	if e.release != nil {
		e.release()
	}
}

// commit starts the new managers, closes those the config dropped, and points the
// proxy's HTTP-01 answers at the managers in force.
func (p *acmePrepared) commit() {
	s := p.s
	s.mu.Lock()
	old := s.live
	s.live = p.byKey
	managers := make([]*acme.Manager, 0, len(p.byKey))
	for _, e := range p.byKey {
		managers = append(managers, e.m)
	}
	s.mu.Unlock()
	for _, e := range p.fresh {
		e.m.Start()
	}
	for k, e := range old {
		if p.byKey[k] != e {
			e.close()
		}
	}
	p.fresh = nil
	if len(managers) == 0 {
		s.px.SetACME(nil)
		return
	}
	s.px.SetACME(func(host, path string) ([]byte, bool) {
		for _, m := range managers {
			if body, ok := m.HTTPChallenge(host, path); ok {
				return body, true
			}
		}
		return nil, false
	})
}

// close closes every manager; at shutdown.
func (s *acmeSet) close() {
	s.mu.Lock()
	all := s.live
	s.live = map[string]*acmeEntry{}
	s.mu.Unlock()
	for _, e := range all {
		e.close()
	}
}

// acmeTLS is the TLS config of a listener with an acme block: the ACME certificate for
// its domains (and the TLS-ALPN-01 challenge), the listener's certificate files, if
// any, for every other name and while ACME has none yet.
func acmeTLS(store *tlsstore.Store, e *acmeEntry, min uint16, protos []string) *tls.Config {
	cfg := tlsstore.ServerConfig(store, min, append(slices.Clone(protos), acme.ALPNProto))
	cfg.GetCertificate = func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		if slices.Contains(hello.SupportedProtos, acme.ALPNProto) || store == nil || covers(e.domains, hello.ServerName) {
			if c, err := e.m.GetCertificate(hello); c != nil || store == nil {
				return c, err
			}
		}
		return store.GetCertificate(hello)
	}
	return cfg
}

// covers reports whether name is one of domains (or matches a "*." one of them).
func covers(domains []string, name string) bool {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	for _, d := range domains {
		if d == name || strings.HasPrefix(d, "*.") && strings.Count(name, ".") > 0 && name[strings.IndexByte(name, '.'):] == d[1:] {
			return true
		}
	}
	return false
}

// portOf returns the port of a "host:port" address, or 0 (the default) when it has none
// or asks for any free port.
func portOf(addr string) int {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(p)
	return n
}

// plainPort is the port of the first plain listener of cfg (listen, then listener
// blocks without tls), 0 for the default, or -1 when there is none: no HTTP-01 then.
func plainPort(cfg *config.Config) int {
	if cfg.Listen != "" {
		return portOf(cfg.Listen)
	}
	for _, l := range cfg.Listeners {
		if l.TLS == nil {
			return portOf(l.Address)
		}
	}
	return -1
}
