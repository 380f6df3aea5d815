package listener

import (
	"bufio"
	"context"
	"crypto/sha256"
	stdtls "crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"

	"skiff/config"
	"skiff/router"
	"skiff/telemetry"
	meshtls "skiff/tls"
)

// The mesh tests put two listener Servers on loopback, as two sidecars: the outbound one
// is handed the client's connections with the inbound one's listener as their original
// destination, and the inbound one is handed those with the app's address as theirs.

const testTD = "example.org"

// testCA is a trust domain's CA writing workload identities into temp dirs.
type testCA struct {
	t  testing.TB
	ca *meshtls.CA
}

func newTestCA(t testing.TB) *testCA {
	ca, err := meshtls.NewCA(testTD, meshtls.CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{t, ca}
}

// identity issues name's certificate into a new directory and returns a Source on it.
func (c *testCA) identity(name string) *meshtls.Source {
	id, err := meshtls.ParseID("spiffe://" + testTD + "/ns/test/sa/" + name)
	if err != nil {
		c.t.Fatal(err)
	}
	creds, err := c.ca.Issue(id, time.Hour, time.Time{})
	if err != nil {
		c.t.Fatal(err)
	}
	dir := filepath.Join(c.t.TempDir(), name)
	if err := creds.Write(dir, false); err != nil {
		c.t.Fatal(err)
	}
	src, err := meshtls.NewSource(dir, meshtls.Options{})
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { _ = src.Close() })
	return src
}

// meshServer is a listener Server with mTLS on, in the given modes.
func meshServer(t testing.TB, src *meshtls.Source, inbound, outbound string) *Server {
	cfg := config.Default()
	cfg.Sniff.Timeout = 500 * time.Millisecond
	cfg.MTLS.CertDir = "set"
	cfg.MTLS.Inbound.Mode = inbound
	cfg.MTLS.Outbound.Mode = outbound
	cfg.MTLS.Outbound.AutoProbeTimeout = 500 * time.Millisecond
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	s, err := NewServer(&cfg, zerolog.Nop(), telemetry.NewMetrics())
	if err != nil {
		t.Fatal(err)
	}
	s.EnableMesh(src)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		s.Shutdown(ctx)
	})
	return s
}

// sidecarPort accepts on loopback and hands every connection to s as one going dir to dst.
func sidecarPort(t testing.TB, s *Server, dir Direction, dst netip.AddrPort) netip.AddrPort {
	return countedPort(t, s, dir, dst, nil)
}

// countedPort is sidecarPort counting the connections it accepts.
func countedPort(t testing.TB, s *Server, dir Direction, dst netip.AddrPort, accepted *atomic.Int64) netip.AddrPort {
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
			if accepted != nil {
				accepted.Add(1)
			}
			if !s.begin() { // as Serve does
				_ = c.Close()
				return
			}
			go func() {
				defer s.active.Done()
				log := zerolog.Nop()
				cn := conn{id: s.connID.Add(1), dir: dir, dst: dst, localID: s.mesh.src.Current().ID.String()}
				if dir == Outbound {
					cn.outMode = s.cfg.MTLS.OutboundMode(dst)
					s.serve(c, cn, nil, log)
					return
				}
				if mode := s.cfg.MTLS.InboundMode(dst.Port()); mode != config.MTLSDisable {
					s.inboundMesh(c, cn, mode, log)
					return
				}
				s.serve(c, cn, nil, log)
			}()
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String())
}

// xfccApp answers every request with the XFCC header it got.
func xfccApp(t testing.TB) netip.AddrPort {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv := &http.Server{Protocols: p, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "xfcc=%s proto=%s", r.Header.Get(router.XFCC), r.Proto)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return netip.MustParseAddrPort(ln.Addr().String())
}

// sinkApp reads to EOF and answers with the sha256 of what it read.
func sinkApp(t *testing.T, accepted *atomic.Int64) netip.AddrPort {
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
			if accepted != nil {
				accepted.Add(1)
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				h := sha256.New()
				if _, err := io.Copy(h, c); err != nil {
					return
				}
				_, _ = io.WriteString(c, hex.EncodeToString(h.Sum(nil)))
			}()
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String())
}

