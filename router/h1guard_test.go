package router

import (
	"bufio"
	"bytes"
	"io"
	"math/rand/v2"
	"net/http"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/net/http/httpguts"
)

// Real request heads and bodies, as clients send them.
const (
	reqGet     = "GET /index.html?q=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n"
	reqPostCL  = "POST /api/items HTTP/1.1\r\nHost: example.com\r\nContent-Type: application/json\r\nContent-Length: 27\r\n\r\n{\"name\":\"widget\",\"qty\":10}"
	reqChunked = "POST /upload HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n" +
		"7;name=\"a\"\r\nchunk-1\r\n1a;x\r\nabcdefghijklmnopqrstuvwxyz\r\nA\r\n0123456789\r\n0;last\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n"
	reqPutEmpty = "PUT /empty HTTP/1.1\r\nHost: example.com\r\nContent-Length: 0\r\n\r\n"
	reqCLTE     = "POST /smuggle HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
	reqHTTP10   = "GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
	reqUpgrade  = "GET /chat HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	reqConnect = "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"
	// A browser-like 400-byte head, for the benchmark and the allocation check.
	reqTypical = "GET /static/js/app.3f9a1c.js HTTP/1.1\r\nHost: www.example.com\r\n" +
		"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n" +
		"Accept: */*\r\nAccept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br\r\n" +
		"Referer: https://www.example.com/\r\nConnection: keep-alive\r\nSec-Fetch-Dest: script\r\n" +
		"Sec-Fetch-Mode: no-cors\r\nSec-Fetch-Site: same-origin\r\nCookie: session=0123456789abcdef\r\n\r\n"
)

// takeAll asks the guard about n requests, as the handler does, in order.
func takeAll(g *H1Guard, n int) []bool {
	out := make([]bool, n)
	for i := range out {
		out[i] = g.Take()
	}
	return out
}

// guardView is what feeding a stream leaves the guard with, for comparing feeds.
type guardView struct {
	requests  int64
	bad       int64
	state     guardState
	remaining int64
	line      string
}

func viewOf(g *H1Guard) guardView {
	return guardView{g.requests, g.bad.Load(), g.state, g.remaining, string(g.line)}
}

func feedSplit(s string, at ...int) *H1Guard {
	g := &H1Guard{}
	prev := 0
	for _, i := range at {
		g.Feed([]byte(s[prev:i]))
		prev = i
	}
	g.Feed([]byte(s[prev:]))
	return g
}

func TestH1GuardSplitEverywhere(t *testing.T) {
	streams := map[string]string{
		"pipelined": reqGet + reqPostCL + reqChunked + reqPutEmpty + reqGet + reqHTTP10,
		"clte-4th":  reqGet + reqChunked + reqPostCL + reqCLTE + reqGet,
		"post-crlf": reqPostCL + "\r\n" + reqGet,
		"bare-lf":   strings.ReplaceAll(reqGet+reqPostCL, "\r\n", "\n") + reqCLTE,
	}
	for name, s := range streams {
		t.Run(name, func(t *testing.T) {
			whole := feedSplit(s)
			want, wantTake := viewOf(whole), takeAll(whole, 8)
			for i := 0; i <= len(s); i++ {
				g := feedSplit(s, i)
				if got := viewOf(g); got != want {
					t.Fatalf("split at %d: %+v, whole: %+v", i, got, want)
				}
				if got := takeAll(g, 8); !slices.Equal(got, wantTake) {
					t.Fatalf("split at %d: Take %v, whole: %v", i, got, wantTake)
				}
			}
			// And one byte at a time.
			g := &H1Guard{}
			for i := 0; i < len(s); i++ {
				g.Feed([]byte{s[i]})
			}
			if got := viewOf(g); got != want {
				t.Fatalf("byte by byte: %+v, whole: %+v", got, want)
			}
			if got := takeAll(g, 8); !slices.Equal(got, wantTake) {
				t.Fatalf("byte by byte: Take %v, whole: %v", got, wantTake)
			}
		})
	}
}

