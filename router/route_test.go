package router

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"skiff/config"
	"skiff/telemetry"
)

// These tests run routing end to end: real clients, the real HTTP proxy with a config's
// services and routes in force, and real backends on loopback. Every connection's
// original destination is the "orig" backend (or a closed port), so a request that
// reaches an endpoint instead was routed there.

// routeProxy starts a proxy with the YAML config (fmt's verbs filled from args) in
// force, whose connections all have dst as their original destination.
func routeProxy(t *testing.T, dst netip.AddrPort, yaml string, args ...any) *testProxy {
	t.Helper()
	cfg, err := config.Parse("routes.yaml", []byte(fmt.Sprintf(yaml, args...)))
	if err != nil {
		t.Fatalf("config.Parse: %v", err)
	}
	return startProxyConfig(t, cfg, dst, false)
}

// send makes one request through the proxy with the Host given and returns the response
// with its body read. Redirects are not followed.
func send(t *testing.T, c *http.Client, p *testProxy, method, target, host, body string, header ...string) (*http.Response, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://"+p.addr+target, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s (Host %s): %v", method, target, host, err)
	}
	b, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, target, err)
	}
	return resp, string(b)
}

// noRedirects is an HTTP/1.1 client that returns redirects as they are.
func noRedirects() *http.Client {
	c := h1Client()
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	c.Timeout = 10 * time.Second
	return c
}

// routedLabels is the request label set of a request to dst that did not use mTLS.
func routedLabels(dst netip.AddrPort, proto, code, grpcStatus, service, flag string) []string {
	return []string{"outbound", dst.String(), proto, code, grpcStatus, telemetry.SecurityNone, telemetry.UnknownPrincipal,
		service, flag}
}

// wantCount checks skiff_requests_total for one label set. The proxy records a request
// as its handler ends, which may be just after the client has the response.
func wantCount(t *testing.T, p *testProxy, want float64, labels []string) {
	t.Helper()
	var got float64
	waitFor(2*time.Second, func() bool { got = requestCount(t, p, labels...); return got == want })
	if got != want {
		var all []string
		for _, s := range requestSamples(t, p.metrics, "skiff_requests_total") {
			all = append(all, fmt.Sprintf("%v=%v", s.labels, s.value))
		}
		t.Errorf("skiff_requests_total%v = %v, want %v; have:\n%s", labels, got, want, strings.Join(all, "\n"))
	}
}

// TestRouteByHost: a request whose Host names a service goes to the service's endpoint,
// not to the address the app dialled, and is otherwise sent as it came.
func TestRouteByHost(t *testing.T) {
	orig, ep := startRecording(t, nil), startRecording(t, nil)
	p := routeProxy(t, orig.addr, `
services:
  - name: reviews
    hosts: [reviews, "*.reviews.internal"]
    endpoints: [{address: "%s"}]
`, ep.addr)
	c := h1Client()
	for _, host := range []string{"reviews:9080", "REVIEWS", "v1.reviews.internal:80"} {
		resp, _ := send(t, c, p, "GET", "/reviews/1?x=1", host, "")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("Host %s: status %d", host, resp.StatusCode)
		}
		s := ep.last(t)
		if s.Host != host || s.RequestURI != "/reviews/1?x=1" {
			t.Errorf("Host %s: endpoint saw Host %q, %q", host, s.Host, s.RequestURI)
		}
	}
	if n := orig.reqs.Load(); n != 0 {
		t.Errorf("the original destination got %d requests, want 0", n)
	}
	wantCount(t, p, 3, routedLabels(orig.addr, "http", "200", "", "reviews", telemetry.FlagNone))
}

