package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestEmptyFileIsDefault(t *testing.T) {
	for _, data := range []string{"", "# nothing\n", "{}\n"} {
		c, err := Parse("empty.yaml", []byte(data))
		if err != nil {
			t.Fatalf("%q: %v", data, err)
		}
		c.Sniff.ports = nil
		if d := Default(); !reflect.DeepEqual(*c, d) {
			t.Errorf("%q: got %+v, want defaults %+v", data, *c, d)
		}
	}
}

func TestNoFileIsDefault(t *testing.T) {
	c, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(*c, Default()) {
		t.Errorf("got %+v", *c)
	}
}

// The commented example at the repository root must be exactly the defaults, so what it
// documents is what a sidecar without a file does.
func TestExampleFileIsDefault(t *testing.T) {
	path := filepath.Join("..", "config.yaml")
	if _, err := os.Stat(path); err != nil {
		t.Skip("no config.yaml at the repository root yet")
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	c.Sniff.ports = nil
	if d := Default(); !reflect.DeepEqual(*c, d) {
		t.Errorf("config.yaml differs from Default():\n got  %+v\n want %+v", *c, d)
	}
}

func TestOverrides(t *testing.T) {
	c, err := Parse("c.yaml", []byte(`
proxy:
  uid: 2000
  connect_timeout: 2s
capture:
  ipv6: false
  inbound:
    exclude_ports: [22, 8081]
  outbound:
    exclude_cidrs: [10.0.0.0/8, "192.168.1.1"]
sniff:
  ports:
    "3306": tcp
    8080: http
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Proxy.UID != 2000 || c.Proxy.GID != 1337 || c.Proxy.ConnectTimeout != 2*time.Second {
		t.Errorf("proxy = %+v", c.Proxy)
	}
	if c.Capture.IPv6 != "off" {
		t.Errorf("ipv6 = %q, want off", c.Capture.IPv6)
	}
	if !reflect.DeepEqual(c.Capture.Inbound.ExcludePorts, []int{22, 8081}) {
		t.Errorf("exclude_ports = %v", c.Capture.Inbound.ExcludePorts)
	}
	if got := c.Sniff.PortProtocol(3306); got != ProtoTCP {
		t.Errorf("port 3306 = %q", got)
	}
	if got := c.Sniff.PortProtocol(8080); got != ProtoHTTP {
		t.Errorf("port 8080 = %q", got)
	}
	if got := c.Sniff.PortProtocol(9); got != ProtoAuto {
		t.Errorf("port 9 = %q", got)
	}
}

// Every bad file is refused with the file, the key and a reason.
func TestErrorsNameFileAndKey(t *testing.T) {
	for _, tc := range []struct{ yaml, key, reason string }{
		{"proxy:\n  uidd: 1\n", "proxy.uidd", "unknown key"},
		{"prxy:\n  uid: 1\n", "prxy", "unknown key"},
		{"proxy:\n  uid: abc\n", "proxy.uid", "bad value"},
		{"proxy:\n  uid: 1.5\n", "proxy.uid", "whole number"},
		{"proxy:\n  uid: -1\n", "proxy.uid", "numeric id"},
		{"proxy:\n  inbound_port: 70000\n", "proxy.inbound_port", "port"},
		{"proxy:\n  inbound_port: 15001\n", "proxy.inbound_port", "differ"},
		{"proxy:\n  admin_address: localhost\n", "proxy.admin_address", "IP:port"},
		{"proxy:\n  admin_address: 127.0.0.1:15001\n", "proxy.admin_address", "listener port"},
		{"proxy:\n  idle_timeout: 5x\n", "proxy.idle_timeout", "bad value"},
		{"proxy:\n  drain_timeout: 0s\n", "proxy.drain_timeout", "positive"},
		{"capture:\n  backend: iptables\n", "capture.backend", "auto, nft or legacy"},
		{"capture:\n  ipv6: maybe\n", "capture.ipv6", "auto, on or off"},
		{"capture:\n  inbound:\n    exclude_ports: [0]\n", "capture.inbound.exclude_ports[0]", "port"},
		{"capture:\n  inbound:\n    exclude_ports: 22\n", "capture.inbound.exclude_ports", "bad value"},
		{"capture:\n  outbound:\n    exclude_cidrs: [10.0.0.0/8, bad]\n", "capture.outbound.exclude_cidrs[1]", "not an address or CIDR"},
		{"sniff:\n  ports:\n    http: tcp\n", "sniff.ports.http", "port"},
		{"sniff:\n  ports:\n    \"80\": quic\n", "sniff.ports.80", "auto, http"},
		{"sniff:\n  server_first_wait: 5s\n", "sniff.server_first_wait", "at most 1s"},
		{"log:\n  level: loud\n", "log.level", "debug, info"},
		{"log:\n  format: xml\n", "log.format", "json or console"},
	} {
		_, err := Parse("bad.yaml", []byte(tc.yaml))
		var le *LoadError
		if !errors.As(err, &le) {
			t.Errorf("%q: got %v, want a LoadError", tc.yaml, err)
			continue
		}
		if le.File != "bad.yaml" || le.Key != tc.key || !strings.Contains(err.Error(), tc.reason) {
			t.Errorf("%q: got file=%q key=%q err=%q; want key %q and %q", tc.yaml, le.File, le.Key, err, tc.key, tc.reason)
		}
	}
}

func TestSyntaxErrorNamesFileAndLine(t *testing.T) {
	_, err := Parse("bad.yaml", []byte("proxy:\n  uid: [1\n"))
	if err == nil || !strings.Contains(err.Error(), "bad.yaml") || !strings.Contains(err.Error(), "line") {
		t.Errorf("got %v", err)
	}
}

func TestMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if err == nil || !strings.Contains(err.Error(), "nope.yaml") {
		t.Errorf("got %v", err)
	}
}
