package router

import (
	"net/netip"
	"sync/atomic"

	"skiff/config"
	"skiff/router/discovery"
	"skiff/router/lb"
)

// cluster is a service, or one of its subsets, with a load balancer over its current
// endpoints. Endpoints change without a reload (DNS discovery): the picker is rebuilt
// when a request finds the endpoint set's version moved, and swapped in atomically, so
// requests in flight keep the endpoint they were given while new ones see the new set.
type cluster struct {
	src    endpointSource // nil: the service is a passthrough
	policy lb.Policy
	labels map[string]string // nil: every endpoint
	state  atomic.Pointer[pickerState]
}

type pickerState struct {
	version uint64
	picker  lb.Picker
	n       int // endpoints in the picker
}

func newCluster(src endpointSource, policy lb.Policy, labels map[string]string) *cluster {
	return &cluster{src: src, policy: policy, labels: labels}
}

// pick returns an endpoint for a request with hash key key, and its Done; nil when the
// cluster has no endpoints now.
func (c *cluster) pick(key uint64) (*lb.Endpoint, lb.Done) {
	eps, version := c.src.Load()
	st := c.state.Load()
	if st == nil || st.version != version {
		st = c.rebuild(st, eps, version)
	}
	return st.picker.Pick(key)
}

func (c *cluster) rebuild(prev *pickerState, eps []lb.Endpoint, version uint64) *pickerState {
	sel := eps
	if c.labels != nil {
		sel = make([]lb.Endpoint, 0, len(eps))
		for _, e := range eps {
			if hasLabels(e.Labels, c.labels) {
				sel = append(sel, e)
			}
		}
	}
	var prevPicker lb.Picker
	if prev != nil {
		prevPicker = prev.picker
	}
	next := &pickerState{version: version, picker: lb.Rebuild(c.policy, prevPicker, sel), n: len(sel)}
	// Concurrent rebuilds of the same version build equal pickers; whichever lands is fine.
	c.state.CompareAndSwap(prev, next)
	return next
}

func hasLabels(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

// staticSource serves a service's static endpoints when no discovery registry is in
// use (tests, and the table built for `skiff validate`).
func staticSource(s *config.Service) endpointSource {
	return fixedSource(discovery.StaticEndpoints(s))
}

type fixedSource []lb.Endpoint

func (f fixedSource) Load() ([]lb.Endpoint, uint64) { return f, 1 }

// endpointAddr is where to dial a picked endpoint for service port sp: its own port, or
// the service port's target port.
func endpointAddr(e *lb.Endpoint, targetPort uint16) netip.AddrPort {
	if e.Addr.Port() != 0 {
		return e.Addr
	}
	return netip.AddrPortFrom(e.Addr.Addr(), targetPort)
}
