package meshtls

import (
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	stdtls "crypto/tls"
)

const (
	serverName = "spiffe://example.org/ns/shop/sa/api"
	clientName = "spiffe://example.org/ns/shop/sa/web"
)

// mesh is two sidecars' identities from one CA, each followed by a Source.
type mesh struct {
	ca                   *CA
	serverDir, clientDir string
	server, client       *Source
	serverEvents         chan Event
}

// layout writes credentials into an identity directory: plainly, or as kubelet does.
type layout func(t testing.TB, dir string, c *Credentials)

func newMesh(t testing.TB, write layout, opts Options) *mesh {
	t.Helper()
	m := &mesh{ca: newTestCA(t, testTD), serverDir: t.TempDir(), clientDir: t.TempDir(), serverEvents: make(chan Event, 64)}
	write(t, m.serverDir, issue(t, m.ca, serverName))
	write(t, m.clientDir, issue(t, m.ca, clientName))
	serverOpts := opts
	serverOpts.OnEvent = func(ev Event) { m.serverEvents <- ev }
	var err error
	if m.server, err = NewSource(m.serverDir, serverOpts); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.server.Close() })
	if m.client, err = NewSource(m.clientDir, opts); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.client.Close() })
	return m
}

// kubernetesLayout writes c as the kubelet updates a Secret volume: into a new
// timestamped directory, then an atomic rename of the ..data symlink to point at it; the
// files themselves are symlinks through ..data, made once.
func kubernetesLayout(t testing.TB, dir string, c *Credentials) {
	t.Helper()
	old, _ := os.Readlink(filepath.Join(dir, "..data"))
	ts := fmt.Sprintf("..%s", time.Now().Format("2006_01_02_15_04_05.000000000"))
	writeCreds(t, filepath.Join(dir, ts), c)
	tmp := filepath.Join(dir, "..data_tmp")
	if err := os.Symlink(ts, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{CertFile, KeyFile, CAFile} {
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(dir, name)); err != nil && !errors.Is(err, os.ErrExist) {
			t.Fatal(err)
		}
	}
	if old != "" {
		if err := os.RemoveAll(filepath.Join(dir, old)); err != nil {
			t.Fatal(err)
		}
	}
}

func plainLayout(t testing.TB, dir string, c *Credentials) { writeCreds(t, dir, c) }

type accepted struct {
	state stdtls.ConnectionState
	err   error
}

// serveTLS accepts TLS on loopback with cfg. After a handshake it sends one byte, which
// the client reads (and with it the session tickets sent before it), then echoes. Every
// handshake's outcome goes to the channel returned, while it has room.
func serveTLS(t testing.TB, cfg *stdtls.Config) (string, <-chan accepted) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	acc := make(chan accepted, 256)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				tc := stdtls.Server(c, cfg)
				_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
				err := tc.Handshake()
				select {
				case acc <- accepted{tc.ConnectionState(), err}:
				default:
				}
				if err != nil {
					return
				}
				_ = tc.SetDeadline(time.Time{})
				if _, err := tc.Write([]byte{'!'}); err != nil {
					return
				}
				_, _ = io.Copy(tc, tc)
			}()
		}
	}()
	return ln.Addr().String(), acc
}

// dial makes a TLS connection and reads the server's first byte.
func dial(addr string, cfg *stdtls.Config) (*stdtls.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	tc := stdtls.Client(c, cfg)
	_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
	var b [1]byte
	if _, err := io.ReadFull(tc, b[:]); err != nil {
		_ = tc.Close()
		return nil, err
	}
	_ = tc.SetDeadline(time.Time{})
	return tc, nil
}

