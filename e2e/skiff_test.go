//go:build linux

package e2e

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Ports of skiff's defaults, which every test keeps.
const (
	outboundPort = 15001
	inboundPort  = 15006
	adminURL     = "http://127.0.0.1:15000"
)

// Ports the testapp servers listen on in srv.
const (
	portHTTP   = 8080
	portWS     = 8081
	portGRPC   = 9090
	portEcho   = 7000
	portSink   = 7001
	portReset  = 7002
	portClose  = 7003
	portBanner = 2525
)

// sidecar is skiff in one namespace: its rules, and its proxy process when running.
type sidecar struct {
	ns   *netNS
	cfg  string // config file path
	proc *proc
}

// testConfig is the base config of every test: the defaults, with debug logs so a
// failure's log (printed with it) says what skiff did.
const testConfig = "log:\n  level: debug\n"

// initSkiff writes cfg, runs `skiff init` in ns as root, and removes the rules when the
// test ends.
func initSkiff(t *testing.T, ns *netNS, cfg string) *sidecar {
	t.Helper()
	f, err := os.CreateTemp(binDir, "config-*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(f.Name()) })
	if _, err := f.WriteString(cfg); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(f.Name(), 0o644); err != nil { // readable by the proxy user
		t.Fatal(err)
	}
	s := &sidecar{ns: ns, cfg: f.Name()}
	s.ns.mustExec(t, 30*time.Second, skiffBin, "init", "--config", s.cfg)
	t.Cleanup(func() {
		// The namespace goes away after this anyway; removing first proves nothing here
		// (the tests that check removal do it themselves) but keeps a failed test's
		// namespace sane if it is inspected.
		_, _, _ = s.ns.exec(t, 30*time.Second, skiffBin, "init", "--remove", "--config", s.cfg)
	})
	return s
}

// run starts `skiff run` as uid/gid 1337 and waits until /ready answers 200.
func (s *sidecar) run(t *testing.T) {
	t.Helper()
	s.proc = s.ns.start(t, "skiff run", "setpriv", "--reuid", "1337", "--regid", "1337", "--clear-groups", "--",
		skiffBin, "run", "--config", s.cfg)
	t.Cleanup(func() {
		if strings.Contains(s.proc.stderr.String(), "WARNING: DATA RACE") {
			t.Errorf("skiff (built with SKIFF_E2E_RACE=1) reported a data race:\n%s", tail(s.proc.stderr.String(), 8000))
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		out, _, err := s.ns.exec(t, 5*time.Second, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2", adminURL+"/ready")
		if err == nil && string(out) == "200" {
			return
		}
		select {
		case <-s.proc.done:
			t.Fatalf("skiff run exited before it was ready (%v)\nstderr:\n%s", s.proc.err, tail(s.proc.stderr.String(), 4000))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("skiff run not ready after 15s (last /ready: %q, %v)\nstderr:\n%s", out, err, tail(s.proc.stderr.String(), 4000))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop sends SIGTERM and returns skiff's exit code.
func (s *sidecar) stop(t *testing.T) int {
	t.Helper()
	if err := s.proc.signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM to skiff: %v", err)
	}
	return s.proc.wait(t, 15*time.Second)
}

// metrics fetches /metrics the way an operator would: curl inside the namespace.
func (s *sidecar) metrics(t *testing.T) metrics {
	t.Helper()
	out := s.ns.mustExec(t, 10*time.Second, "curl", "-sS", "--fail", "--max-time", "5", adminURL+"/metrics")
	m, err := parseMetrics(string(out))
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	return m
}

// waitMetrics polls /metrics until ok holds (a relay's closing counters move just after
// its client has finished) and returns the last scrape.
func (s *sidecar) waitMetrics(t *testing.T, timeout time.Duration, ok func(metrics) bool) metrics {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		m := s.metrics(t)
		if ok(m) || time.Now().After(deadline) {
			return m
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// sample is one line of the Prometheus text format.
type sample struct {
	name   string
	labels map[string]string
	value  float64
}

type metrics []sample

var labelRe = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)

// parseMetrics reads the Prometheus text exposition format (no timestamps, which skiff
// does not write).
func parseMetrics(text string) (metrics, error) {
	var m metrics
	for _, line := range strings.Split(text, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			return nil, fmt.Errorf("line %q: no value", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("line %q: %w", line, err)
		}
		s := sample{labels: map[string]string{}, value: v}
		head := line[:i]
		if j := strings.IndexByte(head, '{'); j >= 0 {
			s.name = head[:j]
			for _, kv := range labelRe.FindAllStringSubmatch(head[j:], -1) {
				val, err := strconv.Unquote(`"` + kv[2] + `"`)
				if err != nil {
					return nil, fmt.Errorf("line %q: label %s: %w", line, kv[1], err)
				}
				s.labels[kv[1]] = val
			}
		} else {
			s.name = head
		}
		m = append(m, s)
	}
	return m, nil
}

// sum adds the samples of name whose labels include every key, value pair given.
func (m metrics) sum(name string, kv ...string) float64 {
	var total float64
next:
	for _, s := range m {
		if s.name != name {
			continue
		}
		for i := 0; i+1 < len(kv); i += 2 {
			if s.labels[kv[i]] != kv[i+1] {
				continue next
			}
		}
		total += s.value
	}
	return total
}

// delta is how much a series moved between two scrapes.
func delta(before, after metrics, name string, kv ...string) float64 {
	return after.sum(name, kv...) - before.sum(name, kv...)
}

// The TCP series skiff keeps per relayed connection.
const (
	mOpened   = "skiff_tcp_connections_opened_total"
	mClosed   = "skiff_tcp_connections_closed_total"
	mSent     = "skiff_tcp_sent_bytes_total"     // to the side that connected
	mReceived = "skiff_tcp_received_bytes_total" // from the side that connected
	mActive   = "skiff_tcp_connections_active"
	mRefused  = "skiff_tcp_connections_refused_total"
	mRequests = "skiff_requests_total"
)

// checkRelayed asserts that exactly one connection to dst went through skiff in
// direction dir between the two scrapes, carrying exactly received bytes from the
// client and sent bytes back to it, and that it is over.
func checkRelayed(t *testing.T, before, after metrics, dir, dst string, received, sent int64) {
	t.Helper()
	l := []string{"direction", dir, "destination", dst}
	if d := delta(before, after, mOpened, l...); d != 1 {
		t.Errorf("%s{direction=%q,destination=%q} moved by %v, want 1: the connection was not captured (or captured more than once)", mOpened, dir, dst, d)
	}
	if d := delta(before, after, mClosed, l...); d != 1 {
		t.Errorf("%s{direction=%q,destination=%q} moved by %v, want 1", mClosed, dir, dst, d)
	}
	if d := delta(before, after, mReceived, l...); d != float64(received) {
		t.Errorf("%s{direction=%q,destination=%q} moved by %.0f, want %d (bytes the client sent)", mReceived, dir, dst, d, received)
	}
	if d := delta(before, after, mSent, l...); d != float64(sent) {
		t.Errorf("%s{direction=%q,destination=%q} moved by %.0f, want %d (bytes the client got)", mSent, dir, dst, d, sent)
	}
	if a := after.sum(mActive, "direction", dir); a != 0 {
		t.Errorf("%s{direction=%q} = %v after the connection ended, want 0", mActive, dir, a)
	}
	other := "inbound"
	if dir == "inbound" {
		other = "outbound"
	}
	if d := delta(before, after, mOpened, "direction", other); d != 0 {
		t.Errorf("%s{direction=%q} moved by %v: the connection was counted in the wrong direction", mOpened, other, d)
	}
}

// closedMoved is a waitMetrics condition: n more connections to dst have closed.
func closedMoved(before metrics, dir, dst string, n float64) func(metrics) bool {
	return func(m metrics) bool {
		return delta(before, m, mClosed, "direction", dir, "destination", dst) >= n
	}
}
