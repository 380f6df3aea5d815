package listener

import (
	"net"

	"github.com/rs/zerolog"

	"skiff/router/authz"
	"skiff/telemetry"
)

// Authorization of inbound connections that are not proxied as HTTP (opaque TCP, the
// app's own TLS, a port pinned to tcp or tls, an HTTP CONNECT tunnel). Such a
// connection is decided once, as a whole, with the TCP semantics of router/authz (a
// rule's HTTP-only conditions cannot be judged: they fail an allow and are ignored by a
// deny), before the app is dialled, so that a denied peer never reaches it, not even
// with a connect. HTTP connections are judged per request by the HTTP proxy instead.

// reasonAuthzDenied is skiff_tcp_connections_refused_total's reason for a connection
// the authorization policies denied.
const reasonAuthzDenied = "authz_denied"

// checkConn decides c with TCP semantics against the policies in force. Outbound
// connections are not subject to them.
func (s *Server) checkConn(c *conn) authz.Decision {
	e := s.router.Snapshot().Authz
	if c.dir != Inbound || e.Empty() {
		return authz.Decision{Allow: true, Policy: authz.DefaultPolicy}
	}
	return e.Check(&authz.Request{Principal: c.peerID, Source: c.src.Addr(), Port: c.dst.Port()})
}

// gateDial returns dial, the early dial sniffing makes for a client that stays silent
// (so a server-first protocol's greeting gets through), or nil when the connection
// would be denied as TCP: the app must not be dialled for a peer that may not reach it.
// Sniffing then gives the client sniff.timeout to speak; if it speaks HTTP, its
// requests are judged one by one, and if it does not, it is denied as TCP.
func (s *Server) gateDial(c *conn, dial func() (net.Conn, error)) func() (net.Conn, error) {
	if dial == nil || !s.checkConn(c).Allow {
		return nil
	}
	return dial
}

// authorizeTCP decides an inbound connection about to be relayed as TCP. A denied one
// is reset, with anything sniffing holds released and any upstream dialled early
// closed, counted, and logged with the policy; authorizeTCP then reports false.
func (s *Server) authorizeTCP(down net.Conn, c *conn, r *sniffResult, log zerolog.Logger) bool {
	d := s.checkConn(c)
	if d.Allow {
		return true
	}
	r.release()
	if r.up != nil {
		// Dialled early under a snapshot that allowed it; a reload since denies it.
		reset(r.up)
		r.up = nil
	}
	s.metrics.TCPRefused.WithLabelValues(string(c.dir), reasonAuthzDenied).Inc()
	log.Info().Str(telemetry.FieldReason, reasonAuthzDenied).Str(telemetry.FieldPolicy, d.Policy).
		Str(telemetry.FieldPeerID, c.peerID).Str(telemetry.FieldProto, r.res.Proto.String()).
		Msg("connection denied by authorization policy")
	reset(down)
	return false
}
