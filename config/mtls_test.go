package config

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestMTLSOffByDefault(t *testing.T) {
	c := Default()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.MTLS.Enabled() {
		t.Fatal("mTLS enabled with no cert_dir")
	}
	if m := c.MTLS.InboundMode(8080); m != MTLSDisable {
		t.Errorf("inbound mode without cert_dir = %q, want disable", m)
	}
	if m := c.MTLS.OutboundMode(netip.MustParseAddrPort("10.0.0.1:80")); m != MTLSOff {
		t.Errorf("outbound mode without cert_dir = %q, want off", m)
	}
}

func TestMTLSModes(t *testing.T) {
	c, err := Parse("c.yaml", []byte(`
mtls:
  cert_dir: /etc/skiff/certs
  trust_domain: example.org
  inbound:
    mode: strict
    ports:
      "9100": disable
      8080: permissive
  outbound:
    ports:
      "5432": off
    cidrs:
      - {cidr: 10.0.0.0/8, mode: on}
      - {cidr: 10.9.0.0/16, mode: off}
      - {cidr: "fd00::1", mode: on}
    auto_fallback_ttl: 1m
`))
	if err != nil {
		t.Fatal(err)
	}
	m := &c.MTLS
	if m.TrustDomain != "example.org" || m.Recheck != 30*time.Second || m.Outbound.AutoFallbackTTL != time.Minute {
		t.Errorf("mtls = %+v", m)
	}
	for port, want := range map[uint16]string{9100: MTLSDisable, 8080: MTLSPermissive, 443: MTLSStrict} {
		if got := m.InboundMode(port); got != want {
			t.Errorf("InboundMode(%d) = %q, want %q", port, got, want)
		}
	}
	for dst, want := range map[string]string{
		"10.1.2.3:80":          MTLSOn,
		"10.9.2.3:80":          MTLSOff,  // the longer prefix wins
		"10.1.2.3:5432":        MTLSOff,  // the port wins over the range
		"192.0.2.1:80":         MTLSAuto, // the default once cert_dir is set
		"[fd00::1]:80":         MTLSOn,
		"[fd00::2]:80":         MTLSAuto,
		"[::ffff:10.1.2.3]:80": MTLSOn,
	} {
		if got := m.OutboundMode(netip.MustParseAddrPort(dst)); got != want {
			t.Errorf("OutboundMode(%s) = %q, want %q", dst, got, want)
		}
	}
}

func TestMTLSRejects(t *testing.T) {
	for _, c := range []struct{ yaml, key, reason string }{
		{"mtls:\n  inbound:\n    mode: strict\n", "mtls.inbound.mode", "needs mtls.cert_dir"},
		{"mtls:\n  outbound:\n    mode: on\n", "mtls.outbound.mode", "needs mtls.cert_dir"},
		{"mtls:\n  inbound:\n    ports:\n      \"80\": strict\n", "mtls.inbound.ports.80", "needs mtls.cert_dir"},
		{"mtls:\n  cert_dir: /c\n  inbound:\n    mode: sometimes\n", "mtls.inbound.mode", "strict, permissive or disable"},
		{"mtls:\n  cert_dir: /c\n  outbound:\n    mode: permissive\n", "mtls.outbound.mode", "on, auto or off"},
		{"mtls:\n  cert_dir: /c\n  inbound:\n    ports:\n      \"0\": strict\n", "mtls.inbound.ports.0", "port"},
		{"mtls:\n  cert_dir: /c\n  outbound:\n    ports:\n      http: on\n", "mtls.outbound.ports.http", "port"},
		{"mtls:\n  cert_dir: /c\n  outbound:\n    cidrs:\n      - {cidr: 10.0.0.0/33, mode: on}\n", "mtls.outbound.cidrs[0].cidr", "CIDR"},
		{"mtls:\n  cert_dir: /c\n  outbound:\n    cidrs:\n      - {cidr: 10.0.0.0/8, mode: yes please}\n", "mtls.outbound.cidrs[0].mode", "on, auto or off"},
		{"mtls:\n  cert_dir: /c\n  outbound:\n    cidrs:\n      - {cidr: 10.0.0.0/8, mod: on}\n", "mtls.outbound.cidrs[0]", "unknown key"},
		{"mtls:\n  trust_domain: spiffe://Example.org\n", "mtls.trust_domain", "trust domain"},
		{"mtls:\n  recheck: 0s\n", "mtls.recheck", "positive"},
		{"mtls:\n  handshake_timeout: -1s\n", "mtls.handshake_timeout", "positive"},
		{"mtls:\n  outbound:\n    auto_probe_timeout: 20s\n", "mtls.outbound.auto_probe_timeout", "at most mtls.handshake_timeout"},
		{"mtls:\n  certdir: /c\n", "mtls.certdir", "unknown key"},
	} {
		_, err := Parse("c.yaml", []byte(c.yaml))
		var le *LoadError
		if !errors.As(err, &le) {
			t.Errorf("%q: got %v, want a LoadError", c.yaml, err)
			continue
		}
		if !strings.HasPrefix(le.Key, c.key) || !strings.Contains(err.Error(), c.reason) {
			t.Errorf("%q: got key %q, error %q; want key %q and %q", c.yaml, le.Key, err, c.key, c.reason)
		}
	}
}
