package acme

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/redis/rueidis"
)

// ALPNProto is the ALPN protocol of the TLS-ALPN-01 challenge (RFC 8737). A TLS listener
// that should answer it must list it in tls.Config.NextProtos and use
// Manager.GetCertificate; crypto/tls then negotiates it only with clients that offer it
// (the CA's validator), never with browsers.
const ALPNProto = "acme-tls/1"

// ErrNoCertificate is returned by GetCertificate when the Manager has no certificate for the
// name the client asked for: the name is not managed, or its certificate was not obtained
// yet. A caller with other certificates falls back to them on this error.
var ErrNoCertificate = errors.New("acme: no certificate for this server name yet")

// Defaults of Options.
const (
	// DefaultRetryMin is the first wait after a failed attempt to obtain a certificate; each
	// further failure doubles it up to Options.RetryMax.
	DefaultRetryMin = time.Second
	// DefaultRetryMax is the default of Options.RetryMax.
	DefaultRetryMax = 10 * time.Minute
	// DefaultHTTPPort and DefaultTLSPort are the ports a CA validates on.
	DefaultHTTPPort = 80
	DefaultTLSPort  = 443
)

// Options configures New. Zero values take the defaults named on each field.
type Options struct {
	// Domains are the DNS names to manage, one certificate each (certmagic's model). Required;
	// lower-cased; no wildcards (HTTP-01 and TLS-ALPN-01 cannot validate them), no IPs.
	Domains []string
	// Email is the ACME account's contact. Required: certmagic would otherwise prompt for one
	// on stdin.
	Email string
	// Directory is the ACME directory URL. Default: Let's Encrypt production
	// (certmagic.LetsEncryptProductionCA).
	Directory string
	// CARoots is the trust for the ACME server's own HTTPS (a private CA such as pebble's);
	// nil means the system roots.
	CARoots *x509.CertPool
	// StateDir is the directory for certificates, keys and the account (created 0700, files
	// 0600) when Redis is nil. One of StateDir and Redis is required; Redis wins when both
	// are set.
	StateDir string
	// Redis is the storage of a cluster (see RedisStorage, prefix DefaultRedisPrefix): it is
	// called for every storage operation and may return nil while connecting (operations
	// then fail and are retried).
	Redis func() rueidis.Client
	// RenewWindow is the fraction of a certificate's lifetime left at which it is renewed
	// when the CA gives no renewal information (ARI), in (0, 1). Default: certmagic's
	// DefaultRenewalWindowRatio (1/3).
	RenewWindow float64
	// RenewCheckInterval is how often the background maintenance checks for renewals.
	// Default: certmagic's DefaultRenewCheckInterval (10 minutes); short-lived certificates
	// need a shorter one (certmagic renews at the latest 5 intervals before expiry).
	RenewCheckInterval time.Duration
	// RetryMax bounds the wait between attempts to obtain a certificate that is missing
	// (the first wait is DefaultRetryMin, doubling). Default DefaultRetryMax.
	RetryMax time.Duration
	// DisableHTTP01 and DisableTLSALPN01 turn a challenge type off, e.g. when no plain
	// listener serves HTTPChallenge on port 80. At least one must stay on.
	DisableHTTP01, DisableTLSALPN01 bool
	// HTTPPort and TLSPort are where the CA reaches edge's listeners for HTTP-01 and
	// TLS-ALPN-01 (default 80 and 443; differ only behind port mapping or in tests).
	// certmagic binds a challenge server of its own there only when nothing listens on the
	// port.
	HTTPPort, TLSPort int

	// ocspCheckInterval overrides certmagic's DefaultOCSPCheckInterval (1 h), for tests.
	ocspCheckInterval time.Duration
}

// CertInfo describes one managed certificate, for the admin API and the expiry metric.
type CertInfo struct {
	Names     []string  // DNS names in the certificate
	NotBefore time.Time // validity start
	NotAfter  time.Time // validity end
	Serial    string    // lower-case hex, no separators
	Issuer    string    // the issuer's distinguished name, RFC 2253 style
}

