package meshtls

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

const testTD = "example.org"

// newTestCA makes a root valid from a month ago for two years, so certificates can be
// issued in the past and the future of now.
func newTestCA(t testing.TB, td string) *CA {
	t.Helper()
	ca, err := NewCA(td, CAOptions{Now: time.Now().Add(-30 * 24 * time.Hour), Lifetime: 2 * 365 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func mustID(t testing.TB, s string) ID {
	t.Helper()
	id, err := ParseID(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// issueAt issues a certificate for id valid from issued-1m to issued+lifetime.
func issueAt(t testing.TB, ca *CA, id string, lifetime time.Duration, issued time.Time) *Credentials {
	t.Helper()
	c, err := ca.Issue(mustID(t, id), lifetime, issued)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func issue(t testing.TB, ca *CA, id string) *Credentials {
	t.Helper()
	return issueAt(t, ca, id, time.Hour, time.Now())
}

// writeCreds replaces the identity in dir.
func writeCreds(t testing.TB, dir string, c *Credentials) {
	t.Helper()
	if err := c.Write(dir, true); err != nil {
		t.Fatal(err)
	}
}

// identityDir makes a temporary directory holding c.
func identityDir(t testing.TB, c *Credentials) string {
	t.Helper()
	dir := t.TempDir()
	writeCreds(t, dir, c)
	return dir
}

// craft signs tmpl with the CA and returns credentials for it, for certificates Issue
// would never make.
func craft(t testing.TB, ca *CA, tmpl *x509.Certificate) *Credentials {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if tmpl.SerialNumber == nil {
		if tmpl.SerialNumber, err = newSerial(); err != nil {
			t.Fatal(err)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return &Credentials{Cert: cert, CertPEM: pemCert(der), KeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), CAPEM: ca.BundlePEM()}
}

// wantFileError checks that err wraps want and names dir/file.
func wantFileError(t *testing.T, err error, want error, dir, file string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %v naming %s", want, file)
	}
	if want != nil && !errors.Is(err, want) {
		t.Errorf("error %q does not wrap %q", err, want)
	}
	var fe *FileError
	if !errors.As(err, &fe) || fe.File != filepath.Join(dir, file) {
		t.Errorf("error %q does not name %s", err, filepath.Join(dir, file))
	}
}

func readBytes(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
