package router

import (
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/rs/zerolog"

	"skiff/config"
	"skiff/router/lb"
	"skiff/telemetry"
)

// Every config here is YAML loaded with config.Parse, so that the tests go through
// the same decoding, defaults and validation as a real file.

func parseConfig(tb testing.TB, yaml string) *config.Config {
	tb.Helper()
	cfg, err := config.Parse("routes.yaml", []byte(yaml))
	if err != nil {
		tb.Fatalf("config.Parse: %v\n%s", err, yaml)
	}
	return cfg
}

func parseTable(tb testing.TB, yaml string) *Table {
	tb.Helper()
	t, err := compileTable(parseConfig(tb, yaml), nil)
	if err != nil {
		tb.Fatalf("compileTable: %v", err)
	}
	return t
}

// newReq is a request as the proxy's server hands it over: Host is the Host header
// (or :authority) as sent.
func newReq(method, target, host string, header ...string) *http.Request {
	r := httptest.NewRequest(method, target, nil)
	r.Host = host
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Add(header[i], header[i+1])
	}
	return r
}

func svcName(s *service) string {
	if s == nil {
		return "<none>"
	}
	return s.name
}

func routeName(r *httpRoute) string {
	if r == nil {
		return "<none>"
	}
	return r.name
}

const lookupYAML = `
services:
  - name: reviews
    hosts: [reviews, reviews.default.svc.cluster.local]
    addresses: [10.96.0.10]
    ports: [{port: 9080, protocol: http}]
  - name: reviews-admin
    hosts: ["reviews:9090"]
    ports: [{port: 9090}]
  - name: shop-any
    hosts: [shop]
  - name: shop-tls
    hosts: ["shop:8443"]
  - name: ratings
    addresses: [10.96.1.0/24]
    ports: [{port: 8080}]
  - name: ratings-canary
    addresses: [10.96.1.128/25]
    ports: [{port: 8080}]
  - name: v6
    addresses: ["fd00::/64"]
  - name: wild
    hosts: ["*.example.com"]
  - name: wild-api
    hosts: ["*.api.example.com"]
    ports: [{port: 443}, {port: 80}]
  - name: wild-port
    hosts: ["*.svc.local:8443"]
`

func TestServiceLookup(t *testing.T) {
	tab := parseTable(t, lookupYAML)
	elsewhere := netip.MustParseAddrPort("192.0.2.1:80")
	for _, c := range []struct {
		name string
		dst  string
		host string
		want string
	}{
		// By the connection's original destination, which wins over Host.
		{"virtual address", "10.96.0.10:9080", "", "reviews"},
		{"virtual address wins over host", "10.96.0.10:9080", "shop", "reviews"},
		{"virtual address, port not a service port", "10.96.0.10:9999", "", "<none>"},
		{"virtual address, wrong port, host decides", "10.96.0.10:9999", "shop", "shop-any"},
		{"IPv4-mapped virtual address", "[::ffff:10.96.0.10]:9080", "", "reviews"},
		{"cidr", "10.96.1.5:8080", "", "ratings"},
		{"longest cidr first", "10.96.1.200:8080", "", "ratings-canary"},
		{"cidr, port not a service port", "10.96.1.5:8081", "", "<none>"},
		{"v6 cidr, no ports means every port", "[fd00::42]:1234", "", "v6"},
		{"address outside every cidr", "10.96.2.1:8080", "", "<none>"},

		// By Host, with the port from the header or else from the destination.
		{"host exact", "192.0.2.1:9080", "reviews", "reviews"},
		{"host:port", "", "reviews:9080", "reviews"},
		{"fqdn", "", "reviews.default.svc.cluster.local:9080", "reviews"},
		{"host is case-insensitive", "", "REVIEWS.Default.svc.cluster.local:9080", "reviews"},
		{"host port not a service port", "", "reviews:7777", "<none>"},
		{"destination port not a service port", "192.0.2.1:7777", "reviews", "<none>"},
		{"same name, other service by port", "", "reviews:9090", "reviews-admin"},
		{"name with port wins over any port", "", "shop:8443", "shop-tls"},
		{"name for any port", "", "shop:8080", "shop-any"},
		{"name for any port, port from destination", "192.0.2.1:8443", "shop", "shop-tls"},
		{"unknown host", "", "nope:80", "<none>"},
		{"empty host", "", "", "<none>"},

		// Wildcards: the longest suffix first; the bare suffix is not a match.
		{"wildcard", "", "www.example.com", "wild"},
		{"wildcard, case-insensitive", "", "WWW.Example.COM:80", "wild"},
		{"longest wildcard first", "", "v1.api.example.com:443", "wild-api"},
		{"longer wildcard lacks the port", "", "v1.api.example.com:8080", "wild"},
		{"wildcard does not match the bare domain", "", "example.com", "<none>"},
		{"wildcard does not match a lookalike", "", "notexample.com", "<none>"},
		{"wildcard with port", "", "a.svc.local:8443", "wild-port"},
		{"wildcard with port, other port", "", "a.svc.local:80", "<none>"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dst := elsewhere
			if c.dst != "" {
				dst = netip.MustParseAddrPort(c.dst)
			}
			if got := svcName(tab.serviceFor(dst, c.host)); got != c.want {
				t.Errorf("serviceFor(%v, %q) = %s, want %s", dst, c.host, got, c.want)
			}
		})
	}
}

