package meshtls

import (
	"crypto"
	"crypto/sha256"
	stdtls "crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// Reasons Load rejects an identity's files. Errors wrap them (inside a *FileError that
// names the file), for callers that tell them apart with errors.Is.
var (
	ErrExpired     = errors.New("certificate expired")
	ErrNotYetValid = errors.New("certificate not yet valid")
	ErrKeyMismatch = errors.New("private key does not match the certificate")
	ErrUnchained   = errors.New("certificate does not chain to the trust bundle")
	ErrTrustDomain = errors.New("SPIFFE ID is not in the trust domain")
)

// FileError is a file of an identity or CA directory that was rejected: it names the
// file and says why.
type FileError struct {
	File string
	Err  error
}

func (e *FileError) Error() string { return e.File + ": " + e.Err.Error() }

func (e *FileError) Unwrap() error { return e.Err }

// Identity is one loaded, checked workload identity. It is immutable: a rotation makes a
// new one.
type Identity struct {
	ID ID
	// Certificate is the chain from tls.crt with the key from tls.key; Leaf is set.
	Certificate stdtls.Certificate
	// Roots is the trust bundle from ca.crt: peers' certificates must chain to it.
	Roots *x509.CertPool
	// NotBefore and NotAfter are the leaf's validity.
	NotBefore, NotAfter time.Time

	sum      [sha256.Size]byte // of the three files as read, to skip reloading what is in force
	gen      uint64            // counts the identities a Source has had; stamped in session tickets
	verified *verifyCache      // peer chains verified against Roots, when a Source holds it
}

// maxFileSize bounds what Load reads from each file: certificates are a few KiB.
const maxFileSize = 1 << 20

// Load reads tls.crt, tls.key and ca.crt from dir and checks them at time now (zero means
// time.Now()): the key matches the certificate; the certificate is valid now, is not a
// CA's, carries exactly one URI SAN that is a SPIFFE ID with a path, in trustDomain
// unless that is empty, and chains (through any intermediates after it in tls.crt) to a
// certificate in ca.crt. Errors name the file at fault, as a *FileError.
func Load(dir, trustDomain string, now time.Time) (*Identity, error) {
	f, err := readIdentity(dir)
	if err != nil {
		return nil, err
	}
	return f.parse(trustDomain, now)
}

type identityFiles struct {
	dir               string
	cert, key, bundle []byte
}

func readIdentity(dir string) (*identityFiles, error) {
	f := &identityFiles{dir: dir}
	var err error
	if f.cert, err = readFile(filepath.Join(dir, CertFile)); err != nil {
		return nil, err
	}
	if f.key, err = readFile(filepath.Join(dir, KeyFile)); err != nil {
		return nil, err
	}
	if f.bundle, err = readFile(filepath.Join(dir, CAFile)); err != nil {
		return nil, err
	}
	return f, nil
}

func (f *identityFiles) sum() [sha256.Size]byte {
	h := sha256.New()
	for _, b := range [][]byte{f.cert, f.key, f.bundle} {
		_ = binary.Write(h, binary.BigEndian, uint64(len(b)))
		h.Write(b)
	}
	var s [sha256.Size]byte
	h.Sum(s[:0])
	return s
}

func (f *identityFiles) parse(trustDomain string, now time.Time) (*Identity, error) {
	if now.IsZero() {
		now = time.Now()
	}
	certPath := filepath.Join(f.dir, CertFile)
	keyPath := filepath.Join(f.dir, KeyFile)
	caPath := filepath.Join(f.dir, CAFile)
	certErr := func(err error) error { return &FileError{File: certPath, Err: err} }

	chain, err := parseCerts(f.cert)
	if err != nil {
		return nil, certErr(err)
	}
	key, err := parseKey(f.key)
	if err != nil {
		return nil, &FileError{File: keyPath, Err: err}
	}
	roots, err := parseCerts(f.bundle)
	if err != nil {
		return nil, &FileError{File: caPath, Err: err}
	}
	leaf := chain[0]
	if !samePublicKey(leaf.PublicKey, key.Public()) {
		return nil, &FileError{File: keyPath, Err: fmt.Errorf("%w in %s", ErrKeyMismatch, CertFile)}
	}
	if now.Before(leaf.NotBefore) {
		return nil, certErr(fmt.Errorf("%w: valid from %s (%s from now)", ErrNotYetValid, stamp(leaf.NotBefore), leaf.NotBefore.Sub(now).Round(time.Second)))
	}
	if now.After(leaf.NotAfter) {
		return nil, certErr(fmt.Errorf("%w at %s (%s ago)", ErrExpired, stamp(leaf.NotAfter), now.Sub(leaf.NotAfter).Round(time.Second)))
	}
	if leaf.IsCA {
		return nil, certErr(errors.New("the first certificate is a CA's, not a workload's"))
	}
	id, err := IDFromCert(leaf)
	if err != nil {
		return nil, certErr(err)
	}
	if id.Path() == "" {
		return nil, certErr(fmt.Errorf("SPIFFE ID %s is a trust domain's, not a workload's (it has no path)", id))
	}
	if trustDomain != "" && !id.MemberOf(trustDomain) {
		return nil, certErr(fmt.Errorf("%w: %s is in %q, not %q", ErrTrustDomain, id, id.TrustDomain(), trustDomain))
	}
	if !usableForMTLS(leaf) {
		return nil, certErr(errors.New("certificate's extended key usage does not allow both TLS server and client authentication"))
	}

	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	opts := x509.VerifyOptions{Roots: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}
	if len(chain) > 1 {
		opts.Intermediates = x509.NewCertPool()
		for _, c := range chain[1:] {
			opts.Intermediates.AddCert(c)
		}
	}
	if _, err := leaf.Verify(opts); err != nil {
		var inv x509.CertificateInvalidError
		if errors.As(err, &inv) && inv.Reason == x509.Expired && inv.Cert != nil {
			// An intermediate or a root is outside its validity.
			file := certPath
			for _, r := range roots {
				if r.Equal(inv.Cert) {
					file = caPath
				}
			}
			return nil, &FileError{File: file, Err: fmt.Errorf("%w or not yet valid: CA certificate %q is valid from %s to %s",
				ErrExpired, inv.Cert.Subject, stamp(inv.Cert.NotBefore), stamp(inv.Cert.NotAfter))}
		}
		return nil, certErr(fmt.Errorf("%w in %s: %v", ErrUnchained, CAFile, err))
	}

	der := make([][]byte, len(chain))
	for i, c := range chain {
		der[i] = c.Raw
	}
	return &Identity{
		ID:          id,
		Certificate: stdtls.Certificate{Certificate: der, PrivateKey: key, Leaf: leaf},
		Roots:       pool,
		NotBefore:   leaf.NotBefore,
		NotAfter:    leaf.NotAfter,
		sum:         f.sum(),
	}, nil
}

// usableForMTLS reports whether a leaf may authenticate both ends of a TLS connection:
// a sidecar is a server inbound and a client outbound with the same certificate.
func usableForMTLS(c *x509.Certificate) bool {
	if len(c.ExtKeyUsage) == 0 {
		return true // no restriction
	}
	var server, client bool
	for _, u := range c.ExtKeyUsage {
		switch u {
		case x509.ExtKeyUsageAny:
			return true
		case x509.ExtKeyUsageServerAuth:
			server = true
		case x509.ExtKeyUsageClientAuth:
			client = true
		}
	}
	return server && client
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// readFile reads at most maxFileSize bytes; errors are *FileError naming path.
func readFile(path string) ([]byte, error) {
	fail := func(err error) ([]byte, error) {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the path is in the FileError
		}
		return nil, &FileError{File: path, Err: err}
	}
	f, err := os.Open(path)
	if err != nil {
		return fail(err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return fail(err)
	}
	if len(b) > maxFileSize {
		return fail(fmt.Errorf("larger than %d bytes: not a certificate or key file", maxFileSize))
	}
	return b, nil
}

// parseCerts returns the certificates of every CERTIFICATE block in PEM data, in order.
// Blocks of other types are skipped.
func parseCerts(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for n := 1; ; n++ {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("PEM block %d: %w", n, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM CERTIFICATE block")
	}
	return certs, nil
}

// parseKey returns the first private key in PEM data: PKCS#8 (PRIVATE KEY), SEC1 (EC
// PRIVATE KEY) or PKCS#1 (RSA PRIVATE KEY). Other blocks, such as the EC PARAMETERS that
// openssl writes first, are skipped.
func parseKey(data []byte) (crypto.Signer, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errors.New("no PEM private key block")
		}
		var key any
		var err error
		switch block.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		case "ENCRYPTED PRIVATE KEY":
			return nil, errors.New("the private key is encrypted; skiff needs it in the clear (the file is 0600)")
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s block: %w", block.Type, err)
		}
		s, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("unsupported private key type %T", key)
		}
		return s, nil
	}
}

func samePublicKey(certKey, key crypto.PublicKey) bool {
	k, ok := certKey.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(key)
}
