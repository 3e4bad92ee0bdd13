package main

import (
	"log/slog"
	"syscall"

	"github.com/edge-gw/edge/config"
)

// connBudget is how many client connections cfg lets edge hold at once: max_conns
// for each HTTP listener (the top-level listen and every listener block) plus each
// TCP stream's max_conns.
func connBudget(cfg *config.Config) int {
	n := len(cfg.Listeners) * cfg.MaxConns
	if cfg.Listen != "" {
		n += cfg.MaxConns
	}
	for _, s := range cfg.Streams {
		if s.Protocol != "udp" {
			n += s.MaxConns
		}
	}
	return n
}

// warnNOFILE logs a warning when cfg allows more client connections than edge may
// open descriptors (RLIMIT_NOFILE, which the Go runtime has raised to the hard limit
// at start): past it, accepting and dialling upstreams fail with "too many open
// files" long before max_conns refuses anyone, so the descriptor limit, not
// max_conns, is then the real bound. Each proxied connection may hold an upstream
// connection too, hence the factor 2.
func warnNOFILE(cfg *config.Config, log *slog.Logger) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return
	}
	if want := connBudget(cfg); uint64(2*want) > lim.Cur {
		log.Warn("max_conns allows more connections than the descriptor limit: raise it (systemd LimitNOFILE=, ulimit -n) or lower max_conns",
			"max_conns_total", want, "descriptors_needed", 2*want, "nofile", lim.Cur)
	}
}
