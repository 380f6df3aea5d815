//go:build linux

package e2e

import (
	"fmt"
	"math"
	"net/netip"
	"syscall"
	"testing"
	"time"
)

// TestLoopRefused connects straight to skiff's own listeners from inside app: nothing
// redirected those connections, so relaying them would connect the proxy to itself.
// Each must be closed at once and counted as a loop, never relayed.
func TestLoopRefused(t *testing.T) {
	need(t)
	t.Parallel()
	tp := newTopo(t)
	tp.srv.startServer(t, "echo", portEcho)
	sc := initSkiff(t, tp.app, testConfig)
	sc.run(t)

	before := sc.metrics(t)
	cases := []struct {
		dst netip.AddrPort
		dir string
	}{
		{netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), outboundPort), "outbound"},
		{netip.AddrPortFrom(netip.MustParseAddr("::1"), outboundPort), "outbound"},
		{netip.AddrPortFrom(tp.appV4, outboundPort), "outbound"},
		{netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), inboundPort), "inbound"},
	}
	for _, c := range cases {
		r := probe(t, tp.app, "-addr", c.dst.String(), "-send", "hello\n", "-wait", "3s")
		// Closed (reset, or a FIN if the close raced the client's bytes), and quickly:
		// a timeout would mean the connection went somewhere, e.g. round and round.
		if r.Outcome != "reset" && r.Outcome != "eof" {
			t.Errorf("connection straight to %s (%s listener): outcome %q (%s), want it closed by skiff (reset or eof)",
				c.dst, c.dir, r.Outcome, r.Error)
		}
	}
	after := sc.metrics(t)
	for dir, want := range map[string]float64{"outbound": 3, "inbound": 1} {
		if d := delta(before, after, mRefused, "direction", dir, "reason", "loop"); d != want {
			t.Errorf(`%s{direction=%q,reason="loop"} moved by %v, want %v`, mRefused, dir, d, want)
		}
	}
	if d := delta(before, after, mOpened); d != 0 {
		t.Errorf("%s moved by %v: a connection to the proxy itself was relayed", mOpened, d)
	}
	// And the proxy is none the worse for it.
	dst := hostPort(tp.srvV4, portEcho)
	echo(t, tp.app, dst, 64<<10)
	after2 := sc.waitMetrics(t, 5*time.Second, closedMoved(after, "outbound", dst, 1))
	checkRelayed(t, after, after2, "outbound", dst, 64<<10, 64<<10)
}

// TestResetPropagation: a server that accepts and then resets (SO_LINGER 0) must look
// the same through skiff as without it: the client gets ECONNRESET, not a clean EOF
// that would pass for a complete answer. And a server that closes before a silent client
// said anything must be seen to close, not leave the client waiting.
func TestResetPropagation(t *testing.T) {
	need(t)
	t.Parallel()
	tp := newTopo(t)
	tp.srv.startServer(t, "reset", portReset)
	tp.srv.startServer(t, "reset", portClose, "-fin")
	rst, fin := hostPort(tp.srvV4, portReset), hostPort(tp.srvV4, portClose)
	cases := []struct {
		name, dst, want string
		args            []string
	}{
		// The client sends a request; the server reads it and resets.
		{"client_speaks_first", rst, "reset", []string{"-send", "GET-ish request\n"}},
		// The client waits for the server (a server-first protocol); the server resets.
		{"client_silent", rst, "reset", []string{}},
		// The client waits for the server; the server closes (FIN) without a word.
		{"client_silent_server_closes", fin, "eof", []string{}},
	}
	probeCase := func(t *testing.T, dst string, args []string) probeResult {
		return probe(t, tp.app, append([]string{"-addr", dst, "-wait", "5s"}, args...)...)
	}
	// Without skiff first: this is the behaviour to keep, and it proves the servers do
	// what the cases say.
	for _, c := range cases {
		if r := probeCase(t, c.dst, c.args); r.Outcome != c.want {
			t.Fatalf("%s without skiff: outcome %q (%s), want %s: the server or the harness is broken", c.name, r.Outcome, r.Error, c.want)
		}
	}
	sc := initSkiff(t, tp.app, testConfig)
	sc.run(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := probeCase(t, c.dst, c.args)
			if r.Outcome != c.want {
				t.Errorf("through skiff: outcome %q after %.0f ms (%s), want %s as without skiff", r.Outcome, r.MS, r.Error, c.want)
			}
		})
	}
	// Proof that skiff was in the path of those connections (the outcomes alone would
	// be the same without it): with skiff stopped and its rules in place, they fail.
	if code := sc.stop(t); code != 0 {
		t.Errorf("skiff run exited %d after SIGTERM, want 0", code)
	}
	for _, c := range cases {
		if r := probeCase(t, c.dst, c.args); r.Outcome != "refused" {
			t.Errorf("%s with skiff stopped: outcome %q, want refused: the connection was not captured", c.name, r.Outcome)
		}
	}
}