func get(t *testing.T, addr netip.AddrPort, h2 bool, hdr http.Header) string {
	t.Helper()
	p := new(http.Protocols)
	if h2 {
		p.SetUnencryptedHTTP2(true)
	} else {
		p.SetHTTP1(true)
	}
	c := &http.Client{Transport: &http.Transport{Protocols: p}, Timeout: 5 * time.Second}
	defer c.CloseIdleConnections()
	req, _ := http.NewRequest("GET", "http://"+addr.String()+"/", nil)
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET via %s: %v", addr, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET via %s: %s %s", addr, resp.Status, b)
	}
	return string(b)
}

// upload sends n bytes to addr, half-closes and returns the answer and the sum sent.
func upload(t *testing.T, addr netip.AddrPort, n int) (got, want string) {
	t.Helper()
	c, err := net.DialTCP("tcp4", nil, net.TCPAddrFromAddrPort(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i * 7)
	}
	go func() {
		_, _ = c.Write(b)
		_ = c.CloseWrite()
	}()
	ans, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("upload via %s: %v", addr, err)
	}
	sum := sha256.Sum256(b)
	return string(ans), hex.EncodeToString(sum[:])
}

func counter(t *testing.T, m *telemetry.Metrics, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var total float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, mt := range mf.GetMetric() {
			for k, v := range labels {
				if !hasLabel(mt, k, v) {
					continue next
				}
			}
			total += mt.GetCounter().GetValue()
		}
	}
	return total
}

func hasLabel(m *dto.Metric, k, v string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == k {
			return l.GetValue() == v
		}
	}
	return false
}

// TestMeshTwoSidecars: HTTP/1.1, h2c and raw TCP from a plaintext client, over mTLS
// between two sidecars, to plaintext apps; the app sees the client's identity in XFCC,
// and a forged XFCC from the client does not survive.
func TestMeshTwoSidecars(t *testing.T) {
	ca := newTestCA(t)
	client, server := ca.identity("client"), ca.identity("server")
	in := meshServer(t, server, config.MTLSStrict, config.MTLSOff)
	out := meshServer(t, client, config.MTLSPermissive, config.MTLSOn)

	app := xfccApp(t)
	var meshConns atomic.Int64
	inPort := countedPort(t, in, Inbound, app, &meshConns)
	outPort := sidecarPort(t, out, Outbound, inPort)
	want := "xfcc=By=" + server.Current().ID.String() + ";URI=" + client.Current().ID.String()
	forged := http.Header{"X-Forwarded-Client-Cert": {"By=x;URI=spiffe://example.org/ns/test/sa/admin"}}
	for _, h2 := range []bool{false, true} {
		got := get(t, outPort, h2, forged)
		if !strings.HasPrefix(got, want+" ") {
			t.Errorf("h2=%v: app saw %q, want %q", h2, got, want)
		}
	}
	// Requests from new client connections reuse the pooled mTLS connections: one for
	// HTTP/1.1, one (multiplexed) for HTTP/2.
	for range 5 {
		get(t, outPort, false, nil)
		get(t, outPort, true, nil)
	}
	if n := meshConns.Load(); n != 2 {
		t.Errorf("12 requests made %d mTLS connections between the sidecars, want 2 (pooled)", n)
	}
	peer := map[string]string{"connection_security_policy": telemetry.SecurityMTLS, "source_principal": client.Current().ID.String()}
	if n := counter(t, in.metrics, "skiff_requests_total", peer); n != 12 {
		t.Errorf("inbound skiff_requests_total{mutual_tls, client} = %v, want 12", n)
	}
	self := map[string]string{"direction": "outbound", "connection_security_policy": telemetry.SecurityMTLS,
		"source_principal": client.Current().ID.String()}
	if n := counter(t, out.metrics, "skiff_requests_total", self); n != 12 {
		t.Errorf("outbound skiff_requests_total{mutual_tls} = %v, want 12", n)
	}

	sink := sinkApp(t, nil)
	inSink := sidecarPort(t, in, Inbound, sink)
	outSink := sidecarPort(t, out, Outbound, inSink)
	got, sum := upload(t, outSink, 4<<20+3)
	if got != sum {
		t.Errorf("4 MiB upload through two sidecars: sink got sha256 %q, sent %q", got, sum)
	}
	waitCounter(t, in.metrics, "skiff_tcp_connections_closed_total", peer, 1)
	if n := counter(t, in.metrics, "skiff_tcp_received_bytes_total", peer); n != 4<<20+3 {
		t.Errorf("inbound skiff_tcp_received_bytes_total{mutual_tls} = %v, want %d", n, 4<<20+3)
	}
}

