package intercept

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
)

// Fake is an in-memory Tables: a test double, kept in a non-test file so that other
// packages' tests can use it too. It is not used outside tests.
//
// It keeps the kernel's rules that Apply and Remove can trip over, so that a mistake fails
// here and not first on a node:
//   - the built-in chains of each table exist (nat: PREROUTING, INPUT, OUTPUT, POSTROUTING)
//     and cannot be deleted;
//   - a rule can only be appended to an existing chain and jump to an existing user chain
//     or a known target; -C (AppendUnique, DeleteIfExists) fails when the jump target
//     does not exist, as iptables does;
//   - a chain still referenced by a rule in another chain cannot be deleted;
//   - port options need -p tcp/udp, owner and other options need their -m module;
//   - in chains reachable from a built-in chain, jump loops are refused, the owner match
//     is only allowed under OUTPUT and POSTROUTING, and REDIRECT only in nat under
//     PREROUTING and OUTPUT.
//
// Rulespecs are compared exactly, argument by argument: the real iptables is more
// lenient, so what passes here passes there. Its zero value is ready to use.
type Fake struct {
	mu     sync.Mutex
	tables map[string]*fakeTable
}

var _ Tables = (*Fake)(nil)

// NewFake returns an empty Fake: built-in chains only, no rules.
func NewFake() *Fake { return &Fake{} }

type fakeTable struct {
	builtin []string              // built-in chains, in iptables-save order
	specs   map[string][][]string // every chain → its rules' rulespecs, in order
}

// builtinChains are the chains each table is born with, in iptables-save order.
var builtinChains = map[string][]string{
	"nat":    {"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"},
	"filter": {"INPUT", "FORWARD", "OUTPUT"},
	"mangle": {"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"},
	"raw":    {"PREROUTING", "OUTPUT"},
}

// builtinTargets are the targets the Fake accepts besides user chains.
var builtinTargets = map[string]bool{
	"ACCEPT": true, "DROP": true, "RETURN": true, "QUEUE": true,
	"REDIRECT": true, "DNAT": true, "SNAT": true, "MASQUERADE": true, "TPROXY": true,
	"MARK": true, "CONNMARK": true, "LOG": true, "REJECT": true,
}

// optionModule is the -m module each match option needs.
var optionModule = map[string]string{
	"--uid-owner": "owner", "--gid-owner": "owner", "--socket-exists": "owner",
	"--dports": "multiport", "--sports": "multiport", "--ports": "multiport",
	"--comment": "comment", "--mark": "mark",
}

// table returns the named table, creating it with its built-in chains on first use.
func (f *Fake) table(name string) (*fakeTable, error) {
	if t, ok := f.tables[name]; ok {
		return t, nil
	}
	builtin, ok := builtinChains[name]
	if !ok {
		return nil, fmt.Errorf("can't initialize iptables table `%s': Table does not exist", name)
	}
	t := &fakeTable{builtin: builtin, specs: map[string][][]string{}}
	for _, c := range builtin {
		t.specs[c] = nil
	}
	if f.tables == nil {
		f.tables = map[string]*fakeTable{}
	}
	f.tables[name] = t
	return t, nil
}

func (t *fakeTable) isBuiltin(chain string) bool { return slices.Contains(t.builtin, chain) }

func (t *fakeTable) exists(chain string) bool {
	_, ok := t.specs[chain]
	return ok
}

// ChainExists reports whether the chain exists in the table.
func (f *Fake) ChainExists(table, chain string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, err := f.table(table)
	if err != nil {
		return false, err
	}
	return t.exists(chain), nil
}

// ClearChain creates the chain, or flushes it when it exists (built-in ones included).
func (f *Fake) ClearChain(table, chain string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, err := f.table(table)
	if err != nil {
		return err
	}
	if !t.exists(chain) && (chain == "" || len(chain) > 28 || builtinTargets[chain] || strings.HasPrefix(chain, "-")) {
		return fmt.Errorf("invalid chain name `%s'", chain)
	}
	t.specs[chain] = nil
	return nil
}

