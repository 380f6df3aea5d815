package config

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
	// Namespaces are peer namespaces (the ns/<namespace> part of a Kubernetes SPIFFE ID).
	Namespaces []string `mapstructure:"namespaces" json:"namespaces"`
	// SourceCIDRs are peer address ranges.
	SourceCIDRs []string `mapstructure:"source_cidrs" json:"source_cidrs"`
	// Ports are destination ports of the workload.
	Ports []int `mapstructure:"ports" json:"ports"`
	// HTTP-only conditions. On a connection that is not HTTP, a rule with any of them
	// never matches in an allow policy, and matches without them in a deny policy (as in
	// Istio: a deny never fails open).
	Methods []string     `mapstructure:"methods" json:"methods"`
	Paths   []string     `mapstructure:"paths" json:"paths"` // exact, or prefix ending in *
	Headers []ValueMatch `mapstructure:"headers" json:"headers"`
}

func (a *Authorization) validate() error { return nil }
