//go:build linux

package e2e

import (
	"encoding/json"
	"fmt"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The routing tests run the workload's client in app, captured by skiff, against two
// backends, each in its own namespace, that answer with their name (v1, v2):
//
//	srv 10.77.N.2 ──e0── app (skiff) ──b1── 10.88.1.2 b1 (v1)
//	                         └──────────b2── 10.88.2.2 b2 (v2)
//
// The app dials a service's virtual address (10.99.0.x), which no host holds: only
// skiff's capture and its routes make it answer, so an answer proves the route.
const (
	vipReviews = "10.99.0.10" // reviews: HTTP on port 80, endpoints on 8080
	vipGreeter = "10.99.0.11" // greeter: gRPC on 9090
	vipMail    = "10.99.0.30" // mail: opaque TCP on 2525
	vipAPI     = "10.99.0.40" // api: HTTP on port 80, endpoints found by DNS
	vipNowhere = "10.99.0.99" // no service's address
	portVIP    = 80
)

// meshTopo is a topo (app and srv) with two backend namespaces joined to app.
type meshTopo struct {
	*topo
	b    [3]*netNS // b[1], b[2]
	bV4  [3]netip.Addr
	name [3]string // what the backends answer with: v1, v2
}

func newMeshTopo(t *testing.T) *meshTopo {
	t.Helper()
	m := &meshTopo{topo: newTopo(t)}
	for k := 1; k <= 2; k++ {
		ns := newNetNS(t)
		link := fmt.Sprintf("b%d", k)
		mustRun(t, "ip", "-n", m.app.name, "link", "add", link, "type", "veth", "peer", "name", "e0", "netns", ns.name)
		mustRun(t, "ip", "-n", m.app.name, "addr", "add", fmt.Sprintf("10.88.%d.1/24", k), "dev", link)
		mustRun(t, "ip", "-n", ns.name, "addr", "add", fmt.Sprintf("10.88.%d.2/24", k), "dev", "e0")
		mustRun(t, "ip", "-n", m.app.name, "link", "set", link, "up")
		mustRun(t, "ip", "-n", ns.name, "link", "set", "e0", "up")
		m.b[k], m.bV4[k], m.name[k] = ns, netip.MustParseAddr(fmt.Sprintf("10.88.%d.2", k)), fmt.Sprintf("v%d", k)
	}
	// The virtual addresses need a route for connect() to get as far as the capture
	// rules; the packets never take it (skiff redirects the first one).
	mustRun(t, "ip", "-n", m.app.name, "route", "add", "10.99.0.0/16", "via", m.srvV4.String())
	return m
}

// startBackends runs a server of each kind in both backends, named v1 and v2.
func (m *meshTopo) startBackends(t *testing.T, kinds ...string) {
	t.Helper()
	ports := map[string]uint16{"http": portHTTP, "grpc": portGRPC, "banner": portBanner}
	for k := 1; k <= 2; k++ {
		for _, kind := range kinds {
			m.b[k].startServer(t, kind, ports[kind], "-name", m.name[k])
		}
	}
}

// meshServices is the services section of the routing tests: reviews (HTTP) and
// greeter (gRPC) with one endpoint in each backend, labelled by version, and a subset
// per version. The endpoints have no port: the service port's target_port is dialled.
func (m *meshTopo) meshServices() string {
	return fmt.Sprintf(`services:
  - name: reviews
    hosts: [reviews.e2e.test]
    addresses: [%[1]s]
    ports: [{port: %[3]d, protocol: http, target_port: %[4]d}]
    endpoints:
      - {address: %[5]s, labels: {version: v1}}
      - {address: %[6]s, labels: {version: v2}}
    subsets:
      - {name: v1, labels: {version: v1}}
      - {name: v2, labels: {version: v2}}
  - name: greeter
    addresses: [%[2]s]
    ports: [{port: %[7]d, protocol: grpc}]
    endpoints:
      - {address: %[5]s, labels: {version: v1}}
      - {address: %[6]s, labels: {version: v2}}
    subsets:
      - {name: v1, labels: {version: v1}}
      - {name: v2, labels: {version: v2}}
`, vipReviews, vipGreeter, portVIP, portHTTP, m.bV4[1], m.bV4[2], portGRPC)
}

// routeCountResult mirrors testapp route-count's result.
type routeCountResult struct {
	result
	Counts   map[string]int `json:"counts"`
	Failures int            `json:"failures"`
	Errors   []string       `json:"errors"`
	Dials    int64          `json:"dials"`
}

// countNames runs route-count in ns and fails the test on any failed request.
func countNames(t *testing.T, ns *netNS, args ...string) routeCountResult {
	t.Helper()
	var r routeCountResult
	ns.client(t, 2*time.Minute, &r, append([]string{"route-count"}, args...)...)
	if r.Failures > 0 || !r.OK {
		t.Fatalf("route-count %s: %d requests failed: %v (answers: %v)", strings.Join(args, " "), r.Failures, r.Errors, r.Counts)
	}
	return r
}

func vipURL(vip string) string { return fmt.Sprintf("http://%s:%d/", vip, portVIP) }

// TestRoutingHeaderMatch: a request with x-user: jason goes to subset v2, every other
// request to v1, whatever the protocol, and whether the service was named by its
// address or by its Host.
func TestRoutingHeaderMatch(t *testing.T) {
	need(t)
	t.Parallel()
	m := newMeshTopo(t)
	m.startBackends(t, "http")
	sc := initSkiff(t, m.app, testConfig+m.meshServices()+`routes:
  http:
    - name: jason-to-v2
      service: reviews
      match: [{headers: [{name: x-user, exact: jason}]}]
      destinations: [{service: reviews, subset: v2}]
    - name: everyone-else
      service: reviews
      destinations: [{service: reviews, subset: v1}]
`)
	sc.run(t)
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"http1_jason", []string{"-url", vipURL(vipReviews), "-H", "x-user: jason"}, "v2"},
		{"http1_no_header", []string{"-url", vipURL(vipReviews)}, "v1"},
		{"http1_other_user", []string{"-url", vipURL(vipReviews), "-H", "x-user: jasonx"}, "v1"},
		{"h2c_jason", []string{"-url", vipURL(vipReviews), "-h2c", "-H", "x-user: jason"}, "v2"},
		{"h2c_no_header", []string{"-url", vipURL(vipReviews), "-h2c"}, "v1"},
		// By Host, to an address no service has.
		{"by_host_jason", []string{"-url", vipURL(vipNowhere), "-host", "reviews.e2e.test", "-H", "x-user: jason"}, "v2"},
		{"by_host_no_header", []string{"-url", vipURL(vipNowhere), "-host", "reviews.e2e.test"}, "v1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := countNames(t, m.app, append(c.args, "-n", "40", "-conns", "2")...)
			if r.Counts[c.want] != 40 {
				t.Errorf("route-count %s: answers by backend %v, want all 40 from %s", strings.Join(c.args, " "), r.Counts, c.want)
			}
		})
	}
}

