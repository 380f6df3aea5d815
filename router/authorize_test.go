package router

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"skiff/config"
	"skiff/telemetry"
)

const (
	azFrontend = "spiffe://cluster.local/ns/prod/sa/frontend"
	azIntruder = "spiffe://cluster.local/ns/prod/sa/intruder"
)

// The policies of the HTTP enforcement tests: /admin is nobody's, frontend may do the
// rest, and loopback clients may read /public.
const azPolicies = `authorization:
  policies:
    - name: no-admin
      action: deny
      rules: [{paths: ["/admin", "/admin/*"]}]
    - name: frontend
      action: allow
      rules: [{principals: ["` + azFrontend + `"]}]
    - name: public
      action: allow
      rules: [{source_cidrs: [127.0.0.0/8], paths: ["/public/*"]}]
`

// azProxy is an inbound HTTP proxy whose connections carry the peer identity set in
// peer when they are accepted, as the listener hands over mesh connections.
type azProxy struct {
	*testProxy
	rt   *Router
	peer atomic.Pointer[string]
}

func startAuthzProxy(tb testing.TB, dst netip.AddrPort, yaml string) *azProxy {
	tb.Helper()
	cfg, err := config.Parse("authz.yaml", []byte(yaml))
	if err != nil {
		tb.Fatal(err)
	}
	p := &azProxy{testProxy: &testProxy{metrics: telemetry.NewMetrics()}}
	p.peer.Store(new(string))
	p.rt, err = NewRouter(cfg, zerolog.Nop(), p.metrics)
	if err != nil {
		tb.Fatal(err)
	}
	p.h = NewHTTP(cfg, p.rt, zerolog.Nop(), p.metrics, func(ctx context.Context, _ string, dst netip.AddrPort) (net.Conn, error) {
		p.dials.Add(1)
		var d net.Dialer
		return d.DialContext(ctx, "tcp", dst.String())
	})
	served := make(chan error, 1)
	go func() { served <- p.h.Serve() }()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p.addr = ln.Addr().String()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			m := Meta{Direction: "inbound", Dst: dst, Src: netip.MustParseAddrPort(c.RemoteAddr().String()),
				ConnID: uint64(p.accepted.Add(1)), PeerID: *p.peer.Load(), Guard: &H1Guard{}}
			p.h.ServeConn(&testConn{Conn: c, meta: m})
		}
	}()
	tb.Cleanup(func() {
		_ = ln.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		p.h.Shutdown(ctx)
		<-served
	})
	return p
}

func (p *azProxy) as(peer string) { p.peer.Store(&peer) }

// rawGET sends one HTTP/1.1 request with the exact target on a new connection.
func (p *azProxy) rawGET(tb testing.TB, target string) (int, string) {
	tb.Helper()
	c := dialRaw(tb, p.addr)
	defer c.Close()
	c.send(tb, "GET "+target+" HTTP/1.1\r\nHost: app\r\n\r\n")
	resp, body := c.response(tb, "GET")
	return resp.StatusCode, body
}

func deniedLabels(dst netip.AddrPort, proto, code, grpc, peer string) []string {
	sec, principal := telemetry.SecurityMTLS, peer
	if peer == "" {
		sec, principal = telemetry.SecurityNone, telemetry.UnknownPrincipal
	}
	return []string{"inbound", dst.String(), proto, code, grpc, sec, principal, telemetry.UnknownService, telemetry.FlagDenied}
}

