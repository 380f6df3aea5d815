package router

import (
	"fmt"
	"sync/atomic"

	"github.com/rs/zerolog"

	"skiff/config"
	"skiff/router/authz"
	"skiff/telemetry"
)

// Snapshot is one config compiled for the data path: immutable once built. A reload
// builds a new one and swaps it in with one atomic store; a request or connection
// loads the snapshot once when it starts and uses it to its end.
type Snapshot struct {
	Config *config.Config
	Authz  *authz.Engine
	Routes *Table
}

// Router holds the snapshot in force and what outlives snapshots (endpoint discovery,
// load-balancer state). The listener and the HTTP proxy share one.
type Router struct {
	cur     atomic.Pointer[Snapshot]
	log     zerolog.Logger
	metrics *telemetry.Metrics
}

// NewRouter returns a router with cfg in force. cfg must be valid (config.Load's).
func NewRouter(cfg *config.Config, log zerolog.Logger, m *telemetry.Metrics) (*Router, error) {
	r := &Router{log: log, metrics: m}
	if err := r.Apply(cfg); err != nil {
		return nil, err
	}
	return r, nil
}

// Snapshot returns the snapshot in force.
func (r *Router) Snapshot() *Snapshot { return r.cur.Load() }

// Apply compiles cfg into a snapshot and puts it in force. On error nothing changes.
func (r *Router) Apply(cfg *config.Config) error {
	az, err := authz.Compile(&cfg.Authorization)
	if err != nil {
		return fmt.Errorf("authorization: %w", err)
	}
	t, err := compileTable(cfg)
	if err != nil {
		return err
	}
	r.cur.Store(&Snapshot{Config: cfg, Authz: az, Routes: t})
	return nil
}
