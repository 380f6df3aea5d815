package router

import (
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"skiff/config"
	"skiff/router/lb"
)

// Table is the compiled services and routes of a snapshot: which service a connection
// or request is addressed to, and which route takes it. It is immutable; lookups do not
// lock and, for the common cases, do not allocate.
type Table struct {
	services map[string]*service
	// byAddr finds services by virtual address; byPrefix holds those given as wider CIDRs,
	// longest prefix first.
	byAddr   map[netip.Addr][]*service
	byPrefix []prefixService
	// byHost finds services by exact host name ("reviews") or host:port
	// ("reviews:9080"); wildcards ("*.example.com") are in suffixes, longest first.
	byHost   map[string][]hostSuffix
	suffixes []hostSuffix
	tcp      []*tcpRoute
}

type prefixService struct {
	p   netip.Prefix
	svc *service
}

// hostSuffix is a host name a service answers to: the whole name in byHost, a
// wildcard's suffix (".example.com") in suffixes.
type hostSuffix struct {
	suffix string
	port   uint16 // 0: any port of the service
	svc    *service
}

// service is a compiled config service.
type service struct {
	name string
	cfg  *config.Service
	// passthrough: the service names no endpoints (no static list, no DNS), so traffic
	// addressed to it goes to its original destination; routes may still act on it.
	passthrough bool
	clusters    map[string]*cluster // by subset name; "" is the whole service
	hash        config.HashKey
	http        []*httpRoute // gRPC routes first, then HTTP routes, each in file order
	hasGRPC     bool
}

// Destination is where a route sends traffic: a service, one of its subsets, a port.
type destination struct {
	svc     *service
	cluster *cluster
	port    uint16 // 0: the port the traffic arrived for
}

// httpRoute is a compiled HTTP or gRPC route.
type httpRoute struct {
	name     string
	grpc     bool // matches only gRPC requests
	matches  []httpMatch
	dests    *lb.Weighted[*destination]
	redirect *config.Redirect
	direct   *config.DirectResponse
	rewrite  *config.Rewrite
	reqOps   headerOps
	respOps  headerOps
	timeout  time.Duration
	mirror   *mirror
}

type mirror struct {
	dest    destination
	percent float64
}

type httpMatch struct {
	authority *config.StringMatch
	path      *config.StringMatch
	methods   []string
	headers   []valueMatch
	query     []valueMatch
}

type valueMatch struct {
	name string // canonical header key, or query parameter name
	m    *config.ValueMatch
}

// headerOps is config.HeaderOps with canonical header keys.
type headerOps struct {
	remove []string
	set    [][2]string
	add    [][2]string
}

func (o *headerOps) empty() bool { return len(o.remove)+len(o.set)+len(o.add) == 0 }

func (o *headerOps) apply(h http.Header) {
	for _, k := range o.remove {
		delete(h, k)
	}
	for _, kv := range o.set {
		h[kv[0]] = []string{kv[1]}
	}
	for _, kv := range o.add {
		h[kv[0]] = append(h[kv[0]], kv[1])
	}
}

// tcpRoute is a compiled TCP route.
type tcpRoute struct {
	name  string
	svc   *service // nil: any destination
	port  uint16   // 0: any port
	sni   []string // exact names, or "*.suffix"; empty: any
	dests *lb.Weighted[*destination]
}

// endpointSource is a service's current endpoints (discovery.Set).
type endpointSource interface {
	Load() ([]lb.Endpoint, uint64)
}