func TestAuthorizeHTTP(t *testing.T) {
	b := startRecording(t, nil)
	p := startAuthzProxy(t, b.addr, azPolicies)

	p.as(azFrontend)
	if code, _ := p.rawGET(t, "/orders"); code != 200 {
		t.Fatalf("frontend GET /orders: %d, want 200", code)
	}
	if n := b.reqs.Load(); n != 1 {
		t.Fatalf("app saw %d requests, want 1", n)
	}

	for _, tc := range []struct{ peer, target, why string }{
		{azIntruder, "/orders", "no allow policy matches"},
		{"", "/orders", "no verified peer"},
		{azFrontend, "/admin", "deny wins over allow"},
		{azFrontend, "/admin/users?x=1", "deny by prefix"},
		{azFrontend, "/a/../admin/x", "dot segments are resolved"},
		{azFrontend, "//admin", "slashes are merged"},
		{azFrontend, "/%61dmin", "escapes are decoded"},
		{azFrontend, "http://app/admin", "absolute form"},
		{"", "/public/../orders", "the allowed prefix is left"},
	} {
		p.as(tc.peer)
		code, body := p.rawGET(t, tc.target)
		if code != http.StatusForbidden || body != deniedBody {
			t.Errorf("%s GET %s (%s): %d %q, want 403 %q", tc.peer, tc.target, tc.why, code, body, deniedBody)
		}
	}
	if n := b.reqs.Load(); n != 1 {
		t.Errorf("app saw %d requests, want 1: denied requests reached it (%v)", n, b.paths())
	}

	// A source range allows what no identity would.
	p.as("")
	if code, _ := p.rawGET(t, "/public/logo.png"); code != 200 {
		t.Errorf("loopback GET /public/logo.png without a peer: %d, want 200", code)
	}

	if n := requestCount(t, p.testProxy, deniedLabels(b.addr, "http", "403", "", azIntruder)...); n != 1 {
		t.Errorf("skiff_requests_total{intruder, 403, RBAC} = %v, want 1", n)
	}
	if n := requestCount(t, p.testProxy, deniedLabels(b.addr, "http", "403", "", azFrontend)...); n != 6 {
		t.Errorf("skiff_requests_total{frontend, 403, RBAC} = %v, want 6", n)
	}
	if n := requestCount(t, p.testProxy, deniedLabels(b.addr, "http", "403", "", "")...); n != 2 {
		t.Errorf("skiff_requests_total{no peer, 403, RBAC} = %v, want 2", n)
	}
	for _, name := range []string{"skiff_request_duration_milliseconds", "skiff_response_bytes"} {
		var n uint64
		for _, s := range requestSamples(t, p.metrics, name) {
			if s.labels["response_flags"] == telemetry.FlagDenied {
				n += s.count
			}
		}
		if n != 9 {
			t.Errorf("%s{response_flags=RBAC} has %d samples, want 9", name, n)
		}
	}
}

