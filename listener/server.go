// Package listener accepts the connections iptables redirects to the proxy, recovers
// where each was going, and hands it on: today a transparent relay to that destination.
package listener

import (
	"context"
	stdtls "crypto/tls"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
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
	stopping  bool // set by Shutdown, under mu: see begin
	// kill is cancelled when the drain deadline passes: connections still open are closed.
	kill       context.Context
	killCancel context.CancelFunc

	http   *router.HTTP
	router *router.Router
	mesh   *mesh // nil when mTLS is not configured

	relays relaySet // connections relayed as TCP, for the drain deadline to cut
}

// NewServer returns a server for cfg's static settings, with cfg's dynamic ones in
// force; Router().Apply changes those.
func NewServer(cfg *config.Config, log zerolog.Logger, m *telemetry.Metrics) (*Server, error) {
	kill, cancel := context.WithCancel(context.Background())
	s := &Server{cfg: cfg, log: log, metrics: m, local: NewLocalAddrs(), kill: kill, killCancel: cancel}
	rt, err := router.NewRouter(cfg, log, m)
	if err != nil {
		cancel()
		return nil, err
	}
	s.router = rt
	s.http = router.NewHTTP(cfg, rt, log, m, func(ctx context.Context, dir string, dst netip.AddrPort) (net.Conn, error) {
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
	return s, nil
}

// Router returns the router that holds the dynamic config in force.
func (s *Server) Router() *router.Router { return s.router }

// Listen opens the listeners for dir: one IPv4 socket and, when the host has IPv6, one
// IPv6-only socket. They are separate because SO_ORIGINAL_DST must be asked at the level
// of the socket's own family; a dual-stack socket would see IPv4 peers as v4-mapped.
func (s *Server) Listen(dir Direction) ([]*net.TCPListener, error) {
	port := s.cfg.Proxy.OutboundPort
	if dir == Inbound {
		port = s.cfg.Proxy.InboundPort
	}
	var lc net.ListenConfig
	if dir == Outbound {
		lc.KeepAlive = noKeepAlive // accepted from the workload beside the proxy
	}
	ln4, err := lc.Listen(context.Background(), "tcp4", net.JoinHostPort("", strconv.Itoa(port)))
	if err != nil {
		return nil, err
	}
	lns := []*net.TCPListener{ln4.(*net.TCPListener)}
	if intercept.HasIPv6() {
		ln6, err := lc.Listen(context.Background(), "tcp6", net.JoinHostPort("::", strconv.Itoa(port)))
		if err != nil {
			_ = ln4.Close()
			return nil, err
		}
		lns = append(lns, ln6.(*net.TCPListener))
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
		if !s.begin() {
			_ = c.Close() // accepted as Shutdown closed the listener
			return nil
		}
		go func() {
			defer s.active.Done()
			s.handle(c, dir)
		}()
	}
}

// begin counts a connection in active, unless Shutdown has begun. Under mu with
// Shutdown's flag, so that no count can start while Shutdown waits for the count to
// reach zero (WaitGroup requires an Add from zero to come before the Wait); a
// connection's later Adds come while it is counted.
func (s *Server) begin() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		return false
	}
	s.active.Add(1)
	return true
}

// handle serves one accepted connection: it finds the original destination, works out
// the protocol, and relays it opaque or hands it to the HTTP proxy.
func (s *Server) handle(down *net.TCPConn, dir Direction) {
	id := s.connID.Add(1)
	dst, err := OriginalDst(down)
	if err != nil {
		// The fields the connection's logger would have: it is made once, in handleTo,
		// since each zerolog context is a buffer of its own.
		s.refuse(down, dir, "no_original_dst", s.log.Warn().Uint64(telemetry.FieldConnID, id).
			Str(telemetry.FieldDirection, string(dir)).Stringer(telemetry.FieldSrc, down.RemoteAddr()).Err(err))
		return
	}
	s.handleTo(down, dir, id, dst)
}

// handleTo is handle once the original destination is known. Tests, which have no
// redirected connection to recover it from, start here.
func (s *Server) handleTo(down *net.TCPConn, dir Direction, id uint64, dst netip.AddrPort) {
	log := s.log.With().Uint64(telemetry.FieldConnID, id).Str(telemetry.FieldDirection, string(dir)).
		Stringer(telemetry.FieldSrc, down.RemoteAddr()).Stringer(telemetry.FieldOrigDst, dst).Logger()
	if s.isSelf(down, dst) {
		s.refuse(down, dir, "loop", log.Warn())
		return
	}
	c := conn{id: id, dir: dir, dst: dst}
	if ra, ok := down.RemoteAddr().(*net.TCPAddr); ok {
		c.src = ra.AddrPort()
	}
	if s.mesh != nil {
		c.localID = s.mesh.src.Current().ID.String()
		if dir == Outbound {
			c.outMode = s.cfg.MTLS.OutboundMode(dst)
		} else if mode := s.cfg.MTLS.InboundMode(dst.Port()); mode != config.MTLSDisable {
			s.inboundMesh(down, c, mode, log)
			return
		}
	}
	s.serve(down, c, nil, log)
}

