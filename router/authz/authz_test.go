package authz

import (
	"net/http"
	"net/netip"
	"testing"

	"skiff/config"
)

const (
	frontend = "spiffe://cluster.local/ns/prod/sa/frontend"
	intruder = "spiffe://cluster.local/ns/prod/sa/intruder"
	batch    = "spiffe://cluster.local/ns/jobs/sa/batch"
	foreign  = "spiffe://other.org/ns/prod/sa/frontend"
)

// engine compiles a YAML authorization section through the config loader, so every
// test also goes through validation.
func engine(t testing.TB, yaml string) *Engine {
	t.Helper()
	c, err := config.Parse("authz.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	e, err := Compile(&c.Authorization)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// tcp is a non-HTTP connection; get an HTTP GET.
func tcp(principal, src string, port uint16) *Request {
	return &Request{Principal: principal, Source: netip.MustParseAddr(src), Port: port}
}

func get(principal, src string, port uint16, path string, hdr ...string) *Request {
	r := tcp(principal, src, port)
	r.HTTP, r.Method, r.Path, r.Host, r.Header = true, "GET", path, "api.prod", http.Header{}
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Add(hdr[i], hdr[i+1])
	}
	return r
}

type verdict struct {
	req    *Request
	allow  bool
	policy string
}

func check(t *testing.T, e *Engine, cases []verdict) {
	t.Helper()
	for i, c := range cases {
		d := e.Check(c.req)
		if d.Allow != c.allow || d.Policy != c.policy {
			t.Errorf("case %d (%+v): got %+v, want allow=%v policy=%q", i, *c.req, d, c.allow, c.policy)
		}
	}
}

func TestNilEngineAllows(t *testing.T) {
	var e *Engine
	if d := e.Check(tcp("", "10.0.0.1", 80)); !d.Allow || d.Policy != DefaultPolicy {
		t.Errorf("nil engine: %+v", d)
	}
	if !e.Empty() {
		t.Error("nil engine is not Empty")
	}
}

func TestDefaultActions(t *testing.T) {
	r := get(frontend, "10.0.0.1", 8080, "/")
	for _, tc := range []struct {
		name, yaml string
		allow      bool
		empty      bool
	}{
		{"no section", "", true, true},
		{"auto without policies allows", "authorization: {default_action: auto}", true, true},
		{"allow", "authorization: {default_action: allow}", true, true},
		{"deny", "authorization: {default_action: deny}", false, false},
		{"auto with an allow policy denies the rest", `authorization:
  policies:
    - {name: other, action: allow, rules: [{principals: ["` + batch + `"]}]}`, false, false},
		{"auto with only deny policies allows the rest", `authorization:
  policies:
    - {name: other, action: deny, rules: [{principals: ["` + batch + `"]}]}`, true, false},
		{"allow default with an allow policy allows the rest", `authorization:
  default_action: allow
  policies:
    - {name: other, action: allow, rules: [{principals: ["` + batch + `"]}]}`, true, false},
		// Istio's allow-nothing idiom: an allow policy without rules matches nothing but
		// makes auto deny.
		{"allow policy without rules", `authorization:
  policies:
    - {name: allow-nothing, action: allow}`, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := engine(t, tc.yaml)
			if d := e.Check(r); d.Allow != tc.allow || d.Policy != DefaultPolicy {
				t.Errorf("got %+v, want allow=%v by the default", d, tc.allow)
			}
			if e.Empty() != tc.empty {
				t.Errorf("Empty() = %v, want %v", e.Empty(), tc.empty)
			}
		})
	}
}