// matchYAML is one service with one route whose match list is given.
const matchYAML = `
services:
  - name: shop
    hosts: [shop]
    endpoints: [{address: 10.0.0.1}]
routes:
  http:
    - name: r
      service: shop
      match: %s
      destinations: [{service: shop}]
`

func TestMatchHTTP(t *testing.T) {
	for _, c := range []struct {
		name  string
		match string
		req   *http.Request
		want  bool
	}{
		{"empty list matches all", `[]`, newReq("DELETE", "/anything?x=1", "shop"), true},

		{"authority exact", `[{authority: {exact: shop}}]`, newReq("GET", "/", "shop"), true},
		{"authority ignores port", `[{authority: {exact: shop}}]`, newReq("GET", "/", "shop:8080"), true},
		{"authority exact differs", `[{authority: {exact: shop}}]`, newReq("GET", "/", "shop2"), false},
		{"authority prefix", `[{authority: {prefix: sho}}]`, newReq("GET", "/", "shop:80"), true},
		{"authority regex", `[{authority: {regex: "s.*p"}}]`, newReq("GET", "/", "shop"), true},
		{"authority regex is anchored", `[{authority: {regex: "ho"}}]`, newReq("GET", "/", "shop"), false},

		{"path exact", `[{path: {exact: /cart}}]`, newReq("GET", "/cart", "shop"), true},
		{"path exact ignores query", `[{path: {exact: /cart}}]`, newReq("GET", "/cart?id=3", "shop"), true},
		{"path exact, trailing slash", `[{path: {exact: /cart}}]`, newReq("GET", "/cart/", "shop"), false},
		{"path prefix", `[{path: {prefix: /api}}]`, newReq("GET", "/api/v1/items", "shop"), true},
		{"path prefix is a string prefix", `[{path: {prefix: /api}}]`, newReq("GET", "/apix", "shop"), true},
		{"path prefix differs", `[{path: {prefix: /api}}]`, newReq("GET", "/ap", "shop"), false},
		{"path regex", `[{path: {regex: "/v[0-9]+/items"}}]`, newReq("GET", "/v12/items", "shop"), true},
		{"path regex is anchored", `[{path: {regex: "/v[0-9]+"}}]`, newReq("GET", "/v1/items", "shop"), false},

		{"method listed", `[{methods: [GET, HEAD]}]`, newReq("HEAD", "/", "shop"), true},
		{"method not listed", `[{methods: [GET, HEAD]}]`, newReq("POST", "/", "shop"), false},

		{"header exact", `[{headers: [{name: x-user, exact: jason}]}]`, newReq("GET", "/", "shop", "X-User", "jason"), true},
		{"header name is case-insensitive", `[{headers: [{name: X-USER, exact: jason}]}]`, newReq("GET", "/", "shop", "x-user", "jason"), true},
		{"header value is case-sensitive", `[{headers: [{name: x-user, exact: jason}]}]`, newReq("GET", "/", "shop", "X-User", "Jason"), false},
		{"header missing", `[{headers: [{name: x-user, exact: jason}]}]`, newReq("GET", "/", "shop"), false},
		{"header any of several values", `[{headers: [{name: x-user, exact: jason}]}]`, newReq("GET", "/", "shop", "X-User", "ann", "X-User", "jason"), true},
		{"header prefix", `[{headers: [{name: x-user, prefix: ja}]}]`, newReq("GET", "/", "shop", "X-User", "jason"), true},
		{"header prefix differs", `[{headers: [{name: x-user, prefix: ja}]}]`, newReq("GET", "/", "shop", "X-User", "ann"), false},
		{"header regex", `[{headers: [{name: x-user, regex: "j[a-z]+"}]}]`, newReq("GET", "/", "shop", "X-User", "jason"), true},
		{"header regex is anchored", `[{headers: [{name: x-user, regex: "j[a-z]"}]}]`, newReq("GET", "/", "shop", "X-User", "jason"), false},
		{"header present", `[{headers: [{name: x-debug, present: true}]}]`, newReq("GET", "/", "shop", "X-Debug", "1"), true},
		{"header present and empty", `[{headers: [{name: x-debug, present: true}]}]`, newReq("GET", "/", "shop", "X-Debug", ""), true},
		{"header not present", `[{headers: [{name: x-debug, present: true}]}]`, newReq("GET", "/", "shop"), false},
		{"header absent", `[{headers: [{name: x-debug, absent: true}]}]`, newReq("GET", "/", "shop"), true},
		{"header absent but there", `[{headers: [{name: x-debug, absent: true}]}]`, newReq("GET", "/", "shop", "X-Debug", ""), false},

		{"query exact", `[{query: [{name: v, exact: "2"}]}]`, newReq("GET", "/?a=1&v=2", "shop"), true},
		{"query exact differs", `[{query: [{name: v, exact: "2"}]}]`, newReq("GET", "/?v=3", "shop"), false},
		{"query unescaped", `[{query: [{name: q, exact: "a b"}]}]`, newReq("GET", "/?q=a%20b", "shop"), true},
		{"query name is case-sensitive", `[{query: [{name: v, exact: "2"}]}]`, newReq("GET", "/?V=2", "shop"), false},
		{"query prefix", `[{query: [{name: v, prefix: beta}]}]`, newReq("GET", "/?v=beta-3", "shop"), true},
		{"query regex", `[{query: [{name: id, regex: "[0-9]+"}]}]`, newReq("GET", "/?id=123", "shop"), true},
		{"query regex differs", `[{query: [{name: id, regex: "[0-9]+"}]}]`, newReq("GET", "/?id=12a", "shop"), false},
		{"query present", `[{query: [{name: debug, present: true}]}]`, newReq("GET", "/?debug", "shop"), true},
		{"query absent", `[{query: [{name: debug, absent: true}]}]`, newReq("GET", "/?x=1", "shop"), true},
		{"query absent but there", `[{query: [{name: debug, absent: true}]}]`, newReq("GET", "/?debug=", "shop"), false},

		{"all conditions hold", `[{path: {prefix: /api}, methods: [POST], headers: [{name: x-user, exact: jason}], query: [{name: v, exact: "2"}]}]`,
			newReq("POST", "/api/x?v=2", "shop", "X-User", "jason"), true},
		{"one condition fails", `[{path: {prefix: /api}, methods: [POST], headers: [{name: x-user, exact: jason}], query: [{name: v, exact: "2"}]}]`,
			newReq("POST", "/api/x?v=3", "shop", "X-User", "jason"), false},
		{"second alternative", `[{path: {prefix: /api}}, {headers: [{name: x-user, exact: jason}]}]`,
			newReq("GET", "/web", "shop", "X-User", "jason"), true},
		{"no alternative", `[{path: {prefix: /api}}, {headers: [{name: x-user, exact: jason}]}]`,
			newReq("GET", "/web", "shop", "X-User", "ann"), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			tab := parseTable(t, fmt.Sprintf(matchYAML, c.match))
			got := tab.services["shop"].matchHTTP(c.req, false) != nil
			if got != c.want {
				t.Errorf("match %s on %s %s (Host %q, %v): %v, want %v", c.match, c.req.Method, c.req.URL, c.req.Host, c.req.Header, got, c.want)
			}
		})
	}
}

