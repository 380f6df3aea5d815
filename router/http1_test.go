package router

import (
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"io"
	"net/http"
	"regexp"
	"skiff/telemetry"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

func randomBytes(tb testing.TB, n int) []byte {
	tb.Helper()
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func TestHTTP1MethodsWithBodies(t *testing.T) {
	b := startRecording(t, func(w http.ResponseWriter, r *http.Request, _ seenRequest) { echo(w, r) })
	p := startProxy(t, b.addr, true)
	c := h1Client()
	for _, method := range []string{"GET", "POST", "PUT"} {
		for _, size := range []int{0, 1, 100 << 10} {
			body := randomBytes(t, size)
			req, _ := http.NewRequest(method, "http://"+p.addr+"/echo", bytes.NewReader(body))
			resp, err := c.Do(req)
			if err != nil {
				t.Fatalf("%s %d bytes: %v", method, size, err)
			}
			got, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != 200 || resp.Header.Get("X-Body-Sha256") != sha(body) || !bytes.Equal(got, body) {
				t.Errorf("%s %d bytes: status %d, sha %q (want %q), echoed %d bytes equal=%v",
					method, size, resp.StatusCode, resp.Header.Get("X-Body-Sha256"), sha(body), len(got), bytes.Equal(got, body))
			}
			s := b.last(t)
			if s.Method != method || s.BodyLen != int64(size) {
				t.Errorf("backend saw %s with %d bytes, want %s with %d", s.Method, s.BodyLen, method, size)
			}
		}
	}
}

func TestHTTP1ChunkedRequestBody(t *testing.T) {
	b := startRecording(t, func(w http.ResponseWriter, r *http.Request, _ seenRequest) { echo(w, r) })
	p := startProxy(t, b.addr, true)

	// A client that does not know the length sends chunks.
	body := randomBytes(t, 300<<10)
	req, _ := http.NewRequest("POST", "http://"+p.addr+"/chunked", iotest.OneByteReader(bytes.NewReader(body)))
	req.ContentLength = -1
	resp, err := h1Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.Header.Get("X-Body-Sha256") != sha(body) || !bytes.Equal(got, body) {
		t.Errorf("chunked upload: sha %q, want %q", resp.Header.Get("X-Body-Sha256"), sha(body))
	}
	if s := b.last(t); !slices.Equal(s.TE, []string{"chunked"}) || s.BodyLen != int64(len(body)) {
		t.Errorf("backend saw Transfer-Encoding %q and %d bytes", s.TE, s.BodyLen)
	}

	// Raw chunks with extensions and a trailer section.
	c := dialRaw(t, p.addr)
	c.send(t, "POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"+
		"5;ext=1\r\nhello\r\n6;name=\"v\"\r\n world\r\n0\r\nX-Sum: 1\r\n\r\n")
	r2, b2 := c.response(t, "POST")
	if r2.StatusCode != 200 || b2 != "hello world" || r2.Header.Get("X-Body-Sha256") != sha([]byte("hello world")) {
		t.Errorf("raw chunked: %d %q", r2.StatusCode, b2)
	}
}

func TestHTTP1ResponseTrailers(t *testing.T) {
	b := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Checksum")
		w.WriteHeader(200)
		_, _ = io.WriteString(w, "streamed body")
		w.(http.Flusher).Flush()
		w.Header().Set("X-Checksum", "abc123")
		w.Header().Set(http.TrailerPrefix+"X-Late", "undeclared")
	}, false)
	p := startProxy(t, b.addr, true)
	resp, err := h1Client().Get("http://" + p.addr + "/trailers")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if string(body) != "streamed body" {
		t.Errorf("body %q", body)
	}
	if got := resp.Trailer.Get("X-Checksum"); got != "abc123" {
		t.Errorf("declared trailer X-Checksum = %q, want abc123 (trailers %v)", got, resp.Trailer)
	}
	if got := resp.Trailer.Get("X-Late"); got != "undeclared" {
		t.Errorf("undeclared trailer X-Late = %q, want undeclared (trailers %v)", got, resp.Trailer)
	}
}