func TestDenyWins(t *testing.T) {
	e := engine(t, `authorization:
  policies:
    - name: everyone-in-prod
      action: allow
      rules: [{namespaces: [prod]}]
    - name: no-intruder
      action: deny
      rules: [{principals: ["`+intruder+`"]}]
    - name: frontend
      action: allow
      rules: [{principals: ["`+frontend+`"]}]
`)
	check(t, e, []verdict{
		{get(intruder, "10.0.0.1", 80, "/"), false, "no-intruder"},
		{tcp(intruder, "10.0.0.1", 80), false, "no-intruder"},
		// The first allow policy that matches is named.
		{get(frontend, "10.0.0.1", 80, "/"), true, "everyone-in-prod"},
		{get(batch, "10.0.0.1", 80, "/"), false, DefaultPolicy},
	})
}

func TestPrincipals(t *testing.T) {
	e := engine(t, `authorization:
  policies:
    - name: exact
      action: allow
      rules: [{principals: ["`+frontend+`"], ports: [1]}]
    - name: glob
      action: allow
      rules: [{principals: ["spiffe://cluster.local/ns/jobs/*"], ports: [2]}]
    - name: suffix
      action: allow
      rules: [{principals: ["*/sa/frontend"], ports: [3]}]
    - name: any-peer
      action: allow
      rules: [{principals: ["*"], ports: [4]}]
    - name: not-frontend
      action: allow
      rules: [{not_principals: ["`+frontend+`"], ports: [5]}]
    - name: unauthenticated
      action: allow
      rules: [{not_principals: ["*"], ports: [6]}]
`)
	check(t, e, []verdict{
		{tcp(frontend, "10.0.0.1", 1), true, "exact"},
		{tcp(frontend+"x", "10.0.0.1", 1), false, DefaultPolicy},
		{tcp(foreign, "10.0.0.1", 1), false, DefaultPolicy},
		{tcp("", "10.0.0.1", 1), false, DefaultPolicy},
		{tcp(batch, "10.0.0.1", 2), true, "glob"},
		{tcp("spiffe://cluster.local/ns/jobs/sa/a/b/c", "10.0.0.1", 2), true, "glob"}, // * crosses '/'
		{tcp(frontend, "10.0.0.1", 2), false, DefaultPolicy},
		{tcp(frontend, "10.0.0.1", 3), true, "suffix"},
		{tcp(foreign, "10.0.0.1", 3), true, "suffix"},
		{tcp(intruder, "10.0.0.1", 3), false, DefaultPolicy},
		{tcp(intruder, "10.0.0.1", 4), true, "any-peer"},
		// No verified peer: "" matches no principal pattern, not even *.
		{tcp("", "10.0.0.1", 4), false, DefaultPolicy},
		{tcp(intruder, "10.0.0.1", 5), true, "not-frontend"},
		{tcp(frontend, "10.0.0.1", 5), false, DefaultPolicy},
		// ... but it does satisfy not_principals.
		{tcp("", "10.0.0.1", 5), true, "not-frontend"},
		{tcp("", "10.0.0.1", 6), true, "unauthenticated"},
		{tcp(frontend, "10.0.0.1", 6), false, DefaultPolicy},
	})
}

func TestNamespaces(t *testing.T) {
	e := engine(t, `authorization:
  policies:
    - name: prod
      action: allow
      rules: [{namespaces: [prod, "team-*"]}]
`)
	check(t, e, []verdict{
		{tcp(frontend, "10.0.0.1", 80), true, "prod"},
		{tcp(foreign, "10.0.0.1", 80), true, "prod"}, // the namespace alone, whatever the trust domain
		{tcp("spiffe://cluster.local/ns/team-a/sa/x", "10.0.0.1", 80), true, "prod"},
		{tcp(batch, "10.0.0.1", 80), false, DefaultPolicy},
		{tcp("spiffe://cluster.local/ns/prod", "10.0.0.1", 80), false, DefaultPolicy},
		{tcp("spiffe://cluster.local/workload/prod", "10.0.0.1", 80), false, DefaultPolicy},
		{tcp("", "10.0.0.1", 80), false, DefaultPolicy},
	})
}

