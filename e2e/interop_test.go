//go:build linux

package e2e

import (
	"strings"
	"testing"
	"time"
)

// interopCases are the grpc-go interop cases run through the sidecar, and what each adds
// to skiff_requests_total by grpc_response_status when it passes ("" for a case whose
// requests end in a cancellation or a deadline, whose status depends on timing).
var interopCases = []struct {
	name   string
	status map[string]float64
}{
	{"empty_unary", map[string]float64{"0": 1}},
	{"large_unary", map[string]float64{"0": 1}},
	{"client_streaming", map[string]float64{"0": 1}},
	{"server_streaming", map[string]float64{"0": 1}},
	{"ping_pong", map[string]float64{"0": 1}},
	{"empty_stream", map[string]float64{"0": 1}},
	{"cancel_after_begin", nil},
	{"cancel_after_first_response", nil},
	{"timeout_on_sleeping_server", nil},
	{"status_code_and_message", map[string]float64{"2": 2}}, // unary and full duplex, UNKNOWN
	{"special_status_message", map[string]float64{"2": 1}},
	{"custom_metadata", map[string]float64{"0": 2}}, // unary and full duplex
	{"unimplemented_method", map[string]float64{"12": 1}},
	{"unimplemented_service", map[string]float64{"12": 1}},
}

// TestGRPCInterop runs grpc-go's interop client (google.golang.org/grpc/interop) in app
// against its interop server in srv, through the outbound sidecar, on one connection:
// every case must pass as it does without a proxy, and skiff's metrics must carry the
// status of each call, OK and not.
func TestGRPCInterop(t *testing.T) {
	need(t)
	t.Parallel()
	tp := newTopo(t)
	tp.srv.startServer(t, "interop-server", portInterop)
	sc := initSkiff(t, tp.app, testConfig)
	sc.run(t)
	addr := hostPort(tp.srvV4, portInterop)

	var names []string
	want := map[string]float64{}
	for _, c := range interopCases {
		names = append(names, c.name)
		for s, n := range c.status {
			want[s] += n
		}
	}
	before := sc.metrics(t)
	var r interopResult
	tp.app.client(t, 2*time.Minute, &r, "interop-client", "-addr", addr, "-cases", strings.Join(names, ","), "-timeout", "10s")
	if len(r.Cases) != len(names) {
		t.Fatalf("interop-client ran %d cases, want %d: %+v", len(r.Cases), len(names), r)
	}
	for _, c := range r.Cases {
		if !c.OK {
			t.Errorf("interop case %s through skiff failed after %.1f ms: %s", c.Name, c.MS, c.Error)
		} else {
			t.Logf("interop case %-28s ok (%.1f ms)", c.Name, c.MS)
		}
	}
	if !r.OK {
		t.Fatalf("interop through skiff: %d passed, %d failed", r.Passed, r.Failed)
	}

	l := []string{"direction", "outbound", "destination", addr, "request_protocol", "grpc"}
	after := sc.waitMetrics(t, 5*time.Second, func(m metrics) bool {
		for s, n := range want {
			if delta(before, m, mRequests, append(l, "grpc_response_status", s)...) < n {
				return false
			}
		}
		return true
	})
	t.Logf("skiff_requests_total for the interop run: %v", seriesDeltas(before, after, mRequests, "destination", addr))
	for s, n := range want {
		if d := delta(before, after, mRequests, append(l, "grpc_response_status", s, "response_code", "200")...); d != n {
			t.Errorf("%s{request_protocol=grpc,response_code=200,grpc_response_status=%q} moved by %v, want %v", mRequests, s, d, n)
		}
	}
	// One connection for the whole run, detected as HTTP/2.
	if d := delta(before, after, mDetected, "direction", "outbound", "protocol", "http2"); d != 1 {
		t.Errorf("%s{protocol=http2} moved by %v, want 1 (grpc-go's one connection)", mDetected, d)
	}
	if d := delta(before, after, mRequests, "destination", addr, "request_protocol", "http2"); d != 0 {
		t.Errorf("%s{request_protocol=http2} moved by %v: gRPC calls not classified as grpc", mRequests, d)
	}
}