func TestH1GuardFlagsTheRightRequest(t *testing.T) {
	others := []string{reqGet, reqPostCL, reqChunked, reqPutEmpty}
	for k := 0; k <= len(others); k++ {
		stream := strings.Join(others[:k], "") + reqCLTE + reqGet
		g := feedSplit(stream)
		got := takeAll(g, k+3)
		want := make([]bool, k+3)
		want[k] = true
		if !slices.Equal(got, want) {
			t.Errorf("CL+TE as request %d: Take %v, want %v", k+1, got, want)
		}
	}
	// Take counts with the handler even when the request arrives after the question
	// about an earlier one (pipelining): the answer is about the request taken.
	g := &H1Guard{}
	g.Feed([]byte(reqGet))
	if g.Take() {
		t.Error("first request flagged")
	}
	g.Feed([]byte(reqCLTE))
	if !g.Take() {
		t.Error("CL+TE fed after the first Take not flagged")
	}
}

func TestH1GuardShapes(t *testing.T) {
	for _, tc := range []struct {
		name   string
		stream string
		take   []bool
	}{
		{"te-then-cl", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", []bool{true}},
		{"names-any-case", "POST / HTTP/1.1\r\ncontent-LENGTH: 3\r\ntransfer-encoding: CHUNKED\r\n\r\n", []bool{true}},
		{"cl-te-gzip", "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: gzip\r\n\r\n", []bool{true}},
		{"obs-fold", "POST / HTTP/1.1\r\nContent-Length: 3\r\nX-A: a\r\n b\r\n\r\nabc" + reqGet, []bool{true, false}},
		{"obs-fold-tab", "POST / HTTP/1.1\r\nTransfer-Encoding:\r\n\tchunked\r\n\r\n0\r\n\r\n" + reqGet, []bool{true, false}},
		// HTTP/1.0: Go ignores Transfer-Encoding, so no body and the next request follows.
		{"http10-te", "POST /a HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n" + reqCLTE, []bool{false, true}},
		{"http10-cl-te", "POST /a HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", []bool{true}},
		// A body that looks like a head is skipped.
		{"cl-body-lookalike", "POST / HTTP/1.1\r\nContent-Length: " + strconv.Itoa(len(reqCLTE)) + "\r\n\r\n" + reqCLTE + reqGet, []bool{false, false}},
		{"chunk-lookalike", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + strconv.FormatInt(int64(len(reqCLTE)), 16) + "\r\n" + reqCLTE + "\r\n0\r\n\r\n" + reqGet, []bool{false, false}},
		// Leading blank lines are skipped (Go skips them after a POST).
		{"leading-crlf", "\r\n\r\n" + reqCLTE, []bool{true}},
		// An upgrade or CONNECT that is turned down leaves the connection in HTTP.
		{"upgrade-refused", reqUpgrade + reqCLTE, []bool{false, true}},
		{"connect-refused", reqConnect + reqCLTE, []bool{false, true}},
		// A 64 KiB header line is still within what the server takes.
		{"long-line", "GET / HTTP/1.1\r\nX-Long: " + strings.Repeat("a", 65<<10) + "\r\n\r\n" + reqCLTE, []bool{false, true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := feedSplit(tc.stream)
			if got := takeAll(g, len(tc.take)); !slices.Equal(got, tc.take) {
				t.Errorf("Take %v, want %v (guard %+v)", got, tc.take, viewOf(g))
			}
		})
	}
}

// TestH1GuardStops: shapes the server refuses (and closes on), and a switch of protocols,
// end the following; the bytes after are not taken for requests.
func TestH1GuardStops(t *testing.T) {
	for _, head := range []string{
		"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
		"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
		"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
		"POST / HTTP/1.1\r\nContent-Length: five\r\n\r\n",
		"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
		"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\naXX\r\n",
		"GET / HTTP/1.1\r\nX-Long: " + strings.Repeat("a", maxGuardLine+1),
	} {
		g := feedSplit(head + reqCLTE)
		if g.state != gStopped || g.bad.Load() != 0 || len(g.line) > maxGuardLine {
			t.Errorf("%.60q: state %d, bad %d, line %d bytes; want stopped, not flagged", head, g.state, g.bad.Load(), len(g.line))
		}
	}
	for _, head := range []string{reqUpgrade, reqConnect} {
		g := &H1Guard{}
		g.Feed([]byte(head))
		if g.Take() {
			t.Errorf("%.30q flagged", head)
		}
		g.switched() // the handler hijacked the connection for the 101
		// What follows is WebSocket frames or a tunnel, whatever its bytes look like.
		g.Feed([]byte("\x81\x05hello" + reqCLTE + reqGet))
		if g.Take() || g.requests != 1 || g.state != gStopped {
			t.Errorf("after %.30q and a switch: guard %+v, want 1 request and stopped", head, viewOf(g))
		}
	}
}

// TestH1GuardFeedAllocs: following a request with no body costs no allocation once the
// guard's line buffer has grown (it only buffers a line split across reads).
func TestH1GuardFeedAllocs(t *testing.T) {
	head := []byte(reqTypical)
	g := &H1Guard{}
	g.Feed(head)
	if n := testing.AllocsPerRun(1000, func() { g.Feed(head) }); n != 0 {
		t.Errorf("Feed of a %d-byte head: %v allocations, want 0", len(head), n)
	}
	// Split across reads, the line buffer is reused.
	split := len(head) / 2
	g.Feed(head[:split])
	g.Feed(head[split:])
	if n := testing.AllocsPerRun(1000, func() { g.Feed(head[:split]); g.Feed(head[split:]) }); n != 0 {
		t.Errorf("Feed of a head split in two: %v allocations, want 0", n)
	}
	if n := testing.AllocsPerRun(1000, func() { g.Take() }); n != 0 {
		t.Errorf("Take: %v allocations, want 0", n)
	}
}

func BenchmarkH1GuardFeed(b *testing.B) {
	head := []byte(reqTypical)
	g := &H1Guard{}
	b.ReportAllocs()
	b.SetBytes(int64(len(head)))
	for b.Loop() {
		g.Feed(head)
	}
}

// fuzzSeeds are real requests, alone and pipelined.
var fuzzSeeds = []string{
	reqGet, reqPostCL, reqChunked, reqPutEmpty, reqCLTE, reqHTTP10, reqUpgrade, reqConnect, reqTypical,
	reqGet + reqPostCL + reqChunked + reqCLTE + reqGet,
	reqPostCL + "\r\n" + reqGet,
	// Shapes that once put the guard out of step with the server.
	"POST / HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n" + reqCLTE,
	reqUpgrade + reqCLTE,
	reqConnect + reqCLTE,
	"POST / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\nContent-Length: 1\r\n\r\nx",
	"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n" + reqCLTE,
}

// FuzzH1Guard: Feed never panics, keeps its bounds, and the answer does not depend on how
// the connection's reads cut the bytes.
func FuzzH1Guard(f *testing.F) {
	for i, s := range fuzzSeeds {
		f.Add([]byte(s), uint64(i))
	}
	f.Fuzz(func(t *testing.T, data []byte, seed uint64) {
		whole := &H1Guard{}
		whole.Feed(data)
		if len(whole.line) > maxGuardLine || whole.remaining < 0 || whole.requests < 0 {
			t.Fatalf("out of bounds: %+v", viewOf(whole))
		}
		r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
		split := &H1Guard{}
		for rest := data; len(rest) > 0; {
			n := 1 + r.IntN(len(rest))
			if r.IntN(2) == 0 {
				n = 1 + r.IntN(min(len(rest), 8))
			}
			split.Feed(rest[:n])
			rest = rest[n:]
		}
		if a, b := viewOf(whole), viewOf(split); a != b {
			t.Fatalf("whole %+v, split %+v", a, b)
		}
		if a, b := takeAll(whole, 16), takeAll(split, 16); !slices.Equal(a, b) {
			t.Fatalf("Take: whole %v, split %v", a, b)
		}
	})
}

// FuzzH1GuardMatchesServer checks the guard against Go's own HTTP/1 parser, read as the
// server reads a connection: for every request the server would hand to the handler, the
// guard must say "refuse" exactly when the head Go parsed had both Content-Length and
// Transfer-Encoding (or a folded line). A disagreement on where a message ends shows up
// as a wrong answer for a later request.
func FuzzH1GuardMatchesServer(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		g := &H1Guard{}
		g.Feed(data)
		for i, req := range serverView(data) {
			if got := g.Take(); got != req.refuse {
				t.Fatalf("request %d (%q): guard says refuse=%v, want %v; guard %+v", i+1, req.head, got, req.refuse, viewOf(g))
			}
			if req.refuse {
				return // the proxy answers 400 and closes
			}
		}
	})
}

