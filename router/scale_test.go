package router

import (
	"fmt"
	"net/http"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"skiff/config"
	"skiff/telemetry"
)

// scaleConfig is a config of nServices services, each with three endpoints in two
// subsets, and routesPer HTTP routes per service matching on path and a header, with
// a 90/10 split.
func scaleConfig(nServices, routesPer int) []byte {
	var b strings.Builder
	b.WriteString("services:\n")
	for i := range nServices {
		fmt.Fprintf(&b, `  - name: svc-%d
    hosts: [svc-%d, svc-%d.prod.svc.cluster.local]
    addresses: [10.%d.%d.1]
    ports: [{port: 8080, protocol: http}]
    endpoints:
      - {address: 10.200.%d.%d, labels: {version: v1}}
      - {address: 10.201.%d.%d, labels: {version: v1}}
      - {address: 10.202.%d.%d, labels: {version: v2}}
    subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
`, i, i, i, 96+i/256, i%256, i/256, i%256, i/256, i%256, i/256, i%256)
	}
	b.WriteString("routes:\n  http:\n")
	for i := range nServices {
		for j := range routesPer {
			fmt.Fprintf(&b, `    - name: svc-%d-r%d
      service: svc-%d
      match: [{path: {prefix: /api/%d/}, headers: [{name: x-tenant, exact: t%d}]}]
      destinations: [{service: svc-%d, subset: v1, weight: 90}, {service: svc-%d, subset: v2, weight: 10}]
`, i, j, i, j, j, i, i)
		}
	}
	return []byte(b.String())
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestScaleLoad loads and swaps in a config of 1,000 services and 10,000 routes and
// reports the time each step takes and the memory the snapshot holds. (Times are
// reported, not asserted: this machine's timings are too noisy for a fixed bound.)
func TestScaleLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	const nServices, routesPer = 1000, 10
	data := scaleConfig(nServices, routesPer)

	before := heapInUse()
	start := time.Now()
	cfg, err := config.Parse("scale.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	parsed := time.Since(start)
	rt, err := NewRouter(cfg, zerolog.Nop(), telemetry.NewMetrics())
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	built := time.Since(start) - parsed
	held := heapInUse() - before

	// A second load swapped in over the first: what a reload costs.
	start = time.Now()
	cfg2, err := config.Parse("scale.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.Apply(cfg2); err != nil {
		t.Fatal(err)
	}
	reload := time.Since(start)

	// The table answers: the last route of the last service.
	last := fmt.Sprintf("svc-%d", nServices-1)
	r, _ := http.NewRequest("GET", "http://"+last+":8080/api/9/x", nil)
	r.Header.Set("X-Tenant", "t9")
	svc := rt.Snapshot().Routes.serviceFor(netip.MustParseAddrPort("192.0.2.1:8080"), r.Host)
	if svc == nil || svc.name != last {
		t.Fatalf("service for %s: %v", r.Host, svc)
	}
	if route := svc.matchHTTP(r, false); route == nil || route.name != last+"-r9" {
		t.Fatalf("route: %+v", route)
	}
	t.Logf("%d services, %d routes, %d KiB of YAML: parse+validate %v, compile+swap %v, reload (parse+compile+swap) %v, heap held %.1f MiB",
		nServices, nServices*routesPer, len(data)/1024, parsed.Round(time.Millisecond), built.Round(time.Millisecond),
		reload.Round(time.Millisecond), float64(held)/(1<<20))
}
