// Package config defines skiff's configuration, its defaults and its validation, loads
// it from YAML with viper, and watches the file for new versions (watch.go).
//
// The file has two kinds of keys. Static keys (proxy, capture, sniff, mtls, log.format)
// are read when a process starts: changing them needs a restart, because they shape
// listeners and iptables rules. Dynamic keys (services, discovery, routes,
// authorization, log.level) take effect when the file changes while skiff runs.
package config

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Config is the whole file. Every field has a default (see Default), so an empty
// file, or none, gives a working transparent sidecar.
type Config struct {
	Proxy   Proxy   `mapstructure:"proxy" json:"proxy"`
	Capture Capture `mapstructure:"capture" json:"capture"`
	Sniff   Sniff   `mapstructure:"sniff" json:"sniff"`
	MTLS    MTLS    `mapstructure:"mtls" json:"mtls"`
	Log     Log     `mapstructure:"log" json:"log"`

	// Dynamic keys: they take effect on reload.
	Services      []Service     `mapstructure:"services" json:"services"`
	Discovery     Discovery     `mapstructure:"discovery" json:"discovery"`
	Routes        Routes        `mapstructure:"routes" json:"routes"`
	Authorization Authorization `mapstructure:"authorization" json:"authorization"`
}

// Protocols a port can be pinned to with sniff.ports, skipping detection.
const (
	ProtoAuto  = "auto"  // detect from the first bytes (the default)
	ProtoHTTP  = "http"  // HTTP/1.1, or HTTP/2 with prior knowledge: proxied at L7
	ProtoHTTP2 = "http2" // h2c prior knowledge: proxied at L7
	ProtoGRPC  = "grpc"  // gRPC over h2c: proxied at L7
	ProtoTLS   = "tls"   // TLS from the app: relayed end to end, never terminated
	ProtoTCP   = "tcp"   // opaque bytes: relayed with splice
)

// Sniff configures protocol detection on accepted connections.
type Sniff struct {
	// ServerFirstWait is how long a silent client may wait before the proxy dials the
	// destination anyway, so that a server-first protocol (SMTP, MySQL, FTP...) can
	// send its greeting; the greeting then marks the connection as opaque TCP.
	ServerFirstWait time.Duration `mapstructure:"server_first_wait" json:"server_first_wait"`
	// Timeout bounds the wait for the rest of a first message that started like a known
	// protocol; when it passes, the connection is relayed as opaque TCP.
	Timeout time.Duration `mapstructure:"timeout" json:"timeout"`
	// Ports pins destination ports to a protocol (auto, http, http2, grpc, tls, tcp).
	Ports map[string]string `mapstructure:"ports" json:"ports"`

	ports map[uint16]string // Ports, parsed by Validate
}

// PortProtocol returns the protocol pinned for a destination port, or ProtoAuto.
func (s *Sniff) PortProtocol(port uint16) string {
	if p, ok := s.ports[port]; ok {
		return p
	}
	return ProtoAuto
}

// Proxy holds the static settings of `skiff run`.
type Proxy struct {
	// UID and GID the proxy runs as; iptables never captures their sockets again.
	UID int `mapstructure:"uid" json:"uid"`
	GID int `mapstructure:"gid" json:"gid"`
	// Ports the redirected connections arrive on.
	InboundPort  int `mapstructure:"inbound_port" json:"inbound_port"`
	OutboundPort int `mapstructure:"outbound_port" json:"outbound_port"`
	// AdminAddress serves /ready, /healthz, /metrics and /config.
	AdminAddress string `mapstructure:"admin_address" json:"admin_address"`
	// ConnectTimeout bounds the dial to an upstream.
	ConnectTimeout time.Duration `mapstructure:"connect_timeout" json:"connect_timeout"`
	// IdleTimeout closes a relayed connection on which no byte moved either way for this long.
	IdleTimeout time.Duration `mapstructure:"idle_timeout" json:"idle_timeout"`
	// DrainTimeout is how long connections in flight may finish after SIGTERM.
	DrainTimeout time.Duration `mapstructure:"drain_timeout" json:"drain_timeout"`
}

// Capture holds the static settings of `skiff init`: which traffic the rules redirect.
type Capture struct {
	// Backend is the iptables flavour: auto (the one the host already uses), nft or legacy.
	Backend string `mapstructure:"backend" json:"backend"`
	// IPv6 is auto (when the namespace has IPv6 addresses and ip6tables), on or off.
	IPv6     string          `mapstructure:"ipv6" json:"ipv6"`
	Inbound  InboundCapture  `mapstructure:"inbound" json:"inbound"`
	Outbound OutboundCapture `mapstructure:"outbound" json:"outbound"`
}

