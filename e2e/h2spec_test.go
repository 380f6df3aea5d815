//go:build linux

package e2e

import (
	"bytes"
	"context"
	"encoding/xml"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// h2specTool is the pinned h2spec the Makefile installs into bin/tools.
const h2specTool = "github.com/summerwind/h2spec/cmd/h2spec@v2.2.1+incompatible"

// h2specRun is one h2spec run's outcome.
type h2specRun struct {
	tests, passed, skipped, failed int
	cases                          []h2specCase
}

type h2specCase struct {
	id     string // section and position, as h2spec numbers them: http2/8.1.2.2/1
	name   string // its description
	failed bool
	detail string // what h2spec expected and saw
}

func (r h2specRun) String() string { return fmt.Sprintf("%d/%d", r.passed, r.tests) }

// failing lists the ids of the cases that failed, with their descriptions.
func (r h2specRun) failing() []string {
	var out []string
	for _, c := range r.cases {
		if c.failed {
			out = append(out, c.id+" "+c.name)
		}
	}
	return out
}

// junitReport is the part of h2spec's JUnit report read here: a failed case has an
// <error> (or <failure>) element, a skipped one <skipped>.
type junitReport struct {
	Suites []struct {
		Package string `xml:"package,attr"`
		Cases   []struct {
			Name    string  `xml:"classname,attr"`
			Error   *string `xml:"error"`
			Failure *string `xml:"failure"`
			Skipped *string `xml:"skipped"`
		} `xml:"testcase"`
	} `xml:"testsuite"`
}

var h2specSummary = regexp.MustCompile(`(\d+) tests, (\d+) passed, (\d+) skipped, (\d+) failed`)

// runH2Spec runs h2spec (plaintext, prior knowledge) from ns against addr:port and reads
// its summary line and JUnit report. It does not touch t, so runs may go in parallel.
func runH2Spec(ns *netNS, bin, host string, port uint16, dir string) (h2specRun, string, error) {
	var run h2specRun
	report := filepath.Join(dir, fmt.Sprintf("h2spec-%d.xml", port))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out, errOut bytes.Buffer
	cmd := nsCommand(ctx, ns, bin, "-h", host, "-p", fmt.Sprint(port), "-o", "2", "-j", report)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	log := out.String() + errOut.String()
	m := h2specSummary.FindStringSubmatch(out.String())
	if m == nil {
		// h2spec exits 1 when a case fails; only a missing summary is an error here.
		return run, log, fmt.Errorf("h2spec -h %s -p %d: no summary line (%v)", host, port, err)
	}
	run.tests, _ = strconv.Atoi(m[1])
	run.passed, _ = strconv.Atoi(m[2])
	run.skipped, _ = strconv.Atoi(m[3])
	run.failed, _ = strconv.Atoi(m[4])
	b, err := os.ReadFile(report)
	if err != nil {
		return run, log, fmt.Errorf("h2spec's JUnit report: %w", err)
	}
	var rep junitReport
	if err := xml.Unmarshal(b, &rep); err != nil {
		return run, log, fmt.Errorf("h2spec's JUnit report %s: %w", report, err)
	}
	for _, s := range rep.Suites {
		for i, c := range s.Cases {
			hc := h2specCase{id: fmt.Sprintf("%s/%d", s.Package, i+1), name: c.Name}
			for _, e := range []*string{c.Error, c.Failure} {
				if e != nil {
					hc.failed, hc.detail = true, strings.TrimSpace(*e)
				}
			}
			run.cases = append(run.cases, hc)
		}
	}
	var failed int
	for _, c := range run.cases {
		if c.failed {
			failed++
		}
	}
	if len(run.cases) != run.tests || failed != run.failed {
		return run, log, fmt.Errorf("h2spec's JUnit report has %d cases, %d failed; its summary says %d tests, %d failed", len(run.cases), failed, run.tests, run.failed)
	}
	return run, log, nil
}

// TestH2Spec runs the h2spec conformance suite from app against golang.org/x/net/http2's
// own server (h2c, prior knowledge) in srv twice, at the same time: directly, on a port
// excluded from capture, and through the outbound sidecar. skiff puts its own HTTP/2
// server and client between the two; it must pass every case the plain server passes.
func TestH2Spec(t *testing.T) {
	need(t)
	bin, err := exec.LookPath("h2spec")
	if err != nil {
		t.Fatalf("h2spec is not on PATH: `make deps-test` installs the pinned %s into bin/tools, which make test puts on PATH "+
			"(by hand: GOBIN=$PWD/bin/tools go install %s, then PATH=$PWD/bin/tools:$PATH)", h2specTool, h2specTool)
	}
	tp := newTopo(t)
	tp.srv.startServer(t, "h2c-xnet", portH2XNet)
	tp.srv.startServer(t, "h2c-xnet", portH2XNetDirect)
	sc := initSkiff(t, tp.app, fmt.Sprintf("log:\n  level: info\ncapture:\n  outbound:\n    exclude_ports: [%d]\n", portH2XNetDirect))
	sc.run(t)
	via, direct := hostPort(tp.srvV4, portH2XNet), hostPort(tp.srvV4, portH2XNetDirect)

	before := sc.metrics(t)
	dir := t.TempDir()
	var (
		wg    sync.WaitGroup
		runs  [2]h2specRun
		logs  [2]string
		errs  [2]error
		ports = [2]uint16{portH2XNetDirect, portH2XNet}
		start = time.Now()
	)
	for i := range 2 {
		wg.Go(func() { runs[i], logs[i], errs[i] = runH2Spec(tp.app, bin, tp.srvV4.String(), ports[i], dir) })
	}
	wg.Wait()
	took := time.Since(start)
	for i, err := range errs {
		if err != nil {
			t.Fatalf("%v\noutput:\n%s", err, tail(logs[i], 4000))
		}
	}
	d, s := runs[0], runs[1]
	t.Logf("H2SPEC direct=%v skiff=%v (x/net/http2 server, h2c prior knowledge; %s; both runs took %v)", d, s, h2specTool, took.Round(time.Millisecond))
	t.Logf("h2spec direct failed: %s", orNone(d.failing()))
	t.Logf("h2spec skiff failed: %s", orNone(s.failing()))

	after := sc.metrics(t)
	if n := delta(before, after, mRequests, "direction", "outbound", "destination", via); n == 0 {
		t.Errorf("%s{destination=%q} did not move: h2spec's requests did not go through skiff", mRequests, via)
	}
	if n := delta(before, after, mRequests, "destination", direct) + delta(before, after, mOpened, "destination", direct); n != 0 {
		t.Errorf("skiff counted %v requests or connections to %s, which is excluded from capture: the direct run was not direct", n, direct)
	}

	if d.tests == 0 || s.tests != d.tests {
		t.Fatalf("h2spec ran %d cases directly and %d through skiff, want the same, non-zero", d.tests, s.tests)
	}
	if s.passed < d.passed {
		t.Errorf("h2spec: skiff passed %d of %d, fewer than the plain x/net/http2 server (%d)", s.passed, s.tests, d.passed)
	}
	for i, c := range s.cases {
		if i >= len(d.cases) || d.cases[i].id != c.id || d.cases[i].name != c.name {
			t.Fatalf("h2spec's case %d is %s %q through skiff but not directly: the runs are not comparable", i, c.id, c.name)
		}
		if c.failed && !d.cases[i].failed {
			t.Errorf("h2spec %s %q passes against the plain server and fails through skiff:\n%s", c.id, c.name, c.detail)
		}
	}
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return "\n\t" + strings.Join(s, "\n\t")
}
