package config

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"time"
)

// Modes of mtls.inbound (what a port accepts) and mtls.outbound (what the proxy dials).
const (
	MTLSStrict     = "strict"     // inbound: only mesh mTLS; anything else is closed
	MTLSPermissive = "permissive" // inbound: mesh mTLS and plaintext, told apart by sniffing
	MTLSDisable    = "disable"    // inbound: never terminate; mesh TLS is relayed like any TLS

	MTLSOn   = "on"   // outbound: always mesh mTLS to the destination's sidecar
	MTLSAuto = "auto" // outbound: try mesh mTLS, fall back to plaintext for a peer not in the mesh
	MTLSOff  = "off"  // outbound: plaintext, as without mTLS
)

// MTLS configures mutual TLS between sidecars. Every key is static; the certificate
// files in CertDir are watched and rotate while skiff runs.
//
// With CertDir empty (the default) mTLS is off entirely: nothing is terminated or
// wrapped and no header is touched, whatever the modes say, so an empty config stays
// invisible. The modes' defaults (permissive, auto) apply once CertDir is set.
type MTLS struct {
	// CertDir holds tls.crt, tls.key and ca.crt (the layout of `skiff ca issue`,
	// cert-manager and spiffe-helper).
	CertDir string `mapstructure:"cert_dir" json:"cert_dir"`
	// TrustDomain is the trust domain our identity and every peer's must be in; empty
	// means the trust domain of the certificate loaded first.
	TrustDomain string `mapstructure:"trust_domain" json:"trust_domain"`
	// Recheck is how often the files are read even without a change event.
	Recheck time.Duration `mapstructure:"recheck" json:"recheck"`
	// HandshakeTimeout bounds a mesh TLS handshake, inbound and outbound (mode on).
	HandshakeTimeout time.Duration `mapstructure:"handshake_timeout" json:"handshake_timeout"`
	Inbound          MTLSInbound   `mapstructure:"inbound" json:"inbound"`
	Outbound         MTLSOutbound  `mapstructure:"outbound" json:"outbound"`
}

// MTLSInbound says what connections arriving at the workload must be.
type MTLSInbound struct {
	// Mode is strict, permissive or disable.
	Mode string `mapstructure:"mode" json:"mode"`
	// Ports overrides Mode for destination ports: {"8080": strict}.
	Ports map[string]string `mapstructure:"ports" json:"ports"`

	ports map[uint16]string
}

// MTLSOutbound says which destinations are dialled with mesh mTLS.
type MTLSOutbound struct {
	// Mode is on, auto or off.
	Mode string `mapstructure:"mode" json:"mode"`
	// Ports overrides Mode for destination ports; it wins over CIDRs.
	Ports map[string]string `mapstructure:"ports" json:"ports"`
	// CIDRs overrides Mode for destination ranges; the longest prefix wins.
	CIDRs []MTLSCIDR `mapstructure:"cidrs" json:"cidrs"`
	// AutoFallbackTTL is how long an endpoint found not to be in the mesh (auto mode)
	// is dialled in plaintext before mTLS is tried again.
	AutoFallbackTTL time.Duration `mapstructure:"auto_fallback_ttl" json:"auto_fallback_ttl"`
	// AutoProbeTimeout bounds the mTLS handshake in auto mode, so a plaintext server
	// that says nothing to a ClientHello costs this, not HandshakeTimeout.
	AutoProbeTimeout time.Duration `mapstructure:"auto_probe_timeout" json:"auto_probe_timeout"`

	ports map[uint16]string
	cidrs []cidrMode // longest prefix first
}

// MTLSCIDR is one entry of mtls.outbound.cidrs. (A list rather than a map: the config
// loader splits map keys at dots, which a CIDR is full of.)
type MTLSCIDR struct {
	CIDR string `mapstructure:"cidr" json:"cidr"`
	Mode string `mapstructure:"mode" json:"mode"`
}

type cidrMode struct {
	p    netip.Prefix
	mode string
}

// Enabled reports whether mTLS is configured at all (mtls.cert_dir is set).
func (m *MTLS) Enabled() bool { return m.CertDir != "" }

// InboundMode returns the mode for connections arriving at port: disable when mTLS
// is not configured.
func (m *MTLS) InboundMode(port uint16) string {
	if !m.Enabled() {
		return MTLSDisable
	}
	if v, ok := m.Inbound.ports[port]; ok {
		return v
	}
	return m.Inbound.Mode
}

