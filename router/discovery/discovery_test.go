package discovery

import (
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"

	"skiff/config"
	"skiff/router/lb"
	"skiff/telemetry"
)

// refresh is the tests' re-resolution period: short, so a test sees several rounds in
// well under a second.
const refresh = 20 * time.Millisecond

// follow is how long a test waits for the set to follow a change of the records. The
// lookup itself takes well under a millisecond on loopback; the margin over refresh is
// for a loaded machine under -race.
const follow = 2 * time.Second

func dnsSpec(d *dnsServer, name string) *DNS {
	return &DNS{Name: name, Port: 8080, Refresh: refresh, Timeout: 100 * time.Millisecond,
		Labels: map[string]string{"src": "dns"}, Servers: []netip.AddrPort{d.addr}}
}

func newTestRegistry(t *testing.T, m *telemetry.Metrics) *Registry {
	t.Helper()
	r := NewRegistry(zerolog.Nop(), m)
	t.Cleanup(r.Close)
	return r
}

// addrs returns the endpoints' addresses as strings, in order.
func addrs(eps []lb.Endpoint) []string {
	out := []string{}
	for _, e := range eps {
		out = append(out, e.Addr.String())
	}
	return out
}

func wantAddrs(t *testing.T, s *Set, want ...string) uint64 {
	t.Helper()
	eps, v := s.Load()
	if got := addrs(eps); !slices.Equal(got, want) {
		t.Fatalf("endpoints %v (version %d), want %v", got, v, want)
	}
	return v
}

// waitFor waits until the set's addresses are want, and returns the version.
func waitFor(t *testing.T, s *Set, want ...string) uint64 {
	t.Helper()
	deadline := time.After(follow)
	for {
		ch := s.Changed()
		eps, v := s.Load()
		if slices.Equal(addrs(eps), want) {
			return v
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("after %v the endpoints are %v (version %d), want %v", follow, addrs(eps), v, want)
		}
	}
}

// waitQueries waits until the server has had n more queries than now, i.e. until the
// resolver has run about n/2 more lookups.
func waitQueries(t *testing.T, d *dnsServer, n int64) {
	t.Helper()
	target := d.queries.Load() + n
	deadline := time.Now().Add(follow)
	for d.queries.Load() < target {
		if time.Now().After(deadline) {
			t.Fatalf("the resolver stopped asking: %d queries, want %d", d.queries.Load(), target)
		}
		time.Sleep(refresh / 4)
	}
}

func TestDNSFollowsRecords(t *testing.T) {
	d := startDNS(t)
	d.set("web.skiff.test", "10.0.0.2", "10.0.0.1", "2001:db8::1")
	r := newTestRegistry(t, nil)
	r.Update([]Spec{{Service: "web", DNS: dnsSpec(d, "web.skiff.test")}})
	s := r.Set("web")
	// Update waits for the first answer, so the endpoints are there at once, sorted.
	v1 := wantAddrs(t, s, "10.0.0.1:8080", "10.0.0.2:8080", "[2001:db8::1]:8080")
	eps, _ := s.Load()
	if eps[0].Labels["src"] != "dns" || eps[0].Weight != 0 {
		t.Errorf("DNS endpoint %+v: want the spec's labels and weight 0", eps[0])
	}

	// A pod joins and one goes: the set follows within a few refresh periods.
	start := time.Now()
	d.set("web.skiff.test", "10.0.0.3", "10.0.0.1", "2001:db8::1")
	v2 := waitFor(t, s, "10.0.0.1:8080", "10.0.0.3:8080", "[2001:db8::1]:8080")
	t.Logf("followed a change in %v (refresh %v)", time.Since(start), refresh)
	if v2 == v1 {
		t.Errorf("version %d did not change with the endpoints", v2)
	}

	// Answers that say the same (in another order) publish nothing new.
	before, _ := s.Load()
	d.set("web.skiff.test", "2001:db8::1", "10.0.0.3", "10.0.0.1")
	waitQueries(t, d, 6)
	after, v3 := s.Load()
	if v3 != v2 || &after[0] != &before[0] {
		t.Errorf("an unchanged answer published version %d (was %d) or a new slice", v3, v2)
	}
}