func waitCounter(t *testing.T, m *telemetry.Metrics, name string, labels map[string]string, want float64) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for counter(t, m, name, labels) < want && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := counter(t, m, name, labels); n != want {
		t.Errorf("%s%v = %v, want %v", name, labels, n, want)
	}
}

// TestMeshInboundModes: strict closes a plaintext client and counts it; permissive
// serves it with any XFCC it sent removed.
func TestMeshInboundModes(t *testing.T) {
	ca := newTestCA(t)
	server := ca.identity("server")
	app := xfccApp(t)

	strict := meshServer(t, server, config.MTLSStrict, config.MTLSOff)
	port := sidecarPort(t, strict, Inbound, app)
	c, err := net.Dial("tcp4", port.String())
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	if b, _ := io.ReadAll(c); len(b) != 0 {
		t.Errorf("strict: plaintext client got %q, want the connection closed", b)
	}
	_ = c.Close()
	waitCounter(t, strict.metrics, "skiff_tcp_connections_refused_total", map[string]string{"reason": "mtls_required"}, 1)

	// A client that says nothing is never connected to the app in strict mode.
	var accepted atomic.Int64
	sink := sinkApp(t, &accepted)
	port = sidecarPort(t, strict, Inbound, sink)
	c, err = net.Dial("tcp4", port.String())
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if b, _ := io.ReadAll(c); len(b) != 0 {
		t.Errorf("strict: silent client got %q", b)
	}
	_ = c.Close()
	if n := accepted.Load(); n != 0 {
		t.Errorf("strict: the app was dialled %d times for a silent plaintext client", n)
	}

	permissive := meshServer(t, server, config.MTLSPermissive, config.MTLSOff)
	port = sidecarPort(t, permissive, Inbound, app)
	got := get(t, port, false, http.Header{"X-Forwarded-Client-Cert": {"By=x;URI=spiffe://example.org/ns/test/sa/admin"}})
	if !strings.HasPrefix(got, "xfcc= ") {
		t.Errorf("permissive, plaintext client with a forged XFCC: app saw %q, want no XFCC", got)
	}
	none := map[string]string{"connection_security_policy": telemetry.SecurityNone, "source_principal": telemetry.UnknownPrincipal}
	if n := counter(t, permissive.metrics, "skiff_requests_total", none); n != 1 {
		t.Errorf("skiff_requests_total{none, unknown} = %v, want 1", n)
	}
}