// TestHTTP1BodylessResponses checks that HEAD, 204 and 304 responses carry no body: the
// next response on the same connection would not parse if one did.
func TestHTTP1BodylessResponses(t *testing.T) {
	b := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/head":
			w.Header().Set("Content-Length", "1234")
			w.Header().Set("Content-Type", "text/plain")
		case "/204":
			w.WriteHeader(http.StatusNoContent)
		case "/304":
			w.Header().Set("ETag", `"v1"`)
			w.WriteHeader(http.StatusNotModified)
		default:
			_, _ = io.WriteString(w, "after")
		}
	}, false)
	p := startProxy(t, b.addr, true)
	c := dialRaw(t, p.addr)
	c.send(t, "HEAD /head HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, body := c.response(t, "HEAD")
	if resp.StatusCode != 200 || body != "" || resp.Header.Get("Content-Length") != "1234" {
		t.Errorf("HEAD: %d, body %q, Content-Length %q (want 200, empty, 1234)", resp.StatusCode, body, resp.Header.Get("Content-Length"))
	}
	for _, tc := range []struct {
		path string
		code int
	}{{"/204", 204}, {"/304", 304}} {
		c.send(t, "GET "+tc.path+" HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"v1\"\r\n\r\n")
		resp, body := c.response(t, "GET")
		if resp.StatusCode != tc.code || body != "" {
			t.Errorf("%s: %d, body %q", tc.path, resp.StatusCode, body)
		}
		if tc.code == 304 && resp.Header.Get("ETag") != `"v1"` {
			t.Errorf("304 lost its ETag: %v", resp.Header)
		}
	}
	c.send(t, "GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, body := c.response(t, "GET"); resp.StatusCode != 200 || body != "after" {
		t.Errorf("request after bodiless responses: %d %q", resp.StatusCode, body)
	}
	if n := p.accepted.Load(); n != 1 {
		t.Errorf("%d downstream connections, want 1", n)
	}
}

func TestHTTP1ExpectContinue(t *testing.T) {
	b := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/reject" {
			// Refuse without reading: the client must not be told to continue.
			w.Header().Set("Connection", "close")
			w.WriteHeader(http.StatusRequestEntityTooLarge)
			return
		}
		echo(w, r)
	}, false)
	p := startProxy(t, b.addr, true)

	t.Run("accepted", func(t *testing.T) {
		c := dialRaw(t, p.addr)
		c.send(t, "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n")
		// The body is held back until the 100 arrives, as a real client with a long
		// timeout would.
		interim, _ := c.response(t, "POST")
		if interim.StatusCode != http.StatusContinue {
			t.Fatalf("first response %d, want 100 Continue", interim.StatusCode)
		}
		c.send(t, "hello world")
		resp, body := c.response(t, "POST")
		if resp.StatusCode != 200 || body != "hello world" || resp.Header.Get("X-Body-Sha256") != sha([]byte("hello world")) {
			t.Errorf("final response %d %q (a second 1xx would show here)", resp.StatusCode, body)
		}
	})
	t.Run("rejected", func(t *testing.T) {
		c := dialRaw(t, p.addr)
		c.send(t, "POST /reject HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n")
		resp, _ := c.response(t, "POST")
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Errorf("got %d, want the upstream's 413 without a 100 first", resp.StatusCode)
		}
	})
}

// TestHTTP1KeepAlive: many sequential requests on one downstream connection use one
// upstream connection.
func TestHTTP1KeepAlive(t *testing.T) {
	b := startBackend(t, nil, false)
	p := startProxy(t, b.addr, true)
	c := h1Client()
	for i := 0; i < 50; i++ {
		resp, err := c.Post("http://"+p.addr+"/", "text/plain", strings.NewReader("ping"))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: %d", i, resp.StatusCode)
		}
	}
	if d, u, bc := p.accepted.Load(), p.dials.Load(), b.conns.Load(); d != 1 || u != 1 || bc != 1 {
		t.Errorf("50 requests: %d downstream, %d dialled, %d backend connections; want 1, 1, 1", d, u, bc)
	}
	if n := b.reqs.Load(); n != 50 {
		t.Errorf("backend got %d requests, want 50", n)
	}
}

