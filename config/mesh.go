package config

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"time"
)

// The dynamic part of the file: services, where their endpoints come from, and the
// routes that send traffic to them. All of it may change while skiff runs; a reload
// validates it whole (every reference, regex, weight and port) before anything changes.
//
// The model follows Istio's: a Service is a ServiceEntry with its DestinationRule
// (endpoints, subsets, load balancing), and routes are a VirtualService's http, grpc and
// tcp sections. Routes apply to outbound traffic: what this workload sends to a service.
// Traffic to a destination no service names passes through untouched.

// Service is a destination the workload sends traffic to.
type Service struct {
	// Name identifies the service in routes (lowercase letters, digits, '-', '.', '_').
	Name string `mapstructure:"name" json:"name"`
	// Hosts are the names apps use for it in Host or :authority (exact, or "*.suffix"),
	// with or without a port.
	Hosts []string `mapstructure:"hosts" json:"hosts"`
	// Addresses are the virtual IPs (or CIDRs) apps dial: a connection's original
	// destination on one of them and one of Ports selects the service.
	Addresses []string `mapstructure:"addresses" json:"addresses"`
	// Ports the service is reached on. Empty means every port, each with protocol auto.
	Ports []ServicePort `mapstructure:"ports" json:"ports"`
	// Endpoints are a static list of the service's instances.
	Endpoints []Endpoint `mapstructure:"endpoints" json:"endpoints"`
	// DNS discovers instances from a name's A/AAAA records, re-resolved on a schedule;
	// its endpoints are added to the static ones.
	DNS *DNSDiscovery `mapstructure:"dns" json:"dns,omitempty"`
	// Subsets name groups of endpoints by their labels, for canaries and A/B tests.
	Subsets []Subset `mapstructure:"subsets" json:"subsets"`
	// LoadBalancer picks an endpoint for each request (each connection for TCP).
	LoadBalancer LoadBalancer `mapstructure:"load_balancer" json:"load_balancer"`

	addrs []netip.Prefix
	ports map[uint16]ServicePort
}

// ServicePort is one port of a service.
type ServicePort struct {
	Port int `mapstructure:"port" json:"port"`
	// Protocol is auto (sniffed), http, http2, grpc, tls or tcp.
	Protocol string `mapstructure:"protocol" json:"protocol"`
	// TargetPort is the endpoints' port for it; 0 means the same as Port.
	TargetPort int `mapstructure:"target_port" json:"target_port"`
}

// Endpoint is one instance of a service.
type Endpoint struct {
	// Address is IP or IP:port; without a port, the port of the service port in use
	// (its target_port) is dialled.
	Address string `mapstructure:"address" json:"address"`
	// Labels select the endpoint into subsets (keys are case-insensitive).
	Labels map[string]string `mapstructure:"labels" json:"labels"`
	// Weight is its relative share of the service's traffic; 0 means 1.
	Weight int `mapstructure:"weight" json:"weight"`

	addr netip.AddrPort // port 0 when Address had none
}

// DNSDiscovery resolves a name's A and AAAA records into endpoints (a Kubernetes
// headless Service gives one address per pod). Addresses that disappear drain; new ones
// join without a reload.
type DNSDiscovery struct {
	Name string `mapstructure:"name" json:"name"`
	// Port is the endpoints' port; 0 means the target_port of the service port in use.
	Port int `mapstructure:"port" json:"port"`
	// Refresh is how often the name is resolved again; 0 means discovery.dns_refresh.
	Refresh time.Duration `mapstructure:"refresh" json:"refresh"`
	// Labels are given to every endpoint found.
	Labels map[string]string `mapstructure:"labels" json:"labels"`
}

// Subset is a named group of a service's endpoints: those carrying all of Labels.
type Subset struct {
	Name   string            `mapstructure:"name" json:"name"`
	Labels map[string]string `mapstructure:"labels" json:"labels"`
}

// LoadBalancer is a service's load-balancing policy.
type LoadBalancer struct {
	// Policy is round_robin (the default), least_request, random, ring_hash or maglev.
	Policy string `mapstructure:"policy" json:"policy"`
	// Hash is the key of ring_hash and maglev, for session affinity.
	Hash HashKey `mapstructure:"hash" json:"hash"`
}

// HashKey says what a consistent-hash policy hashes: one of a header, a cookie or the
// source address. A request without the header or cookie is hashed on its source address.
type HashKey struct {
	Header   string `mapstructure:"header" json:"header"`
	Cookie   string `mapstructure:"cookie" json:"cookie"`
	SourceIP bool   `mapstructure:"source_ip" json:"source_ip"`
}

