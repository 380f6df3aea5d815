package router

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"skiff/telemetry"
)

// What only the HTTP/1.1 fast path does, tested end to end: the handover of a connection
// to net/http mid-stream, framing of responses it reads itself, its upstream pool and
// retry, its own error answers, Shutdown, and what an idle connection holds.

// rawBackend is an upstream that writes exact bytes: serve runs for each accepted
// connection (numbered from 1), which is closed when serve returns.
type rawBackend struct {
	addr    netip.AddrPort
	accepts atomic.Int64
}

func startRawBackend(tb testing.TB, serve func(n int64, c net.Conn, br *bufio.Reader)) *rawBackend {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	b := &rawBackend{addr: netip.MustParseAddrPort(ln.Addr().String())}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			n := b.accepts.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				serve(n, c, bufio.NewReader(c))
			}()
		}
	}()
	tb.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return b
}

// readReq reads one request and its body from a raw backend's connection.
func readReq(br *bufio.Reader) (*http.Request, []byte, error) {
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil, nil, err
	}
	body, err := io.ReadAll(req.Body)
	return req, body, err
}

// answerEach answers every request on a connection with resp(request).
func answerEach(resp func(r *http.Request) string) func(int64, net.Conn, *bufio.Reader) {
	return func(_ int64, c net.Conn, br *bufio.Reader) {
		for {
			req, _, err := readReq(br)
			if err != nil {
				return
			}
			if _, err := io.WriteString(c, resp(req)); err != nil {
				return
			}
		}
	}
}

// fastConns is how many connections the fast path is serving (a connection handed to
// net/http leaves it).
func fastConns(p *testProxy) int {
	return p.h.h1.len()
}

// pathEcho answers with the method, request-target and body it got.
func pathEcho(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	_, _ = fmt.Fprintf(w, "%s %s %s", r.Method, r.RequestURI, body)
}

func expectResponse(t *testing.T, c *rawConn, method string, code int, body string) *http.Response {
	t.Helper()
	resp, got := c.response(t, method)
	if resp.StatusCode != code || got != body {
		t.Fatalf("got %d %q, want %d %q", resp.StatusCode, got, code, body)
	}
	return resp
}

// TestH1Handover: a request the fast path does not take, after one it did on the same
// connection, is served by net/http with the bytes already read, and so are the
// connection's later requests.
func TestH1Handover(t *testing.T) {
	b := startBackend(t, pathEcho, false)
	for _, tc := range []struct {
		name, req string
		then      func(t *testing.T, c *rawConn) // the exchange after req was sent
	}{
		{"expect-continue", "POST /expect HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
			func(t *testing.T, c *rawConn) {
				expectResponse(t, c, "POST", http.StatusContinue, "")
				c.send(t, "hello")
				expectResponse(t, c, "POST", 200, "POST /expect hello")
			}},
		{"chunked", "POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
			func(t *testing.T, c *rawConn) { expectResponse(t, c, "POST", 200, "POST /chunked hello") }},
		{"http/1.0", "GET /ten HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n",
			func(t *testing.T, c *rawConn) {
				if resp := expectResponse(t, c, "GET", 200, "GET /ten "); resp.Close {
					t.Fatal("HTTP/1.0 keep-alive request answered with close")
				}
			}},
		{"large body", "POST /large HTTP/1.1\r\nHost: x\r\nContent-Length: 65537\r\n\r\n" + strings.Repeat("b", 65537),
			func(t *testing.T, c *rawConn) {
				expectResponse(t, c, "POST", 200, "POST /large "+strings.Repeat("b", 65537))
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startProxy(t, b.addr, true)
			c := dialRaw(t, p.addr)
			c.send(t, "GET /fast HTTP/1.1\r\nHost: x\r\n\r\n")
			expectResponse(t, c, "GET", 200, "GET /fast ")
			if n := fastConns(p); n != 1 {
				t.Fatalf("%d connections on the fast path after a plain GET, want 1", n)
			}
			c.send(t, tc.req)
			tc.then(t, c)
			// The fast path lets go of the connection once net/http has it, which may be
			// after net/http answered.
			if !waitFor(2*time.Second, func() bool { return fastConns(p) == 0 }) {
				n := fastConns(p)
				t.Errorf("%d connections on the fast path after %s, want 0 (handed over)", n, tc.name)
			}
			for i := range 2 {
				c.send(t, "GET /after"+strconv.Itoa(i)+" HTTP/1.1\r\nHost: x\r\n\r\n")
				expectResponse(t, c, "GET", 200, "GET /after"+strconv.Itoa(i)+" ")
			}
			if n := p.accepted.Load(); n != 1 {
				t.Errorf("%d downstream connections, want 1", n)
			}
		})
	}
}

// TestH1HandoverPipelined: requests that arrive in one read, the second for net/http,
// are answered in order: the bytes the fast path read past its request are replayed.
func TestH1HandoverPipelined(t *testing.T) {
	b := startBackend(t, pathEcho, false)
	p := startProxy(t, b.addr, true)
	c := dialRaw(t, p.addr)
	c.send(t, "GET /one HTTP/1.1\r\nHost: x\r\n\r\n"+
		"POST /two HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"+
		"POST /three HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\ndef")
	expectResponse(t, c, "GET", 200, "GET /one ")
	expectResponse(t, c, "POST", 200, "POST /two abc")
	expectResponse(t, c, "POST", 200, "POST /three def")
	if n := b.reqs.Load(); n != 3 {
		t.Errorf("backend got %d requests, want 3", n)
	}
}