// Manager obtains, renews and serves the certificates of Options.Domains. Its methods are
// safe for concurrent use. Build one per set of domains and keep it across config reloads
// that do not change its Options; Close it when they change.
type Manager struct {
	opts  Options
	log   *slog.Logger
	names map[string]struct{} // normalized Domains
	store certmagic.Storage

	rt atomic.Pointer[runtime] // nil before Start and after Close

	mu      sync.Mutex // guards started, closed, cancel
	started bool
	closed  bool
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// runtime is what Start builds: certmagic's cache and configs.
type runtime struct {
	cache  *certmagic.Cache
	cfg    *certmagic.Config // obtains, renews, staples OCSP
	fast   *certmagic.Config // loads from storage without fetching an OCSP staple first
	issuer *certmagic.ACMEIssuer
}

// New validates o and returns a Manager that does nothing until Start. It does not touch the
// network, the disk or Redis, so a CA or Redis that is down never makes it fail. log may be
// nil (no logging).
func New(o Options, log *slog.Logger) (*Manager, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if len(o.Domains) == 0 {
		return nil, errors.New("acme: no domains to manage")
	}
	names := make(map[string]struct{}, len(o.Domains))
	domains := make([]string, 0, len(o.Domains))
	for _, d := range o.Domains {
		n := normName(d)
		if err := checkName(n); err != nil {
			return nil, fmt.Errorf("acme: domain %q: %w", d, err)
		}
		if _, dup := names[n]; dup {
			return nil, fmt.Errorf("acme: domain %q is listed twice", d)
		}
		names[n] = struct{}{}
		domains = append(domains, n)
	}
	o.Domains = domains
	if strings.TrimSpace(o.Email) == "" {
		return nil, errors.New("acme: an account email is required")
	}
	if o.Directory == "" {
		o.Directory = certmagic.LetsEncryptProductionCA
	}
	if u, err := url.Parse(o.Directory); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("acme: directory %q is not an http(s) URL", o.Directory)
	}
	if o.RenewWindow < 0 || o.RenewWindow >= 1 {
		return nil, fmt.Errorf("acme: renew window %v is outside (0, 1)", o.RenewWindow)
	}
	if o.RenewWindow == 0 {
		o.RenewWindow = certmagic.DefaultRenewalWindowRatio
	}
	if o.RenewCheckInterval < 0 || o.RetryMax < 0 {
		return nil, errors.New("acme: negative renew check interval or retry max")
	}
	if o.RenewCheckInterval == 0 {
		o.RenewCheckInterval = certmagic.DefaultRenewCheckInterval
	}
	if o.RetryMax == 0 {
		o.RetryMax = DefaultRetryMax
	}
	if o.DisableHTTP01 && o.DisableTLSALPN01 {
		return nil, errors.New("acme: both challenge types are disabled")
	}
	if o.HTTPPort == 0 {
		o.HTTPPort = DefaultHTTPPort
	}
	if o.TLSPort == 0 {
		o.TLSPort = DefaultTLSPort
	}
	if o.HTTPPort < 0 || o.HTTPPort > 65535 || o.TLSPort < 0 || o.TLSPort > 65535 {
		return nil, fmt.Errorf("acme: challenge ports %d/%d out of range", o.HTTPPort, o.TLSPort)
	}
	m := &Manager{opts: o, log: log, names: names}
	switch {
	case o.Redis != nil:
		m.store = NewRedisStorage(o.Redis, "")
	case o.StateDir != "":
		m.store = &certmagic.FileStorage{Path: o.StateDir}
	default:
		return nil, errors.New("acme: neither a state directory nor Redis for storage")
	}
	return m, nil
}

// normName lower-cases a DNS name and drops a trailing dot.
func normName(s string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(s)), ".")
}

// checkName accepts what a CA validates with HTTP-01 or TLS-ALPN-01: a DNS name of at least
// two labels of letters, digits and hyphens.
func checkName(n string) error {
	if n == "" || len(n) > 253 {
		return errors.New("empty or longer than 253 bytes")
	}
	if net.ParseIP(n) != nil {
		return errors.New("IP addresses are not supported")
	}
	if strings.Contains(n, "*") {
		return errors.New("wildcards need DNS-01, which is not supported")
	}
	labels := strings.Split(n, ".")
	if len(labels) < 2 {
		return errors.New("needs at least two labels")
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return fmt.Errorf("bad label %q", l)
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("bad character %q", c)
			}
		}
	}
	return nil
}

