// Package listener accepts the connections iptables redirects to the proxy, recovers
// where each was going, and hands it on: today a transparent relay to that destination.
package listener

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"skiff/config"
	"skiff/intercept"
	"skiff/listener/sniff"
	"skiff/router"
	"skiff/telemetry"
)

// Direction says which way a listener's connections go.
type Direction string

const (
	Inbound  Direction = "inbound"  // from a peer to this workload
	Outbound Direction = "outbound" // from this workload to a peer
)

// Server serves the inbound and outbound listeners of one proxy process.
type Server struct {
	cfg     *config.Config
	log     zerolog.Logger
	metrics *telemetry.Metrics
	local   *LocalAddrs

	connID atomic.Uint64
	active sync.WaitGroup

	mu        sync.Mutex
	listeners []net.Listener
	// kill is cancelled when the drain deadline passes: connections still open are closed.
	kill       context.Context
	killCancel context.CancelFunc

	http *router.HTTP
}

// NewServer returns a server for cfg's static settings.
func NewServer(cfg *config.Config, log zerolog.Logger, m *telemetry.Metrics) *Server {
	kill, cancel := context.WithCancel(context.Background())
	s := &Server{cfg: cfg, log: log, metrics: m, local: NewLocalAddrs(), kill: kill, killCancel: cancel}
	s.http = router.NewHTTP(cfg, log, m, func(ctx context.Context, dir string, dst netip.AddrPort) (net.Conn, error) {
		c, err := s.dial(ctx, Direction(dir), dst)
		if err != nil {
			s.metrics.ConnectErr.WithLabelValues(dir, dst.String()).Inc()
			return nil, err
		}
		return c, nil
	})
	go func() {
		if err := s.http.Serve(); err != nil {
			log.Error().Err(err).Msg("HTTP proxy stopped")
		}
	}()
	return s
}

// Listen opens the listeners for dir: one IPv4 socket and, when the host has IPv6, one
// IPv6-only socket. They are separate because SO_ORIGINAL_DST must be asked at the level
// of the socket's own family; a dual-stack socket would see IPv4 peers as v4-mapped.
func (s *Server) Listen(dir Direction) ([]*net.TCPListener, error) {
	port := s.cfg.Proxy.OutboundPort
	if dir == Inbound {
		port = s.cfg.Proxy.InboundPort
	}
	ln4, err := net.ListenTCP("tcp4", &net.TCPAddr{Port: port})
	if err != nil {
		return nil, err
	}
	lns := []*net.TCPListener{ln4}
	if intercept.HasIPv6() {
		ln6, err := net.ListenTCP("tcp6", &net.TCPAddr{IP: net.IPv6unspecified, Port: port})
		if err != nil {
			_ = ln4.Close()
			return nil, err
		}
		lns = append(lns, ln6)
	}
	s.mu.Lock()
	for _, ln := range lns {
		s.listeners = append(s.listeners, ln)
	}
	s.mu.Unlock()
	return lns, nil
}

// Serve accepts connections on ln until it is closed. It returns nil after Shutdown.
func (s *Server) Serve(ln *net.TCPListener, dir Direction) error {
	var backoff time.Duration
	for {
		c, err := ln.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Out of descriptors and the like: wait and try again rather than spin or die,
			// as net/http does.
			if backoff == 0 {
				backoff = 5 * time.Millisecond
			} else if backoff *= 2; backoff > time.Second {
				backoff = time.Second
			}
			s.log.Error().Err(err).Str(telemetry.FieldDirection, string(dir)).Dur("retry_in", backoff).Msg("accept failed")
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		s.active.Add(1)
		go func() {
			defer s.active.Done()
			s.handle(c, dir)
		}()
	}
}

