// Package authz decides whether an inbound connection or request may reach the
// workload, by the policies of config's authorization section.
package authz

import (
	"net/http"
	"net/netip"

	"skiff/config"
)

// Engine is a compiled, immutable set of policies; a nil Engine allows everything.
type Engine struct{}

// Compile builds an Engine from a validated config section.
func Compile(a *config.Authorization) (*Engine, error) { return &Engine{}, nil }

// Request is what a decision looks at. HTTP is false for a connection that is not
// proxied as HTTP; Method, Path and Header are then unset.
type Request struct {
	Principal string // the peer's verified SPIFFE ID, "" without mesh mTLS
	Source    netip.Addr
	Port      uint16 // the workload's destination port
	HTTP      bool
	Method    string
	Path      string
	Header    http.Header
}

// Decision is the outcome of Check.
type Decision struct {
	Allow  bool
	Policy string // the policy that decided, or "default"
}

// Check decides a request.
func (e *Engine) Check(r *Request) Decision { return Decision{Allow: true, Policy: "default"} }