// Discovery holds the settings shared by every service's DNS discovery.
type Discovery struct {
	// DNSServers are the resolvers asked (IP or IP:port, port 53 by default); empty means
	// the system's (/etc/resolv.conf).
	DNSServers []string `mapstructure:"dns_servers" json:"dns_servers"`
	// DNSRefresh is how often names are resolved again, unless a service says otherwise.
	DNSRefresh time.Duration `mapstructure:"dns_refresh" json:"dns_refresh"`

	servers []netip.AddrPort
}

// Routes are the traffic rules, by protocol. In each list the first match wins.
type Routes struct {
	HTTP []HTTPRoute `mapstructure:"http" json:"http"`
	GRPC []GRPCRoute `mapstructure:"grpc" json:"grpc"`
	TCP  []TCPRoute  `mapstructure:"tcp" json:"tcp"`
}

// HTTPRoute sends matching HTTP requests (HTTP/1.1, HTTP/2, gRPC, WebSocket) addressed to
// a service somewhere, or answers them itself.
type HTTPRoute struct {
	// Name appears in logs and metrics.
	Name string `mapstructure:"name" json:"name"`
	// Service is the service the request is addressed to (by address or host name).
	Service string `mapstructure:"service" json:"service"`
	// Match lists alternatives: the route applies when any one matches (every
	// condition in it); an empty list matches every request.
	Match []HTTPMatch `mapstructure:"match" json:"match"`
	// Exactly one action: Destinations, Redirect or DirectResponse.
	// Destinations split the traffic by weight (a 90/10 canary).
	Destinations []Destination `mapstructure:"destinations" json:"destinations"`
	// Redirect answers with a redirect.
	Redirect *Redirect `mapstructure:"redirect" json:"redirect,omitempty"`
	// DirectResponse answers with a fixed status and body.
	DirectResponse *DirectResponse `mapstructure:"direct_response" json:"direct_response,omitempty"`
	// Rewrite changes the path prefix or the host before the request is sent on.
	Rewrite *Rewrite `mapstructure:"rewrite" json:"rewrite,omitempty"`
	// RequestHeaders and ResponseHeaders edit headers on the way.
	RequestHeaders  HeaderOps `mapstructure:"request_headers" json:"request_headers"`
	ResponseHeaders HeaderOps `mapstructure:"response_headers" json:"response_headers"`
	// Timeout bounds the whole request (until the response head); 0 means none.
	Timeout time.Duration `mapstructure:"timeout" json:"timeout"`
	// Mirror sends a copy of a share of the requests to another service, fire and forget.
	Mirror *Mirror `mapstructure:"mirror" json:"mirror,omitempty"`
}

// HTTPMatch is one set of conditions on a request; all must hold.
type HTTPMatch struct {
	// Authority matches the Host or :authority, without its port.
	Authority *StringMatch `mapstructure:"authority" json:"authority,omitempty"`
	Path      *StringMatch `mapstructure:"path" json:"path,omitempty"`
	// Methods matches any of the methods listed; empty means any.
	Methods []string     `mapstructure:"methods" json:"methods"`
	Headers []ValueMatch `mapstructure:"headers" json:"headers"`
	Query   []ValueMatch `mapstructure:"query" json:"query"`
}

// StringMatch is one of exact, prefix or regex (RE2, matched against the whole value).
type StringMatch struct {
	Exact  string `mapstructure:"exact" json:"exact,omitempty"`
	Prefix string `mapstructure:"prefix" json:"prefix,omitempty"`
	Regex  string `mapstructure:"regex" json:"regex,omitempty"`

	re *regexp.Regexp
}

// ValueMatch is a condition on a named header or query parameter: one of exact, prefix,
// regex, present or absent.
type ValueMatch struct {
	Name    string `mapstructure:"name" json:"name"`
	Exact   string `mapstructure:"exact" json:"exact,omitempty"`
	Prefix  string `mapstructure:"prefix" json:"prefix,omitempty"`
	Regex   string `mapstructure:"regex" json:"regex,omitempty"`
	Present bool   `mapstructure:"present" json:"present,omitempty"`
	Absent  bool   `mapstructure:"absent" json:"absent,omitempty"`

	re *regexp.Regexp
}

