package meshtls

import (
	"bytes"
	"crypto/x509"
	"errors"
	"io/fs"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// ca runs `skiff ca args...` and returns the exit code and both outputs.
func ca(args ...string) (int, string, string) {
	var out, errOut bytes.Buffer
	code := CACommand(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func wantMode(t *testing.T, path string, want fs.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != want {
		t.Errorf("%s has mode %v, want %v", path, fi.Mode().Perm(), want)
	}
}

func wantFiles(t *testing.T, dir string, want ...string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("%s holds %v, want %v (no temporary files left)", dir, got, want)
	}
}

func TestCACommandRoundTrip(t *testing.T) {
	base := t.TempDir()
	caDir, out := filepath.Join(base, "ca"), filepath.Join(base, "web")

	code, stdout, stderr := ca("init", "--trust-domain", testTD, "--dir", caDir, "--lifetime", "720h")
	if code != 0 {
		t.Fatalf("ca init: exit %d: %s", code, stderr)
	}
	if !strings.Contains(stdout, `trust domain "example.org"`) {
		t.Errorf("ca init said %q", stdout)
	}
	wantFiles(t, caDir, CAFile, CAKeyFile)
	wantMode(t, filepath.Join(caDir, CAKeyFile), 0o600)
	wantMode(t, filepath.Join(caDir, CAFile), 0o644)
	wantMode(t, caDir, 0o700)

	root, err := LoadCA(caDir)
	if err != nil {
		t.Fatal(err)
	}
	if root.TrustDomain() != testTD || !root.Cert.IsCA || root.Cert.NotAfter.Sub(root.Cert.NotBefore) != 720*time.Hour+clockSkew {
		t.Errorf("root: trust domain %q, CA %v, valid %s to %s", root.TrustDomain(), root.Cert.IsCA, root.Cert.NotBefore, root.Cert.NotAfter)
	}
	if len(root.Cert.PermittedURIDomains) != 0 {
		t.Error("root has name constraints without --name-constraints")
	}

	const web = "spiffe://example.org/ns/default/sa/web"
	code, stdout, stderr = ca("issue", "--ca-dir", caDir, "--id", web, "--out", out, "--lifetime", "2h")
	if code != 0 {
		t.Fatalf("ca issue: exit %d: %s", code, stderr)
	}
	if !strings.Contains(stdout, "issued "+web) {
		t.Errorf("ca issue said %q", stdout)
	}
	wantFiles(t, out, CertFile, KeyFile, CAFile)
	wantMode(t, filepath.Join(out, KeyFile), 0o600)
	wantMode(t, filepath.Join(out, CertFile), 0o644)
	if !bytes.Equal(readBytes(t, filepath.Join(out, CAFile)), readBytes(t, filepath.Join(caDir, CAFile))) {
		t.Error("issued ca.crt is not the CA's ca.crt")
	}

	id, err := Load(out, testTD, time.Time{})
	if err != nil {
		t.Fatalf("loading what ca issue wrote: %v", err)
	}
	leaf := id.Certificate.Leaf
	switch {
	case id.ID.String() != web:
		t.Errorf("ID %q", id.ID)
	case leaf.NotAfter.Sub(leaf.NotBefore) != 2*time.Hour+clockSkew || time.Until(leaf.NotBefore) > -50*time.Second:
		t.Errorf("validity %s to %s: want from a minute ago for 2h", leaf.NotBefore, leaf.NotAfter)
	case leaf.IsCA || leaf.KeyUsage != x509.KeyUsageDigitalSignature:
		t.Errorf("CA %v, key usage %v", leaf.IsCA, leaf.KeyUsage)
	case !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}):
		t.Errorf("ext key usage %v", leaf.ExtKeyUsage)
	case leaf.PublicKeyAlgorithm != x509.ECDSA || leaf.SignatureAlgorithm != x509.ECDSAWithSHA256:
		t.Errorf("key %v, signature %v", leaf.PublicKeyAlgorithm, leaf.SignatureAlgorithm)
	case leaf.SerialNumber.BitLen() < 100 || leaf.SerialNumber.BitLen() > 128:
		t.Errorf("serial %v is not a random 128-bit number", leaf.SerialNumber)
	}
	if n := bytes.Count(readBytes(t, filepath.Join(out, CertFile)), []byte("BEGIN CERTIFICATE")); n != 1 {
		t.Errorf("tls.crt holds %d certificates, want the leaf alone", n)
	}
	if !bytes.Contains(readBytes(t, filepath.Join(out, KeyFile)), []byte("BEGIN PRIVATE KEY")) {
		t.Error("tls.key is not PKCS#8 PEM")
	}

	// Overwriting a key: refused without --force, and nothing changes.
	for _, c := range []struct {
		args []string
		dir  string
	}{
		{[]string{"init", "--trust-domain", testTD, "--dir", caDir}, caDir},
		{[]string{"issue", "--ca-dir", caDir, "--id", web, "--out", out}, out},
	} {
		before := map[string][]byte{}
		entries, _ := os.ReadDir(c.dir)
		for _, e := range entries {
			before[e.Name()] = readBytes(t, filepath.Join(c.dir, e.Name()))
		}
		code, _, stderr := ca(c.args...)
		if code != 1 || !strings.Contains(stderr, "refusing to overwrite") || !strings.Contains(stderr, "--force") {
			t.Errorf("ca %s over an existing key: exit %d, %q", c.args[0], code, stderr)
		}
		for name, b := range before {
			if !bytes.Equal(readBytes(t, filepath.Join(c.dir, name)), b) {
				t.Errorf("ca %s without --force changed %s", c.args[0], name)
			}
		}
		wantFiles(t, c.dir, slices.Collect(maps.Keys(before))...)

		code, _, stderr = ca(append(c.args, "--force")...)
		if code != 0 {
			t.Errorf("ca %s --force: exit %d, %s", c.args[0], code, stderr)
		}
		for name, b := range before {
			if name != CAFile && bytes.Equal(readBytes(t, filepath.Join(c.dir, name)), b) {
				t.Errorf("ca %s --force left %s as it was", c.args[0], name)
			}
		}
	}
	// The CA changed under the issued files: the next issue refreshes ca.crt too.
	if _, err := Load(out, testTD, time.Time{}); err != nil {
		t.Errorf("after both --force runs: %v", err)
	}
}

