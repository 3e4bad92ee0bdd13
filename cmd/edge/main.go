// Command edge is the access-layer gateway: it reads edge.hcl, serves client
// traffic through the proxy and the admin API beside it, reloads on SIGHUP or
// POST /reload, and stops gracefully on SIGTERM or SIGINT.
//
// This file is wiring only: flags, listeners, signals and the one reload loop.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/edge-gw/edge/admin"
	"github.com/edge-gw/edge/config"
	"github.com/edge-gw/edge/handover"
	"github.com/edge-gw/edge/listener"
	"github.com/edge-gw/edge/proxy"
	"github.com/edge-gw/edge/stream"
	"github.com/edge-gw/edge/tlsstore"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	configPath := flag.String("config", "edge.hcl", "config file")
	check := flag.Bool("check", false, "parse and validate the config, print ok or every problem, and exit")
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()

	if *showVersion {
		fmt.Printf("edge %s (%s)\n", fullVersion(), runtime.Version())
		return
	}
	if *check {
		os.Exit(runCheck(*configPath))
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	slog.SetDefault(log) // features log through slog.Default
	if err := run(*configPath, log); err != nil {
		log.Error("edge stopped", "error", err)
		os.Exit(1)
	}
}

func fullVersion() string {
	if version != "dev" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				return "dev-" + s.Value[:12]
			}
		}
	}
	return version
}

// runCheck runs the startup path up to serving: load, validate, build.
func runCheck(path string) int {
	cfg, err := config.Load(path)
	if err == nil {
		_, err = loadCerts(cfg, time.Now())
	}
	if err == nil { // acme blocks: their options and ca_roots files; nothing is ordered
		var ap *acmePrepared
		if ap, err = newACMESet(nil, slog.New(slog.DiscardHandler)).prepare(cfg, false); err == nil {
			ap.abort()
		}
	}
	if err == nil {
		err = proxy.Check(cfg)
	}
	if err != nil {
		// Problems go to stdout, like "ok", so that one stream says the verdict.
		fmt.Println(err)
		return 1
	}
	fmt.Println("ok")
	return 0
}