// handle serves one accepted connection: it finds the original destination, works out
// the protocol, and relays it opaque or hands it to the HTTP proxy.
func (s *Server) handle(down *net.TCPConn, dir Direction) {
	id := s.connID.Add(1)
	log := s.log.With().Uint64(telemetry.FieldConnID, id).Str(telemetry.FieldDirection, string(dir)).
		Stringer(telemetry.FieldSrc, down.RemoteAddr()).Logger()

	dst, err := OriginalDst(down)
	if err != nil {
		s.refuse(down, dir, "no_original_dst", log.Warn().Err(err))
		return
	}
	log = log.With().Stringer(telemetry.FieldOrigDst, dst).Logger()
	if s.isSelf(down, dst) {
		s.refuse(down, dir, "loop", log.Warn())
		return
	}
	_ = down.SetNoDelay(true)

	var r sniffResult
	detected := ""
	switch pinned := s.cfg.Sniff.PortProtocol(dst.Port()); pinned {
	case config.ProtoTCP:
		r.res.Proto = sniff.TCP
	case config.ProtoTLS:
		r.res.Proto = sniff.TLS
	case config.ProtoHTTP, config.ProtoHTTP2, config.ProtoGRPC:
		// Pinned to HTTP: the HTTP server tells HTTP/1.1 from h2c itself.
		r.res.Proto = sniff.HTTP1
		detected = pinned
	default:
		r, err = s.sniffConn(down, func() (*net.TCPConn, error) { return s.dialUpstream(dir, dst, log) })
		if err != nil {
			log.Debug().Err(err).Msg("connection ended while detecting its protocol")
			_ = down.SetLinger(0)
			_ = down.Close()
			return
		}
	}
	if detected == "" {
		detected = r.res.Proto.String()
	}
	s.metrics.Detected.WithLabelValues(string(dir), detected).Inc()

	switch {
	case r.res.Proto == sniff.HTTP2, r.res.Proto == sniff.HTTP1 && r.res.Method != "CONNECT":
		// CONNECT asks for a tunnel; the tunnel's bytes are relayed opaque below.
		if r.up != nil {
			_ = r.up.Close() // dialled for a client that was slow to speak: HTTP pools its own
		}
		rc := &replayConn{Conn: down, tcp: down, r: &r, head: r.head(),
			meta: router.Meta{Direction: string(dir), Dst: dst, ConnID: id}}
		if r.res.Proto == sniff.HTTP1 {
			rc.meta.Guard = &router.H1Guard{}
		}
		s.http.ServeConn(rc)
		return
	}
	if r.res.Proto == sniff.TLS && r.res.SNI != "" {
		log = log.With().Str("sni", r.res.SNI).Logger()
	}
	s.relayTCP(down, dir, dst, &r, log)
}

// relayTCP relays an opaque or TLS connection byte for byte with splice, after passing on
// whatever sniffing already read from either side.
func (s *Server) relayTCP(down *net.TCPConn, dir Direction, dst netip.AddrPort, r *sniffResult, log zerolog.Logger) {
	start := time.Now()
	dstLabel := dst.String()
	up := r.up
	if up == nil {
		var err error
		if up, err = s.dialUpstream(dir, dst, log); err != nil {
			r.release()
			// Reset, so the app sees a failed connection as it would without the proxy.
			_ = down.SetLinger(0)
			_ = down.Close()
			return
		}
	}
	recvC := s.metrics.TCPReceived.WithLabelValues(string(dir), dstLabel)
	sentC := s.metrics.TCPSent.WithLabelValues(string(dir), dstLabel)
	s.metrics.TCPOpened.WithLabelValues(string(dir), dstLabel).Inc()
	active := s.metrics.TCPActive.WithLabelValues(string(dir))
	active.Inc()
	defer func() {
		active.Dec()
		s.metrics.TCPClosed.WithLabelValues(string(dir), dstLabel).Inc()
	}()

	var pre RelayResult
	if len(r.hello) > 0 {
		n, err := down.Write(r.hello)
		pre.Sent += int64(n)
		sentC.Add(float64(n))
		if err != nil {
			pre.Err = err
		}
	}
	if head := r.head(); len(head) > 0 && pre.Err == nil {
		n, err := up.Write(head)
		pre.Received += int64(n)
		recvC.Add(float64(n))
		if err != nil {
			pre.Err = err
		}
	}
	r.release()
	if pre.Err != nil {
		_ = down.SetLinger(0)
		_ = up.SetLinger(0)
		_ = down.Close()
		_ = up.Close()
		log.Debug().Err(pre.Err).Msg("connection failed before the relay started")
		return
	}

	stop := context.AfterFunc(s.kill, func() {
		_ = down.SetLinger(0)
		_ = down.Close()
		_ = up.SetLinger(0)
		_ = up.Close()
	})
	defer stop()
	log.Debug().Str(telemetry.FieldProto, r.res.Proto.String()).Msg("relaying")
	res := Relay(down, up, s.cfg.Proxy.IdleTimeout, func(toUp bool, n int64) {
		if toUp {
			recvC.Add(float64(n))
		} else {
			sentC.Add(float64(n))
		}
	})
	ev := log.Debug()
	if res.Err != nil && !isExpected(res.Err) {
		ev = log.Info().AnErr("close_reason", res.Err)
	}
	ev.Str(telemetry.FieldProto, r.res.Proto.String()).
		Int64(telemetry.FieldReceived, pre.Received+res.Received).Int64(telemetry.FieldSent, pre.Sent+res.Sent).
		Dur(telemetry.FieldDuration, time.Since(start)).Msg("connection closed")
}

