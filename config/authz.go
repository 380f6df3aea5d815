package config

import (
	"fmt"
	"strings"
)

// Authorization decides which inbound connections and requests reach the workload, by
// who sends them (the peer's mesh identity, its namespace, its address) and what they
// ask for (port; for HTTP, method, path and headers). Deny policies win over allow ones.
type Authorization struct {
	// DefaultAction applies when no policy matches: allow, deny, or auto (deny when any
	// allow policy exists, as Istio does; allow otherwise).
	DefaultAction string        `mapstructure:"default_action" json:"default_action"`
	Policies      []AuthzPolicy `mapstructure:"policies" json:"policies"`
}

// Values of authorization.default_action and of a policy's action.
const (
	AuthzAuto  = "auto"
	AuthzAllow = "allow"
	AuthzDeny  = "deny"
)

// AuthzPolicy applies its action to connections and requests that match any of its rules.
type AuthzPolicy struct {
	Name   string      `mapstructure:"name" json:"name"`
	Action string      `mapstructure:"action" json:"action"` // allow or deny
	Rules  []AuthzRule `mapstructure:"rules" json:"rules"`
}

// AuthzRule matches when every condition it sets holds; a list condition holds when any
// of its values matches. An unset condition matches everything.
type AuthzRule struct {
	// Principals are peer SPIFFE IDs: exact, or a glob where * matches any run of
	// characters ("spiffe://cluster.local/ns/prod/*").
	Principals    []string `mapstructure:"principals" json:"principals"`
	NotPrincipals []string `mapstructure:"not_principals" json:"not_principals"`
	// Namespaces are peer namespaces (the ns/<namespace> part of a Kubernetes SPIFFE ID),
	// exact or a glob with *.
	Namespaces []string `mapstructure:"namespaces" json:"namespaces"`
	// SourceCIDRs are peer address ranges.
	SourceCIDRs []string `mapstructure:"source_cidrs" json:"source_cidrs"`
	// Ports are destination ports of the workload.
	Ports []int `mapstructure:"ports" json:"ports"`
	// HTTP-only conditions. On a connection that is not HTTP, a rule with any of them
	// never matches in an allow policy, and matches without them in a deny policy (as in
	// Istio: a deny never fails open).
	Methods []string `mapstructure:"methods" json:"methods"`
	// Paths are exact, a prefix ending in *, or * for any path; they are matched on the
	// decoded path with dot segments resolved and slashes merged.
	Paths []string `mapstructure:"paths" json:"paths"`
	// Headers are conditions each of which must hold (as in a route's match); a header
	// sent more than once matches when any of its values does.
	Headers []ValueMatch `mapstructure:"headers" json:"headers"`
}

// validate checks the section and names the first bad key.
//
// A policy with no rules matches nothing, as in Istio. For an allow policy that is a
// useful idiom: it makes the auto default deny, so `{name: deny-all, action: allow}` on
// its own shuts the workload to everything no other allow policy lets in. A deny policy
// with no rules would do nothing at all, which is never what its author meant (denying
// everything is `rules: [{}]`, a rule without conditions), so it is rejected. `rules: []`
// and no rules key are the same.
func (a *Authorization) validate() error {
	if !oneOf(a.DefaultAction, AuthzAuto, AuthzAllow, AuthzDeny) {
		return &FieldError{"authorization.default_action", fmt.Sprintf("must be auto, allow or deny (got %q)", a.DefaultAction)}
	}
	names := map[string]bool{}
	for i := range a.Policies {
		p := &a.Policies[i]
		key := fmt.Sprintf("authorization.policies[%d]", i)
		if !nameRe.MatchString(p.Name) {
			return &FieldError{key + ".name", fmt.Sprintf("must be 1 to 63 lowercase letters, digits, '-', '.' or '_' (got %q)", p.Name)}
		}
		if names[p.Name] {
			return &FieldError{key + ".name", fmt.Sprintf("policy %q is defined twice", p.Name)}
		}
		names[p.Name] = true
		if !oneOf(p.Action, AuthzAllow, AuthzDeny) {
			return &FieldError{key + ".action", fmt.Sprintf("must be allow or deny (got %q)", p.Action)}
		}
		if p.Action == AuthzDeny && len(p.Rules) == 0 {
			return &FieldError{key + ".rules", "a deny policy without rules matches nothing; to deny everything write rules: [{}]"}
		}
		for j := range p.Rules {
			if err := p.Rules[j].validate(fmt.Sprintf("%s.rules[%d]", key, j)); err != nil {
				return err
			}
		}
	}
	return nil
}