func TestDNSFailureKeepsLastGood(t *testing.T) {
	d := startDNS(t)
	d.set("web.skiff.test", "10.0.0.1", "10.0.0.2")
	m := telemetry.NewMetrics()
	r := newTestRegistry(t, m)
	r.Update([]Spec{{Service: "web", DNS: dnsSpec(d, "web.skiff.test")}})
	s := r.Set("web")
	v := wantAddrs(t, s, "10.0.0.1:8080", "10.0.0.2:8080")
	okBefore := counter(t, m, "web", "ok")
	if okBefore < 1 {
		t.Errorf("ok lookups %v, want at least 1", okBefore)
	}

	for _, mode := range []string{"servfail", "drop"} {
		errBefore := counter(t, m, "web", "error")
		d.failWith(mode)
		waitCounter(t, m, "web", "error", errBefore+2)
		if _, got := s.Load(); got != v {
			t.Errorf("%s: version %d, want %d: a failed lookup changed the endpoints", mode, got, v)
		}
		wantAddrs(t, s, "10.0.0.1:8080", "10.0.0.2:8080")
		d.failWith("")
		waitCounter(t, m, "web", "ok", counter(t, m, "web", "ok")+1)
	}
	if g := gauge(t, m, "web"); g != 2 {
		t.Errorf("skiff_service_endpoints %v, want 2", g)
	}

	// An authoritative empty answer and NXDOMAIN are news: the name has no pods.
	d.set("web.skiff.test")
	waitFor(t, s)
	d.set("web.skiff.test", "10.0.0.5")
	waitFor(t, s, "10.0.0.5:8080")
	d.remove("web.skiff.test")
	waitFor(t, s)
	if g := gauge(t, m, "web"); g != 0 {
		t.Errorf("skiff_service_endpoints %v, want 0", g)
	}
}

// A second server answers when the first does not.
func TestDNSServerFallback(t *testing.T) {
	dead, live := startDNS(t), startDNS(t)
	dead.failWith("drop")
	live.set("web.skiff.test", "10.0.0.1")
	r := newTestRegistry(t, nil)
	spec := dnsSpec(live, "web.skiff.test")
	spec.Timeout = 50 * time.Millisecond
	spec.Servers = []netip.AddrPort{dead.addr, live.addr}
	r.Update([]Spec{{Service: "web", DNS: spec}})
	waitFor(t, r.Set("web"), "10.0.0.1:8080")
	if dead.queries.Load() == 0 {
		t.Error("the first server was never asked")
	}
}

func TestStaticAndDNSMerge(t *testing.T) {
	d := startDNS(t)
	d.set("web.skiff.test", "10.0.0.1", "10.0.0.3", "10.0.0.3")
	r := newTestRegistry(t, nil)
	spec := dnsSpec(d, "web.skiff.test")
	spec.Port = 0 // the service port's target port, as a static address without one
	r.Update([]Spec{{Service: "web", DNS: spec, Static: []lb.Endpoint{
		{Addr: netip.MustParseAddrPort("10.0.0.9:9090"), Weight: 2},
		{Addr: netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), 0), Weight: 3, Labels: map[string]string{"src": "static"}},
	}}})
	s := r.Set("web")
	wantAddrs(t, s, "10.0.0.1:0", "10.0.0.3:0", "10.0.0.9:9090")
	eps, _ := s.Load()
	if eps[0].Weight != 3 || eps[0].Labels["src"] != "static" {
		t.Errorf("10.0.0.1, listed both ways: %+v, want the static weight and labels", eps[0])
	}
	if eps[1].Labels["src"] != "dns" {
		t.Errorf("10.0.0.3: %+v, want the DNS labels", eps[1])
	}
}

