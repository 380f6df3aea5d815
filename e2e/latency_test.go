//go:build linux

package e2e

import (
	"fmt"
	"testing"
	"time"
)

// TestLatency measures what the sidecar adds to a request's round trip, for the
// release note: sequential HTTP/1.1 keep-alive GETs and gRPC unary calls from app to
// srv, directly (a port excluded from capture) and through skiff, alternating request by
// request in one client so both see the same machine. It runs alone (not parallel) and
// asserts only sanity: timings on a shared machine are noisy.
func TestLatency(t *testing.T) {
	need(t)
	const n, warmup = 2000, 50
	tp := newTopo(t)
	tp.srv.startServer(t, "headers", portHeaders)
	tp.srv.startServer(t, "headers", portHeadersDirect)
	tp.srv.startServer(t, "interop-server", portInterop)
	tp.srv.startServer(t, "interop-server", portInteropDirect)
	// Defaults (info logs), as deployed, with the direct ports left alone.
	sc := initSkiff(t, tp.app, fmt.Sprintf("capture:\n  outbound:\n    exclude_ports: [%d, %d]\n", portHeadersDirect, portInteropDirect))
	sc.run(t)

	for _, c := range []struct {
		kind, direct, via, viaDst, directDst string
		labels                               []string
	}{
		{
			kind:   "http1",
			direct: "http://" + hostPort(tp.srvV4, portHeadersDirect) + "/latency", via: "http://" + hostPort(tp.srvV4, portHeaders) + "/latency",
			directDst: hostPort(tp.srvV4, portHeadersDirect), viaDst: hostPort(tp.srvV4, portHeaders),
			labels: []string{"request_protocol", "http", "response_code", "200"},
		},
		{
			kind:   "grpc",
			direct: hostPort(tp.srvV4, portInteropDirect), via: hostPort(tp.srvV4, portInterop),
			directDst: hostPort(tp.srvV4, portInteropDirect), viaDst: hostPort(tp.srvV4, portInterop),
			labels: []string{"request_protocol", "grpc", "response_code", "200", "grpc_response_status", "0"},
		},
	} {
		t.Run(c.kind, func(t *testing.T) {
			before := sc.metrics(t)
			var r latencyResult
			tp.app.client(t, 3*time.Minute, &r, "latency", "-kind", c.kind, "-a", c.direct, "-b", c.via,
				"-n", fmt.Sprint(n), "-warmup", fmt.Sprint(warmup))
			if !r.OK {
				t.Fatalf("latency %s: %s", c.kind, r.Error)
			}
			d, s := r.A, r.B
			ms := func(us float64) string { return fmt.Sprintf("%.3fms", us/1000) }
			t.Logf("LATENCY %s direct p50=%s p99=%s skiff p50=%s p99=%s added p50=%s p99=%s (n=%d each, sequential, one kept-alive connection each, alternating)",
				c.kind, ms(d.P50), ms(d.P99), ms(s.P50), ms(s.P99), ms(s.P50-d.P50), ms(s.P99-d.P99), n)
			if d.N != n || s.N != n {
				t.Errorf("measured %d direct and %d through skiff, want %d each", d.N, s.N, n)
			}
			// Keep-alive, end to end: through skiff too, the client never had to reconnect.
			if d.Conns != 1 || s.Conns != 1 {
				t.Errorf("the client dialled %d connections directly and %d through skiff, want 1 each: a connection was not kept alive", d.Conns, s.Conns)
			}
			after := sc.metrics(t)
			l := append([]string{"direction", "outbound", "destination", c.viaDst}, c.labels...)
			if got := delta(before, after, mRequests, l...); got != n+warmup {
				t.Errorf("%s%v moved by %v, want %d: not every request went through skiff", mRequests, l, got, n+warmup)
			}
			if got := delta(before, after, mRequests, "destination", c.directDst); got != 0 {
				t.Errorf("%s{destination=%q} moved by %v: the direct port went through skiff", mRequests, c.directDst, got)
			}
			if s.P50 > 50_000 {
				t.Errorf("through skiff p50 is %s: far beyond anything a local proxy should add", ms(s.P50))
			}
		})
	}
}