func run(path string, log *slog.Logger) error {
	cfg, err := config.Load(path)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "edge_build_info", Help: "Build of the running edge; always 1.",
	}, []string{"version", "goversion"})
	buildInfo.WithLabelValues(fullVersion(), runtime.Version()).Set(1)
	reg.MustRegister(buildInfo)

	px := proxy.New(proxy.NewMetrics(reg))
	if err := os.MkdirAll(cfg.StateDir, 0o755); err != nil {
		return fmt.Errorf("cannot create state_dir: %w", err)
	}
	cacheDir := filepath.Join(cfg.StateDir, "cache.handover")
	if handover.Inherited() { // an upgrade: the old process saved its cache here
		px.LoadCacheFrom(cacheDir)
		defer os.RemoveAll(cacheDir)
	}
	rl := newReloader(path, px, reg, log)
	if err := rl.start(cfg); err != nil {
		return err
	}
	// The cluster node comes after the first config, which the proxy replays
	// received state into, and before serving, so limits are split from the start
	// (by 1 until the background join succeeds).
	var node *clusterNode
	if cfg.Cluster != nil {
		if node, err = startCluster(cfg.Cluster, px, log); err != nil {
			px.Close()
			return err
		}
		rl.cluster = node.c
	}
	leave := func() {
		if node != nil {
			node.stop()
		}
	}

	tickets := tlsstore.NewTickets(0, 0)
	rl.tickets = tickets
	set := listener.NewSet(listener.NewMetrics(reg), tickets, log)
	rl.listeners = set
	streams := stream.NewSet(log)
	reg.MustRegister(streams.Collector())
	rl.streams = streams
	rl.acme = newACMESet(px, log)
	defer rl.acme.close()
	if err := rl.startFront(cfg); err != nil {
		leave()
		return err
	}
	adminLn, err := handover.Listen("admin", cfg.Admin.Listen)
	if err != nil {
		set.Shutdown(context.Background())
		streams.Shutdown(context.Background())
		leave()
		return fmt.Errorf("cannot listen on admin %s: %w", cfg.Admin.Listen, err)
	}
	warnNOFILE(cfg, log)
	if cfg.Admin.Token == "" {
		log.Warn("admin has no token: mutating calls are open to local users", "admin", adminLn.Addr().String())
	}

	api := admin.New(reg, func() string { return px.Current().Config.Admin.Token })
	api.Handle("POST /reload", rl.serveReload)
	px.RegisterAdmin(api)
	registerStatus(api, reg, px, node)
	api.Handle("GET /listeners", func(w http.ResponseWriter, _ *http.Request) {
		admin.JSON(w, http.StatusOK, map[string]any{"listeners": set.List()})
	})
	api.Handle("GET /streams", func(w http.ResponseWriter, _ *http.Request) {
		admin.JSON(w, http.StatusOK, map[string]any{"streams": streams.List()})
	})
	if cfg.Admin.Pprof {
		api.Handle("GET /debug/pprof/", pprof.Index)
		api.Handle("GET /debug/pprof/profile", pprof.Profile)
	}
	adminSrv := &http.Server{Handler: api, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 60 * time.Second, MaxHeaderBytes: 64 << 10}

	errc := make(chan error, 1)
	go func() {
		if err := adminSrv.Serve(adminLn); !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("admin server: %w", err)
		}
	}()
	go rl.loop()
	stopWorkers := make(chan struct{})
	defer close(stopWorkers)
	go rl.workers.Run(stopWorkers)
	go tickets.Run(stopWorkers)
	// Signals are caught before edge says it listens: one sent right after that line
	// must not meet the default action (SIGUSR1 and SIGUSR2 would end the process).
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1, syscall.SIGUSR2)
	log.Info("edge listening", "addr", set.Addr(config.DefaultListener), "admin", adminLn.Addr().String(),
		"version", fullVersion(), "config", path, "workers_auto", rl.workers.Enabled(), "workers", runtime.GOMAXPROCS(0))

	handover.Ready() // an upgrade's old process may stop accepting now
	for {
		select {
		case err := <-errc:
			leave()
			return err
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				go rl.request() // the loop logs the outcome
				continue
			}
			if sig == syscall.SIGUSR2 { // a new binary takes over, or this one goes on
				if upgrade(px, set, streams, adminLn, cacheDir, log) {
					return shutdown(px, set, streams, adminSrv, log, sig, leave)
				}
				continue
			}
			if sig == syscall.SIGUSR1 { // logrotate's postrotate: reopen the access log file
				if err := px.ReopenLog(); err != nil {
					log.Error("access log: cannot reopen its file; still writing to the old one", "error", err)
				} else {
					log.Info("access log reopened")
				}
				continue
			}
			return shutdown(px, set, streams, adminSrv, log, sig, leave)
		}
	}
}

// shutdown stops accepting on every listener, lets in-flight requests (and HTTP/2
// streams, after GOAWAY) finish within shutdown_timeout, and flushes the access log.
//
// The cluster node leaves while the server drains, not after: the server stops
// accepting at once, so the requests still running have already passed their
// limits, and the other nodes should take over this node's share of cluster
// limits now (a leave is seen in well under a second) rather than run short of it
// for up to shutdown_timeout. Leaving before closing the listener would, the other
// way round, let this node admit its full share while the others already
// enforce a larger one.
func shutdown(px *proxy.Proxy, set *listener.Set, streams *stream.Set, adminSrv *http.Server, log *slog.Logger, sig os.Signal, leave func()) error {
	timeout := px.Current().Config.ShutdownTimeout
	log.Info("edge stopping", "signal", sig.String(), "timeout", timeout.String())
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	drained := make(chan error, 1)
	go func() {
		// Listeners stop accepting and drain while open tunnels and stream connections
		// get the same time.
		tunnels, l4 := make(chan error, 1), make(chan error, 1)
		go func() { tunnels <- px.CloseTunnels(ctx) }()
		go func() { l4 <- streams.Shutdown(ctx) }()
		drained <- errors.Join(set.Shutdown(ctx), <-tunnels, <-l4)
	}()
	if leave != nil {
		leave()
	}
	err := <-drained
	adminCtx, cancelAdmin := context.WithTimeout(context.Background(), time.Second)
	defer cancelAdmin()
	adminSrv.Shutdown(adminCtx)
	px.Close()
	if err != nil {
		log.Warn("in-flight requests cut at shutdown_timeout", "error", err)
	}
	log.Info("edge stopped")
	return nil
}