// TestMeshInboundRejectsForeignCert: a client with a certificate from another CA
// offering the mesh ALPN is refused.
func TestMeshInboundRejectsForeignCert(t *testing.T) {
	server := newTestCA(t).identity("server")
	stranger := newTestCA(t).identity("stranger")
	in := meshServer(t, server, config.MTLSPermissive, config.MTLSOff)
	port := sidecarPort(t, in, Inbound, xfccApp(t))
	raw, err := net.Dial("tcp4", port.String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(5 * time.Second))
	tc := stdtls.Client(raw, stranger.ClientConfig(nil))
	err = tc.Handshake()
	if err == nil {
		// TLS 1.3: the client finishes first; the server's verdict arrives on the next read.
		_, _ = io.WriteString(tc, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		_, err = bufio.NewReader(tc).ReadString('\n')
	}
	if err == nil {
		t.Fatal("a client of another trust root got through")
	}
	waitCounter(t, in.metrics, "skiff_tcp_connections_refused_total", map[string]string{"reason": "mtls_handshake"}, 1)
}

// TestMeshAutoFallback: auto mode reaches a plaintext server, remembers it and does not
// probe it again; mode on refuses it; a mesh sidecar gets mTLS.
func TestMeshAutoFallback(t *testing.T) {
	ca := newTestCA(t)
	client, server := ca.identity("client"), ca.identity("server")
	out := meshServer(t, client, config.MTLSPermissive, config.MTLSAuto)
	var accepted atomic.Int64
	sink := sinkApp(t, &accepted)
	outSink := sidecarPort(t, out, Outbound, sink)

	got, sum := upload(t, outSink, 100<<10)
	if got != sum {
		t.Fatalf("auto toward a plaintext server: sink got %q, want %q", got, sum)
	}
	if !out.mesh.isPlain(sink) {
		t.Error("the plaintext endpoint is not remembered")
	}
	first := accepted.Load() // the probe and the plaintext connection
	if got, sum := upload(t, outSink, 1000); got != sum {
		t.Fatalf("second upload: sink got %q, want %q", got, sum)
	}
	if n := accepted.Load() - first; n != 1 {
		t.Errorf("second connection: the sink accepted %d connections, want 1 (no probe)", n)
	}
	// The memory expires.
	out.mesh.now = func() time.Time { return time.Now().Add(time.Hour) }
	if out.mesh.isPlain(sink) {
		t.Error("the plaintext endpoint is still remembered after auto_fallback_ttl")
	}
	out.mesh.now = time.Now

	// Mode on does not fall back (the sink never answers the hello: the handshake times out).
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := out.dialMesh(ctx, sink, config.MTLSOn, zerolog.Nop()); !errors.Is(err, ErrMTLSHandshake) {
		t.Errorf("mode on toward a plaintext server: %v, want ErrMTLSHandshake", err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	// Toward a sidecar, auto is mTLS, and the next connection resumes the session.
	in := meshServer(t, server, config.MTLSStrict, config.MTLSOff)
	inPort := sidecarPort(t, in, Inbound, sinkApp(t, nil))
	for i := range 2 {
		c, err := out.dialMesh(ctx, inPort, config.MTLSAuto, zerolog.Nop())
		if err != nil {
			t.Fatal(err)
		}
		tc, ok := c.(*stdtls.Conn)
		if !ok {
			t.Fatalf("auto toward a sidecar: got %T, want *tls.Conn", c)
		}
		// Session tickets arrive after the handshake; read them before the next dial.
		_ = closeWrite(tc)
		_, _ = io.ReadAll(tc)
		if st := tc.ConnectionState(); st.Version != stdtls.VersionTLS13 || st.NegotiatedProtocol != meshtls.MeshALPN || st.DidResume != (i == 1) {
			t.Errorf("connection %d: version %x ALPN %q resumed %v", i, st.Version, st.NegotiatedProtocol, st.DidResume)
		}
		_ = c.Close()
	}
}

// BenchmarkMeshHTTP: sequential keep-alive HTTP/1.1 requests through two sidecars on
// loopback, in plaintext and in mTLS.
func BenchmarkMeshHTTP(b *testing.B) {
	for _, mode := range []string{config.MTLSOff, config.MTLSOn} {
		b.Run(mode, func(b *testing.B) {
			ca := newTestCA(b)
			client, server := ca.identity("client"), ca.identity("server")
			in := meshServer(b, server, config.MTLSPermissive, config.MTLSOff)
			out := meshServer(b, client, config.MTLSPermissive, mode)
			inPort := sidecarPort(b, in, Inbound, xfccApp(b))
			outPort := sidecarPort(b, out, Outbound, inPort)
			p := new(http.Protocols)
			p.SetHTTP1(true)
			c := &http.Client{Transport: &http.Transport{Protocols: p}}
			url := "http://" + outPort.String() + "/"
			for b.Loop() {
				resp, err := c.Get(url)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
			}
		})
	}
}

// TestMeshResetPropagates: an app that resets its connection resets the client's too,
// across the mTLS hop (which must not turn the reset into a clean close).
func TestMeshResetPropagates(t *testing.T) {
	ca := newTestCA(t)
	in := meshServer(t, ca.identity("server"), config.MTLSStrict, config.MTLSOff)
	out := meshServer(t, ca.identity("client"), config.MTLSPermissive, config.MTLSOn)
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.AcceptTCP()
		if err != nil {
			return
		}
		_, _ = c.Read(make([]byte, 100))
		_ = c.SetLinger(0)
		_ = c.Close()
	}()
	inPort := sidecarPort(t, in, Inbound, netip.MustParseAddrPort(ln.Addr().String()))
	outPort := sidecarPort(t, out, Outbound, inPort)
	c, err := net.Dial("tcp4", outPort.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = io.WriteString(c, "hello, then a reset")
	_, err = io.ReadAll(c)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("client read after the app's reset: %v, want ECONNRESET", err)
	}
}
