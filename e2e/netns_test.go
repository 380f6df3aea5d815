//go:build linux

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// nsPrefix starts every namespace this suite makes; the pid after it says whose it is.
const nsPrefix = "skiff-e2e-"

var nsSeq, topoSeq atomic.Int32

// netNS is a network namespace made for one test and removed after it.
type netNS struct {
	name string
}

// newNetNS makes a namespace with lo up. It is deleted when the test ends, after every
// process still running in it is killed.
func newNetNS(t *testing.T) *netNS {
	t.Helper()
	n := &netNS{name: fmt.Sprintf("%s%d-%d", nsPrefix, os.Getpid(), nsSeq.Add(1))}
	mustRun(t, "ip", "netns", "add", n.name)
	t.Cleanup(func() {
		if err := deleteNetNS(n.name); err != nil {
			t.Errorf("cleaning up: %v", err)
		}
	})
	mustRun(t, "ip", "-n", n.name, "link", "set", "lo", "up")
	return n
}

// deleteNetNS kills what still runs in the namespace (only processes this suite
// started live there) and deletes it.
func deleteNetNS(name string) error {
	for range 3 {
		out, _ := exec.Command("ip", "netns", "pids", name).Output()
		pids := strings.Fields(string(out))
		if len(pids) == 0 {
			break
		}
		for _, p := range pids {
			if pid, err := strconv.Atoi(p); err == nil && pid > 1 {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns del %s: %v: %s", name, err, bytes.TrimSpace(out))
	}
	return nil
}

// sweepStale removes the namespaces of earlier runs that were killed before their
// cleanup ran: those named skiff-e2e-<pid>-… whose pid no longer exists.
func sweepStale() {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], nsPrefix) {
			continue
		}
		pidStr, _, _ := strings.Cut(strings.TrimPrefix(f[0], nsPrefix), "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid == os.Getpid() {
			continue
		}
		if syscall.Kill(pid, 0) == nil && fileExists(fmt.Sprintf("/proc/%d/cmdline", pid)) {
			continue // that run is still going
		}
		_ = deleteNetNS(f[0])
	}
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// topo is two namespaces joined by a veth pair: app (the workload) and srv (its peer).
//
//	app  e0 10.77.N.1/24  fd00:77:N::1/64  ──veth──  e0 10.77.N.2/24  fd00:77:N::2/64  srv
type topo struct {
	app, srv     *netNS
	appV4, srvV4 netip.Addr
	appV6, srvV6 netip.Addr
}

func newTopo(t *testing.T) *topo {
	t.Helper()
	i := topoSeq.Add(1)%250 + 1
	tp := &topo{
		app:   newNetNS(t),
		srv:   newNetNS(t),
		appV4: netip.MustParseAddr(fmt.Sprintf("10.77.%d.1", i)),
		srvV4: netip.MustParseAddr(fmt.Sprintf("10.77.%d.2", i)),
		appV6: netip.MustParseAddr(fmt.Sprintf("fd00:77:%x::1", i)),
		srvV6: netip.MustParseAddr(fmt.Sprintf("fd00:77:%x::2", i)),
	}
	// Made inside the namespaces, so parallel tests never race for a name in the host's.
	mustRun(t, "ip", "-n", tp.app.name, "link", "add", "e0", "type", "veth", "peer", "name", "e0", "netns", tp.srv.name)
	for _, side := range []struct {
		ns     *netNS
		v4, v6 netip.Addr
	}{{tp.app, tp.appV4, tp.appV6}, {tp.srv, tp.srvV4, tp.srvV6}} {
		mustRun(t, "ip", "-n", side.ns.name, "addr", "add", side.v4.String()+"/24", "dev", "e0")
		// nodad: usable at once, not after duplicate address detection.
		mustRun(t, "ip", "-n", side.ns.name, "addr", "add", side.v6.String()+"/64", "dev", "e0", "nodad")
		mustRun(t, "ip", "-n", side.ns.name, "link", "set", "e0", "up")
	}
	// IPv6 on a new link is usable only once the kernel's link watcher has seen the
	// carrier (up to a second later) and addrconf has added the multicast route: until
	// then neighbour solicitations are dropped and the first IPv6 connection waits for
	// a SYN retransmission (1s). Wait for it rather than time that.
	deadline := time.Now().Add(5 * time.Second)
	for _, ns := range []*netNS{tp.app, tp.srv} {
		for {
			out, err := exec.Command("ip", "-n", ns.name, "-6", "route", "show", "table", "local", "dev", "e0").Output()
			if err == nil && strings.Contains(string(out), "multicast ff00::/8") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("IPv6 on e0 in %s not ready after 5s (no multicast route): %s", ns.name, out)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return tp
}

// hostPort joins an address and a port as a dial string ("[fd00::2]:80" for IPv6).
func hostPort(a netip.Addr, port uint16) string { return netip.AddrPortFrom(a, port).String() }

// childEnv is the environment of every child: the test's, minus proxy settings that
// would send curl or grpc-go somewhere else.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasSuffix(strings.ToLower(k), "_proxy") {
			continue
		}
		env = append(env, kv)
	}
	if os.Getenv("GORACE") == "" {
		// A race-built skiff (SKIFF_E2E_RACE=1) would otherwise sleep 1s on exit, which
		// the shutdown timing checks would see.
		env = append(env, "GORACE=atexit_sleep_ms=50")
	}
	return env
}

func nsCommand(ctx context.Context, n *netNS, argv ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.name}, argv...)...)
	cmd.Env = childEnv()
	cmd.Dir = "/"
	// Own process group, killed as a whole; SIGKILL if the test binary dies (ip netns
	// exec and the test app exec in place, so this reaches them).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 2 * time.Second
	return cmd
}