// conn is what the listener knows of a connection as it passes it on.
type conn struct {
	id      uint64
	dir     Direction
	dst     netip.AddrPort
	src     netip.AddrPort // the downstream peer
	localID string         // this workload's SPIFFE ID when mTLS is configured
	peerID  string         // inbound over mesh mTLS: the peer's verified SPIFFE ID
	outMode string         // outbound: the mtls.outbound mode for dst ("" without mTLS)
	// Outbound connections a TCP route or a config service sends somewhere: where,
	// and the load balancer's Done for the connection (called when it ends).
	upstream netip.AddrPort
	service  string
	done     func()
}

// release ends the connection's claim on the endpoint its load balancer gave it.
func (c *conn) release() {
	if c.done != nil {
		c.done()
		c.done = nil
	}
}

// serve works out the protocol of down (the accepted TCP connection, or the plaintext
// inside a mesh mTLS connection) and relays it opaque or hands it to the HTTP proxy.
// pre, when not nil, is what sniffing down already found.
func (s *Server) serve(down net.Conn, c conn, pre *sniffResult, log zerolog.Logger) {
	var r sniffResult
	detected := ""
	pinned := s.cfg.Sniff.PortProtocol(c.dst.Port())
	if pinned == config.ProtoAuto {
		pinned = s.pinnedByRoute(&c)
	}
	switch {
	case pre != nil:
		r = *pre
		if pinned != config.ProtoAuto && r.hello == nil {
			r.res = pinnedResult(pinned)
			if pinned != config.ProtoTCP && pinned != config.ProtoTLS {
				detected = pinned
			}
		}
	case pinned != config.ProtoAuto:
		r.res = pinnedResult(pinned)
		if pinned != config.ProtoTCP && pinned != config.ProtoTLS {
			detected = pinned
		}
	default:
		var err error
		r, err = s.sniffConn(down, s.gateDial(&c, func() (net.Conn, error) { return s.dialUpstream(&c, "", log) }))
		if err != nil {
			log.Debug().Err(err).Msg("connection ended while detecting its protocol")
			reset(down)
			return
		}
	}
	if detected == "" {
		detected = r.res.Proto.String()
	}
	s.metrics.Detected.WithLabelValues(string(c.dir), detected).Inc()

	switch {
	case r.res.Proto == sniff.HTTP2, r.res.Proto == sniff.HTTP1 && r.res.Method != "CONNECT":
		// CONNECT asks for a tunnel; the tunnel's bytes are relayed opaque below.
		if r.up != nil {
			_ = r.up.Close() // dialled for a client that was slow to speak: HTTP pools its own
			c.release()
		}
		rc := &replayConn{Conn: down, r: &r, head: r.head(),
			meta: router.Meta{Direction: string(c.dir), Dst: c.dst, Src: c.src, ConnID: c.id, PeerID: c.peerID, LocalID: c.localID,
				Mesh: c.outMode == config.MTLSOn || c.outMode == config.MTLSAuto}}
		if r.res.Proto == sniff.HTTP1 {
			rc.meta.Guard = &router.H1Guard{}
		} else {
			rc.meta.H2 = true
		}
		s.http.ServeConn(rc)
		return
	}
	if r.res.Proto == sniff.TLS && r.res.SNI != "" {
		log = log.With().Str("sni", r.res.SNI).Logger()
	}
	if !s.authorizeTCP(down, &c, &r, log) {
		return
	}
	s.relayTCP(down, c, &r, log)
}

// pinnedResult is what a port pinned by sniff.ports is taken to carry. Pinned to HTTP,
// the HTTP server tells HTTP/1.1 from h2c itself.
func pinnedResult(pinned string) sniff.Result {
	switch pinned {
	case config.ProtoTCP:
		return sniff.Result{Proto: sniff.TCP}
	case config.ProtoTLS:
		return sniff.Result{Proto: sniff.TLS}
	}
	return sniff.Result{Proto: sniff.HTTP1}
}

