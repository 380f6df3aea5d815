package router

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"
	"golang.org/x/net/http2"

	"skiff/config"
	"skiff/telemetry"
)

// The harness puts the real HTTP proxy between real clients and real servers, all on
// loopback: a listener stands in for skiff's (no iptables, no SO_ORIGINAL_DST), and each
// accepted connection is handed over with the backend as its original destination.

// testConn is what the listener hands the proxy: like listener.replayConn, it replays
// the bytes looked at to tell HTTP/2 from HTTP/1 and feeds the H1Guard every byte the
// HTTP server reads.
type testConn struct {
	net.Conn
	meta Meta
	head []byte
}

func (c *testConn) Read(p []byte) (n int, err error) {
	if len(c.head) > 0 {
		n = copy(p, c.head)
		c.head = c.head[n:]
	} else {
		n, err = c.Conn.Read(p)
	}
	if c.meta.Guard != nil && n > 0 {
		c.meta.Guard.Feed(p[:n])
	}
	return n, err
}

func (c *testConn) Meta() *Meta { return &c.meta }

func (c *testConn) TCP() (*net.TCPConn, bool) {
	tcp, _ := c.Conn.(*net.TCPConn)
	return tcp, len(c.head) > 0
}

// sniffH2 reads the first bytes of c, as the listener's sniffing does, and says whether
// they start the HTTP/2 client preface; tc replays them.
func sniffH2(c net.Conn, tc *testConn) {
	var b [3]byte
	n, _ := io.ReadFull(c, b[:])
	tc.head = b[:n]
	tc.meta.H2 = string(b[:n]) == "PRI"
}

// testProxy is a running HTTP proxy and the listener that feeds it.
type testProxy struct {
	h        *HTTP
	metrics  *telemetry.Metrics
	addr     string       // where clients connect
	accepted atomic.Int64 // downstream connections
	dials    atomic.Int64 // upstream connections the proxy dialled
}

// startProxy runs a proxy whose every connection goes to dst. guard gives each
// connection an H1Guard, as the listener does for connections sniffed as HTTP/1.
func startProxy(tb testing.TB, dst netip.AddrPort, guard bool) *testProxy {
	tb.Helper()
	cfg := config.Default()
	return startProxyConfig(tb, &cfg, dst, guard)
}

// startProxyConfig is startProxy with cfg (its services and routes) in force.
func startProxyConfig(tb testing.TB, cfg *config.Config, dst netip.AddrPort, guard bool) *testProxy {
	tb.Helper()
	p := &testProxy{metrics: telemetry.NewMetrics()}
	dial := func(ctx context.Context, _ string, dst netip.AddrPort) (net.Conn, error) {
		p.dials.Add(1)
		var d net.Dialer
		return d.DialContext(ctx, "tcp", dst.String())
	}
	rt, err := NewRouter(cfg, zerolog.Nop(), p.metrics)
	if err != nil {
		tb.Fatal(err)
	}
	p.h = NewHTTP(cfg, rt, zerolog.Nop(), p.metrics, dial)
	served := make(chan error, 1)
	go func() { served <- p.h.Serve() }()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p.addr = ln.Addr().String()
	accepting := make(chan struct{})
	go func() {
		defer close(accepting)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			id := p.accepted.Add(1)
			tc := &testConn{Conn: c, meta: Meta{Direction: "outbound", Dst: dst, ConnID: uint64(id)}}
			if guard {
				tc.meta.Guard = &H1Guard{}
			}
			go func() {
				if !guard {
					sniffH2(c, tc)
				}
				p.h.ServeConn(tc)
			}()
		}
	}()
	tb.Cleanup(func() {
		_ = ln.Close()
		<-accepting
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		p.h.Shutdown(ctx)
		if err := <-served; err != nil {
			tb.Errorf("Serve: %v", err)
		}
	})
	return p
}