// TestMatchOrder: the first route that matches wins; gRPC routes apply to gRPC
// requests only, and before every HTTP route whatever their place in the file.
func TestMatchOrder(t *testing.T) {
	tab := parseTable(t, `
services:
  - name: shop
    hosts: [shop]
    endpoints: [{address: 10.0.0.1}]
  - name: other
    hosts: [other]
    endpoints: [{address: 10.0.0.2}]
routes:
  http:
    - name: http-cart
      service: shop
      match: [{path: {prefix: /shop.Cart/}}]
      destinations: [{service: shop}]
    - name: api
      service: shop
      match: [{path: {prefix: /api}}]
      destinations: [{service: shop}]
    - name: api-v2
      service: shop
      match: [{path: {prefix: /api/v2}}]
      destinations: [{service: shop}]
    - name: other-only
      service: other
      match: [{path: {prefix: /web}}]
      destinations: [{service: other}]
    - name: default
      service: shop
      destinations: [{service: shop}]
  grpc:
    - name: grpc-method
      service: shop
      match: [{grpc_service: shop.Cart, method: Checkout}]
      destinations: [{service: shop}]
    - name: grpc-service
      service: shop
      match: [{grpc_service: shop.Cart}]
      destinations: [{service: shop}]
    - name: grpc-header
      service: shop
      match: [{grpc_service: shop.Stock, headers: [{name: x-tenant, exact: blue}]}]
      destinations: [{service: shop}]
`)
	shop, other := tab.services["shop"], tab.services["other"]
	for _, c := range []struct {
		name string
		svc  *service
		req  *http.Request
		grpc bool
		want string
	}{
		{"grpc method", shop, newReq("POST", "/shop.Cart/Checkout", "shop"), true, "grpc-method"},
		{"grpc service", shop, newReq("POST", "/shop.Cart/List", "shop"), true, "grpc-service"},
		{"grpc service is not a name prefix", shop, newReq("POST", "/shop.Carts/List", "shop"), true, "default"},
		{"grpc route skipped for plain http", shop, newReq("POST", "/shop.Cart/Checkout", "shop"), false, "http-cart"},
		{"grpc metadata", shop, newReq("POST", "/shop.Stock/Get", "shop", "X-Tenant", "blue"), true, "grpc-header"},
		{"grpc metadata differs, http routes next", shop, newReq("POST", "/shop.Stock/Get", "shop", "X-Tenant", "red"), true, "default"},
		{"http routes apply to grpc too", shop, newReq("POST", "/api/Get", "shop"), true, "api"},
		{"first match wins", shop, newReq("GET", "/api/v2/items", "shop"), false, "api"},
		{"catch-all last", shop, newReq("GET", "/web", "shop"), false, "default"},
		{"routes belong to their service", other, newReq("GET", "/web", "other"), false, "other-only"},
		{"no route of the service matches", other, newReq("GET", "/api", "other"), false, "<none>"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := routeName(c.svc.matchHTTP(c.req, c.grpc)); got != c.want {
				t.Errorf("%s %s (grpc %v): route %s, want %s", c.req.Method, c.req.URL, c.grpc, got, c.want)
			}
		})
	}
}

