package router

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"skiff/config"
	"skiff/park"
)

// relays is the number of connections on the HTTP/2 relay.
func (p *testProxy) relays() int {
	return p.h.h2.len()
}

// lastRelay is one of the connections on the HTTP/2 relay (the only one, in the tests
// that call it), or nil.
func (p *testProxy) lastRelay() *h2relay {
	var relay *h2relay
	p.h.h2.each(func(r *h2relay) { relay = r })
	return relay
}

// TestH2RelayForwards: an h2c connection nothing in the config applies to is relayed,
// one upstream connection for it; a request gets an X-Request-Id unless it has one, and
// is counted like one on the standard path.
func TestH2RelayForwards(t *testing.T) {
	b := newBackend(t, true, func(b *backend) http.HandlerFunc {
		return b.recording(func(w http.ResponseWriter, r *http.Request, _ seenRequest) {
			_, _ = io.WriteString(w, "ok "+r.URL.Path)
		})
	})
	p := startProxy(t, b.addr, false)
	c, tr := h2cClient()
	defer tr.CloseIdleConnections()

	resp, body := send(t, c, p, "GET", "/one", "app", "")
	if resp.StatusCode != 200 || body != "ok /one" || resp.ProtoMajor != 2 {
		t.Fatalf("got %s %q", resp.Status, body)
	}
	if n := p.relays(); n != 1 {
		t.Fatalf("%d relays, want 1: the connection did not take the HTTP/2 fast path", n)
	}
	id := b.last(t).Header.Values("X-Request-Id")
	if len(id) != 1 || len(id[0]) != 36 {
		t.Errorf("upstream saw X-Request-Id %q, want one UUID added", id)
	}
	send(t, c, p, "POST", "/two", "app", "body", "X-Request-Id", "client-id", "X-Other", "v")
	s := b.last(t)
	if got := s.Header.Values("X-Request-Id"); len(got) != 1 || got[0] != "client-id" {
		t.Errorf("upstream saw X-Request-Id %q, want the client's own", got)
	}
	if s.Header.Get("X-Other") != "v" || s.BodyLen != 4 || s.Method != "POST" || s.RequestURI != "/two" || s.Host != "app" {
		t.Errorf("upstream saw %+v", s)
	}
	if d := b.conns.Load(); d != 1 {
		t.Errorf("%d upstream connections, want 1", d)
	}
	if n := requestCount(t, p, labelsOf(b.addr, "http2", "200", "")...); n != 2 {
		t.Errorf("skiff_requests_total{http2, 200} = %v, want 2", n)
	}
}

// TestH2RelayLargeHeaders: a header block larger than the relay's buffer (HEADERS and
// CONTINUATIONs) is read whole and still gets its X-Request-Id; a field longer than the
// relay decodes, or a single frame larger than it inspects, passes untouched.
func TestH2RelayLargeHeaders(t *testing.T) {
	b := newBackend(t, true, func(b *backend) http.HandlerFunc {
		return b.recording(func(http.ResponseWriter, *http.Request, seenRequest) {})
	})
	b.srv.Config.MaxHeaderBytes = 4 << 20
	p := startProxy(t, b.addr, false)
	c, tr := h2cClient()
	defer tr.CloseIdleConnections()

	big := strings.Repeat("a", 40<<10)
	resp, _ := send(t, c, p, "GET", "/big", "app", "", "X-Big", big)
	s := b.last(t)
	if resp.StatusCode != 200 || s.Header.Get("X-Big") != big || len(s.Header.Get("X-Request-Id")) != 36 {
		t.Fatalf("40 KiB header: %d, upstream header %d bytes, X-Request-Id %q", resp.StatusCode, len(s.Header.Get("X-Big")), s.Header.Get("X-Request-Id"))
	}
	// A field longer than the relay decodes (maxHeaderBytes) ends its inspection of the
	// connection; the request still goes through as sent.
	huge := strings.Repeat("h", 100<<10)
	resp, _ = send(t, c, p, "GET", "/huge", "app", "", "X-Huge", huge)
	if s := b.last(t); resp.StatusCode != 200 || s.Header.Get("X-Huge") != huge || s.RequestURI != "/huge" {
		t.Fatalf("100 KiB header: %d, upstream saw %s with a %d-byte header", resp.StatusCode, s.RequestURI, len(s.Header.Get("X-Huge")))
	}
	resp, _ = send(t, c, p, "GET", "/after", "app", "")
	if s := b.last(t); resp.StatusCode != 200 || s.RequestURI != "/after" {
		t.Fatalf("after the 100 KiB header: %d, upstream saw %s", resp.StatusCode, s.RequestURI)
	}
	// x/net's client splits a block by the peer's SETTINGS_MAX_FRAME_SIZE (16 KiB for
	// net/http's server), so the single frame larger than h2MaxInspect is written by hand.
	conn, fr := rawH2(t, p.addr)
	defer conn.Close()
	var hb strings.Builder
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "app"}, {":path", "/huge"}, {"x-huge", strings.Repeat("b", h2MaxInspect)}} {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := fr.WriteRawFrame(http2.FrameHeaders, http2.FlagHeadersEndHeaders|http2.FlagHeadersEndStream, 1, []byte(hb.String())); err != nil {
		t.Fatal(err)
	}
	// net/http's server reads frames up to 1 MiB: it answers.
	if err := conn.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("no response to the %d KiB HEADERS frame: %v", h2MaxInspect>>10, err)
		}
		if mh, ok := f.(*http2.MetaHeadersFrame); ok && mh.StreamID == 1 {
			if st := mh.PseudoValue("status"); st != "200" {
				t.Errorf("status %s", st)
			}
			break
		}
	}
	if s := b.last(t); s.RequestURI != "/huge" || len(s.Header.Get("X-Huge")) != h2MaxInspect || s.Header.Get("X-Request-Id") != "" {
		t.Errorf("upstream saw %s, a %d-byte header and X-Request-Id %q: the frame must pass untouched", s.RequestURI, len(s.Header.Get("X-Huge")), s.Header.Get("X-Request-Id"))
	}
}