// TestRoutingCanary: a 90/10 split between subsets, over 1000 requests on keep-alive
// connections (so the split is per request, not per connection) and over one h2c
// connection.
func TestRoutingCanary(t *testing.T) {
	need(t)
	t.Parallel()
	m := newMeshTopo(t)
	m.startBackends(t, "http")
	sc := initSkiff(t, m.app, testConfig+m.meshServices()+`routes:
  http:
    - name: canary
      service: reviews
      destinations: [{service: reviews, subset: v1, weight: 90}, {service: reviews, subset: v2, weight: 10}]
`)
	sc.run(t)
	const n, p = 1000, 0.10
	// v2's count is binomial(n, p) if each request is split independently at random;
	// a deterministic weighted round robin lands on n*p exactly. 4 standard deviations
	// either side: a correct split fails this about once in 16,000 runs.
	sd := math.Sqrt(n * p * (1 - p))
	lo, hi := int(math.Ceil(n*p-4*sd)), int(math.Floor(n*p+4*sd))
	for _, c := range []struct {
		name string
		args []string
	}{
		{"http1_keepalive_4_conns", []string{"-conns", "4"}},
		{"h2c_one_conn", []string{"-conns", "4", "-h2c"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := countNames(t, m.app, append([]string{"-url", vipURL(vipReviews), "-n", fmt.Sprint(n)}, c.args...)...)
			v1, v2 := r.Counts["v1"], r.Counts["v2"]
			t.Logf("CANARY 90/10 over %d requests (%s, %d connections): v1 %d, v2 %d (v2 accepted in [%d, %d], 4 sd of binomial(%d, %.2f))",
				n, c.name, r.Dials, v1, v2, lo, hi, n, p)
			if v1+v2 != n {
				t.Errorf("answers by backend %v: want only v1 and v2, %d in all", r.Counts, n)
			}
			if v2 < lo || v2 > hi {
				t.Errorf("v2 answered %d of %d requests, want %d to %d (10%% ± 4 sd)", v2, n, lo, hi)
			}
		})
	}
}