// Destination is a service (or one of its subsets) and a share of the traffic.
type Destination struct {
	Service string `mapstructure:"service" json:"service"`
	Subset  string `mapstructure:"subset" json:"subset,omitempty"`
	// Port is the service port to use; 0 means the port the request arrived for (or the
	// service's only port).
	Port int `mapstructure:"port" json:"port"`
	// Weight is the relative share; with one destination it may be left out.
	Weight int `mapstructure:"weight" json:"weight"`
}

// Redirect answers a request with a redirect to the same URL with the parts given
// changed.
type Redirect struct {
	Scheme string `mapstructure:"scheme" json:"scheme,omitempty"`
	Host   string `mapstructure:"host" json:"host,omitempty"`
	Port   int    `mapstructure:"port" json:"port,omitempty"`
	Path   string `mapstructure:"path" json:"path,omitempty"`
	// Code is 301 (the default), 302, 303, 307 or 308.
	Code int `mapstructure:"code" json:"code"`
}

// DirectResponse answers a request without any upstream.
type DirectResponse struct {
	Status int    `mapstructure:"status" json:"status"`
	Body   string `mapstructure:"body" json:"body"`
}

// Rewrite changes a request before it is sent on.
type Rewrite struct {
	// PathPrefix replaces the part of the path the match's path prefix matched (the
	// whole path for an exact match).
	PathPrefix string `mapstructure:"path_prefix" json:"path_prefix,omitempty"`
	// Host replaces the Host / :authority.
	Host string `mapstructure:"host" json:"host,omitempty"`
}

// HeaderOps edits headers: Set replaces, Add appends, Remove deletes (in that order:
// remove, then set, then add).
type HeaderOps struct {
	Set    map[string]string `mapstructure:"set" json:"set"`
	Add    map[string]string `mapstructure:"add" json:"add"`
	Remove []string          `mapstructure:"remove" json:"remove"`
}

// Mirror copies a share of a route's requests to another service. The copy's response
// is thrown away and it never slows the request it copies.
type Mirror struct {
	Service string `mapstructure:"service" json:"service"`
	Subset  string `mapstructure:"subset" json:"subset,omitempty"`
	Port    int    `mapstructure:"port" json:"port"`
	// Percent of the requests mirrored (0 to 100, fractions allowed); 0 means 100.
	Percent float64 `mapstructure:"percent" json:"percent"`
}

// GRPCRoute is the short form of an HTTP route for gRPC: it matches requests by gRPC
// service and method (their HTTP/2 path /<service>/<method>).
type GRPCRoute struct {
	Name    string      `mapstructure:"name" json:"name"`
	Service string      `mapstructure:"service" json:"service"`
	Match   []GRPCMatch `mapstructure:"match" json:"match"`
	// Destinations, Timeout and header edits are as in an HTTP route.
	Destinations    []Destination `mapstructure:"destinations" json:"destinations"`
	RequestHeaders  HeaderOps     `mapstructure:"request_headers" json:"request_headers"`
	ResponseHeaders HeaderOps     `mapstructure:"response_headers" json:"response_headers"`
	Timeout         time.Duration `mapstructure:"timeout" json:"timeout"`
}

// GRPCMatch matches a gRPC call: its service ("helloworld.Greeter"), optionally one
// method ("SayHello"), and metadata (headers).
type GRPCMatch struct {
	GRPCService string       `mapstructure:"grpc_service" json:"grpc_service"`
	Method      string       `mapstructure:"method" json:"method,omitempty"`
	Headers     []ValueMatch `mapstructure:"headers" json:"headers"`
}

// TCPRoute sends connections that are not proxied as HTTP (opaque TCP, and TLS the app
// terminates itself) by destination port and TLS server name.
type TCPRoute struct {
	Name string `mapstructure:"name" json:"name"`
	// Service, when set, limits the route to connections addressed to that service.
	Service string `mapstructure:"service" json:"service,omitempty"`
	// Port, when set, limits the route to connections to that destination port.
	Port int `mapstructure:"port" json:"port,omitempty"`
	// SNI, when set, limits the route to TLS connections whose ClientHello names one of
	// these servers (exact, or "*.suffix").
	SNI          []string      `mapstructure:"sni" json:"sni"`
	Destinations []Destination `mapstructure:"destinations" json:"destinations"`
}

// Service returns the service named n, or nil.
func (c *Config) Service(n string) *Service {
	for i := range c.Services {
		if c.Services[i].Name == n {
			return &c.Services[i]
		}
	}
	return nil
}

