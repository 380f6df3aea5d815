package router

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// TestH2ConcurrentStreams: 100 streams on one downstream connection are all in flight at
// the backend at once; a proxy that served them one by one would never get there.
func TestH2ConcurrentStreams(t *testing.T) {
	const n = 100
	// A gate per burst: it opens when n requests are in the backend at once.
	type gate struct {
		inflight atomic.Int32
		all      chan struct{}
	}
	var cur atomic.Pointer[gate]
	cur.Store(&gate{all: make(chan struct{})})
	b := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		g := cur.Load()
		if g.inflight.Add(1) == n {
			close(g.all)
		}
		select {
		case <-g.all:
			_, _ = io.WriteString(w, r.URL.Path)
		case <-time.After(10 * time.Second):
			http.Error(w, "not all streams arrived", http.StatusServiceUnavailable)
		}
	}, true)
	p := startProxy(t, b.addr, false)
	c, tr := h2cClient()
	defer tr.CloseIdleConnections()

	errs := make(chan error, n)
	burst := func() {
		for i := range n {
			go func() {
				path := "/s" + strconv.Itoa(i)
				resp, err := c.Get("http://" + p.addr + path)
				if err != nil {
					errs <- err
					return
				}
				body, _ := io.ReadAll(resp.Body)
				_ = resp.Body.Close()
				if resp.StatusCode != 200 || string(body) != path || resp.ProtoMajor != 2 {
					err = errors.New(resp.Proto + " " + resp.Status + " " + string(body))
				}
				errs <- err
			}()
		}
		for range n {
			if err := <-errs; err != nil {
				t.Error(err)
			}
		}
	}
	burst()
	if d := p.accepted.Load(); d != 1 {
		t.Errorf("%d downstream connections, want 1", d)
	}
	// A cold burst may dial several upstream connections at once: net/http's HTTP/2
	// transport does not merge dials (golang/go#13957, #81646). Once they exist, a second
	// burst must be carried on them.
	cold := p.dials.Load()
	t.Logf("cold burst of %d streams: %d upstream connections dialled", n, cold)
	cur.Store(&gate{all: make(chan struct{})})
	burst()
	if warm := p.dials.Load() - cold; warm != 0 {
		t.Errorf("second burst dialled %d more upstream connections, want 0", warm)
	}
	if got := requestCount(t, p, labelsOf(b.addr, "http2", "200", "")...); got != 2*n {
		t.Errorf(`skiff_requests_total{request_protocol="http2",response_code="200"} = %v, want %d`, got, 2*n)
	}
}

// TestH2CancelPropagates: a client that resets its stream cancels the request at the
// backend.
func TestH2CancelPropagates(t *testing.T) {
	started := make(chan struct{})
	cancelled := make(chan struct{})
	b := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		close(started)
		select {
		case <-r.Context().Done():
			close(cancelled)
		case <-time.After(10 * time.Second):
		}
	}, true)
	p := startProxy(t, b.addr, false)
	c, tr := h2cClient()
	defer tr.CloseIdleConnections()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+p.addr+"/slow", nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	select {
	case <-started:
	case <-time.After(5 * time.Second):
		t.Fatal("backend never got the request")
	}
	cancel()
	select {
	case <-cancelled:
	case <-time.After(time.Second):
		t.Fatal("backend's request context not cancelled within a second of the client's cancel")
	}
	// The proxy records the request the client abandoned.
	if !waitFor(2*time.Second, func() bool { return requestCount(t, p, labelsOf(b.addr, "http2", "200", "")...) == 1 }) {
		t.Errorf("abandoned request not recorded: %v", requestSamples(t, p.metrics, "skiff_requests_total"))
	}
}

// TestH2LargeBodies: 16 MiB each way goes through both HTTP/2 hops' flow control intact.
func TestH2LargeBodies(t *testing.T) {
	const size = 16 << 20
	b := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "GET" {
			// Download: a deterministic stream, hashed as it is written.
			h := sha256.New()
			w.Header().Set("Trailer", "X-Sha256")
			mw := io.MultiWriter(w, h)
			_, _ = io.CopyN(mw, &pattern{}, size)
			w.Header().Set("X-Sha256", hex.EncodeToString(h.Sum(nil)))
			return
		}
		echo(w, r)
	}, true)
	p := startProxy(t, b.addr, false)
	c, tr := h2cClient()
	defer tr.CloseIdleConnections()

	up := randomBytes(t, size)
	resp, err := c.Post("http://"+p.addr+"/up", "application/octet-stream", bytes.NewReader(up))
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	_ = resp.Body.Close()
	if err != nil || n != size || resp.Header.Get("X-Body-Sha256") != sha(up) || hex.EncodeToString(h.Sum(nil)) != sha(up) {
		t.Errorf("upload: %d bytes echoed (%v), backend sha %q, want %q", n, err, resp.Header.Get("X-Body-Sha256"), sha(up))
	}

	resp, err = c.Get("http://" + p.addr + "/down")
	if err != nil {
		t.Fatal(err)
	}
	h.Reset()
	n, err = io.Copy(h, resp.Body)
	_ = resp.Body.Close()
	if err != nil || n != size || resp.Trailer.Get("X-Sha256") != hex.EncodeToString(h.Sum(nil)) {
		t.Errorf("download: %d bytes (%v), sha %x, trailer %q", n, err, h.Sum(nil), resp.Trailer.Get("X-Sha256"))
	}
	if d := p.accepted.Load(); d != 1 {
		t.Errorf("%d downstream connections, want 1", d)
	}
}

// pattern is an endless deterministic byte stream.
type pattern struct{ i byte }

func (p *pattern) Read(b []byte) (int, error) {
	for j := range b {
		b[j] = p.i
		p.i = p.i*31 + 7
	}
	return len(b), nil
}

// TestH2EarlyResponse: an upstream may answer before the request body has ended (and
// gRPC servers often do). The proxy relays the answer while the client still sends, and
// records the request without racing the transport goroutine that still reads the body.
func TestH2EarlyResponse(t *testing.T) {
	b := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 5)
		_, _ = io.ReadFull(r.Body, buf) // the first bytes only
		_, _ = io.WriteString(w, "early:"+string(buf))
	}, true)
	p := startProxy(t, b.addr, false)
	c, tr := h2cClient()
	defer tr.CloseIdleConnections()

	pr, pw := io.Pipe()
	defer pw.Close()
	go func() {
		_, _ = io.WriteString(pw, "hello")
		// Keep sending, through and after the response, until the stream is gone.
		chunk := make([]byte, 512)
		for range 2000 {
			if _, err := pw.Write(chunk); err != nil {
				return
			}
		}
	}()
	req, _ := http.NewRequest("POST", "http://"+p.addr+"/early", pr)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "early:hello" {
		t.Errorf("got %d %q, want 200 early:hello", resp.StatusCode, body)
	}
	if !waitFor(2*time.Second, func() bool { return requestCount(t, p, labelsOf(b.addr, "http2", "200", "")...) == 1 }) {
		t.Errorf("request not recorded: %v", requestSamples(t, p.metrics, "skiff_requests_total"))
	}
	time.Sleep(100 * time.Millisecond) // let the proxy's body copy run into the recorded request
}