// rawH2 opens a connection to addr that has sent the preface and an empty SETTINGS.
func rawH2(t *testing.T, addr string) (net.Conn, *http2.Framer) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(conn, conn)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	fr.MaxHeaderListSize = 8 << 20
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return conn, fr
}

// TestH2RelayRefusesRouted: a request that a config loaded while its connection lives
// applies to is refused with REFUSED_STREAM, unseen by the original destination; the
// client retries on a new connection, which takes the standard path and is routed.
func TestH2RelayRefusesRouted(t *testing.T) {
	rec := func(b *backend) http.HandlerFunc {
		return b.recording(func(w http.ResponseWriter, r *http.Request, _ seenRequest) {
			_, _ = io.WriteString(w, r.Host)
		})
	}
	orig, ep := newBackend(t, true, rec), newBackend(t, true, rec)
	p := startProxy(t, orig.addr, false)
	c, tr := h2cClient()
	defer tr.CloseIdleConnections()
	if resp, _ := send(t, c, p, "GET", "/", "reviews", ""); resp.StatusCode != 200 || p.relays() != 1 {
		t.Fatalf("%d with %d relays", resp.StatusCode, p.relays())
	}
	cfg, err := config.Parse("routes.yaml", []byte(fmt.Sprintf(`
services:
  - name: reviews
    hosts: [reviews]
    endpoints: [{address: "%s"}]
`, ep.addr)))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.h.rt.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	before := orig.reqs.Load()
	resp, body := send(t, c, p, "GET", "/after", "reviews", "")
	if resp.StatusCode != 200 || body != "reviews" {
		t.Fatalf("after the reload: %d %q", resp.StatusCode, body)
	}
	if n := orig.reqs.Load() - before; n != 0 {
		t.Errorf("the original destination served %d requests after the reload, want 0 (the refused one must not be acted on)", n)
	}
	if s := ep.last(t); s.RequestURI != "/after" {
		t.Errorf("the service's endpoint saw %+v", s)
	}
	if !waitFor(5*time.Second, func() bool { return p.relays() == 0 }) {
		t.Errorf("%d relays left: the refusing one must close once its streams are done", p.relays())
	}
	if d := p.accepted.Load(); d != 2 {
		t.Errorf("%d downstream connections, want 2 (the retry on a new one)", d)
	}
}

// TestH2RelayShutdown: Shutdown sends a GOAWAY, lets the request in flight finish, and
// then closes the relay.
func TestH2RelayShutdown(t *testing.T) {
	release := make(chan struct{})
	b := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-release
		}
		_, _ = io.WriteString(w, "done")
	}, true)
	p := startProxy(t, b.addr, false)
	c, tr := h2cClient()
	defer tr.CloseIdleConnections()
	send(t, c, p, "GET", "/warm", "app", "")

	var wg sync.WaitGroup
	var slowErr error
	var slowBody string
	wg.Go(func() {
		resp, err := c.Get("http://" + p.addr + "/slow")
		if err != nil {
			slowErr = err
			return
		}
		bb, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		slowBody, slowErr = string(bb), err
	})
	if !waitFor(5*time.Second, func() bool { return b.reqs.Load() == 2 }) {
		t.Fatal("the slow request did not reach the backend")
	}
	shut := make(chan struct{})
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		p.h.Shutdown(ctx)
		close(shut)
	}()
	time.Sleep(100 * time.Millisecond)
	select {
	case <-shut:
		t.Fatal("Shutdown returned with a request in flight")
	default:
	}
	close(release)
	wg.Wait()
	if slowErr != nil || slowBody != "done" {
		t.Errorf("request in flight at Shutdown: %q, %v", slowBody, slowErr)
	}
	select {
	case <-shut:
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return after the last stream ended")
	}
	if n := p.relays(); n != 0 {
		t.Errorf("%d relays after Shutdown", n)
	}
}