func TestUpdateKeepsSets(t *testing.T) {
	d := startDNS(t)
	d.set("web.skiff.test", "10.0.0.1")
	d.set("api.skiff.test", "10.0.1.1")
	r := newTestRegistry(t, nil)
	static := []lb.Endpoint{{Addr: netip.MustParseAddrPort("192.0.2.1:80")}}
	specs := []Spec{
		{Service: "web", DNS: dnsSpec(d, "web.skiff.test")},
		{Service: "db", Static: static},
	}
	r.Update(specs)
	web, db := r.Set("web"), r.Set("db")
	res := r.resolvers["web"]
	vWeb := wantAddrs(t, web, "10.0.0.1:8080")
	vDB := wantAddrs(t, db, "192.0.2.1:80")

	// The same config again (new values, equal content): nothing restarts or changes.
	again := []Spec{
		{Service: "web", DNS: dnsSpec(d, "web.skiff.test")},
		{Service: "db", Static: slices.Clone(static)},
	}
	r.Update(again)
	if r.Set("web") != web || r.Set("db") != db {
		t.Fatal("a service that stays got a new *Set")
	}
	if r.resolvers["web"] != res {
		t.Error("an unchanged DNS spec restarted its resolver")
	}
	if _, v := web.Load(); v != vWeb {
		t.Errorf("web version %d, want %d", v, vWeb)
	}
	if _, v := db.Load(); v != vDB {
		t.Errorf("db version %d, want %d", v, vDB)
	}

	// Static endpoints apply at once; a changed DNS spec restarts the resolver, and
	// with the same name the addresses it had apply with the new port at once.
	ch := db.Changed()
	spec := dnsSpec(d, "web.skiff.test")
	spec.Port = 9000
	r.Update([]Spec{
		{Service: "web", DNS: spec},
		{Service: "db", Static: append(slices.Clone(static), lb.Endpoint{Addr: netip.MustParseAddrPort("192.0.2.2:80")})},
	})
	select {
	case <-ch:
	default:
		t.Error("Changed was not closed by a change of the static endpoints")
	}
	wantAddrs(t, db, "192.0.2.1:80", "192.0.2.2:80")
	wantAddrs(t, web, "10.0.0.1:9000")
	if r.resolvers["web"] == res {
		t.Error("a changed DNS spec kept its resolver")
	}
	select {
	case <-res.done:
	default:
		t.Error("the replaced resolver still runs")
	}

	// Another name: the old name's addresses serve until the new name answers.
	res = r.resolvers["web"]
	r.Update([]Spec{{Service: "web", DNS: dnsSpec(d, "api.skiff.test")}})
	if r.Set("web") != web {
		t.Fatal("renaming the DNS name gave a new *Set")
	}
	wantAddrs(t, web, "10.0.1.1:8080")

	// A service that goes stops its resolver; one that comes back starts afresh.
	res = r.resolvers["web"]
	r.Update([]Spec{{Service: "db", Static: static}})
	select {
	case <-res.done:
	default:
		t.Error("a removed service's resolver still runs")
	}
	if r.Set("web") != nil {
		t.Error("a removed service still has a set")
	}
	if len(r.resolvers) != 0 {
		t.Errorf("%d resolvers left, want 0", len(r.resolvers))
	}
	r.Update([]Spec{{Service: "web", DNS: dnsSpec(d, "web.skiff.test")}})
	if r.Set("web") == web {
		t.Error("a service removed and added again kept its old set")
	}
	wantAddrs(t, r.Set("web"), "10.0.0.1:8080")
}

// A renamed name keeps the old name's addresses while its first lookup runs; if that
// lookup fails they go: they are not this name's last good answer.
func TestRenameThenFailure(t *testing.T) {
	d := startDNS(t)
	d.set("old.skiff.test", "10.0.0.1")
	r := newTestRegistry(t, nil)
	r.firstWait = 20 * time.Millisecond
	r.Update([]Spec{{Service: "web", DNS: dnsSpec(d, "old.skiff.test")}})
	s := r.Set("web")
	wantAddrs(t, s, "10.0.0.1:8080")
	d.failWith("drop")
	spec := dnsSpec(d, "new.skiff.test")
	spec.Timeout = 500 * time.Millisecond
	r.Update([]Spec{{Service: "web", DNS: spec}})
	wantAddrs(t, s, "10.0.0.1:8080") // Update gave up waiting; the lookup still runs
	waitFor(t, s)
}

