package listener

import (
	"errors"
	"net/netip"

	"github.com/rs/zerolog"

	"skiff/config"
	"skiff/telemetry"
)

// errNoEndpoint is a routed connection whose service has no endpoint now.
var errNoEndpoint = errors.New("no endpoint for the connection's service")

// tcpTarget decides where an outbound connection relayed as TCP (opaque, or TLS the
// app terminates) goes: by the first TCP route that matches it, else to the endpoints
// of the config service it is addressed to, else to its original destination
// untouched. It returns the address and its mTLS mode. The choice is made once per
// connection: an early dial (server-first detection) fixes it.
func (s *Server) tcpTarget(c *conn, sni string, log zerolog.Logger) (netip.AddrPort, string, error) {
	if c.dir != Outbound {
		return c.dst, c.outMode, nil
	}
	if c.upstream.IsValid() {
		return c.upstream, s.outboundMode(c.upstream, c), nil
	}
	addr, done, svc, routed, ok := s.router.Snapshot().Routes.TCPTarget(c.dst, c.src, sni)
	if !routed {
		return c.dst, c.outMode, nil
	}
	if !ok {
		s.metrics.TCPRefused.WithLabelValues(string(c.dir), "no_endpoint").Inc()
		log.Info().Str(telemetry.FieldService, svc).Str(telemetry.FieldFlags, telemetry.FlagNoHealthy).Msg("no endpoint for the connection's service")
		return netip.AddrPort{}, "", errNoEndpoint
	}
	c.upstream, c.service, c.done = addr, svc, done
	log.Debug().Str(telemetry.FieldService, svc).Stringer(telemetry.FieldUpstream, addr).Msg("routed")
	return addr, s.outboundMode(addr, c), nil
}

// outboundMode is the mTLS mode for dialling addr for c.
func (s *Server) outboundMode(addr netip.AddrPort, c *conn) string {
	if s.mesh == nil {
		return c.outMode
	}
	return s.cfg.MTLS.OutboundMode(addr)
}

// pinnedByRoute is the protocol a connection is taken to carry because of the config's
// services and routes: the protocol of the service port it is addressed to, or tcp
// when a TCP route without server names takes every connection to its port; auto
// otherwise.
func (s *Server) pinnedByRoute(c *conn) string {
	if c.dir != Outbound {
		return config.ProtoAuto
	}
	return s.router.Snapshot().Routes.PinnedProtocol(c.dst)
}