// seenRequest is what a backend received.
type seenRequest struct {
	Method     string
	Host       string
	RequestURI string
	Proto      string
	Header     http.Header
	Trailer    http.Header
	TE         []string
	BodyLen    int64
	BodySum    string
}

// backend is a real net/http server (HTTP/1.1, or HTTP/1.1 and h2c) that records what it
// gets and counts connections and requests.
type backend struct {
	srv   *httptest.Server
	addr  netip.AddrPort
	conns atomic.Int64
	reqs  atomic.Int64

	mu   sync.Mutex
	seen []seenRequest
}

// startBackend serves h (echo when nil). h2c adds HTTP/2 with prior knowledge.
func startBackend(tb testing.TB, h http.HandlerFunc, h2c bool) *backend {
	tb.Helper()
	return newBackend(tb, h2c, func(*backend) http.HandlerFunc { return h })
}

// startRecording serves h after recording each request (see recording); nil h answers 200.
func startRecording(tb testing.TB, h func(w http.ResponseWriter, r *http.Request, s seenRequest)) *backend {
	tb.Helper()
	if h == nil {
		h = func(http.ResponseWriter, *http.Request, seenRequest) {}
	}
	return newBackend(tb, false, func(b *backend) http.HandlerFunc { return b.recording(h) })
}

func newBackend(tb testing.TB, h2c bool, mk func(*backend) http.HandlerFunc) *backend {
	tb.Helper()
	b := &backend{}
	h := mk(b)
	if h == nil {
		h = echo
	}
	b.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.reqs.Add(1)
		h(w, r)
	}))
	b.srv.Config.DisableGeneralOptionsHandler = true // let handlers see OPTIONS *
	b.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			b.conns.Add(1)
		}
	}
	if h2c {
		b.srv.Config.Protocols = new(http.Protocols)
		b.srv.Config.Protocols.SetHTTP1(true)
		b.srv.Config.Protocols.SetUnencryptedHTTP2(true)
	}
	b.srv.Start()
	tb.Cleanup(b.srv.Close)
	b.addr = netip.MustParseAddrPort(b.srv.Listener.Addr().String())
	return b
}

// recording wraps a handler so the backend keeps what each request looked like; the body
// is read (and hashed) before h runs, and h gets it back as a reader.
func (b *backend) recording(h func(w http.ResponseWriter, r *http.Request, s seenRequest)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		sum := sha256.New()
		body, _ := io.ReadAll(io.TeeReader(r.Body, sum))
		s := seenRequest{
			Method: r.Method, Host: r.Host, RequestURI: r.RequestURI, Proto: r.Proto,
			Header: r.Header.Clone(), Trailer: r.Trailer.Clone(), TE: r.TransferEncoding,
			BodyLen: int64(len(body)), BodySum: hex.EncodeToString(sum.Sum(nil)),
		}
		b.mu.Lock()
		b.seen = append(b.seen, s)
		b.mu.Unlock()
		r.Body = io.NopCloser(strings.NewReader(string(body)))
		h(w, r, s)
	}
}

func (b *backend) last(tb testing.TB) seenRequest {
	tb.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.seen) == 0 {
		tb.Fatal("backend saw no request")
	}
	return b.seen[len(b.seen)-1]
}

func (b *backend) paths() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var p []string
	for _, s := range b.seen {
		p = append(p, s.Method+" "+s.RequestURI)
	}
	return p
}

// echo answers with the request body and its sha256.
func echo(w http.ResponseWriter, r *http.Request) {
	sum := sha256.New()
	body, err := io.ReadAll(io.TeeReader(r.Body, sum))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("X-Body-Sha256", hex.EncodeToString(sum.Sum(nil)))
	_, _ = w.Write(body)
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// h1Client is an HTTP/1.1 client that keeps one connection to the proxy and adds nothing
// (no Accept-Encoding).
func h1Client() *http.Client {
	return &http.Client{Transport: &http.Transport{
		DisableCompression:  true,
		MaxConnsPerHost:     1,
		MaxIdleConnsPerHost: 1,
	}}
}

// h2cClient speaks HTTP/2 with prior knowledge over cleartext, on one connection.
func h2cClient() (*http.Client, *http2.Transport) {
	tr := &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
		StrictMaxConcurrentStreams: true,
	}
	return &http.Client{Transport: tr}, tr
}

