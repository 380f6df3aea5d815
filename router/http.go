// Package router decides where a connection or request goes and takes it there: today the
// HTTP-family proxy (HTTP/1.1, h2c, gRPC, WebSocket) to each connection's original
// destination, with pooled upstream connections and per-request metrics, and the
// HTTP/1.1 fast path and HTTP/2 relay for traffic the config does not touch.
package router

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"skiff/config"
	"skiff/telemetry"
)

// Meta is what the listener knows of a connection it hands over.
type Meta struct {
	Direction string         // "inbound" or "outbound"
	Dst       netip.AddrPort // original destination
	Src       netip.AddrPort // the downstream peer's address
	ConnID    uint64
	// Guard follows an HTTP/1 connection's framing (nil for HTTP/2).
	Guard *H1Guard
	// H2 is set on a connection that opened with the HTTP/2 client preface (h2c with
	// prior knowledge).
	H2 bool
	// PeerID is the verified SPIFFE ID of the peer sidecar of an inbound connection
	// that came over mesh mTLS; "" otherwise. (For policy, metrics, logs and the
	// X-Forwarded-Client-Cert header.)
	PeerID string
	// LocalID is this workload's SPIFFE ID when mTLS is configured, else "".
	LocalID string
	// Mesh is set on an outbound connection whose upstreams are dialled through the
	// mesh dialer (mtls.outbound mode on or auto for its destination).
	Mesh bool
}

// Conn is a downstream connection and its metadata.
type Conn interface {
	net.Conn
	Meta() *Meta
}

type metaKey struct{}

// DialFunc dials an upstream for a direction.
type DialFunc func(ctx context.Context, direction string, dst netip.AddrPort) (net.Conn, error)

// HTTP proxies the HTTP-family connections the listener hands to it. One http.Server
// serves HTTP/1.1 and HTTP/2 with prior knowledge (h2c) on every connection; requests
// go to the connection's original destination over pooled upstream connections, with
// the downstream's protocol: HTTP/1.1 over HTTP/1.1, HTTP/2 (and so gRPC) over h2c.
type HTTP struct {
	log     zerolog.Logger
	metrics *telemetry.Metrics
	srv     *http.Server
	ln      *connListener
	// proxies[direction][h2] — a separate pool per direction, because inbound dials bind
	// the passthrough source address.
	proxies map[string][2]*httputil.ReverseProxy
	// mesh[h2] proxies outbound requests of Meta.Mesh connections, over pooled
	// connections from the mesh dialer: HTTP/1.1 keep-alive or multiplexed HTTP/2 inside
	// mTLS. nil until EnableMesh.
	mesh *[2]*httputil.ReverseProxy
	cfg  *config.Config
	rt   *Router
	pool *bufferPool
	// mirrorSlots bounds the mirrored copies in flight.
	mirrorSlots chan struct{}
	// The HTTP/1.1 fast path (h1proxy.go): its connections and upstream pool.
	h1     h1Conns
	h1pool *h1Pool
	// The HTTP/2 fast path (h2relay.go): its relays, and the dialler of their upstreams.
	h2   h2Relays
	dial DialFunc
}

// XFCC is the header that tells the app which mesh peer a request came from, in
// Envoy's format: By=<this workload's ID>;URI=<the peer's ID>.
const XFCC = "X-Forwarded-Client-Cert"

// NewHTTP returns the proxy; Serve must run for it to take connections.
func NewHTTP(cfg *config.Config, rt *Router, log zerolog.Logger, m *telemetry.Metrics, dial DialFunc) *HTTP {
	h := &HTTP{log: log, metrics: m, ln: newConnListener(), proxies: map[string][2]*httputil.ReverseProxy{},
		cfg: cfg, rt: rt, pool: &bufferPool{}, mirrorSlots: make(chan struct{}, maxMirrors),
		dial: dial}
	for _, dir := range []string{"inbound", "outbound"} {
		h.proxies[dir] = h.proxyPair(dir, dial)
	}
	h.h1pool = newH1Pool(dial)
	go h.h1.watchGone(h.h1pool.done)
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	h.srv = &http.Server{
		Handler:   h,
		Protocols: protocols,
		// Slow or stalled clients are bounded: a request head must arrive in time, an idle
		// keep-alive connection is closed, and a head may not be larger than Envoy's default.
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       cfg.Proxy.IdleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          newStdLogger(log),
		// OPTIONS * goes to the upstream like any request. Answered by the server itself,
		// it would also never reach ServeHTTP, and the H1Guard's count of requests would
		// run one ahead of the handler's.
		DisableGeneralOptionsHandler: true,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if mc, ok := c.(Conn); ok {
				return context.WithValue(ctx, metaKey{}, mc.Meta())
			}
			return ctx
		},
	}
	return h
}