// TestRoutingTCPByPort: an opaque TCP connection to port 2525, wherever it was going,
// goes to the mail service's endpoint in b2 by a TCP route; a connection to another port
// passes through to its own destination.
func TestRoutingTCPByPort(t *testing.T) {
	need(t)
	t.Parallel()
	m := newMeshTopo(t)
	m.srv.startServer(t, "banner", portBanner, "-name", "direct")
	m.srv.startServer(t, "banner", portBannerPinned, "-name", "direct")
	m.b[2].startServer(t, "banner", portBanner, "-name", "moved")
	sc := initSkiff(t, m.app, testConfig+fmt.Sprintf(`services:
  - name: mail
    addresses: [%s]
    ports: [{port: %d, protocol: tcp}]
    endpoints: [{address: %s}]
routes:
  tcp:
    - name: smtp-to-b2
      port: %d
      destinations: [{service: mail}]
`, vipMail, portBanner, m.bV4[2], portBanner))
	sc.run(t)
	before := sc.metrics(t)
	for _, c := range []struct {
		name, addr, want string
	}{
		{"routed_by_port", hostPort(m.srvV4, portBanner), "220 moved ESMTP\r\n"},
		{"service_address", netip.AddrPortFrom(netip.MustParseAddr(vipMail), portBanner).String(), "220 moved ESMTP\r\n"},
		{"other_port_untouched", hostPort(m.srvV4, portBannerPinned), "220 direct ESMTP\r\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			// The client speaks first, so the connection is sniffed as opaque TCP (not a
			// silent server-first one); the greeting names the server that answered.
			r := probe(t, m.app, "-addr", c.addr, "-send", "HELO e2e\r\n", "-wait", "5s")
			if !r.OK || !strings.HasPrefix(r.Data, c.want) {
				t.Errorf("connection to %s: got %q (%s %s), want the greeting %q", c.addr, r.Data, r.Outcome, r.Error, c.want)
			}
		})
	}
	after := sc.waitMetrics(t, 5*time.Second, func(mm metrics) bool {
		return delta(before, mm, mDetected, "direction", "outbound", "protocol", "tcp") >= 3
	})
	if d := delta(before, after, mDetected, "direction", "outbound", "protocol", "tcp"); d != 3 {
		t.Errorf("%s{protocol=tcp} moved by %v, want 3: the connections were not handled as opaque TCP", mDetected, d)
	}
}

