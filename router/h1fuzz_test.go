package router

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/net/http/httpguts"
)

// The fast path's parsers are checked against net/http's: a request head the fast path
// takes must be one Go's server takes too, with the same method, target, Host and body
// length (else the fast path would forward framing net/http and the H1Guard would have
// refused or read differently), and its own re-serialisation must read back the same; a
// chunked body it copies must end where Go's chunked reader says it ends.

var requestHeadSeeds = []string{
	"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
	"POST /up?q=1 HTTP/1.1\r\nHost: example.test:80\r\nContent-Length: 5\r\n\r\nhello",
	"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, X-Foo, Content-Length, Host\r\nX-Foo: 1\r\nTE: trailers\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Request-Id: \r\nX-Forwarded-Client-Cert: By=a\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: x\r\nX-Request-Id: abc\r\nConnection: x-request-id\r\n\r\n",
	"GET / HTTP/1.1\r\nhost: x\r\nX-Request-Id: a\r\nX-Request-Id: b\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 65536\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
	"GET / HTTP/1.0\r\nHost: x\r\n\r\n",
	"GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n",
	"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
	"GET / HTTP/1.1\nHost: x\n\n",
	"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: x\r\nX-A: \x00\r\n\r\n",
	"GET /\xff HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: x\r\n",
}

// FuzzParseRequestHead: parseRequestHead never panics; a head it takes ends with an empty
// line, every shorter prefix of it asks for more, net/http parses it (and its server would
// serve it) with the same method, target, Host and Content-Length, and writeRequestHead's
// version of it reads back the same, less the hop-by-hop fields.
func FuzzParseRequestHead(f *testing.F) {
	for _, s := range requestHeadSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var h h1Head
		n := parseRequestHead(data, &h)
		switch {
		case n == h1More:
			if bytes.Contains(data, []byte("\r\n\r\n")) {
				t.Fatalf("h1More for %q, which holds an empty line", data)
			}
			return
		case n == h1Not:
			return
		case n < 0 || n > len(data) || n != h.size:
			t.Fatalf("size %d (h.size %d) for %d bytes", n, h.size, len(data))
		}
		head := data[:n]
		if !bytes.HasSuffix(head, []byte("\r\n\r\n")) {
			t.Fatalf("head %q does not end with an empty line", head)
		}
		for i := 0; i < n; i += 1 + i/16 {
			var p h1Head
			if m := parseRequestHead(data[:i], &p); m != h1More {
				t.Fatalf("prefix of %d bytes of %q: %d, want h1More", i, head, m)
			}
		}
		if h.contentLength > maxH1Body || h.chunked || h.hosts != 1 {
			t.Fatalf("taken: content length %d, chunked %v, %d Hosts", h.contentLength, h.chunked, h.hosts)
		}
		want := string(head) // h's slices point into data; keep what they said
		method, target, host, cl := string(h.method), string(h.target), string(h.host), max(h.contentLength, 0)

		req := serverReads(t, "the client's head", []byte(want))
		if req.Method != method || req.RequestURI != target || req.Host != host || req.ContentLength != cl ||
			len(req.TransferEncoding) != 0 || req.Close != h.close {
			t.Fatalf("net/http reads %q as %s %s Host %q length %d TE %q close %v;\n"+
				"the fast path as %s %s Host %q length %d close %v",
				want, req.Method, req.RequestURI, req.Host, req.ContentLength, req.TransferEncoding, req.Close,
				method, target, host, cl, h.close)
		}
		if !httpguts.ValidHostHeader(req.Host) || req.Header.Get("Expect") != "" || req.Header.Get("Upgrade") != "" {
			t.Fatalf("taken, but net/http's server would refuse or upgrade it: %q", want)
		}

		hc := &h1conn{h: &HTTP{}, m: &Meta{Direction: "outbound"}, req: &h}
		var out bytes.Buffer
		w := bufio.NewWriter(&out)
		hc.writeRequestHead(w)
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		fwd := serverReads(t, "the forwarded head", out.Bytes())
		if fwd.Method != method || fwd.RequestURI != target || fwd.Host != host || fwd.ContentLength != cl ||
			len(fwd.TransferEncoding) != 0 || fwd.Close {
			t.Fatalf("forwarded %q reads as %s %s Host %q length %d TE %q close %v; sent %q",
				out.Bytes(), fwd.Method, fwd.RequestURI, fwd.Host, fwd.ContentLength, fwd.TransferEncoding, fwd.Close, want)
		}
		for _, k := range []string{"Connection", "Keep-Alive", "Proxy-Connection", "Upgrade", "Proxy-Authorization"} {
			if v, ok := fwd.Header[k]; ok {
				t.Fatalf("hop-by-hop %s: %q forwarded: %q", k, v, out.Bytes())
			}
		}
		named := map[string]bool{}
		for _, v := range req.Header["Connection"] {
			for _, tok := range strings.Split(v, ",") {
				named[textproto.CanonicalMIMEHeaderKey(strings.Trim(tok, " \t"))] = true
			}
		}
		for k, vv := range req.Header {
			switch {
			case k == "Content-Length" || k == "Host":
			case named[k] || k == "Te" || k == "Connection" || k == "Keep-Alive" || k == "Proxy-Connection" ||
				k == "Proxy-Authorization":
				if k != "Te" && k != "X-Request-Id" && len(fwd.Header[k]) != 0 {
					t.Fatalf("%s, hop-by-hop, forwarded as %q", k, fwd.Header[k])
				}
			case k == "X-Request-Id":
			default:
				if strings.Join(fwd.Header[k], "\n") != strings.Join(vv, "\n") {
					t.Fatalf("%s: sent %q, forwarded %q", k, vv, fwd.Header[k])
				}
			}
		}
		if te := fwd.Header["Te"]; len(te) > 1 || len(te) == 1 && te[0] != "trailers" {
			t.Fatalf("TE forwarded as %q", te)
		}
		if !named["X-Request-Id"] {
			ids := fwd.Header["X-Request-Id"]
			if len(ids) == 0 {
				t.Fatalf("no X-Request-Id forwarded for %q", want)
			}
			for _, id := range ids {
				if id == "" {
					t.Fatalf("an empty X-Request-Id forwarded for %q", want)
				}
			}
		}
	})
}