// OutboundMode returns the mode for a connection the workload makes to dst: off when
// mTLS is not configured; else the port's override, the longest matching CIDR's, or
// mtls.outbound.mode. (Loopback destinations are never captured, so never asked about.)
func (m *MTLS) OutboundMode(dst netip.AddrPort) string {
	if !m.Enabled() {
		return MTLSOff
	}
	if v, ok := m.Outbound.ports[dst.Port()]; ok {
		return v
	}
	a := dst.Addr().Unmap()
	for _, c := range m.Outbound.cidrs {
		if c.p.Contains(a) {
			return c.mode
		}
	}
	return m.Outbound.Mode
}

var trustDomainRe = regexp.MustCompile(`^[a-z0-9._-]+$`)

func (m *MTLS) validate() error {
	on := m.Enabled()
	needDir := func(key, mode string) error {
		return &FieldError{key, fmt.Sprintf("%s needs mtls.cert_dir (mTLS is off without a certificate)", mode)}
	}
	if m.TrustDomain != "" && (!trustDomainRe.MatchString(m.TrustDomain) || len(m.TrustDomain) > 255) {
		return &FieldError{"mtls.trust_domain", fmt.Sprintf("must be a trust domain name such as cluster.local: lowercase letters, digits, '.', '-', '_', no scheme (got %q)", m.TrustDomain)}
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{
		{"mtls.recheck", m.Recheck}, {"mtls.handshake_timeout", m.HandshakeTimeout},
		{"mtls.outbound.auto_fallback_ttl", m.Outbound.AutoFallbackTTL}, {"mtls.outbound.auto_probe_timeout", m.Outbound.AutoProbeTimeout},
	} {
		if d.v <= 0 {
			return &FieldError{d.key, fmt.Sprintf("must be a positive duration (got %v)", d.v)}
		}
	}
	if m.Outbound.AutoProbeTimeout > m.HandshakeTimeout {
		return &FieldError{"mtls.outbound.auto_probe_timeout", fmt.Sprintf("must be at most mtls.handshake_timeout (%v > %v)", m.Outbound.AutoProbeTimeout, m.HandshakeTimeout)}
	}

	inbound := func(key, v string) error {
		if !oneOf(v, MTLSStrict, MTLSPermissive, MTLSDisable) {
			return &FieldError{key, fmt.Sprintf("must be strict, permissive or disable (got %q)", v)}
		}
		if v == MTLSStrict && !on {
			return needDir(key, v)
		}
		return nil
	}
	outbound := func(key, v string) error {
		if !oneOf(v, MTLSOn, MTLSAuto, MTLSOff) {
			return &FieldError{key, fmt.Sprintf("must be on, auto or off (got %q)", v)}
		}
		if v == MTLSOn && !on {
			return needDir(key, v)
		}
		return nil
	}
	if err := inbound("mtls.inbound.mode", m.Inbound.Mode); err != nil {
		return err
	}
	if err := outbound("mtls.outbound.mode", m.Outbound.Mode); err != nil {
		return err
	}
	var err error
	if m.Inbound.ports, err = portModes("mtls.inbound.ports", m.Inbound.Ports, inbound); err != nil {
		return err
	}
	if m.Outbound.ports, err = portModes("mtls.outbound.ports", m.Outbound.Ports, outbound); err != nil {
		return err
	}
	m.Outbound.cidrs = nil
	for i, c := range m.Outbound.CIDRs {
		key := fmt.Sprintf("mtls.outbound.cidrs[%d]", i)
		p, err := ParsePrefix(c.CIDR)
		if err != nil {
			return &FieldError{key + ".cidr", err.Error()}
		}
		if err := outbound(key+".mode", c.Mode); err != nil {
			return err
		}
		m.Outbound.cidrs = append(m.Outbound.cidrs, cidrMode{p.Masked(), c.Mode})
	}
	// Longest prefix first, so the first match is the most specific.
	for i := 1; i < len(m.Outbound.cidrs); i++ {
		for j := i; j > 0 && m.Outbound.cidrs[j].p.Bits() > m.Outbound.cidrs[j-1].p.Bits(); j-- {
			m.Outbound.cidrs[j], m.Outbound.cidrs[j-1] = m.Outbound.cidrs[j-1], m.Outbound.cidrs[j]
		}
	}
	return nil
}

// portModes parses a {"<port>": mode} map; it stays nil when empty.
func portModes(key string, in map[string]string, check func(key, v string) error) (map[uint16]string, error) {
	if len(in) == 0 {
		return nil, nil
	}
	out := make(map[uint16]string, len(in))
	for k, v := range in {
		port, err := strconv.Atoi(k)
		if err != nil || port < 1 || port > 65535 {
			return nil, &FieldError{key + "." + k, "key must be a port from 1 to 65535"}
		}
		if err := check(key+"."+k, v); err != nil {
			return nil, err
		}
		out[uint16(port)] = v
	}
	return out, nil
}
