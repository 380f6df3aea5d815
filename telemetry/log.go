package telemetry

import (
	"io"
	"os"
	"time"

	"github.com/rs/zerolog"
)

// NewLogger returns the process logger: JSON lines by default (for collectors), or a
// coloured console form for people.
func NewLogger(w io.Writer, format, level string) zerolog.Logger {
	if w == nil {
		w = os.Stderr
	}
	if format == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.RFC3339}
	}
	SetLevel(level)
	return zerolog.New(w).With().Timestamp().Logger()
}

// SetLevel changes the level of every logger of the process at once; it is how a config
// reload applies log.level without a restart.
func SetLevel(level string) {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil {
		lvl = zerolog.InfoLevel
	}
	zerolog.SetGlobalLevel(lvl)
}
