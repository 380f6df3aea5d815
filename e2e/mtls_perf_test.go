//go:build linux

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// Ports of the measurement, left out of capture on both sides (direct) or not.
const (
	mtlsPortIperf         = 5201
	mtlsPortIperfDirect   = 5202
	mtlsPortIperfPlain    = 5203 // through both sidecars, without mTLS
	mtlsPortHeadersDirect = 8190
	mtlsPortEchoDirect    = 7190
	mtlsPortHeadersPlain  = 8183 // through both sidecars, without mTLS
)

// TestMTLSPerf measures, for the release note, what mTLS between two sidecars costs on
// this machine: full and resumed handshakes per second at one sidecar, new connections
// per second through both, bulk TCP throughput through both as a ratio of direct
// (iperf3), and the p99 that both add to HTTP/1.1 at 1000 requests/s (fortio). It runs
// only with SKIFF_E2E_MTLS_PERF=1, alone, and asserts nothing but that each part ran:
// timings on a shared machine are noisy.
func TestMTLSPerf(t *testing.T) {
	need(t)
	if os.Getenv("SKIFF_E2E_MTLS_PERF") != "1" {
		t.Skip("set SKIFF_E2E_MTLS_PERF=1 to measure mTLS performance")
	}
	// Info logs (the defaults), as deployed.
	m := startMTLSMesh(t, mtlsMeshOpts{
		direct: []uint16{mtlsPortIperfDirect, mtlsPortHeadersDirect, mtlsPortEchoDirect},
		plain:  []uint16{mtlsPortIperfPlain, mtlsPortHeadersPlain},
	})
	srv, app, ext := m.tp.srv, m.tp.app, m.tp.ext
	srv.startServer(t, "mesh-headers", mtlsPortHeadersDirect)
	srv.startServer(t, "mesh-headers", mtlsPortHeadersPlain)
	srv.startServer(t, "echo", mtlsPortEchoDirect)

	t.Run("handshakes", func(t *testing.T) {
		for _, resume := range []bool{false, true} {
			args := []string{"mesh-dial", "-addr", hostPort(m.tp.srvE1, mtlsPortHeaders), "-cert-dir", m.extDir, "-n", "2000"}
			if resume {
				args = append(args, "-resume")
			}
			var r meshDialResult
			ext.client(t, 3*time.Minute, &r, args...)
			if !r.OK {
				t.Fatalf("mesh-dial: %+v", r)
			}
			t.Logf("HANDSHAKES resume=%v: %d in %.2fs = %.0f/s (%d resumed; sequential, one client, at srv's sidecar)", resume, r.N, r.Seconds, r.PerSec, r.Resumed)
		}
		for _, c := range []struct{ name, addr string }{
			{"direct", hostPort(m.tp.srvV4, mtlsPortEchoDirect)},
			{"two sidecars mTLS", hostPort(m.tp.srvV4, mtlsPortEcho)},
		} {
			var r meshLoadResult
			app.client(t, time.Minute, &r, "mesh-load", "-tcp", c.addr, "-duration", "5s", "-conc", "4")
			if !r.OK {
				t.Fatalf("mesh-load %s: %+v", c.name, r)
			}
			t.Logf("CONNECTIONS %s: %.0f new TCP connections/s (1 KiB echo each, 4 workers, 5s)", c.name, float64(r.TCP)/5)
		}
	})

	t.Run("throughput", func(t *testing.T) {
		if _, err := exec.LookPath("iperf3"); err != nil {
			t.Skip("no iperf3")
		}
		for _, p := range []uint16{mtlsPortIperf, mtlsPortIperfDirect, mtlsPortIperfPlain} {
			srv.start(t, fmt.Sprintf("iperf3 -s %d", p), "iperf3", "-s", "-p", fmt.Sprint(p))
		}
		time.Sleep(300 * time.Millisecond)
		rate := func(port uint16) float64 {
			var out []byte
			var err error
			for range 10 { // until the server listens
				out, _, err = app.exec(t, time.Minute, "iperf3", "-c", m.tp.srvV4.String(), "-p", fmt.Sprint(port), "-t", "5", "-J")
				if err == nil {
					break
				}
				time.Sleep(200 * time.Millisecond)
			}
			if err != nil {
				t.Fatalf("iperf3 to %d: %v: %s", port, err, out)
			}
			var r struct {
				End struct {
					SumReceived struct {
						BitsPerSecond float64 `json:"bits_per_second"`
					} `json:"sum_received"`
				} `json:"end"`
			}
			if err := json.Unmarshal(out, &r); err != nil {
				t.Fatalf("iperf3 JSON: %v", err)
			}
			return r.End.SumReceived.BitsPerSecond / 1e9
		}
		direct := rate(mtlsPortIperfDirect)
		plain := rate(mtlsPortIperfPlain)
		via := rate(mtlsPortIperf)
		t.Logf("THROUGHPUT iperf3 5s one stream: direct %.2f Gbit/s; two sidecars plaintext %.2f Gbit/s (ratio %.2f); two sidecars with mTLS %.2f Gbit/s (ratio %.2f)",
			direct, plain, plain/direct, via, via/direct)
	})

	t.Run("latency", func(t *testing.T) {
		fortio, err := filepath.Abs(filepath.Join("..", "bin", "tools", "fortio"))
		if err == nil {
			_, err = os.Stat(fortio)
		}
		if err != nil {
			t.Skip("no bin/tools/fortio")
		}
		run := func(url string) (p50, p99, qps float64) {
			out := filepath.Join(t.TempDir(), "fortio.json")
			app.mustExec(t, 2*time.Minute, fortio, "load", "-qps", "1000", "-c", "8", "-t", "10s", "-json", out, "-quiet", url)
			b, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			var r struct {
				ActualQPS         float64
				DurationHistogram struct {
					Percentiles []struct {
						Percentile float64
						Value      float64
					}
				}
				RetCodes map[string]int64
			}
			if err := json.Unmarshal(b, &r); err != nil {
				t.Fatal(err)
			}
			for _, p := range r.DurationHistogram.Percentiles {
				switch p.Percentile {
				case 50:
					p50 = p.Value * 1000
				case 99:
					p99 = p.Value * 1000
				}
			}
			if r.RetCodes["200"] == 0 || len(r.RetCodes) != 1 {
				t.Errorf("fortio %s: status codes %v", url, r.RetCodes)
			}
			return p50, p99, r.ActualQPS
		}
		d50, d99, dq := run(m.url(mtlsPortHeadersDirect, "/lat"))
		p50, p99, pq := run(m.url(mtlsPortHeadersPlain, "/lat"))
		v50, v99, vq := run(m.url(mtlsPortHeaders, "/lat"))
		t.Logf("LATENCY HTTP/1.1 fortio 1000 qps, 8 connections, 10s: direct p50=%.3fms p99=%.3fms (%.0f qps); "+
			"two sidecars plaintext p50=%.3fms p99=%.3fms (%.0f qps), added p99=%.3fms; "+
			"two sidecars with mTLS p50=%.3fms p99=%.3fms (%.0f qps), added p50=%.3fms p99=%.3fms",
			d50, d99, dq, p50, p99, pq, p99-d99, v50, v99, vq, v50-d50, v99-d99)
	})
}
