package main

import (
	"errors"
	"github.com/edge-gw/edge/tlsstore"
	"log/slog"
	"net/http"
	"os"
	"runtime"
	"time"

	"github.com/edge-gw/edge/admin"
	"github.com/edge-gw/edge/cluster"
	"github.com/edge-gw/edge/config"
	"github.com/edge-gw/edge/listener"
	"github.com/edge-gw/edge/proxy"
	"github.com/edge-gw/edge/stream"
	"github.com/edge-gw/edge/workers"
	"github.com/prometheus/client_golang/prometheus"
)

// reloader is the one writer of the running config: SIGHUP and POST /reload send
// requests to its loop, which loads, validates, builds and swaps one at a time.
type reloader struct {
	path string
	px   *proxy.Proxy
	// cluster is this node when the config has a cluster block (set once, before
	// the loop runs); reloads apply a changed join list to it.
	cluster *cluster.Cluster
	log     *slog.Logger
	reqs    chan chan reloadResult
	// workers steers GOMAXPROCS while the config leaves workers at 0 (auto).
	workers *workers.Controller
	// listeners are the client-facing sockets; every load re-reads their certificates.
	listeners *listener.Set
	// streams are the L4 listeners (stream blocks).
	streams *stream.Set
	// acme are the ACME managers of the listeners' acme blocks.
	acme *acmeSet
	// tickets are the TLS session-ticket keys of every listener; the tls_tickets block
	// makes them derive from a secret the cluster shares.
	tickets *tlsstore.Tickets

	reloads     *prometheus.CounterVec
	lastOK      prometheus.Gauge
	lastSuccess prometheus.Gauge
	version     prometheus.Gauge
}

type reloadResult struct {
	version   int64
	unchanged bool
	err       error
}

func newReloader(path string, px *proxy.Proxy, reg prometheus.Registerer, log *slog.Logger) *reloader {
	r := &reloader{
		path: path, px: px, log: log, reqs: make(chan chan reloadResult),
		workers: &workers.Controller{
			Policy:  workers.Policy{CPUs: defaultProcs},
			Traffic: px.Traffic,
			Log:     log,
		},
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_config_reloads_total", Help: "Config reloads by result (success, failure).",
		}, []string{"result"}),
		lastOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edge_config_last_reload_successful", Help: "1 when the last reload succeeded, 0 when it failed and the previous config is still running.",
		}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edge_config_last_reload_success_timestamp_seconds", Help: "Unix time of the last successful load.",
		}),
		version: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edge_config_version", Help: "Version of the running config: 1 at start, +1 per applied reload.",
		}),
	}
	workersNow := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "edge_workers", Help: "Go scheduler slots (GOMAXPROCS) running edge now.",
	}, func() float64 { return float64(runtime.GOMAXPROCS(0)) })
	workersAuto := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "edge_workers_auto", Help: "1 when the workers controller steers edge_workers (workers = 0), else 0.",
	}, func() float64 {
		if r.workers.Enabled() {
			return 1
		}
		return 0
	})
	reg.MustRegister(r.reloads, r.lastOK, r.lastSuccess, r.version, workersNow, workersAuto)
	r.reloads.WithLabelValues("success")
	r.reloads.WithLabelValues("failure")
	return r
}

// defaultProcs is GOMAXPROCS as Go chose it at start: the CPUs the process may use
// (affinity and cgroup limit included).
var defaultProcs = runtime.GOMAXPROCS(0)

// setWorkers applies cfg's workers to the Go scheduler. An explicit GOMAXPROCS in the
// environment wins, then an explicit workers count; by default (0) the workers
// controller steers the count from the traffic, starting from the count in force (one
// slot per CPU at start).
func (r *reloader) setWorkers(cfg *config.Config) {
	switch {
	case os.Getenv("GOMAXPROCS") != "":
		r.workers.Enable(false)
	case cfg.Workers > 0:
		r.workers.Enable(false)
		runtime.GOMAXPROCS(cfg.Workers)
	default:
		r.workers.Enable(true)
	}
}

// front is a config's listeners and streams, bound but not serving yet: commit
// applies both, abort undoes both.
type front struct {
	l *listener.Prepared
	s *stream.Prepared
	a *acmePrepared
}

func (f front) commit(cfg *config.Config) {
	f.a.commit()
	f.l.Commit(cfg.ShutdownTimeout)
	f.s.Commit()
}

func (f front) abort() {
	f.l.Abort()
	f.s.Abort()
	f.a.abort()
}

