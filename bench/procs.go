package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The harness's own network namespaces. They are not called plain "client" and "server"
// so that cleaning up after an interrupted run can never remove a namespace that belongs
// to someone else on the same machine (a demo or an integration test).
const (
	nsClient = "skb-client"
	nsServer = "skb-server"
	vethC    = "skb-c0" // in nsClient
	vethS    = "skb-s0" // in nsServer

	ipClient   = "10.166.0.1"
	ipCaptured = "10.166.0.2" // the backend as the app sees it: skiff captures it
	ipDirect   = "10.166.0.3" // the same backend, excluded from capture: direct, HAProxy and nginx use it
	// ipHAProxyCaptured is an address no host has: a REDIRECT takes what is dialed to
	// it to HAProxy (capturedHAProxy).
	ipHAProxyCaptured = "10.166.0.4"
	subnetBits        = "24"
)

// The CPUs things are pinned to (taskset): load generators and the backend share one, the
// proxy under test has the other to itself. BENCH_CPU_LOAD and BENCH_CPU_PROXY override.
var (
	cpuLoad  = envOr("BENCH_CPU_LOAD", "0")
	cpuProxy = envOr("BENCH_CPU_PROXY", "1")
)

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// proc is a long-running process started in a namespace. The ip netns exec, taskset and
// setpriv wrappers all exec, so cmd.Process.Pid is the program's own pid, which is what
// /proc is read for.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	log  string
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM and, after grace, SIGKILL, and waits for the process to end.
func (p *proc) stop(grace time.Duration) {
	if p == nil || !p.alive() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// tail returns the last lines of the process's log, for error messages.
func (p *proc) tail() string {
	b, _ := os.ReadFile(p.log)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	return strings.Join(lines, " | ")
}

// nsArgv wraps argv to run in ns, pinned to cpus when cpus is set.
func nsArgv(ns, cpus string, argv ...string) []string {
	full := []string{"ip", "netns", "exec", ns}
	if cpus != "" {
		full = append(full, "taskset", "-c", cpus)
	}
	return append(full, argv...)
}

// start starts a long-running process in ns with its output in state/<name>.log.
// Each gets its own process group: a Ctrl-C reaches the harness, which stops them in
// order, rather than every process at once.
func (b *bench) start(name, ns, cpus string, argv ...string) (*proc, error) {
	full := nsArgv(ns, cpus, argv...)
	cmd := exec.Command(full[0], full[1:]...)
	logPath := filepath.Join(b.state, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{}), log: logPath}
	go func() { _ = cmd.Wait(); _ = f.Close(); close(p.done) }()
	b.procs = append(b.procs, p)
	return p, nil
}

// exec runs a short command in ns (pinned to cpus) and returns its stdout. It is killed
// when ctx ends or after timeout.
func (b *bench) exec(ctx context.Context, timeout time.Duration, ns, cpus string, argv ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	full := argv
	if ns != "" {
		full = nsArgv(ns, cpus, argv...)
	}
	cmd := exec.CommandContext(ctx, full[0], full[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > 400 {
			msg = msg[len(msg)-400:]
		}
		if ctx.Err() == context.DeadlineExceeded {
			err = fmt.Errorf("timed out after %v", timeout)
		}
		return out, fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, msg)
	}
	return out, nil
}

// sh runs a host command (ip, sysctl...) and fails with its output.
func sh(argv ...string) error {
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// setupNet makes the two namespaces and the veth pair between them. The pair is created
// directly inside the namespaces, so nothing appears in the host's own namespace.
func setupNet() error {
	cmds := [][]string{
		{"ip", "netns", "add", nsClient},
		{"ip", "netns", "add", nsServer},
		{"ip", "-n", nsClient, "link", "add", vethC, "type", "veth", "peer", "name", vethS, "netns", nsServer},
		{"ip", "-n", nsClient, "addr", "add", ipClient + "/" + subnetBits, "dev", vethC},
		{"ip", "-n", nsServer, "addr", "add", ipCaptured + "/" + subnetBits, "dev", vethS},
		{"ip", "-n", nsServer, "addr", "add", ipDirect + "/" + subnetBits, "dev", vethS},
		{"ip", "-n", nsClient, "link", "set", "lo", "up"},
		{"ip", "-n", nsServer, "link", "set", "lo", "up"},
		{"ip", "-n", nsClient, "link", "set", vethC, "up"},
		{"ip", "-n", nsServer, "link", "set", vethS, "up"},
	}
	for _, c := range cmds {
		if err := sh(c...); err != nil {
			return err
		}
	}
	// Per-namespace settings only: the host's own stack is left as it is. IPv6 is off so
	// that the rules, listeners and addresses are IPv4 only and nothing waits for DAD.
	for _, ns := range []string{nsClient, nsServer} {
		for _, kv := range []string{
			"net.ipv6.conf.all.disable_ipv6=1",
			"net.ipv6.conf.default.disable_ipv6=1",
			"net.ipv4.ip_local_port_range=1024 65000",
			"net.ipv4.tcp_tw_reuse=1",
			"net.core.somaxconn=65535",
			"net.ipv4.tcp_max_syn_backlog=65535",
		} {
			if err := sh("ip", "netns", "exec", ns, "sysctl", "-q", "-w", kv); err != nil {
				return err
			}
		}
	}
	return nil
}

// tuneConntrack shortens conntrack's TIME_WAIT in the client namespace (only there: the
// setting is per namespace) once skiff's nat rules have made conntrack track it. The
// connections-per-second scenario opens ~10^5 connections; with the default 120 s each
// would hold a slot of the machine-wide table, which other namespaces share.
func tuneConntrack() {
	_ = sh("ip", "netns", "exec", nsClient, "sysctl", "-q", "-w", "net.netfilter.nf_conntrack_tcp_timeout_time_wait=2")
}

// cleanupNamespaces ends every process still inside the harness's namespaces (they can
// only be processes this harness started, in this run or an interrupted earlier one)
// and deletes the namespaces.
func cleanupNamespaces() {
	for _, ns := range []string{nsClient, nsServer} {
		if !nsExists(ns) {
			continue
		}
		for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
			pids := nsPids(ns)
			if len(pids) == 0 {
				break
			}
			for _, pid := range pids {
				_ = syscall.Kill(pid, sig)
			}
			for i := 0; i < 30 && len(nsPids(ns)) > 0; i++ {
				time.Sleep(100 * time.Millisecond)
			}
		}
		_ = sh("ip", "netns", "del", ns)
	}
}