// exec runs argv in the namespace and returns its stdout, stderr and exit error.
func (n *netNS) exec(t *testing.T, timeout time.Duration, argv ...string) (stdout, stderr []byte, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := nsCommand(ctx, n, argv...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("%s: did not finish within %v (killed): %w", strings.Join(argv, " "), timeout, err)
	}
	return o.Bytes(), e.Bytes(), err
}

// mustExec runs argv in the namespace and fails the test if it fails.
func (n *netNS) mustExec(t *testing.T, timeout time.Duration, argv ...string) []byte {
	t.Helper()
	out, errOut, err := n.exec(t, timeout, argv...)
	if err != nil {
		t.Fatalf("in %s: %s: %v\nstdout: %s\nstderr: %s", n.name, strings.Join(argv, " "), err, out, errOut)
	}
	return out
}

// client runs a testapp client in the namespace and decodes its last output line (its
// result) into res.
func (n *netNS) client(t *testing.T, timeout time.Duration, res any, args ...string) {
	t.Helper()
	out := n.mustExec(t, timeout, append([]string{appBin}, args...)...)
	if err := decodeLast(out, res); err != nil {
		t.Fatalf("in %s: testapp %s: %v", n.name, strings.Join(args, " "), err)
	}
}

func decodeLast(out []byte, v any) error {
	lines := bytes.Split(bytes.TrimSpace(out), []byte("\n"))
	last := lines[len(lines)-1]
	if err := json.Unmarshal(last, v); err != nil {
		return fmt.Errorf("result line %q: %w (whole output: %q)", last, err, out)
	}
	return nil
}

func mustRun(t *testing.T, argv ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(argv, " "), err, bytes.TrimSpace(out))
	}
}

// proc is a long-running process in a namespace (a server, skiff run, a slow client).
type proc struct {
	label  string
	cmd    *exec.Cmd
	lines  chan string // stdout, line by line; closed at EOF
	stderr syncBuffer
	done   chan struct{} // closed once the process has exited
	err    error         // Wait's error, set before done is closed
}

// start runs argv in the namespace in the background. It is killed when the test ends
// if it is still running, and its stderr is logged if the test failed.
func (n *netNS) start(t *testing.T, label string, argv ...string) *proc {
	t.Helper()
	p := &proc{label: label, lines: make(chan string, 1024), done: make(chan struct{})}
	p.cmd = nsCommand(context.Background(), n, argv...)
	p.cmd.Stderr = &p.stderr
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", label, err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case p.lines <- sc.Text():
			default: // nobody reads this much: drop rather than block the child
			}
		}
		close(p.lines)
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("--- %s (in %s) stderr:\n%s", label, n.name, tail(p.stderr.String(), 8000))
		}
	})
	return p
}

// kill stops the process (its whole group) and waits for it.
func (p *proc) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
	}
}

// signal sends sig to the process itself (ip netns exec and setpriv exec in place, so
// the pid is the program's).
func (p *proc) signal(sig syscall.Signal) error { return p.cmd.Process.Signal(sig) }

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("%s did not exit within %v\nstderr:\n%s", p.label, timeout, tail(p.stderr.String(), 4000))
	}
	var ee *exec.ExitError
	switch {
	case p.err == nil:
		return 0
	case errors.As(p.err, &ee):
		return ee.ExitCode()
	}
	t.Fatalf("%s: %v", p.label, p.err)
	return -1
}

// waitLine returns the first stdout line (JSON) for which match is true.
func (p *proc) waitLine(t *testing.T, timeout time.Duration, match func(map[string]any) bool) map[string]any {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case line, ok := <-p.lines:
			if !ok {
				<-p.done
				t.Fatalf("%s exited (%v) before printing the line waited for\nstderr:\n%s", p.label, p.err, tail(p.stderr.String(), 4000))
			}
			var m map[string]any
			if json.Unmarshal([]byte(line), &m) == nil && match(m) {
				return m
			}
		case <-deadline:
			t.Fatalf("%s: no expected line within %v\nstderr:\n%s", p.label, timeout, tail(p.stderr.String(), 4000))
		}
	}
}

// result waits for the process to exit and decodes its last JSON line into v.
func (p *proc) result(t *testing.T, timeout time.Duration, v any) {
	t.Helper()
	var last string
	deadline := time.After(timeout)
	for {
		select {
		case line, ok := <-p.lines:
			if ok {
				if strings.TrimSpace(line) != "" {
					last = line
				}
				continue
			}
			<-p.done
			if err := json.Unmarshal([]byte(last), v); err != nil {
				t.Fatalf("%s: result line %q: %v (exit: %v)\nstderr:\n%s", p.label, last, err, p.err, tail(p.stderr.String(), 4000))
			}
			return
		case <-deadline:
			t.Fatalf("%s: no result within %v\nstderr:\n%s", p.label, timeout, tail(p.stderr.String(), 4000))
		}
	}
}

// startServer runs a testapp server in the namespace and waits until it listens.
func (n *netNS) startServer(t *testing.T, kind string, port uint16, flags ...string) *proc {
	t.Helper()
	p := n.start(t, "testapp "+kind, append([]string{appBin, kind, "-listen", fmt.Sprintf(":%d", port)}, flags...)...)
	p.waitLine(t, 10*time.Second, func(m map[string]any) bool { return m["listening"] != nil })
	return p
}

// syncBuffer is a bytes.Buffer safe for a writer goroutine and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}