// Start begins managing the certificates in the background and returns at once: for each
// domain it loads a stored certificate (served from then on), or obtains one, retrying with
// backoff while the CA or the storage is unreachable; certmagic's maintenance then renews.
// Calling Start again, or after Close, does nothing.
func (m *Manager) Start() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.started || m.closed {
		return
	}
	m.started = true
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	rt := m.build()
	m.rt.Store(rt)
	for _, name := range m.opts.Domains {
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			m.manage(ctx, rt, name)
		}()
	}
}

// build creates certmagic's cache and configs.
func (m *Manager) build() *runtime {
	zl := newZap(m.log.With("component", "acme"))
	rt := &runtime{}
	rt.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert:   func(certmagic.Certificate) (*certmagic.Config, error) { return rt.cfg, nil },
		RenewCheckInterval: m.opts.RenewCheckInterval,
		OCSPCheckInterval:  m.opts.ocspCheckInterval,
		Logger:             zl,
	})
	base := certmagic.Config{
		RenewalWindowRatio: m.opts.RenewWindow,
		Storage:            m.store,
		Logger:             zl,
		// Bound OCSP fetches: certmagic uses a client without a timeout unless a proxy
		// function is set, and then a 30 s one.
		OCSP: certmagic.OCSPConfig{HTTPProxy: http.ProxyFromEnvironment},
	}
	rt.cfg = certmagic.New(rt.cache, base)
	rt.issuer = certmagic.NewACMEIssuer(rt.cfg, certmagic.ACMEIssuer{
		CA:                      m.opts.Directory,
		Email:                   m.opts.Email,
		Agreed:                  true,
		TrustedRoots:            m.opts.CARoots,
		DisableHTTPChallenge:    m.opts.DisableHTTP01,
		DisableTLSALPNChallenge: m.opts.DisableTLSALPN01,
		AltHTTPPort:             m.opts.HTTPPort,
		AltTLSALPNPort:          m.opts.TLSPort,
		Logger:                  zl,
	})
	rt.cfg.Issuers = []certmagic.Issuer{rt.issuer}
	fast := base
	fast.OCSP = certmagic.OCSPConfig{DisableStapling: true}
	fast.Issuers = rt.cfg.Issuers
	rt.fast = certmagic.New(rt.cache, fast)
	return rt
}

// manage makes sure name has a certificate in the cache, retrying with backoff until it
// does or ctx ends; renewals are then certmagic's maintenance.
func (m *Manager) manage(ctx context.Context, rt *runtime, name string) {
	wait := DefaultRetryMin
	for attempt := 1; ; attempt++ {
		err := m.ensure(ctx, rt, name)
		if err == nil || ctx.Err() != nil {
			return
		}
		// Jitter spreads the retries of a fleet that lost its CA at the same moment.
		d := wait/2 + rand.N(wait/2+1)
		m.log.Warn("acme: cannot get a certificate; will retry",
			"domain", name, "attempt", attempt, "retry_in", d.Round(time.Millisecond), "error", err)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = min(2*wait, m.opts.RetryMax)
	}
}

