// Package authz decides whether an inbound connection or request may reach the
// workload, by the policies of config's authorization section.
//
// The semantics are those of Istio's AuthorizationPolicy: a request that any deny policy
// matches is denied; otherwise one that any allow policy matches is allowed; otherwise
// the default action decides (auto: deny when at least one allow policy exists, allow
// when none does). A policy matches when any of its rules does, a rule when every
// condition it sets holds, and a list condition when any of its values matches.
//
// A connection that is not proxied as HTTP is decided once, before anything reaches the
// workload, with Request.HTTP false. A rule that sets an HTTP-only condition (methods,
// paths, headers) cannot be judged on it: in an allow policy such a rule never matches,
// and in a deny policy it matches as if those conditions were not there, so that a
// deny never fails open.
package authz

import (
	"fmt"
	"net/http"
	"net/netip"
	"regexp"
	"strings"

	"skiff/config"
)

// Engine is a compiled, immutable set of policies; a nil Engine allows everything.
// Check reads it from many goroutines at once without locks.
type Engine struct {
	deny, allow  []policy
	defaultAllow bool
}

// DefaultPolicy is Decision.Policy when no policy matched.
const DefaultPolicy = "default"

type policy struct {
	name  string
	rules []rule
}

// rule is a config.AuthzRule with every value parsed. A nil list is an unset condition.
type rule struct {
	principals    []string
	notPrincipals []string
	namespaces    []string
	cidrs         []netip.Prefix
	ports         []uint16
	methods       []string
	paths         []pathPattern
	headers       []headerMatch
	// httpOnly is set when the rule has a condition only an HTTP request can be judged on.
	httpOnly bool
}

// pathPattern is "*" (any), an exact path, or a prefix (written with a trailing *).
type pathPattern struct {
	s      string
	any    bool
	prefix bool
}

type matchKind uint8

const (
	matchExact matchKind = iota
	matchPrefix
	matchRegex
	matchPresent
	matchAbsent
)

// headerMatch is one header condition. Go's HTTP server takes Host (and HTTP/2's
// :authority) out of the header map, so a condition on Host reads Request.Host.
type headerMatch struct {
	name  string // canonical form, for a lookup in http.Header without allocating
	host  bool
	kind  matchKind
	value string
	re    *regexp.Regexp
}

// Compile builds an Engine from a config section, which config.Validate has checked;
// Compile still rejects what it cannot use rather than trust that.
func Compile(a *config.Authorization) (*Engine, error) {
	e := &Engine{}
	for i := range a.Policies {
		p := &a.Policies[i]
		cp := policy{name: p.Name}
		for j := range p.Rules {
			r, err := compileRule(&p.Rules[j])
			if err != nil {
				return nil, fmt.Errorf("policies[%d].rules[%d]: %w", i, j, err)
			}
			cp.rules = append(cp.rules, r)
		}
		switch p.Action {
		case config.AuthzAllow:
			e.allow = append(e.allow, cp)
		case config.AuthzDeny:
			e.deny = append(e.deny, cp)
		default:
			return nil, fmt.Errorf("policies[%d].action: %q is not allow or deny", i, p.Action)
		}
	}
	switch a.DefaultAction {
	case config.AuthzAllow:
		e.defaultAllow = true
	case config.AuthzDeny:
	case config.AuthzAuto, "":
		e.defaultAllow = len(e.allow) == 0
	default:
		return nil, fmt.Errorf("default_action: %q is not auto, allow or deny", a.DefaultAction)
	}
	return e, nil
}