func TestNamespaceOf(t *testing.T) {
	for id, want := range map[string]string{
		frontend:                      "prod",
		"spiffe://td/ns/a/sa/b/extra": "a",
		"spiffe://td/ns//sa/b":        "",
		"spiffe://td/ns/a":            "",
		"spiffe://td/ns/a/x/b":        "",
		"spiffe://td/x/ns/a/sa/b":     "",
		"spiffe://td":                 "",
		"spiffe:/td/ns/a/sa/b":        "",
		"":                            "",
		"spiffe://cluster.local/ns/kube-system/sa/": "kube-system",
	} {
		if got := Namespace(id); got != want {
			t.Errorf("Namespace(%q) = %q, want %q", id, got, want)
		}
	}
}

func TestGlob(t *testing.T) {
	for _, tc := range []struct {
		p, s string
		want bool
	}{
		{"*", "x", true},
		{"*", "", true},
		{"abc", "abc", true},
		{"abc", "abcd", false},
		{"a*", "a/b/c", true},
		{"*c", "a/b/c", true},
		{"a*c", "ac", true},
		{"a*c", "abcbc", true},
		{"a*c", "abcb", false},
		{"a*b*c", "axxbyyc", true},
		{"a*b*c", "axxcyyb", false},
		{"**", "anything", true},
		{"spiffe://td/ns/*/sa/web", "spiffe://td/ns/shop/sa/web", true},
		{"spiffe://td/ns/*/sa/web", "spiffe://td/ns/shop/sa/api", false},
	} {
		if got := Glob(tc.p, tc.s); got != tc.want {
			t.Errorf("Glob(%q, %q) = %v, want %v", tc.p, tc.s, got, tc.want)
		}
	}
}

func TestSourceCIDRsAndPorts(t *testing.T) {
	e := engine(t, `authorization:
  policies:
    - name: lan
      action: allow
      rules: [{source_cidrs: [10.1.0.0/16, "192.168.1.7", "fd00::/8"]}]
    - name: health
      action: allow
      rules: [{ports: [8081, 9100]}]
`)
	check(t, e, []verdict{
		{tcp("", "10.1.2.3", 80), true, "lan"},
		{tcp("", "::ffff:10.1.2.3", 80), true, "lan"}, // v4-mapped is the v4 address
		{tcp("", "10.2.0.1", 80), false, DefaultPolicy},
		{tcp("", "192.168.1.7", 80), true, "lan"},
		{tcp("", "192.168.1.8", 80), false, DefaultPolicy},
		{tcp("", "fd00::1", 80), true, "lan"},
		{tcp("", "fe80::1", 80), false, DefaultPolicy},
		{&Request{Port: 80}, false, DefaultPolicy}, // no source address: in no range
		{tcp("", "10.2.0.1", 8081), true, "health"},
		{tcp("", "10.2.0.1", 9100), true, "health"},
		{tcp("", "10.2.0.1", 9101), false, DefaultPolicy},
	})
}

