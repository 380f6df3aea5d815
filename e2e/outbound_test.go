//go:build linux

package e2e

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

// startPeers runs every testapp server in ns.
func startPeers(t *testing.T, ns *netNS) {
	t.Helper()
	for kind, port := range map[string]uint16{
		"http": portHTTP, "ws": portWS, "grpc": portGRPC, "echo": portEcho,
		"sink": portSink, "banner": portBanner,
	} {
		ns.startServer(t, kind, port)
	}
}

// TestOutbound runs skiff beside the workload in app, as a sidecar does, and every kind
// of client in app against servers in srv: each connection must be captured (the metrics
// say so, and with skiff stopped it fails) and relayed intact.
func TestOutbound(t *testing.T) {
	need(t)
	t.Parallel()
	tp := newTopo(t)
	startPeers(t, tp.srv)
	sc := initSkiff(t, tp.app, testConfig)
	checkSaves(t, tp.app, true, nftSaves...) // the default backend here: nft
	sc.run(t)
	v4, v6 := tp.srvV4, tp.srvV6

	t.Run("http", func(t *testing.T) {
		before := sc.metrics(t)
		checkHTTP(t, tp.app, v4)
		e := curlEcho(t, tp.app, "http://"+hostPort(v6, portHTTP)+"/v6", "-g", "--http1.1")
		if e.Method != "GET" || e.Path != "/v6" {
			t.Errorf("GET over IPv6: server saw %+v", e)
		}
		after := sc.metrics(t)
		for _, c := range []struct {
			dst   netip.Addr
			proto string
			n     float64
		}{{v4, "http", 2}, {v4, "http2", 2}, {v6, "http", 1}} {
			d := delta(before, after, mRequests, "direction", "outbound", "destination", hostPort(c.dst, portHTTP),
				"request_protocol", c.proto, "response_code", "200")
			if d != c.n {
				t.Errorf("%s{direction=outbound,destination=%s,request_protocol=%s,response_code=200} moved by %v, want %v: not proxied by skiff",
					mRequests, hostPort(c.dst, portHTTP), c.proto, d, c.n)
			}
		}
	})

	t.Run("grpc", func(t *testing.T) {
		before := sc.metrics(t)
		var r grpcResult
		tp.app.client(t, time.Minute, &r, "grpc-client", "-addr", hostPort(v4, portGRPC))
		if !r.OK || r.StreamMsgs != 5 {
			t.Fatalf("gRPC through skiff: %+v", r)
		}
		after := sc.metrics(t)
		if d := delta(before, after, mRequests, "direction", "outbound", "destination", hostPort(v4, portGRPC),
			"request_protocol", "grpc", "grpc_response_status", "0"); d != 2 {
			t.Errorf("%s{request_protocol=grpc,grpc_response_status=0} moved by %v, want 2 (unary + server-streaming)", mRequests, d)
		}
	})

	t.Run("websocket", func(t *testing.T) {
		before := sc.metrics(t)
		var r wsResult
		tp.app.client(t, time.Minute, &r, "ws-client", "-url", "ws://"+hostPort(v4, portWS)+"/echo")
		if !r.OK || r.Messages != 4 {
			t.Fatalf("WebSocket through skiff: %+v", r)
		}
		// The request is counted when the upgraded connection has ended.
		l := []string{"direction", "outbound", "destination", hostPort(v4, portWS), "request_protocol", "websocket"}
		after := sc.waitMetrics(t, 5*time.Second, func(m metrics) bool { return delta(before, m, mRequests, l...) >= 1 })
		if d := delta(before, after, mRequests, l...); d != 1 {
			t.Errorf("%s{request_protocol=websocket} moved by %v, want 1", mRequests, d)
		}
	})

	// Raw TCP: an upload of several MiB to the sink, which answers only once the client's
	// half-close reached it; then the byte counters must match to the byte.
	for _, c := range []struct {
		name string
		dst  netip.Addr
	}{{"tcp_ipv4_halfclose", v4}, {"tcp_ipv6_halfclose", v6}} {
		t.Run(c.name, func(t *testing.T) {
			const n = 8<<20 + 3
			dst := hostPort(c.dst, portSink)
			before := sc.metrics(t)
			r := send(t, tp.app, dst, n)
			after := sc.waitMetrics(t, 5*time.Second, closedMoved(before, "outbound", dst, 1))
			checkRelayed(t, before, after, "outbound", dst, n, sinkReplyLen(n, r.SHA256))
		})
	}

	for _, c := range []struct {
		name string
		dst  netip.Addr
	}{{"echo_ipv4", v4}, {"echo_ipv6", v6}} {
		t.Run(c.name, func(t *testing.T) {
			const n = 1 << 20
			dst := hostPort(c.dst, portEcho)
			before := sc.metrics(t)
			echo(t, tp.app, dst, n)
			after := sc.waitMetrics(t, 5*time.Second, closedMoved(before, "outbound", dst, 1))
			checkRelayed(t, before, after, "outbound", dst, n, n)
		})
	}

	t.Run("server_first_banner", func(t *testing.T) {
		dst := hostPort(v4, portBanner)
		before := sc.metrics(t)
		var r bannerResult
		tp.app.client(t, 30*time.Second, &r, "banner-client", "-addr", dst)
		t.Logf("BANNER through skiff arrived %.1f ms after connect (sniff.server_first_wait is 20ms)", r.BannerMS)
		if !r.OK || r.Banner != greeting || r.Echo != "EHLO skiff\r\n" {
			t.Fatalf("server-first exchange through skiff: %+v", r)
		}
		// Loose: far above server_first_wait, far below sniff.timeout (5s) and the 10s some
		// proxies wait for a silent client. Catches a proxy that waits for the client.
		if r.BannerMS > 2000 {
			t.Errorf("the greeting took %.0f ms to arrive: skiff waited for the silent client", r.BannerMS)
		}
		after := sc.waitMetrics(t, 5*time.Second, closedMoved(before, "outbound", dst, 1))
		checkRelayed(t, before, after, "outbound", dst, int64(len("EHLO skiff\r\n")), int64(len(greeting)+len("EHLO skiff\r\n")))
	})

	// Proof of capture from the other side: the rules stay, the proxy goes, and the very
	// same connections fail, because they were going to the proxy.
	t.Run("stopped_skiff_refuses", func(t *testing.T) {
		if code := sc.stop(t); code != 0 {
			t.Errorf("skiff run exited %d after SIGTERM, want 0", code)
		}
		checkSaves(t, tp.app, true, nftSaves...)
		sendRefused(t, tp.app, hostPort(v4, portSink))
		sendRefused(t, tp.app, hostPort(v6, portSink))
		_, errOut, err := tp.app.exec(t, 30*time.Second, "curl", "-sS", "--max-time", "10", httpURL(v4, "/"))
		if err == nil || !strings.Contains(string(errOut), "Failed to connect") {
			t.Errorf("curl with skiff stopped: want a failed connection, got err=%v stderr=%q", err, errOut)
		}
	})

	t.Run("remove_restores_direct", func(t *testing.T) {
		tp.app.mustExec(t, 30*time.Second, skiffBin, "init", "--remove", "--config", sc.cfg)
		checkSaves(t, tp.app, false, allSaves...)
		send(t, tp.app, hostPort(v4, portSink), 1<<20)
		send(t, tp.app, hostPort(v6, portSink), 1<<20)
		e := curlEcho(t, tp.app, httpURL(v4, "/direct"), "--http1.1")
		if e.Path != "/direct" {
			t.Errorf("direct GET: server saw %+v", e)
		}
		// Idempotent: removing again is fine and changes nothing.
		tp.app.mustExec(t, 30*time.Second, skiffBin, "init", "--remove", "--config", sc.cfg)
		checkSaves(t, tp.app, false, allSaves...)
	})
}

