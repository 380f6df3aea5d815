package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/template"
	"time"
)

// The variants every scenario is measured with, in this order within a run.
const (
	vDirect  = "direct"
	vSkiff   = "skiff"
	vHAProxy = "haproxy"
	vNginx   = "nginx"
)

var variants = []string{vDirect, vSkiff, vHAProxy, vNginx}

// The proxies listen in the client namespace on loopback, on the backend's port plus an
// offset. h2c has its own port (8081) on both proxies, because neither serves HTTP/1.1 and
// HTTP/2 with prior knowledge on one plain listener the way Go's server (and skiff) does.
const (
	offHAProxy = 10000
	offNginx   = 20000
	portH2     = 8081 // proxies only: the h2c frontends, to the backend's 8080
)

// addr is where a client dials to reach the backend's port through variant v.
func addr(v string, port int) string {
	switch v {
	case vSkiff:
		return fmt.Sprintf("%s:%d", ipCaptured, port) // the app dials the real address; iptables does the rest
	case vHAProxy:
		return fmt.Sprintf("127.0.0.1:%d", offHAProxy+port)
	case vNginx:
		return fmt.Sprintf("127.0.0.1:%d", offNginx+port)
	}
	if port == portH2 {
		port = portHTTP
	}
	return fmt.Sprintf("%s:%d", ipDirect, port)
}

// h2Addr is the h2c address: the proxies have a separate h2c frontend; skiff and the
// backend take h2c on the HTTP port.
func h2Addr(v string) string {
	if v == vHAProxy || v == vNginx {
		return addr(v, portH2)
	}
	return addr(v, portHTTP)
}

// skiffConfig is skiff's defaults plus two things the harness needs: the backend's
// second address is never captured (it is the direct path, and HAProxy's and nginx's
// upstream), and two ports are pinned so that scenario 9 and 7 can compare sniffing with
// pinning in the same process.
func skiffConfig() string {
	return fmt.Sprintf(`# written by bench/: skiff defaults plus the two settings below
capture:
  outbound:
    exclude_cidrs: ["%s/32"]   # the direct path and the other proxies' upstream
sniff:
  ports:
    "%d": http   # scenario 9: port pinned vs sniffed (%d)
    "%d": tcp    # scenario 7: connections/s with the port pinned
`, ipDirect, portHTTPPinned, portHTTP, portClosePin)
}

var haproxyTmpl = template.Must(template.New("haproxy").Parse(`# written by bench/
global
    maxconn 9900
    nbthread 1
    tune.h2.max-concurrent-streams 256

defaults
    mode http
    maxconn 9900
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 1h
    timeout server 1h
    timeout tunnel 1h
    timeout http-keep-alive 1h
    timeout http-request 30s

frontend h1
    bind 127.0.0.1:{{.H1}}
    default_backend h1
backend h1
    server backend {{.Dst}}:{{.BackendHTTP}}

frontend h2
    bind 127.0.0.1:{{.H2}} proto h2
    default_backend h2
backend h2
    server backend {{.Dst}}:{{.BackendHTTP}} proto h2

frontend grpc
    bind 127.0.0.1:{{.GRPC}} proto h2
    default_backend grpc
backend grpc
    server backend {{.Dst}}:{{.BackendGRPC}} proto h2

defaults
    mode tcp
    maxconn 9900
    timeout connect 5s
    timeout client 1h
    timeout server 1h

listen iperf
    bind 127.0.0.1:{{.Iperf}}
    server backend {{.Dst}}:{{.BackendIperf}}
listen close
    bind 127.0.0.1:{{.Close}}
    server backend {{.Dst}}:{{.BackendClose}}
listen echo
    bind 127.0.0.1:{{.Echo}}
    server backend {{.Dst}}:{{.BackendEcho}}
`))

