package intercept

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"skiff/config"
)

// userRules puts in a fresh Fake what a host may already hold: a user chain, a rule in
// OUTPUT jumping to it, and a plain rule in PREROUTING. Apply and Remove must leave them.
func userRules(t *testing.T, tb Tables, fam Family) {
	t.Helper()
	addr := "192.0.2.1/32"
	if fam == IPv6 {
		addr = "2001:db8::1/128"
	}
	for _, step := range []struct {
		chain string
		spec  []string
	}{
		{"USER_CHAIN", nil},
		{"USER_CHAIN", []string{"-p", "tcp", "--dport", "9999", "-j", "RETURN"}},
		{"OUTPUT", []string{"-d", addr, "-p", "tcp", "-m", "comment", "--comment", "a user's rule", "-j", "USER_CHAIN"}},
		{"PREROUTING", []string{"-p", "udp", "--dport", "53", "-j", "RETURN"}},
	} {
		var err error
		if step.spec == nil {
			err = tb.ClearChain(Table, step.chain)
		} else {
			err = tb.Append(Table, step.chain, step.spec...)
		}
		if err != nil {
			t.Fatalf("adding the user's rules: %v", err)
		}
	}
}

func TestApplyTwiceIsApplyOnce(t *testing.T) {
	eachPlan(t, func(t *testing.T, _ *config.Config, p Plan) {
		f := NewFake()
		userRules(t, f, p.Family)
		before := f.Save()
		if err := Apply(f, p); err != nil {
			t.Fatal(err)
		}
		once := f.Save()
		if err := Apply(f, p); err != nil {
			t.Fatalf("second Apply: %v", err)
		}
		if twice := f.Save(); twice != once {
			t.Fatalf("Apply twice differs from Apply once:\n%s", lineDiff(once, twice))
		}
		checkInstalled(t, before, once, p)
	})
}

func TestRemoveRestoresBuiltinChains(t *testing.T) {
	eachPlan(t, func(t *testing.T, _ *config.Config, p Plan) {
		f := NewFake()
		userRules(t, f, p.Family)
		before := f.Save()
		if err := Apply(f, p); err != nil {
			t.Fatal(err)
		}
		if err := Remove(f, p.Family); err != nil {
			t.Fatalf("Remove: %v", err)
		}
		after := f.Save()
		if after != before {
			t.Fatalf("Remove did not restore the tables:\n%s", lineDiff(before, after))
		}
		if strings.Contains(after, "SKIFF") {
			t.Fatalf("skiff left something behind:\n%s", after)
		}
	})
}

func TestRemoveWhenNothingInstalled(t *testing.T) {
	for _, fam := range families {
		f := NewFake()
		userRules(t, f, fam)
		before := f.Save()
		for i := range 2 {
			if err := Remove(f, fam); err != nil {
				t.Fatalf("%s: Remove #%d with nothing installed: %v", fam, i+1, err)
			}
		}
		if after := f.Save(); after != before {
			t.Fatalf("%s: Remove with nothing installed changed the tables:\n%s", fam, lineDiff(before, after))
		}
	}
}

// TestApplyOverAnotherConfig installs every case over every other: what is left must be
// exactly the second plan, and Remove must then clean up.
func TestApplyOverAnotherConfig(t *testing.T) {
	for _, first := range planCases {
		for _, second := range planCases {
			for _, fam := range families {
				t.Run(first.name+"/then/"+second.name+"/"+fam.String(), func(t *testing.T) {
					f := NewFake()
					userRules(t, f, fam)
					before := f.Save()
					p1, p2 := Build(caseConfig(t, first.name), fam), Build(caseConfig(t, second.name), fam)
					if err := Apply(f, p1); err != nil {
						t.Fatal(err)
					}
					if err := Apply(f, p2); err != nil {
						t.Fatalf("applying %s over %s: %v", second.name, first.name, err)
					}
					checkInstalled(t, before, f.Save(), p2)

					fresh := NewFake()
					userRules(t, fresh, fam)
					if err := Apply(fresh, p2); err != nil {
						t.Fatal(err)
					}
					if got, want := f.Save(), fresh.Save(); got != want {
						t.Errorf("applying %s over %s is not the same as applying it alone:\n%s", second.name, first.name, lineDiff(want, got))
					}
					if err := Remove(f, fam); err != nil {
						t.Fatalf("Remove: %v", err)
					}
					if after := f.Save(); after != before {
						t.Fatalf("Remove did not restore the tables:\n%s", lineDiff(before, after))
					}
				})
			}
		}
	}
}