// routeFor runs the routing decision of the HTTP proxy for r, arriving on a
// connection to dst from src, and ends it.
func routeFor(t *testing.T, tab *Table, dst, src netip.AddrPort, r *http.Request) (*routed, *httptest.ResponseRecorder) {
	t.Helper()
	h := &HTTP{log: zerolog.Nop()}
	w := httptest.NewRecorder()
	rt := h.route(tab, &Meta{Direction: "outbound", Dst: dst, Src: src}, w, r, false)
	if rt != nil && rt.done != nil {
		rt.done()
	}
	return rt, w
}

const canaryYAML = `
services:
  - name: reviews
    hosts: [reviews]
    ports: [{port: 9080, target_port: 8080}]
    endpoints:
      - {address: 10.0.0.1, labels: {version: v1}}
      - {address: 10.0.0.2, labels: {version: v2}}
    subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
routes:
  http:
    - name: canary
      service: reviews
      destinations: [{service: reviews, subset: v1, weight: 90}, {service: reviews, subset: v2, weight: 10}]
`

// TestWeightedSplit: a 90/10 split over n picks sends to v2 a count within 4 standard
// deviations of a binomial(n, 0.1) of its mean: a correct split fails about once in
// 16,000 runs.
func TestWeightedSplit(t *testing.T) {
	tab := parseTable(t, canaryYAML)
	const n, p = 4000, 0.1
	dst, src := netip.MustParseAddrPort("192.0.2.1:9080"), netip.MustParseAddrPort("192.0.2.100:40000")
	counts := map[netip.AddrPort]int{}
	for range n {
		rt, _ := routeFor(t, tab, dst, src, newReq("GET", "/", "reviews"))
		if rt == nil || rt.flag != "" {
			t.Fatalf("not routed: %+v", rt)
		}
		counts[rt.addr]++
	}
	v1, v2 := netip.MustParseAddrPort("10.0.0.1:8080"), netip.MustParseAddrPort("10.0.0.2:8080")
	if counts[v1]+counts[v2] != n {
		t.Fatalf("picks went elsewhere (to the service's target port 8080 only): %v", counts)
	}
	mean, tol := n*p, 4*math.Sqrt(n*p*(1-p))
	t.Logf("v2 got %d of %d (mean %.0f, tolerance ±%.1f)", counts[v2], n, mean, tol)
	if math.Abs(float64(counts[v2])-mean) > tol {
		t.Errorf("v2 got %d of %d picks, want %.0f ± %.1f", counts[v2], n, mean, tol)
	}
}

// TestSubsets: a subset's cluster picks only the endpoints carrying all its labels
// (label keys case-insensitive), and a subset that selects none answers 503 UH.
func TestSubsets(t *testing.T) {
	tab := parseTable(t, `
services:
  - name: reviews
    hosts: [reviews]
    endpoints:
      - {address: 10.0.0.1, labels: {version: v1, zone: east}}
      - {address: 10.0.0.2, labels: {Version: v1, zone: west}}
      - {address: "10.0.0.3:9000", labels: {version: v2, zone: east}}
      - {address: 10.0.0.4, labels: {version: v2, zone: west}}
      - {address: 10.0.0.5}
    subsets:
      - {name: v1, labels: {version: v1}}
      - {name: v2-east, labels: {version: v2, zone: east}}
      - {name: v3, labels: {version: v3}}
routes:
  http:
    - name: east
      service: reviews
      match: [{headers: [{name: x-subset, exact: v2-east}]}]
      destinations: [{service: reviews, subset: v2-east}]
    - name: v3
      service: reviews
      match: [{headers: [{name: x-subset, exact: v3}]}]
      destinations: [{service: reviews, subset: v3}]
    - name: v1
      service: reviews
      match: [{headers: [{name: x-subset, exact: v1}]}]
      destinations: [{service: reviews, subset: v1}]
`)
	dst, src := netip.MustParseAddrPort("192.0.2.1:80"), netip.MustParseAddrPort("192.0.2.100:40000")
	for _, c := range []struct {
		subset string
		want   []string
	}{
		{"", []string{"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:9000", "10.0.0.4:80", "10.0.0.5:80"}},
		{"v1", []string{"10.0.0.1:80", "10.0.0.2:80"}},
		{"v2-east", []string{"10.0.0.3:9000"}},
	} {
		seen := map[string]bool{}
		for range 50 {
			rt, _ := routeFor(t, tab, dst, src, newReq("GET", "/", "reviews", "X-Subset", c.subset))
			if rt == nil || rt.flag != "" {
				t.Fatalf("subset %q: not routed: %+v", c.subset, rt)
			}
			seen[rt.addr.String()] = true
		}
		var got []string
		for a := range seen {
			got = append(got, a)
		}
		if slices.Sort(got); fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("subset %q picked %v, want %v", c.subset, got, c.want)
		}
	}
	rt, w := routeFor(t, tab, dst, src, newReq("GET", "/", "reviews", "X-Subset", "v3"))
	if rt == nil || rt.flag != telemetry.FlagNoHealthy || w.Code != http.StatusServiceUnavailable {
		t.Errorf("empty subset: flag %q, status %d, want %s and 503", rt.flag, w.Code, telemetry.FlagNoHealthy)
	}
}