// ensure loads the stored certificate of name (renewing it first when due) or obtains one.
func (m *Manager) ensure(ctx context.Context, rt *runtime, name string) error {
	cert, err := rt.fast.CacheManagedCertificate(ctx, name)
	if err == nil {
		if !cert.NeedsRenewal(rt.cfg) {
			return nil
		}
		// Serving the old certificate goes on while renewing.
		if err := rt.cfg.RenewCertSync(ctx, name, false); err != nil {
			return fmt.Errorf("cannot renew the stored certificate of %q: %w", name, err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("cannot load the stored certificate of %q: %w", name, err)
	} else if err := rt.cfg.ObtainCertSync(ctx, name); err != nil {
		// ObtainCertSync takes the storage lock, so on a cluster one node orders; the others
		// wait for the lock and find the certificate stored.
		return fmt.Errorf("cannot obtain a certificate for %q: %w", name, err)
	}
	if _, err := rt.fast.CacheManagedCertificate(ctx, name); err != nil {
		return fmt.Errorf("cannot load the new certificate of %q: %w", name, err)
	}
	m.log.Info("acme: certificate ready", "domain", name)
	return nil
}

// Close stops management: background attempts end, certmagic's maintenance stops and locks
// this node holds are released by their holders as they return. Certificates stay in
// storage. GetCertificate answers ErrNoCertificate afterwards. Close is idempotent.
func (m *Manager) Close() {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	m.closed = true
	rt := m.rt.Swap(nil)
	if m.cancel != nil {
		m.cancel()
	}
	m.mu.Unlock()
	m.wg.Wait()
	if rt != nil {
		rt.cache.Stop()
	}
}

// GetCertificate is a tls.Config.GetCertificate: the managed certificate for hello's server
// name, or ErrNoCertificate (nil certificate) when there is none yet or the name is not
// managed, so a caller can fall back to other certificates. A hello offering only
// ALPNProto gets the TLS-ALPN-01 challenge certificate of a challenge in progress on any
// node. It does not block on the network for managed names (the certificate is in memory).
func (m *Manager) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	rt := m.rt.Load()
	if rt == nil {
		return nil, ErrNoCertificate
	}
	if len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == ALPNProto {
		c, err := rt.cfg.GetCertificate(hello)
		if err != nil {
			return nil, fmt.Errorf("acme: no TLS-ALPN-01 challenge for %q: %w", hello.ServerName, err)
		}
		return c, nil
	}
	name := hello.ServerName
	if _, ok := m.names[name]; !ok {
		if _, ok := m.names[normName(name)]; !ok {
			return nil, ErrNoCertificate
		}
	}
	c, err := rt.cfg.GetCertificate(hello)
	if err != nil || c == nil || len(c.Certificate) == 0 {
		return nil, ErrNoCertificate
	}
	return c, nil
}

// challengePrefix is the path of HTTP-01 requests (RFC 8555 section 8.3).
const challengePrefix = "/.well-known/acme-challenge/"

// HTTPChallenge answers GET /.well-known/acme-challenge/<token> sent to host (the Host header,
// a port is ignored): the key authorization to send with status 200 and Content-Type
// text/plain, and ok; ok is false when path is not a challenge this node or another node
// sharing the storage has in progress (answer 404, or go on with the request). It may read
// the storage (Redis) for challenges started elsewhere.
func (m *Manager) HTTPChallenge(host, path string) (body []byte, ok bool) {
	rt := m.rt.Load()
	if rt == nil || !strings.HasPrefix(path, challengePrefix) {
		return nil, false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r := (&http.Request{
		Method:     http.MethodGet,
		Host:       host,
		URL:        &url.URL{Path: path},
		RequestURI: path,
		Header:     make(http.Header),
		RemoteAddr: "edge",
	}).WithContext(ctx)
	w := &bodyWriter{header: make(http.Header)}
	if !rt.issuer.HandleHTTPChallenge(w, r) {
		return nil, false
	}
	return w.body, true
}

// bodyWriter is the http.ResponseWriter HandleHTTPChallenge writes its answer to.
type bodyWriter struct {
	header http.Header
	body   []byte
}

func (w *bodyWriter) Header() http.Header         { return w.header }
func (w *bodyWriter) WriteHeader(int)             {}
func (w *bodyWriter) Write(p []byte) (int, error) { w.body = append(w.body, p...); return len(p), nil }

// Certificates describes the certificate served for each domain that has one, in
// Options.Domains order (when several are cached during a renewal, the one expiring last).
func (m *Manager) Certificates() []CertInfo {
	rt := m.rt.Load()
	if rt == nil {
		return nil
	}
	var out []CertInfo
	for _, name := range m.opts.Domains {
		var best *x509.Certificate
		for _, c := range rt.cache.AllMatchingCertificates(name) {
			if c.Leaf != nil && slices.Contains(c.Names, name) && (best == nil || c.Leaf.NotAfter.After(best.NotAfter)) {
				best = c.Leaf
			}
		}
		if best == nil {
			continue
		}
		out = append(out, CertInfo{
			Names:     best.DNSNames,
			NotBefore: best.NotBefore,
			NotAfter:  best.NotAfter,
			Serial:    best.SerialNumber.Text(16),
			Issuer:    best.Issuer.String(),
		})
	}
	return out
}
