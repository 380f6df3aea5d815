package meshtls

import (
	"crypto/x509"
	"errors"
	"net/url"
	"strings"
	"testing"
)

func TestParseID(t *testing.T) {
	valid := []struct {
		in, td, path, ns, sa string
	}{
		{"spiffe://example.org/ns/default/sa/web", "example.org", "/ns/default/sa/web", "default", "web"},
		{"spiffe://cluster.local/ns/kube-system/sa/coredns", "cluster.local", "/ns/kube-system/sa/coredns", "kube-system", "coredns"},
		{"spiffe://example.org", "example.org", "", "", ""},
		{"spiffe://td_1-x.y/vm/db-01", "td_1-x.y", "/vm/db-01", "", ""},
		{"spiffe://example.org/Billing/API.v2_x-y", "example.org", "/Billing/API.v2_x-y", "", ""},
		{"spiffe://example.org/ns/a/sa/b/extra", "example.org", "/ns/a/sa/b/extra", "", ""}, // not the Kubernetes form
		{"spiffe://example.org/ns/a", "example.org", "/ns/a", "", ""},
		{"spiffe://example.org/...", "example.org", "/...", "", ""}, // only . and .. are dot segments
		{"spiffe://" + strings.Repeat("a", 255) + "/x", strings.Repeat("a", 255), "/x", "", ""},
	}
	for _, c := range valid {
		id, err := ParseID(c.in)
		if err != nil {
			t.Errorf("ParseID(%q): %v", c.in, err)
			continue
		}
		if id.String() != c.in || id.TrustDomain() != c.td || id.Path() != c.path ||
			id.Namespace() != c.ns || id.ServiceAccount() != c.sa || id.IsZero() || !id.MemberOf(c.td) {
			t.Errorf("ParseID(%q) = %q td %q path %q ns %q sa %q", c.in, id, id.TrustDomain(), id.Path(), id.Namespace(), id.ServiceAccount())
		}
	}

	invalid := []struct{ in, reason string }{
		{"", "empty"},
		{"example.org/ns/a", "spiffe://"},
		{"https://example.org/ns/a", `not "https"`},
		{"SPIFFE://example.org/ns/a", `not "SPIFFE"`},
		{"spiffe:/example.org", "spiffe://"},
		{"spiffe://", "trust domain is empty"},
		{"spiffe:///ns/a", "trust domain is empty"},
		{"spiffe://Example.org/ns/a", "lowercase"},
		{"spiffe://example.org:8443/ns/a", "port"},
		{"spiffe://user@example.org/ns/a", "user info"},
		{"spiffe://exa mple.org", "only lowercase"},
		{"spiffe://example.org/", "empty segment"},
		{"spiffe://example.org//a", "empty segment"},
		{"spiffe://example.org/a/", "empty segment"},
		{"spiffe://example.org/./a", `"." segment`},
		{"spiffe://example.org/a/..", `".." segment`},
		{"spiffe://example.org/a?b=c", "query"},
		{"spiffe://example.org?b=c", "query"},
		{"spiffe://example.org/a#frag", "fragment"},
		{"spiffe://example.org#frag", "fragment"},
		{"spiffe://example.org/a%20b", "percent"},
		{"spiffe://example.org/a b", "only letters"},
		{"spiffe://example.org/caf\u00e9", "only letters"},
		{"spiffe://" + strings.Repeat("a", 256), "longer than 255"},
		{"spiffe://example.org/" + strings.Repeat("a", 2048), "longer than 2048"},
	}
	for _, c := range invalid {
		id, err := ParseID(c.in)
		if err == nil {
			t.Errorf("ParseID(%q) = %q, want an error", c.in, id)
			continue
		}
		if !errors.Is(err, ErrInvalidID) || !strings.Contains(err.Error(), c.reason) {
			t.Errorf("ParseID(%q) error %q: want ErrInvalidID saying %q", c.in, err, c.reason)
		}
	}
}

func TestIDZeroAndTrustDomain(t *testing.T) {
	var zero ID
	if !zero.IsZero() || zero.String() != "" || zero.TrustDomain() != "" || zero.MemberOf("") {
		t.Errorf("zero ID misbehaves: %q %q", zero, zero.TrustDomain())
	}
	a, _ := ParseID("spiffe://example.org/ns/a/sa/b")
	b, _ := ParseID("spiffe://example.org/ns/a/sa/b")
	if a != b {
		t.Error("equal IDs do not compare ==")
	}
	td, err := TrustDomainID("example.org")
	if err != nil || td.String() != "spiffe://example.org" || td.Path() != "" {
		t.Errorf("TrustDomainID = %q, %v", td, err)
	}
	for _, bad := range []string{"", "Example.org", "spiffe://example.org", "a/b", "a:1"} {
		if err := CheckTrustDomain(bad); err == nil {
			t.Errorf("CheckTrustDomain(%q) = nil", bad)
		}
	}
}

func TestIDFromCert(t *testing.T) {
	u := func(s string) *url.URL {
		v, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, c := range []struct {
		name string
		uris []*url.URL
		want string
		err  error
	}{
		{"one", []*url.URL{u("spiffe://example.org/ns/a/sa/b")}, "spiffe://example.org/ns/a/sa/b", nil},
		{"none", nil, "", ErrNoID},
		{"two", []*url.URL{u("spiffe://example.org/a"), u("spiffe://example.org/b")}, "", ErrManyIDs},
		{"not spiffe", []*url.URL{u("https://example.org/a")}, "", ErrInvalidID},
		{"bad spiffe", []*url.URL{u("spiffe://Example.org/a")}, "", ErrInvalidID},
	} {
		id, err := IDFromCert(&x509.Certificate{URIs: c.uris})
		if c.err != nil {
			if !errors.Is(err, c.err) {
				t.Errorf("%s: error %v, want %v", c.name, err, c.err)
			}
			continue
		}
		if err != nil || id.String() != c.want {
			t.Errorf("%s: %q, %v", c.name, id, err)
		}
	}
}

func FuzzParseID(f *testing.F) {
	for _, s := range []string{
		"spiffe://example.org/ns/default/sa/web", "spiffe://example.org", "spiffe://a/b/../c",
		"spiffe://a:1/b", "spiffe://a/b?c#d", "spiffe://a//b", "spiffe://A/b", "spiffe://a/%41",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseID(s)
		if err != nil {
			return
		}
		if id.String() != s {
			t.Fatalf("String() = %q, parsed from %q", id, s)
		}
		// A valid ID is a URL that says the same thing, as it is in a certificate.
		u, err := url.Parse(s)
		if err != nil {
			t.Fatalf("valid ID %q is not a URL: %v", s, err)
		}
		if u.Scheme != "spiffe" || u.Host != id.TrustDomain() || u.Path != id.Path() || u.String() != s {
			t.Fatalf("ID %q as a URL: scheme %q host %q path %q string %q", s, u.Scheme, u.Host, u.Path, u)
		}
		if err := CheckTrustDomain(id.TrustDomain()); err != nil {
			t.Fatalf("trust domain of valid ID %q: %v", s, err)
		}
	})
}
