package listener

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"skiff/config"
	"skiff/telemetry"
	meshtls "skiff/tls"
)

// plainServer is a listener Server without mTLS whose config is yaml over the defaults
// (with a short sniff.timeout).
func plainServer(t *testing.T, yaml string) *Server {
	t.Helper()
	cfg, err := config.Parse("authz.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Sniff.Timeout = 300 * time.Millisecond
	s, err := NewServer(cfg, zerolog.Nop(), telemetry.NewMetrics())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		s.Shutdown(ctx)
	})
	return s
}

// setPolicies puts the authorization section of yaml in force on s, as a reload does.
func setPolicies(t *testing.T, s *Server, yaml string) {
	t.Helper()
	parsed, err := config.Parse("policies.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	next := *s.cfg
	next.Authorization = parsed.Authorization
	if err := s.Router().Apply(&next); err != nil {
		t.Fatal(err)
	}
}

// inboundPort accepts on loopback and hands every connection to s as an inbound one to
// dst, with its real source address, as handle does after SO_ORIGINAL_DST.
func inboundPort(t testing.TB, s *Server, dst netip.AddrPort) netip.AddrPort {
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.AcceptTCP()
			if err != nil {
				return
			}
			if !s.begin() { // as Serve does
				_ = c.Close()
				return
			}
			go func() {
				defer s.active.Done()
				cn := conn{id: s.connID.Add(1), dir: Inbound, dst: dst, src: c.RemoteAddr().(*net.TCPAddr).AddrPort()}
				if s.mesh != nil {
					cn.localID = s.mesh.src.Current().ID.String()
					if mode := s.cfg.MTLS.InboundMode(dst.Port()); mode != config.MTLSDisable {
						s.inboundMesh(c, cn, mode, zerolog.Nop())
						return
					}
				}
				s.serve(c, cn, nil, zerolog.Nop())
			}()
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String())
}

// bannerApp greets every client at once (a server-first protocol), then echoes lines.
func bannerApp(t *testing.T, accepted *atomic.Int64) netip.AddrPort {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				_, _ = io.WriteString(c, "220 hello\r\n")
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String())
}

// countingHTTPApp answers 200 to every request and counts connections and requests.
func countingHTTPApp(t *testing.T, conns, reqs *atomic.Int64) netip.AddrPort {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reqs.Add(1) }),
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				conns.Add(1)
			}
		},
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return netip.MustParseAddrPort(ln.Addr().String())
}

// denied sends data to addr and reports whether the connection was closed on it
// without an answer.
func denied(t *testing.T, addr netip.AddrPort, data string) bool {
	t.Helper()
	c, err := net.DialTCP("tcp4", nil, net.TCPAddrFromAddrPort(addr))
	if errors.Is(err, syscall.ECONNRESET) {
		return true // reset so soon (a pinned port is not sniffed) that the connect saw it
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = io.WriteString(c, data)
	_ = c.CloseWrite()
	b, err := io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("via %s: no answer and no close within 5s", addr)
	}
	return len(b) == 0
}

func refusedAuthz(t *testing.T, s *Server) float64 {
	return counter(t, s.metrics, "skiff_tcp_connections_refused_total", map[string]string{"direction": "inbound", "reason": reasonAuthzDenied})
}

// TestAuthorizeTCP: an opaque connection is decided before the app is dialled; the
// policies are judged on source range and port; a reload changes the next decision.
func TestAuthorizeTCP(t *testing.T) {
	var accepted atomic.Int64
	sink := sinkApp(t, &accepted)
	s := plainServer(t, "")
	port := inboundPort(t, s, sink)

	setPolicies(t, s, `authorization:
  policies:
    - name: elsewhere
      action: allow
      rules: [{source_cidrs: [10.0.0.0/8]}]
`)
	if !denied(t, port, "secret bytes") {
		t.Error("a client outside the allowed range got an answer")
	}
	waitCounter(t, s.metrics, "skiff_tcp_connections_refused_total", map[string]string{"direction": "inbound", "reason": reasonAuthzDenied}, 1)
	if n := accepted.Load(); n != 0 {
		t.Errorf("the app accepted %d connections from a denied client, want 0", n)
	}

	setPolicies(t, s, `authorization:
  policies:
    - name: loopback-sink
      action: allow
      rules: [{source_cidrs: [127.0.0.0/8], ports: [`+itoa(sink.Port())+`]}]
`)
	if got, sum := upload(t, port, 64<<10); got != sum {
		t.Errorf("allowed upload: sink got %q, want %q", got, sum)
	}

	// A deny with an HTTP-only condition cannot see a path on TCP: it takes the whole
	// connection (Istio's rule: a deny never fails open).
	setPolicies(t, s, `authorization:
  policies:
    - name: no-admin
      action: deny
      rules: [{paths: ["/admin*"]}]
`)
	before := accepted.Load()
	if !denied(t, port, "not http") {
		t.Error("a deny rule on paths let an opaque connection through")
	}
	if n := accepted.Load() - before; n != 0 {
		t.Errorf("the app accepted %d connections, want 0", n)
	}
	if n := refusedAuthz(t, s); n != 2 {
		t.Errorf("refused{authz_denied} = %v, want 2", n)
	}
}

// A port pinned to tcp is decided the same way, before any dial.
func TestAuthorizePinnedPort(t *testing.T) {
	var accepted atomic.Int64
	sink := sinkApp(t, &accepted)
	s := plainServer(t, "sniff:\n  ports:\n    \""+itoa(sink.Port())+"\": tcp\n"+`authorization:
  default_action: deny
`)
	port := inboundPort(t, s, sink)
	if !denied(t, port, "x") {
		t.Error("pinned tcp port: denied client got an answer")
	}
	if n := accepted.Load(); n != 0 {
		t.Errorf("the app accepted %d connections, want 0", n)
	}
	waitCounter(t, s.metrics, "skiff_tcp_connections_refused_total", map[string]string{"reason": reasonAuthzDenied}, 1)
}

