//go:build linux

package e2e

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	meshtls "skiff/tls"
)

// mTLS between two sidecars: app (a client workload with skiff) calls srv (a server
// workload with skiff); ext is a client outside the mesh (no skiff) wired to srv.
//
//	app e0 10.77.N.1 ──veth── e0 10.77.N.2 srv e1 10.79.M.2 ──veth── e0 10.79.M.1 ext

// Ports of the servers in srv for the mTLS tests.
const (
	mtlsPortHeaders = 8180 // mesh-headers: answers with the XFCC it got
	mtlsPortPlain   = 8181 // mesh-headers, left out of srv's capture: a server without a sidecar
	mtlsPortStrict  = 8182 // mesh-headers, on a port in strict mode
	mtlsPortEcho    = 7100
	mtlsPortSink    = 7101
	mtlsPortAppTLS  = 8543 // tls-echo: the app's own TLS
	mtlsPortBanner  = 2527 // banner: a server-first protocol
	mtlsTD          = "mesh.test"
)

var (
	mtlsClientID = "spiffe://" + mtlsTD + "/ns/app/sa/client"
	mtlsServerID = "spiffe://" + mtlsTD + "/ns/srv/sa/server"
	mtlsProbeID  = "spiffe://" + mtlsTD + "/ns/ext/sa/probe"
	mtlsSeq      atomic.Int32
)

// mtlsPKI is a CA made with `skiff ca init` and the identities it issued.
type mtlsPKI struct {
	dir, caDir string
}

