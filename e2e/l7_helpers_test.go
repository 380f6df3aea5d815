//go:build linux

package e2e

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
)

// Ports of the L7 tests' servers in srv (beside the ports in skiff_test.go).
const (
	portHeaders       = 8084 // testapp headers: HTTP/1.1 and h2c, echoes request headers
	portHeadersDirect = 8094 // the same, excluded from capture
	portH2XNet        = 8082 // testapp h2c-xnet: golang.org/x/net/http2 ServeConn
	portH2XNetDirect  = 8092 // the same, excluded from capture
	portInterop       = 9092 // testapp interop-server
	portInteropDirect = 9093 // the same, excluded from capture
	portAppTLS        = 8443 // testapp tls-echo
	portBannerPinned  = 2526 // a banner server whose port is pinned to tcp
)

// The L7 series (telemetry/metrics.go).
const (
	mDetected        = "skiff_connections_detected_total"
	mDurationCount   = "skiff_request_duration_milliseconds_count"
	mRequestBytesSum = "skiff_request_bytes_sum"
)

// Mirrors of the L7 testapp clients' JSON.

type headerEcho struct {
	Method  string              `json:"method"`
	Path    string              `json:"path"`
	Proto   string              `json:"proto"`
	Host    string              `json:"host"`
	Headers map[string][]string `json:"headers"`
}

type seenPaths struct {
	Paths []string `json:"paths"`
}

type interopCase struct {
	Name  string  `json:"name"`
	OK    bool    `json:"ok"`
	Error string  `json:"error"`
	MS    float64 `json:"ms"`
}

type interopResult struct {
	result
	Passed int           `json:"passed"`
	Failed int           `json:"failed"`
	Cases  []interopCase `json:"cases"`
}

type wsCheckResult struct {
	result
	Messages  int     `json:"messages"`
	Bytes     int     `json:"bytes"`
	BigBytes  int     `json:"big_bytes"`
	Pongs     int     `json:"pongs"`
	PingMaxMS float64 `json:"ping_max_ms"`
	Closed    bool    `json:"closed"`
}

type tlsResult struct {
	transferResult
	CertSHA256 string `json:"cert_sha256"`
	Verified   bool   `json:"verified"`
	Version    string `json:"version"`
	ALPN       string `json:"alpn"`
	ServerName string `json:"server_name"`
}

type latencyStats struct {
	N     int     `json:"n"`
	P50   float64 `json:"p50_us"`
	P90   float64 `json:"p90_us"`
	P99   float64 `json:"p99_us"`
	Max   float64 `json:"max_us"`
	Conns int64   `json:"conns"`
}

type latencyResult struct {
	result
	A latencyStats `json:"a"`
	B latencyStats `json:"b"`
}

// startServerLine runs a testapp server and returns it with its listening line (which
// for some servers carries more than the address).
func (n *netNS) startServerLine(t *testing.T, kind string, port uint16, flags ...string) (*proc, map[string]any) {
	t.Helper()
	p := n.start(t, "testapp "+kind, append([]string{appBin, kind, "-listen", fmt.Sprintf(":%d", port)}, flags...)...)
	m := p.waitLine(t, 10*time.Second, func(m map[string]any) bool { return m["listening"] != nil })
	return p, m
}

// curlJSON runs curl in ns and decodes its answer into v.
func curlJSON(t *testing.T, ns *netNS, v any, url string, args ...string) {
	t.Helper()
	argv := append([]string{"curl", "-sS", "--fail", "--max-time", "15"}, args...)
	out := ns.mustExec(t, 30*time.Second, append(argv, url)...)
	if err := json.Unmarshal(out, v); err != nil {
		t.Fatalf("curl %s: answer %q: %v", url, out, err)
	}
}

// seriesDeltas lists, for logs, every series of name with the labels given whose value
// moved between two scrapes, as "label=value,… +delta".
func seriesDeltas(before, after metrics, name string, kv ...string) []string {
	var out []string
	for _, s := range after {
		if s.name != name {
			continue
		}
		match := true
		for i := 0; i+1 < len(kv); i += 2 {
			if s.labels[kv[i]] != kv[i+1] {
				match = false
			}
		}
		if !match {
			continue
		}
		var prev float64
		for _, b := range before {
			if b.name == s.name && sameLabels(b.labels, s.labels) {
				prev = b.value
			}
		}
		if d := s.value - prev; d != 0 {
			var ls []string
			for k, v := range s.labels {
				ls = append(ls, k+"="+v)
			}
			sort.Strings(ls)
			out = append(out, fmt.Sprintf("{%s} +%v", strings.Join(ls, ","), d))
		}
	}
	sort.Strings(out)
	return out
}

func sameLabels(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// median of the values (which it sorts).
func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	slices.Sort(v)
	return v[len(v)/2]
}