// mutableSource is an endpoint set that changes without a reload, as DNS discovery's.
type mutableSource struct {
	mu      sync.Mutex
	eps     []lb.Endpoint
	version uint64
}

func (s *mutableSource) Load() ([]lb.Endpoint, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.eps, s.version
}

func (s *mutableSource) set(eps []lb.Endpoint) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.eps, s.version = eps, s.version+1
}

func hashEndpoints(n int) []lb.Endpoint {
	eps := make([]lb.Endpoint, n)
	for i := range eps {
		eps[i] = lb.Endpoint{Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 1, byte(i + 1)}), 8080)}
	}
	return eps
}

// TestConsistentHash: with ring_hash or maglev on a header, the router sends one key to
// one endpoint every time; a request without the header sticks by source address; and
// when an endpoint joins (a new endpoint set version, no reload) about 1/n of the keys
// move, nearly all to the new endpoint.
func TestConsistentHash(t *testing.T) {
	for _, policy := range []string{"ring_hash", "maglev"} {
		t.Run(policy, func(t *testing.T) {
			cfg := parseConfig(t, fmt.Sprintf(`
services:
  - name: carts
    hosts: [carts]
    dns: {name: carts.internal}
    load_balancer: {policy: %s, hash: {header: x-user}}
`, policy))
			src := &mutableSource{}
			src.set(hashEndpoints(10))
			tab, err := compileTable(cfg, func(string) endpointSource { return src })
			if err != nil {
				t.Fatal(err)
			}
			svc := tab.services["carts"]
			const keys = 2000
			peer := netip.MustParseAddrPort("192.0.2.100:40000")
			assign := func() []netip.AddrPort {
				out := make([]netip.AddrPort, keys)
				for i := range out {
					r := newReq("GET", "/", "carts", "X-User", "user-"+strconv.Itoa(i))
					e, done := svc.clusters[""].pick(svc.hashKey(r, peer))
					done()
					out[i] = e.Addr
				}
				return out
			}
			before := assign()
			if again := assign(); fmt.Sprint(again) != fmt.Sprint(before) {
				t.Fatal("the same keys went to other endpoints on a second pass")
			}
			spread := map[netip.AddrPort]int{}
			for _, a := range before {
				spread[a]++
			}
			if len(spread) != 10 {
				t.Errorf("%d keys landed on %d of 10 endpoints", keys, len(spread))
			}

			// Without the header: by source address, the same for every port of it.
			noHeader := func(src string) netip.AddrPort {
				e, done := svc.clusters[""].pick(svc.hashKey(newReq("GET", "/", "carts"), netip.MustParseAddrPort(src)))
				done()
				return e.Addr
			}
			if a, b := noHeader("192.0.2.7:1000"), noHeader("192.0.2.7:2000"); a != b {
				t.Errorf("one source address went to %v and %v", a, b)
			}

			grown := hashEndpoints(11)
			src.set(grown)
			after := assign()
			moved, elsewhere := 0, 0
			for i := range before {
				if before[i] != after[i] {
					moved++
					if after[i] != grown[10].Addr {
						elsewhere++
					}
				}
			}
			frac, ideal := float64(moved)/keys, 1.0/11
			t.Logf("adding an 11th endpoint moved %.1f%% of keys (ideal %.1f%%), %d between old endpoints", 100*frac, 100*ideal, elsewhere)
			if frac < ideal/2 || frac > ideal*1.6 {
				t.Errorf("adding an 11th endpoint moved %.1f%% of keys, want about %.1f%%", 100*frac, 100*ideal)
			}
			if float64(elsewhere)/keys > 0.02 {
				t.Errorf("%d of %d keys moved between the old endpoints", elsewhere, keys)
			}
		})
	}
}

const tcpYAML = `
services:
  - name: db
    addresses: [10.2.0.1]
    ports: [{port: 5432, protocol: tcp, target_port: 15432}]
    endpoints: [{address: 10.20.0.1}]
  - name: cache
    addresses: [10.3.0.1]
    ports: [{port: 6379}]
    endpoints: [{address: "10.30.0.1:7000"}]
  - name: api
    hosts: [api.example.com]
    ports: [{port: 443, protocol: tls}]
    endpoints: [{address: 10.40.0.1}]
  - name: wild
    hosts: [wild.internal]
    endpoints: [{address: 10.50.0.1}]
  - name: mysql
    hosts: [mysql.internal]
    endpoints: [{address: "10.70.0.1:3306"}]
  - name: legacy
    addresses: [10.6.0.0/16]
  - name: web
    addresses: [10.8.0.1]
    ports: [{port: 80, protocol: http}, {port: 50051, protocol: grpc}, {port: 8080}]
    endpoints: [{address: 10.80.0.1, labels: {version: v1}}]
    subsets: [{name: v2, labels: {version: v2}}]
routes:
  tcp:
    - name: sni-exact
      sni: [api.example.com]
      destinations: [{service: api}]
    - name: sni-wild
      sni: ["*.example.com"]
      destinations: [{service: wild}]
    - name: port
      port: 3306
      destinations: [{service: mysql}]
    - name: cache
      service: cache
      destinations: [{service: cache}]
    - name: web-8080
      service: web
      port: 8080
      destinations: [{service: web, subset: v2}]
`

