//go:build linux

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Authorization policies between sidecars: two client workloads with different mesh
// identities call one server workload whose sidecar has policies. The app namespace is
// the frontend (allowed), ext is the intruder (denied), each with its own sidecar;
// srv serves HTTP, gRPC and raw TCP behind its sidecar.
//
//	frontend app 10.77.N.1 ──veth── 10.77.N.2 srv 10.79.M.2 ──veth── 10.79.M.1 ext intruder

// Ports of the servers in srv for the authorization tests.
const (
	azPortHTTP   = 8280 // headers: answers with what it saw; GET /seen lists the paths it served
	azPortPublic = 8281 // headers: open to ext's address by a source_cidrs rule
	azPortGRPC   = 9290
	azPortEcho   = 7200 // an opaque TCP port
)

var (
	azFrontendID = "spiffe://" + mtlsTD + "/ns/prod/sa/frontend"
	azIntruderID = "spiffe://" + mtlsTD + "/ns/prod/sa/intruder"
	azServerID   = "spiffe://" + mtlsTD + "/ns/prod/sa/api"
)

// azPolicies is srv's authorization section; also lists the principals the frontend
// policy allows. The /admin deny names the HTTP ports: a deny rule with a path cannot
// see a path on an opaque connection, and would otherwise close every TCP port to all.
func azPolicies(extV4 string, principals ...string) string {
	return fmt.Sprintf(`authorization:
  default_action: auto
  policies:
    - name: no-admin
      action: deny
      rules:
        - paths: ["/admin", "/admin/*"]
          ports: [%d, %d]
    - name: frontend
      action: allow
      rules:
        - principals: ["%s"]
    - name: ext-public
      action: allow
      rules:
        - source_cidrs: [%s/32]
          ports: [%d]
`, azPortHTTP, azPortPublic, strings.Join(principals, `", "`), extV4, azPortPublic)
}

// synCounter counts, in srv's filter INPUT chain, the connections that reach a port of
// the app itself: a client's SYN is redirected to the inbound listener before INPUT (so
// it is seen there with port 15006), and only the sidecar's forward to the app arrives
// with the app's port.
type synCounter struct {
	ns *netNS
}

func newSynCounter(t *testing.T, ns *netNS, ports ...uint16) *synCounter {
	t.Helper()
	for _, p := range ports {
		ns.mustExec(t, 10*time.Second, "iptables-nft", "-w", "5", "-A", "INPUT", "-p", "tcp", "--syn", "--dport", fmt.Sprint(p),
			"-m", "comment", "--comment", "skiff-e2e app connections")
	}
	return &synCounter{ns: ns}
}

// count is how many connections reached the app's port p.
func (c *synCounter) count(t *testing.T, p uint16) int {
	t.Helper()
	out := c.ns.mustExec(t, 10*time.Second, "iptables-nft", "-w", "5", "-L", "INPUT", "-n", "-v", "-x")
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, fmt.Sprintf("dpt:%d ", p)) || strings.HasSuffix(line, fmt.Sprintf("dpt:%d", p)) {
			n, err := strconv.Atoi(strings.Fields(line)[0])
			if err != nil {
				t.Fatalf("iptables counter line %q: %v", line, err)
			}
			return n
		}
	}
	t.Fatalf("no counter for port %d in:\n%s", p, out)
	return 0
}

// azCurl GETs url from ns and returns the status and body.
func azCurl(t *testing.T, ns *netNS, url string, args ...string) (int, string) {
	t.Helper()
	argv := append([]string{"curl", "-sS", "--max-time", "15", "-w", "\n%{http_code}"}, args...)
	out := string(ns.mustExec(t, 30*time.Second, append(argv, url)...))
	i := strings.LastIndexByte(out, '\n')
	code, err := strconv.Atoi(out[i+1:])
	if err != nil {
		t.Fatalf("curl %s: %q", url, out)
	}
	return code, out[:i]
}

