package router

import (
	"sync/atomic"

	"skiff/config"
	"skiff/router/authz"
)

// Snapshot is one config compiled for the data path: immutable once built. A reload
// builds a new one and swaps it in with one atomic store; a request or connection
// loads the snapshot once when it starts and uses it to its end.
type Snapshot struct {
	Config *config.Config
	Authz  *authz.Engine
	Routes *Table
}

// Current holds the snapshot in force.
type Current struct{ p atomic.Pointer[Snapshot] }

// Load returns the snapshot in force (nil before the first Store).
func (c *Current) Load() *Snapshot { return c.p.Load() }

// Store puts s in force.
func (c *Current) Store(s *Snapshot) { c.p.Store(s) }