// rawConn is a TCP connection to the proxy for writing exact bytes.
type rawConn struct {
	net.Conn
	br *bufio.Reader
}

func dialRaw(tb testing.TB, addr string) *rawConn {
	tb.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return &rawConn{Conn: c, br: bufio.NewReader(c)}
}

func (c *rawConn) send(tb testing.TB, s string) {
	tb.Helper()
	if _, err := io.WriteString(c, s); err != nil {
		tb.Fatalf("write: %v", err)
	}
}

// response reads one response to a request with method and returns it with its body.
func (c *rawConn) response(tb testing.TB, method string) (*http.Response, string) {
	tb.Helper()
	resp, err := http.ReadResponse(c.br, &http.Request{Method: method})
	if err != nil {
		tb.Fatalf("reading response: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("reading response body: %v", err)
	}
	_ = resp.Body.Close()
	return resp, string(body)
}

// closed reports whether the proxy closed the connection: a read gets EOF (or a reset)
// with no byte, within a few seconds.
func (c *rawConn) closed() (bool, string) {
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	b, err := io.ReadAll(c.br)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false, string(b)
	}
	return true, string(b)
}

// requestSamples gathers the registry and returns the samples of the metric name.
func requestSamples(tb testing.TB, m *telemetry.Metrics, name string) []sample {
	tb.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	var out []sample
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, mm := range mf.GetMetric() {
			s := sample{labels: map[string]string{}}
			for _, lp := range mm.GetLabel() {
				s.labels[lp.GetName()] = lp.GetValue()
			}
			switch {
			case mm.GetCounter() != nil:
				s.value = mm.GetCounter().GetValue()
			case mm.GetHistogram() != nil:
				s.count = mm.GetHistogram().GetSampleCount()
				s.value = mm.GetHistogram().GetSampleSum()
				s.hist = mm.GetHistogram()
			}
			out = append(out, s)
		}
	}
	return out
}

type sample struct {
	labels map[string]string
	value  float64 // counter value or histogram sum
	count  uint64  // histogram sample count
	hist   *dto.Histogram
}

// labelsOf is the request label set in telemetry.RequestLabels order, for a request
// that did not cross the mesh with mTLS.
func labelsOf(dst netip.AddrPort, proto, code, grpc string) []string {
	return []string{"outbound", dst.String(), proto, code, grpc, telemetry.SecurityNone, telemetry.UnknownPrincipal,
		telemetry.UnknownService, telemetry.FlagNone}
}

// requestCount is skiff_requests_total for one label set (in telemetry.RequestLabels
// order), read by gathering the registry as a scrape would.
func requestCount(tb testing.TB, p *testProxy, labels ...string) float64 {
	tb.Helper()
	for _, s := range requestSamples(tb, p.metrics, "skiff_requests_total") {
		if s.is(labels) {
			return s.value
		}
	}
	return 0
}

// is reports whether s has exactly the request labels given in order.
func (s sample) is(labels []string) bool {
	if len(s.labels) != len(telemetry.RequestLabels) {
		return false
	}
	for i, name := range telemetry.RequestLabels {
		if s.labels[name] != labels[i] {
			return false
		}
	}
	return true
}

// waitFor polls cond until it holds or d passes.
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(5 * time.Millisecond)
	}
	return cond()
}

// closedPort returns a loopback address nothing listens on.
func closedPort(tb testing.TB) netip.AddrPort {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	ap := netip.MustParseAddrPort(ln.Addr().String())
	_ = ln.Close()
	return ap
}