// relayTCP relays an opaque or TLS connection byte for byte (with splice when both sides
// are plain TCP), after passing on whatever sniffing already read from either side.
func (s *Server) relayTCP(down net.Conn, c conn, r *sniffResult, log zerolog.Logger) {
	start := time.Now()
	dir := c.dir
	dstLabel := c.dst.String()
	up := r.up
	if up == nil {
		var err error
		if up, err = s.dialUpstream(&c, r.res.SNI, log); err != nil {
			c.release()
			r.release()
			// Reset, so the app sees a failed connection as it would without the proxy.
			reset(down)
			return
		}
	}
	policy, principal := telemetry.SecurityNone, telemetry.UnknownPrincipal
	if c.peerID != "" {
		policy, principal = telemetry.SecurityMTLS, c.peerID
	} else if _, ok := up.(*stdtls.Conn); ok {
		policy, principal = telemetry.SecurityMTLS, c.localID
	}
	labels := [...]string{string(dir), dstLabel, policy, principal}
	recvC := s.metrics.TCPReceived.WithLabelValues(labels[:]...)
	sentC := s.metrics.TCPSent.WithLabelValues(labels[:]...)
	s.metrics.TCPOpened.WithLabelValues(labels[:]...).Inc()
	active := s.metrics.TCPActive.WithLabelValues(string(dir))
	active.Inc()

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
	proto := r.res.Proto.String()
	r.release()
	if pre.Err != nil {
		reset(down)
		reset(up)
		log.Debug().Err(pre.Err).Msg("connection failed before the relay started")
		active.Dec()
		s.metrics.TCPClosed.WithLabelValues(labels[:]...).Inc()
		c.release()
		return
	}

	log.Debug().Str(telemetry.FieldProto, proto).Str(telemetry.FieldSecurity, policy).Msg("relaying")
	t := &tcpRelay{s: s, down: down, up: up, start: start, preReceived: pre.Received, preSent: pre.Sent,
		id: c.id, dir: dir, dst: c.dst, peerID: c.peerID, release: c.done, proto: proto,
		policy: policy, dstLabel: dstLabel, principal: principal, recvC: recvC, sentC: sentC, active: active}
	if r.res.Proto == sniff.TLS {
		t.sni = r.res.SNI // as serve adds it to log
	}
	// This goroutine ends here: its stack grew accepting, sniffing and dialling, and the
	// runtime would keep it at that size for the life of the connection. The relay has
	// goroutines only while bytes move (see Relay).
	s.active.Add(1)
	downTCP, ok1 := down.(*net.TCPConn)
	upTCP, ok2 := up.(*net.TCPConn)
	if ok1 && ok2 {
		t.tcp.init(downTCP, upTCP, s.cfg.Proxy.IdleTimeout, t)
		s.relays.add(t)
		t.tcp.spawn()
		return
	}
	s.relays.add(t)
	go func() {
		t.relayEnded(RelayStreams(down, up, s.cfg.Proxy.IdleTimeout, t.relayed))
	}()
}

// tcpRelay is a connection relayed as TCP from the start of the relay to its end: the
// relay itself, and what its metrics and its closing log line need. It is one
// allocation, which an idle connection holds for as long as it stays open.
//
// It holds no logger: a zerolog context is a rendered buffer of 500 bytes or more. The
// closing line is written from s.log with the connection's fields added to the event,
// in the order handleTo, terminate and serve add them to the connection's logger, which
// gives the same line.
type tcpRelay struct {
	tcp      relay // when both sides are plain TCP
	s        *Server
	down, up net.Conn
	start    time.Time
	// Bytes written before the relay started.
	preReceived, preSent int64

	id      uint64
	dir     Direction
	dst     netip.AddrPort
	peerID  string
	sni     string
	release func() // the load balancer's, or nil

	// The metrics' labels are dir, dstLabel, policy and principal.
	proto, policy, dstLabel, principal string
	recvC, sentC                       prometheus.Counter
	active                             prometheus.Gauge

	prev, next *tcpRelay // in s.relays
}

func (t *tcpRelay) relayed(toUpstream bool, n int64) {
	if toUpstream {
		t.recvC.Add(float64(n))
	} else {
		t.sentC.Add(float64(n))
	}
}

func (t *tcpRelay) relayEnded(res RelayResult) {
	s := t.s
	failed := res.Err != nil && !isExpected(res.Err)
	ev := s.log.Debug()
	if failed {
		ev = s.log.Info()
	}
	if ev != nil {
		ev.Uint64(telemetry.FieldConnID, t.id).Str(telemetry.FieldDirection, string(t.dir)).
			Stringer(telemetry.FieldSrc, t.down.RemoteAddr()).Stringer(telemetry.FieldOrigDst, t.dst)
		if t.peerID != "" {
			ev.Str(telemetry.FieldPeerID, t.peerID)
		}
		if t.sni != "" {
			ev.Str("sni", t.sni)
		}
		if failed {
			ev.AnErr("close_reason", res.Err)
		}
		ev.Str(telemetry.FieldProto, t.proto).Str(telemetry.FieldSecurity, t.policy).
			Int64(telemetry.FieldReceived, t.preReceived+res.Received).Int64(telemetry.FieldSent, t.preSent+res.Sent).
			Dur(telemetry.FieldDuration, time.Since(t.start)).Msg("connection closed")
	}
	s.relays.remove(t)
	t.active.Dec()
	s.metrics.TCPClosed.WithLabelValues(string(t.dir), t.dstLabel, t.policy, t.principal).Inc()
	if t.release != nil {
		t.release()
	}
	s.active.Done()
}