func TestRemoveAfterInboundOnly(t *testing.T) {
	for _, fam := range families {
		f := NewFake()
		userRules(t, f, fam)
		before := f.Save()
		p := Build(caseConfig(t, "inbound-only"), fam)
		if err := Apply(f, p); err != nil {
			t.Fatal(err)
		}
		if s := f.Save(); strings.Contains(s, ChainOutput) || !strings.Contains(s, "-A PREROUTING -p tcp -j "+ChainInbound) {
			t.Fatalf("%s: inbound-only plan installed wrongly:\n%s", fam, s)
		}
		if err := Remove(f, fam); err != nil {
			t.Fatalf("%s: Remove: %v", fam, err)
		}
		if after := f.Save(); after != before {
			t.Fatalf("%s: Remove did not restore the tables:\n%s", fam, lineDiff(before, after))
		}
	}
}

func TestApplyReportsFailures(t *testing.T) {
	// A plan whose rule jumps to a chain it does not create fails, naming the rule.
	p := Plan{Family: IPv4, Chains: []string{ChainOutput}, Rules: []Rule{{Chain: ChainOutput, Args: []string{"-j", ChainRedirect}, Comment: "dangling"}}}
	err := Apply(NewFake(), p)
	if err == nil || !strings.Contains(err.Error(), `"dangling"`) || !strings.Contains(err.Error(), ChainOutput) {
		t.Fatalf("Apply of a dangling jump: got %v, want an error naming the rule and chain", err)
	}
}

// checkInstalled fails the test unless the tables went from before to after by adding
// exactly the plan: its chains, its rules in order in each chain, and its jumps. before
// and after are iptables-save output of the nat table (a Fake's or the kernel's); rules
// are compared modulo the way iptables-save rewrites them (see normRule).
func checkInstalled(t *testing.T, before, after string, p Plan) {
	t.Helper()
	added, removed := lineChanges(before, after)
	if len(removed) > 0 {
		t.Errorf("applying the plan removed lines that were there before:\n%s", strings.Join(removed, "\n"))
	}
	var chains []string
	var rules []string
	for _, l := range added {
		switch {
		case strings.HasPrefix(l, ":"):
			chains = append(chains, strings.Fields(l[1:])[0])
		case strings.HasPrefix(l, "-A "):
			rules = append(rules, l)
		default:
			t.Errorf("unexpected new line %q", l)
		}
	}
	if slices.Sort(chains); !slices.Equal(chains, slices.Sorted(slices.Values(p.Chains))) {
		t.Errorf("new chains are %v, the plan's %v", chains, p.Chains)
	}
	got, err := rulesByChain(rules)
	if err != nil {
		t.Fatal(err)
	}
	var planned []string
	for _, l := range strings.Split(p.Save(), "\n") {
		if strings.HasPrefix(l, "-A ") {
			planned = append(planned, l)
		}
	}
	want, err := rulesByChain(planned)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range slices.Sorted(mapKeys(got, want)) {
		if !slices.Equal(got[c], want[c]) {
			t.Errorf("chain %s holds rules other than the plan's (normalized):\n%s\nsave output:\n%s",
				c, lineDiff(strings.Join(want[c], "\n"), strings.Join(got[c], "\n")), after)
		}
	}
}

// lineChanges returns the lines only in after and only in before, counted as multisets
// and ignoring comment lines and chain counters.
func lineChanges(before, after string) (added, removed []string) {
	count := map[string]int{}
	for _, l := range saveLines(before) {
		count[l]++
	}
	for _, l := range saveLines(after) {
		if count[l] > 0 {
			count[l]--
			continue
		}
		added = append(added, l)
	}
	for _, l := range saveLines(before) {
		if count[l] > 0 {
			count[l]--
			removed = append(removed, l)
		}
	}
	return added, removed
}

// saveLines are the meaningful lines of iptables-save output: no "#" comments, no blank
// lines, chain counters zeroed.
func saveLines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if strings.HasPrefix(l, ":") {
			if i := strings.LastIndex(l, " ["); i > 0 {
				l = l[:i] + " [0:0]"
			}
		}
		out = append(out, l)
	}
	return out
}

// rulesByChain groups "-A CHAIN ..." lines by chain, in order, each normalized.
func rulesByChain(lines []string) (map[string][]string, error) {
	m := map[string][]string{}
	for _, l := range lines {
		chain, rule, err := normRule(l)
		if err != nil {
			return nil, err
		}
		m[chain] = append(m[chain], rule)
	}
	return m, nil
}