// AddrPrefixes returns the service's virtual addresses, parsed by Validate.
func (s *Service) AddrPrefixes() []netip.Prefix { return s.addrs }

// Port returns the service port p and whether the service has it. A service with no
// ports has every port, with protocol auto.
func (s *Service) Port(p uint16) (ServicePort, bool) {
	if len(s.Ports) == 0 {
		return ServicePort{Port: int(p), Protocol: ProtoAuto, TargetPort: int(p)}, true
	}
	sp, ok := s.ports[p]
	return sp, ok
}

// Addr returns the endpoint's address, parsed by Validate (port 0 when it has none).
func (e *Endpoint) Addr() netip.AddrPort { return e.addr }

// Re returns the compiled regex of a match, or nil.
func (m *StringMatch) Re() *regexp.Regexp { return m.re }

// Re returns the compiled regex of a match, or nil.
func (m *ValueMatch) Re() *regexp.Regexp { return m.re }

// Servers returns discovery.dns_servers, parsed by Validate.
func (d *Discovery) Servers() []netip.AddrPort { return d.servers }

var nameRe = regexp.MustCompile(`^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$`)
var hostRe = regexp.MustCompile(`^(\*\.)?[a-zA-Z0-9]([a-zA-Z0-9._-]*[a-zA-Z0-9])?(:[0-9]{1,5})?$`)
var headerNameRe = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")

var protocols = []string{ProtoAuto, ProtoHTTP, ProtoHTTP2, ProtoGRPC, ProtoTLS, ProtoTCP}

func (c *Config) validateMesh() error {
	d := &c.Discovery
	if d.DNSRefresh <= 0 {
		return &FieldError{"discovery.dns_refresh", fmt.Sprintf("must be a positive duration (got %v)", d.DNSRefresh)}
	}
	d.servers = nil
	for i, s := range d.DNSServers {
		ap, err := parseHostPort(s, 53)
		if err != nil {
			return &FieldError{fmt.Sprintf("discovery.dns_servers[%d]", i), err.Error()}
		}
		d.servers = append(d.servers, ap)
	}

	names := map[string]bool{}
	for i := range c.Services {
		s := &c.Services[i]
		key := fmt.Sprintf("services[%d]", i)
		if !nameRe.MatchString(s.Name) {
			return &FieldError{key + ".name", fmt.Sprintf("must be 1 to 63 lowercase letters, digits, '-', '.' or '_' (got %q)", s.Name)}
		}
		if names[s.Name] {
			return &FieldError{key + ".name", fmt.Sprintf("service %q is defined twice", s.Name)}
		}
		names[s.Name] = true
		if err := s.validate(key); err != nil {
			return err
		}
	}

	for i := range c.Routes.HTTP {
		r := &c.Routes.HTTP[i]
		if err := c.validateHTTPRoute(fmt.Sprintf("routes.http[%d]", i), r); err != nil {
			return err
		}
	}
	for i := range c.Routes.GRPC {
		r := &c.Routes.GRPC[i]
		key := fmt.Sprintf("routes.grpc[%d]", i)
		if err := c.checkRouteService(key, r.Service); err != nil {
			return err
		}
		for j := range r.Match {
			m := &r.Match[j]
			mk := fmt.Sprintf("%s.match[%d]", key, j)
			if m.GRPCService == "" || strings.ContainsAny(m.GRPCService, "/ ") {
				return &FieldError{mk + ".grpc_service", fmt.Sprintf("must be a fully qualified gRPC service such as helloworld.Greeter (got %q)", m.GRPCService)}
			}
			if strings.ContainsAny(m.Method, "/ ") {
				return &FieldError{mk + ".method", fmt.Sprintf("must be a method name such as SayHello (got %q)", m.Method)}
			}
			if err := validateValueMatches(mk+".headers", m.Headers, true); err != nil {
				return err
			}
		}
		if len(r.Destinations) == 0 {
			return &FieldError{key + ".destinations", "a gRPC route needs at least one destination"}
		}
		if err := c.validateDestinations(key+".destinations", r.Destinations); err != nil {
			return err
		}
		if err := validateEdits(key, r.RequestHeaders, r.ResponseHeaders, r.Timeout); err != nil {
			return err
		}
	}
	for i := range c.Routes.TCP {
		r := &c.Routes.TCP[i]
		key := fmt.Sprintf("routes.tcp[%d]", i)
		if r.Service != "" {
			if err := c.checkRouteService(key, r.Service); err != nil {
				return err
			}
		}
		if r.Port != 0 {
			if err := checkPort(key+".port", r.Port); err != nil {
				return err
			}
		}
		if r.Service == "" && r.Port == 0 && len(r.SNI) == 0 {
			return &FieldError{key, "a TCP route needs at least one of service, port or sni (it would take every connection)"}
		}
		for j, h := range r.SNI {
			if !hostRe.MatchString(h) || strings.Contains(h, ":") {
				return &FieldError{fmt.Sprintf("%s.sni[%d]", key, j), fmt.Sprintf("must be a server name, exact or *.suffix (got %q)", h)}
			}
		}
		if len(r.Destinations) == 0 {
			return &FieldError{key + ".destinations", "a TCP route needs at least one destination"}
		}
		if err := c.validateDestinations(key+".destinations", r.Destinations); err != nil {
			return err
		}
	}
	return nil
}