func TestHTTPConditions(t *testing.T) {
	e := engine(t, `authorization:
  policies:
    - name: read
      action: allow
      rules: [{methods: [GET, HEAD], paths: ["/api/*", "/health", "/exact"]}]
    - name: any-path-post
      action: allow
      rules: [{methods: [POST], paths: ["*"], headers: [{name: x-tenant, regex: "t[0-9]+"}, {name: x-debug, absent: true}]}]
    - name: admin-token
      action: allow
      rules: [{paths: ["/admin*"], headers: [{name: authorization, prefix: "Bearer "}, {name: x-admin, present: true}]}]
    - name: by-host
      action: allow
      rules: [{paths: ["/host"], headers: [{name: host, exact: api.prod}]}]
`)
	post := func(path string, hdr ...string) *Request {
		r := get(frontend, "10.0.0.1", 80, path, hdr...)
		r.Method = "POST"
		return r
	}
	head := get(frontend, "10.0.0.1", 80, "/health")
	head.Method = "HEAD"
	otherHost := get(frontend, "10.0.0.1", 80, "/host")
	otherHost.Host = "api.test"
	check(t, e, []verdict{
		{get(frontend, "10.0.0.1", 80, "/api/v1/items"), true, "read"},
		{get(frontend, "10.0.0.1", 80, "/api/"), true, "read"},
		{get(frontend, "10.0.0.1", 80, "/api"), false, DefaultPolicy}, // the prefix is "/api/"
		{get(frontend, "10.0.0.1", 80, "/health"), true, "read"},
		{get(frontend, "10.0.0.1", 80, "/healthz"), false, DefaultPolicy},
		{head, true, "read"},
		{post("/api/v1"), false, DefaultPolicy}, // no x-tenant
		{post("/anything", "X-Tenant", "t42"), true, "any-path-post"},
		{post("/anything", "X-Tenant", "t42x"), false, DefaultPolicy},                   // regex is anchored
		{post("/anything", "X-Tenant", "t42", "X-Debug", ""), false, DefaultPolicy},     // present, though empty
		{post("/anything", "X-Tenant", "bad", "X-Tenant", "t1"), true, "any-path-post"}, // any value
		{get(frontend, "10.0.0.1", 80, "/admin/x", "Authorization", "Bearer abc", "X-Admin", "1"), true, "admin-token"},
		{get(frontend, "10.0.0.1", 80, "/admin/x", "Authorization", "Bearer abc"), false, DefaultPolicy}, // every header condition must hold
		{get(frontend, "10.0.0.1", 80, "/admin", "Authorization", "Basic abc", "X-Admin", "1"), false, DefaultPolicy},
		{get(frontend, "10.0.0.1", 80, "/host"), true, "by-host"},
		{otherHost, false, DefaultPolicy},
	})
}

// TCP semantics: on a connection that is not HTTP, a rule with an HTTP-only condition
// never matches in an allow policy, and matches without it in a deny policy.
func TestTCPSemantics(t *testing.T) {
	e := engine(t, `authorization:
  default_action: allow
  policies:
    - name: no-admin-on-8080
      action: deny
      rules: [{paths: ["/admin*"], ports: [8080]}]
    - name: no-delete-from-jobs
      action: deny
      rules: [{methods: [DELETE], namespaces: [jobs]}]
`)
	check(t, e, []verdict{
		{get(frontend, "10.0.0.1", 8080, "/admin/users"), false, "no-admin-on-8080"},
		{get(frontend, "10.0.0.1", 8080, "/users"), true, DefaultPolicy},
		// Not HTTP: the path cannot be seen, so the deny takes the whole port.
		{tcp(frontend, "10.0.0.1", 8080), false, "no-admin-on-8080"},
		{tcp(frontend, "10.0.0.1", 5432), true, DefaultPolicy},
		{tcp(batch, "10.0.0.1", 5432), false, "no-delete-from-jobs"},
		{get(batch, "10.0.0.1", 5432, "/"), true, DefaultPolicy},
	})

	allow := engine(t, `authorization:
  policies:
    - name: frontend-reads
      action: allow
      rules: [{principals: ["`+frontend+`"], methods: [GET]}]
    - name: frontend-db
      action: allow
      rules: [{principals: ["`+frontend+`"], ports: [5432]}]
`)
	check(t, allow, []verdict{
		{get(frontend, "10.0.0.1", 8080, "/"), true, "frontend-reads"},
		// Not HTTP: an allow granted on the method cannot be granted.
		{tcp(frontend, "10.0.0.1", 8080), false, DefaultPolicy},
		{tcp(frontend, "10.0.0.1", 5432), true, "frontend-db"},
	})
}