// compileTable builds the table of a validated config; sets gives each service's
// endpoints (nil for a service with none configured).
func compileTable(cfg *config.Config, sets func(service string) endpointSource) (*Table, error) {
	t := &Table{services: make(map[string]*service, len(cfg.Services)), byAddr: map[netip.Addr][]*service{}, byHost: map[string][]hostSuffix{}}
	for i := range cfg.Services {
		sc := &cfg.Services[i]
		policy, err := lb.Parse(sc.LoadBalancer.Policy)
		if err != nil {
			return nil, fmt.Errorf("services[%d].load_balancer.policy: %w", i, err)
		}
		s := &service{name: sc.Name, cfg: sc, hash: sc.LoadBalancer.Hash, clusters: map[string]*cluster{}}
		var src endpointSource
		if sets != nil {
			src = sets(sc.Name)
		}
		s.passthrough = len(sc.Endpoints) == 0 && sc.DNS == nil
		if !s.passthrough && src == nil {
			src = staticSource(sc)
		}
		s.clusters[""] = newCluster(src, policy, nil)
		for _, ss := range sc.Subsets {
			s.clusters[ss.Name] = newCluster(src, policy, ss.Labels)
		}
		t.services[sc.Name] = s
		for _, p := range sc.AddrPrefixes() {
			if p.IsSingleIP() {
				t.byAddr[p.Addr()] = append(t.byAddr[p.Addr()], s)
			} else {
				t.byPrefix = append(t.byPrefix, prefixService{p, s})
			}
		}
		for _, h := range sc.Hosts {
			hs := hostSuffix{suffix: strings.ToLower(h), svc: s}
			if host, port, ok := splitHostPort(hs.suffix); ok {
				hs.suffix, hs.port = host, port
			}
			if rest, ok := strings.CutPrefix(hs.suffix, "*"); ok {
				hs.suffix = rest
				t.suffixes = append(t.suffixes, hs)
				continue
			}
			t.byHost[hs.suffix] = append(t.byHost[hs.suffix], hs)
		}
	}
	slices.SortStableFunc(t.byPrefix, func(a, b prefixService) int { return b.p.Bits() - a.p.Bits() })
	slices.SortStableFunc(t.suffixes, func(a, b hostSuffix) int { return len(b.suffix) - len(a.suffix) })

	for i := range cfg.Routes.GRPC {
		rc := &cfg.Routes.GRPC[i]
		r := &httpRoute{name: rc.Name, grpc: true, timeout: rc.Timeout,
			reqOps: compileOps(rc.RequestHeaders), respOps: compileOps(rc.ResponseHeaders)}
		for j := range rc.Match {
			m := &rc.Match[j]
			path := &config.StringMatch{Prefix: "/" + m.GRPCService + "/"}
			if m.Method != "" {
				path = &config.StringMatch{Exact: "/" + m.GRPCService + "/" + m.Method}
			}
			r.matches = append(r.matches, httpMatch{path: path, headers: compileValues(m.Headers, true)})
		}
		r.dests = t.compileDests(rc.Destinations)
		s := t.services[rc.Service]
		s.http = append(s.http, r)
		s.hasGRPC = true
	}
	for i := range cfg.Routes.HTTP {
		rc := &cfg.Routes.HTTP[i]
		r := &httpRoute{name: rc.Name, redirect: rc.Redirect, direct: rc.DirectResponse, rewrite: rc.Rewrite,
			timeout: rc.Timeout, reqOps: compileOps(rc.RequestHeaders), respOps: compileOps(rc.ResponseHeaders)}
		for j := range rc.Match {
			m := &rc.Match[j]
			r.matches = append(r.matches, httpMatch{authority: m.Authority, path: m.Path, methods: m.Methods,
				headers: compileValues(m.Headers, true), query: compileValues(m.Query, false)})
		}
		if len(rc.Destinations) > 0 {
			r.dests = t.compileDests(rc.Destinations)
		}
		if mc := rc.Mirror; mc != nil {
			ms := t.services[mc.Service]
			r.mirror = &mirror{dest: destination{svc: ms, cluster: ms.clusters[mc.Subset], port: uint16(mc.Port)}, percent: mc.Percent}
		}
		s := t.services[rc.Service]
		s.http = append(s.http, r)
	}
	for i := range cfg.Routes.TCP {
		rc := &cfg.Routes.TCP[i]
		r := &tcpRoute{name: rc.Name, port: uint16(rc.Port), dests: t.compileDests(rc.Destinations)}
		if rc.Service != "" {
			r.svc = t.services[rc.Service]
		}
		for _, n := range rc.SNI {
			r.sni = append(r.sni, strings.ToLower(n))
		}
		t.tcp = append(t.tcp, r)
	}
	return t, nil
}

func (t *Table) compileDests(ds []config.Destination) *lb.Weighted[*destination] {
	choices := make([]lb.Choice[*destination], 0, len(ds))
	for _, d := range ds {
		s := t.services[d.Service]
		choices = append(choices, lb.Choice[*destination]{
			Item:   &destination{svc: s, cluster: s.clusters[d.Subset], port: uint16(d.Port)},
			Weight: uint32(d.Weight),
		})
	}
	return lb.NewWeighted(choices, nil)
}

