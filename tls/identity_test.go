package meshtls

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoad(t *testing.T) {
	ca := newTestCA(t, testTD)
	c := issue(t, ca, "spiffe://example.org/ns/default/sa/web")
	dir := identityDir(t, c)
	for _, td := range []string{testTD, ""} {
		id, err := Load(dir, td, time.Time{})
		if err != nil {
			t.Fatalf("Load(trust domain %q): %v", td, err)
		}
		if id.ID.String() != "spiffe://example.org/ns/default/sa/web" || id.ID.Namespace() != "default" || id.ID.ServiceAccount() != "web" {
			t.Errorf("ID = %q", id.ID)
		}
		if !id.NotAfter.Equal(c.Cert.NotAfter) || id.Certificate.Leaf == nil || !id.Certificate.Leaf.Equal(c.Cert) ||
			len(id.Certificate.Certificate) != 1 || id.Certificate.PrivateKey == nil {
			t.Errorf("identity does not hold the certificate written: %+v", id)
		}
		if _, err := c.Cert.Verify(x509.VerifyOptions{Roots: id.Roots}); err != nil {
			t.Errorf("Roots do not hold ca.crt: %v", err)
		}
	}
}

func TestLoadRejects(t *testing.T) {
	now := time.Now()
	ca := newTestCA(t, testTD)
	other := newTestCA(t, "other.org")
	sameTDOtherRoot := newTestCA(t, testTD)
	const web = "spiffe://example.org/ns/default/sa/web"
	good := issue(t, ca, web)
	foreign := issue(t, sameTDOtherRoot, web)
	caKey, err := x509.MarshalPKCS8PrivateKey(ca.Key)
	if err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		name  string
		creds *Credentials
		err   error
		file  string
		says  string
	}{
		{"expired", issueAt(t, ca, web, time.Hour, now.Add(-48*time.Hour)), ErrExpired, CertFile, "certificate expired at"},
		{"not yet valid", issueAt(t, ca, web, time.Hour, now.Add(2*time.Hour)), ErrNotYetValid, CertFile, "not yet valid: valid from"},
		{"wrong trust domain", issue(t, other, "spiffe://other.org/ns/default/sa/web"), ErrTrustDomain, CertFile, `is in "other.org", not "example.org"`},
		{"mismatched key", &Credentials{CertPEM: good.CertPEM, KeyPEM: issue(t, ca, web).KeyPEM, CAPEM: good.CAPEM}, ErrKeyMismatch, KeyFile, "does not match the certificate in tls.crt"},
		{"unchained", &Credentials{CertPEM: foreign.CertPEM, KeyPEM: foreign.KeyPEM, CAPEM: good.CAPEM}, ErrUnchained, CertFile, "does not chain to the trust bundle in ca.crt"},
		{"no URI SAN", craft(t, ca, &x509.Certificate{
			Subject: pkix.Name{CommonName: "web"}, NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		}), ErrNoID, CertFile, "no URI SAN"},
		{"two URI SANs", craft(t, ca, &x509.Certificate{
			NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour),
			URIs: []*url.URL{{Scheme: "spiffe", Host: testTD, Path: "/a"}, {Scheme: "spiffe", Host: testTD, Path: "/b"}},
		}), ErrManyIDs, CertFile, "more than one URI SAN"},
		{"trust domain ID", craft(t, ca, &x509.Certificate{
			NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour), URIs: []*url.URL{{Scheme: "spiffe", Host: testTD}},
		}), nil, CertFile, "not a workload's"},
		{"server only", craft(t, ca, &x509.Certificate{
			NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			URIs: []*url.URL{{Scheme: "spiffe", Host: testTD, Path: "/a"}},
		}), nil, CertFile, "both TLS server and client"},
		{"CA as leaf", &Credentials{CertPEM: ca.BundlePEM(), KeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: caKey}), CAPEM: ca.BundlePEM()}, nil, CertFile, "a CA's"},
		{"garbage certificate", &Credentials{CertPEM: []byte("not PEM"), KeyPEM: good.KeyPEM, CAPEM: good.CAPEM}, nil, CertFile, "no PEM CERTIFICATE"},
		{"garbage bundle", &Credentials{CertPEM: good.CertPEM, KeyPEM: good.KeyPEM, CAPEM: []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")}, nil, CAFile, "PEM block 1"},
		{"no key", &Credentials{CertPEM: good.CertPEM, KeyPEM: good.CertPEM, CAPEM: good.CAPEM}, nil, KeyFile, "no PEM private key"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := identityDir(t, c.creds)
			id, err := Load(dir, testTD, now)
			if err == nil {
				t.Fatalf("loaded %s", id.ID)
			}
			wantFileError(t, err, c.err, dir, c.file)
			if !strings.Contains(err.Error(), c.says) {
				t.Errorf("error %q does not say %q", err, c.says)
			}
		})
	}

	t.Run("missing file", func(t *testing.T) {
		dir := identityDir(t, good)
		if err := os.Remove(filepath.Join(dir, CAFile)); err != nil {
			t.Fatal(err)
		}
		_, err := Load(dir, testTD, now)
		wantFileError(t, err, fs.ErrNotExist, dir, CAFile)
	})
}
