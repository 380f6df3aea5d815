package config

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestAuthorizationDefault(t *testing.T) {
	c := Default()
	if c.Authorization.DefaultAction != AuthzAuto || c.Authorization.Policies == nil || len(c.Authorization.Policies) != 0 {
		t.Errorf("default authorization = %+v, want auto and no policies", c.Authorization)
	}
}

func TestAuthorizationParses(t *testing.T) {
	c, err := Parse("authz.yaml", []byte(`
authorization:
  default_action: deny
  policies:
    - name: no-admin
      action: deny
      rules:
        - paths: ["/admin", "/admin/*"]
          not_principals: ["spiffe://cluster.local/ns/ops/*"]
    - name: frontend
      action: allow
      rules:
        - principals: ["spiffe://cluster.local/ns/prod/sa/frontend", "*/sa/batch"]
          methods: [GET, POST]
          paths: ["*"]
          headers:
            - {name: x-tenant, regex: "[a-z]+"}
        - namespaces: [prod, "stag*"]
          source_cidrs: [10.0.0.0/8, "192.168.1.7", "fd00::/8"]
          ports: [8080, 9090]
    - name: allow-nothing
      action: allow
`))
	if err != nil {
		t.Fatal(err)
	}
	a := c.Authorization
	if a.DefaultAction != AuthzDeny || len(a.Policies) != 3 {
		t.Fatalf("authorization = %+v", a)
	}
	r := a.Policies[1].Rules[0]
	if !reflect.DeepEqual(r.Methods, []string{"GET", "POST"}) || r.Headers[0].Re() == nil || !r.Headers[0].Re().MatchString("abc") {
		t.Errorf("rule = %+v", r)
	}
	if got := a.Policies[1].Rules[1]; !reflect.DeepEqual(got.Ports, []int{8080, 9090}) || len(got.SourceCIDRs) != 3 {
		t.Errorf("rule = %+v", got)
	}
	if len(a.Policies[2].Rules) != 0 {
		t.Errorf("allow policy without rules = %+v", a.Policies[2])
	}
}