// Compile rejects what it cannot use even when handed a section that was not validated.
func TestCompileRejects(t *testing.T) {
	for name, a := range map[string]config.Authorization{
		"action":  {DefaultAction: config.AuthzAuto, Policies: []config.AuthzPolicy{{Name: "a", Action: "audit"}}},
		"default": {DefaultAction: "maybe"},
		"cidr":    {Policies: []config.AuthzPolicy{{Name: "a", Action: "allow", Rules: []config.AuthzRule{{SourceCIDRs: []string{"x"}}}}}},
		"port":    {Policies: []config.AuthzPolicy{{Name: "a", Action: "allow", Rules: []config.AuthzRule{{Ports: []int{70000}}}}}},
		"regex":   {Policies: []config.AuthzPolicy{{Name: "a", Action: "allow", Rules: []config.AuthzRule{{Headers: []config.ValueMatch{{Name: "x", Regex: "("}}}}}}},
		"header":  {Policies: []config.AuthzPolicy{{Name: "a", Action: "allow", Rules: []config.AuthzRule{{Headers: []config.ValueMatch{{Name: "x"}}}}}}},
	} {
		if _, err := Compile(&a); err == nil {
			t.Errorf("%s: Compile accepted %+v", name, a)
		}
	}
	// A regex the config did not compile is compiled here, anchored.
	a := config.Authorization{Policies: []config.AuthzPolicy{{Name: "a", Action: "allow",
		Rules: []config.AuthzRule{{Headers: []config.ValueMatch{{Name: "x", Regex: "b+"}}}}}}}
	e, err := Compile(&a)
	if err != nil {
		t.Fatal(err)
	}
	if !e.Check(get("", "10.0.0.1", 80, "/", "X", "bb")).Allow || e.Check(get("", "10.0.0.1", 80, "/", "X", "abb")).Allow {
		t.Error("uncompiled regex: not matched whole")
	}
}

// A realistic policy set: what Check runs on every request. The deny rules that look at
// HTTP name their port: on any other port's plain TCP they would deny every connection.
const benchPolicies = `authorization:
  policies:
    - name: no-admin
      action: deny
      rules: [{paths: ["/admin*"], not_principals: ["spiffe://cluster.local/ns/ops/*"], ports: [8080]}]
    - name: no-debug-header
      action: deny
      rules: [{headers: [{name: x-debug, regex: "(1|true|yes)"}], ports: [8080]}]
    - name: batch
      action: allow
      rules: [{principals: ["` + batch + `"], methods: [POST], paths: ["/jobs/*"]}]
    - name: frontend
      action: allow
      rules:
        - principals: ["spiffe://cluster.local/ns/prod/sa/frontend", "spiffe://cluster.local/ns/prod/sa/web-*"]
          methods: [GET, POST, PUT]
          paths: ["/api/*", "/health"]
          headers: [{name: x-tenant, prefix: t}]
    - name: lan-metrics
      action: allow
      rules: [{source_cidrs: [10.0.0.0/8, "fd00::/8"], ports: [9100]}]
`

func benchRequests() []*Request {
	return []*Request{
		get(frontend, "10.0.0.1", 8080, "/api/v1/items", "X-Tenant", "t1", "X-Debug", "0", "User-Agent", "x"),
		get(intruder, "10.0.0.1", 8080, "/api/v1/items", "X-Tenant", "t1"),
		get(frontend, "10.0.0.1", 8080, "/admin/users"),
		get(batch, "10.0.0.2", 8080, "/jobs/1"),
		tcp("", "10.9.9.9", 9100),
		tcp(frontend, "192.168.0.1", 5432),
	}
}

func TestCheckDoesNotAllocate(t *testing.T) {
	e := engine(t, benchPolicies)
	reqs := benchRequests()
	want := []bool{true, false, false, false, true, false}
	for i, r := range reqs {
		if d := e.Check(r); d.Allow != want[i] {
			t.Fatalf("request %d: %+v, want allow=%v", i, d, want[i])
		}
	}
	allocs := testing.AllocsPerRun(200, func() {
		for _, r := range reqs {
			_ = e.Check(r)
		}
	})
	if allocs != 0 {
		t.Errorf("Check allocates %v times per run of %d requests, want 0", allocs, len(reqs))
	}
}

func BenchmarkCheck(b *testing.B) {
	e := engine(b, benchPolicies)
	reqs := benchRequests()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		_ = e.Check(reqs[i%len(reqs)])
	}
}