// serverReads parses a request head as Go's server would: http.ReadRequest, then the
// checks the server makes before calling its handler.
func serverReads(t *testing.T, what string, head []byte) *http.Request {
	t.Helper()
	req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(head)))
	if err != nil {
		t.Fatalf("net/http does not read %s %q: %v", what, head, err)
	}
	if !serverTakes(req) || !hostOK(req, string(head)) {
		t.Fatalf("net/http's server would refuse %s %q", what, head)
	}
	return req
}

var responseHeadSeeds = []string{
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 200\r\n\r\n",
	"HTTP/1.0 200 OK\r\n\r\nbody",
	"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
	"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
	"HTTP/1.1 304 Not Modified\r\nConnection: close, X-A\r\nX-A: 1\r\n\r\n",
	"HTTP/1.1 099 X\r\n\r\n",
	"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\n\r\n",
	"HTTP/1.1 200 OK\r\n",
}

// FuzzParseResponseHead: parseResponseHead never panics; a head it takes ends with an empty
// line (CRLF or bare LF), and Go's client reads it with the same status and framing.
func FuzzParseResponseHead(f *testing.F) {
	for _, s := range responseHeadSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var h h1Head
		n := parseResponseHead(data, &h)
		switch {
		case n == h1More:
			if bytes.Contains(data, []byte("\n\n")) || bytes.Contains(data, []byte("\n\r\n")) {
				t.Fatalf("h1More for %q, which holds an empty line", data)
			}
			return
		case n == h1Not:
			return
		case n < 0 || n > len(data) || n != h.size:
			t.Fatalf("size %d (h.size %d) for %d bytes", n, h.size, len(data))
		}
		head := data[:n]
		if !bytes.HasSuffix(head, []byte("\n\n")) && !bytes.HasSuffix(head, []byte("\n\r\n")) {
			t.Fatalf("head %q does not end with an empty line", head)
		}
		if h.status < 100 || h.status > 999 || h.chunked && h.contentLength >= 0 {
			t.Fatalf("status %d, chunked %v with length %d", h.status, h.chunked, h.contentLength)
		}
		resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(head)), &http.Request{Method: "GET"})
		if err != nil {
			t.Fatalf("taken, but Go's client does not read %q: %v", head, err)
		}
		if resp.StatusCode != h.status {
			t.Fatalf("%q: status %d, Go reads %d", head, h.status, resp.StatusCode)
		}
		if h.status < 200 || h.status == 204 || h.status == 304 {
			return // no body whatever the fields say
		}
		if h.minor == 0 && h.chunked {
			// Go ignores Transfer-Encoding in an HTTP/1.0 message; the fast path reads
			// the body as chunked, and the client gets it as that.
			return
		}
		goChunked := len(resp.TransferEncoding) == 1 && resp.TransferEncoding[0] == "chunked"
		if goChunked != h.chunked || !h.chunked && resp.ContentLength != h.contentLength {
			t.Fatalf("%q: chunked %v length %d; Go reads chunked %v length %d",
				head, h.chunked, h.contentLength, goChunked, resp.ContentLength)
		}
		if closeDelimited := !h.chunked && h.contentLength < 0; resp.Close != (h.close || closeDelimited) {
			t.Fatalf("%q: close %v (close-delimited %v); Go reads close %v", head, h.close, closeDelimited, resp.Close)
		}
	})
}