// Update waits for the first answer of a new name, but not for ever.
func TestUpdateWaitIsBounded(t *testing.T) {
	d := startDNS(t)
	d.failWith("drop")
	r := newTestRegistry(t, nil)
	r.firstWait = 100 * time.Millisecond
	spec := dnsSpec(d, "web.skiff.test")
	spec.Timeout = 5 * time.Second
	start := time.Now()
	r.Update([]Spec{{Service: "web", DNS: spec, Static: []lb.Endpoint{{Addr: netip.MustParseAddrPort("10.0.0.9:80")}}}})
	if el := time.Since(start); el > time.Second {
		t.Errorf("Update took %v with a silent server; want about %v", el, r.firstWait)
	}
	wantAddrs(t, r.Set("web"), "10.0.0.9:80")
	// Close stops a resolver in the middle of its lookup.
	start = time.Now()
	r.Close()
	if el := time.Since(start); el > time.Second {
		t.Errorf("Close took %v", el)
	}
}

func TestCloseStopsResolvers(t *testing.T) {
	d := startDNS(t)
	base := runtime.NumGoroutine()
	r := NewRegistry(zerolog.Nop(), nil)
	var specs []Spec
	for i := range 5 {
		name := fmt.Sprintf("s%d.skiff.test", i)
		d.set(name, fmt.Sprintf("10.0.0.%d", i+1))
		specs = append(specs, Spec{Service: fmt.Sprintf("s%d", i), DNS: dnsSpec(d, name)})
	}
	r.Update(specs)
	var done []chan struct{}
	for _, res := range r.resolvers {
		done = append(done, res.done)
	}
	if len(done) != 5 {
		t.Fatalf("%d resolvers, want 5", len(done))
	}
	r.Close()
	for _, c := range done {
		select {
		case <-c:
		default:
			t.Fatal("Close returned with a resolver running")
		}
	}
	// Nothing else of the registry's is left running either (the resolver's own
	// sockets close with their lookups).
	deadline := time.Now().Add(follow)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines after Close, %d before the registry:\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
	q := d.queries.Load()
	time.Sleep(3 * refresh)
	if d.queries.Load() != q {
		t.Error("queries after Close")
	}
	r.Update(specs) // after Close: nothing starts
	if len(r.resolvers) != 0 {
		t.Error("Update after Close started resolvers")
	}
}

// Without servers the system's resolver is used; an IP literal resolves without asking
// anyone, which keeps the test off the network.
func TestSystemResolver(t *testing.T) {
	r := newTestRegistry(t, nil)
	r.Update([]Spec{{Service: "web", DNS: &DNS{Name: "127.0.0.7", Port: 80, Refresh: time.Hour}}})
	wantAddrs(t, r.Set("web"), "127.0.0.7:80")
}

// Readers load while resolvers and reloads publish: run with -race.
func TestConcurrentLoad(t *testing.T) {
	d := startDNS(t)
	d.set("web.skiff.test", "10.0.0.1")
	r := newTestRegistry(t, nil)
	r.Update([]Spec{{Service: "web", DNS: dnsSpec(d, "web.skiff.test")}})
	s := r.Set("web")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			var last uint64
			for {
				select {
				case <-stop:
					return
				default:
				}
				eps, v := s.Load()
				if v < last {
					t.Errorf("version went back from %d to %d", last, v)
					return
				}
				last = v
				for _, e := range eps {
					_ = e.Labels["src"]
				}
			}
		})
	}
	for i := range 20 {
		d.set("web.skiff.test", fmt.Sprintf("10.0.0.%d", i%3+1))
		r.Update([]Spec{{Service: "web", DNS: dnsSpec(d, "web.skiff.test"),
			Static: []lb.Endpoint{{Addr: netip.AddrPortFrom(netip.MustParseAddr("10.1.0.1"), uint16(i))}}}})
		time.Sleep(refresh / 4)
	}
	close(stop)
	wg.Wait()
}

