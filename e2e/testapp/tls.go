package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	cryptorand "crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"strings"
	"time"
)

func init() {
	moreCmds["tls-echo"] = serveTLSEcho
	moreCmds["tls-client"] = tlsClient
	moreUsage += `
TLS that the app itself speaks (never terminated by the proxy):
  tls-echo   -listen ADDR -sni NAME
             a self-signed certificate for NAME made at start; the listening line has
             its cert_sha256 (of the DER) and cert_pem; a ClientHello for another name
             fails; echoes until the client's close_notify, then closes
  tls-client -addr HOST:PORT -sni NAME [-ca FILE] [-bytes N] [-alpn a,b]
             verifies against FILE (else accepts any certificate), reports the peer's
             cert_sha256 and echoes N bytes
`
}

// selfSigned makes an ECDSA certificate for name, valid for a day.
func selfSigned(name string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), cryptorand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := cryptorand.Int(cryptorand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name, Organization: []string{"skiff e2e app TLS"}},
		DNSNames:     []string{name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(cryptorand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

func fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

func serveTLSEcho(args []string) error {
	var addr, sni string
	fs := flag.NewFlagSet("tls-echo", flag.ContinueOnError)
	fs.StringVar(&addr, "listen", ":0", "address to listen on")
	fs.StringVar(&sni, "sni", "", "the only server name served (required)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if sni == "" {
		return errors.New("-sni is required")
	}
	cert, err := selfSigned(sni)
	if err != nil {
		return err
	}
	cfg := &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"h2", "http/1.1"},
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			if hello.ServerName != sni {
				return nil, fmt.Errorf("ClientHello for %q, this server is %q", hello.ServerName, sni)
			}
			return nil, nil
		},
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	emit(map[string]string{
		"listening":   ln.Addr().String(),
		"cert_sha256": fingerprint(cert.Certificate[0]),
		"cert_pem":    string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]})),
	})
	return acceptLoop(ln, func(c *net.TCPConn) {
		_ = c.SetDeadline(time.Now().Add(connTimeout))
		tc := tls.Server(c, cfg)
		if err := tc.Handshake(); err != nil {
			return
		}
		if _, err := io.Copy(tc, tc); err != nil { // until the client's close_notify
			return
		}
		_ = tc.CloseWrite()
		_ = c.CloseWrite()
	})
}

// TLSResult is tls-client's result.
type TLSResult struct {
	TransferResult
	CertSHA256 string `json:"cert_sha256"`
	Verified   bool   `json:"verified"`
	Version    string `json:"version"`
	ALPN       string `json:"alpn"`
	ServerName string `json:"server_name"`
}

func tlsClient(args []string) error {
	var (
		addr, sni, ca, alpn string
		n                   int64
	)
	if err := clientFlags("tls-client", args, func(fs *flag.FlagSet) {
		fs.StringVar(&addr, "addr", "", "server address")
		fs.StringVar(&sni, "sni", "", "server name to send and verify")
		fs.StringVar(&ca, "ca", "", "PEM file of the certificate to trust (default: trust any, report it)")
		fs.Int64Var(&n, "bytes", 1<<20, "bytes to echo")
		fs.StringVar(&alpn, "alpn", "h2,http/1.1", "ALPN protocols to offer")
	}); err != nil {
		return err
	}
	cfg := &tls.Config{ServerName: sni, MinVersion: tls.VersionTLS12}
	if alpn != "" {
		cfg.NextProtos = strings.Split(alpn, ",")
	}
	if ca != "" {
		b, err := os.ReadFile(ca)
		if err != nil {
			return err
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(b) {
			return fmt.Errorf("%s: no certificate", ca)
		}
	} else {
		cfg.InsecureSkipVerify = true
	}
	res := TLSResult{}
	start := time.Now()
	if err := tlsExchange(addr, cfg, n, &res); err != nil {
		res.fail(err)
	} else {
		res.OK = true
	}
	finish(&res.TransferResult, start)
	emit(res)
	return nil
}

func tlsExchange(addr string, cfg *tls.Config, n int64, res *TLSResult) error {
	raw, err := dial(addr)
	if err != nil {
		return err
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(20 * time.Second))
	c := tls.Client(raw, cfg)
	if err := c.Handshake(); err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	st := c.ConnectionState()
	res.CertSHA256 = fingerprint(st.PeerCertificates[0].Raw)
	res.Verified = !cfg.InsecureSkipVerify
	res.Version = tls.VersionName(st.Version)
	res.ALPN = st.NegotiatedProtocol
	res.ServerName = st.ServerName
	type readResult struct {
		n   int64
		sum string
		err error
	}
	back := make(chan readResult, 1)
	go func() {
		h := sha256.New()
		m, err := io.Copy(h, c)
		back <- readResult{m, hex.EncodeToString(h.Sum(nil)), err}
	}()
	res.Bytes, res.SHA256, err = stream(c, n, 0, 0, nil)
	if err != nil {
		return fmt.Errorf("sending: %w", err)
	}
	if err := c.CloseWrite(); err != nil { // close_notify: the server's io.Copy ends
		return fmt.Errorf("close_notify: %w", err)
	}
	r := <-back
	res.RemoteBytes, res.RemoteSHA256 = r.n, r.sum
	if r.err != nil {
		return fmt.Errorf("reading the echo after %d bytes: %w", r.n, r.err)
	}
	if r.n != res.Bytes || r.sum != res.SHA256 {
		return fmt.Errorf("echo differs: sent %d bytes sha256 %s, got back %d bytes sha256 %s", res.Bytes, res.SHA256, r.n, r.sum)
	}
	return nil
}