// InboundCapture selects the connections arriving at the workload that reach the proxy.
type InboundCapture struct {
	Enabled bool `mapstructure:"enabled" json:"enabled"`
	// IncludePorts lists the destination ports captured; empty means every port.
	IncludePorts []int `mapstructure:"include_ports" json:"include_ports"`
	// ExcludePorts lists destination ports never captured (e.g. 22 on a VM).
	ExcludePorts []int `mapstructure:"exclude_ports" json:"exclude_ports"`
}

// OutboundCapture selects the connections the workload makes that reach the proxy.
type OutboundCapture struct {
	Enabled bool `mapstructure:"enabled" json:"enabled"`
	// IncludeCIDRs lists destination ranges captured; empty means every address.
	IncludeCIDRs []string `mapstructure:"include_cidrs" json:"include_cidrs"`
	// ExcludeCIDRs lists destination ranges never captured.
	ExcludeCIDRs []string `mapstructure:"exclude_cidrs" json:"exclude_cidrs"`
	// IncludePorts lists destination ports captured; empty means every port.
	IncludePorts []int `mapstructure:"include_ports" json:"include_ports"`
	// ExcludePorts lists destination ports never captured.
	ExcludePorts []int `mapstructure:"exclude_ports" json:"exclude_ports"`
}

// Log configures the proxy's own log.
type Log struct {
	Level  string `mapstructure:"level" json:"level"`   // debug, info, warn, error
	Format string `mapstructure:"format" json:"format"` // json or console
}

// Default returns the configuration in force when the file says nothing.
func Default() Config {
	return Config{
		Proxy: Proxy{
			UID:            1337,
			GID:            1337,
			InboundPort:    15006,
			OutboundPort:   15001,
			AdminAddress:   "127.0.0.1:15000",
			ConnectTimeout: 10 * time.Second,
			IdleTimeout:    time.Hour,
			DrainTimeout:   5 * time.Second,
		},
		Capture: Capture{
			Backend:  "auto",
			IPv6:     "auto",
			Inbound:  InboundCapture{Enabled: true, IncludePorts: []int{}, ExcludePorts: []int{}},
			Outbound: OutboundCapture{Enabled: true, IncludeCIDRs: []string{}, ExcludeCIDRs: []string{}, IncludePorts: []int{}, ExcludePorts: []int{}},
		},
		Sniff: Sniff{ServerFirstWait: 20 * time.Millisecond, Timeout: 5 * time.Second, Ports: map[string]string{}},
		MTLS: MTLS{
			Recheck:          30 * time.Second,
			HandshakeTimeout: 10 * time.Second,
			Inbound:          MTLSInbound{Mode: MTLSPermissive, Ports: map[string]string{}},
			Outbound: MTLSOutbound{
				Mode: MTLSAuto, Ports: map[string]string{}, CIDRs: []MTLSCIDR{},
				AutoFallbackTTL: 5 * time.Minute, AutoProbeTimeout: 2 * time.Second,
			},
		},
		Log:           Log{Level: "info", Format: "json"},
		Services:      []Service{},
		Discovery:     Discovery{DNSServers: []string{}, DNSRefresh: 5 * time.Second},
		Routes:        Routes{HTTP: []HTTPRoute{}, GRPC: []GRPCRoute{}, TCP: []TCPRoute{}},
		Authorization: Authorization{DefaultAction: AuthzAuto, Policies: []AuthzPolicy{}},
	}
}

// FieldError says which key is wrong and why.
type FieldError struct {
	Key    string
	Reason string
}

func (e *FieldError) Error() string { return e.Key + ": " + e.Reason }