// dialUpstream connects to a destination for a connection going dir. Inbound connections
// to this host's own addresses are forwarded from the passthrough address, which the
// OUTPUT rules let through; from any other address the forward over lo would be captured
// again.
func (s *Server) dialUpstream(dir Direction, dst netip.AddrPort, log zerolog.Logger) (*net.TCPConn, error) {
	ctx, cancel := context.WithTimeout(s.kill, s.cfg.Proxy.ConnectTimeout)
	defer cancel()
	c, err := s.dial(ctx, dir, dst)
	if err != nil {
		s.metrics.ConnectErr.WithLabelValues(string(dir), dst.String()).Inc()
		log.Info().Err(err).Msg("upstream connect failed")
		return nil, err
	}
	return c, nil
}

func (s *Server) dial(ctx context.Context, dir Direction, dst netip.AddrPort) (*net.TCPConn, error) {
	d := net.Dialer{Timeout: s.cfg.Proxy.ConnectTimeout}
	if dir == Inbound && dst.Addr().Is4() && s.local.Has(dst.Addr()) {
		d.LocalAddr = passthroughAddr
	}
	c, err := d.DialContext(ctx, "tcp", dst.String())
	if err != nil {
		return nil, err
	}
	tc := c.(*net.TCPConn)
	_ = tc.SetNoDelay(true)
	return tc, nil
}

var passthroughAddr = &net.TCPAddr{IP: net.ParseIP(intercept.InboundPassthroughV4)}

// isSelf reports whether a connection was made straight to the proxy's own port rather
// than redirected to it: relaying it would connect the proxy to itself, forever.
func (s *Server) isSelf(c *net.TCPConn, dst netip.AddrPort) bool {
	if la, ok := c.LocalAddr().(*net.TCPAddr); ok && la.AddrPort() == dst {
		return true
	}
	p := int(dst.Port())
	if p != s.cfg.Proxy.InboundPort && p != s.cfg.Proxy.OutboundPort {
		return false
	}
	return dst.Addr().IsLoopback() || dst.Addr().IsUnspecified() || s.local.Has(dst.Addr())
}

func (s *Server) refuse(c *net.TCPConn, dir Direction, reason string, ev *zerolog.Event) {
	s.metrics.TCPRefused.WithLabelValues(string(dir), reason).Inc()
	ev.Str(telemetry.FieldReason, reason).Msg("connection refused: not a redirected connection")
	_ = c.SetLinger(0)
	_ = c.Close()
}

// isExpected reports whether err is the ordinary end of a connection (a peer's reset, a
// close) that deserves no more than a debug line.
func isExpected(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed)
}

// Shutdown stops accepting, waits for connections in flight to finish until ctx ends,
// then closes those left. It returns the number of connections it had to cut.
func (s *Server) Shutdown(ctx context.Context) {
	s.mu.Lock()
	for _, ln := range s.listeners {
		_ = ln.Close()
	}
	s.mu.Unlock()
	httpDone := make(chan struct{})
	go func() { s.http.Shutdown(ctx); close(httpDone) }()
	done := make(chan struct{})
	go func() { s.active.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		s.log.Warn().Msg("drain deadline passed: closing connections still open")
		s.killCancel()
		<-done
	}
	<-httpDone
	s.local.Stop()
}