// TestSIGTERMDrain: on SIGTERM skiff stops accepting, lets a transfer in flight finish
// intact, cuts what is still open when drain_timeout passes, and exits 0 by then.
func TestSIGTERMDrain(t *testing.T) {
	need(t)
	t.Parallel()
	const drain = 3 * time.Second
	tp := newTopo(t)
	tp.srv.startServer(t, "sink", portSink)
	tp.srv.startServer(t, "echo", portEcho)
	sc := initSkiff(t, tp.app, testConfig+fmt.Sprintf("proxy:\n  drain_timeout: %v\n", drain))
	sc.run(t)
	sink := hostPort(tp.srvV4, portSink)

	// An idle connection that will never finish by itself: it must be cut at the deadline.
	held := tp.app.start(t, "probe -hold", appBin, "probe", "-addr", hostPort(tp.srvV4, portEcho), "-send", "held\n", "-hold", "-wait", "60s")
	held.waitLine(t, 10*time.Second, func(m map[string]any) bool { return m["event"] == "established" })

	// A slow upload: 3 MiB at 1.5 MiB/s, about 2s, most of it after the SIGTERM.
	const n = 3 << 20
	slow := tp.app.start(t, "send (slow)", appBin, "send", "-addr", sink, "-bytes", fmt.Sprint(n),
		"-rate", fmt.Sprint(3<<19), "-progress", fmt.Sprint(256<<10))
	slow.waitLine(t, 10*time.Second, func(m map[string]any) bool { return m["event"] == "started" })

	sigAt := time.Now()
	if err := sc.proc.signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}

	// Not ready any more, and new connections are refused while the upload goes on.
	refused := false
	for i := 0; i < 40 && !refused; i++ {
		r := probe(t, tp.app, "-addr", sink, "-wait", "500ms")
		refused = r.Outcome == "refused"
		if !refused {
			time.Sleep(25 * time.Millisecond)
		}
	}
	stillAccepting := time.Since(sigAt)
	if !refused {
		t.Errorf("%v after SIGTERM skiff still accepted new connections", stillAccepting)
	}
	code, _, _ := tp.app.exec(t, 5*time.Second, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2", adminURL+"/ready")
	if string(code) == "200" {
		t.Errorf("/ready answered 200 while draining, want 503 (or no answer)")
	}

	var r transferResult
	slow.result(t, 30*time.Second, &r)
	doneAt := time.Since(sigAt)
	if !r.OK || r.RemoteBytes != n || r.RemoteSHA256 != r.SHA256 {
		t.Errorf("the upload in flight at SIGTERM did not complete intact: %+v", r)
	}
	if doneAt >= drain {
		t.Errorf("the upload finished %v after SIGTERM, not before drain_timeout (%v): the test proves nothing", doneAt, drain)
	}

	exit := sc.proc.wait(t, drain+10*time.Second)
	exitAt := time.Since(sigAt)
	t.Logf("SIGTERM: refused new connections after %v, upload done after %v, skiff exited %d after %v (drain_timeout %v)",
		stillAccepting.Round(time.Millisecond), doneAt.Round(time.Millisecond), exit, exitAt.Round(time.Millisecond), drain)
	if exit != 0 {
		t.Errorf("skiff exited %d after SIGTERM, want 0", exit)
	}
	// It waited for the held connection until the deadline, and not much longer.
	if exitAt < drain-250*time.Millisecond || exitAt > drain+1500*time.Millisecond {
		t.Errorf("skiff exited %v after SIGTERM, want about drain_timeout (%v) with an idle connection open", exitAt, drain)
	}
	var h probeResult
	held.result(t, 10*time.Second, &h)
	if h.Outcome != "reset" && h.Outcome != "eof" {
		t.Errorf("the idle connection open at SIGTERM: outcome %q (%s), want it closed at the drain deadline", h.Outcome, h.Error)
	}
}

// TestThroughput moves 64 MiB directly and then through skiff, in the same namespaces,
// and reports both rates. It runs alone (not parallel) so the numbers mean something,
// and asserts only that skiff is not pathologically slow: timings are noisy.
func TestThroughput(t *testing.T) {
	need(t)
	const n = 64 << 20
	tp := newTopo(t)
	tp.srv.startServer(t, "sink", portSink)
	dst := hostPort(tp.srvV4, portSink)
	best := func() float64 {
		rate := 0.0
		for range 3 {
			rate = math.Max(rate, send(t, tp.app, dst, n).MiBPerSec)
		}
		return rate
	}
	direct := best()

	sc := initSkiff(t, tp.app, "") // defaults, info logs: as deployed
	sc.run(t)
	before := sc.metrics(t)
	via := best()
	after := sc.waitMetrics(t, 5*time.Second, closedMoved(before, "outbound", dst, 3))
	if d := delta(before, after, mReceived, "direction", "outbound", "destination", dst); d != 3*n {
		t.Errorf("%s moved by %.0f, want %d: the transfers did not all go through skiff", mReceived, d, 3*n)
	}
	ratio := via / direct
	t.Logf("THROUGHPUT direct=%.0f MiB/s skiff=%.0f MiB/s ratio=%.2f (64 MiB, best of 3, sha256 at both ends)", direct, via, ratio)
	if ratio <= 0.05 {
		t.Errorf("through skiff %.0f MiB/s, direct %.0f MiB/s: ratio %.3f, want > 0.05", via, direct, ratio)
	}
}