func (s *Service) validate(key string) error {
	for j, h := range s.Hosts {
		if !hostRe.MatchString(h) {
			return &FieldError{fmt.Sprintf("%s.hosts[%d]", key, j), fmt.Sprintf("must be a host name, exact or *.suffix, with an optional :port (got %q)", h)}
		}
	}
	s.addrs = nil
	for j, a := range s.Addresses {
		p, err := ParsePrefix(a)
		if err != nil {
			return &FieldError{fmt.Sprintf("%s.addresses[%d]", key, j), err.Error()}
		}
		s.addrs = append(s.addrs, p)
	}
	s.ports = map[uint16]ServicePort{}
	for j := range s.Ports {
		p := &s.Ports[j]
		pk := fmt.Sprintf("%s.ports[%d]", key, j)
		if err := checkPort(pk+".port", p.Port); err != nil {
			return err
		}
		if p.Protocol == "" {
			p.Protocol = ProtoAuto
		}
		if !oneOf(p.Protocol, protocols...) {
			return &FieldError{pk + ".protocol", fmt.Sprintf("must be auto, http, http2, grpc, tls or tcp (got %q)", p.Protocol)}
		}
		if p.TargetPort == 0 {
			p.TargetPort = p.Port
		}
		if err := checkPort(pk+".target_port", p.TargetPort); err != nil {
			return err
		}
		if _, dup := s.ports[uint16(p.Port)]; dup {
			return &FieldError{pk + ".port", fmt.Sprintf("port %d is listed twice", p.Port)}
		}
		s.ports[uint16(p.Port)] = *p
	}
	seen := map[netip.AddrPort]bool{}
	for j := range s.Endpoints {
		e := &s.Endpoints[j]
		ek := fmt.Sprintf("%s.endpoints[%d]", key, j)
		ap, err := parseHostPort(e.Address, 0)
		if err != nil {
			return &FieldError{ek + ".address", err.Error()}
		}
		if seen[ap] {
			return &FieldError{ek + ".address", fmt.Sprintf("%s is listed twice", e.Address)}
		}
		seen[ap] = true
		e.addr = ap
		if e.Weight < 0 || e.Weight > 1<<20 {
			return &FieldError{ek + ".weight", fmt.Sprintf("must be from 0 to %d (got %d)", 1<<20, e.Weight)}
		}
		if err := validateLabels(ek+".labels", e.Labels); err != nil {
			return err
		}
	}
	if s.DNS != nil {
		dk := key + ".dns"
		// A trailing dot makes the name absolute: no search domains are tried.
		if n := strings.TrimSuffix(s.DNS.Name, "."); !hostRe.MatchString(n) || strings.HasPrefix(n, "*") || strings.Contains(n, ":") {
			return &FieldError{dk + ".name", fmt.Sprintf("must be a DNS name (got %q)", s.DNS.Name)}
		}
		if s.DNS.Port != 0 {
			if err := checkPort(dk+".port", s.DNS.Port); err != nil {
				return err
			}
		}
		if s.DNS.Refresh < 0 {
			return &FieldError{dk + ".refresh", "must not be negative"}
		}
		if err := validateLabels(dk+".labels", s.DNS.Labels); err != nil {
			return err
		}
	}
	if len(s.Hosts) == 0 && len(s.Addresses) == 0 {
		return &FieldError{key, fmt.Sprintf("service %q needs hosts or addresses: without them no traffic is addressed to it", s.Name)}
	}
	subsets := map[string]bool{}
	for j, ss := range s.Subsets {
		sk := fmt.Sprintf("%s.subsets[%d]", key, j)
		if !nameRe.MatchString(ss.Name) {
			return &FieldError{sk + ".name", fmt.Sprintf("must be 1 to 63 lowercase letters, digits, '-', '.' or '_' (got %q)", ss.Name)}
		}
		if subsets[ss.Name] {
			return &FieldError{sk + ".name", fmt.Sprintf("subset %q is defined twice", ss.Name)}
		}
		subsets[ss.Name] = true
		if len(ss.Labels) == 0 {
			return &FieldError{sk + ".labels", "a subset needs at least one label"}
		}
		if err := validateLabels(sk+".labels", ss.Labels); err != nil {
			return err
		}
	}
	lb := &s.LoadBalancer
	if lb.Policy == "" {
		lb.Policy = "round_robin"
	}
	if !oneOf(lb.Policy, "round_robin", "least_request", "random", "ring_hash", "maglev") {
		return &FieldError{key + ".load_balancer.policy", fmt.Sprintf("must be round_robin, least_request, random, ring_hash or maglev (got %q)", lb.Policy)}
	}
	n := 0
	if lb.Hash.Header != "" {
		n++
		if !headerNameRe.MatchString(lb.Hash.Header) {
			return &FieldError{key + ".load_balancer.hash.header", fmt.Sprintf("not a header name: %q", lb.Hash.Header)}
		}
	}
	if lb.Hash.Cookie != "" {
		n++
	}
	if lb.Hash.SourceIP {
		n++
	}
	hashing := lb.Policy == "ring_hash" || lb.Policy == "maglev"
	switch {
	case hashing && n != 1:
		return &FieldError{key + ".load_balancer.hash", fmt.Sprintf("%s needs exactly one of header, cookie or source_ip", lb.Policy)}
	case !hashing && n != 0:
		return &FieldError{key + ".load_balancer.hash", fmt.Sprintf("is only for ring_hash and maglev (policy is %s)", lb.Policy)}
	}
	return nil
}