// ClearAndDeleteChain flushes and deletes a user chain; it does nothing when the chain
// does not exist. Like the kernel, it refuses a built-in chain, and a chain that a rule
// in another chain still jumps to (after the flush, as iptables -F then -X would do).
func (f *Fake) ClearAndDeleteChain(table, chain string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, err := f.table(table)
	if err != nil {
		return err
	}
	if !t.exists(chain) {
		return nil
	}
	if t.isBuiltin(chain) {
		return fmt.Errorf("deleting chain %s: cannot delete a built-in chain", chain)
	}
	t.specs[chain] = nil
	for from, rules := range t.specs {
		for _, spec := range rules {
			if target, _ := jumpTarget(spec); target == chain {
				return fmt.Errorf("deleting chain %s: Too many links (still referenced from %s)", chain, from)
			}
		}
	}
	delete(t.specs, chain)
	return nil
}

// Append adds a rule at the end of the chain.
func (f *Fake) Append(table, chain string, rulespec ...string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.appendLocked(table, chain, rulespec)
}

// AppendUnique appends the rule unless the chain already holds exactly this rulespec.
func (f *Fake) AppendUnique(table, chain string, rulespec ...string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	i, err := f.indexLocked(table, chain, rulespec)
	if err != nil || i >= 0 {
		return err
	}
	return f.appendLocked(table, chain, rulespec)
}

// DeleteIfExists deletes the first rule with exactly this rulespec, if any. Like
// iptables -C, it fails when the rule jumps to a chain that does not exist.
func (f *Fake) DeleteIfExists(table, chain string, rulespec ...string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	i, err := f.indexLocked(table, chain, rulespec)
	if err != nil || i < 0 {
		return err
	}
	t := f.tables[table]
	t.specs[chain] = slices.Delete(t.specs[chain], i, i+1)
	return nil
}

// List returns the chain in iptables -S form: its -P or -N line, then its rules.
func (f *Fake) List(table, chain string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, err := f.table(table)
	if err != nil {
		return nil, err
	}
	if !t.exists(chain) {
		return nil, fmt.Errorf("iptables: No chain/target/match by that name")
	}
	var out []string
	if t.isBuiltin(chain) {
		out = append(out, "-P "+chain+" ACCEPT")
	} else {
		out = append(out, "-N "+chain)
	}
	for _, spec := range t.specs[chain] {
		out = append(out, renderRule(chain, spec))
	}
	return out, nil
}

// Save renders every table in use (nat always) in iptables-save form, without the
// date comments: built-in chains first, then user chains by name, then the rules chain
// by chain.
func (f *Fake) Save() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, _ = f.table("nat") // always shown; nat is a known table
	names := make([]string, 0, len(f.tables))
	for n := range f.tables {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		t := f.tables[n]
		fmt.Fprintf(&b, "*%s\n", n)
		order := t.order()
		for _, c := range order {
			if t.isBuiltin(c) {
				fmt.Fprintf(&b, ":%s ACCEPT [0:0]\n", c)
			} else {
				fmt.Fprintf(&b, ":%s - [0:0]\n", c)
			}
		}
		for _, c := range order {
			for _, spec := range t.specs[c] {
				b.WriteString(renderRule(c, spec))
				b.WriteByte('\n')
			}
		}
		b.WriteString("COMMIT\n")
	}
	return b.String()
}

// order is the built-in chains in kernel order, then the user chains by name.
func (t *fakeTable) order() []string {
	var user []string
	for c := range t.specs {
		if !t.isBuiltin(c) {
			user = append(user, c)
		}
	}
	sort.Strings(user)
	return append(slices.Clone(t.builtin), user...)
}

func renderRule(chain string, spec []string) string {
	var b strings.Builder
	writeRule(&b, Rule{Chain: chain, Args: spec})
	return strings.TrimSuffix(b.String(), "\n")
}

// indexLocked finds the rule as iptables -C would: -1 when absent, an error when the
// table or the rule's jump target does not exist.
func (f *Fake) indexLocked(table, chain string, spec []string) (int, error) {
	t, err := f.table(table)
	if err != nil {
		return -1, err
	}
	if err := t.checkTarget(spec); err != nil {
		return -1, err
	}
	for i, s := range t.specs[chain] { // a missing chain holds no rule: -C says "Bad rule"
		if slices.Equal(s, spec) {
			return i, nil
		}
	}
	return -1, nil
}

func (f *Fake) appendLocked(table, chain string, spec []string) error {
	t, err := f.table(table)
	if err != nil {
		return err
	}
	if !t.exists(chain) {
		return fmt.Errorf("appending to %s: No chain/target/match by that name", chain)
	}
	if err := t.checkTarget(spec); err != nil {
		return err
	}
	if err := checkOptions(spec); err != nil {
		return err
	}
	before := t.specs[chain]
	t.specs[chain] = append(slices.Clip(before), slices.Clone(spec))
	if err := t.checkHooks(table); err != nil {
		t.specs[chain] = before
		return fmt.Errorf("appending to %s: %w", chain, err)
	}
	return nil
}

