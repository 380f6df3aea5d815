package listener

import (
	"context"
	stdtls "crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"skiff/config"
	"skiff/listener/sniff"
	"skiff/telemetry"
	meshtls "skiff/tls"
)

// Mesh mTLS between sidecars (mtls.* in the config).
//
// Outbound, a connection whose destination is in mode on or auto is dialled, then wrapped
// in TLS 1.3 with the workload's certificate and ALPN meshtls.MeshALPN; the app's bytes,
// whatever they are (its own TLS included), travel inside unchanged. HTTP-family
// connections go through the HTTP proxy's mesh pools, so one mTLS connection carries
// many requests (multiplexed, for HTTP/2). Auto mode takes a handshake that fails as
// the sign of an endpoint outside the mesh, remembers it for
// mtls.outbound.auto_fallback_ttl and dials it in plaintext meanwhile.
//
// Inbound, the first bytes of a connection are sniffed whatever its port is pinned to:
// a TLS ClientHello offering MeshALPN is terminated here, the peer verified and its
// SPIFFE ID attached to the connection, and the plaintext inside is sniffed and served
// as any connection is (so no framing is needed between the sidecars). Strict mode closes
// everything else; permissive serves it as without mTLS.

// mesh is the listener's mTLS state.
type mesh struct {
	src    *meshtls.Source
	client *stdtls.Config
	// plain remembers endpoints that auto mode found outside the mesh:
	// netip.AddrPort -> time.Time, when to try mTLS again.
	plain sync.Map
	now   func() time.Time
}

// EnableMesh turns mTLS on with the identity src follows. Call it before Serve.
func (s *Server) EnableMesh(src *meshtls.Source) {
	s.mesh = &mesh{src: src, client: src.ClientConfig(nil), now: time.Now}
	s.http.EnableMesh(func(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
		log := s.log.With().Str(telemetry.FieldDirection, string(Outbound)).Stringer(telemetry.FieldOrigDst, dst).Logger()
		c, err := s.dialMesh(ctx, dst, s.cfg.MTLS.OutboundMode(dst), log)
		if err != nil {
			s.metrics.ConnectErr.WithLabelValues(string(Outbound), dst.String()).Inc()
			return nil, err
		}
		return c, nil
	})
}

// isPlain reports whether auto mode found dst outside the mesh less than
// auto_fallback_ttl ago.
func (m *mesh) isPlain(dst netip.AddrPort) bool {
	v, ok := m.plain.Load(dst)
	if !ok {
		return false
	}
	if m.now().Before(v.(time.Time)) {
		return true
	}
	m.plain.CompareAndDelete(dst, v)
	return false
}

// ErrMTLSHandshake wraps a failed outbound mesh handshake (mode on).
var ErrMTLSHandshake = errors.New("mesh mTLS handshake failed")

// dialMesh dials dst for the workload in mode (on, auto or off). It returns a *tls.Conn
// when the connection is mTLS, a *net.TCPConn otherwise.
func (s *Server) dialMesh(ctx context.Context, dst netip.AddrPort, mode string, log zerolog.Logger) (net.Conn, error) {
	if mode == config.MTLSOff || (mode == config.MTLSAuto && s.mesh.isPlain(dst)) {
		return s.dial(ctx, Outbound, dst)
	}
	raw, err := s.dial(ctx, Outbound, dst)
	if err != nil {
		return nil, err // no connection at all says nothing of the mesh
	}
	timeout := s.cfg.MTLS.HandshakeTimeout
	if mode == config.MTLSAuto {
		timeout = s.cfg.MTLS.Outbound.AutoProbeTimeout
	}
	hctx, cancel := context.WithTimeout(ctx, timeout)
	tc := stdtls.Client(raw, s.mesh.client)
	err = tc.HandshakeContext(hctx)
	cancel()
	if err == nil {
		return tc, nil
	}
	reset(raw)
	if mode == config.MTLSOn || ctx.Err() != nil {
		return nil, fmt.Errorf("%w with %s: %w", ErrMTLSHandshake, dst, err)
	}
	ttl := s.cfg.MTLS.Outbound.AutoFallbackTTL
	s.mesh.plain.Store(dst, s.mesh.now().Add(ttl))
	log.Info().Err(err).Stringer(telemetry.FieldUpstream, dst).Dur("for", ttl).
		Msg("mTLS auto: endpoint is not a mesh sidecar; plaintext to it from now on")
	return s.dial(ctx, Outbound, dst)
}

// inboundMesh serves a connection arriving at a port in mTLS mode strict or permissive.
func (s *Server) inboundMesh(down *net.TCPConn, c conn, mode string, log zerolog.Logger) {
	// Strict never dials the app for a peer that has not authenticated: the client has
	// sniff.timeout to speak first.
	var dial func() (net.Conn, error)
	if mode == config.MTLSPermissive {
		dial = s.gateDial(&c, func() (net.Conn, error) { return s.dialUpstream(&c, "", log) })
	}
	r, err := s.sniffConn(down, dial)
	if err != nil {
		log.Debug().Err(err).Msg("connection ended while detecting its protocol")
		reset(down)
		return
	}
	if r.res.Proto == sniff.TLS && slices.Contains(r.res.ALPN, meshtls.MeshALPN) && r.hello == nil {
		if r.up != nil {
			_ = r.up.Close() // dialled in plaintext for a client that was slow to speak
			r.up = nil
		}
		s.terminate(down, c, &r, log)
		return
	}
	if mode == config.MTLSStrict {
		r.release()
		if r.up != nil {
			_ = r.up.Close()
		}
		s.refuseMsg(down, c.dir, "mtls_required", log.Info().Str(telemetry.FieldProto, r.res.Proto.String()),
			"connection refused: the port is in mTLS strict mode and the client is not a mesh sidecar")
		return
	}
	s.serve(down, c, &r, log)
}

// terminate completes the mesh TLS handshake whose ClientHello sniffing read, then
// serves the plaintext inside with the peer's identity attached.
func (s *Server) terminate(down *net.TCPConn, c conn, r *sniffResult, log zerolog.Logger) {
	hello := append([]byte(nil), r.head()...)
	r.release()
	tc := stdtls.Server(&prefixConn{TCPConn: down, head: hello}, s.mesh.src.ServerConfig())
	ctx, cancel := context.WithTimeout(s.kill, s.cfg.MTLS.HandshakeTimeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		s.refuseMsg(down, c.dir, "mtls_handshake", log.Info().Err(err), "mesh mTLS handshake failed")
		return
	}
	peer, err := meshtls.PeerID(tc.ConnectionState())
	if err != nil { // the handshake verified it: not expected
		s.refuseMsg(down, c.dir, "mtls_handshake", log.Warn().Err(err), "mesh mTLS peer without an ID")
		return
	}
	c.peerID = peer.String()
	log = log.With().Str(telemetry.FieldPeerID, c.peerID).Logger()
	log.Debug().Bool("resumed", tc.ConnectionState().DidResume).Msg("mesh mTLS accepted")
	s.serve(tc, c, nil, log)
}

// prefixConn is a TCP connection whose first reads return head: the ClientHello that
// sniffing took, given back to the TLS server.
type prefixConn struct {
	*net.TCPConn
	head []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.head) > 0 {
		n := copy(p, c.head)
		c.head = c.head[n:]
		return n, nil
	}
	return c.TCPConn.Read(p)
}

// NetConn lets tcpOf find the socket under a terminated connection.
func (c *prefixConn) NetConn() net.Conn { return c.TCPConn }