// Subset returns the subset named n, or nil.
func (s *Service) Subset(n string) *Subset {
	for i := range s.Subsets {
		if s.Subsets[i].Name == n {
			return &s.Subsets[i]
		}
	}
	return nil
}

func (c *Config) checkRouteService(key, name string) error {
	if name == "" {
		return &FieldError{key + ".service", "must name the service the route's traffic is addressed to"}
	}
	if c.Service(name) == nil {
		return &FieldError{key + ".service", fmt.Sprintf("no service named %q", name)}
	}
	return nil
}

func (c *Config) validateHTTPRoute(key string, r *HTTPRoute) error {
	if err := c.checkRouteService(key, r.Service); err != nil {
		return err
	}
	for j := range r.Match {
		m := &r.Match[j]
		mk := fmt.Sprintf("%s.match[%d]", key, j)
		if m.Authority != nil {
			if err := m.Authority.validate(mk + ".authority"); err != nil {
				return err
			}
		}
		if m.Path != nil {
			if err := m.Path.validate(mk + ".path"); err != nil {
				return err
			}
			if m.Path.Exact != "" && !strings.HasPrefix(m.Path.Exact, "/") || m.Path.Prefix != "" && !strings.HasPrefix(m.Path.Prefix, "/") {
				return &FieldError{mk + ".path", "an exact or prefix path must start with /"}
			}
		}
		for k, meth := range m.Methods {
			if !headerNameRe.MatchString(meth) || strings.ToUpper(meth) != meth {
				return &FieldError{fmt.Sprintf("%s.methods[%d]", mk, k), fmt.Sprintf("must be an HTTP method in capitals such as GET (got %q)", meth)}
			}
		}
		if err := validateValueMatches(mk+".headers", m.Headers, true); err != nil {
			return err
		}
		if err := validateValueMatches(mk+".query", m.Query, false); err != nil {
			return err
		}
	}
	actions := 0
	if len(r.Destinations) > 0 {
		actions++
		if err := c.validateDestinations(key+".destinations", r.Destinations); err != nil {
			return err
		}
	}
	if rd := r.Redirect; rd != nil {
		actions++
		if rd.Code == 0 {
			rd.Code = 301
		}
		if !oneOfInt(rd.Code, 301, 302, 303, 307, 308) {
			return &FieldError{key + ".redirect.code", fmt.Sprintf("must be 301, 302, 303, 307 or 308 (got %d)", rd.Code)}
		}
		if rd.Scheme != "" && rd.Scheme != "http" && rd.Scheme != "https" {
			return &FieldError{key + ".redirect.scheme", fmt.Sprintf("must be http or https (got %q)", rd.Scheme)}
		}
		if rd.Host != "" && (!hostRe.MatchString(rd.Host) || strings.HasPrefix(rd.Host, "*")) {
			return &FieldError{key + ".redirect.host", fmt.Sprintf("must be a host name (got %q)", rd.Host)}
		}
		if rd.Port != 0 {
			if err := checkPort(key+".redirect.port", rd.Port); err != nil {
				return err
			}
		}
		if rd.Path != "" && !strings.HasPrefix(rd.Path, "/") {
			return &FieldError{key + ".redirect.path", "must start with /"}
		}
		if rd.Scheme == "" && rd.Host == "" && rd.Port == 0 && rd.Path == "" {
			return &FieldError{key + ".redirect", "must change at least one of scheme, host, port or path"}
		}
	}
	if dr := r.DirectResponse; dr != nil {
		actions++
		if dr.Status < 200 || dr.Status > 599 {
			return &FieldError{key + ".direct_response.status", fmt.Sprintf("must be an HTTP status from 200 to 599 (got %d)", dr.Status)}
		}
	}
	if actions != 1 {
		return &FieldError{key, "needs exactly one of destinations, redirect or direct_response"}
	}
	if rw := r.Rewrite; rw != nil {
		if len(r.Destinations) == 0 {
			return &FieldError{key + ".rewrite", "only applies to a route with destinations"}
		}
		if rw.PathPrefix != "" && !strings.HasPrefix(rw.PathPrefix, "/") {
			return &FieldError{key + ".rewrite.path_prefix", "must start with /"}
		}
		if rw.Host != "" && (!hostRe.MatchString(rw.Host) || strings.HasPrefix(rw.Host, "*")) {
			return &FieldError{key + ".rewrite.host", fmt.Sprintf("must be a host name (got %q)", rw.Host)}
		}
		if rw.PathPrefix != "" {
			for j, m := range r.Match {
				if m.Path != nil && m.Path.Regex != "" {
					return &FieldError{fmt.Sprintf("%s.match[%d].path", key, j), "rewrite.path_prefix needs exact or prefix path matches (a regex match has no prefix to replace)"}
				}
			}
		}
	}
	if err := validateEdits(key, r.RequestHeaders, r.ResponseHeaders, r.Timeout); err != nil {
		return err
	}
	if mr := r.Mirror; mr != nil {
		if len(r.Destinations) == 0 {
			return &FieldError{key + ".mirror", "only applies to a route with destinations"}
		}
		d := Destination{Service: mr.Service, Subset: mr.Subset, Port: mr.Port}
		if err := c.validateDestination(key+".mirror", &d); err != nil {
			return err
		}
		if mr.Percent < 0 || mr.Percent > 100 {
			return &FieldError{key + ".mirror.percent", fmt.Sprintf("must be from 0 to 100 (got %v)", mr.Percent)}
		}
		if mr.Percent == 0 {
			mr.Percent = 100
		}
	}
	return nil
}

