package config

import (
	"reflect"
	"testing"
)

func mustParse(t *testing.T, s string) *Config {
	t.Helper()
	c, err := Parse("t.yaml", []byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

const diffBase = `
services:
  - name: reviews
    hosts: [reviews]
    endpoints: [{address: 10.0.0.1, labels: {version: v1}}, {address: 10.0.0.2, labels: {version: v2}}]
    subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
  - name: ratings
    addresses: [10.1.0.0/24]
  - name: db
    addresses: [10.2.0.1]
routes:
  http:
    - name: canary
      service: reviews
      destinations: [{service: reviews, subset: v1, weight: 90}, {service: reviews, subset: v2, weight: 10}]
  tcp:
    - name: db
      port: 5432
      destinations: [{service: db}]
`

func TestDiff(t *testing.T) {
	cur := mustParse(t, diffBase)
	next := mustParse(t, `
log:
  level: debug
proxy:
  connect_timeout: 3s
sniff:
  ports: {"8080": http}
services:
  - name: reviews
    hosts: [reviews]
    endpoints: [{address: 10.0.0.1, labels: {version: v1}}, {address: 10.0.0.2, labels: {version: v2}}]
    subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
  - name: ratings
    addresses: [10.1.0.0/16]
  - name: details
    hosts: [details]
routes:
  http:
    - name: jason
      service: reviews
      match: [{headers: [{name: x-user, exact: jason}]}]
      destinations: [{service: reviews, subset: v2}]
    - name: canary
      service: reviews
      destinations: [{service: reviews, subset: v1, weight: 90}, {service: reviews, subset: v2, weight: 10}]
discovery:
  dns_servers: [10.0.0.53]
`)
	got := Diff(cur, next)
	want := Changes{
		ServicesAdded:    []string{"details"},
		ServicesRemoved:  []string{"db"},
		ServicesChanged:  []string{"ratings"},
		HTTPRoutes:       [2]int{1, 2},
		TCPRoutes:        [2]int{1, 0},
		RoutesChanged:    []string{"http/jason", "http/canary", "tcp/db"},
		DiscoveryChanged: true,
		LogLevel:         [2]string{"info", "debug"},
		Static:           []string{"proxy.connect_timeout", "sniff.ports.8080"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Diff:\n got  %+v\n want %+v", got, want)
	}
	if !got.Dynamic() {
		t.Error("Dynamic() = false")
	}
	f := got.Fields()
	for k, v := range map[string]any{
		"http_routes": "1→2", "grpc_routes": "0", "tcp_routes": "1→0", "log_level": "info→debug",
		"services_added": []string{"details"}, "static_changed": []string{"proxy.connect_timeout", "sniff.ports.8080"},
	} {
		if !reflect.DeepEqual(f[k], v) {
			t.Errorf("Fields()[%q] = %#v, want %#v", k, f[k], v)
		}
	}
	if _, ok := f["services_changed"]; !ok {
		t.Error("Fields() has no services_changed")
	}
	if _, ok := f["authz_policies_added"]; ok {
		t.Error("Fields() names authorization changes that did not happen")
	}
}

// A weight change keeps every count and name but is still a change.
func TestDiffWeightOnly(t *testing.T) {
	cur := mustParse(t, diffBase)
	next := mustParse(t, diffBase)
	next.Routes.HTTP[0].Destinations[0].Weight = 50
	got := Diff(cur, next)
	if !reflect.DeepEqual(got.RoutesChanged, []string{"http/canary"}) || got.HTTPRoutes != [2]int{1, 1} {
		t.Errorf("weight change: RoutesChanged %v, HTTPRoutes %v", got.RoutesChanged, got.HTTPRoutes)
	}
	if !got.Dynamic() || len(got.Static) != 0 {
		t.Errorf("weight change: Dynamic %v, Static %v", got.Dynamic(), got.Static)
	}
}

func TestDiffNothing(t *testing.T) {
	got := Diff(mustParse(t, diffBase), mustParse(t, "# a comment\n"+diffBase))
	if got.Dynamic() || len(got.Static) != 0 {
		t.Errorf("same config: %+v", got)
	}
	// An empty list and no list are the same static setting.
	a := mustParse(t, "capture:\n  inbound:\n    exclude_ports: []\n")
	b := mustParse(t, "")
	if s := Diff(a, b).Static; len(s) != 0 {
		t.Errorf("exclude_ports [] vs default: static changes %v", s)
	}
}

func TestDiffAuthorization(t *testing.T) {
	cur := mustParse(t, "")
	next := mustParse(t, "")
	next.Authorization.DefaultAction = AuthzDeny
	next.Authorization.Policies = []AuthzPolicy{{Name: "allow-web", Action: AuthzAllow}}
	got := Diff(cur, next)
	if got.AuthzDefault != [2]string{AuthzAuto, AuthzDeny} || !reflect.DeepEqual(got.PoliciesAdded, []string{"allow-web"}) {
		t.Errorf("authorization: %+v", got)
	}
	back := Diff(next, cur)
	if !reflect.DeepEqual(back.PoliciesRemoved, []string{"allow-web"}) {
		t.Errorf("authorization removed: %+v", back)
	}
}

// InForce keeps the static keys a process started with and takes the dynamic ones.
func TestInForce(t *testing.T) {
	started := mustParse(t, "proxy:\n  connect_timeout: 2s\n")
	next := mustParse(t, "proxy:\n  connect_timeout: 9s\nlog:\n  level: error\n  format: console\n"+diffBase)
	c := InForce(started, next)
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Proxy.ConnectTimeout != started.Proxy.ConnectTimeout || c.Log.Format != "json" {
		t.Errorf("static keys: connect_timeout %v, log.format %q; want them as started", c.Proxy.ConnectTimeout, c.Log.Format)
	}
	if c.Log.Level != "error" || len(c.Services) != 3 || len(c.Routes.HTTP) != 1 || c.Service("ratings").AddrPrefixes() == nil {
		t.Errorf("dynamic keys not taken from next: %+v", c)
	}
	if started.Log.Level != "info" || len(started.Services) != 0 {
		t.Error("InForce changed the config it started from")
	}
}
