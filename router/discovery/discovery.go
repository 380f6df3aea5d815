// Package discovery keeps each service's current endpoints: its static list plus the
// addresses its DNS name resolves to, re-resolved on a schedule. Endpoint sets live
// across config reloads; a reload only starts and stops the resolvers it changes.
//
// DNS answers are read as Envoy's STRICT_DNS clusters read them:
//   - a failed lookup (timeout, SERVFAIL, refused, an unreachable server) changes
//     nothing: the last good addresses stay, since a resolver outage is not the
//     service's;
//   - an authoritative "no" (NXDOMAIN, or the name with neither A nor AAAA records) is
//     news about the service: a headless Service whose pods are all gone. The name then
//     gives zero endpoints, and requests get 503 rather than dials to dead pods.
//
// A lookup fails as a whole when either of its A and AAAA queries fails, so a lost
// AAAA answer cannot drain the IPv6 endpoints while the A answer came back.
package discovery

import (
	"maps"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"skiff/config"
	"skiff/router/lb"
	"skiff/telemetry"
)

// Spec is where one service's endpoints come from.
type Spec struct {
	Service string
	Static  []lb.Endpoint // Addr port 0: the service port's target port
	DNS     *DNS
}

// DNS is a name resolved into endpoints.
type DNS struct {
	Name    string
	Port    uint16 // 0: the service port's target port
	Refresh time.Duration
	Labels  map[string]string
	Servers []netip.AddrPort // empty: the system's resolvers
	// Timeout bounds one lookup at one server (the next server, if any, gets as long
	// again); 0 means DefaultTimeout.
	Timeout time.Duration
}

// DefaultTimeout bounds a lookup at one server when DNS.Timeout is 0: Envoy's default
// DNS query timeout.
const DefaultTimeout = 5 * time.Second

// minRefresh keeps a zero or negative Refresh (a Spec built by hand) from spinning.
const minRefresh = 10 * time.Millisecond

// firstWait is how long Update waits for the first resolution of new DNS names, in all.
const firstWait = time.Second

func (d *DNS) equal(o *DNS) bool {
	if d == nil || o == nil {
		return d == o
	}
	return d.Name == o.Name && d.Port == o.Port && d.Refresh == o.Refresh && d.Timeout == o.Timeout &&
		maps.Equal(d.Labels, o.Labels) && slices.Equal(d.Servers, o.Servers)
}

// Set is one service's current endpoints.
type Set struct {
	service string
	cur     atomic.Pointer[published]

	// mu orders the writers (Update and the service's resolver); readers never take it.
	mu      sync.Mutex
	static  []lb.Endpoint
	dns     *DNS         // the DNS spec in force, nil for none
	addrs   []netip.Addr // the last good addresses, sorted
	addrsOf string       // the name addrs are of: a changed name keeps the old ones until its first answer
	metrics *telemetry.Metrics
}

// published is one version of a Set's endpoints, immutable.
type published struct {
	eps     []lb.Endpoint
	version uint64
	changed chan struct{} // closed when the next version is published
}

func newSet(service string, m *telemetry.Metrics) *Set {
	s := &Set{service: service, metrics: m}
	s.cur.Store(&published{eps: []lb.Endpoint{}, changed: make(chan struct{})})
	return s
}

// Load returns the endpoints now, sorted by address, and a version number that changes
// whenever they do. The slice is shared with every other reader and never modified once
// published: callers must not change it (nor the Labels maps in it). A nil Set has no
// endpoints. Load takes no lock and does not allocate.
func (s *Set) Load() ([]lb.Endpoint, uint64) {
	if s == nil {
		return nil, 0
	}
	p := s.cur.Load()
	return p.eps, p.version
}

// Changed returns a channel closed at the next change of the endpoints. To wait for a
// change from what Load returned, call Changed before Load: the other order can miss a
// change that happens in between. A nil Set never changes: its channel is nil.
func (s *Set) Changed() <-chan struct{} {
	if s == nil {
		return nil
	}
	return s.cur.Load().changed
}

// Service returns the name of the service the set is of.
func (s *Set) Service() string { return s.service }

// publishLocked merges the static and DNS endpoints and publishes them as a new version
// if they differ from the current one. s.mu must be held.
func (s *Set) publishLocked() (changed bool) {
	eps := make([]lb.Endpoint, 0, len(s.static)+len(s.addrs))
	eps = append(eps, s.static...)
	if s.dns != nil {
		for _, a := range s.addrs {
			eps = append(eps, lb.Endpoint{Addr: netip.AddrPortFrom(a, s.dns.Port), Labels: s.dns.Labels})
		}
	}
	// Stable, so that of two entries for one address the static one (first) is kept:
	// its labels and weight are what the config says of that instance.
	slices.SortStableFunc(eps, func(a, b lb.Endpoint) int { return a.Addr.Compare(b.Addr) })
	eps = slices.CompactFunc(eps, func(a, b lb.Endpoint) bool { return a.Addr == b.Addr })
	eps = slices.Clip(eps)

	old := s.cur.Load()
	if slices.EqualFunc(old.eps, eps, sameEndpoint) {
		return false
	}
	s.cur.Store(&published{eps: eps, version: old.version + 1, changed: make(chan struct{})})
	close(old.changed)
	if s.metrics != nil {
		s.metrics.Endpoints.WithLabelValues(s.service).Set(float64(len(eps)))
	}
	return true
}