// Validate checks every key and returns the first problem found, naming its key.
func (c *Config) Validate() error {
	p := c.Proxy
	for _, f := range []struct {
		key string
		id  int
	}{{"proxy.uid", p.UID}, {"proxy.gid", p.GID}} {
		if f.id < 0 || f.id > 1<<31-1 {
			return &FieldError{f.key, fmt.Sprintf("must be a numeric id from 0 to %d (got %d)", 1<<31-1, f.id)}
		}
	}
	if err := checkPort("proxy.inbound_port", p.InboundPort); err != nil {
		return err
	}
	if err := checkPort("proxy.outbound_port", p.OutboundPort); err != nil {
		return err
	}
	if p.InboundPort == p.OutboundPort {
		return &FieldError{"proxy.inbound_port", fmt.Sprintf("must differ from proxy.outbound_port (both %d)", p.InboundPort)}
	}
	ap, err := netip.ParseAddrPort(p.AdminAddress)
	if err != nil {
		return &FieldError{"proxy.admin_address", fmt.Sprintf("must be IP:port, e.g. 127.0.0.1:15000 (%v)", err)}
	}
	if int(ap.Port()) == p.InboundPort || int(ap.Port()) == p.OutboundPort {
		return &FieldError{"proxy.admin_address", fmt.Sprintf("port %d is already a listener port", ap.Port())}
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{{"proxy.connect_timeout", p.ConnectTimeout}, {"proxy.idle_timeout", p.IdleTimeout}, {"proxy.drain_timeout", p.DrainTimeout}} {
		if d.v <= 0 {
			return &FieldError{d.key, fmt.Sprintf("must be a positive duration such as 10s (got %v)", d.v)}
		}
	}

	cp := c.Capture
	if !oneOf(cp.Backend, "auto", "nft", "legacy") {
		return &FieldError{"capture.backend", fmt.Sprintf("must be auto, nft or legacy (got %q)", cp.Backend)}
	}
	switch strings.ToLower(cp.IPv6) {
	case "auto", "on", "off":
	case "true", "1":
		c.Capture.IPv6 = "on"
	case "false", "0":
		c.Capture.IPv6 = "off"
	default:
		return &FieldError{"capture.ipv6", fmt.Sprintf("must be auto, on or off (got %q)", cp.IPv6)}
	}
	for _, l := range []struct {
		key   string
		ports []int
	}{
		{"capture.inbound.include_ports", cp.Inbound.IncludePorts},
		{"capture.inbound.exclude_ports", cp.Inbound.ExcludePorts},
		{"capture.outbound.include_ports", cp.Outbound.IncludePorts},
		{"capture.outbound.exclude_ports", cp.Outbound.ExcludePorts},
	} {
		for i, port := range l.ports {
			if err := checkPort(fmt.Sprintf("%s[%d]", l.key, i), port); err != nil {
				return err
			}
		}
	}
	for _, l := range []struct {
		key   string
		cidrs []string
	}{
		{"capture.outbound.include_cidrs", cp.Outbound.IncludeCIDRs},
		{"capture.outbound.exclude_cidrs", cp.Outbound.ExcludeCIDRs},
	} {
		for i, s := range l.cidrs {
			if _, err := ParsePrefix(s); err != nil {
				return &FieldError{fmt.Sprintf("%s[%d]", l.key, i), err.Error()}
			}
		}
	}

	if c.Sniff.ServerFirstWait <= 0 || c.Sniff.ServerFirstWait > time.Second {
		return &FieldError{"sniff.server_first_wait", fmt.Sprintf("must be a duration above 0 and at most 1s (got %v)", c.Sniff.ServerFirstWait)}
	}
	if c.Sniff.Timeout <= 0 {
		return &FieldError{"sniff.timeout", fmt.Sprintf("must be a positive duration (got %v)", c.Sniff.Timeout)}
	}
	c.Sniff.ports = make(map[uint16]string, len(c.Sniff.Ports))
	for k, v := range c.Sniff.Ports {
		port, err := strconv.Atoi(k)
		if err != nil || port < 1 || port > 65535 {
			return &FieldError{"sniff.ports." + k, "key must be a port from 1 to 65535"}
		}
		if !oneOf(v, ProtoAuto, ProtoHTTP, ProtoHTTP2, ProtoGRPC, ProtoTLS, ProtoTCP) {
			return &FieldError{"sniff.ports." + k, fmt.Sprintf("must be auto, http, http2, grpc, tls or tcp (got %q)", v)}
		}
		c.Sniff.ports[uint16(port)] = v
	}
	if err := c.MTLS.validate(); err != nil {
		return err
	}
	if !oneOf(c.Log.Level, "debug", "info", "warn", "error") {
		return &FieldError{"log.level", fmt.Sprintf("must be debug, info, warn or error (got %q)", c.Log.Level)}
	}
	if !oneOf(c.Log.Format, "json", "console") {
		return &FieldError{"log.format", fmt.Sprintf("must be json or console (got %q)", c.Log.Format)}
	}
	if err := c.validateMesh(); err != nil {
		return err
	}
	return c.Authorization.validate()
}

// ParsePrefix accepts a CIDR ("10.0.0.0/8", "fd00::/8") or a bare address (taken as a
// single host) and returns it masked.
func ParsePrefix(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not an address or CIDR", s)
		}
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR", s)
	}
	return p.Masked(), nil
}

func checkPort(key string, port int) error {
	if port < 1 || port > 65535 {
		return &FieldError{key, fmt.Sprintf("must be a port from 1 to 65535 (got %d)", port)}
	}
	return nil
}

func oneOf(s string, set ...string) bool {
	for _, x := range set {
		if s == x {
			return true
		}
	}
	return false
}