func TestCACommandErrors(t *testing.T) {
	base := t.TempDir()
	caDir := filepath.Join(base, "ca")
	if code, _, stderr := ca("init", "--trust-domain", testTD, "--dir", caDir); code != 0 {
		t.Fatal(stderr)
	}
	for _, c := range []struct {
		args []string
		code int
		says string
	}{
		{nil, 2, "Usage:"},
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"help"}, 0, ""},
		{[]string{"init", "--help"}, 0, "-trust-domain"},
		{[]string{"init", "--dir", base + "/x"}, 2, "missing --trust-domain"},
		{[]string{"issue", "--ca-dir", caDir}, 2, "missing --id, --out"},
		{[]string{"init", "--bogus"}, 1, "flag provided but not defined"},
		{[]string{"init", "--trust-domain", "Example.ORG", "--dir", base + "/x"}, 1, "lowercase"},
		{[]string{"init", "--trust-domain", testTD, "--dir", base + "/x", "extra"}, 1, `unexpected argument "extra"`},
		{[]string{"init", "--trust-domain", testTD, "--dir", base + "/x", "--lifetime", "-1h"}, 1, "--lifetime must be positive"},
		{[]string{"issue", "--ca-dir", caDir, "--id", "spiffe://example.org/a/../b", "--out", base + "/w"}, 1, `".." segment`},
		{[]string{"issue", "--ca-dir", caDir, "--id", "spiffe://other.org/ns/a/sa/b", "--out", base + "/w"}, 1, `not in the CA's trust domain "example.org"`},
		{[]string{"issue", "--ca-dir", caDir, "--id", "spiffe://example.org", "--out", base + "/w"}, 1, "needs a path"},
		{[]string{"issue", "--ca-dir", caDir, "--id", "spiffe://example.org/a", "--out", base + "/w", "--lifetime", "87600h"}, 1, "would outlive the CA"},
		{[]string{"issue", "--ca-dir", base + "/nothing", "--id", "spiffe://example.org/a", "--out", base + "/w"}, 1, "nothing/ca.key: no such file"},
	} {
		code, stdout, stderr := ca(c.args...)
		if code != c.code || !strings.Contains(stdout+stderr, c.says) {
			t.Errorf("ca %q: exit %d, output %q; want exit %d saying %q", c.args, code, stdout+stderr, c.code, c.says)
		}
	}
	if _, err := os.Stat(base + "/w"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a failed issue left its output directory behind: %v", err)
	}
}

func TestNameConstraints(t *testing.T) {
	root, err := NewCA(testTD, CAOptions{NameConstraints: true})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(root.Cert.PermittedURIDomains, []string{testTD}) {
		t.Fatalf("permitted URI domains %v", root.Cert.PermittedURIDomains)
	}
	now := time.Now()
	if _, err := Load(identityDir(t, issue(t, root, "spiffe://example.org/ns/a/sa/b")), testTD, now); err != nil {
		t.Errorf("a certificate in the trust domain: %v", err)
	}
	// A certificate for another trust domain that the root signed anyway does not verify.
	dir := identityDir(t, craft(t, root, &x509.Certificate{
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour),
		URIs: []*url.URL{{Scheme: "spiffe", Host: "other.org", Path: "/ns/a/sa/b"}},
	}))
	_, err = Load(dir, "", now)
	wantFileError(t, err, ErrUnchained, dir, CertFile)
}