// TestH2RelayIdleTimeout: a relay on which nothing moves for proxy.idle_timeout closes.
func TestH2RelayIdleTimeout(t *testing.T) {
	b := startBackend(t, nil, true)
	cfg := config.Default()
	cfg.Proxy.IdleTimeout = 200 * time.Millisecond
	p := startProxyConfig(t, &cfg, b.addr, false)
	c, tr := h2cClient()
	defer tr.CloseIdleConnections()
	send(t, c, p, "GET", "/", "app", "")
	if p.relays() != 1 {
		t.Fatal("not relayed")
	}
	if !waitFor(3*time.Second, func() bool { return p.relays() == 0 }) {
		t.Fatal("the idle relay was not closed")
	}
}

// TestH2RelayUpstreamDown: when the upstream cannot be dialled the connection takes the
// standard path, which answers each request with a 503.
func TestH2RelayUpstreamDown(t *testing.T) {
	p := startProxy(t, closedPort(t), false)
	c, tr := h2cClient()
	defer tr.CloseIdleConnections()
	resp, _ := send(t, c, p, "GET", "/", "app", "")
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("got %d, want 503", resp.StatusCode)
	}
	if p.relays() != 0 {
		t.Error("relayed a connection whose upstream is down")
	}
}

// TestH2RelayIdleParks: an idle relay's two directions park (no goroutine waits for
// them), wake for the next request, and end when the client goes.
func TestH2RelayIdleParks(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("directions park only on Linux")
	}
	b := startBackend(t, nil, true)
	p := startProxy(t, b.addr, false)
	c, tr := h2cClient()
	bothParked := func() bool {
		relay := p.lastRelay()
		return relay != nil && park.Parked(&relay.c2u.pk) && park.Parked(&relay.u2c.pk)
	}
	for i := range 3 {
		if resp, body := send(t, c, p, "POST", "/", "app", "ping"); resp.StatusCode != 200 || body != "ping" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
		if !waitFor(5*time.Second, bothParked) {
			t.Fatalf("after request %d the relay's directions did not park", i)
		}
	}
	tr.CloseIdleConnections()
	if !waitFor(5*time.Second, func() bool { return p.relays() == 0 }) {
		t.Fatal("the parked relay did not end when its client closed")
	}
}

// TestH2RelayParksWithoutBuffer: a direction parks without its 32 KiB read buffer even
// when its last read ended before waiting. That happens when a batch took longer than
// h2ParkAfter (a slow write, or a run queue long with a burst of new connections): the
// read after it finds its deadline passed and ends without the wait that gives the
// buffer back. Under a burst of 1,000 new h2c connections that left a few hundred
// buffers held by parked relays.
func TestH2RelayParksWithoutBuffer(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("directions park only on Linux")
	}
	b := startBackend(t, nil, true)
	p := startProxy(t, b.addr, false)
	c, _ := h2cClient()
	if resp, body := send(t, c, p, "GET", "/", "app", ""); resp.StatusCode != 200 {
		t.Fatalf("request: %d %q", resp.StatusCode, body)
	}
	var relay *h2relay
	if !waitFor(5*time.Second, func() bool {
		relay = p.lastRelay()
		return relay != nil && park.Parked(&relay.u2c.pk)
	}) {
		t.Fatal("the relay's upstream direction did not park")
	}
	d := &relay.u2c
	if !park.Unpark(&d.pk) {
		t.Fatal("the direction was woken meanwhile")
	}
	if d.in.buf != nil {
		t.Fatal("the direction parked with a read buffer after a wait")
	}
	// What a late batch leaves: the batch's buffer, all of it handled, and a deadline
	// that passed while it was handled.
	d.in.space()
	d.deadline = false
	if err := d.src.SetReadDeadline(time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	d.run() // the read ends at once (errIdleEnded) and the direction parks again
	if !park.Parked(&d.pk) {
		t.Fatal("the direction did not park")
	}
	if d.in.buf != nil {
		t.Fatal("the direction parked holding its read buffer")
	}
}
