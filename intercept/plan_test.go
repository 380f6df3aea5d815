package intercept

import (
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"skiff/config"
)

var update = flag.Bool("update", false, "rewrite intercept/testdata/*.golden from the current plans")

// planCases are the named configs the plan is golden-tested with; the apply tests and the
// real-iptables tests install the same ones.
var planCases = []struct {
	name string
	edit func(*config.Config)
}{
	{"default", func(*config.Config) {}},
	{"exclusions", func(c *config.Config) {
		c.Capture.Inbound.ExcludePorts = []int{22, 8081}
		c.Capture.Outbound.ExcludeCIDRs = []string{"10.0.0.0/8", "fd00::/8"}
		c.Capture.Outbound.ExcludePorts = []int{3306}
	}},
	{"include", func(c *config.Config) {
		c.Capture.Inbound.IncludePorts = []int{80, 443}
		c.Capture.Outbound.IncludeCIDRs = []string{"10.96.0.0/12"}
		c.Capture.Outbound.IncludePorts = []int{80}
	}},
	{"include-dual-stack", func(c *config.Config) {
		// A v6 include range, so the v6 plan captures something; a bare address is one host.
		c.Capture.Outbound.IncludeCIDRs = []string{"10.96.0.0/12", "fd00:10:96::/112", "192.0.2.10", "2001:db8::10"}
		c.Capture.Outbound.ExcludeCIDRs = []string{"10.96.0.1", "fd00:10:96::1"}
	}},
	{"custom-ports-ids", func(c *config.Config) {
		c.Proxy.UID, c.Proxy.GID = 2000, 3000
		c.Proxy.InboundPort, c.Proxy.OutboundPort = 16006, 16001
		c.Proxy.AdminAddress = "127.0.0.1:16000"
	}},
	{"inbound-only", func(c *config.Config) { c.Capture.Outbound.Enabled = false }},
	{"outbound-only", func(c *config.Config) { c.Capture.Inbound.Enabled = false }},
}

// caseConfig returns the validated config of a named case.
func caseConfig(t testing.TB, name string) *config.Config {
	t.Helper()
	for _, c := range planCases {
		if c.name == name {
			cfg := config.Default()
			c.edit(&cfg)
			if err := cfg.Validate(); err != nil {
				t.Fatalf("case %s: invalid config: %v", name, err)
			}
			return &cfg
		}
	}
	t.Fatalf("no plan case %q", name)
	return nil
}

var families = []Family{IPv4, IPv6}