// TestRouteUnknownPassesThrough: with services and routes configured, a request
// addressed to nothing they name goes to its original destination untouched.
func TestRouteUnknownPassesThrough(t *testing.T) {
	orig, ep := startRecording(t, nil), startRecording(t, nil)
	p := routeProxy(t, orig.addr, `
services:
  - name: reviews
    hosts: [reviews]
    addresses: [10.96.0.10]
    endpoints: [{address: "%s"}]
routes:
  http:
    - name: all
      service: reviews
      request_headers: {set: {x-routed: "yes"}}
      destinations: [{service: reviews}]
`, ep.addr)
	resp, body := send(t, h1Client(), p, "POST", "/a/b%2Fc?q=1;2", "catalog.example:8080", "payload", "X-App", "1")
	if resp.StatusCode != http.StatusOK || body != "" {
		t.Fatalf("status %d, body %q", resp.StatusCode, body)
	}
	s := orig.last(t)
	if s.Host != "catalog.example:8080" || s.RequestURI != "/a/b%2Fc?q=1;2" || s.Header.Get("X-App") != "1" ||
		s.Header.Get("X-Routed") != "" || s.BodySum != sha([]byte("payload")) {
		t.Errorf("the original destination saw %+v", s)
	}
	if n := ep.reqs.Load(); n != 0 {
		t.Errorf("the service's endpoint got %d requests, want 0", n)
	}
	wantCount(t, p, 1, routedLabels(orig.addr, "http", "200", "", telemetry.UnknownService, telemetry.FlagNone))
}

// TestRouteSubsetByHeader: a header match sends to subset v2; the rest go to v1.
func TestRouteSubsetByHeader(t *testing.T) {
	orig, v1, v2 := startRecording(t, nil), startRecording(t, nil), startRecording(t, nil)
	p := routeProxy(t, orig.addr, `
services:
  - name: reviews
    hosts: [reviews]
    endpoints: [{address: "%s", labels: {version: v1}}, {address: "%s", labels: {version: v2}}]
    subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
routes:
  http:
    - name: jason
      service: reviews
      match: [{headers: [{name: end-user, exact: jason}]}]
      destinations: [{service: reviews, subset: v2}]
    - name: rest
      service: reviews
      destinations: [{service: reviews, subset: v1}]
`, v1.addr, v2.addr)
	c := h1Client()
	for range 4 {
		send(t, c, p, "GET", "/", "reviews", "", "End-User", "jason")
		send(t, c, p, "GET", "/", "reviews", "", "End-User", "ann")
		send(t, c, p, "GET", "/", "reviews", "")
	}
	if a, b, o := v1.reqs.Load(), v2.reqs.Load(), orig.reqs.Load(); a != 8 || b != 4 || o != 0 {
		t.Errorf("v1 got %d, v2 %d, original destination %d; want 8, 4, 0", a, b, o)
	}
	v2.mu.Lock()
	defer v2.mu.Unlock()
	for _, s := range v2.seen {
		if s.Header.Get("End-User") != "jason" {
			t.Errorf("v2 got a request of %q", s.Header.Get("End-User"))
		}
	}
}

// TestRouteDirectResponse: the proxy answers itself; no backend is dialled.
func TestRouteDirectResponse(t *testing.T) {
	orig := startRecording(t, nil)
	p := routeProxy(t, orig.addr, `
services:
  - name: shop
    hosts: [shop]
routes:
  http:
    - name: maintenance
      service: shop
      match: [{path: {prefix: /admin}}]
      direct_response: {status: 503, body: "down for maintenance"}
      response_headers: {set: {retry-after: "120"}}
    - name: empty
      service: shop
      match: [{path: {exact: /healthz}}]
      direct_response: {status: 204}
`)
	c := h1Client()
	resp, body := send(t, c, p, "GET", "/admin/users", "shop", "")
	if resp.StatusCode != http.StatusServiceUnavailable || body != "down for maintenance" ||
		resp.Header.Get("Retry-After") != "120" || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Errorf("got %d %q %v", resp.StatusCode, body, resp.Header)
	}
	resp, body = send(t, c, p, "POST", "/healthz", "shop", "ignored")
	if resp.StatusCode != http.StatusNoContent || body != "" {
		t.Errorf("got %d %q", resp.StatusCode, body)
	}
	// A passthrough service's other requests still go to the original destination.
	if resp, _ := send(t, c, p, "GET", "/", "shop", ""); resp.StatusCode != http.StatusOK || orig.reqs.Load() != 1 {
		t.Errorf("unrouted request: %d, the original destination got %d", resp.StatusCode, orig.reqs.Load())
	}
	if d := p.dials.Load(); d != 1 {
		t.Errorf("%d upstream dials, want 1 (the unrouted request only)", d)
	}
	wantCount(t, p, 1, routedLabels(orig.addr, "http", "503", "", "shop", telemetry.FlagDirectResponse))
	wantCount(t, p, 1, routedLabels(orig.addr, "http", "204", "", "shop", telemetry.FlagDirectResponse))
}