// The early dial for a silent client (server-first protocols) happens only for a
// connection the policies allow as TCP.
func TestAuthorizeServerFirst(t *testing.T) {
	var accepted atomic.Int64
	banner := bannerApp(t, &accepted)
	s := plainServer(t, "")
	port := inboundPort(t, s, banner)

	read := func() (string, error) {
		c, err := net.DialTCP("tcp4", nil, net.TCPAddrFromAddrPort(port))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		return bufio.NewReader(c).ReadString('\n')
	}
	start := time.Now()
	if line, err := read(); err != nil || line != "220 hello\r\n" {
		t.Fatalf("no policies: greeting %q, %v", line, err)
	}
	t.Logf("greeting after %v", time.Since(start))

	setPolicies(t, s, "authorization: {default_action: deny}\n")
	before := accepted.Load()
	start = time.Now()
	line, err := read()
	if err == nil || line != "" {
		t.Errorf("denied silent client: read %q, %v; want the connection closed", line, err)
	}
	if took := time.Since(start); took < s.cfg.Sniff.Timeout {
		t.Errorf("denied silent client closed after %v, before sniff.timeout (%v): was it dialled?", took, s.cfg.Sniff.Timeout)
	}
	if n := accepted.Load() - before; n != 0 {
		t.Errorf("the app accepted %d connections for a denied silent client, want 0", n)
	}
	if n := refusedAuthz(t, s); n != 1 {
		t.Errorf("refused{authz_denied} = %v, want 1", n)
	}
}

// A silent client that the policies would deny as TCP but that then speaks HTTP is
// judged per request.
func TestAuthorizeSlowHTTPClient(t *testing.T) {
	var conns, reqs atomic.Int64
	app := countingHTTPApp(t, &conns, &reqs)
	s := plainServer(t, `authorization:
  policies:
    - name: reads
      action: allow
      rules: [{methods: [GET], paths: ["/public/*"]}]
`)
	port := inboundPort(t, s, app)
	c, err := net.DialTCP("tcp4", nil, net.TCPAddrFromAddrPort(port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	time.Sleep(3 * s.cfg.Sniff.ServerFirstWait) // silent past the early dial's moment
	if n := conns.Load(); n != 0 {
		t.Errorf("the app was dialled for a client the policies deny as TCP (%d connections)", n)
	}
	br := bufio.NewReader(c)
	for _, tc := range []struct {
		path string
		code int
	}{{"/public/a", 200}, {"/private", 403}, {"/public/b", 200}} {
		_, _ = io.WriteString(c, "GET "+tc.path+" HTTP/1.1\r\nHost: app\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("GET %s: %v", tc.path, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != tc.code {
			t.Errorf("GET %s: %d, want %d", tc.path, resp.StatusCode, tc.code)
		}
	}
	if n := reqs.Load(); n != 2 {
		t.Errorf("the app saw %d requests, want 2", n)
	}
	if n := refusedAuthz(t, s); n != 0 {
		t.Errorf("refused{authz_denied} = %v for an HTTP connection, want 0", n)
	}
}

// Over mesh mTLS the peer's verified identity decides: two clients with different
// identities through their sidecars to one server sidecar.
func TestAuthorizeMeshIdentity(t *testing.T) {
	ca := newTestCA(t)
	server := ca.identity("server")
	frontend, intruder := ca.identity("frontend"), ca.identity("intruder")
	in := meshServer(t, server, config.MTLSPermissive, config.MTLSOff)
	setPolicies(t, in, `authorization:
  policies:
    - name: frontend
      action: allow
      rules: [{principals: ["`+frontend.Current().ID.String()+`"]}]
`)
	var sinkAccepted, httpConns, httpReqs atomic.Int64
	sink := sinkApp(t, &sinkAccepted)
	app := countingHTTPApp(t, &httpConns, &httpReqs)
	inSink, inHTTP := inboundPort(t, in, sink), inboundPort(t, in, app)

	through := func(id *meshtls.Source) (sinkPort, httpPort netip.AddrPort) {
		out := meshServer(t, id, config.MTLSPermissive, config.MTLSOn)
		return sidecarPort(t, out, Outbound, inSink), sidecarPort(t, out, Outbound, inHTTP)
	}
	fSink, fHTTP := through(frontend)
	iSink, iHTTP := through(intruder)

	if got, sum := upload(t, fSink, 100<<10); got != sum {
		t.Errorf("frontend upload: sink got %q, want %q", got, sum)
	}
	if !denied(t, iSink, strings.Repeat("x", 1000)) {
		t.Error("intruder upload got an answer")
	}
	if n := sinkAccepted.Load(); n != 1 {
		t.Errorf("the sink accepted %d connections, want 1 (the frontend's)", n)
	}
	waitCounter(t, in.metrics, "skiff_tcp_connections_refused_total", map[string]string{"reason": reasonAuthzDenied}, 1)

	status := func(addr netip.AddrPort) int {
		resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + addr.String() + "/")
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	if code := status(fHTTP); code != 200 {
		t.Errorf("frontend GET: %d, want 200", code)
	}
	if code := status(iHTTP); code != 403 {
		t.Errorf("intruder GET: %d, want 403", code)
	}
	if n := httpReqs.Load(); n != 1 {
		t.Errorf("the HTTP app saw %d requests, want 1", n)
	}
}

func itoa(p uint16) string { return strconv.Itoa(int(p)) }