func TestSpecsFromConfig(t *testing.T) {
	cfg, err := config.Parse("test.yaml", []byte(`
discovery:
  dns_servers: ["127.0.0.1:5353", "10.96.0.10"]
  dns_refresh: 7s
services:
  - name: web
    hosts: [web]
    endpoints:
      - address: 10.0.0.1
        weight: 3
        labels: {version: v1}
      - address: 10.0.0.2:8080
    dns:
      name: web.default.svc.cluster.local
      port: 9000
      labels: {version: v2}
  - name: api
    hosts: [api]
    dns:
      name: api.default.svc.cluster.local
      refresh: 1s
  - name: empty
    hosts: [empty]
`))
	if err != nil {
		t.Fatal(err)
	}
	specs := SpecsFromConfig(cfg)
	if len(specs) != 3 {
		t.Fatalf("%d specs, want 3", len(specs))
	}
	web, api, empty := specs[0], specs[1], specs[2]
	if web.Service != "web" || len(web.Static) != 2 ||
		web.Static[0].Addr != netip.MustParseAddrPort("10.0.0.1:0") || web.Static[0].Weight != 3 || web.Static[0].Labels["version"] != "v1" ||
		web.Static[1].Addr != netip.MustParseAddrPort("10.0.0.2:8080") || web.Static[1].Weight != 0 {
		t.Errorf("web static: %+v", web.Static)
	}
	servers := []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:5353"), netip.MustParseAddrPort("10.96.0.10:53")}
	if w := web.DNS; w == nil || w.Name != "web.default.svc.cluster.local" || w.Port != 9000 || w.Refresh != 7*time.Second ||
		w.Labels["version"] != "v2" || !slices.Equal(w.Servers, servers) {
		t.Errorf("web dns: %+v", web.DNS)
	}
	if a := api.DNS; a == nil || a.Port != 0 || a.Refresh != time.Second || len(api.Static) != 0 {
		t.Errorf("api: %+v, dns %+v", api, api.DNS)
	}
	if empty.Service != "empty" || empty.DNS != nil || len(empty.Static) != 0 {
		t.Errorf("empty: %+v", empty)
	}
}

func TestLoadDoesNotAllocate(t *testing.T) {
	r := newTestRegistry(t, nil)
	r.Update([]Spec{{Service: "web", Static: []lb.Endpoint{{Addr: netip.MustParseAddrPort("10.0.0.1:80")}}}})
	s := r.Set("web")
	var n int
	if a := testing.AllocsPerRun(1000, func() {
		eps, _ := s.Load()
		n += len(eps)
	}); a != 0 {
		t.Errorf("Load allocates %v times per call, want 0", a)
	}
}

func BenchmarkLoad(b *testing.B) {
	r := NewRegistry(zerolog.Nop(), nil)
	defer r.Close()
	r.Update([]Spec{{Service: "web", Static: []lb.Endpoint{{Addr: netip.MustParseAddrPort("10.0.0.1:80")}}}})
	s := r.Set("web")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if eps, _ := s.Load(); len(eps) != 1 {
				b.Fatal("lost the endpoint")
			}
		}
	})
}

func metric(t *testing.T, m *telemetry.Metrics, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, mm := range mf.GetMetric() {
			if labelsMatch(mm, labels) {
				if mm.Counter != nil {
					return mm.GetCounter().GetValue()
				}
				return mm.GetGauge().GetValue()
			}
		}
	}
	return 0
}

func labelsMatch(m *dto.Metric, kv []string) bool {
	want := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		want[kv[i]] = kv[i+1]
	}
	for _, lp := range m.GetLabel() {
		if v, ok := want[lp.GetName()]; ok && v != lp.GetValue() {
			return false
		}
	}
	return true
}

func counter(t *testing.T, m *telemetry.Metrics, service, result string) float64 {
	t.Helper()
	return metric(t, m, "skiff_dns_resolutions_total", "service", service, "result", result)
}

func gauge(t *testing.T, m *telemetry.Metrics, service string) float64 {
	t.Helper()
	return metric(t, m, "skiff_service_endpoints", "service", service)
}

func waitCounter(t *testing.T, m *telemetry.Metrics, service, result string, n float64) {
	t.Helper()
	deadline := time.Now().Add(follow)
	for counter(t, m, service, result) < n {
		if time.Now().After(deadline) {
			t.Fatalf("skiff_dns_resolutions_total{service=%q,result=%q} = %v, want at least %v", service, result, counter(t, m, service, result), n)
		}
		time.Sleep(refresh / 4)
	}
}