// TestRouteRedirect: a redirect answers with its code and Location; no backend is
// dialled.
func TestRouteRedirect(t *testing.T) {
	orig := startRecording(t, nil)
	p := routeProxy(t, orig.addr, `
services:
  - name: shop
    hosts: [shop]
routes:
  http:
    - name: tls
      service: shop
      match: [{path: {prefix: /login}}]
      redirect: {scheme: https, code: 308}
    - name: moved
      service: shop
      redirect: {host: www.shop, path: /new}
`)
	c := noRedirects()
	for _, x := range []struct {
		target, host, location string
		code                   int
	}{
		{"/login?next=%2Fcart", "shop:8080", "https://shop/login?next=%2Fcart", 308},
		{"/old", "shop:8080", "http://www.shop:8080/new", 301},
	} {
		resp, _ := send(t, c, p, "GET", x.target, x.host, "")
		if resp.StatusCode != x.code || resp.Header.Get("Location") != x.location {
			t.Errorf("%s: %d %q, want %d %q", x.target, resp.StatusCode, resp.Header.Get("Location"), x.code, x.location)
		}
	}
	if d := p.dials.Load(); d != 0 {
		t.Errorf("%d upstream dials, want 0", d)
	}
	wantCount(t, p, 1, routedLabels(orig.addr, "http", "308", "", "shop", telemetry.FlagDirectResponse))
	wantCount(t, p, 1, routedLabels(orig.addr, "http", "301", "", "shop", telemetry.FlagDirectResponse))
}

// TestRouteHeaderOps: the route's request header edits reach the backend and its
// response header edits reach the client.
func TestRouteHeaderOps(t *testing.T) {
	orig := startRecording(t, nil)
	ep := startRecording(t, func(w http.ResponseWriter, _ *http.Request, _ seenRequest) {
		w.Header().Set("X-Internal", "secret")
		w.Header().Set("X-Resp-Set", "old")
		w.Header().Set("X-Resp-Add", "first")
	})
	p := routeProxy(t, orig.addr, `
services:
  - name: shop
    hosts: [shop]
    endpoints: [{address: "%s"}]
routes:
  http:
    - name: edits
      service: shop
      request_headers:
        remove: [x-drop]
        set: {x-set: new}
        add: {x-add: second}
      response_headers:
        remove: [x-internal]
        set: {x-resp-set: new}
        add: {x-resp-add: second}
      destinations: [{service: shop}]
`, ep.addr)
	resp, _ := send(t, h1Client(), p, "GET", "/", "shop", "", "X-Drop", "1", "X-Set", "old", "X-Set", "older", "X-Add", "first")
	s := ep.last(t)
	if _, ok := s.Header["X-Drop"]; ok {
		t.Errorf("removed request header reached the backend: %v", s.Header)
	}
	if got := s.Header.Values("X-Set"); fmt.Sprint(got) != "[new]" {
		t.Errorf("X-Set at the backend: %q, want [new]", got)
	}
	if got := s.Header.Values("X-Add"); fmt.Sprint(got) != "[first second]" {
		t.Errorf("X-Add at the backend: %q, want [first second]", got)
	}
	if _, ok := resp.Header["X-Internal"]; ok {
		t.Errorf("removed response header reached the client: %v", resp.Header)
	}
	if got := resp.Header.Values("X-Resp-Set"); fmt.Sprint(got) != "[new]" {
		t.Errorf("X-Resp-Set at the client: %q, want [new]", got)
	}
	if got := resp.Header.Values("X-Resp-Add"); fmt.Sprint(got) != "[first second]" {
		t.Errorf("X-Resp-Add at the client: %q, want [first second]", got)
	}
}

