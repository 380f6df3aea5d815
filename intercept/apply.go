package intercept

import (
	"fmt"
	"os"
	"os/exec"
	"strings"

	"github.com/coreos/go-iptables/iptables"
)

// Tables is the part of go-iptables that Apply and Remove use. *iptables.IPTables
// implements it; Fake implements it in memory for tests.
type Tables interface {
	ChainExists(table, chain string) (bool, error)
	ClearChain(table, chain string) error
	ClearAndDeleteChain(table, chain string) error
	Append(table, chain string, rulespec ...string) error
	AppendUnique(table, chain string, rulespec ...string) error
	DeleteIfExists(table, chain string, rulespec ...string) error
	List(table, chain string) ([]string, error)
}

var _ Tables = (*iptables.IPTables)(nil)

// Apply installs the plan. It is idempotent: skiff's chains are flushed and refilled,
// and the jumps into them are added only when missing, so running it again leaves the
// same rules. Jumps and chains that an earlier plan made and this one does not use (say,
// the inbound chains after inbound capture was turned off) are removed, so what is
// installed afterwards is exactly this plan.
func Apply(t Tables, p Plan) error {
	for _, c := range p.Chains {
		// ClearChain creates the chain when it does not exist and flushes it when it does.
		if err := t.ClearChain(Table, c); err != nil {
			return fmt.Errorf("preparing chain %s (%s): %w", c, p.Family, err)
		}
	}
	for _, r := range p.Rules {
		if err := t.Append(Table, r.Chain, r.Spec()...); err != nil {
			return fmt.Errorf("adding rule %q to %s (%s): %w", r.Comment, r.Chain, p.Family, err)
		}
	}
	for _, r := range p.Jumps {
		if err := t.AppendUnique(Table, r.Chain, r.Spec()...); err != nil {
			return fmt.Errorf("adding jump %s → %s (%s): %w", r.Chain, r.Args[len(r.Args)-1], p.Family, err)
		}
	}
	keep := make(map[string]bool, len(p.Chains))
	for _, c := range p.Chains {
		keep[c] = true
	}
	return remove(t, p.Family, keep)
}

// Remove deletes every rule and chain skiff makes, whatever config made them, and nothing
// else. It is safe to run when nothing is installed.
func Remove(t Tables, fam Family) error { return remove(t, fam, nil) }

// remove deletes skiff's chains, except those in keep, and the jumps into them.
func remove(t Tables, fam Family, keep map[string]bool) error {
	for _, j := range allJumps() {
		target := j.Args[len(j.Args)-1]
		if keep[target] {
			continue
		}
		// iptables cannot even look for a jump to a chain that does not exist.
		if ok, err := t.ChainExists(Table, target); err != nil || !ok {
			if err != nil {
				return fmt.Errorf("looking for chain %s (%s): %w", target, fam, err)
			}
			continue
		}
		if err := t.DeleteIfExists(Table, j.Chain, j.Spec()...); err != nil {
			return fmt.Errorf("removing jump from %s (%s): %w", j.Chain, fam, err)
		}
	}
	// Own chains reference each other, so flush all before deleting any.
	var chains []string
	for _, c := range []string{ChainInbound, ChainOutput, ChainInRedirect, ChainRedirect} {
		if keep[c] {
			continue
		}
		ok, err := t.ChainExists(Table, c)
		if err != nil {
			return fmt.Errorf("looking for chain %s (%s): %w", c, fam, err)
		}
		if ok {
			chains = append(chains, c)
		}
	}
	for _, c := range chains {
		if err := t.ClearChain(Table, c); err != nil {
			return fmt.Errorf("flushing chain %s (%s): %w", c, fam, err)
		}
	}
	for _, c := range chains {
		if err := t.ClearAndDeleteChain(Table, c); err != nil {
			return fmt.Errorf("deleting chain %s (%s): %w", c, fam, err)
		}
	}
	return nil
}

// allJumps are the jumps any plan may install, so Remove finds them whatever the config.
func allJumps() []Rule { return []Rule{jumpInbound, jumpOutbound} }

