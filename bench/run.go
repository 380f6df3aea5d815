package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// settings are the knobs of one `make bench`; BENCH_* environment variables set them.
type settings struct {
	Runs      int      `json:"runs"`
	Quick     bool     `json:"quick"`
	Load      Duration `json:"load_seconds"`   // scenarios 1, 2, 3a
	GRPC      Duration `json:"grpc_seconds"`   // scenario 3b
	Short     Duration `json:"short_seconds"`  // scenarios 4 and 7
	IperfSecs int      `json:"iperf_seconds"`  // scenario 6
	WSEchoes  int      `json:"ws_echoes"`      // scenario 5
	TTFBReqs  int      `json:"ttfb_requests"`  // scenario 9, per target
	Idle      []int    `json:"idle_conns"`     // scenario 8
	Only      []string `json:"only,omitempty"` // scenario groups to run (BENCH_ONLY), all when empty
	Pprof     bool     `json:"pprof"`          // BENCH_PPROF: CPU profiles of skiff under scenarios 1, 2 and 3a
}

// Duration marshals as seconds.
type Duration time.Duration

func (d Duration) MarshalJSON() ([]byte, error) {
	return []byte(strconv.FormatFloat(time.Duration(d).Seconds(), 'f', -1, 64)), nil
}

func (d Duration) D() time.Duration { return time.Duration(d) }

func loadSettings() (settings, error) {
	// The full pass: about 4 minutes a run, so three runs stay under 15 minutes.
	s := settings{Runs: 3, Load: Duration(10 * time.Second), GRPC: Duration(5 * time.Second), Short: Duration(3 * time.Second),
		IperfSecs: 5, WSEchoes: 10000, TTFBReqs: 1000, Idle: []int{1000, 9000}}
	if os.Getenv("BENCH_QUICK") == "1" {
		s = settings{Runs: 1, Quick: true, Load: Duration(3 * time.Second), GRPC: Duration(2 * time.Second), Short: Duration(2 * time.Second),
			IperfSecs: 2, WSEchoes: 2000, TTFBReqs: 300, Idle: []int{1000, 9000}}
	}
	if v := os.Getenv("BENCH_RUNS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return s, fmt.Errorf("BENCH_RUNS=%q: want a positive number", v)
		}
		s.Runs = n
	}
	if v := os.Getenv("BENCH_ONLY"); v != "" {
		s.Only = strings.Split(v, ",")
	}
	s.Pprof = os.Getenv("BENCH_PPROF") == "1"
	return s, nil
}

// bench is one invocation of the harness.
type bench struct {
	set     settings
	repo    string // the skiff checkout
	state   string // configs, logs, scratch files of this invocation
	results string // bench/results
	stamp   string // results file name stem
	self    string // this binary
	skiff   string // the skiff binary under test
	tools   string // fortio and ghz

	procs   []*proc
	proxies map[string]*proc

	// fortio's latency percentiles per run and variant, for the plot.
	curves     []map[string]map[float64]float64
	pprof      map[string]string // profile file name → its pprof -top text, when BENCH_PPROF=1
	pprofFiles []string
}

func (b *bench) tool(name string) string { return filepath.Join(b.tools, name) }

func (b *bench) wants(group string) bool {
	if len(b.set.Only) == 0 {
		return true
	}
	return slices.Contains(b.set.Only, group) || slices.Contains(b.set.Only, strings.TrimRight(group, "ab"))
}

func logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, a...))
}

func warnf(format string, a ...any) { logf("WARN "+format, a...) }

func cmdRun(args []string) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	repo := fs.String("repo", ".", "the skiff checkout")
	skiff := fs.String("skiff", "", "the skiff binary under test")
	tools := fs.String("tools", "", "directory holding fortio and ghz")
	state := fs.String("state", "/tmp/skiffbench", "scratch directory (configs, logs)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("must run as root (network namespaces, iptables)")
	}
	set, err := loadSettings()
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	b := &bench{set: set, repo: *repo, state: *state, self: self, skiff: *skiff, tools: *tools,
		results: filepath.Join(*repo, "bench", "results"), stamp: time.Now().Format("20060102-150405"), pprof: map[string]string{},
		proxies: map[string]*proc{}}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()

	// Leftovers of an interrupted earlier run first, then a clean slate.
	cleanupNamespaces()
	_ = os.RemoveAll(b.state)
	// The proxy user reads its config from here.
	if err := os.MkdirAll(b.state, 0o755); err != nil {
		return err
	}
	if err := os.MkdirAll(b.results, 0o755); err != nil {
		return err
	}
	defer b.teardown()
	raiseNofile()
	// The proxy user (1337) runs skiff: give it a copy it can reach whatever the
	// permissions on the checkout.
	if err := copyFile(b.skiff, filepath.Join(b.state, "skiff"), 0o755); err != nil {
		return fmt.Errorf("copying skiff: %w", err)
	}
	b.skiff = filepath.Join(b.state, "skiff")

	start := time.Now()
	logf("setting up namespaces %s and %s (%s/%s)", nsClient, nsServer, ipClient, subnetBits)
	if err := setupNet(); err != nil {
		return err
	}
	if err := b.writeConfigs(); err != nil {
		return err
	}
	if err := b.startBackend(ctx); err != nil {
		return fmt.Errorf("backend: %w", err)
	}
	if err := b.installCapture(ctx); err != nil {
		return fmt.Errorf("skiff init: %w", err)
	}

	var runs [][]row
	for run := 1; run <= set.Runs; run++ {
		logf("── run %d of %d ──", run, set.Runs)
		rows, err := b.oneRun(ctx, run)
		if err != nil {
			return err
		}
		runs = append(runs, rows)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if os.Getenv("BENCH_KEEP") == "1" {
		// For poking at the setup by hand: everything stays up until Ctrl-C.
		logf("BENCH_KEEP=1: namespaces, backend and proxies stay up; Ctrl-C to clean up (logs in %s)", b.state)
		<-ctx.Done()
		return nil
	}
	b.teardown()
	b.pprofText()
	rep := b.report(runs, time.Since(start))
	return b.writeReport(rep)
}