func TestAuthorizationErrorsNameKey(t *testing.T) {
	const head = "authorization:\n  policies:\n"
	// pol wraps one rule's YAML in an allow policy named p.
	pol := func(rule string) string {
		return head + "    - name: p\n      action: allow\n      rules:\n        - {}\n        - " + rule + "\n"
	}
	for _, tc := range []struct{ name, yaml, key, reason string }{
		{"default action", "authorization:\n  default_action: ALLOW\n", "authorization.default_action", "auto, allow or deny"},
		{"default action empty", "authorization:\n  default_action: \"\"\n", "authorization.default_action", "auto, allow or deny"},
		{"no name", head + "    - action: allow\n", "authorization.policies[0].name", "lowercase"},
		{"bad name", head + "    - {name: Bad Name, action: allow}\n", "authorization.policies[0].name", "lowercase"},
		{"duplicate name", head + "    - {name: a, action: allow}\n    - {name: a, action: deny, rules: [{}]}\n", "authorization.policies[1].name", "twice"},
		{"no action", head + "    - {name: a}\n", "authorization.policies[0].action", "allow or deny"},
		{"bad action", head + "    - {name: a, action: audit}\n", "authorization.policies[0].action", "allow or deny"},
		{"deny without rules", head + "    - {name: a, action: deny}\n", "authorization.policies[0].rules", "rules: [{}]"},
		{"deny with empty rules", head + "    - {name: a, action: deny, rules: []}\n", "authorization.policies[0].rules", "matches nothing"},
		{"unknown rule key", pol("{principal: [x]}"), "authorization.policies[0].rules[1].principal", "unknown key"},
		{"empty principal", pol(`{principals: ["spiffe://td/a", "spiffe://td/b", ""]}`), "authorization.policies[0].rules[1].principals[2]", "empty"},
		{"istio-style principal", pol(`{principals: ["cluster.local/ns/a/sa/b"]}`), "authorization.policies[0].rules[1].principals[0]", "SPIFFE ID"},
		{"principal without path", pol(`{principals: ["spiffe://cluster.local"]}`), "authorization.policies[0].rules[1].principals[0]", "trust domain and a path"},
		{"principal glob without scheme", pol(`{principals: ["cluster.local/*"]}`), "authorization.policies[0].rules[1].principals[0]", "spiffe:// or *"},
		{"principal with space", pol(`{principals: ["spiffe://td/a b"]}`), "authorization.policies[0].rules[1].principals[0]", "spaces"},
		{"not principal", pol(`{not_principals: ["spiffe://td/ok", "http://td/x"]}`), "authorization.policies[0].rules[1].not_principals[1]", "SPIFFE ID"},
		{"namespace with slash", pol(`{namespaces: [prod, "ns/prod"]}`), "authorization.policies[0].rules[1].namespaces[1]", "namespace"},
		{"empty namespace", pol(`{namespaces: [""]}`), "authorization.policies[0].rules[1].namespaces[0]", "namespace"},
		{"cidr", pol(`{source_cidrs: [10.0.0.0/8, 10.0.0.0/33]}`), "authorization.policies[0].rules[1].source_cidrs[1]", "not a CIDR"},
		{"address", pol(`{source_cidrs: [somewhere]}`), "authorization.policies[0].rules[1].source_cidrs[0]", "not an address"},
		{"port", pol(`{ports: [80, 0]}`), "authorization.policies[0].rules[1].ports[1]", "port"},
		{"port too big", pol(`{ports: [65536]}`), "authorization.policies[0].rules[1].ports[0]", "port"},
		{"port not a number", pol(`{ports: [http]}`), "authorization.policies[0].rules[1].ports[0]", ""},
		{"lower-case method", pol(`{methods: [GET, get]}`), "authorization.policies[0].rules[1].methods[1]", "capitals"},
		{"method with space", pol(`{methods: ["GET POST"]}`), "authorization.policies[0].rules[1].methods[0]", "capitals"},
		{"empty method", pol(`{methods: [""]}`), "authorization.policies[0].rules[1].methods[0]", "capitals"},
		{"relative path", pol(`{paths: ["/ok", "admin"]}`), "authorization.policies[0].rules[1].paths[1]", "start with /"},
		{"empty path", pol(`{paths: [""]}`), "authorization.policies[0].rules[1].paths[0]", "start with /"},
		{"inner star", pol(`{paths: ["/a/*/b"]}`), "authorization.policies[0].rules[1].paths[0]", "only end a prefix"},
		{"two stars", pol(`{paths: ["/a**"]}`), "authorization.policies[0].rules[1].paths[0]", "only end a prefix"},
		{"suffix glob", pol(`{paths: ["*.php"]}`), "authorization.policies[0].rules[1].paths[0]", "start with /"},
		{"query", pol(`{paths: ["/a?b=1"]}`), "authorization.policies[0].rules[1].paths[0]", "query"},
		{"escaped", pol(`{paths: ["/%61dmin"]}`), "authorization.policies[0].rules[1].paths[0]", "decoded"},
		{"dot segment", pol(`{paths: ["/a/../admin"]}`), "authorization.policies[0].rules[1].paths[0]", "normalized"},
		{"double slash", pol(`{paths: ["//admin*"]}`), "authorization.policies[0].rules[1].paths[0]", "normalized"},
		{"header name", pol(`{headers: [{name: "x y", exact: a}]}`), "authorization.policies[0].rules[1].headers[0].name", "header"},
		{"header two matchers", pol(`{headers: [{name: x, exact: a, prefix: b}]}`), "authorization.policies[0].rules[1].headers[0]", "exactly one"},
		{"header no matcher", pol(`{headers: [{name: x}]}`), "authorization.policies[0].rules[1].headers[0]", "exactly one"},
		{"header regex", pol(`{headers: [{name: x, present: true}, {name: y, regex: "("}]}`), "authorization.policies[0].rules[1].headers[1].regex", "RE2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("bad.yaml", []byte(tc.yaml))
			var le *LoadError
			if !errors.As(err, &le) {
				t.Fatalf("got %v, want a LoadError", err)
			}
			if le.Key != tc.key || !strings.Contains(err.Error(), tc.reason) {
				t.Errorf("got key %q, error %q; want key %q and %q", le.Key, err, tc.key, tc.reason)
			}
		})
	}
}

// validate itself returns a FieldError naming the full key (Parse turns it into a
// LoadError); the accepted forms of each condition pass.
func TestAuthorizationValidateDirect(t *testing.T) {
	ok := Authorization{DefaultAction: AuthzAllow, Policies: []AuthzPolicy{
		{Name: "a", Action: AuthzAllow, Rules: []AuthzRule{{
			Principals:    []string{"*", "spiffe://td/ns/a/sa/b", "spiffe://td/ns/a/*", "*/sa/b", "spiffe://*"},
			NotPrincipals: []string{"spiffe://td/x"},
			Namespaces:    []string{"prod", "*", "team-*"},
			SourceCIDRs:   []string{"10.1.2.3", "10.0.0.0/8", "::1", "fd00::/8"},
			Ports:         []int{1, 65535},
			Methods:       []string{"GET", "PROPFIND"},
			Paths:         []string{"*", "/", "/x", "/api/*", "/api*", "/.well-known/acme"},
			Headers:       []ValueMatch{{Name: "x-a", Exact: "1"}, {Name: "x-b", Absent: true}},
		}}},
		{Name: "b", Action: AuthzDeny, Rules: []AuthzRule{{}}},
		{Name: "nothing", Action: AuthzAllow},
	}}
	if err := ok.validate(); err != nil {
		t.Fatalf("valid section rejected: %v", err)
	}
	bad := ok
	bad.Policies = append([]AuthzPolicy(nil), ok.Policies...)
	bad.Policies[1].Rules = []AuthzRule{{}, {Ports: []int{80}}, {Principals: []string{"spiffe://td/a", "nope"}}}
	err := bad.validate()
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Key != "authorization.policies[1].rules[2].principals[1]" {
		t.Errorf("got %v, want a FieldError for authorization.policies[1].rules[2].principals[1]", err)
	}
}
