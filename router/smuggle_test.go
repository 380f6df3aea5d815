package router

import (
	"io"
	"net/http"
	"skiff/telemetry"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// Request smuggling, sent as raw bytes. A backend that counts what it gets shows that
// nothing the proxy refused, and nothing hidden in a refused request's body, reached it.

// pathBackend answers every request with its method and request-target, and records it.
func pathBackend(tb testing.TB) *backend {
	tb.Helper()
	return startRecording(tb, func(w http.ResponseWriter, r *http.Request, _ seenRequest) {
		_, _ = io.WriteString(w, r.Method+" "+r.RequestURI)
	})
}

const smuggled = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"

// clte is the classic shape: a front end that honours Content-Length forwards 5 bytes
// ("0\r\n\r\n"), one that honours chunked ends the body at once and sees the GET next.
const clte = "POST /clte HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled

func TestSmuggleCLTERefused(t *testing.T) {
	for name, req := range map[string]string{
		"cl-then-te": clte,
		"te-then-cl": "POST /clte HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n" + smuggled,
		"lower-case": "POST /clte HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ntransfer-encoding: Chunked\r\n\r\n0\r\n\r\n" + smuggled,
		"cl-zero":    "POST /clte HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled,
		"bare-lf":    "POST /clte HTTP/1.1\nHost: x\nContent-Length: 5\nTransfer-Encoding: chunked\n\n0\r\n\r\n" + smuggled,
	} {
		t.Run(name, func(t *testing.T) {
			b := pathBackend(t)
			p := startProxy(t, b.addr, true)
			c := dialRaw(t, p.addr)
			c.send(t, req)
			resp, _ := c.response(t, "POST")
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("CL+TE: %d, want 400", resp.StatusCode)
			}
			if closed, rest := c.closed(); !closed || rest != "" {
				t.Errorf("after the 400: connection closed %v, further bytes %q", closed, rest)
			}
			if n := b.reqs.Load(); n != 0 {
				t.Errorf("backend got %d requests (%q), want none", n, b.paths())
			}
			l := labelsOf(b.addr, "http", "400", "")
			l[len(l)-1] = telemetry.FlagBadRequest
			if n := requestCount(t, p, l...); n != 1 {
				t.Errorf("skiff_requests_total{response_code=400} = %v, want 1", n)
			}
		})
	}
}

func TestSmuggleCLTEOnKeepAlive(t *testing.T) {
	b := pathBackend(t)
	p := startProxy(t, b.addr, true)
	c := dialRaw(t, p.addr)
	c.send(t, "POST /first HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nX-T: 1\r\n\r\n")
	if resp, body := c.response(t, "POST"); resp.StatusCode != 200 || body != "POST /first" {
		t.Fatalf("first request: %d %q", resp.StatusCode, body)
	}
	c.send(t, clte)
	if resp, _ := c.response(t, "POST"); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("second request, CL+TE: %d, want 400", resp.StatusCode)
	}
	if closed, rest := c.closed(); !closed || rest != "" {
		t.Errorf("after the 400: connection closed %v, further bytes %q", closed, rest)
	}
	if got := b.paths(); !slices.Equal(got, []string{"POST /first"}) {
		t.Errorf("backend saw %q, want only the first request", got)
	}
}

// TestSmuggleLookalikeBodies: bodies that contain what looks like a CL+TE head are data,
// not requests, and must not be refused.
func TestSmuggleLookalikeBodies(t *testing.T) {
	b := pathBackend(t)
	p := startProxy(t, b.addr, true)
	c := dialRaw(t, p.addr)
	fake := "\r\n\r\nPOST /x HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
	c.send(t, "POST /cl HTTP/1.1\r\nHost: x\r\nContent-Length: "+strconv.Itoa(len(fake))+"\r\n\r\n"+fake)
	chunk := strings.ReplaceAll(fake, "\r\n", "\n")
	c.send(t, "POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"+
		strconv.FormatInt(int64(len(chunk)), 16)+"\r\n"+chunk+"\r\n0\r\n\r\n")
	c.send(t, "GET /last HTTP/1.1\r\nHost: x\r\n\r\n")
	for _, want := range []string{"POST /cl", "POST /chunked", "GET /last"} {
		if resp, body := c.response(t, "POST"); resp.StatusCode != 200 || body != want {
			t.Errorf("got %d %q, want 200 %q", resp.StatusCode, body, want)
		}
	}
}

