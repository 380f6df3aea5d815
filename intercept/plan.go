// Package intercept plans and installs the iptables rules that send a workload's TCP
// traffic to the proxy.
//
// The plan is a pure function of the configuration (Build), golden-tested, and printed in
// iptables-save form by `skiff init --dry-run`. Applying it is a separate step (Apply,
// Remove) that talks to the kernel through the Tables interface, which go-iptables
// implements and an in-memory fake implements in tests.
package intercept

import (
	"fmt"
	"net"
	"strconv"
	"strings"

	"skiff/config"
)

// Family is the IP family a plan is for.
type Family int

const (
	IPv4 Family = iota
	IPv6
)

func (f Family) String() string {
	if f == IPv6 {
		return "ipv6"
	}
	return "ipv4"
}

// The table and chains skiff owns. Every rule skiff makes lives in these chains, except
// the two jumps into them from the built-in chains.
const (
	Table = "nat"

	ChainInbound    = "SKIFF_INBOUND"     // PREROUTING → here: decides which inbound connections are captured
	ChainInRedirect = "SKIFF_IN_REDIRECT" // → the inbound listener
	ChainOutput     = "SKIFF_OUTPUT"      // OUTPUT → here: decides which outbound connections are captured
	ChainRedirect   = "SKIFF_REDIRECT"    // → the outbound listener
)

// InboundPassthroughV4 is the source address the proxy binds when it forwards an inbound
// connection to the app. Rules let it through untouched; without it the proxy's own
// forward to the pod's address over lo would be sent back to the inbound listener.
// The same convention as Istio's 127.0.0.6.
const InboundPassthroughV4 = "127.0.0.6"

// The only rules skiff adds outside its own chains.
var (
	jumpInbound  = Rule{Chain: "PREROUTING", Args: []string{"-p", "tcp", "-j", ChainInbound}, Comment: "skiff inbound capture"}
	jumpOutbound = Rule{Chain: "OUTPUT", Args: []string{"-p", "tcp", "-j", ChainOutput}, Comment: "skiff outbound capture"}
)

// Rule is one iptables rule: the chain it is appended to, its match and target
// arguments, and a comment saying why it exists (installed with -m comment).
type Rule struct {
	Chain   string
	Args    []string
	Comment string
}

// Spec is the full argument list for go-iptables, comment included.
func (r Rule) Spec() []string {
	spec := append([]string{}, r.Args...)
	if r.Comment != "" {
		spec = append(spec, "-m", "comment", "--comment", r.Comment)
	}
	return spec
}

// Plan is the rule set for one IP family.
type Plan struct {
	Family Family
	// Chains skiff creates in the nat table, in creation order.
	Chains []string
	// Rules in skiff's own chains, in order.
	Rules []Rule
	// Jumps from the built-in chains into skiff's chains.
	Jumps []Rule
}