func TestHTTP1HopByHopHeaders(t *testing.T) {
	b := startRecording(t, func(w http.ResponseWriter, r *http.Request, _ seenRequest) {
		w.Header().Set("Connection", "X-Bar")
		w.Header().Set("X-Bar", "hop")
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header()["X-End-Resp"] = []string{"one", "two"}
		_, _ = io.WriteString(w, "ok")
	})
	p := startProxy(t, b.addr, true)
	c := dialRaw(t, p.addr)
	c.send(t, "GET / HTTP/1.1\r\nHost: x\r\n"+
		"Connection: keep-alive, X-Foo\r\nX-Foo: hop\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\n"+
		"X-End: a\r\nX-End: b\r\nUser-Agent: raw/1\r\nCookie: c=1\r\n\r\n")
	resp, _ := c.response(t, "GET")
	s := b.last(t)
	for _, k := range []string{"Connection", "X-Foo", "Keep-Alive", "Proxy-Connection"} {
		if v, ok := s.Header[k]; ok {
			t.Errorf("hop-by-hop request header %s reached the backend: %q", k, v)
		}
	}
	if !slices.Equal(s.Header["X-End"], []string{"a", "b"}) || s.Header.Get("User-Agent") != "raw/1" || s.Header.Get("Cookie") != "c=1" {
		t.Errorf("end-to-end request headers changed: %v", s.Header)
	}
	for _, k := range []string{"X-Bar", "Keep-Alive"} {
		if v, ok := resp.Header[k]; ok {
			t.Errorf("hop-by-hop response header %s reached the client: %q", k, v)
		}
	}
	if !slices.Equal(resp.Header["X-End-Resp"], []string{"one", "two"}) {
		t.Errorf("end-to-end response header X-End-Resp = %q", resp.Header["X-End-Resp"])
	}
}

// TestHTTP1RequestTargetUntouched: Host and the raw request-target (escapes, dot
// segments, repeated, empty, semicolon-separated and badly escaped query parameters)
// reach the backend byte for byte.
func TestHTTP1RequestTargetUntouched(t *testing.T) {
	b := startRecording(t, nil)
	p := startProxy(t, b.addr, true)
	for _, target := range []string{
		"/a%2Fb/../c?x=1&x=2&y",
		"/p;matrix=1/%7Euser?",
		"/q?b=2;a=1",
		"/q?z=1&a=%zz&m",
	} {
		c := dialRaw(t, p.addr)
		c.send(t, "GET "+target+" HTTP/1.1\r\nHost: Example.test:8080\r\n\r\n")
		if resp, _ := c.response(t, "GET"); resp.StatusCode != 200 {
			t.Errorf("%s: %d", target, resp.StatusCode)
			continue
		}
		if s := b.last(t); s.RequestURI != target || s.Host != "Example.test:8080" {
			t.Errorf("sent %q with Host Example.test:8080; backend saw %q with Host %q", target, s.RequestURI, s.Host)
		}
	}
}

