package main

import (
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/edge-gw/edge/handover"
	"github.com/edge-gw/edge/listener"
	"github.com/edge-gw/edge/proxy"
	"github.com/edge-gw/edge/stream"
)

// upgradeTimeout is how long the new binary has to come up before the old one gives up
// on it and goes on serving.
const upgradeTimeout = 30 * time.Second

// upgrade starts the binary at this process's path (replaced on disk by the new version)
// with the same arguments, handing it every listening socket and a copy of the response
// cache, and reports whether it came up: then the caller stops accepting and drains, as
// for SIGTERM, while the new process serves on the same sockets. A new binary that fails
// (a bad config, a crash) leaves this one serving.
func upgrade(px *proxy.Proxy, set *listener.Set, streams *stream.Set, admin net.Listener, cacheDir string, log *slog.Logger) bool {
	exe, err := os.Executable()
	if err != nil {
		log.Error("upgrade: cannot find this binary", "error", err)
		return false
	}
	log.Info("upgrade: starting the new binary", "path", exe)
	os.RemoveAll(cacheDir)
	if err := px.SaveCache(cacheDir); err != nil {
		log.Warn("upgrade: the new process starts with an empty cache", "error", err)
	}
	socks, err := set.Sockets()
	if err == nil {
		var more []handover.Socket
		if more, err = streams.Sockets(); err == nil {
			socks = append(socks, more...)
			var f *os.File
			if f, err = admin.(*net.TCPListener).File(); err == nil {
				socks = append(socks, handover.Socket{Key: "admin", File: f})
			}
		}
	}
	if err != nil {
		for _, s := range socks {
			s.File.Close()
		}
		os.RemoveAll(cacheDir)
		log.Error("upgrade: cannot hand the sockets over; still serving", "error", err)
		return false
	}
	p, err := handover.Start(exe, os.Args[1:], socks, upgradeTimeout)
	if err != nil {
		os.RemoveAll(cacheDir)
		log.Error("upgrade: the new binary did not come up; still serving", "error", err)
		return false
	}
	log.Info("upgrade: the new binary serves; draining", "pid", p.Pid)
	return true
}