// jumpTarget returns the rule's -j or -g target, and whether it is a goto.
func jumpTarget(spec []string) (string, bool) {
	for i := 0; i+1 < len(spec); i++ {
		switch spec[i] {
		case "-j", "--jump":
			return spec[i+1], false
		case "-g", "--goto":
			return spec[i+1], true
		}
	}
	return "", false
}

// checkTarget refuses a jump to a chain that does not exist or to a built-in chain.
func (t *fakeTable) checkTarget(spec []string) error {
	target, isGoto := jumpTarget(spec)
	switch {
	case target == "":
		return nil
	case t.isBuiltin(target):
		return fmt.Errorf("jumping to built-in chain %s: Invalid argument", target)
	case t.exists(target):
		return nil
	case builtinTargets[target] && !isGoto:
		return nil
	}
	return fmt.Errorf("Chain '%s' does not exist", target)
}

// checkOptions refuses options iptables itself would not parse.
func checkOptions(spec []string) error {
	var proto string
	modules := map[string]bool{}
	target, _ := jumpTarget(spec)
	for i, a := range spec {
		next := ""
		if i+1 < len(spec) {
			next = spec[i+1]
		}
		switch {
		case a == "-p" || a == "--protocol":
			if i == 0 || spec[i-1] != "!" {
				proto = next
			}
		case a == "-m" || a == "--match":
			modules[next] = true
		case a == "--dport" || a == "--sport" || a == "--destination-port" || a == "--source-port":
			if proto != "tcp" && proto != "udp" && proto != "sctp" && !modules["tcp"] && !modules["udp"] {
				return fmt.Errorf("unknown option %q (needs -p tcp or udp before it)", a)
			}
		case a == "--to-ports":
			if target == "REDIRECT" && proto != "tcp" && proto != "udp" && proto != "sctp" {
				return fmt.Errorf("Need TCP, UDP, SCTP or DCCP with port specification")
			}
		case optionModule[a] != "":
			if !modules[optionModule[a]] {
				return fmt.Errorf("unknown option %q (needs -m %s before it)", a, optionModule[a])
			}
		}
	}
	return nil
}

// hookRules are the built-in chains under which a match or target is allowed, in the
// tables it is allowed in (empty: every built-in chain).
var hookRules = []struct {
	what   string
	isHere func(spec []string) bool
	tables []string
	hooks  []string
}{
	{"-m owner", func(s []string) bool { return hasPair(s, "-m", "owner") }, nil, []string{"OUTPUT", "POSTROUTING"}},
	{"-j REDIRECT", func(s []string) bool { t, _ := jumpTarget(s); return t == "REDIRECT" }, []string{"nat"}, []string{"PREROUTING", "OUTPUT"}},
}

func hasPair(spec []string, a, b string) bool {
	for i := 0; i+1 < len(spec); i++ {
		if spec[i] == a && spec[i+1] == b {
			return true
		}
	}
	return false
}

// checkHooks walks the chains reachable from each built-in chain, as the kernel does when
// a ruleset changes: a loop, or a rule not allowed under a built-in chain it is reached
// from, is an error.
func (t *fakeTable) checkHooks(table string) error {
	for _, hook := range t.builtin {
		var walk func(chain string, path []string) error
		walk = func(chain string, path []string) error {
			if slices.Contains(path, chain) {
				return fmt.Errorf("Too many levels of symbolic links (loop %s → %s)", strings.Join(path, " → "), chain)
			}
			path = append(path, chain)
			for _, spec := range t.specs[chain] {
				for _, r := range hookRules {
					if !r.isHere(spec) {
						continue
					}
					if (r.tables != nil && !slices.Contains(r.tables, table)) || !slices.Contains(r.hooks, hook) {
						return fmt.Errorf("Invalid argument: %s in %s is reached from %s (%s), allowed only under %s",
							r.what, chain, hook, strings.Join(path, " → "), strings.Join(r.hooks, ", "))
					}
				}
				if target, _ := jumpTarget(spec); target != "" && !builtinTargets[target] {
					if err := walk(target, path); err != nil {
						return err
					}
				}
			}
			return nil
		}
		if err := walk(hook, nil); err != nil {
			return err
		}
	}
	return nil
}