func (h *HTTP) proxyPair(dir string, dial DialFunc) [2]*httputil.ReverseProxy {
	var pair [2]*httputil.ReverseProxy
	for i, h2 := range []bool{false, true} {
		pair[i] = &httputil.ReverseProxy{
			Rewrite:        h.rewrite,
			ModifyResponse: modifyResponse,
			Transport:      newTransport(dir, h2, h.cfg, dial),
			BufferPool:     h.pool,
			ErrorHandler:   h.proxyError,
			ErrorLog:       newStdLogger(h.log),
		}
	}
	return pair
}

// EnableMesh turns on mTLS handling: outbound requests of Meta.Mesh connections go
// through dial (which returns a *tls.Conn for an mTLS upstream, or a plain connection
// for one that is not in the mesh), and inbound requests carry the peer's identity in
// XFCC, a client's own XFCC being removed unless it came over mesh mTLS. Call it before
// the first connection is served.
func (h *HTTP) EnableMesh(dial func(ctx context.Context, dst netip.AddrPort) (net.Conn, error)) {
	pair := h.proxyPair("outbound", func(ctx context.Context, _ string, dst netip.AddrPort) (net.Conn, error) {
		return dial(ctx, dst)
	})
	h.mesh = &pair
}

// maxHeaderBytes bounds a request head; the HTTP/1 server reads up to 4 KiB more.
const maxHeaderBytes = 64 << 10

// newTransport is the upstream pool for one direction and protocol. Compression is off:
// the transport must not ask for encodings the app did not.
func newTransport(dir string, h2 bool, cfg *config.Config, dial DialFunc) *http.Transport {
	t := &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			ap, err := netip.ParseAddrPort(addr)
			if err != nil {
				return nil, err
			}
			return dial(ctx, dir, ap)
		},
		DisableCompression:    true,
		MaxIdleConns:          0, // no global cap; the per-destination cap below bounds it
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		Protocols:             new(http.Protocols),
	}
	if h2 {
		t.Protocols.SetUnencryptedHTTP2(true)
		t.HTTP2 = &http.HTTP2Config{
			// Keep the connection honest: a peer that stops answering is noticed.
			SendPingTimeout: 15 * time.Second,
			PingTimeout:     15 * time.Second,
		}
	} else {
		t.Protocols.SetHTTP1(true)
	}
	return t
}

// rewrite sends the request to the connection's original destination, leaving the
// request itself (method, authority, path, headers) as the app sent it.
func (h *HTTP) rewrite(pr *httputil.ProxyRequest) {
	m := pr.In.Context().Value(metaKey{}).(*Meta)
	if h.mesh != nil && m.Direction == "inbound" {
		// Only this proxy may say who the peer is.
		if m.PeerID != "" {
			pr.Out.Header[XFCC] = []string{"By=" + m.LocalID + ";URI=" + m.PeerID}
		} else {
			delete(pr.Out.Header, XFCC)
		}
	}
	pr.Out.URL.Scheme = "http"
	pr.Out.URL.Host = m.Dst.String()
	if rt := routedOf(pr.In.Context()); rt != nil {
		pr.Out.URL.Host = rt.addr.String()
		if route := rt.route; route != nil {
			if rw := route.rewrite; rw != nil {
				if rw.PathPrefix != "" {
					pr.Out.URL.Path = rewritePath(route, pr.In, rw.PathPrefix)
					pr.Out.URL.RawPath = rawRewrite(pr.In.URL, pr.Out.URL.Path, rw.PathPrefix)
				}
				if rw.Host != "" {
					pr.Out.Host = rw.Host
				}
			}
			route.reqOps.apply(pr.Out.Header)
		}
	}
	// ReverseProxy re-encodes (and so reorders, and drops parts of) a query with a ';' or
	// a bad escape; the app's query goes as it was sent.
	pr.Out.URL.RawQuery = pr.In.URL.RawQuery
	// Rewrite mode drops the client's X-Forwarded-* headers; a transparent proxy keeps them.
	for _, k := range []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
		if v, ok := pr.In.Header[k]; ok {
			pr.Out.Header[k] = v
		}
	}
}

