package intercept

// The same cases as apply_test.go, against the real iptables of both backends, each in a
// network namespace of its own so that nothing touches the host's tables: the test binary
// runs itself again under `unshare --net`, with netnsEnv telling the child which test it
// is there for.
//
// These tests need root and iptables-nft and iptables-legacy (with their ip6tables and
// -save/-restore twins). Without them they fail, saying what is missing, so that CI
// cannot pass by not running them; SKIFF_SKIP_PRIVILEGED=1 turns them into skips.

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

// netnsEnv is set in the child process to the full name of the test it runs.
const netnsEnv = "SKIFF_TEST_NETNS"

var realBackends = []Backend{{"nft", "iptables-nft"}, {"legacy", "iptables-legacy"}}

// requirePrivileged fails the test unless it can create network namespaces and drive
// both iptables backends, and skips it when SKIFF_SKIP_PRIVILEGED=1.
func requirePrivileged(t *testing.T) {
	t.Helper()
	if os.Getenv("SKIFF_SKIP_PRIVILEGED") == "1" {
		t.Skip("SKIFF_SKIP_PRIVILEGED=1: not testing against real iptables")
	}
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root (to create network namespaces and change iptables in them)")
	}
	cmds := []string{"unshare"}
	for _, b := range realBackends {
		for _, c := range []string{b.Command, b.Command6()} {
			cmds = append(cmds, c, c+"-save", c+"-restore")
		}
	}
	for _, c := range cmds {
		if _, err := exec.LookPath(c); err != nil {
			missing = append(missing, c)
		}
	}
	if len(missing) > 0 {
		t.Fatalf("testing against real iptables needs %s (set SKIFF_SKIP_PRIVILEGED=1 to skip these tests)", strings.Join(missing, ", "))
	}
}

// inNetns runs the calling test again, alone, in a new network namespace. It reports
// true in that child, where the test does its work, and false in the parent once the
// child has passed (the parent fails when the child fails or did not run the test).
func inNetns(t *testing.T) bool {
	t.Helper()
	if name, ok := os.LookupEnv(netnsEnv); ok {
		if name != t.Name() {
			t.Skipf("this process runs %s in its network namespace", name)
		}
		return true
	}
	requirePrivileged(t)
	parts := strings.Split(t.Name(), "/")
	for i, p := range parts {
		parts[i] = "^" + regexp.QuoteMeta(p) + "$"
	}
	cmd := exec.Command("unshare", "--net", "--", os.Args[0],
		"-test.run="+strings.Join(parts, "/"), "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), netnsEnv+"="+t.Name())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s in a new network namespace: %v\n%s", t.Name(), err, out)
	}
	if !strings.Contains(string(out), "--- PASS: "+t.Name()+" (") {
		t.Fatalf("%s did not run in the new network namespace:\n%s", t.Name(), out)
	}
	t.Logf("in a new network namespace:\n%s", out)
	return false
}