// TestSmuggleRefusedByServer: shapes Go's server refuses itself, before the handler.
func TestSmuggleRefusedByServer(t *testing.T) {
	for name, head := range map[string]string{
		"te-chunked-identity": "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
		"te-gzip":             "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
		"te-gzip-chunked":     "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
		"te-twice":            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
		"te-chunked-cl":       "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\nContent-Length: 5\r\n\r\n",
		"cl-differing":        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
		"cl-list":             "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\n",
		"cl-plus":             "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n",
		"cl-negative":         "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
		"obs-fold":            "POST / HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\nContent-Length: 5\r\n\r\n",
		"obs-fold-te":         "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\n\r\n",
		"space-before-colon":  "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\n",
		"bare-cr":             "POST / HTTP/1.1\r\nHost: x\r\nX-A: a\rContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
		"bare-cr-line-end":    "POST / HTTP/1.1\r\nHost: x\rContent-Length: 5\r\n\r\n",
		"nul-in-header":       "POST / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\nContent-Length: 5\r\n\r\n",
		"no-host":             "POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			b := pathBackend(t)
			p := startProxy(t, b.addr, true)
			c := dialRaw(t, p.addr)
			c.send(t, head+"0\r\n\r\n"+smuggled)
			resp, _ := c.response(t, "POST")
			if resp.StatusCode < 400 {
				t.Errorf("%q: %d, want a 4xx or 5xx", head, resp.StatusCode)
			}
			if closed, rest := c.closed(); !closed {
				t.Errorf("connection left open after %d (further bytes %q)", resp.StatusCode, rest)
			}
			if n := b.reqs.Load(); n != 0 {
				t.Errorf("backend got %d requests (%q), want none", n, b.paths())
			}
		})
	}
}

func TestPipelinedRequests(t *testing.T) {
	b := pathBackend(t)
	p := startProxy(t, b.addr, true)
	c := dialRaw(t, p.addr)
	c.send(t, "GET /one HTTP/1.1\r\nHost: x\r\n\r\n"+
		"POST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"+
		"POST /three HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"+
		"GET /four HTTP/1.1\r\nHost: x\r\n\r\n")
	for _, want := range []string{"GET /one", "POST /two", "POST /three", "GET /four"} {
		if resp, body := c.response(t, "GET"); resp.StatusCode != 200 || body != want {
			t.Errorf("got %d %q, want 200 %q", resp.StatusCode, body, want)
		}
	}
	if got := b.paths(); len(got) != 4 {
		t.Errorf("backend saw %q", got)
	}
}

// The guard counts request heads in the bytes; the handler counts requests it serves.
// Anything that makes the two disagree, or makes the guard stop following while the
// connection goes on carrying HTTP requests, lets a CL+TE request through. Each case
// sends one such request first and CL+TE second, on one connection.
func TestSmuggleAfterGuardDesync(t *testing.T) {
	for _, tc := range []struct {
		name  string
		first string
	}{
		// Go's server answers OPTIONS * itself: the handler never sees it.
		{"options-star", "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n"},
		// An upgrade the backend turns down leaves the connection in HTTP.
		{"refused-upgrade", "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"},
		// Go ignores Transfer-Encoding on HTTP/1.0 requests (no body here).
		{"http10-te", "POST /ten HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"},
		// Go takes a head up to MaxHeaderBytes+4096; the guard gives up at a 64 KiB line.
		{"long-header-line", "GET /long HTTP/1.1\r\nHost: x\r\nX-Long: " + strings.Repeat("a", 65<<10) + "\r\n\r\n"},
		// A CONNECT the upstream turns down, too.
		{"refused-connect", "CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n"},
		// Chunk sizes Go refuses (the connection must then close).
		{"bad-chunk-size", "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n"},
		{"bws-chunk-ext", "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5 ;a=b\r\nhello\r\n0\r\n\r\n"},
		// Blank lines after a POST, which Go skips.
		{"crlf-after-post", "POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := startRecording(t, func(w http.ResponseWriter, r *http.Request, _ seenRequest) {
				if r.Header.Get("Upgrade") != "" {
					http.Error(w, "no", http.StatusForbidden)
					return
				}
				_, _ = io.WriteString(w, r.Method+" "+r.RequestURI)
			})
			p := startProxy(t, b.addr, true)
			c := dialRaw(t, p.addr)
			c.send(t, tc.first)
			resp, err := http.ReadResponse(c.br, &http.Request{Method: "GET"})
			if err != nil {
				t.Fatalf("first request: %v", err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			t.Logf("first request: %d", resp.StatusCode)
			// A closed connection is as good as a 400: nothing more is read from it.
			if _, err := io.WriteString(c, clte); err == nil {
				if resp, err := http.ReadResponse(c.br, &http.Request{Method: "POST"}); err == nil {
					body, _ := io.ReadAll(resp.Body)
					if resp.StatusCode != http.StatusBadRequest {
						t.Errorf("CL+TE after %s: %d %q, want 400", tc.name, resp.StatusCode, body)
					}
				}
			}
			for _, s := range b.paths() {
				if s == "POST /clte" || s == "GET /smuggled" {
					t.Errorf("backend saw %q", s)
				}
			}
		})
	}
}