func compileRule(c *config.AuthzRule) (rule, error) {
	r := rule{
		principals:    nonEmpty(c.Principals),
		notPrincipals: nonEmpty(c.NotPrincipals),
		namespaces:    nonEmpty(c.Namespaces),
		methods:       nonEmpty(c.Methods),
	}
	for _, s := range c.SourceCIDRs {
		p, err := config.ParsePrefix(s)
		if err != nil {
			return rule{}, err
		}
		r.cidrs = append(r.cidrs, p)
	}
	for _, port := range c.Ports {
		if port < 1 || port > 65535 {
			return rule{}, fmt.Errorf("port %d out of range", port)
		}
		r.ports = append(r.ports, uint16(port))
	}
	for _, s := range c.Paths {
		switch {
		case s == "*":
			r.paths = append(r.paths, pathPattern{any: true})
		case strings.HasSuffix(s, "*"):
			r.paths = append(r.paths, pathPattern{s: strings.TrimSuffix(s, "*"), prefix: true})
		default:
			r.paths = append(r.paths, pathPattern{s: s})
		}
	}
	for i := range c.Headers {
		m := &c.Headers[i]
		h := headerMatch{name: http.CanonicalHeaderKey(m.Name)}
		h.host = h.name == "Host"
		switch {
		case m.Exact != "":
			h.kind, h.value = matchExact, m.Exact
		case m.Prefix != "":
			h.kind, h.value = matchPrefix, m.Prefix
		case m.Regex != "":
			h.kind, h.re = matchRegex, m.Re()
			if h.re == nil {
				re, err := regexp.Compile(`^(?:` + m.Regex + `)$`)
				if err != nil {
					return rule{}, fmt.Errorf("headers[%d]: %w", i, err)
				}
				h.re = re
			}
		case m.Present:
			h.kind = matchPresent
		case m.Absent:
			h.kind = matchAbsent
		default:
			return rule{}, fmt.Errorf("headers[%d]: no match given", i)
		}
		r.headers = append(r.headers, h)
	}
	r.httpOnly = len(r.methods) > 0 || len(r.paths) > 0 || len(r.headers) > 0
	return r, nil
}

// nonEmpty returns l, or nil for an empty list: an empty list sets no condition.
func nonEmpty(l []string) []string {
	if len(l) == 0 {
		return nil
	}
	return l
}

// Request is what a decision looks at. HTTP is false for a connection that is not
// proxied as HTTP; Method, Path, Host and Header are then unset.
type Request struct {
	Principal string // the peer's verified SPIFFE ID, "" without mesh mTLS
	Source    netip.Addr
	Port      uint16 // the workload's destination port
	HTTP      bool
	Method    string
	// Path is the request's decoded, normalized path (no query): what rules' paths
	// are matched against.
	Path   string
	Host   string // Host or :authority, for a header condition on Host
	Header http.Header
}

// Decision is the outcome of Check.
type Decision struct {
	Allow  bool
	Policy string // the policy that decided, or DefaultPolicy
}

// Check decides a request. It does not allocate.
func (e *Engine) Check(r *Request) Decision {
	if e == nil {
		return Decision{Allow: true, Policy: DefaultPolicy}
	}
	ns := Namespace(r.Principal)
	src := r.Source.Unmap()
	for i := range e.deny {
		if e.deny[i].matches(r, ns, src, true) {
			return Decision{Allow: false, Policy: e.deny[i].name}
		}
	}
	for i := range e.allow {
		if e.allow[i].matches(r, ns, src, false) {
			return Decision{Allow: true, Policy: e.allow[i].name}
		}
	}
	return Decision{Allow: e.defaultAllow, Policy: DefaultPolicy}
}

// Empty reports whether the engine allows everything without looking: no policies and
// an allowing default. Callers may skip building a Request then.
func (e *Engine) Empty() bool {
	return e == nil || len(e.deny) == 0 && len(e.allow) == 0 && e.defaultAllow
}

func (p *policy) matches(r *Request, ns string, src netip.Addr, deny bool) bool {
	for i := range p.rules {
		if p.rules[i].matches(r, ns, src, deny) {
			return true
		}
	}
	return false
}