// readsConn is a net.Conn whose reads return data, at most step bytes at a time, then EOF.
type readsConn struct {
	net.Conn // nil: only Read is used
	data     []byte
	step     int
}

func (c *readsConn) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), c.step)], c.data)
	c.data = c.data[n:]
	return n, nil
}

var chunkedSeeds = []string{
	"0\r\n\r\n",
	"5\r\nhello\r\n0\r\n\r\n",
	"5;ext=1\r\nhello\r\n6;name=\"v\"\r\n world\r\n0\r\nX-Sum: 1\r\nX-B: 2\r\n\r\nHTTP/1.1 200 OK\r\n",
	"5 ;a=b\r\nhello\r\nA\r\n0123456789\r\n0\r\n\r\n",
	"5\r\nhelloXX0\r\n\r\n",
	"5\r\nhel",
	"g\r\n",
	"fffffffffffffffff\r\n",
	"0\r\nbad trailer\r\n\r\n",
	"0\r\n\r",
	"5\nhello\n0\n\n",
	"3\r\nabc\r\n0\r\nX: y\r\n",
}

// FuzzCopyChunked: copyChunked never panics, copies only a prefix of its input, verbatim,
// and, when it reports no error, that prefix is one complete chunked body as Go reads
// one: the same data, then a trailer section and nothing else.
func FuzzCopyChunked(f *testing.F) {
	for i, s := range chunkedSeeds {
		f.Add([]byte(s), uint16(1+i%3*7))
	}
	f.Fuzz(func(t *testing.T, data []byte, step uint16) {
		src := &bufReader{c: &readsConn{data: data, step: max(int(step), 1)}, pool: h1Bufs}
		var out bytes.Buffer
		w := bufio.NewWriterSize(&out, 64)
		n, rerr, werr := copyChunked(w, src)
		if werr != nil {
			t.Fatalf("write error %v to a buffer", werr)
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		copied := out.Bytes()
		if !bytes.HasPrefix(data, copied) {
			t.Fatalf("copied %q, not a prefix of %q", copied, data)
		}
		if rerr != nil {
			return
		}
		// What copyChunked did not take is still buffered or unread: it must be the rest.
		if rest := append(src.buffered(), src.c.(*readsConn).data...); !bytes.Equal(rest, data[len(copied):]) {
			t.Fatalf("after copying %q, %q left, want %q", copied, rest, data[len(copied):])
		}
		got, err := goChunked(copied)
		if err != nil {
			t.Fatalf("copied %q (input %q), which Go does not read as a chunked body: %v", copied, data, err)
		}
		if int64(len(got)) != n {
			t.Fatalf("copied %q: %d data bytes reported, Go decodes %d", copied, n, len(got))
		}
	})
}

func TestCopyChunked(t *testing.T) {
	longExt := "5;" + strings.Repeat("e", maxChunkLine-4) // with its CRLF, the longest line taken
	for _, tc := range []struct {
		name, in string
		copied   string // with err set, the copy is only checked to be a prefix of in
		data     int64
		err      error
	}{
		{name: "last chunk only", in: "0\r\n\r\nNEXT", copied: "0\r\n\r\n"},
		{name: "chunks, extensions, trailers", in: "5;a=b\r\nhello\r\nA \t;x\r\n0123456789\r\n0;end\r\nX-Sum: 1\r\nX-B:\r\n\r\nNEXT",
			copied: "5;a=b\r\nhello\r\nA \t;x\r\n0123456789\r\n0;end\r\nX-Sum: 1\r\nX-B:\r\n\r\n", data: 15},
		{name: "longest chunk line", in: longExt + "\r\nhello\r\n0\r\n\r\n", copied: longExt + "\r\nhello\r\n0\r\n\r\n", data: 5},
		{name: "chunk line too long", in: longExt + "e\r\nhello\r\n0\r\n\r\n", err: errBadChunk},
		{name: "no CRLF after data", in: "5\r\nhelloX\r\n0\r\n\r\n", err: errBadChunk},
		{name: "CR, no LF, after data", in: "5\r\nhello\rX0\r\n\r\n", err: errBadChunk},
		{name: "LF, no CR, after data", in: "5\r\nhello\n\n0\r\n\r\n", err: errBadChunk},
		{name: "bare LF after size", in: "5\nhello\r\n0\r\n\r\n", err: errBadChunk},
		{name: "bare LF ending trailers", in: "0\r\nX: 1\r\n\n", err: errBadChunk},
		{name: "bad size", in: "5x\r\nhello\r\n0\r\n\r\n", err: errBadChunk},
		{name: "size too large", in: "1000000000000000\r\n", err: errBadChunk},
		{name: "bad trailer", in: "0\r\nnot a field\r\n\r\n", err: errBadChunk},
		{name: "folded trailer", in: "0\r\nX: 1\r\n 2\r\n\r\n", err: errBadChunk},
		{name: "cut in data", in: "5\r\nhel", err: io.ErrUnexpectedEOF},
		{name: "cut before CRLF", in: "5\r\nhello\r", err: io.ErrUnexpectedEOF},
		{name: "cut in trailers", in: "0\r\nX: 1\r\n", err: io.ErrUnexpectedEOF},
		{name: "empty", in: "", err: io.ErrUnexpectedEOF},
	} {
		for _, step := range []int{1, 3, 1 << 20} {
			src := &bufReader{c: &readsConn{data: []byte(tc.in), step: step}, pool: h1Bufs}
			var out bytes.Buffer
			w := bufio.NewWriterSize(&out, 16)
			n, rerr, werr := copyChunked(w, src)
			_ = w.Flush()
			switch {
			case werr != nil || !errors.Is(rerr, tc.err):
				t.Errorf("%s, reads of %d: errors %v, %v; want %v", tc.name, step, rerr, werr, tc.err)
			case tc.err == nil && (out.String() != tc.copied || n != tc.data):
				t.Errorf("%s, reads of %d: copied %q (%d data bytes), want %q (%d)", tc.name, step, out.String(), n, tc.copied, tc.data)
			case !strings.HasPrefix(tc.in, out.String()):
				t.Errorf("%s, reads of %d: copied %q, not a prefix of the input", tc.name, step, out.String())
			}
		}
	}
}

// goChunked decodes a chunked body with Go's reader, after making the size lines plain
// hex (the copy keeps extensions, and whitespace before them, which RFC 9112 allows and
// Go's reader refuses), and reads the trailer section after it with textproto. The body
// must end exactly at the end of b.
func goChunked(b []byte) ([]byte, error) {
	var plain []byte
	rest := b
	for {
		i := bytes.Index(rest, []byte("\r\n"))
		if i < 0 {
			return nil, io.ErrUnexpectedEOF
		}
		line := rest[:i]
		j := 0
		for j < len(line) && strings.IndexByte("0123456789abcdefABCDEF", line[j]) >= 0 {
			j++
		}
		if ext := strings.TrimLeft(string(line[j:]), " \t"); j == 0 || ext != "" && ext[0] != ';' {
			return nil, strconv.ErrSyntax
		}
		digits := strings.TrimLeft(string(line[:j]), "0")
		if digits == "" {
			digits = "0"
		}
		size, err := strconv.ParseUint(digits, 16, 62)
		if err != nil {
			return nil, err
		}
		plain = append(plain, digits...)
		plain = append(plain, "\r\n"...)
		rest = rest[i+2:]
		if size == 0 {
			plain = append(plain, rest...) // trailers, as sent
			break
		}
		if uint64(len(rest)) < size+2 {
			return nil, io.ErrUnexpectedEOF
		}
		plain = append(plain, rest[:size+2]...)
		rest = rest[size+2:]
	}
	br := bufio.NewReader(bytes.NewReader(plain))
	data, err := io.ReadAll(httputil.NewChunkedReader(br))
	if err != nil {
		return nil, err
	}
	if _, err := textproto.NewReader(br).ReadMIMEHeader(); err != nil {
		return nil, err
	}
	if left, _ := io.ReadAll(br); len(left) > 0 {
		return nil, io.ErrShortBuffer
	}
	return data, nil
}