// TestInbound runs skiff in srv, capturing what arrives there, with a plain client in
// app: the same transfers and requests work, counted as inbound.
func TestInbound(t *testing.T) {
	need(t)
	t.Parallel()
	tp := newTopo(t)
	startPeers(t, tp.srv)
	sc := initSkiff(t, tp.srv, testConfig)
	sc.run(t)

	for _, c := range []struct {
		name string
		dst  netip.Addr
	}{{"tcp_ipv4_halfclose", tp.srvV4}, {"tcp_ipv6_halfclose", tp.srvV6}} {
		t.Run(c.name, func(t *testing.T) {
			const n = 8<<20 + 5
			dst := hostPort(c.dst, portSink)
			before := sc.metrics(t)
			r := send(t, tp.app, dst, n)
			after := sc.waitMetrics(t, 5*time.Second, closedMoved(before, "inbound", dst, 1))
			checkRelayed(t, before, after, "inbound", dst, n, sinkReplyLen(n, r.SHA256))
		})
	}

	t.Run("echo_ipv4", func(t *testing.T) {
		const n = 1 << 20
		dst := hostPort(tp.srvV4, portEcho)
		before := sc.metrics(t)
		echo(t, tp.app, dst, n)
		after := sc.waitMetrics(t, 5*time.Second, closedMoved(before, "inbound", dst, 1))
		checkRelayed(t, before, after, "inbound", dst, n, n)
	})

	t.Run("http", func(t *testing.T) {
		before := sc.metrics(t)
		checkHTTP(t, tp.app, tp.srvV4)
		after := sc.metrics(t)
		for _, proto := range []string{"http", "http2"} {
			d := delta(before, after, mRequests, "direction", "inbound", "destination", hostPort(tp.srvV4, portHTTP),
				"request_protocol", proto, "response_code", "200")
			if d != 2 {
				t.Errorf("%s{direction=inbound,request_protocol=%s,response_code=200} moved by %v, want 2", mRequests, proto, d)
			}
		}
	})

	t.Run("stopped_skiff_refuses", func(t *testing.T) {
		if code := sc.stop(t); code != 0 {
			t.Errorf("skiff run exited %d after SIGTERM, want 0", code)
		}
		sendRefused(t, tp.app, hostPort(tp.srvV4, portSink))
		sendRefused(t, tp.app, hostPort(tp.srvV6, portSink))
	})
}

// TestLegacyBackend installs the rules with iptables-legacy and relays through them.
func TestLegacyBackend(t *testing.T) {
	need(t)
	t.Parallel()
	tp := newTopo(t)
	tp.srv.startServer(t, "echo", portEcho)
	sc := initSkiff(t, tp.app, testConfig+"capture:\n  backend: legacy\n")
	checkSaves(t, tp.app, true, legacySaves...)
	checkSaves(t, tp.app, false, nftSaves...)
	sc.run(t)
	for _, a := range []netip.Addr{tp.srvV4, tp.srvV6} {
		dst := hostPort(a, portEcho)
		before := sc.metrics(t)
		echo(t, tp.app, dst, 256<<10)
		after := sc.waitMetrics(t, 5*time.Second, closedMoved(before, "outbound", dst, 1))
		checkRelayed(t, before, after, "outbound", dst, 256<<10, 256<<10)
	}
	if code := sc.stop(t); code != 0 {
		t.Errorf("skiff run exited %d after SIGTERM, want 0", code)
	}
	tp.app.mustExec(t, 30*time.Second, skiffBin, "init", "--remove", "--config", sc.cfg)
	checkSaves(t, tp.app, false, allSaves...)
	echo(t, tp.app, hostPort(tp.srvV4, portEcho), 1024)
}