var uuidV4 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestHTTP1RequestID(t *testing.T) {
	b := startRecording(t, nil)
	p := startProxy(t, b.addr, true)
	c := h1Client()
	get := func(id string) string {
		req, _ := http.NewRequest("GET", "http://"+p.addr+"/", nil)
		if id != "" {
			req.Header.Set("X-Request-Id", id)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		s := b.last(t)
		if n := len(s.Header["X-Request-Id"]); n != 1 {
			t.Fatalf("backend saw %d X-Request-Id headers", n)
		}
		return s.Header.Get("X-Request-Id")
	}
	id1, id2 := get(""), get("")
	if !uuidV4.MatchString(id1) || !uuidV4.MatchString(id2) || id1 == id2 {
		t.Errorf("added ids %q, %q: want two different UUIDv4s", id1, id2)
	}
	if got := get("app-chosen-id"); got != "app-chosen-id" {
		t.Errorf("client's X-Request-Id replaced by %q", got)
	}
}

func TestHTTP1ForwardedHeadersUntouched(t *testing.T) {
	b := startRecording(t, nil)
	p := startProxy(t, b.addr, true)
	c := dialRaw(t, p.addr)
	c.send(t, "GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.7, 10.0.0.1\r\nForwarded: for=203.0.113.7\r\n\r\n")
	c.response(t, "GET")
	s := b.last(t)
	if got := s.Header["X-Forwarded-For"]; !slices.Equal(got, []string{"203.0.113.7, 10.0.0.1"}) {
		t.Errorf("X-Forwarded-For = %q, want the client's unchanged", got)
	}
	if got := s.Header["Forwarded"]; !slices.Equal(got, []string{"for=203.0.113.7"}) {
		t.Errorf("Forwarded = %q", got)
	}
	c.send(t, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	c.response(t, "GET")
	s = b.last(t)
	for _, k := range []string{"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "Forwarded", "Via"} {
		if v, ok := s.Header[k]; ok {
			t.Errorf("proxy added %s: %q", k, v)
		}
	}
}

func TestHTTP1NoCompressionAdded(t *testing.T) {
	gz := func() []byte {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		_, _ = io.WriteString(zw, strings.Repeat("compressible ", 100))
		_ = zw.Close()
		return buf.Bytes()
	}()
	b := startRecording(t, func(w http.ResponseWriter, r *http.Request, _ seenRequest) {
		if r.Header.Get("Accept-Encoding") == "gzip" {
			w.Header().Set("Content-Encoding", "gzip")
			_, _ = w.Write(gz)
		}
	})
	p := startProxy(t, b.addr, true)
	c := dialRaw(t, p.addr)
	c.send(t, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	c.response(t, "GET")
	if v, ok := b.last(t).Header["Accept-Encoding"]; ok {
		t.Errorf("proxy added Accept-Encoding: %q", v)
	}
	c.send(t, "GET / HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n")
	resp, body := c.response(t, "GET")
	if resp.Header.Get("Content-Encoding") != "gzip" || body != string(gz) {
		t.Errorf("gzip response changed on the way: Content-Encoding %q, %d bytes (want %d)", resp.Header.Get("Content-Encoding"), len(body), len(gz))
	}
}

func TestHTTP1UpstreamRefused(t *testing.T) {
	dst := closedPort(t)
	p := startProxy(t, dst, true)
	resp, err := h1Client().Get("http://" + p.addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("connection refused upstream: %d, want 503", resp.StatusCode)
	}
	l := labelsOf(dst, "http", "503", "")
	l[len(l)-1] = telemetry.FlagUpstreamFail
	if n := requestCount(t, p, l...); n != 1 {
		t.Errorf("skiff_requests_total{response_code=503,response_flags=UF} = %v, want 1", n)
	}
}

// TestHTTP1OptionsStar: OPTIONS * is the app's to answer, not the proxy's.
func TestHTTP1OptionsStar(t *testing.T) {
	b := startRecording(t, func(w http.ResponseWriter, r *http.Request, _ seenRequest) {
		w.Header().Set("Allow", "GET, OPTIONS")
	})
	p := startProxy(t, b.addr, true)
	c := dialRaw(t, p.addr)
	c.send(t, "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, _ := c.response(t, "OPTIONS")
	if resp.StatusCode != 200 || resp.Header.Get("Allow") != "GET, OPTIONS" {
		t.Errorf("OPTIONS *: %d, Allow %q: want the backend's answer", resp.StatusCode, resp.Header.Get("Allow"))
	}
	if b.reqs.Load() != 1 {
		t.Fatalf("backend got %d requests, want 1", b.reqs.Load())
	}
	if s := b.last(t); s.Method != "OPTIONS" || s.RequestURI != "*" {
		t.Errorf("backend saw %s %s, want OPTIONS *", s.Method, s.RequestURI)
	}
}
