//go:build linux

package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// What TestMain prepared, read-only once the tests run.
var (
	// skipReason, when set, skips every test (SKIFF_SKIP_PRIVILEGED=1).
	skipReason string
	// envErr, when set, fails every test: the machine cannot run the suite.
	envErr error
	// binDir holds the built binaries and the config files; uid 1337 can read it.
	binDir   string
	skiffBin string
	appBin   string
)

// requiredCommands are the programs the suite runs, and why.
var requiredCommands = []struct{ name, why string }{
	{"ip", "network namespaces and veth pairs (iproute2)"},
	{"iptables-nft", "skiff init's default backend"},
	{"ip6tables-nft", "skiff init's IPv6 rules"},
	{"iptables-nft-save", "checking the rules"},
	{"ip6tables-nft-save", "checking the rules"},
	{"iptables-legacy", "the legacy backend test"},
	{"ip6tables-legacy", "the legacy backend test"},
	{"iptables-legacy-save", "checking the rules"},
	{"ip6tables-legacy-save", "checking the rules"},
	{"setpriv", "running skiff as uid/gid 1337 (util-linux)"},
	{"curl", "the HTTP/1.1 and h2c client, and reading /metrics"},
}

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	if os.Getenv("SKIFF_SKIP_PRIVILEGED") == "1" {
		skipReason = "SKIFF_SKIP_PRIVILEGED=1: skipping the end-to-end tests, which need root, network namespaces and iptables"
		return m.Run()
	}
	if envErr = checkEnv(); envErr != nil {
		return m.Run() // every test fails with envErr
	}
	sweepStale()
	dir, err := os.MkdirTemp("", "skiff-e2e-bin-")
	if err != nil {
		envErr = err
		return m.Run()
	}
	defer os.RemoveAll(dir)
	// skiff runs as uid 1337: it must be able to reach its binary and its config.
	if err := os.Chmod(dir, 0o755); err != nil {
		envErr = err
		return m.Run()
	}
	binDir = dir
	skiffBin = filepath.Join(dir, "skiff")
	appBin = filepath.Join(dir, "testapp")
	envErr = buildBinaries()
	return m.Run()
}

// need is every test's first line: it skips or fails the test when the suite cannot run.
func need(t *testing.T) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
	if envErr != nil {
		t.Fatalf("cannot run the end-to-end suite: %v\n(set SKIFF_SKIP_PRIVILEGED=1 to skip it explicitly)", envErr)
	}
}

// checkEnv says, all at once, what this machine lacks for the suite.
func checkEnv() error {
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, fmt.Sprintf("root: running as uid %d, and network namespaces and iptables need root (CAP_NET_ADMIN, CAP_SYS_ADMIN)", os.Geteuid()))
	}
	for _, c := range requiredCommands {
		if _, err := exec.LookPath(c.name); err != nil {
			missing = append(missing, fmt.Sprintf("command %s, for %s: not in PATH", c.name, c.why))
		}
	}
	if _, err := goCommand(); err != nil {
		missing = append(missing, err.Error())
	}
	if len(missing) > 0 {
		return errors.New("missing:\n  - " + strings.Join(missing, "\n  - "))
	}
	return probeKernel()
}

// probeKernel makes a throwaway namespace and asks each iptables backend for its nat
// table there, so a kernel without netns, nf_tables or x_tables NAT is named up front
// rather than surfacing as a confusing failure in the middle of a test.
func probeKernel() error {
	name := fmt.Sprintf("skiff-e2e-%d-probe", os.Getpid())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "ip", "netns", "add", name).CombinedOutput(); err != nil {
		return fmt.Errorf("cannot create a network namespace (ip netns add): %v: %s", err, bytes.TrimSpace(out))
	}
	defer func() { _ = exec.Command("ip", "netns", "del", name).Run() }()
	for _, cmd := range []string{"iptables-nft", "ip6tables-nft", "iptables-legacy", "ip6tables-legacy"} {
		out, err := exec.CommandContext(ctx, "ip", "netns", "exec", name, cmd, "-w", "5", "-t", "nat", "-S").CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s cannot use the nat table in a network namespace (is the kernel's NAT support loaded?): %v: %s", cmd, err, bytes.TrimSpace(out))
		}
	}
	return nil
}

// goCommand finds the go command to build the binaries with.
func goCommand() (string, error) {
	if p, err := exec.LookPath("go"); err == nil {
		return p, nil
	}
	if root := os.Getenv("GOROOT"); root != "" {
		p := filepath.Join(root, "bin", "go")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("command go, to build skiff and the test app: not in PATH and not in $GOROOT/bin")
}

// buildBinaries builds skiff (as its docs say: static, CGO off) and the test app once
// for the whole run.
func buildBinaries() error {
	gocmd, _ := goCommand()
	root, err := filepath.Abs("..")
	if err != nil {
		return err
	}
	type build struct {
		args []string
		env  string
	}
	builds := []build{{[]string{"build", "-o", appBin, "./e2e/testapp"}, "CGO_ENABLED=0"}}
	switch {
	case os.Getenv("SKIFF_E2E_BINARY") != "":
		// A skiff built elsewhere (a release, a candidate fix), copied where uid 1337 can run it.
		b, err := os.ReadFile(os.Getenv("SKIFF_E2E_BINARY"))
		if err != nil {
			return fmt.Errorf("SKIFF_E2E_BINARY: %w", err)
		}
		if err := os.WriteFile(skiffBin, b, 0o755); err != nil {
			return err
		}
	case os.Getenv("SKIFF_E2E_RACE") == "1":
		builds = append(builds, build{[]string{"build", "-race", "-o", skiffBin, "."}, "CGO_ENABLED=1"})
	default:
		builds = append(builds, build{[]string{"build", "-o", skiffBin, "."}, "CGO_ENABLED=0"})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for _, b := range builds {
		cmd := exec.CommandContext(ctx, gocmd, b.args...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), b.env)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go %s (in %s): %v\n%s", strings.Join(b.args, " "), root, err, out)
		}
	}
	return nil
}