// TestH1HandoverWebSocket: an upgrade after a fast-path request on the same connection.
func TestH1HandoverWebSocket(t *testing.T) {
	b := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ws" {
			wsEcho(w, r)
			return
		}
		pathEcho(w, r)
	}, false)
	p := startProxy(t, b.addr, true)
	c := dialRaw(t, p.addr)
	c.send(t, "GET /fast HTTP/1.1\r\nHost: x\r\n\r\n")
	expectResponse(t, c, "GET", 200, "GET /fast ")
	if c.br.Buffered() != 0 {
		t.Fatalf("%d bytes past the response", c.br.Buffered())
	}
	var dialled atomic.Bool
	tr := &http.Transport{DialContext: func(context.Context, string, string) (net.Conn, error) {
		if dialled.Swap(true) {
			return nil, errors.New("one connection only")
		}
		return c.Conn, nil
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, "ws://"+p.addr+"/ws", &websocket.DialOptions{HTTPClient: &http.Client{Transport: tr}})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %d", resp.StatusCode)
	}
	for _, msg := range []string{"hello", "GET / HTTP/1.1\r\nHost: x\r\n\r\n"} {
		if err := ws.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		if _, got, err := ws.Read(ctx); err != nil || string(got) != msg {
			t.Fatalf("echo of %q: %q, %v", msg, got, err)
		}
	}
	_ = ws.Close(websocket.StatusNormalClosure, "")
	if !waitFor(2*time.Second, func() bool { return fastConns(p) == 0 }) {
		t.Errorf("%d connections on the fast path, want 0 (the upgrade was handed over)", fastConns(p))
	}
	if n := p.accepted.Load(); n != 1 {
		t.Errorf("%d downstream connections, want 1", n)
	}
}