// Serve runs the HTTP server until Shutdown.
func (h *HTTP) Serve() error {
	err := h.srv.Serve(h.ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// ServeConn hands one connection to the proxy. It does not wait for it to end (an h2c
// connection's upstream is dialled first, for the relay). An HTTP/1 connection (the
// listener gives those an H1Guard) starts on the fast path; an h2c one (Meta.H2) is
// relayed when the config does not apply to it.
func (h *HTTP) ServeConn(c Conn) {
	if c.Meta().Guard != nil {
		// A goroutine of its own: the caller's stack, deep from sniffing and dialling,
		// would otherwise stay with every idle keep-alive connection.
		go h.serveH1(c)
		return
	}
	// HTTP/2 with prior knowledge: relayed frame by frame when nothing in the config
	// applies to it (h2relay.go), else served by net/http through a read buffer
	// (h2server.go).
	if c.Meta().H2 && h.serveH2Relay(c) {
		return
	}
	h.serveStd(newBufferedConn(c))
}

// serveStd hands a connection to net/http's server.
func (h *HTTP) serveStd(c Conn) {
	select {
	case h.ln.conns <- c:
	case <-h.ln.closed:
		_ = c.Close()
	}
}

// Shutdown stops taking connections and waits for requests in flight until ctx ends,
// then closes what is left.
func (h *HTTP) Shutdown(ctx context.Context) {
	fast := make(chan struct{}, 2)
	go func() { h.h1.shutdown(ctx); fast <- struct{}{} }()
	go func() { h.h2.shutdown(ctx); fast <- struct{}{} }()
	if err := h.srv.Shutdown(ctx); err != nil {
		_ = h.srv.Close()
	}
	<-fast
	<-fast
	h.h1pool.close()
}

// ServeHTTP proxies one request and records it.
func (h *HTTP) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	m := r.Context().Value(metaKey{}).(*Meta)
	if r.ProtoMajor == 1 && m.Guard != nil && m.Guard.Take() {
		h.log.Info().Uint64(telemetry.FieldConnID, m.ConnID).
			Str(telemetry.FieldReason, "both Content-Length and Transfer-Encoding, or a folded header line").
			Msg("ambiguous request framing refused")
		w.Header().Set("Connection", "close")
		http.Error(w, "bad request: ambiguous message framing", http.StatusBadRequest)
		policy, principal := inboundSecurity(m)
		h.metrics.Requests.WithLabelValues(m.Direction, m.Dst.String(), "http", "400", "", policy, principal,
			telemetry.UnknownService, telemetry.FlagBadRequest).Inc()
		return
	}
	if m.Direction == "inbound" && !h.authorize(w, r, m, start) {
		return
	}
	proto := requestProtocol(r)
	if r.Header.Get("X-Request-Id") == "" {
		r.Header["X-Request-Id"] = []string{newRequestID()}
	}
	rw := &recorder{ResponseWriter: w, guard: m.Guard}
	var rt *routed
	if m.Direction == "outbound" {
		if rt = h.route(h.rt.Snapshot().Routes, m, rw, r, proto == "grpc"); rt != nil && rt.flag != "" {
			h.record(m, proto, start, nil, rw, &security{}, rt)
			return
		}
	}
	body := &countingBody{rc: r.Body}
	hasBody := r.Body != nil && r.Body != http.NoBody
	if hasBody || rt != nil {
		// A shallow copy: the server must keep seeing its own body, which tells it whether
		// an Expect: 100-continue body was ever asked for (if not, it closes rather than
		// waits for a body the client will not send).
		ctx := r.Context()
		if rt != nil {
			ctx = context.WithValue(ctx, routedKey{}, rt)
		}
		r = r.WithContext(ctx)
		if hasBody {
			r.Body = body
		}
	}
	if rt != nil {
		defer rt.done()
		if route := rt.route; route != nil {
			if route.mirror != nil && mirrorChance(route.mirror.percent) {
				rt.mirror = &mirrorCopy{m: route.mirror}
				if hasBody {
					rt.mirror.body = &captureBody{rc: body.rc}
					body.rc = rt.mirror.body
				}
			}
			if route.timeout > 0 {
				// The route's timeout bounds the wait for the response head; a response
				// that has begun may stream for as long as it likes (ModifyResponse stops
				// the timer).
				ctx, cancel := context.WithCancel(r.Context())
				defer cancel()
				rt.timer = time.AfterFunc(route.timeout, func() {
					rt.timedOut.Store(true)
					cancel()
				})
				defer rt.timer.Stop()
				r = r.WithContext(ctx)
			}
		}
	}
	h2 := 0
	if r.ProtoMajor == 2 {
		h2 = 1
	}
	proxy := h.proxies[m.Direction][h2]
	sec := &security{}
	useMesh := m.Mesh
	if rt != nil && h.mesh != nil {
		// A routed request goes to the endpoint picked, whose mTLS mode may differ from
		// that of the address the app dialled.
		useMesh = h.cfg.MTLS.OutboundMode(rt.addr) != config.MTLSOff
	}
	if useMesh && h.mesh != nil && m.Direction == "outbound" {
		proxy = h.mesh[h2]
		// Which connection served the request says whether it went over mTLS (auto mode
		// may have found the endpoint outside the mesh).
		r = r.WithContext(httptrace.WithClientTrace(r.Context(), &httptrace.ClientTrace{
			GotConn: func(info httptrace.GotConnInfo) {
				_, ok := info.Conn.(*tls.Conn)
				sec.mtls.Store(ok)
			},
		}))
	}
	// Deferred: ReverseProxy ends a response that fails midway (the client or the upstream
	// went away) with panic(http.ErrAbortHandler), and such requests count too.
	defer h.record(m, proto, start, body, rw, sec, rt)
	if rt != nil && rt.mirror != nil {
		defer h.sendMirror(r, rt.mirror, m)
	}
	proxy.ServeHTTP(rw, r)
}

// security is what an outbound request learnt of its upstream connection.
type security struct{ mtls atomic.Bool }

// inboundSecurity returns the connection_security_policy and source_principal labels
// of an inbound connection (and of an outbound one not known to have used mTLS).
func inboundSecurity(m *Meta) (string, string) {
	if m.Direction == "inbound" && m.PeerID != "" {
		return telemetry.SecurityMTLS, m.PeerID
	}
	return telemetry.SecurityNone, telemetry.UnknownPrincipal
}

// record adds a served request to the metrics.
func (h *HTTP) record(m *Meta, proto string, start time.Time, body *countingBody, rw *recorder, sec *security, rt *routed) {
	code := rw.code
	if code == 0 {
		code = http.StatusOK
	}
	grpcStatus := ""
	if proto == "grpc" {
		grpcStatus = grpcStatusOf(rw.Header())
	}
	policy, principal := inboundSecurity(m)
	if sec.mtls.Load() {
		policy, principal = telemetry.SecurityMTLS, m.LocalID
	}
	flag := telemetry.FlagNone
	if rt != nil && rt.flag != "" {
		flag = rt.flag
	} else if rw.flag != "" {
		flag = rw.flag
	}
	var reqBytes int64
	if body != nil {
		reqBytes = body.n.Load()
	}
	labels := []string{m.Direction, m.Dst.String(), proto, strconv.Itoa(code), grpcStatus, policy, principal,
		rt.serviceName(), flag}
	h.metrics.Requests.WithLabelValues(labels...).Inc()
	h.metrics.RequestDuration.WithLabelValues(labels...).Observe(float64(time.Since(start)) / float64(time.Millisecond))
	h.metrics.RequestBytes.WithLabelValues(labels...).Observe(float64(reqBytes))
	h.metrics.ResponseBytes.WithLabelValues(labels...).Observe(float64(rw.n))
}

// requestProtocol is Istio's request_protocol label: http, http2, grpc or websocket.
func requestProtocol(r *http.Request) string {
	switch {
	case strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc"):
		return "grpc"
	case r.ProtoMajor == 1 && strings.EqualFold(r.Header.Get("Upgrade"), "websocket"):
		return "websocket"
	case r.ProtoMajor == 2:
		return "http2"
	}
	return "http"
}

// grpcStatusOf finds grpc-status in the trailers the proxy wrote, or in the headers of a
// trailers-only response.
func grpcStatusOf(h http.Header) string {
	if v := h.Get("Grpc-Status"); v != "" {
		return v
	}
	if v := h.Get(http.TrailerPrefix + "Grpc-Status"); v != "" {
		return v
	}
	return ""
}

// proxyError answers a request the upstream could not serve, as Envoy does: 503 when no
// connection could be made, 504 on a timeout, 502 otherwise. A request whose client went
// away gets nothing.
func (h *HTTP) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	m := r.Context().Value(metaKey{}).(*Meta)
	if rt := routedOf(r.Context()); rt != nil && rt.timedOut.Load() {
		h.log.Info().Uint64(telemetry.FieldConnID, m.ConnID).Str(telemetry.FieldUpstream, rt.addr.String()).
			Dur("timeout", rt.route.timeout).Msg("route timeout: no response in time")
		if rw, ok := w.(*recorder); ok {
			rw.flag = telemetry.FlagTimeout
		}
		w.WriteHeader(http.StatusGatewayTimeout)
		return
	}
	if errors.Is(r.Context().Err(), context.Canceled) {
		h.log.Debug().Err(err).Uint64(telemetry.FieldConnID, m.ConnID).Msg("client went away")
		w.WriteHeader(499) // not sent on a closed connection; recorded in metrics
		return
	}
	code, flag := upstreamFailure(err)
	if rw, ok := w.(*recorder); ok {
		rw.flag = flag
	}
	upstream := m.Dst
	if rt := routedOf(r.Context()); rt != nil {
		upstream = rt.addr // the endpoint routing chose, which is what failed
	}
	h.logUpstreamFailure(m, upstream, err, code)
	w.WriteHeader(code)
}