type serverRequest struct {
	head   string
	refuse bool
}

// serverView returns the requests Go's HTTP/1 server would serve from data, in order, up
// to where it would stop reading (an error, or a response that closes the connection).
func serverView(data []byte) []serverRequest {
	cr := &countingReader{r: bytes.NewReader(data)}
	br := bufio.NewReader(cr)
	offset := func() int { return int(cr.n) - br.Buffered() }
	var out []serverRequest
	lastMethod := ""
	for {
		if lastMethod == "POST" {
			peek, _ := br.Peek(4)
			n := 0
			for n < len(peek) && (peek[n] == '\r' || peek[n] == '\n') {
				n++
			}
			_, _ = br.Discard(n)
		}
		start := offset()
		req, err := http.ReadRequest(br)
		if err != nil || !serverTakes(req) || offset()-start > maxHeaderBytes+4096 {
			return out
		}
		head := string(data[start:offset()])
		if !hostOK(req, head) {
			return out
		}
		lastMethod = req.Method
		out = append(out, serverRequest{head: head, refuse: ambiguous(head)})
		if ambiguous(head) {
			return out
		}
		if _, err := io.Copy(io.Discard, req.Body); err != nil {
			return out
		}
		if req.Close || req.Method == "PRI" {
			return out
		}
	}
}