// kill resets both sides, when the drain deadline has passed.
func (t *tcpRelay) kill() {
	if t.tcp.down != nil {
		t.tcp.abort()
		return
	}
	reset(t.down)
	reset(t.up)
}

// relaySet is the connections being relayed as TCP, for the drain deadline to cut. A
// list threaded through the relays costs each two pointers, less than a
// context.AfterFunc per relay would.
type relaySet struct {
	once sync.Once
	mu   sync.Mutex
	head *tcpRelay
}

func (rs *relaySet) add(t *tcpRelay) {
	s := t.s
	rs.once.Do(func() {
		context.AfterFunc(s.kill, func() {
			rs.mu.Lock()
			var all []*tcpRelay
			for t := rs.head; t != nil; t = t.next {
				all = append(all, t)
			}
			rs.mu.Unlock()
			for _, t := range all {
				t.kill()
			}
		})
	})
	rs.mu.Lock()
	t.next = rs.head
	if rs.head != nil {
		rs.head.prev = t
	}
	rs.head = t
	rs.mu.Unlock()
	if s.kill.Err() != nil { // cancelled before the relay was in the list
		t.kill()
	}
}

func (rs *relaySet) remove(t *tcpRelay) {
	rs.mu.Lock()
	if t.prev != nil {
		t.prev.next = t.next
	} else if rs.head == t {
		rs.head = t.next
	}
	if t.next != nil {
		t.next.prev = t.prev
	}
	t.prev, t.next = nil, nil
	rs.mu.Unlock()
}

// dialUpstream connects to a destination for a connection: through the mesh dialer for
// an outbound connection whose destination is in mTLS mode on or auto (the result is
// then a *stdtls.Conn, or a plain connection to an endpoint auto mode found outside the
// mesh), plain TCP otherwise. Inbound connections to this host's own addresses are
// forwarded from the passthrough address, which the OUTPUT rules let through; from any
// other address the forward over lo would be captured again.
func (s *Server) dialUpstream(c *conn, sni string, log zerolog.Logger) (net.Conn, error) {
	target, mode, err := s.tcpTarget(c, sni, log)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(s.kill, s.cfg.Proxy.ConnectTimeout)
	defer cancel()
	var up net.Conn
	if c.dir == Outbound && s.mesh != nil && mode != config.MTLSOff && mode != "" {
		up, err = s.dialMesh(ctx, target, mode, log)
	} else {
		up, err = s.dial(ctx, c.dir, target)
	}
	if err != nil {
		s.metrics.ConnectErr.WithLabelValues(string(c.dir), target.String()).Inc()
		log.Info().Err(err).Msg("upstream connect failed")
		return nil, err
	}
	return up, nil
}

func (s *Server) dial(ctx context.Context, dir Direction, dst netip.AddrPort) (*net.TCPConn, error) {
	d := net.Dialer{Timeout: s.cfg.Proxy.ConnectTimeout}
	if dir == Inbound && s.local.Has(dst.Addr()) {
		d.KeepAlive = noKeepAlive // to the workload beside the proxy
		if dst.Addr().Is4() {
			d.LocalAddr = passthroughAddr
		}
	}
	c, err := d.DialContext(ctx, "tcp", dst.String())
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// noKeepAlive turns TCP keep-alive off (net.ListenConfig and net.Dialer) on the
// connections whose peer is the workload beside the proxy: those accepted outbound, and
// those dialed inbound to a local address. Both ends share a network namespace, so if
// the workload goes away the kernel ends them at once and probes would find nothing;
// leaving them off saves four setsockopt calls on every new connection. Connections to
// and from other hosts keep Go's default (probes after 15 s idle), which finds a peer
// that vanished without a reset. (Every TCP connection Go makes already has
// TCP_NODELAY set.)
const noKeepAlive = -1

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
	s.refuseMsg(c, dir, reason, ev, "connection refused: not a redirected connection")
}

func (s *Server) refuseMsg(c *net.TCPConn, dir Direction, reason string, ev *zerolog.Event, msg string) {
	s.metrics.TCPRefused.WithLabelValues(string(dir), reason).Inc()
	ev.Str(telemetry.FieldReason, reason).Msg(msg)
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
	s.stopping = true
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
	s.router.Close()
}
