package membership

import (
	"bytes"
	"context"
	"log/slog"
)

// logBridge turns memberlist's log.Logger lines ("[WARN] memberlist: ...")
// into slog records at the matching level, so that one *slog.Logger
// carries everything a node logs.
type logBridge struct{ log *slog.Logger }

var levels = []struct {
	prefix []byte
	level  slog.Level
}{
	{[]byte("[DEBUG] "), slog.LevelDebug},
	{[]byte("[INFO] "), slog.LevelInfo},
	{[]byte("[WARN] "), slog.LevelWarn},
	{[]byte("[ERR] "), slog.LevelError},
	{[]byte("[ERROR] "), slog.LevelError},
}

func (b *logBridge) Write(p []byte) (int, error) {
	line := bytes.TrimRight(p, "\n")
	level := slog.LevelInfo
	for _, l := range levels {
		if bytes.HasPrefix(line, l.prefix) {
			level, line = l.level, line[len(l.prefix):]
			break
		}
	}
	if b.log.Enabled(context.Background(), level) {
		b.log.Log(context.Background(), level, string(line), "component", "memberlist")
	}
	return len(p), nil
}