func nsExists(ns string) bool {
	_, err := os.Stat(filepath.Join("/run/netns", ns))
	return err == nil
}

func nsPids(ns string) []int {
	out, err := exec.Command("ip", "netns", "pids", ns).Output()
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
			pids = append(pids, pid)
		}
	}
	return pids
}

func cmdCleanup([]string) error {
	cleanupNamespaces()
	return nil
}

// cpuTicks is a process's user+system time in clock ticks (USER_HZ, 100 on Linux).
func cpuTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; fields after its ')' are fixed.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("bad /proc stat")
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, errors.New("short /proc stat")
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return ut + st, nil
}

const userHZ = 100

// rssKiB is VmRSS from /proc/<pid>/status.
func rssKiB(pid int) (float64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			n, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return n, err
		}
	}
	return 0, errors.New("no VmRSS")
}

func fdCount(pid int) (int, error) {
	d, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(d), err
}

// readLine reads one line from r, giving up after timeout.
func readLine(r io.Reader, timeout time.Duration) (string, error) {
	type res struct {
		s   string
		err error
	}
	c := make(chan res, 1)
	go func() {
		s, err := bufio.NewReader(r).ReadString('\n')
		c <- res{s, err}
	}()
	select {
	case x := <-c:
		return x.s, x.err
	case <-time.After(timeout):
		return "", fmt.Errorf("no answer in %v", timeout)
	}
}

// fdLimit is the soft "Max open files" of a process, from /proc/<pid>/limits.
func fdLimit(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		return "?"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "Max open files"); ok {
			if f := strings.Fields(rest); len(f) > 0 {
				return f[0]
			}
		}
	}
	return "?"
}

// cpuSample is a reading of the whole machine's CPU time and of the harness's own (its
// own process, the children it has reaped, and the long-running ones still alive), in
// seconds. Two readings give how busy the rest of the machine was in between: other
// engineers' builds and tests on a shared box show up there, not in the harness's numbers.
type cpuSample struct {
	at      time.Time
	machine float64 // user+nice+system+steal of all CPUs; irq/softirq left out, as they are on both sides or neither
	ours    float64
}

func (b *bench) sampleCPU() cpuSample {
	s := cpuSample{at: time.Now()}
	if data, err := os.ReadFile("/proc/stat"); err == nil {
		line, _, _ := strings.Cut(string(data), "\n")
		f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
		if len(f) > 8 && f[0] == "cpu" {
			for _, i := range []int{1, 2, 3, 8} {
				v, _ := strconv.ParseFloat(f[i], 64)
				s.machine += v / userHZ
			}
		}
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		s.ours += tv(ru.Utime) + tv(ru.Stime)
	}
	if syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru) == nil {
		s.ours += tv(ru.Utime) + tv(ru.Stime)
	}
	for _, p := range b.procs {
		if p.alive() {
			if t, err := cpuTicks(p.pid()); err == nil {
				s.ours += float64(t) / userHZ
			}
		}
	}
	return s
}

// otherVCPU is the CPU the rest of the machine used between two samples, in vCPUs.
func otherVCPU(a, b cpuSample) float64 {
	wall := b.at.Sub(a.at).Seconds()
	if wall <= 0 {
		return 0
	}
	return max(0, ((b.machine-a.machine)-(b.ours-a.ours))/wall)
}

// tcpCounters reads the TcpExt counters of a namespace (/proc/net/netstat as seen from
// inside it), e.g. TCPSynRetrans and PAWSTimewait.
func (b *bench) tcpCounters(ctx context.Context, ns string) map[string]int64 {
	out, err := b.exec(ctx, 5*time.Second, ns, "", "cat", "/proc/net/netstat")
	if err != nil {
		return nil
	}
	m := map[string]int64{}
	lines := strings.Split(string(out), "\n")
	for i := 0; i+1 < len(lines); i += 2 {
		keys, vals := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(keys) != len(vals) || len(keys) == 0 || keys[0] != "TcpExt:" {
			continue
		}
		for j := 1; j < len(keys); j++ {
			v, _ := strconv.ParseInt(vals[j], 10, 64)
			m[keys[j]] = v
		}
	}
	return m
}

// synRetransNote says how many connects had to retransmit their SYN between two readings
// of tcpCounters, and how many of those a TIME_WAIT socket rejected (PAWS): a client
// reusing a port whose previous connection the proxy closed first.
func synRetransNote(a, b map[string]int64) string {
	syn := b["TCPSynRetrans"] - a["TCPSynRetrans"]
	if a == nil || b == nil || syn <= 0 {
		return ""
	}
	return fmt.Sprintf("%d SYNs retransmitted (%d after a PAWS reject by a TIME_WAIT socket: the client reused a port whose last connection the proxy had closed first)",
		syn, b["PAWSTimewait"]-a["PAWSTimewait"])
}