// HTTP/2 gets the same answer; the connection stays usable for allowed requests.
func TestAuthorizeH2C(t *testing.T) {
	b := startBackend(t, nil, true)
	p := startAuthzProxy(t, b.addr, azPolicies)
	p.as(azFrontend)
	c, _ := h2cClient()
	for _, tc := range []struct {
		path string
		code int
	}{{"/admin", 403}, {"/x", 200}, {"/admin/", 403}, {"/y", 200}} {
		resp, err := c.Get("http://" + p.addr + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != tc.code || resp.ProtoMajor != 2 {
			t.Errorf("h2c GET %s: %s %s, want %d over HTTP/2", tc.path, resp.Proto, resp.Status, tc.code)
		}
		if tc.code == 403 && string(body) != deniedBody {
			t.Errorf("h2c GET %s: body %q", tc.path, body)
		}
	}
	if n := p.accepted.Load(); n != 1 {
		t.Errorf("%d client connections, want 1", n)
	}
	if n := b.reqs.Load(); n != 2 {
		t.Errorf("app saw %d requests, want 2", n)
	}
}

// A denied gRPC call ends with PERMISSION_DENIED in a trailers-only response.
func TestAuthorizeGRPC(t *testing.T) {
	g := startGRPC(t)
	p := startAuthzProxy(t, g, `authorization:
  policies:
    - name: frontend
      action: allow
      rules: [{principals: ["`+azFrontend+`"]}]
    - name: no-streams
      action: deny
      rules: [{paths: ["/grpc.testing.TestService/StreamingOutputCall"]}]
`)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	p.as(azIntruder)
	_, err := testgrpc.NewTestServiceClient(dialGRPC(t, p.addr)).EmptyCall(ctx, &testgrpc.Empty{})
	if s := status.Convert(err); s.Code() != codes.PermissionDenied || s.Message() != deniedBody {
		t.Errorf("intruder EmptyCall: %v, want PermissionDenied %q", err, deniedBody)
	}

	p.as(azFrontend)
	client := testgrpc.NewTestServiceClient(dialGRPC(t, p.addr))
	if _, err := client.EmptyCall(ctx, &testgrpc.Empty{}); err != nil {
		t.Errorf("frontend EmptyCall: %v", err)
	}
	stream, err := client.StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	if s := status.Convert(err); s.Code() != codes.PermissionDenied {
		t.Errorf("frontend StreamingOutputCall: %v, want PermissionDenied", err)
	}
	if n := requestCount(t, p.testProxy, deniedLabels(g, "grpc", "200", "7", azIntruder)...); n != 1 {
		t.Errorf("skiff_requests_total{grpc, 200, grpc 7, intruder, RBAC} = %v, want 1", n)
	}
	if n := requestCount(t, p.testProxy, deniedLabels(g, "grpc", "200", "7", azFrontend)...); n != 1 {
		t.Errorf("skiff_requests_total{grpc, 200, grpc 7, frontend, RBAC} = %v, want 1", n)
	}

	// On the wire: HTTP 200, grpc-status in the headers, no body.
	p.as(azIntruder)
	c, _ := h2cClient()
	req, _ := http.NewRequest("POST", "http://"+p.addr+"/grpc.testing.TestService/EmptyCall", strings.NewReader("\x00\x00\x00\x00\x00"))
	req.Header.Set("Content-Type", "application/grpc+proto")
	req.Header.Set("Te", "trailers")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/grpc" || resp.Header.Get("Grpc-Status") != "7" ||
		resp.Header.Get("Grpc-Message") != deniedBody || len(body) != 0 {
		t.Errorf("denied gRPC on the wire: %s %v body %q", resp.Status, resp.Header, body)
	}
}

// A new snapshot changes the decision for the next request; outbound requests are not
// judged at all.
func TestAuthorizeReloadAndOutbound(t *testing.T) {
	b := startBackend(t, nil, false)
	p := startAuthzProxy(t, b.addr, azPolicies)
	p.as(azIntruder)
	if code, _ := p.rawGET(t, "/x"); code != 403 {
		t.Fatalf("intruder before reload: %d, want 403", code)
	}
	next, err := config.Parse("next.yaml", []byte(strings.Replace(azPolicies, `principals: ["`+azFrontend+`"]`,
		`principals: ["`+azFrontend+`", "`+azIntruder+`"]`, 1)))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.rt.Apply(next); err != nil {
		t.Fatal(err)
	}
	if code, _ := p.rawGET(t, "/x"); code != 200 {
		t.Errorf("intruder after reload: %d, want 200", code)
	}

	deny, err := config.Parse("deny.yaml", []byte("authorization: {default_action: deny}\n"))
	if err != nil {
		t.Fatal(err)
	}
	out := startProxy(t, b.addr, true)
	if err := out.h.rt.Apply(deny); err != nil {
		t.Fatal(err)
	}
	resp, err := h1Client().Get("http://" + out.addr + "/x")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("outbound request under default_action deny: %d, want 200 (policies are for inbound)", resp.StatusCode)
	}
}

func TestAuthzPath(t *testing.T) {
	for in, want := range map[string]string{
		"":              "/",
		"/":             "/",
		"/a/b":          "/a/b",
		"/a/b/":         "/a/b/",
		"/a/./b":        "/a/b",
		"/a/../b":       "/b",
		"/../b":         "/b",
		"//a//b/":       "/a/b/",
		"/a/.":          "/a",
		"/a/..":         "/",
		"*":             "*",
		"/a/.hidden/..": "/a",
		"/a/..b":        "/a/..b",
	} {
		if got := authzPath(in); got != want {
			t.Errorf("authzPath(%q) = %q, want %q", in, got, want)
		}
	}
}