func compileOps(o config.HeaderOps) headerOps {
	var c headerOps
	for _, k := range o.Remove {
		c.remove = append(c.remove, http.CanonicalHeaderKey(k))
	}
	// Sorted, so that a config gives the same request whatever the map order.
	for _, k := range slices.Sorted(mapKeys(o.Set)) {
		c.set = append(c.set, [2]string{http.CanonicalHeaderKey(k), o.Set[k]})
	}
	for _, k := range slices.Sorted(mapKeys(o.Add)) {
		c.add = append(c.add, [2]string{http.CanonicalHeaderKey(k), o.Add[k]})
	}
	return c
}

func mapKeys(m map[string]string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func compileValues(ms []config.ValueMatch, header bool) []valueMatch {
	out := make([]valueMatch, 0, len(ms))
	for i := range ms {
		name := ms[i].Name
		if header {
			name = http.CanonicalHeaderKey(name)
		}
		out = append(out, valueMatch{name: name, m: &ms[i]})
	}
	return out
}

// serviceAt returns the service whose virtual address and port dst is, or nil.
func (t *Table) serviceAt(dst netip.AddrPort) *service {
	a := dst.Addr().Unmap()
	for _, s := range t.byAddr[a] {
		if _, ok := s.cfg.Port(dst.Port()); ok {
			return s
		}
	}
	for _, ps := range t.byPrefix {
		if ps.p.Contains(a) {
			if _, ok := ps.svc.cfg.Port(dst.Port()); ok {
				return ps.svc
			}
		}
	}
	return nil
}

// serviceFor returns the service an HTTP request is addressed to: by the connection's
// original destination, else by its Host / :authority (host lowercased, port from the
// header or else dst's), or nil.
func (t *Table) serviceFor(dst netip.AddrPort, host string) *service {
	if s := t.serviceAt(dst); s != nil {
		return s
	}
	if host == "" || (len(t.byHost) == 0 && len(t.suffixes) == 0) {
		return nil
	}
	name, port, ok := splitHostPort(host)
	if !ok {
		name, port = host, dst.Port()
	}
	name = lowerASCII(name)
	// A name with the port given wins over the same name for any port.
	var any *service
	for _, hs := range t.byHost[name] {
		if _, ok := hs.svc.cfg.Port(port); !ok {
			continue
		}
		if hs.port == port {
			return hs.svc
		}
		if hs.port == 0 && any == nil {
			any = hs.svc
		}
	}
	if any != nil {
		return any
	}
	for _, hs := range t.suffixes {
		if strings.HasSuffix(name, hs.suffix) && len(name) > len(hs.suffix) && (hs.port == 0 || hs.port == port) {
			if _, ok := hs.svc.cfg.Port(port); ok {
				return hs.svc
			}
		}
	}
	return nil
}

// matchHTTP returns the first route of s that r matches, or nil.
func (s *service) matchHTTP(r *http.Request, grpc bool) *httpRoute {
	var query url.Values
	for _, rt := range s.http {
		if rt.grpc && !grpc {
			continue
		}
		if len(rt.matches) == 0 {
			return rt
		}
		for i := range rt.matches {
			if rt.matches[i].matches(r, &query) {
				return rt
			}
		}
	}
	return nil
}

func (m *httpMatch) matches(r *http.Request, query *url.Values) bool {
	if m.authority != nil {
		host := r.Host
		if h, _, ok := splitHostPort(host); ok {
			host = h
		}
		if !matchString(m.authority, host) {
			return false
		}
	}
	if m.path != nil && !matchString(m.path, r.URL.Path) {
		return false
	}
	if len(m.methods) > 0 && !slices.Contains(m.methods, r.Method) {
		return false
	}
	for i := range m.headers {
		vs, ok := r.Header[m.headers[i].name]
		if m.headers[i].name == "Host" {
			// net/http moves Host (and HTTP/2's :authority) out of the header map.
			vs, ok = []string{r.Host}, r.Host != ""
		}
		if !matchValue(m.headers[i].m, vs, ok) {
			return false
		}
	}
	if len(m.query) > 0 {
		if *query == nil {
			// Parsed once per request, and only when a route asks about the query.
			*query, _ = url.ParseQuery(r.URL.RawQuery)
		}
		for i := range m.query {
			vs, ok := (*query)[m.query[i].name]
			if !matchValue(m.query[i].m, vs, ok) {
				return false
			}
		}
	}
	return true
}

func matchString(m *config.StringMatch, v string) bool {
	switch {
	case m.Exact != "":
		return v == m.Exact
	case m.Prefix != "":
		return strings.HasPrefix(v, m.Prefix)
	default:
		return m.Re().MatchString(v)
	}
}

// matchValue matches a header or parameter that has values vs (present says whether it
// was there at all). With several values, any one matching is enough.
func matchValue(m *config.ValueMatch, vs []string, present bool) bool {
	switch {
	case m.Present:
		return present
	case m.Absent:
		return !present
	}
	for _, v := range vs {
		switch {
		case m.Exact != "":
			if v == m.Exact {
				return true
			}
		case m.Prefix != "":
			if strings.HasPrefix(v, m.Prefix) {
				return true
			}
		default:
			if m.Re().MatchString(v) {
				return true
			}
		}
	}
	return false
}

// matchTCP returns the first TCP route for a connection to dst (addressed to svc, which
// may be nil) with TLS server name sni ("" if none), or nil.
func (t *Table) matchTCP(svc *service, dst netip.AddrPort, sni string) *tcpRoute {
	for _, r := range t.tcp {
		if r.svc != nil && r.svc != svc {
			continue
		}
		if r.port != 0 && r.port != dst.Port() {
			continue
		}
		if len(r.sni) > 0 && !matchSNI(r.sni, sni) {
			continue
		}
		return r
	}
	return nil
}

func matchSNI(names []string, sni string) bool {
	if sni == "" {
		return false
	}
	sni = lowerASCII(sni)
	for _, n := range names {
		if suffix, ok := strings.CutPrefix(n, "*"); ok {
			if strings.HasSuffix(sni, suffix) && len(sni) > len(suffix) {
				return true
			}
		} else if n == sni {
			return true
		}
	}
	return false
}

// splitHostPort splits "host:port" ("[v6]:port"); ok is false when there is no port.
func splitHostPort(hp string) (string, uint16, bool) {
	i := strings.LastIndexByte(hp, ':')
	if i < 0 || strings.HasSuffix(hp[:i], ":") || (strings.Contains(hp[:i], ":") && !strings.HasPrefix(hp, "[")) {
		return hp, 0, false
	}
	p, err := strconv.ParseUint(hp[i+1:], 10, 16)
	if err != nil || p == 0 {
		return hp, 0, false
	}
	return strings.TrimSuffix(strings.TrimPrefix(hp[:i], "["), "]"), uint16(p), true
}

// lowerASCII lowercases s, without allocating when it already is.
func lowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			return strings.ToLower(s)
		}
	}
	return s
}