// TestRouteRewrite: the backend sees the rewritten path (query kept) and host.
func TestRouteRewrite(t *testing.T) {
	orig, ep := startRecording(t, nil), startRecording(t, nil)
	p := routeProxy(t, orig.addr, `
services:
  - name: shop
    hosts: [shop]
    endpoints: [{address: "%s"}]
routes:
  http:
    - name: api
      service: shop
      match: [{path: {prefix: /api/}}]
      rewrite: {path_prefix: /v2/, host: internal.shop}
      destinations: [{service: shop}]
`, ep.addr)
	c := h1Client()
	for _, x := range []struct{ target, want string }{
		{"/api/items?x=1&y", "/v2/items?x=1&y"},
		{"/api/", "/v2/"},
		{"/api/files/a%2Fb", "/v2/files/a%2Fb"},
	} {
		send(t, c, p, "GET", x.target, "shop:8080", "")
		if s := ep.last(t); s.RequestURI != x.want || s.Host != "internal.shop" {
			t.Errorf("%s: backend saw %q with Host %q, want %q and internal.shop", x.target, s.RequestURI, s.Host, x.want)
		}
	}
	// A request the route does not match goes to the service as it is.
	send(t, c, p, "GET", "/web", "shop", "")
	if s := ep.last(t); s.RequestURI != "/web" || s.Host != "shop" {
		t.Errorf("unmatched request: backend saw %q, Host %q", s.RequestURI, s.Host)
	}
	if n := orig.reqs.Load(); n != 0 {
		t.Errorf("the original destination got %d requests", n)
	}
}

// TestRouteTimeout: a route's timeout answers 504 UT when the response head is late,
// but does not cut a response that has begun and streams for longer.
func TestRouteTimeout(t *testing.T) {
	const timeout = 150 * time.Millisecond
	orig := startRecording(t, nil)
	ep := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/late":
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		case "/stream":
			_, _ = io.WriteString(w, "first,")
			w.(http.Flusher).Flush()
			time.Sleep(3 * timeout)
			_, _ = io.WriteString(w, "second")
		}
	}, false)
	p := routeProxy(t, orig.addr, `
services:
  - name: slow
    hosts: [slow]
    endpoints: [{address: "%s"}]
routes:
  http:
    - name: bounded
      service: slow
      timeout: %v
      destinations: [{service: slow}]
`, ep.addr, timeout)
	c := h1Client()
	start := time.Now()
	resp, _ := send(t, c, p, "GET", "/late", "slow", "")
	if took := time.Since(start); resp.StatusCode != http.StatusGatewayTimeout || took > 3*time.Second {
		t.Errorf("late head: %d after %v, want 504 after about %v", resp.StatusCode, took, timeout)
	}
	resp, body := send(t, c, p, "GET", "/stream", "slow", "")
	if resp.StatusCode != http.StatusOK || body != "first,second" {
		t.Errorf("streaming response: %d %q, want 200 first,second", resp.StatusCode, body)
	}
	wantCount(t, p, 1, routedLabels(orig.addr, "http", "504", "", "slow", telemetry.FlagTimeout))
	wantCount(t, p, 1, routedLabels(orig.addr, "http", "200", "", "slow", telemetry.FlagNone))
}

// TestRouteNoUpstream: a service whose endpoints refuse connections gives 503 UF; one
// whose chosen subset has no endpoint gives 503 UH. Neither goes to the original
// destination.
func TestRouteNoUpstream(t *testing.T) {
	orig, down := startRecording(t, nil), closedPort(t)
	p := routeProxy(t, orig.addr, `
services:
  - name: down
    hosts: [down]
    endpoints: [{address: "%s", labels: {version: v1}}]
    subsets: [{name: v2, labels: {version: v2}}]
routes:
  http:
    - name: v2
      service: down
      match: [{headers: [{name: x-v2, present: true}]}]
      destinations: [{service: down, subset: v2}]
`, down)
	logs := &lockedBuffer{}
	p.h.log = zerolog.New(logs) // before the first request: the handler reads it
	c := h1Client()
	if resp, _ := send(t, c, p, "GET", "/", "down", ""); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("unreachable endpoint: %d, want 503", resp.StatusCode)
	}
	// The log names the endpoint that failed, not the address the app dialled.
	if l := logs.String(); !strings.Contains(l, `"upstream":"`+down.String()+`"`) {
		t.Errorf("the failure log does not name the endpoint %v:\n%s", down, l)
	}
	if resp, _ := send(t, c, p, "GET", "/", "down", "", "X-V2", "1"); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("empty subset: %d, want 503", resp.StatusCode)
	}
	if n := orig.reqs.Load(); n != 0 {
		t.Errorf("the original destination got %d requests", n)
	}
	wantCount(t, p, 1, routedLabels(orig.addr, "http", "503", "", "down", telemetry.FlagUpstreamFail))
	wantCount(t, p, 1, routedLabels(orig.addr, "http", "503", "", "down", telemetry.FlagNoHealthy))
}