// writeConfig replaces a sidecar's config file in one rename, as a config agent would.
func writeConfig(t *testing.T, path, cfg string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".new")
	if err := os.WriteFile(tmp, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(tmp, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// TestAuthz: per identity, per path, per source range, for HTTP, gRPC and opaque TCP
// over mesh mTLS; denied traffic never reaches the app; a reload changes the decision.
func TestAuthz(t *testing.T) {
	need(t)
	t.Parallel()
	pki := newMTLSPKI(t)
	tp := newMTLSTopo(t)
	app, srv, ext := tp.app, tp.srv, tp.ext
	frontendDir := pki.issue(t, "frontend", azFrontendID, true)
	intruderDir := pki.issue(t, "intruder", azIntruderID, true)
	srvDir := pki.issue(t, "srv", azServerID, true)

	srv.startServer(t, "headers", azPortHTTP)
	srv.startServer(t, "headers", azPortPublic)
	srv.startServer(t, "grpc", azPortGRPC)
	srv.startServer(t, "echo", azPortEcho)
	syns := newSynCounter(t, srv, azPortHTTP, azPortGRPC, azPortEcho)

	srvBase := testConfig + fmt.Sprintf("mtls:\n  cert_dir: %s\n", srvDir)
	srvCar := initSkiff(t, srv, srvBase+azPolicies(tp.extV4.String(), azFrontendID))
	srvCar.run(t)
	for _, c := range []struct {
		ns  *netNS
		dir string
	}{{app, frontendDir}, {ext, intruderDir}} {
		initSkiff(t, c.ns, testConfig+fmt.Sprintf("mtls:\n  cert_dir: %s\n  outbound:\n    mode: on\n", c.dir)).run(t)
	}
	// The frontend reaches srv by its e0 address, the intruder by its e1 address.
	fromApp := func(port uint16) string { return hostPort(tp.srvV4, port) }
	fromExt := func(port uint16) string { return hostPort(tp.srvE1, port) }
	denied := func(peer string) []string {
		return []string{"direction", "inbound", "connection_security_policy", "mutual_tls", "source_principal", peer,
			"destination_service", "unknown", "response_flags", "RBAC"}
	}
	before := srvCar.metrics(t)

	t.Run("grpc", func(t *testing.T) {
		var r grpcResult
		ext.client(t, time.Minute, &r, "grpc-client", "-addr", fromExt(azPortGRPC))
		if r.OK || !strings.Contains(r.Error, "PermissionDenied") || !strings.Contains(r.Error, "RBAC: access denied") {
			t.Errorf("intruder gRPC: %+v, want PermissionDenied (RBAC: access denied)", r)
		}
		if n := syns.count(t, azPortGRPC); n != 0 {
			t.Errorf("the gRPC app got %d connections after a denied call, want 0", n)
		}
		app.client(t, time.Minute, &r, "grpc-client", "-addr", fromApp(azPortGRPC))
		if !r.OK || r.StreamMsgs != 5 {
			t.Errorf("frontend gRPC: %+v, want OK", r)
		}
		after := srvCar.metrics(t)
		if d := delta(before, after, mRequests, append(denied(azIntruderID), "request_protocol", "grpc", "response_code", "200", "grpc_response_status", "7")...); d != 1 {
			t.Errorf("srv %s{grpc, 200, grpc 7, intruder, RBAC} moved by %v, want 1", mRequests, d)
		}
	})

	t.Run("tcp", func(t *testing.T) {
		var r transferResult
		ext.client(t, 30*time.Second, &r, "echo-client", "-addr", fromExt(azPortEcho), "-bytes", "4096")
		if r.OK || r.RemoteBytes != 0 {
			t.Errorf("intruder echo: %+v, want the connection closed with nothing echoed", r)
		}
		t.Logf("intruder echo: %s (%s)", r.Error, r.ErrorKind)
		after := srvCar.waitMetrics(t, 5*time.Second, func(m metrics) bool {
			return delta(before, m, mRefused, "direction", "inbound", "reason", "authz_denied") >= 1
		})
		if d := delta(before, after, mRefused, "direction", "inbound", "reason", "authz_denied"); d != 1 {
			t.Errorf("srv %s{inbound, authz_denied} moved by %v, want 1", mRefused, d)
		}
		if n := syns.count(t, azPortEcho); n != 0 {
			t.Errorf("the echo app got %d connections from a denied peer, want 0", n)
		}
		echo(t, app, fromApp(azPortEcho), 1<<20)
		if n := syns.count(t, azPortEcho); n != 1 {
			t.Errorf("the echo app got %d connections after the frontend's, want 1", n)
		}
	})

	t.Run("http", func(t *testing.T) {
		code, body := azCurl(t, ext, "http://"+fromExt(azPortHTTP)+"/orders", "--http1.1")
		if code != 403 || body != "RBAC: access denied" {
			t.Errorf("intruder GET /orders: %d %q, want 403 RBAC: access denied", code, body)
		}
		code, body = azCurl(t, ext, "http://"+fromExt(azPortHTTP)+"/orders", "--http2-prior-knowledge")
		if code != 403 || body != "RBAC: access denied" {
			t.Errorf("intruder h2c GET /orders: %d %q, want 403", code, body)
		}
		if n := syns.count(t, azPortHTTP); n != 0 {
			t.Errorf("the HTTP app got %d connections after denied requests only, want 0", n)
		}
		if code, _ := azCurl(t, app, "http://"+fromApp(azPortHTTP)+"/orders", "--http1.1"); code != 200 {
			t.Errorf("frontend GET /orders: %d, want 200", code)
		}
		for _, p := range []string{"/admin", "/admin/users", "/x/../admin/users"} {
			code, body := azCurl(t, app, "http://"+fromApp(azPortHTTP)+p, "--http1.1", "--path-as-is")
			if code != 403 || body != "RBAC: access denied" {
				t.Errorf("frontend GET %s: %d %q, want 403 (deny wins over allow)", p, code, body)
			}
		}
		// Source range: ext's address may use the public port, though its identity may not.
		if code, _ := azCurl(t, ext, "http://"+fromExt(azPortPublic)+"/catalog", "--http1.1"); code != 200 {
			t.Errorf("intruder GET /catalog on the public port: %d, want 200 (source_cidrs)", code)
		}
		if code, _ := azCurl(t, ext, "http://"+fromExt(azPortPublic)+"/admin", "--http1.1"); code != 403 {
			t.Errorf("intruder GET /admin on the public port: %d, want 403", code)
		}
		var seen struct {
			Paths []string `json:"paths"`
		}
		curlJSON(t, srv, &seen, "http://127.0.0.1:"+fmt.Sprint(azPortHTTP)+"/seen")
		if strings.Join(seen.Paths, " ") != "/orders" {
			t.Errorf("the HTTP app served %q, want only the frontend's /orders", seen.Paths)
		}
		after := srvCar.metrics(t)
		if d := delta(before, after, mRequests, append(denied(azIntruderID), "response_code", "403")...); d != 3 {
			t.Errorf("srv %s{403, intruder, RBAC} moved by %v, want 3", mRequests, d)
		}
		if d := delta(before, after, mRequests, append(denied(azFrontendID), "response_code", "403")...); d != 3 {
			t.Errorf("srv %s{403, frontend, RBAC} moved by %v, want 3", mRequests, d)
		}
		logs := srvCar.proc.stderr.String()
		for _, want := range []string{`"message":"request denied by authorization policy"`, `"policy":"no-admin"`,
			`"message":"connection denied by authorization policy"`, `"peer_id":"` + azIntruderID + `"`} {
			if !strings.Contains(logs, want) {
				t.Errorf("srv log has no %s", want)
			}
		}
	})

	t.Run("reload", func(t *testing.T) {
		reloaded := srvCar.metrics(t)
		writeConfig(t, srvCar.cfg, srvBase+azPolicies(tp.extV4.String(), azFrontendID, azIntruderID))
		if err := srvCar.proc.signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		after := srvCar.waitMetrics(t, 5*time.Second, func(m metrics) bool {
			return delta(reloaded, m, "skiff_config_reloads_total", "result", "ok") >= 1
		})
		if d := delta(reloaded, after, "skiff_config_reloads_total", "result", "ok"); d < 1 {
			t.Fatalf("skiff_config_reloads_total{ok} moved by %v after SIGHUP\n%s", d, tail(srvCar.proc.stderr.String(), 3000))
		}
		if code, body := azCurl(t, ext, "http://"+fromExt(azPortHTTP)+"/after-reload", "--http1.1"); code != 200 {
			t.Errorf("intruder GET after the reload: %d %q, want 200", code, body)
		}
		var r grpcResult
		ext.client(t, time.Minute, &r, "grpc-client", "-addr", fromExt(azPortGRPC))
		if !r.OK {
			t.Errorf("intruder gRPC after the reload: %+v, want OK", r)
		}
		echo(t, ext, fromExt(azPortEcho), 64<<10)
		// The deny still holds for everyone.
		if code, _ := azCurl(t, ext, "http://"+fromExt(azPortHTTP)+"/admin", "--http1.1"); code != 403 {
			t.Errorf("intruder GET /admin after the reload: %d, want 403", code)
		}
	})
}