// normRule undoes the differences between a rule as skiff writes it and as iptables-save
// prints it: the implicit "-m tcp" after "-p tcp" that iptables-save spells out, the
// comment that it moves before the target and quotes its own way. It returns the chain
// and the rule's words with the comment last.
func normRule(line string) (chain, rule string, err error) {
	words, err := splitWords(line)
	if err != nil {
		return "", "", err
	}
	if len(words) < 2 || words[0] != "-A" {
		return "", "", fmt.Errorf("not a rule: %q", line)
	}
	chain, words = words[1], words[2:]
	var out []string
	comment := ""
	for i := 0; i < len(words); i++ {
		switch {
		case i+1 < len(words) && words[i] == "-m" && (words[i+1] == "tcp" || words[i+1] == "udp") && i > 1 && words[i-2] == "-p" && words[i-1] == words[i+1]:
			i++
		case i+3 < len(words) && words[i] == "-m" && words[i+1] == "comment" && words[i+2] == "--comment":
			comment = words[i+3]
			i += 3
		default:
			out = append(out, words[i])
		}
	}
	rule = strings.Join(out, " ")
	if comment != "" {
		rule += " /* " + comment + " */"
	}
	return chain, rule, nil
}

// splitWords splits a rule line as iptables-restore does: on spaces, with double quotes
// grouping and backslash escaping the next character inside them.
func splitWords(line string) ([]string, error) {
	var words []string
	var w strings.Builder
	inWord, quoted := false, false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quoted && c == '\\' && i+1 < len(line):
			i++
			w.WriteByte(line[i])
		case c == '"':
			quoted, inWord = !quoted, true
		case c == ' ' && !quoted:
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		default:
			w.WriteByte(c)
			inWord = true
		}
	}
	if quoted {
		return nil, fmt.Errorf("unterminated quote in %q", line)
	}
	if inWord {
		words = append(words, w.String())
	}
	return words, nil
}

func mapKeys(ms ...map[string][]string) func(func(string) bool) {
	return func(yield func(string) bool) {
		seen := map[string]bool{}
		for _, m := range ms {
			for k := range m {
				if !seen[k] {
					seen[k] = true
					if !yield(k) {
						return
					}
				}
			}
		}
	}
}

func TestNormRule(t *testing.T) {
	for _, tc := range []struct{ ours, saved string }{
		{`-A SKIFF_INBOUND -p tcp --dport 22 -j RETURN -m comment --comment "excluded inbound port"`,
			`-A SKIFF_INBOUND -p tcp -m tcp --dport 22 -m comment --comment "excluded inbound port" -j RETURN`},
		{`-A SKIFF_OUTPUT -m owner --uid-owner 1337 -j RETURN -m comment --comment "the proxy's own traffic is not captured (uid)"`,
			`-A SKIFF_OUTPUT -m owner --uid-owner 1337 -m comment --comment "the proxy\'s own traffic is not captured (uid)" -j RETURN`},
		{`-A SKIFF_REDIRECT -p tcp -j REDIRECT --to-ports 15001 -m comment --comment x`,
			`-A SKIFF_REDIRECT -p tcp -m comment --comment x -j REDIRECT --to-ports 15001`},
	} {
		c1, r1, err1 := normRule(tc.ours)
		c2, r2, err2 := normRule(tc.saved)
		if err1 != nil || err2 != nil || c1 != c2 || r1 != r2 {
			t.Errorf("normRule differs:\n%s %q (%v)\n%s %q (%v)", c1, r1, err1, c2, r2, err2)
		}
	}
	// What must stay different does.
	for _, pair := range [][2]string{
		{`-A X -p tcp --dport 22 -j RETURN`, `-A X -p tcp --dport 23 -j RETURN`},
		{`-A X -m owner --uid-owner 1 -j RETURN`, `-A X -m owner ! --uid-owner 1 -j RETURN`},
		{`-A X -j RETURN -m comment --comment a`, `-A X -j RETURN -m comment --comment b`},
		{`-A X -j RETURN`, `-A Y -j RETURN`},
	} {
		c1, r1, _ := normRule(pair[0])
		c2, r2, _ := normRule(pair[1])
		if c1 == c2 && r1 == r2 {
			t.Errorf("normRule makes %q and %q equal", pair[0], pair[1])
		}
	}
}