// oneRun measures every scenario once, each with every variant, with fresh proxies.
func (b *bench) oneRun(ctx context.Context, run int) ([]row, error) {
	for _, v := range []string{vSkiff, vHAProxy, vNginx} {
		if err := b.startProxy(ctx, v); err != nil {
			return nil, err
		}
	}
	// Let the fresh skiff settle before its memory at rest is read.
	time.Sleep(time.Second)
	rest := b.restRow(ctx)
	b.curves = append(b.curves, map[string]map[float64]float64{})

	var rows []row
	type scenario struct {
		group string
		name  string
		f     func(context.Context, int) []row
	}
	for _, sc := range []scenario{
		{"1", "HTTP/1.1 keep-alive, 1000 rps, 16 conns (fortio)", b.scenarioFixedRate},
		{"2", "HTTP/1.1 max throughput, 50 conns (wrk)", b.scenarioMaxRate},
		{"3a", "h2c max throughput, 8 conns x 32 streams (h2load)", b.scenarioH2},
		{"3b", "gRPC unary, 1000 rps (ghz)", b.scenarioGRPCUnary},
		{"4", "gRPC bidi streaming, 4 streams (Go client)", b.scenarioGRPCStream},
		{"5", "WebSocket echo, sequential (Go client)", b.scenarioWS},
		{"6", "TCP bulk (iperf3; nginx not run)", b.scenarioIperf},
		{"7", "new TCP connections/s, 16 workers (Go client)", b.scenarioConnRate},
		// 9 before 8: 8 restarts the proxies and leaves thousands of sockets closing.
		{"9", "time to first byte, new connection (Go client)", b.scenarioTTFB},
		{"8", "idle proxied connections", b.scenarioIdle},
	} {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if !b.wants(sc.group) {
			continue
		}
		logf("[run %d] %s %s", run, sc.group, sc.name)
		t := time.Now()
		c0 := b.sampleCPU()
		rs := sc.f(ctx, run)
		other := otherVCPU(c0, b.sampleCPU())
		if sc.group == "8" {
			rs = append([]row{rest}, rs...)
		}
		for i := range rs {
			rs[i].Run = run
			rs[i].OtherVCPU = other
			rs[i].Scenario = sc.group + " " + sc.name
			if rs[i].Group == "" {
				rs[i].Group = sc.group
			}
		}
		rows = append(rows, rs...)
		logf("[run %d] %s done in %.1fs (other processes on the machine used %.2f vCPU meanwhile)", run, sc.group, time.Since(t).Seconds(), other)
		if run == 1 && b.set.Pprof {
			switch sc.group {
			case "1":
				b.profileSkiff(ctx, "fortio")
			case "2":
				b.profileSkiff(ctx, "wrk")
			case "3a":
				b.profileSkiff(ctx, "h2load")
			}
		}
	}
	return rows, nil
}

// teardown stops what the harness started, in reverse order, and removes the namespaces.
func (b *bench) teardown() {
	for i := len(b.procs) - 1; i >= 0; i-- {
		b.procs[i].stop(3 * time.Second)
	}
	b.procs = nil
	cleanupNamespaces()
}

// raiseNofile lifts the soft open-files limit to the hard one for every process the
// harness starts (set explicitly, so Go does not restore the old soft limit for children).
// The hard limit itself needs CAP_SYS_RESOURCE, which a container may not have.
func raiseNofile() {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return
	}
	want := uint64(1 << 20)
	if l.Max < want {
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: want, Max: want}); err == nil {
			return
		}
	}
	l.Cur = l.Max
	_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	if l.Max < 20000 {
		warnf("open files limited to %d: the 9,000-connection idle test needs about 20,000", l.Max)
	}
}

func copyFile(src, dst string, mode os.FileMode) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, data, mode)
}
