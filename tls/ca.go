package meshtls

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// The files of an identity directory, in the layout cert-manager and SPIRE write, and
// the CA's key beside its ca.crt.
const (
	CertFile  = "tls.crt" // the workload's certificate, then any intermediates
	KeyFile   = "tls.key" // the workload's private key
	CAFile    = "ca.crt"  // the trust bundle: the roots peers must chain to
	CAKeyFile = "ca.key"  // the CA's private key (CA directories only)
)

// Default lifetimes of `skiff ca`.
const (
	DefaultRootLifetime = 365 * 24 * time.Hour
	DefaultLeafLifetime = 24 * time.Hour
)

// clockSkew is how far back a certificate's NotBefore is set, so that a peer whose clock
// is a little behind the issuer's accepts it at once.
const clockSkew = time.Minute

// ErrKeyExists is returned when writing would replace a private key and force was not given.
var ErrKeyExists = errors.New("a private key is already there; refusing to overwrite it")

// CA is a trust domain's root: a self-signed ECDSA P-256 certificate whose one URI SAN is
// spiffe://<trust-domain>, and its key.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	ID   ID // spiffe://<trust-domain>

	bundle []byte // ca.crt (PEM): Cert, and any other roots read with it
}

// CAOptions shapes a new root.
type CAOptions struct {
	// Lifetime is how long the root is valid; 0 means DefaultRootLifetime.
	Lifetime time.Duration
	// NameConstraints adds a critical name constraints extension that permits only URI
	// SANs in the root's own trust domain, so the root cannot vouch for any other. Off by
	// default: skiff checks the trust domain itself, and some verifiers outside Go refuse
	// URI constraints they do not implement.
	NameConstraints bool
	// Now is the time of issue; zero means time.Now().
	Now time.Time
}

// NewCA creates the root of trustDomain with a fresh key.
func NewCA(trustDomain string, opts CAOptions) (*CA, error) {
	tdID, err := TrustDomainID(trustDomain)
	if err != nil {
		return nil, err
	}
	lifetime := opts.Lifetime
	if lifetime == 0 {
		lifetime = DefaultRootLifetime
	}
	if lifetime < 0 {
		return nil, fmt.Errorf("root lifetime must be positive (got %v)", lifetime)
	}
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating the root key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"skiff"}, CommonName: trustDomain},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(lifetime),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs:                  []*url.URL{{Scheme: "spiffe", Host: trustDomain}},
	}
	if opts.NameConstraints {
		tmpl.PermittedURIDomains = []string{trustDomain}
		tmpl.PermittedDNSDomainsCritical = true // marks the whole extension critical
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("signing the root: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, ID: tdID, bundle: pemCert(der)}, nil
}

// LoadCA reads a CA directory: ca.key, and ca.crt holding the matching certificate
// (first or not: a bundle may carry an older root beside it). The certificate must be a
// CA whose one URI SAN is spiffe://<trust-domain>.
func LoadCA(dir string) (*CA, error) {
	keyPath, certPath := filepath.Join(dir, CAKeyFile), filepath.Join(dir, CAFile)
	keyPEM, err := readFile(keyPath)
	if err != nil {
		return nil, err
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, &FileError{File: keyPath, Err: err}
	}
	bundle, err := readFile(certPath)
	if err != nil {
		return nil, err
	}
	certs, err := parseCerts(bundle)
	if err != nil {
		return nil, &FileError{File: certPath, Err: err}
	}
	var cert *x509.Certificate
	for _, c := range certs {
		if samePublicKey(c.PublicKey, key.Public()) {
			cert = c
			break
		}
	}
	if cert == nil {
		return nil, &FileError{File: certPath, Err: fmt.Errorf("%w: no certificate here matches %s", ErrKeyMismatch, keyPath)}
	}
	if !cert.IsCA {
		return nil, &FileError{File: certPath, Err: errors.New("the certificate matching the key is not a CA certificate")}
	}
	id, err := IDFromCert(cert)
	if err != nil {
		return nil, &FileError{File: certPath, Err: fmt.Errorf("CA certificate: %w", err)}
	}
	if id.Path() != "" {
		return nil, &FileError{File: certPath, Err: fmt.Errorf("CA certificate's URI SAN %s is not a trust domain's ID (it has a path)", id)}
	}
	return &CA{Cert: cert, Key: key, ID: id, bundle: bundle}, nil
}

// TrustDomain returns the CA's trust domain.
func (ca *CA) TrustDomain() string { return ca.ID.TrustDomain() }

// BundlePEM returns the trust bundle workloads get as ca.crt.
func (ca *CA) BundlePEM() []byte { return bytes.Clone(ca.bundle) }

// Write writes ca.crt (0644) and ca.key (0600) into dir, creating it (0700) if needed.
// An existing ca.key is replaced only when force is set; otherwise the error wraps
// ErrKeyExists.
func (ca *CA) Write(dir string, force bool) error {
	keyDER, err := x509.MarshalPKCS8PrivateKey(ca.Key)
	if err != nil {
		return fmt.Errorf("encoding the CA key: %w", err)
	}
	return writeSet(dir, 0o700, force, CAKeyFile, []file{
		{CAFile, ca.bundle, 0o644},
		{CAKeyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600},
	})
}

// Credentials are a workload's identity as the three PEM files skiff loads.
type Credentials struct {
	Cert    *x509.Certificate // the leaf in CertPEM
	CertPEM []byte            // tls.crt
	KeyPEM  []byte            // tls.key, PKCS#8
	CAPEM   []byte            // ca.crt, the CA's bundle
}

// Issue signs a workload certificate for id with a fresh ECDSA P-256 key: its one URI SAN
// is id, it may sign (digitalSignature) for TLS servers and clients alike, it has a
// random 128-bit serial, and it is valid from a minute before now (for clock skew) for
// lifetime. now zero means time.Now(). A certificate that would outlive the CA is refused.
func (ca *CA) Issue(id ID, lifetime time.Duration, now time.Time) (*Credentials, error) {
	switch {
	case id.IsZero():
		return nil, errors.New("no SPIFFE ID to issue for")
	case id.Path() == "":
		return nil, fmt.Errorf("%s is a trust domain's ID; a workload's needs a path, such as /ns/<namespace>/sa/<service-account>", id)
	case !id.MemberOf(ca.TrustDomain()):
		return nil, fmt.Errorf("%w: %s is not in the CA's trust domain %q", ErrTrustDomain, id, ca.TrustDomain())
	case lifetime <= 0:
		return nil, fmt.Errorf("certificate lifetime must be positive (got %v)", lifetime)
	}
	if now.IsZero() {
		now = time.Now()
	}
	notAfter := now.Add(lifetime)
	if now.After(ca.Cert.NotAfter) {
		return nil, fmt.Errorf("%w: the CA certificate expired at %s", ErrExpired, ca.Cert.NotAfter.UTC().Format(time.RFC3339))
	}
	if notAfter.After(ca.Cert.NotAfter) {
		return nil, fmt.Errorf("a certificate valid until %s would outlive the CA (valid until %s): shorten the lifetime",
			notAfter.UTC().Format(time.RFC3339), ca.Cert.NotAfter.UTC().Format(time.RFC3339))
	}
	u, err := url.Parse(id.String())
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating a key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"skiff"}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              notAfter,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:                  []*url.URL{u},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, fmt.Errorf("signing the certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return &Credentials{
		Cert:    cert,
		CertPEM: pemCert(der),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		CAPEM:   bytes.Clone(ca.bundle),
	}, nil
}

