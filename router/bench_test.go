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
