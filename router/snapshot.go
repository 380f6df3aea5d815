package router

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/rs/zerolog"

	"skiff/config"
	"skiff/router/authz"
	"skiff/router/discovery"
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
	// reg keeps each service's endpoints across reloads; mu serialises Apply.
	reg *discovery.Registry
	mu  sync.Mutex
}

// NewRouter returns a router with cfg in force. cfg must be valid (config.Load's).
func NewRouter(cfg *config.Config, log zerolog.Logger, m *telemetry.Metrics) (*Router, error) {
	r := &Router{log: log, metrics: m, reg: discovery.NewRegistry(log, m)}
	if err := r.Apply(cfg); err != nil {
		return nil, err
	}
	return r, nil
}

// Snapshot returns the snapshot in force.
func (r *Router) Snapshot() *Snapshot { return r.cur.Load() }

// Apply compiles cfg into a snapshot and puts it in force. On error nothing changes.
// Services that stay keep their endpoint sets (and so their DNS resolvers and what
// they found); upstream connection pools are keyed by endpoint address and live in
// the proxy, so an endpoint that stays keeps its pooled connections too.
func (r *Router) Apply(cfg *config.Config) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	az, err := authz.Compile(&cfg.Authorization)
	if err != nil {
		return fmt.Errorf("authorization: %w", err)
	}
	r.reg.Update(discovery.SpecsFromConfig(cfg))
	t, err := compileTable(cfg, func(name string) endpointSource {
		if s := r.reg.Set(name); s != nil {
			return s
		}
		return nil
	})
	if err != nil {
		if prev := r.cur.Load(); prev != nil {
			r.reg.Update(discovery.SpecsFromConfig(prev.Config))
		}
		return err
	}
	r.cur.Store(&Snapshot{Config: cfg, Authz: az, Routes: t})
	return nil
}

// Close stops endpoint discovery.
func (r *Router) Close() { r.reg.Close() }
