package meshtls

import (
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
)

// ID is a SPIFFE ID: a trust domain and a path, spiffe://<trust-domain><path>. The zero
// ID is no ID. IDs are comparable with ==.
type ID struct {
	s  string // the whole ID, as parsed: String needs no allocation
	td int    // index in s where the path starts
}

const (
	scheme = "spiffe://"
	// Limits from the SPIFFE ID specification.
	maxIDLen          = 2048
	maxTrustDomainLen = 255
)

// ErrInvalidID is wrapped by every error ParseID and CheckTrustDomain return.
var ErrInvalidID = errors.New("invalid SPIFFE ID")

// ParseID parses and validates a SPIFFE ID as the SPIFFE ID specification defines it:
// the scheme is spiffe, the trust domain is lowercase letters, digits, dots, dashes and
// underscores, each path segment is non-empty, not . or .., and made of letters, digits,
// dots, dashes and underscores; there is no port, user info, query or fragment, and no
// percent-encoding. The path may be empty (the ID of a trust domain itself).
func ParseID(s string) (ID, error) {
	bad := func(reason string) (ID, error) {
		return ID{}, fmt.Errorf("%w %q: %s", ErrInvalidID, s, reason)
	}
	switch {
	case s == "":
		return bad("empty")
	case len(s) > maxIDLen:
		return bad(fmt.Sprintf("longer than %d bytes", maxIDLen))
	case !strings.HasPrefix(s, scheme):
		if i := strings.Index(s, "://"); i > 0 {
			return bad(fmt.Sprintf("scheme must be spiffe, not %q", s[:i]))
		}
		return bad("must start with spiffe://")
	}
	rest := s[len(scheme):]
	td, path := rest, ""
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		td, path = rest[:i], rest[i:]
	}
	if reason := trustDomainProblem(td); reason != "" {
		return bad(reason)
	}
	if reason := pathProblem(path); reason != "" {
		return bad(reason)
	}
	return ID{s: s, td: len(scheme) + len(td)}, nil
}

// CheckTrustDomain returns an error wrapping ErrInvalidID when td is not a valid trust
// domain name (lowercase letters, digits, dots, dashes, underscores; no scheme).
func CheckTrustDomain(td string) error {
	if reason := trustDomainProblem(td); reason != "" {
		return fmt.Errorf("%w: trust domain %q: %s", ErrInvalidID, td, reason)
	}
	return nil
}

// TrustDomainID returns the ID of a trust domain itself, spiffe://<td>.
func TrustDomainID(td string) (ID, error) {
	if err := CheckTrustDomain(td); err != nil {
		return ID{}, err
	}
	return ID{s: scheme + td, td: len(scheme) + len(td)}, nil
}

func trustDomainProblem(td string) string {
	switch {
	case td == "":
		return "trust domain is empty"
	case strings.Contains(td, "://"):
		return "a trust domain is a name alone, without a scheme"
	case len(td) > maxTrustDomainLen:
		return fmt.Sprintf("trust domain is longer than %d bytes", maxTrustDomainLen)
	}
	for i := 0; i < len(td); i++ {
		c := td[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '.', c == '-', c == '_':
		case c == ':':
			return "trust domain must not have a port"
		case c == '@':
			return "trust domain must not have user info"
		case c == '?':
			return "must not have a query"
		case c == '#':
			return "must not have a fragment"
		case c >= 'A' && c <= 'Z':
			return "trust domain must be lowercase"
		default:
			return fmt.Sprintf("trust domain has %q: only lowercase letters, digits, '.', '-' and '_' are allowed", c)
		}
	}
	return ""
}

func pathProblem(path string) string {
	if path == "" {
		return ""
	}
	// path starts with '/'; each segment follows one.
	for seg := range strings.SplitSeq(path[1:], "/") {
		switch seg {
		case "":
			return "path has an empty segment (a doubled or trailing slash)"
		case ".", "..":
			return fmt.Sprintf("path has a %q segment", seg)
		}
		for i := 0; i < len(seg); i++ {
			c := seg[i]
			switch {
			case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '-', c == '_':
			case c == '?':
				return "must not have a query"
			case c == '#':
				return "must not have a fragment"
			case c == '%':
				return "path must not be percent-encoded"
			default:
				return fmt.Sprintf("path has %q: only letters, digits, '.', '-' and '_' are allowed", c)
			}
		}
	}
	return ""
}

// String returns the ID as spiffe://<trust-domain><path>, or "" for the zero ID.
func (id ID) String() string { return id.s }

// IsZero reports whether id is the zero ID.
func (id ID) IsZero() bool { return id.s == "" }

// TrustDomain returns the trust domain, e.g. "cluster.local".
func (id ID) TrustDomain() string {
	if id.s == "" {
		return ""
	}
	return id.s[len(scheme):id.td]
}

// Path returns the path, e.g. "/ns/default/sa/web", or "" for a trust domain's own ID.
func (id ID) Path() string { return id.s[id.td:] }

// MemberOf reports whether id belongs to the trust domain td.
func (id ID) MemberOf(td string) bool { return id.s != "" && id.TrustDomain() == td }

// Namespace returns the namespace of a Kubernetes ID (/ns/<namespace>/sa/<service-account>),
// or "" when the path is not of that form.
func (id ID) Namespace() string {
	ns, _, _ := id.kubernetes()
	return ns
}

// ServiceAccount returns the service account of a Kubernetes ID
// (/ns/<namespace>/sa/<service-account>), or "" when the path is not of that form.
func (id ID) ServiceAccount() string {
	_, sa, _ := id.kubernetes()
	return sa
}

func (id ID) kubernetes() (ns, sa string, ok bool) {
	rest, ok := strings.CutPrefix(id.Path(), "/ns/")
	if !ok {
		return "", "", false
	}
	ns, sa, ok = strings.Cut(rest, "/sa/")
	if !ok || ns == "" || sa == "" || strings.Contains(ns, "/") || strings.Contains(sa, "/") {
		return "", "", false
	}
	return ns, sa, true
}

// Errors IDFromCert returns, for callers that tell them apart.
var (
	// ErrNoID is a certificate without a URI SAN, so without a SPIFFE ID.
	ErrNoID = errors.New("certificate has no URI SAN (no SPIFFE ID)")
	// ErrManyIDs is a certificate with more than one URI SAN: an X.509-SVID has exactly one.
	ErrManyIDs = errors.New("certificate has more than one URI SAN; an X.509-SVID has exactly one")
)

// IDFromCert returns the SPIFFE ID a certificate carries: its one URI SAN, which must be
// a valid SPIFFE ID.
func IDFromCert(c *x509.Certificate) (ID, error) {
	switch len(c.URIs) {
	case 0:
		return ID{}, ErrNoID
	case 1:
	default:
		return ID{}, fmt.Errorf("%w (%d)", ErrManyIDs, len(c.URIs))
	}
	id, err := ParseID(c.URIs[0].String())
	if err != nil {
		return ID{}, fmt.Errorf("certificate URI SAN: %w", err)
	}
	return id, nil
}