var nginxTmpl = template.Must(template.New("nginx").Parse(`# written by bench/
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 1;
master_process off;
daemon off;
pid {{.State}}/nginx.pid;
error_log {{.State}}/nginx-error.log warn;
worker_rlimit_nofile 20000;
events { worker_connections 19900; }

http {
    access_log off;
    client_body_temp_path {{.State}}/nginx-tmp/body;
    proxy_temp_path {{.State}}/nginx-tmp/proxy;
    fastcgi_temp_path {{.State}}/nginx-tmp/fastcgi;
    uwsgi_temp_path {{.State}}/nginx-tmp/uwsgi;
    scgi_temp_path {{.State}}/nginx-tmp/scgi;
    keepalive_timeout 3600s;
    keepalive_requests 100000000;

    upstream h1 {
        server {{.Dst}}:{{.BackendHTTP}};
        keepalive 256;
        keepalive_requests 100000000;
        keepalive_timeout 3600s;
    }
    upstream grpc {
        server {{.Dst}}:{{.BackendGRPC}};
        keepalive 256;
        keepalive_requests 100000000;
        keepalive_timeout 3600s;
    }
    # Upstream keep-alive needs an empty Connection header; a WebSocket upgrade needs "upgrade".
    map $http_upgrade $connection_upgrade {
        default upgrade;
        ''      '';
    }

    server {
        listen 127.0.0.1:{{.H1}};
        location / {
            proxy_pass http://h1;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_read_timeout 3600s;
        }
    }
    # h2c with prior knowledge; nginx speaks HTTP/1.1 to the upstream.
    server {
        listen 127.0.0.1:{{.H2}} http2;
        location / {
            proxy_pass http://h1;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
    server {
        listen 127.0.0.1:{{.GRPC}} http2;
        # A stream's request body is all its messages: no size limit.
        client_max_body_size 0;
        location / {
            grpc_pass grpc://grpc;
            grpc_read_timeout 3600s;
            grpc_send_timeout 3600s;
        }
    }
}

stream {
    server { listen 127.0.0.1:{{.Close}}; proxy_pass {{.Dst}}:{{.BackendClose}}; }
    server { listen 127.0.0.1:{{.Echo}}; proxy_pass {{.Dst}}:{{.BackendEcho}}; proxy_timeout 1h; }
}
`))

func proxyPorts(off int, state string) map[string]any {
	return map[string]any{
		"State": state, "Dst": ipDirect,
		"H1": off + portHTTP, "H2": off + portH2, "GRPC": off + portGRPC,
		"Iperf": off + portIperf, "Close": off + portClose, "Echo": off + portEcho,
		"BackendHTTP": portHTTP, "BackendGRPC": portGRPC, "BackendIperf": portIperf,
		"BackendClose": portClose, "BackendEcho": portEcho,
	}
}

func writeTemplate(path string, t *template.Template, data any) error {
	var sb strings.Builder
	if err := t.Execute(&sb, data); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(sb.String()), 0o644)
}

// writeConfigs writes the three proxies' configuration files into the state directory.
func (b *bench) writeConfigs() error {
	if err := os.WriteFile(filepath.Join(b.state, "skiff.yaml"), []byte(skiffConfig()), 0o644); err != nil {
		return err
	}
	if err := writeTemplate(filepath.Join(b.state, "haproxy.cfg"), haproxyTmpl, proxyPorts(offHAProxy, b.state)); err != nil {
		return err
	}
	for _, d := range []string{"body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		if err := os.MkdirAll(filepath.Join(b.state, "nginx-tmp", d), 0o755); err != nil {
			return err
		}
	}
	return writeTemplate(filepath.Join(b.state, "nginx.conf"), nginxTmpl, proxyPorts(offNginx, b.state))
}

// startBackend starts the Go backend and iperf3 in the server namespace, on the load CPU.
func (b *bench) startBackend(ctx context.Context) error {
	if _, err := b.start("backend", nsServer, cpuLoad, b.self, "backend"); err != nil {
		return err
	}
	if _, err := b.start("iperf3", nsServer, cpuLoad, "iperf3", "-s", "-p", fmt.Sprint(portIperf)); err != nil {
		return err
	}
	_, err := b.exec(ctx, 15*time.Second, nsClient, "", b.self, "waitport",
		addr(vDirect, portHTTP), addr(vDirect, portGRPC), addr(vDirect, portClose),
		addr(vDirect, portEcho), addr(vDirect, portIperf))
	return err
}