// newMTLSPKI makes a trust domain's CA in a directory uid 1337 can use (it re-issues the
// server's certificate as the proxy user, as a rotation on a VM would).
func newMTLSPKI(t *testing.T) *mtlsPKI {
	t.Helper()
	dir, err := os.MkdirTemp(binDir, "mtls-pki-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := &mtlsPKI{dir: dir, caDir: filepath.Join(dir, "ca")}
	mustRun(t, skiffBin, "ca", "init", "--trust-domain", mtlsTD, "--dir", p.caDir)
	mustRun(t, "chown", "-R", "1337:1337", p.caDir)
	return p
}

// issue writes id's certificate into a new directory, owned by uid 1337 when proxy.
func (p *mtlsPKI) issue(t *testing.T, name, id string, proxy bool) string {
	t.Helper()
	out := filepath.Join(p.dir, name)
	mustRun(t, skiffBin, "ca", "issue", "--ca-dir", p.caDir, "--id", id, "--out", out)
	if proxy {
		mustRun(t, "chown", "-R", "1337:1337", out)
	}
	return out
}

// rotate re-issues id into out as uid 1337 (skiff ca issue --force), as a certificate
// agent would, and returns the new serial.
func (p *mtlsPKI) rotate(t *testing.T, out, id string) string {
	t.Helper()
	mustRun(t, "setpriv", "--reuid", "1337", "--regid", "1337", "--clear-groups", "--",
		skiffBin, "ca", "issue", "--ca-dir", p.caDir, "--id", id, "--out", out, "--force")
	return certSerial(t, out)
}

// writeExpired puts a certificate for id that expired an hour ago into out, each file
// renamed into place already owned by uid 1337.
func (p *mtlsPKI) writeExpired(t *testing.T, out, id string) {
	t.Helper()
	ca, err := meshtls.LoadCA(p.caDir)
	if err != nil {
		t.Fatal(err)
	}
	sid, err := meshtls.ParseID(id)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := ca.Issue(sid, time.Hour, time.Now().Add(-2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	stage, err := os.MkdirTemp(out, ".stage-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(stage)
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{{meshtls.CAFile, creds.CAPEM, 0o644}, {meshtls.KeyFile, creds.KeyPEM, 0o600}, {meshtls.CertFile, creds.CertPEM, 0o644}} {
		tmp := filepath.Join(stage, f.name)
		if err := os.WriteFile(tmp, f.data, f.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(tmp, 1337, 1337); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(out, f.name)); err != nil {
			t.Fatal(err)
		}
	}
}

// certSerial is the serial (hex) of the certificate in dir/tls.crt.
func certSerial(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, meshtls.CertFile))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM", dir)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c.SerialNumber.Text(16)
}

// mtlsTopo is newTopo plus ext, a namespace outside the mesh wired to srv's e1.
type mtlsTopo struct {
	*topo
	ext          *netNS
	extV4, srvE1 netip.Addr
}

func newMTLSTopo(t *testing.T) *mtlsTopo {
	t.Helper()
	tp := &mtlsTopo{topo: newTopo(t), ext: newNetNS(t)}
	i := mtlsSeq.Add(1)%250 + 1
	tp.extV4 = netip.MustParseAddr(fmt.Sprintf("10.79.%d.1", i))
	tp.srvE1 = netip.MustParseAddr(fmt.Sprintf("10.79.%d.2", i))
	mustRun(t, "ip", "-n", tp.ext.name, "link", "add", "e0", "type", "veth", "peer", "name", "e1", "netns", tp.srv.name)
	mustRun(t, "ip", "-n", tp.ext.name, "addr", "add", tp.extV4.String()+"/24", "dev", "e0")
	mustRun(t, "ip", "-n", tp.srv.name, "addr", "add", tp.srvE1.String()+"/24", "dev", "e1")
	mustRun(t, "ip", "-n", tp.ext.name, "link", "set", "e0", "up")
	mustRun(t, "ip", "-n", tp.srv.name, "link", "set", "e1", "up")
	return tp
}

type mtlsHeaders struct {
	Proto string   `json:"proto"`
	Path  string   `json:"path"`
	XFCC  []string `json:"xfcc"`
}

// mtlsGet GETs url with curl from ns and decodes the mesh-headers answer.
func mtlsGet(t *testing.T, ns *netNS, url string, args ...string) mtlsHeaders {
	t.Helper()
	argv := append([]string{"curl", "-sS", "--fail", "--max-time", "15"}, args...)
	out := ns.mustExec(t, 30*time.Second, append(argv, url)...)
	var h mtlsHeaders
	if err := json.Unmarshal(out, &h); err != nil {
		t.Fatalf("curl %s: answer %q: %v", url, out, err)
	}
	return h
}

type meshDialResult struct {
	result
	N       int      `json:"n"`
	Resumed int      `json:"resumed"`
	Seconds float64  `json:"seconds"`
	PerSec  float64  `json:"per_sec"`
	PeerID  string   `json:"peer_id"`
	Serials []string `json:"serials"`
}

type meshLoadResult struct {
	result
	HTTP     int64    `json:"http"`
	TCP      int64    `json:"tcp"`
	Failures int64    `json:"failures"`
	Errors   []string `json:"errors"`
}

type captureResult struct {
	result
	Frames    int64           `json:"frames"`
	Bytes     int64           `json:"bytes"`
	TLSFrames int64           `json:"tls_frames"`
	Markers   map[string]bool `json:"markers"`
}

// mtlsMesh is the running mesh: the PKI, the topology and both sidecars.
type mtlsMesh struct {
	pki            *mtlsPKI
	tp             *mtlsTopo
	app, srv       *sidecar
	srvDir, extDir string
}

// mtlsMeshOpts adjusts startMTLSMesh for measurements.
type mtlsMeshOpts struct {
	base   string   // YAML at the head of both configs
	direct []uint16 // ports left out of capture on both sides: the path without skiff
	plain  []uint16 // ports the app's sidecar dials in plaintext (mtls.outbound.ports off)
}

// startMTLSMesh runs the servers and both sidecars.
func startMTLSMesh(t *testing.T, o mtlsMeshOpts) *mtlsMesh {
	t.Helper()
	base, direct := o.base, o.direct
	m := &mtlsMesh{pki: newMTLSPKI(t), tp: newMTLSTopo(t)}
	appDir := m.pki.issue(t, "app", mtlsClientID, true)
	m.srvDir = m.pki.issue(t, "srv", mtlsServerID, true)
	m.extDir = m.pki.issue(t, "ext", mtlsProbeID, false)
	srv := m.tp.srv
	for _, p := range []uint16{mtlsPortHeaders, mtlsPortPlain, mtlsPortStrict} {
		srv.startServer(t, "mesh-headers", p)
	}
	srv.startServer(t, "echo", mtlsPortEcho)
	srv.startServer(t, "sink", mtlsPortSink)
	srv.startServer(t, "banner", mtlsPortBanner)
	m.srv = initSkiff(t, srv, base+fmt.Sprintf(`capture:
  inbound:
    exclude_ports: [%s]
mtls:
  cert_dir: %s
  recheck: 1s
  inbound:
    mode: permissive
    ports:
      "%d": strict
`, yamlPorts(append([]uint16{mtlsPortPlain}, direct...)), m.srvDir, mtlsPortStrict))
	m.srv.run(t)
	plain := ""
	for _, p := range o.plain {
		plain += fmt.Sprintf("      \"%d\": off\n", p)
	}
	if plain != "" {
		plain = "    ports:\n" + plain
	}
	m.app = initSkiff(t, m.tp.app, base+fmt.Sprintf("capture:\n  outbound:\n    exclude_ports: [%s]\nmtls:\n  cert_dir: %s\n  outbound:\n    mode: auto\n%s",
		yamlPorts(direct), appDir, plain))
	m.app.run(t)
	return m
}

// yamlPorts is the inside of a YAML flow list of ports.
func yamlPorts(ports []uint16) string {
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = fmt.Sprint(p)
	}
	return strings.Join(s, ", ")
}

func (m *mtlsMesh) url(port uint16, path string) string {
	return "http://" + hostPort(m.tp.srvV4, port) + path
}

// TestMTLS: two sidecars speak mTLS to each other for HTTP/1.1, h2c, raw TCP and the
// app's own TLS; the wire carries only TLS; strict and permissive ports; auto mode
// falls back for a server without a sidecar; certificates rotate under load with no
// failure; an expired certificate is refused and the identity in force stays.
func TestMTLS(t *testing.T) {
	need(t)
	t.Parallel()
	m := startMTLSMesh(t, mtlsMeshOpts{base: testConfig})
	app, ext := m.tp.app, m.tp.ext
	wantXFCC := "By=" + mtlsServerID + ";URI=" + mtlsClientID
	forged := "X-Forwarded-Client-Cert: By=x;URI=spiffe://" + mtlsTD + "/ns/kube-system/sa/admin"
	peer := []string{"direction", "inbound", "connection_security_policy", "mutual_tls", "source_principal", mtlsClientID}

	t.Run("http1_h2c_xfcc", func(t *testing.T) {
		before, beforeApp := m.srv.metrics(t), m.app.metrics(t)
		for _, c := range []struct{ flag, proto string }{{"--http1.1", "HTTP/1.1"}, {"--http2-prior-knowledge", "HTTP/2.0"}} {
			h := mtlsGet(t, app, m.url(mtlsPortHeaders, "/xfcc"), c.flag, "-H", forged)
			if h.Proto != c.proto || len(h.XFCC) != 1 || h.XFCC[0] != wantXFCC {
				t.Errorf("%s: server app saw proto %s XFCC %q, want %s and [%q]", c.flag, h.Proto, h.XFCC, c.proto, wantXFCC)
			}
		}
		after, afterApp := m.srv.metrics(t), m.app.metrics(t)
		if d := delta(before, after, mRequests, append(peer, "destination", hostPort(m.tp.srvV4, mtlsPortHeaders))...); d != 2 {
			t.Errorf("srv %s{inbound, mutual_tls, source_principal=%s} moved by %v, want 2", mRequests, mtlsClientID, d)
		}
		if d := delta(beforeApp, afterApp, mRequests, "direction", "outbound", "connection_security_policy", "mutual_tls"); d != 2 {
			t.Errorf("app %s{outbound, mutual_tls} moved by %v, want 2", mRequests, d)
		}
	})

	t.Run("tcp_8MiB", func(t *testing.T) {
		const n = 8<<20 + 3
		dst := hostPort(m.tp.srvV4, mtlsPortSink)
		before := m.srv.metrics(t)
		send(t, app, dst, n) // checks the sink's sha256
		after := m.srv.waitMetrics(t, 5*time.Second, closedMoved(before, "inbound", dst, 1))
		if d := delta(before, after, mReceived, append(peer, "destination", dst)...); d != n {
			t.Errorf("srv %s{inbound, mutual_tls, %s} moved by %.0f, want %d", mReceived, mtlsClientID, d, n)
		}
		echo(t, app, hostPort(m.tp.srvV4, mtlsPortEcho), 1<<20)
	})

	t.Run("server_first_banner", func(t *testing.T) {
		var r bannerResult
		app.client(t, 30*time.Second, &r, "banner-client", "-addr", hostPort(m.tp.srvV4, mtlsPortBanner))
		t.Logf("BANNER through two sidecars with mTLS arrived %.1f ms after connect", r.BannerMS)
		if !r.OK || r.Banner != greeting || r.Echo != "EHLO skiff\r\n" {
			t.Fatalf("server-first exchange through two sidecars: %+v", r)
		}
	})

	t.Run("app_own_tls", func(t *testing.T) {
		p := m.tp.srv.start(t, "tls-echo", appBin, "tls-echo", "-listen", fmt.Sprintf(":%d", mtlsPortAppTLS), "-sni", "app.test")
		l := p.waitLine(t, 10*time.Second, func(l map[string]any) bool { return l["listening"] != nil })
		caFile := filepath.Join(t.TempDir(), "app-ca.pem")
		if err := os.WriteFile(caFile, []byte(l["cert_pem"].(string)), 0o644); err != nil {
			t.Fatal(err)
		}
		dst := hostPort(m.tp.srvV4, mtlsPortAppTLS)
		before := m.srv.metrics(t)
		var r struct {
			transferResult
			CertSHA256 string `json:"cert_sha256"`
			Verified   bool   `json:"verified"`
		}
		app.client(t, time.Minute, &r, "tls-client", "-addr", dst, "-sni", "app.test", "-ca", caFile, "-bytes", fmt.Sprint(1<<20))
		if !r.OK || !r.Verified || r.CertSHA256 != l["cert_sha256"] {
			t.Fatalf("the app's own TLS through two sidecars: %+v, want the server app's certificate %v verified", r, l["cert_sha256"])
		}
		after := m.srv.waitMetrics(t, 5*time.Second, closedMoved(before, "inbound", dst, 1))
		if d := delta(before, after, mOpened, append(peer, "destination", dst)...); d != 1 {
			t.Errorf("srv %s{inbound, mutual_tls, %s} moved by %v, want 1: the app's TLS did not cross the mesh in mTLS", mOpened, dst, d)
		}
	})

	t.Run("wire_is_tls", func(t *testing.T) {
		secret := fmt.Sprintf("SKIFF-SECRET-%d", time.Now().UnixNano())
		control := fmt.Sprintf("SKIFF-PLAIN-%d", time.Now().UnixNano())
		p := m.tp.srv.start(t, "capture", appBin, "capture", "-dev", "e0", "-marker", secret+","+control)
		p.waitLine(t, 10*time.Second, func(l map[string]any) bool { return l["capturing"] != nil })
		mtlsGet(t, app, m.url(mtlsPortHeaders, "/"+secret), "--http1.1", "-H", "X-Secret: "+secret)
		mtlsGet(t, app, m.url(mtlsPortHeaders, "/"+secret), "--http2-prior-knowledge")
		// The control: the same request to the server without a sidecar goes in plaintext.
		mtlsGet(t, app, m.url(mtlsPortPlain, "/"+control), "--http1.1")
		if err := p.signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		var r captureResult
		p.result(t, 10*time.Second, &r)
		t.Logf("capture on srv e0: %d frames (%d with TLS records), %d bytes, markers %v", r.Frames, r.TLSFrames, r.Bytes, r.Markers)
		if !r.OK || r.Frames == 0 || r.TLSFrames == 0 {
			t.Fatalf("capture: %+v, want frames with TLS records", r)
		}
		if !r.Markers[control] {
			t.Errorf("the plaintext control %q was not seen on the wire: the capture proves nothing", control)
		}
		if r.Markers[secret] {
			t.Errorf("%q, sent by the client app through two sidecars, was seen in plaintext on the wire", secret)
		}
	})

	t.Run("strict_refuses_plaintext", func(t *testing.T) {
		before := m.srv.metrics(t)
		url := "http://" + hostPort(m.tp.srvE1, mtlsPortStrict) + "/"
		out, errOut, err := ext.exec(t, 30*time.Second, "curl", "-sS", "--max-time", "10", url)
		if err == nil {
			t.Errorf("a plaintext client outside the mesh got an answer from a strict port: %q", out)
		}
		t.Logf("curl from ext to the strict port: %v: %s", err, strings.TrimSpace(string(errOut)))
		after := m.srv.metrics(t)
		if d := delta(before, after, mRefused, "direction", "inbound", "reason", "mtls_required"); d != 1 {
			t.Errorf("%s{reason=mtls_required} moved by %v, want 1", mRefused, d)
		}
		// A mesh client is served there.
		if h := mtlsGet(t, app, m.url(mtlsPortStrict, "/"), "--http1.1"); len(h.XFCC) != 1 || h.XFCC[0] != wantXFCC {
			t.Errorf("strict port from the mesh: XFCC %q, want [%q]", h.XFCC, wantXFCC)
		}
	})

	t.Run("permissive_accepts_plaintext", func(t *testing.T) {
		h := mtlsGet(t, ext, "http://"+hostPort(m.tp.srvE1, mtlsPortHeaders)+"/", "--http1.1", "-H", forged)
		if len(h.XFCC) != 0 {
			t.Errorf("a plaintext client's own XFCC reached the app: %q", h.XFCC)
		}
	})

	t.Run("auto_fallback_remembered", func(t *testing.T) {
		before := m.app.metrics(t)
		for i := range 3 {
			if h := mtlsGet(t, app, m.url(mtlsPortPlain, fmt.Sprintf("/plain%d", i)), "--http1.1"); len(h.XFCC) != 0 {
				t.Errorf("server without a sidecar saw XFCC %q", h.XFCC)
			}
		}
		after := m.app.metrics(t)
		if d := delta(before, after, mRequests, "destination", hostPort(m.tp.srvV4, mtlsPortPlain), "connection_security_policy", "none"); d != 3 {
			t.Errorf("app %s{%s, none} moved by %v, want 3", mRequests, hostPort(m.tp.srvV4, mtlsPortPlain), d)
		}
		// One probe for the endpoint in the whole test (the wire_is_tls control may have made it).
		if n := strings.Count(m.app.proc.stderr.String(), "endpoint is not a mesh sidecar"); n != 1 {
			t.Errorf("the app's sidecar found the plaintext endpoint %d times, want once (remembered)", n)
		}
	})

	t.Run("rotation_under_load", func(t *testing.T) {
		before := m.srv.metrics(t)
		// The load runs until every rotation is done (SIGTERM ends it), at most a minute.
		load := app.start(t, "mesh-load", appBin, "mesh-load", "-url", m.url(mtlsPortHeaders, "/load"),
			"-tcp", hostPort(m.tp.srvV4, mtlsPortEcho), "-duration", "60s", "-conc", "4")
		load.waitLine(t, 10*time.Second, func(l map[string]any) bool { return l["loading"] != nil })
		probe := hostPort(m.tp.srvE1, mtlsPortHeaders)
		for i := range 3 {
			time.Sleep(700 * time.Millisecond)
			serial := m.pki.rotate(t, m.srvDir, mtlsServerID)
			ok := m.srv.waitMetrics(t, 5*time.Second, func(x metrics) bool {
				return delta(before, x, "skiff_tls_identity_reloads_total", "result", "ok") >= float64(i+1)
			})
			if d := delta(before, ok, "skiff_tls_identity_reloads_total", "result", "ok"); d < float64(i+1) {
				t.Fatalf("rotation %d: skiff_tls_identity_reloads_total{ok} moved by %v", i+1, d)
			}
			var r meshDialResult
			ext.client(t, 30*time.Second, &r, "mesh-dial", "-addr", probe, "-cert-dir", m.extDir, "-n", "3")
			if !r.OK || len(r.Serials) != 1 || r.Serials[0] != serial || r.PeerID != mtlsServerID {
				t.Errorf("rotation %d: new handshakes presented %+v, want serial %s of %s", i+1, r, serial, mtlsServerID)
			}
		}
		time.Sleep(500 * time.Millisecond) // connections made under the last identity too
		select {
		case <-load.done:
			t.Error("the load ended before the last rotation: the rotations were not under load")
		default:
		}
		if err := load.signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		var lr meshLoadResult
		load.result(t, time.Minute, &lr)
		t.Logf("load during 3 rotations: %d GETs, %d TCP echoes, %d failures %v", lr.HTTP, lr.TCP, lr.Failures, lr.Errors)
		if lr.Failures != 0 || lr.HTTP == 0 || lr.TCP == 0 {
			t.Errorf("rotation under load: %d failures (%v), %d GETs, %d echoes; want no failure", lr.Failures, lr.Errors, lr.HTTP, lr.TCP)
		}
	})

	t.Run("expired_refused_identity_stays", func(t *testing.T) {
		before := m.srv.metrics(t)
		inForce := certSerial(t, m.srvDir)
		expiry := before.sum("skiff_tls_identity_expiry_seconds")
		m.pki.writeExpired(t, m.srvDir, mtlsServerID)
		after := m.srv.waitMetrics(t, 5*time.Second, func(x metrics) bool {
			return delta(before, x, "skiff_tls_identity_reloads_total", "result", "rejected") >= 1
		})
		if d := delta(before, after, "skiff_tls_identity_reloads_total", "result", "rejected"); d < 1 {
			t.Fatalf("skiff_tls_identity_reloads_total{rejected} moved by %v after an expired certificate was written", d)
		}
		if d := delta(before, after, "skiff_tls_identity_reloads_total", "result", "ok"); d != 0 {
			t.Errorf("skiff_tls_identity_reloads_total{ok} moved by %v: the expired certificate was taken", d)
		}
		if e := after.sum("skiff_tls_identity_expiry_seconds"); e != expiry {
			t.Errorf("skiff_tls_identity_expiry_seconds went from %v to %v", expiry, e)
		}
		if !strings.Contains(m.srv.proc.stderr.String(), "certificate expired") {
			t.Error("no log line names the expired certificate")
		}
		var r meshDialResult
		ext.client(t, 30*time.Second, &r, "mesh-dial", "-addr", hostPort(m.tp.srvE1, mtlsPortHeaders), "-cert-dir", m.extDir)
		if !r.OK || len(r.Serials) != 1 || r.Serials[0] != inForce {
			t.Errorf("after the expired certificate: handshake %+v, want the identity in force (serial %s)", r, inForce)
		}
		if h := mtlsGet(t, app, m.url(mtlsPortHeaders, "/after-expired"), "--http1.1"); len(h.XFCC) != 1 || h.XFCC[0] != wantXFCC {
			t.Errorf("after the expired certificate: XFCC %q, want [%q]", h.XFCC, wantXFCC)
		}
	})
}