// upstreamFailure is the status and response flag of a request the upstream could not
// serve, as Envoy answers it: 503 when no connection could be made, 504 on a timeout,
// 502 otherwise.
func upstreamFailure(err error) (code int, flag string) {
	var ne net.Error
	var oe *net.OpError
	switch {
	case errors.As(err, &oe) && oe.Op == "dial":
		return http.StatusServiceUnavailable, telemetry.FlagUpstreamFail
	case errors.As(err, &ne) && ne.Timeout():
		return http.StatusGatewayTimeout, telemetry.FlagTimeout
	}
	return http.StatusBadGateway, telemetry.FlagUpstreamFail
}

func (h *HTTP) logUpstreamFailure(m *Meta, upstream netip.AddrPort, err error, code int) {
	ev := h.log.Info().Err(err).Uint64(telemetry.FieldConnID, m.ConnID).Str(telemetry.FieldUpstream, upstream.String())
	if m.PeerID != "" {
		ev = ev.Str(telemetry.FieldPeerID, m.PeerID)
	}
	ev.Int("status", code).Msg("upstream request failed")
}

// recorder notes the status and size of a response. Unwrap lets http.ResponseController
// (which ReverseProxy uses to flush) reach the real writer.
type recorder struct {
	http.ResponseWriter
	guard *H1Guard
	code  int
	n     int64
	flag  string // response flag of a response the proxy made itself
}