// lockedBuffer collects log lines written by the proxy's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

const mirrorYAML = `
services:
  - name: shop
    hosts: [shop]
    endpoints: [{address: "%s"}]
  - name: shadow
    hosts: [shadow]
    endpoints: [{address: "%s"}]
routes:
  http:
    - name: mirrored
      service: shop
      mirror: {service: shadow}
      destinations: [{service: shop}]
`

// TestRouteMirror: a copy of the request (Host with -shadow, same body) goes to the
// mirror's service while the client gets the main backend's response.
func TestRouteMirror(t *testing.T) {
	orig, shadow := startRecording(t, nil), startRecording(t, nil)
	primary := startBackend(t, nil, false) // echo
	p := routeProxy(t, orig.addr, mirrorYAML, primary.addr, shadow.addr)
	const body = `{"order": 1}`
	resp, got := send(t, h1Client(), p, "POST", "/orders?x=1", "shop:8080", body, "X-App", "1")
	if resp.StatusCode != http.StatusOK || got != body || resp.Header.Get("X-Body-Sha256") != sha([]byte(body)) {
		t.Errorf("main response: %d %q", resp.StatusCode, got)
	}
	if !waitFor(3*time.Second, func() bool { return shadow.reqs.Load() == 1 }) {
		t.Fatalf("the mirror got %d requests, want 1", shadow.reqs.Load())
	}
	s := shadow.last(t)
	if s.Method != "POST" || s.Host != "shop-shadow:8080" || s.RequestURI != "/orders?x=1" ||
		s.BodySum != sha([]byte(body)) || s.Header.Get("X-App") != "1" {
		t.Errorf("the mirror saw %+v", s)
	}
	if primary.reqs.Load() != 1 || orig.reqs.Load() != 0 {
		t.Errorf("main backend got %d, original destination %d; want 1, 0", primary.reqs.Load(), orig.reqs.Load())
	}
	wantCount(t, p, 1, routedLabels(orig.addr, "http", "200", "", "shop", telemetry.FlagNone))
}

// TestRouteMirrorHangs: a mirror that never answers does not slow the requests it
// copies.
func TestRouteMirrorHangs(t *testing.T) {
	orig := startRecording(t, nil)
	primary := startBackend(t, nil, false)
	release := make(chan struct{})
	shadow := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}, false)
	t.Cleanup(func() { close(release) }) // before the backend's Close waits for it
	p := routeProxy(t, orig.addr, mirrorYAML, primary.addr, shadow.addr)
	c := h1Client()
	c.Timeout = 5 * time.Second // far less than the mirror's own timeout
	for i := range 3 {
		start := time.Now()
		resp, got := send(t, c, p, "POST", "/orders", "shop", "body")
		if took := time.Since(start); resp.StatusCode != http.StatusOK || got != "body" || took > time.Second {
			t.Errorf("request %d: %d %q after %v", i, resp.StatusCode, got, took)
		}
	}
	if !waitFor(3*time.Second, func() bool { return shadow.reqs.Load() == 3 }) {
		t.Errorf("the mirror got %d copies, want 3 (all hanging)", shadow.reqs.Load())
	}
}

