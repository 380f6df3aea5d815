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
}

// NewServer returns a server for cfg's static settings.
func NewServer(cfg *config.Config, log zerolog.Logger, m *telemetry.Metrics) *Server {
	kill, cancel := context.WithCancel(context.Background())
	return &Server{cfg: cfg, log: log, metrics: m, local: NewLocalAddrs(), kill: kill, killCancel: cancel}
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

// handle relays one accepted connection to its original destination.
func (s *Server) handle(down *net.TCPConn, dir Direction) {
	id := s.connID.Add(1)
	start := time.Now()
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
	dstLabel := dst.String()

	d := net.Dialer{Timeout: s.cfg.Proxy.ConnectTimeout}
	if dir == Inbound && dst.Addr().Is4() && s.local.Has(dst.Addr()) {
		// Forward to the app from the passthrough address, which the OUTPUT rules let
		// through; from any other address the forward over lo would be captured again.
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(intercept.InboundPassthroughV4)}
	}
	ctx, cancel := context.WithTimeout(s.kill, s.cfg.Proxy.ConnectTimeout)
	uc, err := d.DialContext(ctx, "tcp", dst.String())
	cancel()
	if err != nil {
		s.metrics.ConnectErr.WithLabelValues(string(dir), dstLabel).Inc()
		log.Info().Err(err).Msg("upstream connect failed")
		// Reset, so the app sees a failed connection as it would without the proxy.
		_ = down.SetLinger(0)
		_ = down.Close()
		return
	}
	up := uc.(*net.TCPConn)

	s.metrics.TCPOpened.WithLabelValues(string(dir), dstLabel).Inc()
	active := s.metrics.TCPActive.WithLabelValues(string(dir))
	active.Inc()
	recvC := s.metrics.TCPReceived.WithLabelValues(string(dir), dstLabel)
	sentC := s.metrics.TCPSent.WithLabelValues(string(dir), dstLabel)
	stop := context.AfterFunc(s.kill, func() {
		_ = down.SetLinger(0)
		_ = down.Close()
		_ = up.SetLinger(0)
		_ = up.Close()
	})
	log.Debug().Msg("relaying")

	res := Relay(down, up, s.cfg.Proxy.IdleTimeout, func(toUp bool, n int64) {
		if toUp {
			recvC.Add(float64(n))
		} else {
			sentC.Add(float64(n))
		}
	})

	stop()
	active.Dec()
	s.metrics.TCPClosed.WithLabelValues(string(dir), dstLabel).Inc()
	ev := log.Debug()
	if res.Err != nil && !isExpected(res.Err) {
		ev = log.Info().AnErr("close_reason", res.Err)
	}
	ev.Int64(telemetry.FieldReceived, res.Received).Int64(telemetry.FieldSent, res.Sent).
		Dur(telemetry.FieldDuration, time.Since(start)).Msg("connection closed")
}

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
	done := make(chan struct{})
	go func() { s.active.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		s.log.Warn().Msg("drain deadline passed: closing connections still open")
		s.killCancel()
		<-done
	}
	s.local.Stop()
}