// Build returns the plan for one family. It is pure: the same config gives the same plan.
func Build(cfg *config.Config, fam Family) Plan {
	p := Plan{Family: fam}
	px, cp := cfg.Proxy, cfg.Capture
	loopback := "127.0.0.1/32"
	if fam == IPv6 {
		loopback = "::1/128"
	}
	uid, gid := strconv.Itoa(px.UID), strconv.Itoa(px.GID)
	_, adminPort, _ := net.SplitHostPort(px.AdminAddress)

	if cp.Inbound.Enabled {
		p.Chains = append(p.Chains, ChainInbound, ChainInRedirect)
		p.add(ChainInRedirect, "send to the inbound listener", "-p", "tcp", "-j", "REDIRECT", "--to-ports", strconv.Itoa(px.InboundPort))
		// The proxy's own ports are never captured, or a connection to them would loop.
		own := []string{adminPort, strconv.Itoa(px.OutboundPort), strconv.Itoa(px.InboundPort)}
		p.add(ChainInbound, "proxy ports are not captured", "-p", "tcp", "-m", "multiport", "--dports", strings.Join(own, ","), "-j", "RETURN")
		for _, port := range cp.Inbound.ExcludePorts {
			p.add(ChainInbound, "excluded inbound port", "-p", "tcp", "--dport", strconv.Itoa(port), "-j", "RETURN")
		}
		if len(cp.Inbound.IncludePorts) == 0 {
			p.add(ChainInbound, "capture every other inbound port", "-p", "tcp", "-j", ChainInRedirect)
		} else {
			for _, port := range cp.Inbound.IncludePorts {
				p.add(ChainInbound, "included inbound port", "-p", "tcp", "--dport", strconv.Itoa(port), "-j", ChainInRedirect)
			}
		}
		p.Jumps = append(p.Jumps, jumpInbound)
	}

	if cp.Outbound.Enabled {
		p.Chains = append(p.Chains, ChainOutput, ChainRedirect)
		p.add(ChainRedirect, "send to the outbound listener", "-p", "tcp", "-j", "REDIRECT", "--to-ports", strconv.Itoa(px.OutboundPort))
		if fam == IPv4 {
			p.add(ChainOutput, "the proxy's inbound forward to the app", "-s", InboundPassthroughV4+"/32", "-o", "lo", "-j", "RETURN")
			if cp.Inbound.Enabled {
				// The proxy dialling this pod's own address (not 127.0.0.1) over lo is an
				// app reaching itself through the mesh: it gets the inbound side too.
				p.add(ChainOutput, "proxy to own pod address goes through inbound", "!", "-d", loopback, "-o", "lo", "-m", "owner", "--uid-owner", uid, "-j", ChainInRedirect)
			}
		}
		p.add(ChainOutput, "app to itself over lo is not captured", "-o", "lo", "-m", "owner", "!", "--uid-owner", uid, "-j", "RETURN")
		p.add(ChainOutput, "the proxy's own traffic is not captured (uid)", "-m", "owner", "--uid-owner", uid, "-j", "RETURN")
		if fam == IPv4 && cp.Inbound.Enabled {
			p.add(ChainOutput, "proxy to own pod address goes through inbound", "!", "-d", loopback, "-o", "lo", "-m", "owner", "--gid-owner", gid, "-j", ChainInRedirect)
		}
		p.add(ChainOutput, "app to itself over lo is not captured", "-o", "lo", "-m", "owner", "!", "--gid-owner", gid, "-j", "RETURN")
		p.add(ChainOutput, "the proxy's own traffic is not captured (gid)", "-m", "owner", "--gid-owner", gid, "-j", "RETURN")
		p.add(ChainOutput, "loopback destination is not captured", "-d", loopback, "-j", "RETURN")
		for _, s := range cp.Outbound.ExcludeCIDRs {
			if pfx, ok := familyPrefix(s, fam); ok {
				p.add(ChainOutput, "excluded outbound range", "-d", pfx, "-j", "RETURN")
			}
		}
		for _, port := range cp.Outbound.ExcludePorts {
			p.add(ChainOutput, "excluded outbound port", "-p", "tcp", "--dport", strconv.Itoa(port), "-j", "RETURN")
		}
		// What is left is captured, narrowed by the include lists when they are set.
		var dsts [][]string
		if len(cp.Outbound.IncludeCIDRs) == 0 {
			dsts = [][]string{nil}
		}
		for _, s := range cp.Outbound.IncludeCIDRs {
			if pfx, ok := familyPrefix(s, fam); ok {
				dsts = append(dsts, []string{"-d", pfx})
			}
		}
		for _, d := range dsts {
			if len(cp.Outbound.IncludePorts) == 0 {
				p.add(ChainOutput, "capture outbound", append(append([]string{}, d...), "-j", ChainRedirect)...)
				continue
			}
			for _, port := range cp.Outbound.IncludePorts {
				p.add(ChainOutput, "capture included outbound port", append(append([]string{}, d...), "-p", "tcp", "--dport", strconv.Itoa(port), "-j", ChainRedirect)...)
			}
		}
		p.Jumps = append(p.Jumps, jumpOutbound)
	}
	return p
}

func (p *Plan) add(chain, comment string, args ...string) {
	p.Rules = append(p.Rules, Rule{Chain: chain, Args: args, Comment: comment})
}

// familyPrefix returns s as a CIDR string when it belongs to fam.
func familyPrefix(s string, fam Family) (string, bool) {
	pfx, err := config.ParsePrefix(s)
	if err != nil {
		return "", false // Validate has already refused it
	}
	if pfx.Addr().Is4() != (fam == IPv4) {
		return "", false
	}
	return pfx.String(), true
}

// Save renders the plan in iptables-save form, as `iptables-restore --noflush` would take it.
func (p Plan) Save() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# skiff capture plan (%s)\n*%s\n", p.Family, Table)
	for _, c := range p.Chains {
		fmt.Fprintf(&b, ":%s - [0:0]\n", c)
	}
	for _, r := range p.Jumps {
		writeRule(&b, r)
	}
	for _, r := range p.Rules {
		writeRule(&b, r)
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

func writeRule(b *strings.Builder, r Rule) {
	b.WriteString("-A ")
	b.WriteString(r.Chain)
	for _, a := range r.Spec() {
		b.WriteByte(' ')
		if strings.ContainsAny(a, " \"") || a == "" {
			a = strconv.Quote(a)
		}
		b.WriteString(a)
	}
	b.WriteByte('\n')
}