// serverTakes reports whether the server passes req to its handler (and keeps reading
// after), mirroring net/http's checks after parsing.
func serverTakes(req *http.Request) bool {
	if req.ProtoMajor != 1 {
		return false
	}
	for k, vv := range req.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return false
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return false
			}
		}
	}
	if e := req.Header.Get("Expect"); e != "" && !strings.EqualFold(e, "100-continue") {
		return false // 417 and close
	}
	return true
}

// hostOK mirrors the server's Host checks (http.ReadRequest moves Host out of the header
// map, so they are made on the raw head).
func hostOK(req *http.Request, head string) bool {
	hosts, ok := headerOf(head)["Host"]
	if req.ProtoAtLeast(1, 1) && (!ok || len(hosts) == 0) && req.Method != "CONNECT" {
		return false
	}
	return len(hosts) != 1 || httpguts.ValidHostHeader(hosts[0])
}

// headerOf is a raw head's fields as Go's textproto reads them.
func headerOf(head string) textproto.MIMEHeader {
	tp := textproto.NewReader(bufio.NewReader(strings.NewReader(head)))
	if _, err := tp.ReadLine(); err != nil {
		return nil
	}
	h, _ := tp.ReadMIMEHeader()
	return h
}

// ambiguous reports whether a raw head, as Go's textproto reads it, has both
// Content-Length and Transfer-Encoding, or a folded line.
func ambiguous(head string) bool {
	h := headerOf(head)
	_, cl := h["Content-Length"]
	_, te := h["Transfer-Encoding"]
	lines := strings.Split(strings.TrimLeft(head, "\r\n"), "\n")
	for _, l := range lines[1:] {
		if strings.HasPrefix(l, " ") || strings.HasPrefix(l, "\t") {
			return true
		}
	}
	return cl && te
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
