//go:build linux

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
)

// TestL7 proves that skiff, beside the workload in app, handles each connection at the
// layer its first bytes show (issue "Know what each connection speaks"): HTTP/1.1, h2c,
// gRPC and WebSocket are proxied as requests — the backend sees a request id it was not
// sent, and the request metrics name each protocol — while TLS the app speaks itself is
// relayed untouched, and an ambiguously framed request never reaches the backend.
func TestL7(t *testing.T) {
	need(t)
	t.Parallel()
	tp := newTopo(t)
	tp.srv.startServer(t, "headers", portHeaders)
	tp.srv.startServer(t, "grpc", portGRPC)
	tp.srv.startServer(t, "ws", portWS)
	_, tlsLine := tp.srv.startServerLine(t, "tls-echo", portAppTLS, "-sni", "api.e2e.test")
	sc := initSkiff(t, tp.app, testConfig)
	sc.run(t)
	v4 := tp.srvV4
	hdrDst := hostPort(v4, portHeaders)

	t.Run("proxied_at_l7", func(t *testing.T) {
		before := sc.metrics(t)

		// HTTP/1.1 and h2c from curl: the backend must see an x-request-id that curl did
		// not send, and otherwise exactly what curl sent.
		var h1, h2, own headerEcho
		curlJSON(t, tp.app, &h1, "http://"+hdrDst+"/l7/h1", "--http1.1")
		curlJSON(t, tp.app, &h2, "http://"+hdrDst+"/l7/h2", "--http2-prior-knowledge")
		curlJSON(t, tp.app, &own, "http://"+hdrDst+"/l7/own-id", "--http1.1", "-H", "X-Request-Id: app-chose-this")
		ids := map[string]bool{}
		for _, c := range []struct {
			name  string
			e     headerEcho
			proto string
		}{{"HTTP/1.1", h1, "HTTP/1.1"}, {"h2c", h2, "HTTP/2.0"}} {
			if c.e.Proto != c.proto || c.e.Host != hdrDst {
				t.Errorf("%s: the backend got the request over %s for host %q, want %s for %q as curl sent it", c.name, c.e.Proto, c.e.Host, c.proto, hdrDst)
			}
			id := c.e.Headers["X-Request-Id"]
			if len(id) != 1 || id[0] == "" {
				t.Errorf("%s: the backend saw X-Request-Id %q, want one id added by skiff: the request was relayed, not proxied", c.name, id)
				continue
			}
			ids[id[0]] = true
			var keys []string
			for k := range c.e.Headers {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			// curl sends Host (the authority), User-Agent and Accept; skiff adds the id and
			// nothing else (no X-Forwarded-*, no Via, no Accept-Encoding).
			if want := []string{"Accept", "User-Agent", "X-Request-Id"}; !slices.Equal(keys, want) {
				t.Errorf("%s: the backend saw headers %v, want %v: skiff changed the request", c.name, c.e.Headers, want)
			}
			t.Logf("%s: backend saw X-Request-Id %s", c.name, id[0])
		}
		if len(ids) == 1 {
			t.Errorf("two requests carried the same X-Request-Id %v", ids)
		}
		if got := own.Headers["X-Request-Id"]; !slices.Equal(got, []string{"app-chose-this"}) {
			t.Errorf("an X-Request-Id the app sent reached the backend as %q, want it kept as sent", got)
		}

		// gRPC (unary and server streaming) and a WebSocket session, with the suite's clients.
		var g grpcResult
		tp.app.client(t, time.Minute, &g, "grpc-client", "-addr", hostPort(v4, portGRPC))
		if !g.OK || g.StreamMsgs != 5 {
			t.Fatalf("gRPC through skiff: %+v", g)
		}
		var w wsResult
		tp.app.client(t, time.Minute, &w, "ws-client", "-url", "ws://"+hostPort(v4, portWS)+"/echo")
		if !w.OK || w.Messages != 4 {
			t.Fatalf("WebSocket through skiff: %+v", w)
		}

		wsLabels := []string{"direction", "outbound", "destination", hostPort(v4, portWS), "request_protocol", "websocket"}
		// A WebSocket request is recorded when the upgraded connection ends.
		after := sc.waitMetrics(t, 5*time.Second, func(m metrics) bool { return delta(before, m, mRequests, wsLabels...) >= 1 })
		for _, c := range []struct {
			dst, proto, code, grpc string
			n                      float64
		}{
			{hdrDst, "http", "200", "", 2},
			{hdrDst, "http2", "200", "", 1},
			{hostPort(v4, portGRPC), "grpc", "200", "0", 2},
			{hostPort(v4, portWS), "websocket", "101", "", 1},
		} {
			l := []string{"direction", "outbound", "destination", c.dst, "request_protocol", c.proto, "response_code", c.code, "grpc_response_status", c.grpc}
			if d := delta(before, after, mRequests, l...); d != c.n {
				t.Errorf("%s{destination=%q,request_protocol=%q,response_code=%q,grpc_response_status=%q} moved by %v, want %v",
					mRequests, c.dst, c.proto, c.code, c.grpc, d, c.n)
			}
			if d := delta(before, after, mDurationCount, l...); d != c.n {
				t.Errorf("%s{request_protocol=%q,response_code=%q} moved by %v, want %v", mDurationCount, c.proto, c.code, d, c.n)
			}
		}
		// And every request of the subtest is one of those: nothing else was counted.
		if d := delta(before, after, mRequests, "direction", "outbound"); d != 6 {
			t.Errorf("%s{direction=outbound} moved by %v, want 6: %v", mRequests, d, seriesDeltas(before, after, mRequests))
		}
		// Connections: curl ×2 and the WebSocket client over HTTP/1; curl and grpc-go over h2c.
		for proto, n := range map[string]float64{"http1": 3, "http2": 2, "tls": 0, "tcp": 0} {
			if d := delta(before, after, mDetected, "direction", "outbound", "protocol", proto); d != n {
				t.Errorf("%s{direction=outbound,protocol=%q} moved by %v, want %v", mDetected, proto, d, n)
			}
		}
		// None of them went to the opaque relay.
		if d := delta(before, after, mOpened, "direction", "outbound"); d != 0 {
			t.Errorf("%s moved by %v: an HTTP-family connection was relayed as opaque TCP", mOpened, d)
		}
		if d := delta(before, after, mRequestBytesSum, "destination", hostPort(v4, portGRPC), "request_protocol", "grpc"); d < 100<<10 {
			t.Errorf("%s{request_protocol=grpc} moved by %v, want at least the 100 KiB unary request body", mRequestBytesSum, d)
		}
	})

	t.Run("websocket", func(t *testing.T) {
		before := sc.metrics(t)
		var r wsCheckResult
		tp.app.client(t, time.Minute, &r, "ws-check", "-url", "ws://"+hostPort(v4, portWS)+"/echo", "-big", fmt.Sprint(4<<20), "-pings", "5")
		if !r.OK {
			t.Fatalf("WebSocket through skiff: %s (%+v)", r.Error, r)
		}
		if r.Messages != 5 || r.BigBytes != 4<<20 || r.Pongs != 5 || !r.Closed {
			t.Errorf("WebSocket through skiff: %d messages (want 5: text, UTF-8 text, binary, 4 MiB binary, text), large %d bytes (want %d), %d pongs (want 5), close handshake %v",
				r.Messages, r.BigBytes, 4<<20, r.Pongs, r.Closed)
		}
		t.Logf("WebSocket through skiff: %d messages, %d bytes echoed, %d pings answered (slowest %.2f ms), closed cleanly", r.Messages, r.Bytes, r.Pongs, r.PingMaxMS)
		l := []string{"direction", "outbound", "destination", hostPort(v4, portWS), "request_protocol", "websocket", "response_code", "101"}
		after := sc.waitMetrics(t, 5*time.Second, func(m metrics) bool { return delta(before, m, mRequests, l...) >= 1 })
		if d := delta(before, after, mRequests, l...); d != 1 {
			t.Errorf("%s{request_protocol=websocket,response_code=101} moved by %v, want 1: %v", mRequests, d, seriesDeltas(before, after, mRequests))
		}
		if d := delta(before, after, mDetected, "direction", "outbound", "protocol", "http1"); d != 1 {
			t.Errorf("%s{protocol=http1} moved by %v, want 1", mDetected, d)
		}
	})

	t.Run("smuggling", func(t *testing.T) {
		before := sc.metrics(t)
		const clte = "POST /smuggle/cl-te HTTP/1.1\r\nHost: api\r\nContent-Length: 42\r\nTransfer-Encoding: chunked\r\n\r\n" +
			"0\r\n\r\nGET /smuggle/inner-cl-te HTTP/1.1\r\nHost: api\r\n\r\n"
		const tecl = "POST /smuggle/te-cl HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n" +
			"0\r\n\r\nGET /smuggle/inner-te-cl HTTP/1.1\r\nHost: api\r\n\r\n"
		const pipelined = "GET /smuggle/ok-first HTTP/1.1\r\nHost: api\r\n\r\n" +
			"POST /smuggle/pipelined HTTP/1.1\r\nHost: api\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n" +
			"0\r\n\r\nGET /smuggle/inner-pipelined HTTP/1.1\r\nHost: api\r\n\r\n"
		status := regexp.MustCompile(`(?m)^HTTP/1\.1 (\d{3}) `)
		for _, c := range []struct {
			name, send string
			want       []string
		}{
			{"CL.TE", clte, []string{"400"}},
			{"TE.CL", tecl, []string{"400"}},
			{"pipelined_after_a_good_request", pipelined, []string{"200", "400"}},
		} {
			r := probe(t, tp.app, "-addr", hdrDst, "-send", c.send, "-hold", "-wait", "5s")
			var got []string
			for _, m := range status.FindAllStringSubmatch(r.Data, -1) {
				got = append(got, m[1])
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("%s: answered with statuses %v, want %v:\n%s", c.name, got, c.want, r.Data)
			}
			// After a 400 for ambiguous framing the connection must end: what follows
			// the head cannot be framed safely.
			if r.Outcome != "eof" && r.Outcome != "reset" {
				t.Errorf("%s: after the 400 the connection ended with %q (%s), want it closed", c.name, r.Outcome, r.Error)
			}
		}
		after := sc.metrics(t)
		for code, n := range map[string]float64{"400": 3, "200": 1} {
			if d := delta(before, after, mRequests, "destination", hdrDst, "request_protocol", "http", "response_code", code); d != n {
				t.Errorf("%s{request_protocol=http,response_code=%s} moved by %v, want %v", mRequests, code, d, n)
			}
		}
		// The backend, asked directly from srv: it saw the good request and none of the
		// smuggling ones, neither the outer request nor the one hidden in its body.
		var seen seenPaths
		curlJSON(t, tp.srv, &seen, fmt.Sprintf("http://127.0.0.1:%d/seen", portHeaders))
		var smuggled []string
		okFirst := false
		for _, p := range seen.Paths {
			switch {
			case p == "/smuggle/ok-first":
				okFirst = true
			case strings.HasPrefix(p, "/smuggle/"):
				smuggled = append(smuggled, p)
			}
		}
		if len(smuggled) > 0 {
			t.Errorf("the backend received %v: an ambiguously framed request (or its body) got through", smuggled)
		}
		if !okFirst {
			t.Errorf("the backend never saw /smuggle/ok-first (saw %v): the check proves nothing", seen.Paths)
		}
	})

	t.Run("app_tls", func(t *testing.T) {
		fp, _ := tlsLine["cert_sha256"].(string)
		certPEM, _ := tlsLine["cert_pem"].(string)
		if fp == "" || certPEM == "" {
			t.Fatalf("tls-echo's listening line has no certificate: %v", tlsLine)
		}
		ca := filepath.Join(t.TempDir(), "api.e2e.test.pem")
		if err := os.WriteFile(ca, []byte(certPEM), 0o644); err != nil {
			t.Fatal(err)
		}
		tlsDst := hostPort(v4, portAppTLS)
		const n = 1<<20 + 17
		before := sc.metrics(t)
		var r tlsResult
		tp.app.client(t, time.Minute, &r, "tls-client", "-addr", tlsDst, "-sni", "api.e2e.test", "-ca", ca, "-bytes", fmt.Sprint(n))
		if !r.OK {
			t.Fatalf("TLS through skiff: %s (%+v)", r.Error, r)
		}
		if !r.Verified || r.CertSHA256 != fp {
			t.Errorf("TLS through skiff: the client saw certificate sha256 %s (verified %v), the server's is %s: the app's TLS was not end to end",
				r.CertSHA256, r.Verified, fp)
		}
		if r.ALPN != "h2" {
			t.Errorf("TLS through skiff: ALPN %q, want h2 as the server chose", r.ALPN)
		}
		if r.RemoteBytes != n || r.RemoteSHA256 != r.SHA256 {
			t.Errorf("TLS echo through skiff: sent %d bytes sha256 %s, got back %d sha256 %s", n, r.SHA256, r.RemoteBytes, r.RemoteSHA256)
		}
		after := sc.waitMetrics(t, 5*time.Second, closedMoved(before, "outbound", tlsDst, 1))
		if d := delta(before, after, mDetected, "direction", "outbound", "protocol", "tls"); d != 1 {
			t.Errorf("%s{direction=outbound,protocol=tls} moved by %v, want 1", mDetected, d)
		}
		if d := delta(before, after, mOpened, "direction", "outbound", "destination", tlsDst); d != 1 {
			t.Errorf("%s{destination=%q} moved by %v, want 1: the TLS connection was not relayed", mOpened, tlsDst, d)
		}
		// Every byte of the echo, and the handshake, went through the relay.
		if d := delta(before, after, mReceived, "destination", tlsDst); d < n {
			t.Errorf("%s{destination=%q} moved by %v, want more than the %d bytes echoed", mReceived, tlsDst, d, n)
		}
		if d := delta(before, after, mRequests, "destination", tlsDst); d != 0 {
			t.Errorf("%s{destination=%q} moved by %v: TLS was proxied as HTTP", mRequests, tlsDst, d)
		}
		t.Logf("app TLS through skiff: %s, ALPN %s, certificate sha256 %s (the server's), %d bytes echoed intact", r.Version, r.ALPN, r.CertSHA256, n)

		// The server takes only its own name: the SNI reached it as the app sent it.
		var bad tlsResult
		tp.app.client(t, time.Minute, &bad, "tls-client", "-addr", tlsDst, "-sni", "other.e2e.test", "-bytes", "16")
		if bad.OK || !strings.Contains(bad.Error, "handshake") {
			t.Errorf("TLS with SNI other.e2e.test through skiff: want the server to refuse the handshake, got ok=%v %q", bad.OK, bad.Error)
		}
	})
}
