package router

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// Allocation budgets of the proxy path: what one request costs the proxy, less what the
// same request costs when the client sends it straight to the backend (the client and
// the backend run in the test's process, so their allocations are counted too and are
// taken off). They are today's measured value plus about 15%: lower them as the path gets
// leaner, and do not raise them without knowing which allocation came back and why.
const (
	// Measured: 5 (63 through the proxy, 58 direct), Go 1.26.8, linux/amd64: the request
	// takes the HTTP/1.1 fast path (h1proxy.go), which parses and forwards in place. The
	// budget is not the measure plus 15%, which would round to nothing: it leaves a few
	// allocations for what a GC during the count does to the pools, while a header map, a
	// string per field or a request that falls back to net/http (85) goes well past it.
	proxyHTTP1AllocBudget = 10
	// Measured: 3 (65 through the proxy, 62 direct): the connection is relayed frame by
	// frame (h2relay.go), with no allocation per stream. Its budget leaves room as the
	// HTTP/1.1 one does; net/http's server, client and ReverseProxy (105) go far past it.
	proxyH2CAllocBudget = 10
)

// TestProxyAllocsPerRequest: a keep-alive HTTP/1.1 GET and an h2c GET (both on an
// established connection, upstream pooled) stay within their allocation budgets.
func TestProxyAllocsPerRequest(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes allocation counts")
	}
	be := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "hello, world")
	}, true)
	h2cProxied, _ := h2cClient()
	h2cDirect, _ := h2cClient()
	for _, c := range []struct {
		name            string
		guard           bool // as the listener sets it: HTTP/1 connections only
		proxied, direct *http.Client
		proto           string
		budget          float64
	}{
		{"http1", true, h1Client(), h1Client(), "HTTP/1.1", proxyHTTP1AllocBudget},
		{"h2c", false, h2cProxied, h2cDirect, "HTTP/2.0", proxyH2CAllocBudget},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := startProxy(t, be.addr, c.guard)
			// Before the proxy's shutdown (cleanups run last first), which would
			// otherwise wait for the open connections to go idle.
			t.Cleanup(c.proxied.CloseIdleConnections)
			t.Cleanup(c.direct.CloseIdleConnections)
			through := getter(t, c.proxied, "http://"+p.addr+"/bench", c.proto)
			direct := getter(t, c.direct, "http://"+be.addr.String()+"/bench", c.proto)
			through() // connections and pools set up outside the count
			direct()
			a, b := testing.AllocsPerRun(200, through), testing.AllocsPerRun(200, direct)
			t.Logf("%s GET: %v allocations through the proxy, %v direct: the proxy's share is %v (budget %v)",
				c.name, a, b, a-b, c.budget)
			if a-b > c.budget {
				t.Errorf("%s GET: the proxy allocates %v times per request, budget %v", c.name, a-b, c.budget)
			}
		})
	}
}

// getter returns a GET of url that checks the response and reads it all.
func getter(t testing.TB, c *http.Client, url, proto string) func() {
	return func() {
		resp, err := c.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Proto != proto {
			t.Fatalf("GET %s: %s %s, want 200 over %s", url, resp.Proto, resp.Status, proto)
		}
	}
}

// guardAllocsPerTERequest is what following a request with a Transfer-Encoding header
// costs the guard: headLine splits the header's value with bytes.Split to find the last
// coding, which allocates the slice of parts. Every other request shape costs nothing.
// Measured: 1. It can be 0 (only the last comma matters), and then this should say so.
const guardAllocsPerTERequest = 1

// keepAliveStream is n rounds of requests of the shapes the guard follows differently
// (no body, Content-Length body, chunked body with extensions and trailers), as one
// keep-alive connection sends them; it returns the bytes, the number of requests and
// how many of those carry Transfer-Encoding.
func keepAliveStream(n int) (stream []byte, reqs, withTE int) {
	round := []string{reqTypical, reqPostCL, reqGet, reqChunked, reqPutEmpty}
	return []byte(strings.Repeat(strings.Join(round, ""), n)), n * len(round), n
}

// feedReads feeds b to g in reads of size bytes, as the server's reader takes them from
// the connection, so lines are split across reads wherever the boundaries fall.
func feedReads(g *H1Guard, b []byte, size int) {
	for len(b) > 0 {
		n := min(size, len(b))
		g.Feed(b[:n])
		b = b[n:]
	}
}

// TestH1GuardKeepAliveAllocs: following a keep-alive connection request after request
// allocates nothing beyond guardAllocsPerTERequest, once the guard's line buffer has
// grown to the longest line split across reads.
func TestH1GuardKeepAliveAllocs(t *testing.T) {
	stream, reqs, withTE := keepAliveStream(20)
	for _, size := range []int{4096, 1000, 7} {
		g := &H1Guard{}
		feedReads(g, stream, size) // warm up
		allocs := testing.AllocsPerRun(20, func() { feedReads(g, stream, size) })
		if g.bad.Load() != 0 || g.state != gHead || g.requests != int64(22*reqs) {
			t.Fatalf("reads of %d: guard lost step with the stream (state %d, bad %d, %d requests)",
				size, g.state, g.bad.Load(), g.requests)
		}
		if budget := float64(withTE * guardAllocsPerTERequest); allocs > budget {
			t.Errorf("reads of %d bytes: %v allocations for %d requests (%d with Transfer-Encoding), want at most %v",
				size, allocs, reqs, withTE, budget)
		}
	}
}
