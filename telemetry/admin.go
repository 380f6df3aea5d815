package telemetry

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/pprof"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Admin is the proxy's own HTTP endpoint (127.0.0.1:15000 by default): readiness,
// liveness, metrics, the config in force, and pprof for profiling.
type Admin struct {
	ready  atomic.Bool
	config func() any
	srv    *http.Server
}

// NewAdmin serves m's registry and the value config returns (marshalled as JSON).
func NewAdmin(m *Metrics, config func() any) *Admin {
	a := &Admin{config: config}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, _ *http.Request) {
		if !a.ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry}))
	mux.HandleFunc("GET /config", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(a.config())
	})
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	a.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	return a
}

// SetReady marks the proxy ready (its listeners are up) or not (it is draining).
func (a *Admin) SetReady(v bool) { a.ready.Store(v) }

// Serve serves on ln until Close.
func (a *Admin) Serve(ln net.Listener) error {
	if err := a.srv.Serve(ln); err != http.ErrServerClosed {
		return err
	}
	return nil
}

// Close stops the admin server.
func (a *Admin) Close() error { return a.srv.Close() }