func (c *Config) validateDestinations(key string, ds []Destination) error {
	total := 0
	for j := range ds {
		d := &ds[j]
		dk := fmt.Sprintf("%s[%d]", key, j)
		if err := c.validateDestination(dk, d); err != nil {
			return err
		}
		if d.Weight < 0 || d.Weight > 1<<20 {
			return &FieldError{dk + ".weight", fmt.Sprintf("must be from 0 to %d (got %d)", 1<<20, d.Weight)}
		}
		if len(ds) == 1 && d.Weight == 0 {
			d.Weight = 1
		}
		total += d.Weight
	}
	if total == 0 {
		return &FieldError{key, "the weights add up to 0: no destination would ever be used"}
	}
	return nil
}

func (c *Config) validateDestination(key string, d *Destination) error {
	s := c.Service(d.Service)
	if d.Service == "" {
		return &FieldError{key + ".service", "must name a service"}
	}
	if s == nil {
		return &FieldError{key + ".service", fmt.Sprintf("no service named %q", d.Service)}
	}
	if d.Subset != "" && s.Subset(d.Subset) == nil {
		return &FieldError{key + ".subset", fmt.Sprintf("service %q has no subset %q", d.Service, d.Subset)}
	}
	if d.Port != 0 {
		if err := checkPort(key+".port", d.Port); err != nil {
			return err
		}
		if _, ok := s.Port(uint16(d.Port)); !ok {
			return &FieldError{key + ".port", fmt.Sprintf("service %q has no port %d", d.Service, d.Port)}
		}
	}
	return nil
}