func (r *AuthzRule) validate(key string) error {
	for _, l := range []struct {
		name string
		vs   []string
	}{{"principals", r.Principals}, {"not_principals", r.NotPrincipals}} {
		for k, v := range l.vs {
			if reason := principalProblem(v); reason != "" {
				return &FieldError{fmt.Sprintf("%s.%s[%d]", key, l.name, k), reason}
			}
		}
	}
	for k, v := range r.Namespaces {
		if v == "" || len(v) > 253 || strings.ContainsAny(v, "/ ") || hasControl(v) {
			return &FieldError{fmt.Sprintf("%s.namespaces[%d]", key, k), fmt.Sprintf("must be a namespace, exact or a glob with * (got %q)", v)}
		}
	}
	for k, v := range r.SourceCIDRs {
		if _, err := ParsePrefix(v); err != nil {
			return &FieldError{fmt.Sprintf("%s.source_cidrs[%d]", key, k), err.Error()}
		}
	}
	for k, port := range r.Ports {
		if err := checkPort(fmt.Sprintf("%s.ports[%d]", key, k), port); err != nil {
			return err
		}
	}
	for k, m := range r.Methods {
		if !headerNameRe.MatchString(m) || strings.ToUpper(m) != m {
			return &FieldError{fmt.Sprintf("%s.methods[%d]", key, k), fmt.Sprintf("must be an HTTP method in capitals such as GET (got %q)", m)}
		}
	}
	for k, p := range r.Paths {
		if reason := pathPatternProblem(p); reason != "" {
			return &FieldError{fmt.Sprintf("%s.paths[%d]", key, k), reason}
		}
	}
	return validateValueMatches(key+".headers", r.Headers, true)
}

// principalProblem says what is wrong with a principal pattern, or "".
func principalProblem(p string) string {
	const scheme = "spiffe://"
	switch {
	case p == "":
		return "must not be empty"
	case len(p) > 2048:
		return "must be at most 2048 bytes"
	case strings.Contains(p, " ") || hasControl(p):
		return fmt.Sprintf("must not hold spaces or control characters (got %q)", p)
	case strings.Contains(p, "*"):
		if !strings.HasPrefix(p, scheme) && p[0] != '*' {
			return fmt.Sprintf("a glob must start with spiffe:// or * (got %q)", p)
		}
		return ""
	case !strings.HasPrefix(p, scheme):
		// Istio writes principals without the scheme; skiff matches the whole ID.
		return fmt.Sprintf("must be a SPIFFE ID such as spiffe://cluster.local/ns/prod/sa/web, or a glob with * (got %q)", p)
	}
	td, path, _ := strings.Cut(p[len(scheme):], "/")
	if td == "" || path == "" {
		return fmt.Sprintf("must be a SPIFFE ID with a trust domain and a path, such as spiffe://cluster.local/ns/prod/sa/web (got %q)", p)
	}
	return ""
}

// pathPatternProblem says what is wrong with a path pattern, or "": "*" (any path), an
// exact path, or a prefix written with one trailing *.
func pathPatternProblem(p string) string {
	switch {
	case p == "*":
		return ""
	case !strings.HasPrefix(p, "/"):
		return fmt.Sprintf("must start with / (or be * for any path) (got %q)", p)
	case strings.Contains(strings.TrimSuffix(p, "*"), "*"):
		return fmt.Sprintf("* may only end a prefix, as in /api/* (got %q)", p)
	case strings.ContainsAny(p, "?# ") || hasControl(p):
		return fmt.Sprintf("must be a path without query, fragment, spaces or control characters (got %q)", p)
	case strings.Contains(p, "%"):
		// Requests are matched on their decoded path: an escape here would never match.
		return fmt.Sprintf("must be written decoded, without %%-escapes (got %q)", p)
	case strings.Contains(p, "//") || strings.Contains(p+"/", "/./") || strings.Contains(p+"/", "/../"):
		// Requests are matched on their normalized path: this would never match.
		return fmt.Sprintf("must be normalized: no empty, . or .. segments (got %q)", p)
	}
	return ""
}

func hasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return true
		}
	}
	return false
}