// TestRoutingDNSDiscovery: a service whose endpoints come from DNS follows its records:
// when the name's address changes, new requests go to the new address without any
// config reload.
func TestRoutingDNSDiscovery(t *testing.T) {
	need(t)
	t.Parallel()
	m := newMeshTopo(t)
	m.startBackends(t, "http")
	records := filepath.Join(t.TempDir(), "records")
	setRecords := func(addr netip.Addr) time.Time {
		// Renamed over the old file, as the dns server asks, so no query sees half of it.
		tmp := records + ".tmp"
		if err := os.WriteFile(tmp, []byte("api.e2e.test "+addr.String()+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		at := time.Now()
		if err := os.Rename(tmp, records); err != nil {
			t.Fatal(err)
		}
		return at
	}
	setRecords(m.bV4[1])
	m.srv.startServer(t, "dns", 53, "-records", records)
	const refresh = 250 * time.Millisecond
	sc := initSkiff(t, m.app, testConfig+fmt.Sprintf(`discovery:
  dns_servers: [%s]
  dns_refresh: %v
services:
  - name: api
    addresses: [%s]
    ports: [{port: %d, protocol: http, target_port: %d}]
    dns: {name: api.e2e.test}
`, m.srvV4, refresh, vipAPI, portVIP, portHTTP))
	sc.run(t)

	// No route names api: its requests go to its own endpoints, here the one in DNS.
	// The first resolution may come after skiff is ready; requests before it may fail.
	if r := watchRoute(t, m.app, "v1", 10*time.Second, "-url", vipURL(vipAPI)).result(t); r.SwitchedUnixNS == 0 {
		t.Fatalf("the DNS-discovered endpoint never answered: first answer from %q, %d requests, errors %v", r.First, r.Requests, r.Errors)
	}
	before := sc.metrics(t)

	w := watchRoute(t, m.app, "v2", 10*time.Second, "-url", vipURL(vipAPI))
	at := setRecords(m.bV4[2])
	took := w.wait(t).Sub(at)
	t.Logf("DNS: new requests reached the new address %v after the records changed (dns_refresh %v)", took.Round(time.Millisecond), refresh)
	if took > refresh+2*time.Second {
		t.Errorf("traffic moved %v after the records changed, want within dns_refresh (%v) and 2s", took, refresh)
	}
	if r := countNames(t, m.app, "-url", vipURL(vipAPI), "-n", "40", "-conns", "2"); r.Counts["v2"] != 40 {
		t.Errorf("after the address changed: answers by backend %v, want all 40 from v2 (the old address must be gone)", r.Counts)
	}
	after := sc.metrics(t)
	if d := delta(before, after, mReloads); d != 0 {
		t.Errorf("%s moved by %v: the config was reloaded, but only DNS changed", mReloads, d)
	}
}

// routeWatch is a route-watch client polling in the background.
type routeWatch struct {
	p     *proc
	want  string
	dur   time.Duration
	early *routeWatchResult // the result, when it came before any answer
}

// routeWatchResult mirrors testapp route-watch's result.
type routeWatchResult struct {
	result
	First          string   `json:"first"`
	Requests       int      `json:"requests"`
	Failures       int      `json:"failures"`
	Errors         []string `json:"errors"`
	SwitchedUnixNS int64    `json:"switched_unix_ns"`
}

// watchRoute starts polling with new requests until want answers, and returns once the
// first answer came (so a change made after it is seen from before).
func watchRoute(t *testing.T, ns *netNS, want string, timeout time.Duration, args ...string) *routeWatch {
	t.Helper()
	argv := append([]string{appBin, "route-watch", "-want", want, "-timeout", timeout.String()}, args...)
	w := &routeWatch{p: ns.start(t, "route-watch "+want, argv...), want: want, dur: timeout}
	line := w.p.waitLine(t, timeout+10*time.Second, func(m map[string]any) bool { return m["event"] == "polling" || m["ok"] != nil })
	if line["ok"] != nil {
		b, _ := json.Marshal(line)
		w.early = new(routeWatchResult)
		_ = json.Unmarshal(b, w.early)
	}
	return w
}

// result waits for the poller's result.
func (w *routeWatch) result(t *testing.T) routeWatchResult {
	t.Helper()
	if w.early != nil {
		return *w.early
	}
	var r routeWatchResult
	w.p.result(t, w.dur+10*time.Second, &r)
	return r
}

// wait returns when the wanted backend first answered; every request on the way must
// have been answered.
func (w *routeWatch) wait(t *testing.T) time.Time {
	t.Helper()
	r := w.result(t)
	if r.SwitchedUnixNS == 0 {
		t.Fatalf("%s never answered within %v (first answer from %q, %d requests, errors %v)", w.want, w.dur, r.First, r.Requests, r.Errors)
	}
	if r.Failures > 0 {
		t.Errorf("while waiting for %s: %d of %d requests failed: %v", w.want, r.Failures, r.Requests, r.Errors)
	}
	return time.Unix(0, r.SwitchedUnixNS)
}

const mReloads = "skiff_config_reloads_total"