// Backend is an iptables flavour and the command that drives it.
type Backend struct {
	Name    string // "nft" or "legacy", or "iptables" when only the plain command exists
	Command string // e.g. "iptables-nft"
}

// Command6 is the ip6tables twin of the backend's command.
func (b Backend) Command6() string { return strings.Replace(b.Command, "iptables", "ip6tables", 1) }

// DetectBackend picks the iptables flavour. "nft" and "legacy" are taken as asked.
// For "auto" it chooses the one the host already uses: the one whose tables already hold
// more rules (mixing the two in one namespace makes rules that silently do nothing), nft
// when neither holds any. The reason is returned for the log.
func DetectBackend(want string) (Backend, string, error) {
	nft := Backend{"nft", "iptables-nft"}
	legacy := Backend{"legacy", "iptables-legacy"}
	switch want {
	case "nft", "legacy":
		b := nft
		if want == "legacy" {
			b = legacy
		}
		if _, err := exec.LookPath(b.Command); err != nil {
			return Backend{}, "", fmt.Errorf("capture.backend is %s but %s is not installed: %w", want, b.Command, err)
		}
		return b, "set in config", nil
	}
	_, errN := exec.LookPath(nft.Command)
	_, errL := exec.LookPath(legacy.Command)
	switch {
	case errN != nil && errL != nil:
		if _, err := exec.LookPath("iptables"); err != nil {
			return Backend{}, "", fmt.Errorf("no iptables command found (looked for iptables-nft, iptables-legacy, iptables): install iptables")
		}
		return Backend{"iptables", "iptables"}, "only the iptables command is installed", nil
	case errL != nil:
		return nft, "iptables-legacy is not installed", nil
	case errN != nil:
		return legacy, "iptables-nft is not installed", nil
	}
	nr, nl := countRules(nft.Command+"-save"), 0
	// Legacy tables appear in /proc/net/ip{,6}_tables_names once something uses them.
	// Running iptables-legacy-save when none exist would create them, and with them the
	// "legacy tables present" warning on every later nft command: read the names first.
	if legacyInUse() {
		nl = countRules(legacy.Command + "-save")
	}
	if nl > nr {
		return legacy, fmt.Sprintf("legacy tables hold %d rules, nft tables %d", nl, nr), nil
	}
	return nft, fmt.Sprintf("nft tables hold %d rules, legacy tables %d", nr, nl), nil
}

// countRules counts the rules a *-save command prints for both families; 0 when it fails.
func countRules(save string) int {
	n := 0
	for _, cmd := range []string{save, strings.Replace(save, "iptables", "ip6tables", 1)} {
		out, err := exec.Command(cmd).Output()
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(l, "-A ") {
				n++
			}
		}
	}
	return n
}

// legacyInUse reports whether any legacy (x_tables) table exists in this namespace.
func legacyInUse() bool {
	for _, f := range []string{"/proc/net/ip_tables_names", "/proc/net/ip6_tables_names"} {
		if b, err := os.ReadFile(f); err == nil && len(strings.TrimSpace(string(b))) > 0 {
			return true
		}
	}
	return false
}

// HasIPv6 reports whether this network namespace has IPv6 addresses, so that ip6tables
// rules are needed.
func HasIPv6() bool {
	b, err := os.ReadFile("/proc/net/if_inet6")
	return err == nil && len(strings.TrimSpace(string(b))) > 0
}

// Open returns go-iptables for the backend and family.
func Open(b Backend, fam Family) (*iptables.IPTables, error) {
	cmd, proto := b.Command, iptables.ProtocolIPv4
	if fam == IPv6 {
		cmd, proto = b.Command6(), iptables.ProtocolIPv6
	}
	path, err := exec.LookPath(cmd)
	if err != nil {
		return nil, fmt.Errorf("finding %s: %w", cmd, err)
	}
	t, err := iptables.New(iptables.IPFamily(proto), iptables.Path(path), iptables.Timeout(5))
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", cmd, err)
	}
	return t, nil
}