// prepareFront reads cfg's certificate files and binds the addresses of its new
// listeners and streams; nothing changes for clients until the result is committed.
func (r *reloader) prepareFront(cfg *config.Config) (front, error) {
	certs, err := loadCerts(cfg, time.Now())
	if err != nil {
		return front{}, err
	}
	specs, err := streamSpecs(cfg, r.px)
	if err != nil {
		return front{}, err
	}
	ap, err := r.acme.prepare(cfg, true)
	if err != nil {
		return front{}, err
	}
	lp, err := r.listeners.Prepare(listenerSpecs(cfg, certs, r.px, ap))
	if err != nil {
		ap.abort()
		return front{}, err
	}
	sp, err := r.streams.Prepare(specs)
	if err != nil {
		lp.Abort()
		ap.abort()
		return front{}, err
	}
	return front{lp, sp, ap}, nil
}

// startFront opens the listeners and streams of the first config.
func (r *reloader) startFront(cfg *config.Config) error {
	f, err := r.prepareFront(cfg)
	if err != nil {
		return err
	}
	f.commit(cfg)
	r.setTickets(cfg)
	return nil
}

// setTickets applies cfg's tls_tickets block: keys from its secret, or random ones.
func (r *reloader) setTickets(cfg *config.Config) {
	var secret []byte
	if cfg.TLSTickets != nil {
		secret = []byte(cfg.TLSTickets.Secret)
	}
	if err := r.tickets.SetSecret(secret); err != nil { // config checked the length
		r.log.Error("tls_tickets: secret refused", "error", err)
	}
}

// start applies the first config.
func (r *reloader) start(cfg *config.Config) error {
	s, err := r.px.Apply(cfg)
	if err != nil {
		return err
	}
	r.setWorkers(cfg)
	r.succeeded(s.Version)
	return nil
}

func (r *reloader) succeeded(v int64) {
	r.lastOK.Set(1)
	r.lastSuccess.Set(float64(time.Now().Unix()))
	r.version.Set(float64(v))
}

// loop serves reload requests one at a time until the process exits.
func (r *reloader) loop() {
	for reply := range r.reqs {
		reply <- r.reload()
	}
}

// request asks the loop for a reload and waits for its outcome.
func (r *reloader) request() reloadResult {
	reply := make(chan reloadResult, 1)
	r.reqs <- reply
	return <-reply
}

func (r *reloader) reload() reloadResult {
	cur := r.px.Current()
	cfg, err := config.Load(r.path)
	if err == nil && cfg.Hash == cur.Config.Hash {
		// The file is the same, but certificate files may have been renewed.
		f, err := r.prepareFront(cur.Config)
		if err != nil {
			return r.failed(cur, err)
		}
		f.commit(cur.Config)
		r.log.Info("config unchanged; certificates re-read", "config", r.path, "version", cur.Version)
		return reloadResult{version: cur.Version, unchanged: true}
	}
	var s *proxy.Snapshot
	var join []string
	var f front
	if err == nil {
		join, err = checkClusterReload(cur.Config, cfg)
	}
	if err == nil {
		f, err = r.prepareFront(cfg)
	}
	if err == nil {
		if s, err = r.px.Apply(cfg); err != nil {
			f.abort()
		}
	}
	if err != nil {
		return r.failed(cur, err)
	}
	f.commit(cfg)
	r.setTickets(cfg)
	r.reloads.WithLabelValues("success").Inc()
	r.setWorkers(cfg)
	r.succeeded(s.Version)
	r.log.Info("config reloaded", "config", r.path, "version", s.Version)
	if join != nil && r.cluster != nil {
		go func(c *cluster.Cluster) {
			if n, err := c.Join(join); err != nil {
				r.log.Warn("cluster: cannot join the new join list", "join", join, "error", err)
			} else {
				r.log.Info("cluster: joined the new join list", "join", join, "contacted", n)
			}
		}(r.cluster)
	}
	return reloadResult{version: s.Version}
}

// failed records a refused reload: the running config (and certificates) stay.
func (r *reloader) failed(cur *proxy.Snapshot, err error) reloadResult {
	r.reloads.WithLabelValues("failure").Inc()
	r.lastOK.Set(0)
	r.log.Error("reload failed; the running config stays", "config", r.path, "version", cur.Version, "error", err)
	return reloadResult{version: cur.Version, err: err}
}

// serveReload is POST /reload.
func (r *reloader) serveReload(w http.ResponseWriter, _ *http.Request) {
	res := r.request()
	if res.err != nil {
		var ps config.Problems
		errs := []string{res.err.Error()}
		if errors.As(res.err, &ps) {
			errs = errs[:0]
			for _, p := range ps {
				errs = append(errs, p.String())
			}
		}
		admin.JSON(w, http.StatusBadRequest, map[string]any{"ok": false, "error": errs[0], "errors": errs, "version": res.version})
		return
	}
	admin.JSON(w, http.StatusOK, map[string]any{"ok": true, "version": res.version, "unchanged": res.unchanged})
}