func TestTCPTarget(t *testing.T) {
	tab := parseTable(t, tcpYAML)
	src := netip.MustParseAddrPort("192.0.2.100:40000")
	for _, c := range []struct {
		name, dst, sni string
		addr, service  string
		routed, ok     bool
	}{
		{"by port", "192.0.2.7:3306", "", "10.70.0.1:3306", "mysql", true, true},
		{"by sni", "192.0.2.7:443", "api.example.com", "10.40.0.1:443", "api", true, true},
		{"by sni, case-insensitive", "192.0.2.7:443", "API.Example.com", "10.40.0.1:443", "api", true, true},
		{"by sni wildcard", "192.0.2.7:443", "www.example.com", "10.50.0.1:443", "wild", true, true},
		{"sni wildcard not the bare domain", "192.0.2.7:443", "example.com", "192.0.2.7:443", "", false, true},
		{"sni route needs a server name", "192.0.2.7:443", "", "192.0.2.7:443", "", false, true},
		{"by service address, target port", "10.2.0.1:5432", "", "10.20.0.1:15432", "db", true, true},
		{"service address, not a service port", "10.2.0.1:5433", "", "10.2.0.1:5433", "", false, true},
		{"route by service", "10.3.0.1:6379", "", "10.30.0.1:7000", "cache", true, true},
		{"passthrough service goes to its address", "10.6.3.4:9000", "", "10.6.3.4:9000", "legacy", true, true},
		{"route to an empty subset", "10.8.0.1:8080", "", "", "web", true, false},
		{"nothing names it", "198.51.100.1:80", "", "198.51.100.1:80", "", false, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			addr, done, service, routed, ok := tab.TCPTarget(netip.MustParseAddrPort(c.dst), src, c.sni)
			done()
			gotAddr := ""
			if addr.IsValid() {
				gotAddr = addr.String()
			}
			if gotAddr != c.addr || routed != c.routed || ok != c.ok || (ok && service != c.service) {
				t.Errorf("TCPTarget(%s, sni %q) = %s, %q, routed %v, ok %v; want %s, %q, routed %v, ok %v",
					c.dst, c.sni, gotAddr, service, routed, ok, c.addr, c.service, c.routed, c.ok)
			}
		})
	}
}

func TestPinnedProtocol(t *testing.T) {
	if got := parseTable(t, "{}").PinnedProtocol(netip.MustParseAddrPort("10.0.0.1:80")); got != config.ProtoAuto {
		t.Errorf("empty table: %s, want auto", got)
	}
	tab := parseTable(t, tcpYAML)
	for _, c := range []struct{ dst, want string }{
		{"10.2.0.1:5432", config.ProtoTCP},   // the service port says tcp
		{"10.8.0.1:80", config.ProtoHTTP},    // the service port says http
		{"10.8.0.1:50051", config.ProtoGRPC}, // the service port says grpc
		{"10.8.0.1:8080", config.ProtoTCP},   // auto port, a TCP route takes it whole
		{"10.3.0.1:6379", config.ProtoTCP},   // a TCP route by service
		{"192.0.2.7:3306", config.ProtoTCP},  // a TCP route by port
		{"192.0.2.7:443", config.ProtoAuto},  // SNI routes need the ClientHello
		{"10.6.0.1:80", config.ProtoAuto},    // a service with no ports: auto
		{"198.51.100.1:80", config.ProtoAuto},
	} {
		if got := tab.PinnedProtocol(netip.MustParseAddrPort(c.dst)); got != c.want {
			t.Errorf("PinnedProtocol(%s) = %s, want %s", c.dst, got, c.want)
		}
	}
}

const redirectYAML = `
services:
  - name: shop
    hosts: [shop]
routes:
  http:
    - name: r
      service: shop
      redirect: %s
`

func TestRedirectURL(t *testing.T) {
	for _, c := range []struct {
		redirect, target, host string
		want                   string
		code                   int
	}{
		{`{path: /new}`, "/old?x=1&y=2", "shop:8080", "http://shop:8080/new?x=1&y=2", 301},
		{`{path: /new, code: 302}`, "/old", "shop", "http://shop/new", 302},
		{`{scheme: https}`, "/old", "shop:8080", "https://shop/old", 301},
		{`{scheme: https, port: 8443, code: 308}`, "/old", "shop:8080", "https://shop:8443/old", 308},
		{`{host: www.shop}`, "/old", "shop:8080", "http://www.shop:8080/old", 301},
		{`{host: www.shop}`, "/old", "shop", "http://www.shop/old", 301},
		{`{port: 9090}`, "/old", "shop", "http://shop:9090/old", 301},
		{`{host: www.shop}`, "/a%20b/c%2Fd", "shop", "http://www.shop/a%20b/c%2Fd", 301},
		{`{path: /new}`, "/old", "[::1]:8080", "http://[::1]:8080/new", 301},
		{`{path: /new}`, "/old", "[::1]", "http://[::1]/new", 301},
		{`{host: www.shop:8443}`, "/old", "shop:8080", "http://www.shop:8443/old", 301},
		{`{host: www.shop:8443, scheme: https}`, "/old", "shop", "https://www.shop:8443/old", 301},
	} {
		t.Run(c.redirect+" "+c.host+c.target, func(t *testing.T) {
			tab := parseTable(t, fmt.Sprintf(redirectYAML, c.redirect))
			r := newReq("GET", c.target, c.host)
			route := tab.services["shop"].matchHTTP(r, false)
			if got := redirectURL(route.redirect, r); got != c.want {
				t.Errorf("redirect %s of %s%s = %q, want %q", c.redirect, c.host, c.target, got, c.want)
			}
			if route.redirect.Code != c.code {
				t.Errorf("code %d, want %d", route.redirect.Code, c.code)
			}
		})
	}
}