func (m *StringMatch) validate(key string) error {
	n := 0
	for _, v := range []string{m.Exact, m.Prefix, m.Regex} {
		if v != "" {
			n++
		}
	}
	if n != 1 {
		return &FieldError{key, "needs exactly one of exact, prefix or regex"}
	}
	if m.Regex != "" {
		re, err := compileAnchored(m.Regex)
		if err != nil {
			return &FieldError{key + ".regex", err.Error()}
		}
		m.re = re
	}
	return nil
}

func validateValueMatches(key string, ms []ValueMatch, header bool) error {
	for j := range ms {
		m := &ms[j]
		mk := fmt.Sprintf("%s[%d]", key, j)
		if m.Name == "" || header && !headerNameRe.MatchString(m.Name) {
			return &FieldError{mk + ".name", fmt.Sprintf("must be a header or parameter name (got %q)", m.Name)}
		}
		n := 0
		for _, set := range []bool{m.Exact != "", m.Prefix != "", m.Regex != "", m.Present, m.Absent} {
			if set {
				n++
			}
		}
		if n != 1 {
			return &FieldError{mk, "needs exactly one of exact, prefix, regex, present or absent"}
		}
		if m.Regex != "" {
			re, err := compileAnchored(m.Regex)
			if err != nil {
				return &FieldError{mk + ".regex", err.Error()}
			}
			m.re = re
		}
	}
	return nil
}

// validateEdits checks what HTTP and gRPC routes share: header edits and a timeout.
func validateEdits(key string, req, resp HeaderOps, timeout time.Duration) error {
	if err := validateHeaderOps(key+".request_headers", req); err != nil {
		return err
	}
	if err := validateHeaderOps(key+".response_headers", resp); err != nil {
		return err
	}
	if timeout < 0 {
		return &FieldError{key + ".timeout", "must not be negative"}
	}
	return nil
}

func validateHeaderOps(key string, h HeaderOps) error {
	for _, part := range []struct {
		name string
		m    map[string]string
	}{{"set", h.Set}, {"add", h.Add}} {
		for k, v := range part.m {
			if !headerNameRe.MatchString(k) {
				return &FieldError{key + "." + part.name + "." + k, "not a header name"}
			}
			if strings.ContainsAny(v, "\r\n\x00") {
				return &FieldError{key + "." + part.name + "." + k, "a header value may not hold CR, LF or NUL"}
			}
		}
	}
	for j, k := range h.Remove {
		if !headerNameRe.MatchString(k) {
			return &FieldError{fmt.Sprintf("%s.remove[%d]", key, j), fmt.Sprintf("not a header name: %q", k)}
		}
	}
	return nil
}

func validateLabels(key string, l map[string]string) error {
	for k := range l {
		if k == "" || len(k) > 253 || strings.ContainsAny(k, " \t\r\n") {
			return &FieldError{key + "." + k, "not a label name"}
		}
	}
	return nil
}

// compileAnchored compiles an RE2 regex that must match a whole value, as Envoy's do.
func compileAnchored(expr string) (*regexp.Regexp, error) {
	if len(expr) > 1024 {
		return nil, fmt.Errorf("a regex may be at most 1024 bytes (got %d)", len(expr))
	}
	re, err := regexp.Compile(`^(?:` + expr + `)$`)
	if err != nil {
		return nil, fmt.Errorf("not a valid RE2 regex: %v", err)
	}
	return re, nil
}

// parseHostPort parses "IP" or "IP:port" ("[v6]:port"); def is the port when none is
// given (0 leaves it unset).
func parseHostPort(s string, def uint16) (netip.AddrPort, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		if a.Zone() != "" {
			return netip.AddrPort{}, fmt.Errorf("%q: zoned addresses are not supported", s)
		}
		return netip.AddrPortFrom(a.Unmap(), def), nil
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil || ap.Port() == 0 {
		return netip.AddrPort{}, fmt.Errorf("%q is not an IP address or IP:port", s)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

func oneOfInt(v int, set ...int) bool {
	for _, x := range set {
		if v == x {
			return true
		}
	}
	return false
}