// TCPTarget decides an outbound connection relayed as TCP to dst from src, with TLS
// server name sni ("" if none): by the first TCP route that matches, else to the
// endpoints of the service dst is an address of. routed is false when neither applies
// (the connection goes to dst untouched); ok is false when the chosen service has no
// endpoint now. done must be called when the connection ends.
func (t *Table) TCPTarget(dst, src netip.AddrPort, sni string) (addr netip.AddrPort, done func(), service string, routed, ok bool) {
	svc := t.serviceAt(dst)
	var dest *destination
	if r := t.matchTCP(svc, dst, sni); r != nil {
		if dest, ok = r.dests.Pick(); !ok {
			return netip.AddrPort{}, nopDone, "", true, false
		}
	} else if svc != nil {
		dest = &destination{svc: svc, cluster: svc.clusters[""]}
	} else {
		return dst, nopDone, "", false, true
	}
	a, d, ok := dest.resolve(dst.Port(), dst, lb.HashAddr(src.Addr()))
	return a, d, dest.svc.name, true, ok
}

// PinnedProtocol is the protocol an outbound connection to dst is taken to carry,
// skipping detection: the protocol of the service port dst is, or tcp when a TCP route
// without server names takes every connection to dst; auto otherwise.
func (t *Table) PinnedProtocol(dst netip.AddrPort) string {
	if len(t.services) == 0 && len(t.tcp) == 0 {
		return config.ProtoAuto
	}
	svc := t.serviceAt(dst)
	if svc != nil {
		if sp, ok := svc.cfg.Port(dst.Port()); ok && sp.Protocol != config.ProtoAuto {
			return sp.Protocol
		}
	}
	for _, r := range t.tcp {
		if len(r.sni) == 0 && (r.svc == nil || r.svc == svc) && (r.port == 0 || r.port == dst.Port()) {
			return config.ProtoTCP
		}
	}
	return config.ProtoAuto
}