// Write writes ca.crt, tls.key (0600) and tls.crt into dir, creating it (0755) if needed,
// each file atomically (a watcher sees the old file or the new, never half of one). An
// existing tls.key is replaced only when force is set; otherwise the error wraps
// ErrKeyExists and nothing is written.
func (c *Credentials) Write(dir string, force bool) error {
	// The order leaves the key and certificate mismatched for the shortest time; a
	// Source retries a load that catches them in between.
	return writeSet(dir, 0o755, force, KeyFile, []file{
		{CAFile, c.CAPEM, 0o644},
		{KeyFile, c.KeyPEM, 0o600},
		{CertFile, c.CertPEM, 0o644},
	})
}

type file struct {
	name string
	data []byte
	mode fs.FileMode
}

// writeSet writes files into dir in order. The file named key is a private key: unless
// force, an existing one stops the whole set before anything is written.
func writeSet(dir string, dirMode fs.FileMode, force bool, key string, files []file) error {
	keyPath := filepath.Join(dir, key)
	if !force {
		if _, err := os.Lstat(keyPath); err == nil {
			return fmt.Errorf("%s: %w", keyPath, ErrKeyExists)
		}
	}
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return err
	}
	for _, f := range files {
		replace := force || f.name != key
		if err := writeAtomic(filepath.Join(dir, f.name), f.data, f.mode, replace); err != nil {
			return err
		}
	}
	return nil
}

// writeAtomic writes data to path through a temporary file in the same directory, so a
// reader sees either the old content or the new. With replace false an existing file is
// left alone and the error wraps ErrKeyExists.
func writeAtomic(path string, data []byte, mode fs.FileMode, replace bool) (err error) {
	dir, name := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	// Chmod before writing, so a key is never readable by others even for a moment;
	// fchmod is not subject to the umask.
	if err = f.Chmod(mode); err != nil {
		return err
	}
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if replace {
		err = os.Rename(tmp, path)
	} else {
		err = noClobber(tmp, path)
	}
	if err != nil {
		return err
	}
	syncDir(dir)
	return nil
}

// noClobber moves tmp to path unless path exists. A hard link fails atomically when the
// name is taken; on a file system without hard links it falls back to a check and a
// rename.
func noClobber(tmp, path string) error {
	err := os.Link(tmp, path)
	if err == nil {
		return os.Remove(tmp)
	}
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s: %w", path, ErrKeyExists)
	}
	if _, statErr := os.Lstat(path); statErr == nil {
		return fmt.Errorf("%s: %w", path, ErrKeyExists)
	}
	return os.Rename(tmp, path)
}

// syncDir makes a rename durable; failure only loses durability, not correctness.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
}

func newSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("generating a serial number: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