// ipt runs an iptables command and fails the test when it fails.
func ipt(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// natSave returns the nat table as the command's -save twin prints it.
func natSave(t *testing.T, cmd string) string {
	t.Helper()
	out, err := exec.Command(cmd+"-save", "-t", Table).Output()
	if err != nil {
		t.Fatalf("%s-save -t %s: %v", cmd, Table, err)
	}
	return string(out)
}

// saveDiff compares two iptables-save outputs, ignoring comments and counters: "" when
// they are the same, a line diff when not.
func saveDiff(want, got string) string {
	w, g := strings.Join(saveLines(want), "\n"), strings.Join(saveLines(got), "\n")
	if w == g {
		return ""
	}
	return lineDiff(w, g)
}

func TestRealApplyRemove(t *testing.T) {
	for _, b := range realBackends {
		t.Run(b.Name, func(t *testing.T) {
			for i, c := range planCases {
				// Over this case, install the next one, to check that only its rules remain.
				next := planCases[(i+1)%len(planCases)].name
				t.Run(c.name, func(t *testing.T) {
					t.Parallel()
					if !inNetns(t) {
						return
					}
					for _, fam := range families {
						t.Run(fam.String(), func(t *testing.T) { realApplyRemove(t, b, fam, c.name, next) })
					}
					if b.Name == "nft" && legacyInUse() {
						t.Errorf("the nft backend created legacy tables")
					}
				})
			}
		})
	}
}

func realApplyRemove(t *testing.T, b Backend, fam Family, name, next string) {
	cmd := b.Command
	userAddr := "192.0.2.1/32"
	if fam == IPv6 {
		cmd, userAddr = b.Command6(), "2001:db8::1/128"
	}
	// The host's own rules, which must survive everything skiff does.
	ipt(t, cmd, "-w", "-t", Table, "-N", "USER_CHAIN")
	ipt(t, cmd, "-w", "-t", Table, "-A", "USER_CHAIN", "-p", "tcp", "--dport", "9999", "-j", "RETURN")
	ipt(t, cmd, "-w", "-t", Table, "-A", "OUTPUT", "-d", userAddr, "-p", "tcp", "-m", "comment", "--comment", "a user's rule", "-j", "USER_CHAIN")
	ipt(t, cmd, "-w", "-t", Table, "-A", "PREROUTING", "-p", "udp", "--dport", "53", "-j", "RETURN")
	before := natSave(t, cmd)

	tb, err := Open(b, fam)
	if err != nil {
		t.Fatal(err)
	}
	p := Build(caseConfig(t, name), fam)
	if err := Apply(tb, p); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	once := natSave(t, cmd)
	checkInstalled(t, before, once, p)
	if err := Apply(tb, p); err != nil {
		t.Fatalf("second Apply: %v", err)
	}
	if d := saveDiff(once, natSave(t, cmd)); d != "" {
		t.Fatalf("Apply twice differs from Apply once:\n%s", d)
	}

	// Another config over this one leaves only the other's rules.
	other := Build(caseConfig(t, next), fam)
	if err := Apply(tb, other); err != nil {
		t.Fatalf("Apply %s over %s: %v", next, name, err)
	}
	checkInstalled(t, before, natSave(t, cmd), other)
	if err := Apply(tb, p); err != nil {
		t.Fatalf("Apply %s over %s: %v", name, next, err)
	}
	if d := saveDiff(once, natSave(t, cmd)); d != "" {
		t.Fatalf("Apply after another config differs from the first Apply:\n%s", d)
	}

	remove := func() {
		t.Helper()
		if err := Remove(tb, fam); err != nil {
			t.Fatalf("Remove: %v", err)
		}
		after := natSave(t, cmd)
		if strings.Contains(after, "SKIFF") {
			t.Fatalf("skiff left something behind:\n%s", after)
		}
		if d := saveDiff(before, after); d != "" {
			t.Fatalf("Remove did not restore the nat table:\n%s", d)
		}
	}
	remove()
	remove() // nothing installed: still fine, still nothing changed

	// The dry-run output (Plan.Save) fed to iptables-restore --noflush installs what
	// Apply installs.
	restore := exec.Command(cmd+"-restore", "--noflush")
	restore.Stdin = strings.NewReader(p.Save())
	if out, err := restore.CombinedOutput(); err != nil {
		t.Fatalf("%s-restore --noflush of Plan.Save(): %v\n%s", cmd, err, out)
	}
	if d := saveDiff(once, natSave(t, cmd)); d != "" {
		t.Fatalf("restoring Plan.Save() differs from Apply:\n%s", d)
	}
	remove()
}

func TestRealDetectBackend(t *testing.T) {
	for _, tc := range []struct {
		name  string
		want  string // backend asked for
		rules [][]string
		got   string // backend chosen
	}{
		{"empty", "auto", nil, "nft"},
		{"legacy holds more", "auto", [][]string{{"iptables-legacy", "-w", "-t", "filter", "-A", "INPUT", "-j", "ACCEPT"}}, "legacy"},
		{"legacy holds more ipv6", "auto", [][]string{{"ip6tables-legacy", "-w", "-t", "nat", "-A", "OUTPUT", "-j", "RETURN"}}, "legacy"},
		{"nft holds more", "auto", [][]string{
			{"iptables-legacy", "-w", "-t", "filter", "-A", "INPUT", "-j", "ACCEPT"},
			{"iptables-nft", "-t", "filter", "-A", "INPUT", "-j", "ACCEPT"},
			{"ip6tables-nft", "-t", "nat", "-A", "OUTPUT", "-j", "RETURN"},
		}, "nft"},
		{"tie", "auto", [][]string{
			{"iptables-legacy", "-w", "-t", "filter", "-A", "INPUT", "-j", "ACCEPT"},
			{"iptables-nft", "-t", "filter", "-A", "INPUT", "-j", "ACCEPT"},
		}, "nft"},
		{"legacy as configured", "legacy", [][]string{{"iptables-nft", "-t", "filter", "-A", "INPUT", "-j", "ACCEPT"}}, "legacy"},
		{"nft as configured", "nft", [][]string{{"iptables-legacy", "-w", "-t", "filter", "-A", "INPUT", "-j", "ACCEPT"}}, "nft"},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			t.Parallel()
			if !inNetns(t) {
				return
			}
			for _, r := range tc.rules {
				ipt(t, r...)
			}
			legacyBefore := legacyInUse()
			b, why, err := DetectBackend(tc.want)
			if err != nil {
				t.Fatal(err)
			}
			if b.Name != tc.got {
				t.Fatalf("DetectBackend(%q) = %s (%s), want %s", tc.want, b.Name, why, tc.got)
			}
			t.Logf("chose %s: %s", b.Name, why)
			if !legacyBefore && legacyInUse() {
				t.Errorf("DetectBackend created legacy tables")
			}
		})
	}
}

// TestRealInstallUninstall runs what `skiff init` and `skiff init --remove` run:
// Uninstall must clean up whichever backend Install chose.
func TestRealInstallUninstall(t *testing.T) {
	for _, tc := range []struct {
		name   string
		legacy bool // a legacy rule exists first, so Install picks legacy
	}{{"nft", false}, {"legacy", true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if !inNetns(t) {
				return
			}
			if tc.legacy {
				ipt(t, "iptables-legacy", "-w", "-t", "filter", "-A", "INPUT", "-j", "ACCEPT")
			}
			cfg := caseConfig(t, "default")
			cfg.Capture.IPv6 = "on"
			if err := Install(cfg, zerolog.Nop()); err != nil {
				t.Fatalf("Install: %v", err)
			}
			b := realBackends[0]
			if tc.legacy {
				b = realBackends[1]
			}
			for _, fam := range families {
				cmd := b.Command
				if fam == IPv6 {
					cmd = b.Command6()
				}
				s := natSave(t, cmd)
				checkInstalled(t, "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n", s, Build(cfg, fam))
			}
			if !tc.legacy && legacyInUse() {
				t.Errorf("Install with the nft backend created legacy tables")
			}
			if err := Uninstall(zerolog.Nop()); err != nil {
				t.Fatalf("Uninstall: %v", err)
			}
			for _, b := range realBackends {
				for _, cmd := range []string{b.Command, b.Command6()} {
					if b.Name == "legacy" && !tc.legacy {
						continue // reading them would create them
					}
					if s := natSave(t, cmd); strings.Contains(s, "SKIFF") {
						t.Errorf("%s still holds skiff's rules after Uninstall:\n%s", cmd, s)
					}
				}
			}
		})
	}
}