// installCapture runs `skiff init` in the client namespace (as root, once: the rules
// outlive the proxy's restarts), and puts HAProxy behind the same kind of capture for
// the rows that price it (see capturedHAProxy).
func (b *bench) installCapture(ctx context.Context) error {
	// Its log (which names the iptables command) is on stderr, so not through b.exec.
	ictx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	full := nsArgv(nsClient, "", b.skiff, "init", "--config", filepath.Join(b.state, "skiff.yaml"))
	out, err := exec.CommandContext(ictx, full[0], full[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("skiff init: %w: %s", err, strings.TrimSpace(string(out)))
	}
	// The rule goes in with the iptables command skiff chose (nft or legacy), ahead of
	// skiff's own jump, so that the two never meet in one table.
	ipt := ""
	for _, line := range strings.Split(string(out), "\n") {
		var l struct {
			Command string `json:"command"`
		}
		if jsonUnmarshal(line, &l) == nil && l.Command != "" {
			ipt = l.Command
		}
	}
	if ipt == "" {
		return fmt.Errorf("skiff init did not say which iptables command it used: %s", out)
	}
	if err := sh("ip", "netns", "exec", nsClient, ipt, "-t", "nat", "-I", "OUTPUT", "1",
		"-d", ipHAProxyCaptured+"/32", "-p", "tcp", "--dport", fmt.Sprint(portHTTP),
		"-j", "REDIRECT", "--to-ports", fmt.Sprint(offHAProxy+portHTTP)); err != nil {
		return err
	}
	tuneConntrack()
	return nil
}

// capturedHAProxy is HAProxy's HTTP/1.1 frontend reached the way skiff is: the client
// dials an outside address and an iptables REDIRECT in the client namespace takes the
// connection to the proxy. That rewrite costs the client's side a NAT and a route
// lookup per packet, which a client dialing a proxy on loopback does not pay; scenario
// 2 measures HAProxy this way too, to price the capture apart from the proxy.
var capturedHAProxy = fmt.Sprintf("%s:%d", ipHAProxyCaptured, portHTTP)

// startProxy (re)starts one proxy on the proxy CPU and waits until it serves.
func (b *bench) startProxy(ctx context.Context, v string) error {
	if old := b.proxies[v]; old != nil {
		old.stop(7 * time.Second)
	}
	delete(b.proxies, v)
	var p *proc
	var err error
	switch v {
	case vSkiff:
		// As the proxy user, which the capture rules exempt, with nothing else changed.
		p, err = b.start("skiff", nsClient, cpuProxy, "setpriv", "--reuid=1337", "--regid=1337", "--clear-groups",
			b.skiff, "run", "--config", filepath.Join(b.state, "skiff.yaml"))
	case vHAProxy:
		p, err = b.start("haproxy", nsClient, cpuProxy, "haproxy", "-db", "-f", filepath.Join(b.state, "haproxy.cfg"))
	case vNginx:
		p, err = b.start("nginx", nsClient, cpuProxy, "nginx", "-e", filepath.Join(b.state, "nginx-error.log"),
			"-c", filepath.Join(b.state, "nginx.conf"))
	default:
		return nil
	}
	if err != nil {
		return err
	}
	b.proxies[v] = p
	deadline := time.Now().Add(10 * time.Second)
	for {
		var err error
		if v == vSkiff {
			_, err = b.exec(ctx, 2*time.Second, nsClient, "", "curl", "-sf", "-o", "/dev/null", "http://127.0.0.1:15000/ready")
		} else {
			_, err = b.exec(ctx, 3*time.Second, nsClient, "", b.self, "waitport", "-timeout", "1s", addr(v, portHTTP), addr(v, portEcho))
		}
		if err == nil {
			return nil
		}
		if !p.alive() {
			return fmt.Errorf("%s exited: %s", v, p.tail())
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return fmt.Errorf("%s not ready: %v", v, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// proxyPid returns the pid of a running proxy, restarting it first if it died.
func (b *bench) proxyPid(ctx context.Context, v string) (int, error) {
	p := b.proxies[v]
	if p == nil || !p.alive() {
		if p != nil {
			warnf("%s had exited (%s); restarting it", v, p.tail())
		}
		if err := b.startProxy(ctx, v); err != nil {
			return 0, err
		}
		p = b.proxies[v]
	}
	return p.pid(), nil
}