func (ru *rule) matches(r *Request, ns string, src netip.Addr, deny bool) bool {
	if ru.principals != nil && !anyGlob(ru.principals, r.Principal) {
		return false
	}
	if ru.notPrincipals != nil && anyGlob(ru.notPrincipals, r.Principal) {
		return false
	}
	if ru.namespaces != nil && !anyGlob(ru.namespaces, ns) {
		return false
	}
	if ru.cidrs != nil && !containsAddr(ru.cidrs, src) {
		return false
	}
	if ru.ports != nil && !containsPort(ru.ports, r.Port) {
		return false
	}
	if !ru.httpOnly {
		return true
	}
	if !r.HTTP {
		// Not an HTTP request: an allow cannot be granted on what is not there, and a
		// deny is judged on the rest of the rule.
		return deny
	}
	if ru.methods != nil && !containsString(ru.methods, r.Method) {
		return false
	}
	if ru.paths != nil && !anyPath(ru.paths, r.Path) {
		return false
	}
	for i := range ru.headers {
		if !ru.headers[i].matches(r) {
			return false
		}
	}
	return true
}

// anyGlob reports whether s matches any of the patterns. An empty s (no verified peer,
// or no namespace in its ID) matches none, not even "*".
func anyGlob(patterns []string, s string) bool {
	if s == "" {
		return false
	}
	for _, p := range patterns {
		if Glob(p, s) {
			return true
		}
	}
	return false
}

// Glob reports whether s matches pattern, in which * stands for any run of characters,
// '/' included, and every other byte for itself.
func Glob(pattern, s string) bool {
	// Greedy with backtracking to the last star: enough for a pattern whose only
	// wildcard is *, and linear in practice for the short patterns of a policy.
	px, sx := 0, 0
	star, mark := -1, 0
	for sx < len(s) {
		switch {
		case px < len(pattern) && pattern[px] == '*':
			star, mark = px, sx
			px++
		case px < len(pattern) && pattern[px] == s[sx]:
			px++
			sx++
		case star >= 0:
			mark++
			px, sx = star+1, mark
		default:
			return false
		}
	}
	for px < len(pattern) && pattern[px] == '*' {
		px++
	}
	return px == len(pattern)
}

// Namespace returns the Kubernetes namespace of a SPIFFE ID of the form
// spiffe://<trust domain>/ns/<namespace>/sa/<service account>, or "".
func Namespace(id string) string {
	const scheme = "spiffe://"
	if !strings.HasPrefix(id, scheme) {
		return ""
	}
	rest := id[len(scheme):]
	i := strings.IndexByte(rest, '/')
	if i < 0 {
		return ""
	}
	rest, ok := strings.CutPrefix(rest[i:], "/ns/")
	if !ok {
		return ""
	}
	j := strings.IndexByte(rest, '/')
	if j <= 0 || !strings.HasPrefix(rest[j:], "/sa/") {
		return ""
	}
	return rest[:j]
}

func containsAddr(ps []netip.Prefix, a netip.Addr) bool {
	if !a.IsValid() {
		return false
	}
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func containsPort(ps []uint16, p uint16) bool {
	for _, x := range ps {
		if x == p {
			return true
		}
	}
	return false
}

func containsString(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func anyPath(ps []pathPattern, path string) bool {
	for i := range ps {
		p := &ps[i]
		switch {
		case p.any:
			return true
		case p.prefix:
			if strings.HasPrefix(path, p.s) {
				return true
			}
		case path == p.s:
			return true
		}
	}
	return false
}

// matches reports whether the request's header satisfies the condition: for a header
// sent more than once, any one of its values may match (so a second copy of a header
// cannot hide the value a deny policy looks for).
func (h *headerMatch) matches(r *Request) bool {
	if h.host {
		switch h.kind {
		case matchPresent:
			return r.Host != ""
		case matchAbsent:
			return r.Host == ""
		}
		return r.Host != "" && h.matchValue(r.Host)
	}
	vs := r.Header[h.name]
	switch h.kind {
	case matchPresent:
		return len(vs) > 0
	case matchAbsent:
		return len(vs) == 0
	}
	for _, v := range vs {
		if h.matchValue(v) {
			return true
		}
	}
	return false
}

func (h *headerMatch) matchValue(v string) bool {
	switch h.kind {
	case matchExact:
		return v == h.value
	case matchPrefix:
		return strings.HasPrefix(v, h.value)
	case matchRegex:
		return h.re.MatchString(v)
	}
	return false
}