// Hijack is how ReverseProxy switches protocols after the upstream's 101, which it then
// writes on the raw connection: record the 101, and stop the guard following bytes that
// are no longer HTTP.
func (r *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(r.ResponseWriter).Hijack()
	if err == nil {
		r.code = http.StatusSwitchingProtocols
		if r.guard != nil {
			r.guard.switched()
		}
	}
	return c, brw, err
}

func (r *recorder) WriteHeader(code int) {
	if r.code == 0 || r.code < 200 {
		r.code = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(b)
	r.n += int64(n)
	return n, err
}

func (r *recorder) Flush() { _ = http.NewResponseController(r.ResponseWriter).Flush() }

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// countingBody counts request body bytes as the proxy reads them. The count is atomic:
// the transport's goroutine that sends the body may still be reading when the handler
// returns and records it (an HTTP/2 upstream, or one that answered before the body ended).
type countingBody struct {
	rc io.ReadCloser
	n  atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	b.n.Add(int64(n))
	return n, err
}

func (b *countingBody) Close() error { return b.rc.Close() }

// bufferPool lends ReverseProxy its copy buffers, which it would otherwise allocate
// (32 KiB) for every response.
type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte {
	if v, ok := b.p.Get().(*[]byte); ok {
		return *v
	}
	return make([]byte, 32<<10)
}

func (b *bufferPool) Put(buf []byte) { b.p.Put(&buf) }

// connListener is a net.Listener fed by ServeConn, so that one http.Server can serve
// connections the listener already accepted and sniffed.
type connListener struct {
	conns     chan net.Conn
	closed    chan struct{}
	closeOnce sync.Once
}

func newConnListener() *connListener {
	return &connListener{conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return nil
}

func (l *connListener) Addr() net.Addr { return &net.TCPAddr{} }

// newStdLogger routes the standard library's server and proxy messages (TLS handshake
// noise, malformed requests) into the debug log rather than stderr.
func newStdLogger(l zerolog.Logger) *log.Logger {
	return log.New(zlWriter{l}, "", 0)
}

type zlWriter struct{ l zerolog.Logger }

func (w zlWriter) Write(p []byte) (int, error) {
	w.l.Debug().Msg(strings.TrimSpace(string(p)))
	return len(p), nil
}