const rewriteYAML = `
services:
  - name: shop
    hosts: [shop]
    endpoints: [{address: 10.0.0.1}]
routes:
  http:
    - name: r
      service: shop
      match: %s
      rewrite: {path_prefix: %s}
      destinations: [{service: shop}]
`

func TestRewritePath(t *testing.T) {
	for _, c := range []struct {
		match, prefix, path string
		header              []string
		want                string
	}{
		{`[{path: {prefix: /api}}]`, "/v1", "/api/users", nil, "/v1/users"},
		{`[{path: {prefix: /api}}]`, "/v1", "/api", nil, "/v1"},
		{`[{path: {prefix: /api/}}]`, "/v1/", "/api/users", nil, "/v1/users"},
		{`[{path: {prefix: /api}}]`, "/", "/api/users", nil, "/users"},
		{`[{path: {prefix: /api}}]`, "/", "/api", nil, "/"},
		{`[{path: {prefix: /api/}}]`, "/", "/api/users", nil, "/users"},
		{`[{path: {exact: /login}}]`, "/auth/login", "/login", nil, "/auth/login"},
		{`[{headers: [{name: x-v, present: true}]}]`, "/v2/", "/items", []string{"X-V", "1"}, "/v2/items"},
		{`[]`, "/v2", "/", nil, "/v2"},
		// The alternative that matched is the one whose prefix is replaced.
		{`[{path: {prefix: /a}, headers: [{name: x-v, exact: "1"}]}, {path: {prefix: /a/b}}]`, "/z", "/a/b/c", nil, "/z/c"},
		{`[{path: {prefix: /a}, headers: [{name: x-v, exact: "1"}]}, {path: {prefix: /a/b}}]`, "/z", "/a/b/c", []string{"X-V", "1"}, "/z/b/c"},
		{`[{path: {exact: /x}}, {path: {prefix: /}}]`, "/p/", "/y", nil, "/p/y"},
		{`[{headers: [{name: x-v, present: true}]}, {path: {prefix: /a}}]`, "/z/", "/a/b", []string{"X-V", "1"}, "/z/a/b"},
		// The app's escaping of the rest is kept: %2F is not a '/'.
		{`[{path: {prefix: /api/}}]`, "/v2/", "/api/a%2Fb%20c", nil, "/v2/a%2Fb%20c"},
		{`[{path: {prefix: /api}}]`, "/", "/api/%2F", nil, "/%2F"},
		{`[{path: {prefix: /api}}]`, "/v1", "/api/x%3By", nil, "/v1/x%3By"},
		{`[{path: {prefix: /a b/}}]`, "/c d/", "/a%20b/e%2Ff", nil, "/c%20d/e%2Ff"},
		{`[{path: {prefix: /api/}}]`, "/v2/", "/api/a%20b", nil, "/v2/a%20b"},
	} {
		t.Run(c.match+" "+c.prefix+" "+c.path, func(t *testing.T) {
			tab := parseTable(t, fmt.Sprintf(rewriteYAML, c.match, c.prefix))
			r := newReq("GET", c.path, "shop", c.header...)
			route := tab.services["shop"].matchHTTP(r, false)
			if route == nil {
				t.Fatal("no route matched")
			}
			// As the proxy sends it: the rewritten path, escaped.
			path := rewritePath(route, r, route.rewrite.PathPrefix)
			out := url.URL{Path: path, RawPath: rawRewrite(r.URL, path, route.rewrite.PathPrefix)}
			if got := out.EscapedPath(); got != c.want {
				t.Errorf("rewrite %s to %s of %s = %q, want %q", c.match, c.prefix, c.path, got, c.want)
			}
		})
	}
}

// TestHeaderOps: removes, then sets, then adds, with header names in any case.
func TestHeaderOps(t *testing.T) {
	tab := parseTable(t, `
services:
  - name: shop
    hosts: [shop]
    endpoints: [{address: 10.0.0.1}]
routes:
  http:
    - name: r
      service: shop
      request_headers:
        remove: [X-Gone, x-reset]
        set: {x-reset: fresh, X-Replaced: one, x-both: set}
        add: {x-both: added, x-more: extra}
      destinations: [{service: shop}]
`)
	route := tab.services["shop"].matchHTTP(newReq("GET", "/", "shop"), false)
	h := http.Header{
		"X-Gone":     {"a"},
		"X-Reset":    {"old1", "old2"},
		"X-Replaced": {"x", "y"},
		"X-More":     {"orig"},
		"X-Kept":     {"k"},
	}
	route.reqOps.apply(h)
	want := http.Header{
		"X-Reset":    {"fresh"},
		"X-Replaced": {"one"},
		"X-Both":     {"set", "added"},
		"X-More":     {"orig", "extra"},
		"X-Kept":     {"k"},
	}
	if fmt.Sprint(h) != fmt.Sprint(want) {
		t.Errorf("headers after the edits:\n%v\nwant\n%v", h, want)
	}
}