// TestRouteH2C: an h2c request is routed by its :authority, and goes on as HTTP/2.
func TestRouteH2C(t *testing.T) {
	rec := func(b *backend) http.HandlerFunc {
		return b.recording(func(http.ResponseWriter, *http.Request, seenRequest) {})
	}
	orig, ep := newBackend(t, true, rec), newBackend(t, true, rec)
	p := routeProxy(t, orig.addr, `
services:
  - name: reviews
    hosts: [reviews]
    endpoints: [{address: "%s"}]
routes:
  http:
    - name: h2
      service: reviews
      request_headers: {set: {x-route: h2}}
      destinations: [{service: reviews}]
`, ep.addr)
	c, tr := h2cClient()
	defer tr.CloseIdleConnections()
	for range 3 {
		resp, _ := send(t, c, p, "GET", "/r?x=1", "reviews:9080", "")
		if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
			t.Fatalf("%d over %s", resp.StatusCode, resp.Proto)
		}
	}
	s := ep.last(t)
	if s.Proto != "HTTP/2.0" || s.Host != "reviews:9080" || s.RequestURI != "/r?x=1" || s.Header.Get("X-Route") != "h2" {
		t.Errorf("endpoint saw %+v", s)
	}
	if ep.reqs.Load() != 3 || orig.reqs.Load() != 0 {
		t.Errorf("endpoint got %d, original destination %d; want 3, 0", ep.reqs.Load(), orig.reqs.Load())
	}
	wantCount(t, p, 3, routedLabels(orig.addr, "http2", "200", "", "reviews", telemetry.FlagNone))
}

// startHealth runs a gRPC health server whose overall status tells which backend
// answered.
func startHealth(t *testing.T, st healthpb.HealthCheckResponse_ServingStatus) netip.AddrPort {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	hs := health.NewServer()
	hs.SetServingStatus("", st)
	healthpb.RegisterHealthServer(s, hs)
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	return netip.MustParseAddrPort(lis.Addr().String())
}

// TestRouteGRPC: gRPC calls are routed by service, method and metadata; the others go
// to the service addressed.
func TestRouteGRPC(t *testing.T) {
	stable, canary := startHealth(t, healthpb.HealthCheckResponse_SERVING), startHealth(t, healthpb.HealthCheckResponse_NOT_SERVING)
	dst := closedPort(t)
	p := routeProxy(t, dst, `
services:
  - name: greeter
    hosts: [greeter]
    ports: [{port: 50051, protocol: grpc}]
    endpoints: [{address: "%s"}]
  - name: greeter-canary
    hosts: [greeter-canary]
    endpoints: [{address: "%s"}]
routes:
  grpc:
    - name: canary
      service: greeter
      match: [{grpc_service: grpc.health.v1.Health, method: Check, headers: [{name: x-canary, exact: "yes"}]}]
      response_headers: {set: {x-route: canary}}
      destinations: [{service: greeter-canary}]
`, stable, canary)
	cc, err := grpc.NewClient("passthrough:///"+p.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithAuthority("greeter:50051"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cc.Close() }()
	hc := healthpb.NewHealthClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, x := range []struct {
		md    []string
		want  healthpb.HealthCheckResponse_ServingStatus
		route string
	}{
		{nil, healthpb.HealthCheckResponse_SERVING, ""},
		{[]string{"x-canary", "no"}, healthpb.HealthCheckResponse_SERVING, ""},
		{[]string{"x-canary", "yes"}, healthpb.HealthCheckResponse_NOT_SERVING, "canary"},
	} {
		var hdr metadata.MD
		resp, err := hc.Check(metadata.AppendToOutgoingContext(ctx, x.md...), &healthpb.HealthCheckRequest{}, grpc.Header(&hdr))
		if err != nil {
			t.Fatalf("Check %v: %v", x.md, err)
		}
		if resp.GetStatus() != x.want || strings.Join(hdr.Get("x-route"), ",") != x.route {
			t.Errorf("Check %v: %v, x-route %q; want %v, %q", x.md, resp.GetStatus(), hdr.Get("x-route"), x.want, x.route)
		}
	}
	wantCount(t, p, 2, routedLabels(dst, "grpc", "200", "0", "greeter", telemetry.FlagNone))
	wantCount(t, p, 1, routedLabels(dst, "grpc", "200", "0", "greeter-canary", telemetry.FlagNone))
}