func sameEndpoint(a, b lb.Endpoint) bool {
	return a.Addr == b.Addr && a.Weight == b.Weight && maps.Equal(a.Labels, b.Labels)
}

// Registry holds the endpoint sets of the services the config names, and runs their
// DNS resolvers.
type Registry struct {
	log     zerolog.Logger
	metrics *telemetry.Metrics

	mu        sync.Mutex // serialises Update and Close
	sets      atomic.Pointer[map[string]*Set]
	resolvers map[string]*resolver
	closed    bool
	firstWait time.Duration
}

// NewRegistry returns an empty registry. m may be nil (no metrics).
func NewRegistry(log zerolog.Logger, m *telemetry.Metrics) *Registry {
	r := &Registry{log: log, metrics: m, resolvers: map[string]*resolver{}, firstWait: firstWait}
	r.sets.Store(&map[string]*Set{})
	return r
}

// Set returns the endpoint set of a service, nil for one the registry does not serve.
// It takes no lock.
func (r *Registry) Set(service string) *Set {
	return (*r.sets.Load())[service]
}

// Update makes the registry serve exactly these services; call it on every config
// reload, before the new snapshot is swapped in. A service that stays keeps its *Set and
// endpoints; its resolver keeps running if its DNS spec is unchanged and is restarted
// otherwise. Removed services' resolvers stop. Static endpoints apply at once. The first
// resolution of a new DNS name runs in the background, but Update waits for it (for a
// second at most, for all names together) so that a fresh service usually has its
// endpoints when traffic starts. After Close, Update does nothing.
func (r *Registry) Update(specs []Spec) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	old := *r.sets.Load()
	sets := make(map[string]*Set, len(specs))
	var waits []<-chan struct{}
	for i := range specs {
		sp := &specs[i]
		s := old[sp.Service]
		if s == nil {
			s = newSet(sp.Service, r.metrics)
			if r.metrics != nil {
				r.metrics.Endpoints.WithLabelValues(sp.Service).Set(0)
			}
		}
		sets[sp.Service] = s

		res := r.resolvers[sp.Service]
		keep := res != nil && res.spec.equal(sp.DNS)
		if res != nil && !keep {
			res.stop()
			delete(r.resolvers, sp.Service)
		}
		var dns *DNS
		if sp.DNS != nil {
			if keep {
				dns = res.spec
			} else {
				d := *sp.DNS
				dns = &d
			}
		}

		s.mu.Lock()
		s.static = slices.Clone(sp.Static)
		s.dns = dns
		newName := dns != nil && s.addrsOf != dns.Name
		if dns == nil {
			s.addrs, s.addrsOf = nil, ""
		}
		s.publishLocked()
		s.mu.Unlock()

		if dns != nil && !keep {
			res := r.start(s, dns)
			r.resolvers[sp.Service] = res
			if newName {
				waits = append(waits, res.first)
			}
		}
	}
	for name, s := range old {
		if sets[name] != nil {
			continue
		}
		if res := r.resolvers[name]; res != nil {
			res.stop()
			delete(r.resolvers, name)
		}
		// The set itself stays as it is: requests in flight on an older snapshot may
		// still hold it.
		if r.metrics != nil {
			r.metrics.Endpoints.DeleteLabelValues(s.service)
			r.metrics.DNSResolutions.DeleteLabelValues(s.service, "ok")
			r.metrics.DNSResolutions.DeleteLabelValues(s.service, "error")
		}
	}
	r.sets.Store(&sets)

	if len(waits) > 0 {
		t := time.NewTimer(r.firstWait)
		defer t.Stop()
		for _, w := range waits {
			select {
			case <-w:
			case <-t.C:
				return
			}
		}
	}
}

// Close stops every resolver and waits for them to end. The sets keep their endpoints.
func (r *Registry) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	for name, res := range r.resolvers {
		res.stop()
		delete(r.resolvers, name)
	}
}

// StaticEndpoints is a validated service's static endpoint list (port 0 where the
// config gave none).
func StaticEndpoints(svc *config.Service) []lb.Endpoint {
	eps := make([]lb.Endpoint, 0, len(svc.Endpoints))
	for j := range svc.Endpoints {
		e := &svc.Endpoints[j]
		eps = append(eps, lb.Endpoint{Addr: e.Addr(), Weight: uint32(e.Weight), Labels: e.Labels})
	}
	return eps
}

// SpecsFromConfig turns a validated config into specs, one per service (with or
// without endpoints), in the config's order.
func SpecsFromConfig(cfg *config.Config) []Spec {
	specs := make([]Spec, 0, len(cfg.Services))
	for i := range cfg.Services {
		svc := &cfg.Services[i]
		sp := Spec{Service: svc.Name, Static: StaticEndpoints(svc)}
		if d := svc.DNS; d != nil {
			refresh := d.Refresh
			if refresh <= 0 {
				refresh = cfg.Discovery.DNSRefresh
			}
			sp.DNS = &DNS{
				Name:    d.Name,
				Port:    uint16(d.Port),
				Refresh: refresh,
				Labels:  d.Labels,
				Servers: cfg.Discovery.Servers(),
			}
		}
		specs = append(specs, sp)
	}
	return specs
}
