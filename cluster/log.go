package cluster

import (
	"context"
	"log/slog"
	"strings"
)

// logWriter turns memberlist's "[LEVEL] memberlist: …" lines into slog records
// at the matching level, and watches for the line that reports a suspect peer.
// memberlist's *log.Logger serialises calls to Write.
type logWriter struct {
	log     *slog.Logger
	members *members
}

func (w *logWriter) Write(p []byte) (int, error) {
	line := strings.TrimRight(string(p), "\n")
	level, msg := slog.LevelInfo, line
	if strings.HasPrefix(line, "[") {
		if i := strings.IndexByte(line, ']'); i > 0 {
			switch line[1:i] {
			case "DEBUG", "TRACE":
				level = slog.LevelDebug
			case "INFO":
				level = slog.LevelInfo
			case "WARN":
				level = slog.LevelWarn
			case "ERR", "ERROR":
				level = slog.LevelError
			}
			msg = strings.TrimSpace(line[i+1:])
		}
	}
	if name, ok := suspectedName(msg); ok {
		w.members.suspect(name)
	}
	if w.log.Enabled(context.Background(), level) {
		w.log.Log(context.Background(), level, msg)
	}
	return len(p), nil
}