func mustDial(t testing.TB, addr string, cfg *stdtls.Config) *stdtls.Conn {
	t.Helper()
	c, err := dial(addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func echo(t testing.TB, c *stdtls.Conn, msg string) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatalf("write on an established connection: %v", err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
		t.Fatalf("echo on an established connection: %q, %v", got, err)
	}
}

func nextAccepted(t testing.TB, acc <-chan accepted) accepted {
	t.Helper()
	select {
	case a := <-acc:
		return a
	case <-time.After(10 * time.Second):
		t.Fatal("the server saw no handshake")
		return accepted{}
	}
}

// noResumption returns cfg with no session cache, so every handshake is full and shows
// the certificate the server presents.
func noResumption(cfg *stdtls.Config) *stdtls.Config {
	c := cfg.Clone()
	c.ClientSessionCache = nil
	return c
}

func serial(c *stdtls.Conn) *big.Int { return c.ConnectionState().PeerCertificates[0].SerialNumber }

func TestMTLSHandshake(t *testing.T) {
	m := newMesh(t, plainLayout, Options{})
	addr, acc := serveTLS(t, m.server.ServerConfig())
	if m.server.ServerConfig() != m.server.ServerConfig() {
		t.Error("ServerConfig is not built once")
	}

	var expected []ID
	c := mustDial(t, addr, m.client.ClientConfig(func(id ID) error {
		expected = append(expected, id)
		return nil
	}))
	echo(t, c, "ping")
	cs := c.ConnectionState()
	srv := nextAccepted(t, acc)
	if srv.err != nil {
		t.Fatal(srv.err)
	}
	for side, s := range map[string]stdtls.ConnectionState{"client": cs, "server": srv.state} {
		if s.Version != stdtls.VersionTLS13 || s.CurveID != stdtls.X25519 || s.NegotiatedProtocol != MeshALPN || s.DidResume {
			t.Errorf("%s: version %x, curve %v, ALPN %q, resumed %v: want TLS 1.3, X25519, %q, full", side,
				s.Version, s.CurveID, s.NegotiatedProtocol, s.DidResume, MeshALPN)
		}
	}
	if id, err := PeerID(cs); err != nil || id.String() != serverName {
		t.Errorf("client's PeerID = %q, %v; want the server's %s", id, err, serverName)
	}
	if id, err := PeerID(srv.state); err != nil || id.String() != clientName {
		t.Errorf("server's PeerID = %q, %v; want the client's %s", id, err, clientName)
	}
	if len(expected) != 1 || expected[0].String() != serverName {
		t.Errorf("expect was called with %v", expected)
	}
	if cs.PeerCertificates[0].PublicKeyAlgorithm.String() != "ECDSA" {
		t.Errorf("server key %v", cs.PeerCertificates[0].PublicKeyAlgorithm)
	}

	// A client that expects another peer refuses this one.
	_, err := dial(addr, noResumption(m.client.ClientConfig(func(id ID) error {
		if id.ServiceAccount() != "payments" {
			return errors.New("not the payments service")
		}
		return nil
	})))
	if err == nil || !strings.Contains(err.Error(), "not the payments service") {
		t.Errorf("client with a failing expectation: %v", err)
	}
	nextAccepted(t, acc)
}

func TestRefusesPeers(t *testing.T) {
	m := newMesh(t, plainLayout, Options{})
	addr, acc := serveTLS(t, m.server.ServerConfig())

	t.Run("unknown CA client", func(t *testing.T) {
		// The client trusts the server, but its own certificate is from another root.
		stranger := newTestCA(t, testTD)
		creds := issue(t, stranger, clientName)
		creds.CAPEM = append(stranger.BundlePEM(), m.ca.BundlePEM()...)
		src, err := NewSource(identityDir(t, creds), Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		if _, err := dial(addr, src.ClientConfig(nil)); err == nil {
			t.Error("a client from an unknown CA connected")
		}
		srv := nextAccepted(t, acc)
		if srv.err == nil || !strings.Contains(srv.err.Error(), "unknown authority") {
			t.Errorf("server: %v, want a refusal for an unknown authority", srv.err)
		}
	})

	t.Run("unknown CA server", func(t *testing.T) {
		stranger := newTestCA(t, testTD)
		src, err := NewSource(identityDir(t, issue(t, stranger, serverName)), Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		addr, _ := serveTLS(t, src.ServerConfig())
		_, err = dial(addr, m.client.ClientConfig(nil))
		if err == nil || !strings.Contains(err.Error(), "unknown authority") {
			t.Errorf("client to a server from an unknown CA: %v", err)
		}
	})

	t.Run("no mesh ALPN", func(t *testing.T) {
		cfg := m.client.ClientConfig(nil).Clone()
		cfg.NextProtos = nil
		cfg.VerifyConnection = nil // which would refuse the server for the same reason
		if _, err := dial(addr, cfg); err == nil {
			t.Error("a client without the mesh ALPN connected")
		}
		if srv := nextAccepted(t, acc); srv.err == nil || !strings.Contains(srv.err.Error(), MeshALPN) {
			t.Errorf("server: %v", srv.err)
		}
	})

	t.Run("no client certificate", func(t *testing.T) {
		cfg := m.client.ClientConfig(nil).Clone()
		cfg.GetClientCertificate = nil
		if _, err := dial(addr, cfg); err == nil {
			t.Error("a client without a certificate connected")
		}
		if srv := nextAccepted(t, acc); srv.err == nil {
			t.Error("server accepted a client without a certificate")
		}
	})
}

func TestSessionResumption(t *testing.T) {
	m := newMesh(t, plainLayout, Options{})
	addr, acc := serveTLS(t, m.server.ServerConfig())
	cfg := m.client.ClientConfig(nil)

	resumed := func(want bool) {
		t.Helper()
		c := mustDial(t, addr, cfg)
		echo(t, c, "x")
		srv := nextAccepted(t, acc)
		if srv.err != nil {
			t.Fatal(srv.err)
		}
		cs := c.ConnectionState()
		if cs.DidResume != want || srv.state.DidResume != want {
			t.Fatalf("client resumed %v, server resumed %v; want %v", cs.DidResume, srv.state.DidResume, want)
		}
		if id, err := PeerID(cs); err != nil || id.String() != serverName {
			t.Errorf("client's PeerID = %q, %v", id, err)
		}
		if id, err := PeerID(srv.state); err != nil || id.String() != clientName {
			t.Errorf("server's PeerID = %q, %v", id, err)
		}
		_ = c.Close()
	}
	resumed(false)
	resumed(true)
	resumed(true)

	// After the server's identity rotates, its old tickets give a full handshake (not a
	// failure), and the sessions from that one resume again.
	writeCreds(t, m.serverDir, issue(t, m.ca, serverName))
	waitEvent(t, m.serverEvents, nil)
	resumed(false)
	resumed(true)
}

// waitEvent waits for the next event from a Source and checks that its error wraps want
// (nil: a new identity swapped in).
func waitEvent(t testing.TB, events <-chan Event, want error) Event {
	t.Helper()
	select {
	case ev := <-events:
		if want == nil && ev.Err != nil || want != nil && !errors.Is(ev.Err, want) {
			t.Fatalf("event error %v, want %v", ev.Err, want)
		}
		return ev
	case <-time.After(5 * time.Second):
		t.Fatalf("no event from the Source (want %v)", want)
		return Event{}
	}
}

func TestRotation(t *testing.T) {
	for name, write := range map[string]layout{"rewrite": plainLayout, "kubernetes ..data swap": kubernetesLayout} {
		t.Run(name, func(t *testing.T) {
			m := newMesh(t, write, Options{})
			addr, _ := serveTLS(t, m.server.ServerConfig())
			cfg := noResumption(m.client.ClientConfig(nil))

			inFlight := mustDial(t, addr, cfg)
			echo(t, inFlight, "before")
			oldSerial := serial(inFlight)

			next := issue(t, m.ca, serverName)
			start := time.Now()
			write(t, m.serverDir, next)
			for {
				c, err := dial(addr, cfg)
				if err != nil {
					t.Fatalf("handshake during rotation: %v", err)
				}
				s := serial(c)
				_ = c.Close()
				if s.Cmp(next.Cert.SerialNumber) == 0 {
					break
				}
				if s.Cmp(oldSerial) != 0 {
					t.Fatalf("server presented serial %v, neither the old nor the new", s)
				}
				if time.Since(start) > time.Second {
					t.Fatal("a new handshake still presents the old certificate a second after the files changed")
				}
				time.Sleep(10 * time.Millisecond)
			}
			t.Logf("new certificate presented %v after the write", time.Since(start).Round(time.Millisecond))
			ev := waitEvent(t, m.serverEvents, nil)
			if ev.Identity != m.server.Current() || ev.Identity.Certificate.Leaf.SerialNumber.Cmp(next.Cert.SerialNumber) != 0 {
				t.Error("the event does not carry the identity now in force")
			}

			// The connection made before the rotation lives on, on its old certificate.
			echo(t, inFlight, "after")
			if serial(inFlight).Cmp(oldSerial) != 0 {
				t.Error("the connection in flight changed certificate")
			}
		})
	}
}

func TestRejectedFilesKeepIdentity(t *testing.T) {
	m := newMesh(t, plainLayout, Options{})
	addr, _ := serveTLS(t, m.server.ServerConfig())
	cfg := noResumption(m.client.ClientConfig(nil))
	before := m.server.Current()

	writeCreds(t, m.serverDir, issueAt(t, m.ca, serverName, time.Hour, time.Now().Add(-3*time.Hour)))
	ev := waitEvent(t, m.serverEvents, ErrExpired)
	wantFileError(t, ev.Err, ErrExpired, m.serverDir, CertFile)
	if ev.Identity != before || m.server.Current() != before {
		t.Error("an expired certificate replaced the identity in force")
	}
	c := mustDial(t, addr, cfg)
	if serial(c).Cmp(before.Certificate.Leaf.SerialNumber) != 0 {
		t.Error("the server no longer presents the previous good certificate")
	}

	// Good files after bad ones are taken.
	writeCreds(t, m.serverDir, issue(t, m.ca, serverName))
	if ev := waitEvent(t, m.serverEvents, nil); m.server.Current() == before || ev.Identity != m.server.Current() {
		t.Error("good files after bad ones were not taken")
	}
}

func TestPartialWriteIsRetried(t *testing.T) {
	m := newMesh(t, plainLayout, Options{})
	next := issue(t, m.ca, serverName)
	// A writer that puts the files in place one at a time, slowly: for a while the new
	// certificate sits beside the old key.
	if err := writeAtomic(filepath.Join(m.serverDir, CertFile), next.CertPEM, 0o644, true); err != nil {
		t.Fatal(err)
	}
	time.Sleep(250 * time.Millisecond)
	if err := writeAtomic(filepath.Join(m.serverDir, KeyFile), next.KeyPEM, 0o600, true); err != nil {
		t.Fatal(err)
	}
	ev := waitEvent(t, m.serverEvents, nil) // no error reported before it
	if ev.Identity.Certificate.Leaf.SerialNumber.Cmp(next.Cert.SerialNumber) != 0 {
		t.Error("the new pair is not in force")
	}
}

func TestMismatchReportedWhenItLasts(t *testing.T) {
	m := newMesh(t, plainLayout, Options{})
	before := m.server.Current()
	other := issue(t, m.ca, serverName)
	if err := writeAtomic(filepath.Join(m.serverDir, KeyFile), other.KeyPEM, 0o600, true); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	ev := waitEvent(t, m.serverEvents, ErrKeyMismatch)
	if waited := time.Since(start); waited < 1200*time.Millisecond {
		t.Errorf("a mismatch was reported after %v, before the retries were over", waited)
	}
	wantFileError(t, ev.Err, ErrKeyMismatch, m.serverDir, KeyFile)
	if m.server.Current() != before {
		t.Error("a mismatched pair replaced the identity in force")
	}
}

// clock is a settable time for Options.Now.
type clock struct{ t atomic.Pointer[time.Time] }

func (c *clock) Now() time.Time {
	if t := c.t.Load(); t != nil {
		return *t
	}
	return time.Now()
}

func (c *clock) Set(t time.Time) { c.t.Store(&t) }

func TestRecheckReportsExpiry(t *testing.T) {
	var clk clock
	m := newMesh(t, plainLayout, Options{Now: clk.Now, Recheck: 20 * time.Millisecond})
	cur := m.server.Current()
	clk.Set(cur.NotAfter.Add(time.Minute))
	ev := waitEvent(t, m.serverEvents, ErrExpired)
	if ev.Identity != cur || !strings.Contains(ev.Err.Error(), "the identity in force") {
		t.Errorf("event %v for %v", ev.Err, ev.Identity.ID)
	}
}

func TestNewSourceFails(t *testing.T) {
	ca := newTestCA(t, testTD)
	dir := identityDir(t, issueAt(t, ca, serverName, time.Hour, time.Now().Add(-2*time.Hour)))
	if _, err := NewSource(dir, Options{}); !errors.Is(err, ErrExpired) {
		t.Errorf("NewSource on an expired certificate: %v", err)
	}
	dir = identityDir(t, issue(t, ca, serverName))
	if _, err := NewSource(dir, Options{TrustDomain: "other.org"}); !errors.Is(err, ErrTrustDomain) {
		t.Errorf("NewSource in another trust domain: %v", err)
	}
}

// BenchmarkHandshake measures mTLS handshakes over loopback, both sides in this
// process: each iteration dials, handshakes, reads the server's first byte and closes.
func BenchmarkHandshake(b *testing.B) {
	m := newMesh(b, plainLayout, Options{})
	addr, _ := serveTLS(b, m.server.ServerConfig())
	for _, c := range []struct {
		name   string
		cfg    *stdtls.Config
		resume bool
	}{
		{"full", noResumption(m.client.ClientConfig(nil)), false},
		{"resumed", m.client.ClientConfig(nil), true},
	} {
		b.Run(c.name, func(b *testing.B) {
			if conn, err := dial(addr, c.cfg); err != nil { // warm the session cache
				b.Fatal(err)
			} else {
				_ = conn.Close()
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				conn, err := dial(addr, c.cfg)
				if err != nil {
					b.Fatal(err)
				}
				if conn.ConnectionState().DidResume != c.resume {
					b.Fatalf("resumed %v, want %v", !c.resume, c.resume)
				}
				_ = conn.Close()
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "handshakes/s")
		})
	}
}

func TestVerifiedChainsStillExpire(t *testing.T) {
	var clk clock
	m := newMesh(t, plainLayout, Options{Now: clk.Now})
	// The server's certificate outlives the client's.
	writeCreds(t, m.serverDir, issueAt(t, m.ca, serverName, 2*time.Hour, time.Now()))
	waitEvent(t, m.serverEvents, nil)
	addr, acc := serveTLS(t, m.server.ServerConfig())
	cfg := noResumption(m.client.ClientConfig(nil))

	_ = mustDial(t, addr, cfg) // both sides have now verified each other's chain once
	if srv := nextAccepted(t, acc); srv.err != nil {
		t.Fatal(srv.err)
	}
	clk.Set(m.client.Current().NotAfter.Add(time.Minute))
	if _, err := dial(addr, cfg); err == nil {
		t.Fatal("a client whose certificate expired since its last handshake connected")
	}
	if srv := nextAccepted(t, acc); srv.err == nil || !strings.Contains(srv.err.Error(), "expired") {
		t.Errorf("server: %v, want a refusal for an expired certificate", srv.err)
	}
}