// benchTable is n services with ten routes each, shaped as a real mesh's: each service
// by host name and by virtual address, routes on paths, headers (one a regex), methods
// and authority, the last a header match.
func benchYAML(n int) string {
	var b strings.Builder
	b.WriteString("services:\n")
	for i := range n {
		fmt.Fprintf(&b, `  - name: svc-%d
    hosts: [svc-%d, svc-%d.prod.svc.cluster.local]
    addresses: [10.%d.%d.1]
    ports: [{port: 80, protocol: http}, {port: 9090}]
    endpoints: [{address: 10.200.%d.%d, labels: {version: v1}}, {address: 10.201.%d.%d, labels: {version: v2}}]
    subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
`, i, i, i, 100+i/256, i%256, i/256, i%256, i/256, i%256)
	}
	b.WriteString("routes:\n  http:\n")
	for i := range n {
		for j := range 9 {
			var m string
			switch j % 3 {
			case 0:
				m = fmt.Sprintf(`[{path: {prefix: /v%d/}, methods: [GET, POST]}, {headers: [{name: x-route, exact: r%d}]}]`, j, j)
			case 1:
				m = fmt.Sprintf(`[{authority: {exact: svc-%d-r%d}}, {headers: [{name: x-user, regex: "u%d-[0-9]+"}]}]`, i, j, j)
			default:
				m = fmt.Sprintf(`[{path: {exact: /r%d}, headers: [{name: x-canary, present: true}]}]`, j)
			}
			fmt.Fprintf(&b, "    - {name: svc-%d-r%d, service: svc-%d, match: %s, destinations: [{service: svc-%d, subset: v1}]}\n", i, j, i, m, i)
		}
		fmt.Fprintf(&b, "    - {name: svc-%d-r9, service: svc-%d, match: [{headers: [{name: x-route, exact: r9}]}], destinations: [{service: svc-%d, subset: v2, weight: 90}, {service: svc-%d, subset: v1, weight: 10}]}\n", i, i, i, i)
	}
	return b.String()
}

// benchRequest addresses the last service's last route by Host, with the headers an app
// typically sends.
func benchRequest(n int) *http.Request {
	last := n - 1
	return newReq("GET", "/products/42", fmt.Sprintf("svc-%d.prod.svc.cluster.local:80", last),
		"Accept", "application/json", "User-Agent", "app/1.0", "X-Request-Id", "5f0c6d7e-1b2a-4c3d-9e8f-0a1b2c3d4e5f",
		"X-User", "anonymous", "X-Route", "r9")
}

var benchTables sync.Map // n → *Table

func benchTableOf(tb testing.TB, n int) *Table {
	if t, ok := benchTables.Load(n); ok {
		return t.(*Table)
	}
	t := parseTable(tb, benchYAML(n))
	benchTables.Store(n, t)
	return t
}

var sinkRoute atomic.Pointer[httpRoute]

// BenchmarkMatchHTTP looks up a service by Host among 1000 and matches the last of its
// ten routes by header.
func BenchmarkMatchHTTP(b *testing.B) {
	const n = 1000
	tab := benchTableOf(b, n)
	r := benchRequest(n)
	dst := netip.MustParseAddrPort("192.0.2.1:80")
	if rt := tab.serviceFor(dst, r.Host).matchHTTP(r, false); rt == nil || rt.name != fmt.Sprintf("svc-%d-r9", n-1) {
		b.Fatalf("matched %s", routeName(rt))
	}
	b.ReportAllocs()
	for b.Loop() {
		sinkRoute.Store(tab.serviceFor(dst, r.Host).matchHTTP(r, false))
	}
}

// TestMatchAllocs: looking a request up by address or Host and matching its route
// (paths, headers, regexes, authority; no query conditions) allocates nothing.
func TestMatchAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes allocation counts")
	}
	const n = 50
	tab := benchTableOf(t, n)
	byHost := benchRequest(n)
	byAddr := newReq("POST", "/v6/cart", "10.100.49.1", "X-User", "u4-17")
	for _, c := range []struct {
		name string
		dst  netip.AddrPort
		r    *http.Request
		want string
	}{
		{"by host", netip.MustParseAddrPort("192.0.2.1:80"), byHost, "svc-49-r9"},
		{"by address", netip.MustParseAddrPort("10.100.49.1:9090"), byAddr, "svc-49-r4"},
	} {
		var got *httpRoute
		allocs := testing.AllocsPerRun(200, func() {
			got = tab.serviceFor(c.dst, c.r.Host).matchHTTP(c.r, false)
		})
		if routeName(got) != c.want {
			t.Errorf("%s: matched %s, want %s", c.name, routeName(got), c.want)
		}
		if allocs != 0 {
			t.Errorf("%s: %v allocations per lookup, want 0", c.name, allocs)
		}
	}
}
