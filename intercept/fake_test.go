package intercept

import (
	"slices"
	"strings"
	"testing"
)

// The Fake is only worth having if it refuses what the kernel refuses; these are the
// refusals Apply and Remove could trip over (each checked against iptables 1.8.9, nft and
// legacy, in a network namespace).
func TestFakeRefusesWhatIptablesRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		do   func(f *Fake) error
	}{
		{"append to a missing chain", func(f *Fake) error { return f.Append("nat", "NOPE", "-j", "RETURN") }},
		{"jump to a missing chain", func(f *Fake) error { return f.Append("nat", "OUTPUT", "-j", "NOPE") }},
		{"check a jump to a missing chain", func(f *Fake) error { return f.DeleteIfExists("nat", "OUTPUT", "-j", "NOPE") }},
		{"jump to a built-in chain", func(f *Fake) error { return f.Append("nat", "PREROUTING", "-j", "OUTPUT") }},
		{"delete a built-in chain", func(f *Fake) error { return f.ClearAndDeleteChain("nat", "OUTPUT") }},
		{"delete a referenced chain", func(f *Fake) error {
			must(t, f.ClearChain("nat", "A"), f.ClearChain("nat", "B"), f.Append("nat", "A", "-j", "B"))
			return f.ClearAndDeleteChain("nat", "B")
		}},
		{"--dport without -p", func(f *Fake) error { return f.Append("nat", "OUTPUT", "--dport", "1", "-j", "RETURN") }},
		{"--uid-owner without -m owner", func(f *Fake) error { return f.Append("nat", "OUTPUT", "--uid-owner", "1", "-j", "RETURN") }},
		{"REDIRECT --to-ports without -p", func(f *Fake) error { return f.Append("nat", "OUTPUT", "-j", "REDIRECT", "--to-ports", "1") }},
		{"owner match under PREROUTING", func(f *Fake) error {
			must(t, f.ClearChain("nat", "A"), f.Append("nat", "A", "-m", "owner", "--uid-owner", "1", "-j", "RETURN"))
			return f.Append("nat", "PREROUTING", "-j", "A")
		}},
		{"REDIRECT under POSTROUTING", func(f *Fake) error {
			return f.Append("nat", "POSTROUTING", "-p", "tcp", "-j", "REDIRECT", "--to-ports", "1")
		}},
		{"a loop made reachable", func(f *Fake) error {
			must(t, f.ClearChain("nat", "A"), f.ClearChain("nat", "B"), f.Append("nat", "A", "-j", "B"), f.Append("nat", "B", "-j", "A"))
			return f.Append("nat", "OUTPUT", "-j", "A")
		}},
		{"unknown table", func(f *Fake) error { return f.ClearChain("natt", "A") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := NewFake()
			err := tc.do(f)
			if err == nil {
				t.Fatalf("Fake accepted it:\n%s", f.Save())
			}
			t.Logf("refused: %v", err)
			if tc.name == "owner match under PREROUTING" || tc.name == "a loop made reachable" {
				if s := f.Save(); strings.Contains(s, "-A PREROUTING") || strings.Contains(s, "-A OUTPUT") {
					t.Errorf("refused rule was kept:\n%s", s)
				}
			}
		})
	}
}

func TestFakeTables(t *testing.T) {
	var f Fake // the zero value is ready
	for _, c := range []string{"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"} {
		if ok, err := f.ChainExists("nat", c); !ok || err != nil {
			t.Errorf("built-in nat chain %s: exists %v, %v", c, ok, err)
		}
	}
	must(t,
		f.ClearChain("nat", "A"),
		f.Append("nat", "A", "-p", "tcp", "-m", "comment", "--comment", "two words", "-j", "RETURN"),
		f.AppendUnique("nat", "OUTPUT", "-p", "tcp", "-j", "A"),
		f.AppendUnique("nat", "OUTPUT", "-p", "tcp", "-j", "A"),
		f.AppendUnique("nat", "OUTPUT", "-j", "A", "-p", "tcp"), // not the same rulespec word for word
	)
	want := `*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:A - [0:0]
-A OUTPUT -p tcp -j A
-A OUTPUT -j A -p tcp
-A A -p tcp -m comment --comment "two words" -j RETURN
COMMIT
`
	if got := f.Save(); got != want {
		t.Fatalf("Save:\n%s", lineDiff(want, got))
	}
	if got, err := f.List("nat", "OUTPUT"); err != nil || !slices.Equal(got, []string{"-P OUTPUT ACCEPT", "-A OUTPUT -p tcp -j A", "-A OUTPUT -j A -p tcp"}) {
		t.Errorf("List OUTPUT: %q, %v", got, err)
	}
	if got, err := f.List("nat", "A"); err != nil || len(got) != 2 || got[0] != "-N A" {
		t.Errorf("List A: %q, %v", got, err)
	}
	// ClearChain flushes an existing chain; DeleteIfExists takes only the exact rule.
	must(t,
		f.DeleteIfExists("nat", "OUTPUT", "-p", "tcp", "-j", "A", "-m", "comment", "--comment", "x"),
		f.DeleteIfExists("nat", "OUTPUT", "-p", "tcp", "-j", "A"),
		f.DeleteIfExists("nat", "OUTPUT", "-j", "A", "-p", "tcp"),
		f.ClearChain("nat", "A"),
		f.DeleteIfExists("nat", "MISSING", "-j", "RETURN"), // -C on a missing chain: no rule, no error
	)
	if got, _ := f.List("nat", "A"); len(got) != 1 {
		t.Errorf("ClearChain left rules: %q", got)
	}
	must(t, f.ClearAndDeleteChain("nat", "A"), f.ClearAndDeleteChain("nat", "A"))
	if ok, _ := f.ChainExists("nat", "A"); ok {
		t.Error("chain A survived ClearAndDeleteChain")
	}
	// A chain that only jumps to itself can be deleted: the flush removes the reference.
	must(t, f.ClearChain("nat", "S"), f.Append("nat", "S", "-j", "S"), f.ClearAndDeleteChain("nat", "S"))
	// The owner match is fine under OUTPUT, REDIRECT under PREROUTING and OUTPUT.
	must(t,
		f.ClearChain("nat", "O"), f.Append("nat", "O", "-m", "owner", "--uid-owner", "1", "-j", "RETURN"), f.Append("nat", "OUTPUT", "-j", "O"),
		f.ClearChain("nat", "R"), f.Append("nat", "R", "-p", "tcp", "-j", "REDIRECT", "--to-ports", "1"),
		f.Append("nat", "PREROUTING", "-j", "R"), f.Append("nat", "OUTPUT", "-j", "R"),
	)
}

func must(t *testing.T, errs ...error) {
	t.Helper()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("step %d: %v", i+1, err)
		}
	}
}