func TestPlanGolden(t *testing.T) {
	for _, c := range planCases {
		t.Run(c.name, func(t *testing.T) {
			cfg := caseConfig(t, c.name)
			got := Build(cfg, IPv4).Save() + Build(cfg, IPv6).Save()
			path := filepath.Join("testdata", c.name+".golden")
			if *update {
				if err := os.MkdirAll("testdata", 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./intercept -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("plan differs from %s (if the change is intended, run go test ./intercept -update and review the diff):\n%s",
					path, lineDiff(string(want), got))
			}
		})
	}
}

// lineDiff is a small line diff for failure messages: "-" lines only in want, "+" only in got.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	// Longest common subsequence, fine for files of a few dozen lines.
	lcs := make([][]int, len(w)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(g)+1)
	}
	for i := len(w) - 1; i >= 0; i-- {
		for j := len(g) - 1; j >= 0; j-- {
			if w[i] == g[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var b strings.Builder
	i, j := 0, 0
	for i < len(w) || j < len(g) {
		switch {
		case i < len(w) && j < len(g) && w[i] == g[j]:
			fmt.Fprintf(&b, "  %s\n", w[i])
			i, j = i+1, j+1
		case j < len(g) && (i == len(w) || lcs[i][j+1] >= lcs[i+1][j]):
			fmt.Fprintf(&b, "+ %s\n", g[j])
			j++
		default:
			fmt.Fprintf(&b, "- %s\n", w[i])
			i++
		}
	}
	return b.String()
}

// eachPlan runs f for every case and family.
func eachPlan(t *testing.T, f func(t *testing.T, cfg *config.Config, p Plan)) {
	for _, c := range planCases {
		for _, fam := range families {
			t.Run(c.name+"/"+fam.String(), func(t *testing.T) {
				cfg := caseConfig(t, c.name)
				f(t, cfg, Build(cfg, fam))
			})
		}
	}
}

// ruleIndex returns the index in p.Rules of the first rule in chain with exactly args, or -1.
func ruleIndex(p Plan, chain string, args ...string) int {
	return slices.IndexFunc(p.Rules, func(r Rule) bool { return r.Chain == chain && slices.Equal(r.Args, args) })
}

func TestPlanProxyOwnerReturnsBeforeRedirect(t *testing.T) {
	eachPlan(t, func(t *testing.T, cfg *config.Config, p Plan) {
		if !cfg.Capture.Outbound.Enabled {
			if slices.Contains(p.Chains, ChainOutput) || len(p.Jumps) != 1 || p.Jumps[0].Chain != "PREROUTING" {
				t.Fatalf("outbound capture is off but the plan has outbound chains or jumps:\n%s", p.Save())
			}
			return
		}
		uid := ruleIndex(p, ChainOutput, "-m", "owner", "--uid-owner", strconv.Itoa(cfg.Proxy.UID), "-j", "RETURN")
		gid := ruleIndex(p, ChainOutput, "-m", "owner", "--gid-owner", strconv.Itoa(cfg.Proxy.GID), "-j", "RETURN")
		if uid < 0 || gid < 0 {
			t.Fatalf("no RETURN for the proxy's uid %d (index %d) or gid %d (index %d):\n%s", cfg.Proxy.UID, uid, cfg.Proxy.GID, gid, p.Save())
		}
		first := slices.IndexFunc(p.Rules, func(r Rule) bool { return r.Chain == ChainOutput && target(r) == ChainRedirect })
		if first < 0 && len(cfg.Capture.Outbound.IncludeCIDRs) == 0 {
			t.Fatalf("no jump to %s:\n%s", ChainRedirect, p.Save())
		}
		if first >= 0 && (uid > first || gid > first) {
			t.Errorf("the proxy's uid/gid RETURN rules (%d, %d) come after the first jump to %s (%d): the proxy's own connections would loop:\n%s",
				uid, gid, ChainRedirect, first, p.Save())
		}
		// Nothing in the chain before those RETURNs may send the proxy to the outbound listener.
		for _, r := range p.Rules[:min(uid, gid)] {
			if target(r) == ChainRedirect {
				t.Errorf("rule %v reaches %s before the proxy's own traffic is let through", r.Args, ChainRedirect)
			}
		}
	})
}

func TestPlanExcludesProxyPortsInbound(t *testing.T) {
	eachPlan(t, func(t *testing.T, cfg *config.Config, p Plan) {
		if !cfg.Capture.Inbound.Enabled {
			if slices.Contains(p.Chains, ChainInbound) || slices.Contains(p.Chains, ChainInRedirect) {
				t.Fatalf("inbound capture is off but the plan has inbound chains:\n%s", p.Save())
			}
			return
		}
		admin := netip.MustParseAddrPort(cfg.Proxy.AdminAddress).Port()
		want := []string{strconv.Itoa(int(admin)), strconv.Itoa(cfg.Proxy.OutboundPort), strconv.Itoa(cfg.Proxy.InboundPort)}
		var ports []string
		ret := slices.IndexFunc(p.Rules, func(r Rule) bool {
			i := slices.Index(r.Args, "--dports")
			if r.Chain != ChainInbound || target(r) != "RETURN" || i < 0 || !hasPair(r.Args, "-p", "tcp") {
				return false
			}
			ports = strings.Split(r.Args[i+1], ",")
			return true
		})
		if ret < 0 {
			t.Fatalf("no RETURN for the proxy's own ports in %s:\n%s", ChainInbound, p.Save())
		}
		for _, w := range want {
			if !slices.Contains(ports, w) {
				t.Errorf("proxy port %s is not excluded inbound (excluded: %v)", w, ports)
			}
		}
		for _, r := range p.Rules[:ret] {
			if r.Chain == ChainInbound {
				t.Errorf("rule %v in %s comes before the proxy ports are excluded", r.Args, ChainInbound)
			}
		}
		for _, port := range cfg.Capture.Inbound.ExcludePorts {
			i := ruleIndex(p, ChainInbound, "-p", "tcp", "--dport", strconv.Itoa(port), "-j", "RETURN")
			if i < 0 {
				t.Errorf("excluded inbound port %d has no RETURN", port)
			}
		}
	})
}

func TestPlanFamilies(t *testing.T) {
	eachPlan(t, func(t *testing.T, cfg *config.Config, p Plan) {
		s := p.Save()
		switch p.Family {
		case IPv6:
			if strings.Contains(s, InboundPassthroughV4) || strings.Contains(s, "127.0.0.1") {
				t.Errorf("v6 plan has an IPv4 loopback rule:\n%s", s)
			}
			if cfg.Capture.Outbound.Enabled && ruleIndex(p, ChainOutput, "-d", "::1/128", "-j", "RETURN") < 0 {
				t.Errorf("v6 plan does not let ::1/128 through:\n%s", s)
			}
		case IPv4:
			if strings.Contains(s, "::1") {
				t.Errorf("v4 plan has an IPv6 loopback rule:\n%s", s)
			}
			if cfg.Capture.Outbound.Enabled {
				first := slices.IndexFunc(p.Rules, func(r Rule) bool { return r.Chain == ChainOutput })
				if ruleIndex(p, ChainOutput, "-s", InboundPassthroughV4+"/32", "-o", "lo", "-j", "RETURN") != first {
					t.Errorf("the 127.0.0.6 passthrough is not the first outbound rule:\n%s", s)
				}
				if ruleIndex(p, ChainOutput, "-d", "127.0.0.1/32", "-j", "RETURN") < 0 {
					t.Errorf("v4 plan does not let 127.0.0.1/32 through:\n%s", s)
				}
			}
		}
		for _, r := range append(slices.Clone(p.Jumps), p.Rules...) {
			for _, a := range r.Args {
				pfx, err := netip.ParsePrefix(a)
				if err != nil {
					continue
				}
				if pfx.Addr().Is4() != (p.Family == IPv4) {
					t.Errorf("%s plan has %s in rule %v", p.Family, a, r.Args)
				}
			}
		}
	})
}

func TestPlanCIDRsOfOtherFamilyAreDropped(t *testing.T) {
	cfg := caseConfig(t, "include-dual-stack")
	for _, tc := range []struct {
		fam        Family
		want, gone []string
	}{
		{IPv4, []string{"10.96.0.0/12", "192.0.2.10/32", "10.96.0.1/32"}, []string{"fd00:10:96::/112", "2001:db8::10/128", "fd00:10:96::1/128"}},
		{IPv6, []string{"fd00:10:96::/112", "2001:db8::10/128", "fd00:10:96::1/128"}, []string{"10.96.0.0/12", "192.0.2.10/32", "10.96.0.1/32"}},
	} {
		s := Build(cfg, tc.fam).Save()
		for _, w := range tc.want {
			if !strings.Contains(s, " "+w+" ") {
				t.Errorf("%s plan lacks %s:\n%s", tc.fam, w, s)
			}
		}
		for _, g := range tc.gone {
			if strings.Contains(s, g) {
				t.Errorf("%s plan has %s:\n%s", tc.fam, g, s)
			}
		}
	}
	// An include list with no range of this family captures nothing of it.
	p := Build(caseConfig(t, "include"), IPv6)
	for _, r := range p.Rules {
		if target(r) == ChainRedirect {
			t.Errorf("v6 plan captures outbound although the only include range is IPv4: %v", r.Args)
		}
	}
}

func TestPlanWellFormed(t *testing.T) {
	eachPlan(t, func(t *testing.T, cfg *config.Config, p Plan) {
		for _, r := range append(slices.Clone(p.Jumps), p.Rules...) {
			if r.Comment == "" {
				t.Errorf("rule %s %v has no comment saying why it exists", r.Chain, r.Args)
			}
			if !slices.Contains(p.Chains, r.Chain) && r.Chain != "PREROUTING" && r.Chain != "OUTPUT" {
				t.Errorf("rule %v is in chain %s, which the plan neither creates nor hooks", r.Args, r.Chain)
			}
			if tg := target(r); strings.HasPrefix(tg, "SKIFF_") {
				if !slices.Contains(p.Chains, tg) {
					t.Errorf("rule %v jumps to %s, which the plan does not create", r.Args, tg)
				}
			}
		}
		// Every plan installs cleanly in the fake, which refuses what iptables refuses.
		if err := Apply(NewFake(), p); err != nil {
			t.Errorf("Apply to a fresh Fake: %v", err)
		}
	})
}

func TestBuildDeterministic(t *testing.T) {
	eachPlan(t, func(t *testing.T, cfg *config.Config, p Plan) {
		orig, _ := json.Marshal(cfg)
		for range 3 {
			if q := Build(cfg, p.Family); !reflect.DeepEqual(p, q) || p.Save() != q.Save() {
				t.Fatalf("Build gave two different plans for one config:\n%s\n%s", p.Save(), q.Save())
			}
		}
		if now, _ := json.Marshal(cfg); string(now) != string(orig) {
			t.Errorf("Build changed its config")
		}
		// A plan owns its slices: changing one must not change the next.
		p.Rules[0].Args[0] = "changed"
		if q := Build(cfg, p.Family); q.Rules[0].Args[0] == "changed" {
			t.Errorf("two plans share their rule arguments")
		}
	})
}

func target(r Rule) string {
	t, _ := jumpTarget(r.Args)
	return t
}