// TestH1ChunkedResponseExact: a chunked response with extensions and trailers reaches
// the client byte for byte, and ends where the upstream's ends (the upstream connection
// is used again, and so is the client's).
func TestH1ChunkedResponseExact(t *testing.T) {
	big := strings.Repeat("0123456789abcdef", 5000)
	resp := "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTrailer: X-Sum\r\nTransfer-Encoding: chunked\r\n\r\n" +
		"5;ext=a\r\nhello\r\n" + strconv.FormatInt(int64(len(big)), 16) + "\r\n" + big + "\r\n" +
		"6 ; q=\"x\"\r\n world\r\n0\r\nX-Sum: abc\r\nX-More: 1\r\n\r\n"
	b := startRawBackend(t, answerEach(func(*http.Request) string { return resp }))
	p := startProxy(t, b.addr, true)
	c := dialRaw(t, p.addr)
	for i := range 3 {
		c.send(t, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		got := make([]byte, len(resp))
		if _, err := io.ReadFull(c.br, got); err != nil {
			t.Fatalf("response %d: %v after %q", i, err, got)
		}
		if string(got) != resp {
			t.Fatalf("response %d changed on the way:\n got %.300q\nwant %.300q", i, got, resp)
		}
	}
	if n := b.accepts.Load(); n != 1 {
		t.Errorf("%d upstream connections for 3 requests, want 1", n)
	}
}

// TestH1CloseDelimitedResponse: a response without a length is read until the upstream
// closes, and the client, told Connection: close, gets it whole and then the close.
func TestH1CloseDelimitedResponse(t *testing.T) {
	for _, head := range []string{
		"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n",
		"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n",
		"HTTP/1.1 200 OK\r\n\r\n",
	} {
		body := strings.Repeat("close-delimited ", 1000)
		b := startRawBackend(t, func(_ int64, c net.Conn, br *bufio.Reader) {
			if _, _, err := readReq(br); err == nil {
				_, _ = io.WriteString(c, head+body)
			}
		})
		p := startProxy(t, b.addr, true)
		c := dialRaw(t, p.addr)
		c.send(t, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		// Read as raw bytes: Go's client takes Connection out of the header it returns,
		// and a response without a length reads as closing anyway.
		closed, got := c.closed()
		gotHead, gotBody, _ := strings.Cut(got, "\r\n\r\n")
		if !strings.HasPrefix(gotHead, "HTTP/1.1 200 ") || !strings.Contains(gotHead+"\r\n", "\r\nConnection: close\r\n") {
			t.Errorf("%q: client got head %q, want a 200 with Connection: close", head, gotHead)
		}
		if !closed || gotBody != body {
			t.Errorf("%q: client connection closed %v, %d body bytes (want %d)", head, closed, len(gotBody), len(body))
		}
	}
}

// TestH1UpstreamCloseKeepsClient: an upstream that closes after a response with a length
// costs the client nothing: its connection stays, the next request dials again.
func TestH1UpstreamCloseKeepsClient(t *testing.T) {
	b := startRawBackend(t, func(_ int64, c net.Conn, br *bufio.Reader) {
		if _, _, err := readReq(br); err == nil {
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	p := startProxy(t, b.addr, true)
	c := dialRaw(t, p.addr)
	for range 2 {
		c.send(t, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		if resp := expectResponse(t, c, "GET", 200, "ok"); resp.Close {
			t.Fatal("the upstream's Connection: close was passed on")
		}
	}
	if n := b.accepts.Load(); n != 2 {
		t.Errorf("%d upstream connections, want 2", n)
	}
}

// TestH1EarlyHints: a 103 is passed on before the final response.
func TestH1EarlyHints(t *testing.T) {
	b := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload; as=style")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		_, _ = io.WriteString(w, "final")
	}, false)
	p := startProxy(t, b.addr, true)
	c := dialRaw(t, p.addr)
	for range 2 {
		c.send(t, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		hints := expectResponse(t, c, "GET", http.StatusEarlyHints, "")
		if got := hints.Header.Get("Link"); got != "</style.css>; rel=preload; as=style" {
			t.Errorf("103 Link = %q", got)
		}
		expectResponse(t, c, "GET", 200, "final")
	}
}

// TestH1BodylessResponses: HEAD, 204 and 304 responses end with their head whatever
// their Content-Length says; the proxy waits for no body, and the upstream connection
// is reused (so nothing was left unread on it).
func TestH1BodylessResponses(t *testing.T) {
	b := startRawBackend(t, answerEach(func(r *http.Request) string {
		switch r.URL.Path {
		case "/head":
			return "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"
		case "/head-chunked":
			return "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
		case "/204":
			return "HTTP/1.1 204 No Content\r\n\r\n"
		case "/304":
			return "HTTP/1.1 304 Not Modified\r\nETag: \"v\"\r\nContent-Length: 99\r\n\r\n"
		}
		return "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nafter"
	}))
	p := startProxy(t, b.addr, true)
	c := dialRaw(t, p.addr)
	for _, tc := range []struct {
		method, path string
		code         int
		length       string
	}{
		{"HEAD", "/head", 200, "1234"},
		{"HEAD", "/head-chunked", 200, ""},
		{"GET", "/204", 204, ""},
		{"GET", "/304", 304, "99"},
		{"GET", "/after", 200, "5"},
	} {
		c.send(t, tc.method+" "+tc.path+" HTTP/1.1\r\nHost: x\r\n\r\n")
		resp := expectResponse(t, c, tc.method, tc.code, map[bool]string{true: "after"}[tc.path == "/after"])
		if got := resp.Header.Get("Content-Length"); got != tc.length {
			t.Errorf("%s %s: Content-Length %q, want %q", tc.method, tc.path, got, tc.length)
		}
	}
	if n := b.accepts.Load(); n != 1 {
		t.Errorf("%d upstream connections, want 1", n)
	}
}

// pipeConn is a downstream connection that is not a TCP socket: the fast path can
// neither splice to it nor wait on it without a buffer.
type pipeConn struct {
	net.Conn
	meta Meta
}

func (c *pipeConn) Meta() *Meta { return &c.meta }

// TestH1LargeHeads: request and response heads longer than the 4 KiB read buffer (which
// then grows) pass whole on the fast path, up to the 64 KiB limit.
func TestH1LargeHeads(t *testing.T) {
	b := startRawBackend(t, answerEach(func(r *http.Request) string {
		n := len(r.Header.Get("X-Pad"))
		return fmt.Sprintf("HTTP/1.1 200 OK\r\nX-Big: %s\r\nContent-Length: %d\r\n\r\n%d", strings.Repeat("b", n), len(strconv.Itoa(n)), n)
	}))
	p := startProxy(t, b.addr, true)
	c := dialRaw(t, p.addr)
	for _, n := range []int{100, 4000, 4097, 9000, 60000, 100} {
		c.send(t, "GET / HTTP/1.1\r\nHost: x\r\nX-Pad: "+strings.Repeat("p", n)+"\r\n\r\n")
		resp := expectResponse(t, c, "GET", 200, strconv.Itoa(n))
		if got := len(resp.Header.Get("X-Big")); got != n {
			t.Errorf("%d-byte header: the response's came back with %d bytes", n, got)
		}
	}
	if n := fastConns(p); n != 1 {
		t.Errorf("%d connections on the fast path, want 1: net/http took it over", n)
	}
}

// TestH1LargeResponses: 8 MiB bodies, with a length and close-delimited, arrive intact,
// spliced to a TCP client and copied to one that is not.
func TestH1LargeResponses(t *testing.T) {
	body := randomBytes(t, 8<<20)
	want := sha(body)
	gob := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = w.Write(body)
	}, false)
	raw := startRawBackend(t, func(_ int64, c net.Conn, br *bufio.Reader) {
		if _, _, err := readReq(br); err == nil {
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\n\r\n")
			_, _ = c.Write(body)
		}
	})
	for _, tc := range []struct {
		name  string
		dst   netip.AddrPort
		close bool
	}{{"length", gob.addr, false}, {"close-delimited", raw.addr, true}} {
		p := startProxy(t, tc.dst, true)
		for _, client := range []string{"tcp", "pipe"} {
			t.Run(tc.name+"/"+client, func(t *testing.T) {
				var c net.Conn
				if client == "tcp" {
					c = dialRaw(t, p.addr).Conn
				} else {
					down, up := net.Pipe()
					t.Cleanup(func() { _ = down.Close() })
					p.h.ServeConn(&pipeConn{Conn: up, meta: Meta{Direction: "outbound", Dst: tc.dst, Guard: &H1Guard{}}})
					c = down
				}
				_ = c.SetDeadline(time.Now().Add(20 * time.Second))
				if _, err := io.WriteString(c, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
					t.Fatal(err)
				}
				resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: "GET"})
				if err != nil {
					t.Fatal(err)
				}
				got, err := io.ReadAll(resp.Body)
				if err != nil || sha(got) != want || resp.Close != tc.close {
					t.Errorf("%d of %d bytes (sha equal %v), error %v, close %v", len(got), len(body), sha(got) == want, err, resp.Close)
				}
			})
		}
	}
}

// staleBackend answers each connection's first request and then closes it, as a server
// whose keep-alive timeout ran out does. closed receives after each close.
func staleBackend(t *testing.T) (*rawBackend, chan struct{}) {
	closed := make(chan struct{}, 16)
	b := startRawBackend(t, func(_ int64, c net.Conn, br *bufio.Reader) {
		req, body, err := readReq(br)
		if err != nil {
			return
		}
		_, _ = fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s %s", len(req.Method)+1+len(body), req.Method, body)
		_ = c.Close()
		closed <- struct{}{}
	})
	return b, closed
}

// TestH1StaleUpstreamRetry: a GET that finds its pooled upstream connection closed is
// sent again on a new one; a POST is not (the upstream may have acted on it), and gets
// a 502.
func TestH1StaleUpstreamRetry(t *testing.T) {
	t.Run("GET", func(t *testing.T) {
		b, closed := staleBackend(t)
		p := startProxy(t, b.addr, true)
		c := dialRaw(t, p.addr)
		c.send(t, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		expectResponse(t, c, "GET", 200, "GET ")
		<-closed
		c.send(t, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		expectResponse(t, c, "GET", 200, "GET ")
		if a, d := b.accepts.Load(), p.dials.Load(); a != 2 || d != 2 {
			t.Errorf("%d upstream connections accepted, %d dialled; want 2, 2", a, d)
		}
		l := labelsOf(b.addr, "http", "200", "")
		// Recorded as the response ends, so possibly just after the client has it.
		waitFor(2*time.Second, func() bool { return requestCount(t, p, l...) >= 2 })
		time.Sleep(20 * time.Millisecond) // a third (a retry counted twice) would show by now
		if n := requestCount(t, p, l...); n != 2 {
			t.Errorf("skiff_requests_total{200} = %v, want 2 (a retry is one request)", n)
		}
	})
	t.Run("POST on a closed connection", func(t *testing.T) {
		// The pool peeks before reuse: the close is seen, and the POST goes on a new
		// connection without ever having been sent on the old one.
		b, closed := staleBackend(t)
		p := startProxy(t, b.addr, true)
		c := dialRaw(t, p.addr)
		c.send(t, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		expectResponse(t, c, "GET", 200, "GET ")
		<-closed
		c.send(t, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
		expectResponse(t, c, "POST", 200, "POST abc")
		if a := b.accepts.Load(); a != 2 {
			t.Errorf("%d upstream connections accepted, want 2", a)
		}
	})
	// A request with no body that may not be sent twice goes on another connection
	// only because it was never written on the closed one: the check before the write
	// sees the close. Small, the request goes out from inside the read of its answer;
	// over the write buffer, through the writer.
	for _, pad := range []int{0, 4500} {
		t.Run(fmt.Sprintf("DELETE, %d bytes of header", pad), func(t *testing.T) {
			b, closed := staleBackend(t)
			p := startProxy(t, b.addr, true)
			c := dialRaw(t, p.addr)
			c.send(t, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			expectResponse(t, c, "GET", 200, "GET ")
			<-closed
			c.send(t, "DELETE / HTTP/1.1\r\nHost: x\r\nX-Pad: "+strings.Repeat("p", pad)+"\r\n\r\n")
			expectResponse(t, c, "DELETE", 200, "DELETE ")
			if a, d := b.accepts.Load(), p.dials.Load(); a != 2 || d != 2 {
				t.Errorf("%d upstream connections accepted, %d dialled; want 2, 2", a, d)
			}
		})
	}
	t.Run("POST unanswered", func(t *testing.T) {
		// The upstream takes the POST on a reused connection and closes without an
		// answer: it may have acted on it, so it is not sent again.
		b := startRawBackend(t, func(n int64, c net.Conn, br *bufio.Reader) {
			for i := 0; ; i++ {
				if _, _, err := readReq(br); err != nil || (n == 1 && i == 1) {
					return
				}
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			}
		})
		p := startProxy(t, b.addr, true)
		c := dialRaw(t, p.addr)
		c.send(t, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		expectResponse(t, c, "GET", 200, "ok")
		c.send(t, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
		expectResponse(t, c, "POST", http.StatusBadGateway, "")
		if a := b.accepts.Load(); a != 1 {
			t.Errorf("%d upstream connections accepted, want 1: the POST was sent again", a)
		}
		// The POST's body was read: the connection goes on.
		c.send(t, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nxyz")
		expectResponse(t, c, "POST", 200, "ok")
	})
}

// TestH1NoRetryAfterResponseBegan: a GET whose response head has reached the client is
// not sent again when the upstream then breaks off the body: the client gets the
// response cut short and the connection closed, never a second response after it.
func TestH1NoRetryAfterResponseBegan(t *testing.T) {
	b := startRawBackend(t, func(n int64, c net.Conn, br *bufio.Reader) {
		if n > 1 {
			if _, _, err := readReq(br); err == nil {
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nsecondresp")
			}
			return
		}
		for i := 0; ; i++ {
			if _, _, err := readReq(br); err != nil {
				return
			}
			if i == 0 {
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")
				continue
			}
			// On the reused connection: a head, part of the body, then the end.
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
			return
		}
	})
	p := startProxy(t, b.addr, true)
	c := dialRaw(t, p.addr)
	c.send(t, "GET /1 HTTP/1.1\r\nHost: x\r\n\r\n")
	expectResponse(t, c, "GET", 200, "first")
	c.send(t, "GET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
	// The fast path streams: the client gets the head and "abc", then the close.
	resp, err := http.ReadResponse(c.br, &http.Request{Method: "GET"})
	if err != nil {
		t.Fatalf("no response: %v", err)
	}
	got, err := io.ReadAll(resp.Body)
	if n := b.accepts.Load(); n != 1 {
		t.Errorf("%d upstream connections: the GET was sent again after its response had begun", n)
	}
	if string(got) != "abc" || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("body %q, %v; want \"abc\" cut short", got, err)
	}
	if closed, rest := c.closed(); !closed || rest != "" {
		t.Errorf("after the cut response: connection closed %v, further bytes %q", closed, rest)
	}
	l := labelsOf(b.addr, "http", "200", "")
	l[len(l)-1] = telemetry.FlagUpstreamFail
	if !waitFor(2*time.Second, func() bool { return requestCount(t, p, l...) == 1 }) {
		t.Errorf("skiff_requests_total{200,UF} = %v, want 1", requestCount(t, p, l...))
	}
}

// TestH1UpstreamExtraBytes: an upstream connection with bytes past the response it
// answered is not used again: those bytes would be read as the next request's response.
func TestH1UpstreamExtraBytes(t *testing.T) {
	b := startRawBackend(t, answerEach(func(*http.Request) string {
		return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" + "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray"
	}))
	p := startProxy(t, b.addr, true)
	c := dialRaw(t, p.addr)
	for range 2 {
		c.send(t, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		expectResponse(t, c, "GET", 200, "ok")
	}
	if n := b.accepts.Load(); n != 2 {
		t.Errorf("%d upstream connections, want 2", n)
	}
}

// TestH1UnsolicitedUpstreamBytes: bytes an upstream sends on a pooled connection while
// no request is out on it (a stray response, or the body of a 204 or of a HEAD response
// written late) make the connection unusable, as net/http's transport treats them
// ("Unsolicited response received on idle HTTP channel"); they must never be taken as
// the response to a request sent on it later.
func TestH1UnsolicitedUpstreamBytes(t *testing.T) {
	strayed := make(chan struct{})
	b := startRawBackend(t, func(n int64, c net.Conn, br *bufio.Reader) {
		for i := 0; ; i++ {
			if _, _, err := readReq(br); err != nil {
				return
			}
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			if n == 1 && i == 0 {
				time.Sleep(20 * time.Millisecond) // the proxy has read the response and pooled the connection
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray")
				close(strayed)
			}
		}
	})
	p := startProxy(t, b.addr, true)
	c := dialRaw(t, p.addr)
	c.send(t, "GET /1 HTTP/1.1\r\nHost: x\r\n\r\n")
	expectResponse(t, c, "GET", 200, "ok")
	<-strayed
	time.Sleep(20 * time.Millisecond) // the stray bytes are in the proxy's socket
	c.send(t, "GET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, body := c.response(t, "GET")
	if resp.StatusCode != 200 || body != "ok" {
		t.Errorf("second request: %d %q, want 200 \"ok\" from a new upstream connection", resp.StatusCode, body)
	}
}

// TestH1UpstreamFailures: the fast path's own answers when there is no usable upstream
// response, and their metrics.
func TestH1UpstreamFailures(t *testing.T) {
	count := func(p *testProxy, dst netip.AddrPort, code string) func() float64 {
		l := labelsOf(dst, "http", code, "")
		l[len(l)-1] = telemetry.FlagUpstreamFail
		return func() float64 { return requestCount(t, p, l...) }
	}
	t.Run("refused", func(t *testing.T) {
		dst := closedPort(t)
		p := startProxy(t, dst, true)
		c := dialRaw(t, p.addr)
		for range 2 { // the client's connection stays usable
			c.send(t, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			expectResponse(t, c, "GET", http.StatusServiceUnavailable, "")
		}
		n := count(p, dst, "503")
		if !waitFor(2*time.Second, func() bool { return n() == 2 }) {
			t.Errorf("skiff_requests_total{503,UF} = %v, want 2", n())
		}
	})
	t.Run("refused with a body", func(t *testing.T) {
		dst := closedPort(t)
		p := startProxy(t, dst, true)
		c := dialRaw(t, p.addr)
		c.send(t, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n")
		// The body is not read: the connection cannot go on.
		if resp := expectResponse(t, c, "POST", http.StatusServiceUnavailable, ""); !resp.Close {
			t.Error("503 without Connection: close, the request body unread")
		}
		if closed, rest := c.closed(); !closed {
			t.Errorf("connection left open (further bytes %q)", rest)
		}
	})
	for name, answer := range map[string]string{
		"malformed":           "garbage\r\n\r\n",
		"bad framing":         "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
		"switching protocols": "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n",
		"closed, no answer":   "",
		"cut in the head":     "HTTP/1.1 200 OK\r\nContent-Len",
	} {
		t.Run(name, func(t *testing.T) {
			b := startRawBackend(t, func(_ int64, c net.Conn, br *bufio.Reader) {
				if _, _, err := readReq(br); err == nil {
					_, _ = io.WriteString(c, answer)
				}
			})
			p := startProxy(t, b.addr, true)
			c := dialRaw(t, p.addr)
			c.send(t, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			expectResponse(t, c, "GET", http.StatusBadGateway, "")
			n := count(p, b.addr, "502")
			if !waitFor(2*time.Second, func() bool { return n() == 1 }) {
				t.Errorf("skiff_requests_total{502,UF} = %v, want 1", n())
			}
			if got := b.accepts.Load(); got != 1 {
				t.Errorf("%d upstream connections, want 1 (a new connection is not retried)", got)
			}
		})
	}
}

// TestH1RequestBody: a body up to the fast path's limit arrives whole, in however many
// reads, and the bytes after it are the next request.
func TestH1RequestBody(t *testing.T) {
	b := startRecording(t, func(w http.ResponseWriter, r *http.Request, s seenRequest) {
		_, _ = fmt.Fprintf(w, "%s %s %d %s", r.Method, r.RequestURI, s.BodyLen, s.BodySum)
	})
	p := startProxy(t, b.addr, true)
	c := dialRaw(t, p.addr)
	for _, size := range []int{1, 4 << 10, 64 << 10} {
		body := randomBytes(t, size)
		req := "PUT /body HTTP/1.1\r\nHost: x\r\nContent-Length: " + strconv.Itoa(size) + "\r\n\r\n" + string(body) +
			"GET /next HTTP/1.1\r\nHost: x\r\n\r\n"
		cut := len(req) / 3
		c.send(t, req[:cut])
		c.send(t, req[cut:])
		expectResponse(t, c, "PUT", 200, fmt.Sprintf("PUT /body %d %s", size, sha(body)))
		expectResponse(t, c, "GET", 200, "GET /next 0 "+sha(nil))
	}
	if n := fastConns(p); n != 1 {
		t.Errorf("%d connections on the fast path, want 1 (bodies up to 64 KiB are its own)", n)
	}
}

// idleConns is how many fast-path connections are waiting for a request.
func idleConns(p *testProxy) int {
	p.h.h1.mu.Lock()
	defer p.h.h1.mu.Unlock()
	n := 0
	for hc := range p.h.h1.conns {
		if hc.state.Load() == h1Idle {
			n++
		}
	}
	return n
}

// slowBackend answers a request once release is called; started is closed when the
// request has arrived. release runs at cleanup too, before the backend's close waits for
// its handler.
func slowBackend(t *testing.T) (b *backend, started chan struct{}, release func()) {
	started, ch := make(chan struct{}), make(chan struct{})
	var once sync.Once
	release = func() { once.Do(func() { close(ch) }) }
	b = startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-ch
		_, _ = io.WriteString(w, "finished")
	}, false)
	t.Cleanup(release)
	return b, started, release
}

// TestH1Shutdown: Shutdown closes an idle fast-path connection at once, and lets one
// with a request in flight finish it first.
func TestH1Shutdown(t *testing.T) {
	t.Run("idle", func(t *testing.T) {
		b := startBackend(t, pathEcho, false)
		p := startProxy(t, b.addr, true)
		c := dialRaw(t, p.addr)
		c.send(t, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		expectResponse(t, c, "GET", 200, "GET / ")
		// Idle, waiting for the next request: only Shutdown can end the wait now.
		if !waitFor(2*time.Second, func() bool { return idleConns(p) == 1 }) {
			t.Fatal("the connection did not go idle")
		}
		start := time.Now()
		done := make(chan struct{})
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			p.h.Shutdown(ctx)
			close(done)
		}()
		if closed, rest := c.closed(); !closed || rest != "" {
			t.Fatalf("idle connection: closed %v, further bytes %q", closed, rest)
		}
		<-done
		if d := time.Since(start); d > time.Second {
			t.Errorf("Shutdown took %v with only an idle connection", d)
		}
	})
	t.Run("drain deadline", func(t *testing.T) {
		// A request still in flight when the deadline passes is cut: its upstream
		// connection and then the client's are closed, and Shutdown returns.
		b, started, _ := slowBackend(t)
		p := startProxy(t, b.addr, true)
		c := dialRaw(t, p.addr)
		c.send(t, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
		<-started
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		p.h.Shutdown(ctx)
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("Shutdown took %v with a 100 ms deadline", d)
		}
		if closed, _ := c.closed(); !closed {
			t.Error("the client's connection was left open")
		}
	})
	t.Run("in flight", func(t *testing.T) {
		b, started, release := slowBackend(t)
		p := startProxy(t, b.addr, true)
		c := dialRaw(t, p.addr)
		c.send(t, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
		<-started
		done := make(chan struct{})
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			p.h.Shutdown(ctx)
			close(done)
		}()
		if !waitFor(time.Second, p.h.h1.closing.Load) {
			t.Fatal("Shutdown did not begin")
		}
		select {
		case <-done:
			t.Fatal("Shutdown returned with a request in flight")
		case <-time.After(50 * time.Millisecond):
		}
		release()
		expectResponse(t, c, "GET", 200, "finished")
		if closed, rest := c.closed(); !closed || rest != "" {
			t.Errorf("after its response: closed %v, further bytes %q", closed, rest)
		}
		<-done
	})
}

// TestH1PipelinedWhileServing: requests a client sends while the one before is being
// served (pipelining, in writes of their own) are served after it, in order: the wait
// for them must not miss that they came while the proxy was busy. A head that comes in
// two parts is served when the rest arrives.
func TestH1PipelinedWhileServing(t *testing.T) {
	seen := make(chan string, 8)
	release := make(chan struct{})
	b := startRawBackend(t, func(_ int64, c net.Conn, br *bufio.Reader) {
		for {
			req, _, err := readReq(br)
			if err != nil {
				return
			}
			seen <- req.URL.Path
			if req.URL.Path == "/1" {
				<-release
			}
			_, _ = fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(req.URL.Path), req.URL.Path)
		}
	})
	p := startProxy(t, b.addr, true)
	c := dialRaw(t, p.addr)
	for round := range 3 {
		c.send(t, "GET /1 HTTP/1.1\r\nHost: x\r\n\r\n")
		if got := <-seen; got != "/1" {
			t.Fatalf("backend got %q first", got)
		}
		// /1 is being served: the next two arrive meanwhile, the third in part.
		c.send(t, "GET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
		time.Sleep(10 * time.Millisecond)
		c.send(t, "GET /3 HTTP/1.1\r\nHost: x\r\n\r\n")
		time.Sleep(10 * time.Millisecond)
		c.send(t, "GET /4 HTTP/1.1\r\nHo")
		time.Sleep(10 * time.Millisecond)
		release <- struct{}{}
		for _, want := range []string{"/1", "/2", "/3"} {
			expectResponse(t, c, "GET", 200, want)
		}
		c.send(t, "st: x\r\n\r\n")
		expectResponse(t, c, "GET", 200, "/4")
		for range 3 {
			<-seen
		}
		t.Logf("round %d served", round)
	}
}

// TestH1ClientGone: a client that closes its connection while its request waits for
// the upstream has the upstream connection closed too (the upstream's work for it ends),
// within about a second, and the request is counted as 499, as on the standard path; it
// is not sent again. A client that stays gets a response however late it comes.
func TestH1ClientGone(t *testing.T) {
	t.Run("gone", func(t *testing.T) {
		started, cut := make(chan struct{}, 1), make(chan struct{})
		b := startRawBackend(t, func(_ int64, c net.Conn, br *bufio.Reader) {
			if _, _, err := readReq(br); err != nil {
				return
			}
			started <- struct{}{}
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := br.ReadByte(); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
				close(cut)
			}
		})
		p := startProxy(t, b.addr, true)
		c := dialRaw(t, p.addr)
		c.send(t, "GET /poll HTTP/1.1\r\nHost: x\r\n\r\n")
		<-started
		gone := time.Now()
		_ = c.Close()
		select {
		case <-cut:
			t.Logf("upstream connection closed %v after the client's", time.Since(gone).Round(time.Millisecond))
		case <-time.After(5 * time.Second):
			t.Fatal("the upstream connection outlived its client by 5 s")
		}
		l := labelsOf(b.addr, "http", "499", "")
		if !waitFor(2*time.Second, func() bool { return requestCount(t, p, l...) == 1 }) {
			t.Errorf("skiff_requests_total{499} = %v, want 1", requestCount(t, p, l...))
		}
		if n := b.accepts.Load(); n != 1 {
			t.Errorf("%d upstream connections: the request was sent again", n)
		}
	})
	t.Run("stays", func(t *testing.T) {
		b := startRawBackend(t, answerEach(func(*http.Request) string {
			time.Sleep(3 * h1GoneEvery)
			return "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlate"
		}))
		p := startProxy(t, b.addr, true)
		c := dialRaw(t, p.addr)
		for range 2 {
			c.send(t, "GET /poll HTTP/1.1\r\nHost: x\r\n\r\n")
			expectResponse(t, c, "GET", 200, "late")
		}
		if n := b.accepts.Load(); n != 1 {
			t.Errorf("%d upstream connections, want 1: the first was not pooled", n)
		}
	})
}

// TestH1ShutdownAnnouncesClose: a response that starts after Shutdown began says
// Connection: close, as net/http's server does, so that the client does not send
// another request on a connection about to close.
func TestH1ShutdownAnnouncesClose(t *testing.T) {
	b, started, release := slowBackend(t)
	p := startProxy(t, b.addr, true)
	c := dialRaw(t, p.addr)
	c.send(t, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	<-started
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p.h.Shutdown(ctx)
	}()
	if !waitFor(time.Second, p.h.h1.closing.Load) {
		t.Fatal("Shutdown did not begin")
	}
	release()
	if resp := expectResponse(t, c, "GET", 200, "finished"); !resp.Close {
		t.Errorf("response written during Shutdown without Connection: close (header %v)", resp.Header)
	}
}

// TestH1IdleConnsHoldNoBuffers: a keep-alive connection waiting for its next request
// holds neither a read buffer nor parsed heads, which is most of what an idle connection
// would otherwise cost.
func TestH1IdleConnsHoldNoBuffers(t *testing.T) {
	b := startBackend(t, pathEcho, false)
	p := startProxy(t, b.addr, true)
	const n = 200
	conns := make([]*rawConn, n)
	for i := range conns {
		conns[i] = dialRaw(t, p.addr)
		conns[i].send(t, "GET / HTTP/1.1\r\nHost: x\r\nX-Pad: "+strings.Repeat("p", 1000)+"\r\n\r\n")
		expectResponse(t, conns[i], "GET", 200, "GET / ")
	}
	var idle, holding int
	ok := waitFor(2*time.Second, func() bool {
		idle, holding = 0, 0
		p.h.h1.mu.Lock()
		defer p.h.h1.mu.Unlock()
		for hc := range p.h.h1.conns {
			// Only an idle connection's fields may be read here: its goroutine wrote
			// them before it went idle (the atomic state orders that) and is blocked.
			if hc.state.Load() != h1Idle {
				continue
			}
			idle++
			if hc.rd.buf != nil || hc.heads != nil {
				holding++
			}
		}
		return idle == n
	})
	if !ok || holding != 0 {
		t.Errorf("%d of %d connections idle, %d of them holding a buffer or heads", idle, n, holding)
	}
	// Shutdown closes them without waking them to read, so the fields read above are not
	// written again (a client's close would make each fill its buffer, which the race
	// detector, not knowing the socket orders it after the read, would report).
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	p.h.Shutdown(ctx)
	if d := time.Since(start); d > time.Second {
		t.Errorf("Shutdown of %d idle connections took %v", n, d)
	}
	for _, c := range conns[:3] {
		if closed, rest := c.closed(); !closed || rest != "" {
			t.Errorf("idle connection after Shutdown: closed %v, further bytes %q", closed, rest)
		}
	}
}

// TestH1RequestHeaders: what the fast path changes in a request head, and only that.
func TestH1RequestHeaders(t *testing.T) {
	b := startRecording(t, nil)
	p := startProxy(t, b.addr, true)
	c := dialRaw(t, p.addr)
	send := func(head, body string) seenRequest {
		t.Helper()
		c.send(t, head+body)
		expectResponse(t, c, "POST", 200, "")
		if n := fastConns(p); n != 1 {
			t.Fatalf("request handed over to net/http: %q", head)
		}
		return b.last(t)
	}

	s := send("GET / HTTP/1.1\r\nHost: x\r\n\r\n", "")
	if ids := s.Header["X-Request-Id"]; len(ids) != 1 || !uuidV4.MatchString(ids[0]) {
		t.Errorf("absent X-Request-Id: backend saw %q, want one UUIDv4", ids)
	}
	s = send("GET / HTTP/1.1\r\nHost: x\r\nX-Request-Id: \r\n\r\n", "")
	if ids := s.Header["X-Request-Id"]; len(ids) != 1 || !uuidV4.MatchString(ids[0]) {
		t.Errorf("empty X-Request-Id: backend saw %q, want one UUIDv4 in its place", ids)
	}
	s = send("GET / HTTP/1.1\r\nHost: x\r\nX-Request-Id: app-1\r\n\r\n", "")
	if ids := s.Header["X-Request-Id"]; len(ids) != 1 || ids[0] != "app-1" {
		t.Errorf("client's X-Request-Id: backend saw %q", ids)
	}

	s = send("POST /p HTTP/1.1\r\nConnection: Host, content-length, X-Foo, keep-alive\r\nHost: h.test\r\n"+
		"Content-Length: 3\r\nX-Foo: 1\r\nX-Keep: 2\r\nTE: gzip, trailers\r\nKeep-Alive: 5\r\nProxy-Connection: x\r\n\r\n", "abc")
	if s.Host != "h.test" || s.BodyLen != 3 || s.Header.Get("Content-Length") != "3" {
		t.Errorf("Host %q, %d body bytes, Content-Length %q: framing named by Connection was dropped",
			s.Host, s.BodyLen, s.Header.Get("Content-Length"))
	}
	for _, k := range []string{"X-Foo", "Connection", "Keep-Alive", "Proxy-Connection"} {
		if v, ok := s.Header[k]; ok {
			t.Errorf("hop-by-hop %s: %q forwarded", k, v)
		}
	}
	if s.Header.Get("X-Keep") != "2" || strings.Join(s.Header["Te"], ",") != "trailers" {
		t.Errorf("X-Keep %q, TE %q; want 2, trailers", s.Header.Get("X-Keep"), s.Header["Te"])
	}
	s = send("GET / HTTP/1.1\r\nHost: x\r\nTE: gzip\r\n\r\n", "")
	if v, ok := s.Header["Te"]; ok {
		t.Errorf("TE without trailers forwarded as %q", v)
	}
}

// TestH1ResponseHeaders: hop-by-hop response fields, and those the upstream's
// Connection names, do not reach the client; the framing fields do, whatever
// Connection says.
func TestH1ResponseHeaders(t *testing.T) {
	b := startRawBackend(t, answerEach(func(r *http.Request) string {
		if r.URL.Path == "/chunked" {
			return "HTTP/1.1 200 OK\r\nConnection: Transfer-Encoding, X-Bar\r\nX-Bar: 1\r\nTransfer-Encoding: chunked\r\n\r\n" +
				"2\r\nok\r\n0\r\n\r\n"
		}
		return "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Bar, Content-Length\r\nKeep-Alive: timeout=5\r\n" +
			"X-Bar: 1\r\nX-Keep: 2\r\nProxy-Authenticate: Basic\r\nUpgrade: h2c\r\nContent-Length: 2\r\n\r\nok"
	}))
	p := startProxy(t, b.addr, true)
	c := dialRaw(t, p.addr)
	for _, path := range []string{"/", "/chunked", "/"} {
		c.send(t, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n")
		resp := expectResponse(t, c, "GET", 200, "ok")
		for _, k := range []string{"Connection", "Keep-Alive", "X-Bar", "Proxy-Authenticate", "Upgrade"} {
			if v, ok := resp.Header[k]; ok {
				t.Errorf("%s: hop-by-hop %s: %q reached the client", path, k, v)
			}
		}
		if path == "/" && (resp.ContentLength != 2 || resp.Header.Get("X-Keep") != "2") {
			t.Errorf("%s: Content-Length %d, X-Keep %q", path, resp.ContentLength, resp.Header.Get("X-Keep"))
		}
		if path == "/chunked" && (len(resp.TransferEncoding) != 1 || resp.TransferEncoding[0] != "chunked") {
			t.Errorf("%s: Transfer-Encoding %q", path, resp.TransferEncoding)
		}
	}
	if n := b.accepts.Load(); n != 1 {
		t.Errorf("%d upstream connections, want 1", n)
	}
}
