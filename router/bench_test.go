package router

import (
	"io"
	"net/http"
	"testing"
)

// BenchmarkProxyHTTP1Get is one keep-alive GET through the proxy. The client and the
// backend run in the same process, so allocations include theirs.
func BenchmarkProxyHTTP1Get(b *testing.B) {
	be := startBackend(b, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "hello, world")
	}, false)
	p := startProxy(b, be.addr, true)
	c := h1Client()
	url := "http://" + p.addr + "/bench"
	get := func() {
		resp, err := c.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
	get()
	b.ReportAllocs()
	for b.Loop() {
		get()
	}
}

// BenchmarkBackendHTTP1Get is the same GET straight to the backend, to subtract.
func BenchmarkBackendHTTP1Get(b *testing.B) {
	be := startBackend(b, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "hello, world")
	}, false)
	c := h1Client()
	url := "http://" + be.addr.String() + "/bench"
	b.ReportAllocs()
	for b.Loop() {
		resp, err := c.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
	}
}

// BenchmarkProxyH2CGet is one GET on an established h2c connection through the proxy,
// which forwards it over pooled h2c to the backend.
func BenchmarkProxyH2CGet(b *testing.B) {
	be := startBackend(b, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "hello, world")
	}, true)
	p := startProxy(b, be.addr, false)
	c, _ := h2cClient()
	b.Cleanup(c.CloseIdleConnections) // before the proxy's shutdown, which waits for idle
	get := getter(b, c, "http://"+p.addr+"/bench", "HTTP/2.0")
	get()
	b.ReportAllocs()
	for b.Loop() {
		get()
	}
}

// BenchmarkBackendH2CGet is the same h2c GET straight to the backend, to subtract.
func BenchmarkBackendH2CGet(b *testing.B) {
	be := startBackend(b, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "hello, world")
	}, true)
	c, _ := h2cClient()
	b.Cleanup(c.CloseIdleConnections)
	get := getter(b, c, "http://"+be.addr.String()+"/bench", "HTTP/2.0")
	get()
	b.ReportAllocs()
	for b.Loop() {
		get()
	}
}

// BenchmarkH1GuardKeepAlive follows a keep-alive connection's requests as the server's
// 4 KiB reads deliver them. One op is a round of five requests of different framings
// (see keepAliveStream); ns/req is per request.
func BenchmarkH1GuardKeepAlive(b *testing.B) {
	stream, reqs, _ := keepAliveStream(1)
	g := &H1Guard{}
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	for b.Loop() {
		feedReads(g, stream, 4096)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*reqs), "ns/req")
}

// Route matching (table.go) is benchmarked, and its allocations checked, beside the
// table's own tests (BenchmarkMatchHTTP, TestMatchAllocs in table_test.go); a benchmark
// of the whole proxy path with routes in force belongs here, next to the ones above.

func BenchmarkNewRequestID(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		_ = newRequestID()
	}
}

func TestNewRequestID(t *testing.T) {
	seen := map[string]bool{}
	for range 10000 {
		id := newRequestID()
		if !uuidV4.MatchString(id) || seen[id] {
			t.Fatalf("id %q: not a fresh UUIDv4", id)
		}
		seen[id] = true
	}
	if n := testing.AllocsPerRun(100, func() { _ = newRequestID() }); n > 1 {
		t.Errorf("newRequestID: %v allocations, want at most 1 (the string)", n)
	}
}
