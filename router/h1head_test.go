package router

import (
	"fmt"
	"strings"
	"testing"
)

// The fast path's head parsers decide which requests skip net/http (and with it the
// H1Guard), and where each message ends. Every shape they must leave to net/http is listed
// here: accepting one of them would forward a request with framing the upstream may read
// differently.

// fieldsOf returns the parsed fields as "Name: value" strings, hop-by-hop ones prefixed
// with "-".
func fieldsOf(h *h1Head) []string {
	var out []string
	for _, f := range h.fields {
		s := string(f.name) + ": " + string(f.value)
		if f.hop {
			s = "-" + s
		}
		out = append(out, s)
	}
	return out
}

// headFields renders n filler header fields.
func headFields(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "X-F%d: v\r\n", i)
	}
	return b.String()
}

func TestParseRequestHeadAccepted(t *testing.T) {
	for _, tc := range []struct {
		name, head, rest string
		check            func(t *testing.T, h *h1Head)
	}{
		{name: "simple GET", head: "GET /a/b?c=d HTTP/1.1\r\nHost: example.test:8080\r\nUser-Agent: t\r\n\r\n",
			check: func(t *testing.T, h *h1Head) {
				if string(h.method) != "GET" || string(h.target) != "/a/b?c=d" || string(h.host) != "example.test:8080" {
					t.Errorf("method %q target %q host %q", h.method, h.target, h.host)
				}
				if h.contentLength != -1 || h.close || h.chunked || h.requestID || h.connTokens || h.teTrailers || h.xfcc || h.grpc {
					t.Errorf("unexpected flags: %+v", *h)
				}
				if got := strings.Join(fieldsOf(h), "|"); got != "Host: example.test:8080|User-Agent: t" {
					t.Errorf("fields %s", got)
				}
			}},
		{name: "POST with a body, the next request behind it",
			head: "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n", rest: "helloGET / HTTP/1.1\r\n",
			check: func(t *testing.T, h *h1Head) {
				if h.contentLength != 5 || string(h.method) != "POST" {
					t.Errorf("method %q content length %d", h.method, h.contentLength)
				}
			}},
		{name: "Content-Length at the limit", head: "PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 65536\r\n\r\n",
			check: func(t *testing.T, h *h1Head) {
				if h.contentLength != maxH1Body {
					t.Errorf("content length %d", h.contentLength)
				}
			}},
		{name: "Content-Length with whitespace and leading zeros", head: "PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: \t007 \r\n\r\n",
			check: func(t *testing.T, h *h1Head) {
				if h.contentLength != 7 {
					t.Errorf("content length %d", h.contentLength)
				}
			}},
		{name: "Connection: close", head: "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
			check: func(t *testing.T, h *h1Head) {
				if !h.close || h.connTokens {
					t.Errorf("close %v connTokens %v", h.close, h.connTokens)
				}
				if got := strings.Join(fieldsOf(h), "|"); got != "Host: x|-Connection: close" {
					t.Errorf("fields %s", got)
				}
			}},
		{name: "hop-by-hop fields, and those Connection names",
			head: "GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, X-Foo\r\nX-Foo: 1\r\nx-foo: 2\r\nX-Bar: 3\r\n" +
				"Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nProxy-Authorization: b\r\nTE: gzip\r\nConnection: x-bar,, \r\n\r\n",
			check: func(t *testing.T, h *h1Head) {
				want := "Host: x|-Connection: keep-alive, X-Foo|-X-Foo: 1|-x-foo: 2|-X-Bar: 3|-Keep-Alive: timeout=5|" +
					"-Proxy-Connection: keep-alive|-Proxy-Authorization: b|-TE: gzip|-Connection: x-bar,,"
				if got := strings.Join(fieldsOf(h), "|"); got != want {
					t.Errorf("fields\n got %s\nwant %s", got, want)
				}
				if !h.connTokens || h.close || h.teTrailers {
					t.Errorf("connTokens %v close %v teTrailers %v", h.connTokens, h.close, h.teTrailers)
				}
			}},
		{name: "framing fields named by Connection stay",
			head: "POST / HTTP/1.1\r\nConnection: Content-Length, HOST, x-a\r\nHost: x\r\nContent-Length: 3\r\nX-A: 1\r\n\r\n",
			check: func(t *testing.T, h *h1Head) {
				if got := strings.Join(fieldsOf(h), "|"); got != "-Connection: Content-Length, HOST, x-a|Host: x|Content-Length: 3|-X-A: 1" {
					t.Errorf("fields %s", got)
				}
				if h.contentLength != 3 || string(h.host) != "x" {
					t.Errorf("content length %d host %q", h.contentLength, h.host)
				}
			}},
		{name: "TE: trailers", head: "GET / HTTP/1.1\r\nHost: x\r\nTE: deflate, Trailers\r\n\r\n",
			check: func(t *testing.T, h *h1Head) {
				if !h.teTrailers {
					t.Error("teTrailers not set")
				}
				if got := strings.Join(fieldsOf(h), "|"); got != "Host: x|-TE: deflate, Trailers" {
					t.Errorf("fields %s (TE itself is replaced by TE: trailers)", got)
				}
			}},
		{name: "X-Request-Id present", head: "GET / HTTP/1.1\r\nHost: x\r\nX-Request-Id: abc\r\n\r\n",
			check: func(t *testing.T, h *h1Head) {
				if !h.requestID || strings.Join(fieldsOf(h), "|") != "Host: x|X-Request-Id: abc" {
					t.Errorf("requestID %v fields %v", h.requestID, fieldsOf(h))
				}
			}},
		{name: "X-Request-Id empty", head: "GET / HTTP/1.1\r\nHost: x\r\nx-request-id:  \r\n\r\n",
			check: func(t *testing.T, h *h1Head) {
				if h.requestID || strings.Join(fieldsOf(h), "|") != "Host: x|-x-request-id: " {
					t.Errorf("an empty id must be replaced: requestID %v fields %v", h.requestID, fieldsOf(h))
				}
			}},
		{name: "X-Forwarded-Client-Cert", head: "GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-Client-Cert: By=a;URI=b\r\n\r\n",
			check: func(t *testing.T, h *h1Head) {
				if !h.xfcc {
					t.Error("xfcc not noted")
				}
			}},
		{name: "gRPC", head: "POST /s/M HTTP/1.1\r\nHost: x\r\nContent-Type: Application/GRPC+proto\r\nContent-Length: 0\r\n\r\n",
			check: func(t *testing.T, h *h1Head) {
				if !h.grpc {
					t.Error("grpc not noted")
				}
			}},
		{name: "lower-case method, empty value, obs-text", head: "get / HTTP/1.1\r\nhost: x\r\nX-E:\r\nX-O: caf\xc3\xa9\t!\r\n\r\n",
			check: func(t *testing.T, h *h1Head) {
				if got := strings.Join(fieldsOf(h), "|"); got != "host: x|X-E: |X-O: caf\xc3\xa9\t!" {
					t.Errorf("fields %q", got)
				}
			}},
		{name: "256 fields", head: "GET / HTTP/1.1\r\nHost: x\r\n" + headFields(255) + "\r\n",
			check: func(t *testing.T, h *h1Head) {
				if len(h.fields) != maxH1Fields {
					t.Errorf("%d fields", len(h.fields))
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h h1Head
			if n := parseRequestHead([]byte(tc.head+tc.rest), &h); n != len(tc.head) {
				t.Fatalf("parseRequestHead = %d, want %d", n, len(tc.head))
			}
			if h.size != len(tc.head) {
				t.Errorf("size %d, want %d", h.size, len(tc.head))
			}
			tc.check(t, &h)
		})
	}
}

// TestParseRequestHeadReuse: a head parsed into an h1Head that held another one keeps
// nothing of it.
func TestParseRequestHeadReuse(t *testing.T) {
	var h h1Head
	parseRequestHead([]byte("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nConnection: close, x\r\nTE: trailers\r\nX-Request-Id: i\r\n\r\n"), &h)
	head := "GET / HTTP/1.1\r\nHost: b\r\n\r\n"
	if n := parseRequestHead([]byte(head), &h); n != len(head) {
		t.Fatalf("parseRequestHead = %d", n)
	}
	if h.contentLength != -1 || h.close || h.connTokens || h.teTrailers || h.requestID || len(h.fields) != 1 || string(h.host) != "b" {
		t.Errorf("state left from the previous head: %+v", h)
	}
}

func TestParseRequestHeadMore(t *testing.T) {
	full := "GET / HTTP/1.1\r\nHost: x\r\nX-A: b\r\n\r\n"
	for i := 0; i < len(full); i++ {
		var h h1Head
		if n := parseRequestHead([]byte(full[:i]), &h); n != h1More {
			t.Errorf("%q: %d, want h1More", full[:i], n)
		}
	}
}

func TestParseRequestHeadNot(t *testing.T) {
	const host = "Host: x\r\n"
	for name, head := range map[string]string{
		"HTTP/1.0":                  "GET / HTTP/1.0\r\n" + host + "\r\n",
		"HTTP/2 preface":            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
		"lower-case version":        "GET / http/1.1\r\n" + host + "\r\n",
		"absolute-form":             "GET http://x/ HTTP/1.1\r\n" + host + "\r\n",
		"authority-form":            "CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n",
		"asterisk":                  "OPTIONS * HTTP/1.1\r\n" + host + "\r\n",
		"empty target":              "GET  HTTP/1.1\r\n" + host + "\r\n",
		"space in target":           "GET /a b HTTP/1.1\r\n" + host + "\r\n",
		"tab in target":             "GET /a\tb HTTP/1.1\r\n" + host + "\r\n",
		"non-ASCII target":          "GET /caf\xc3\xa9 HTTP/1.1\r\n" + host + "\r\n",
		"DEL in target":             "GET /\x7f HTTP/1.1\r\n" + host + "\r\n",
		"two spaces":                "GET  / HTTP/1.1\r\n" + host + "\r\n",
		"no method":                 " / HTTP/1.1\r\n" + host + "\r\n",
		"bad method":                "G(T / HTTP/1.1\r\n" + host + "\r\n",
		"empty request line":        "\r\nGET / HTTP/1.1\r\n" + host + "\r\n",
		"Expect":                    "POST / HTTP/1.1\r\n" + host + "Content-Length: 1\r\nExpect: 100-continue\r\n\r\nx",
		"Upgrade":                   "GET / HTTP/1.1\r\n" + host + "Upgrade: websocket\r\n\r\n",
		"Connection: upgrade":       "GET / HTTP/1.1\r\n" + host + "Connection: keep-alive, Upgrade\r\n\r\n",
		"chunked":                   "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"TE identity":               "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: identity\r\n\r\n",
		"TE list":                   "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: gzip, chunked\r\n\r\n",
		"CL then TE":                "POST / HTTP/1.1\r\n" + host + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
		"TE then CL":                "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
		"duplicate CL, same value":  "POST / HTTP/1.1\r\n" + host + "Content-Length: 1\r\nContent-Length: 1\r\n\r\nx",
		"duplicate CL":              "POST / HTTP/1.1\r\n" + host + "Content-Length: 1\r\nContent-Length: 2\r\n\r\nxx",
		"CL list":                   "POST / HTTP/1.1\r\n" + host + "Content-Length: 1, 1\r\n\r\nx",
		"CL sign":                   "POST / HTTP/1.1\r\n" + host + "Content-Length: +1\r\n\r\nx",
		"CL negative":               "POST / HTTP/1.1\r\n" + host + "Content-Length: -1\r\n\r\n",
		"CL hex":                    "POST / HTTP/1.1\r\n" + host + "Content-Length: 0x1\r\n\r\nx",
		"CL empty":                  "POST / HTTP/1.1\r\n" + host + "Content-Length: \r\n\r\n",
		"CL too long to parse":      "POST / HTTP/1.1\r\n" + host + "Content-Length: 0000000000000000001\r\n\r\nx",
		"CL over 64 KiB":            "POST / HTTP/1.1\r\n" + host + "Content-Length: 65537\r\n\r\n",
		"no Host":                   "GET / HTTP/1.1\r\nX-A: b\r\n\r\n",
		"two Hosts":                 "GET / HTTP/1.1\r\n" + host + "host: y\r\n\r\n",
		"two Hosts, same value":     "GET / HTTP/1.1\r\n" + host + host + "\r\n",
		"Host with slash":           "GET / HTTP/1.1\r\nHost: x/y\r\n\r\n",
		"Host with space":           "GET / HTTP/1.1\r\nHost: x y\r\n\r\n",
		"Host with quote":           "GET / HTTP/1.1\r\nHost: x\"\r\n\r\n",
		"Host with backtick":        "GET / HTTP/1.1\r\nHost: x`\r\n\r\n",
		"Host with non-ASCII":       "GET / HTTP/1.1\r\nHost: caf\xc3\xa9\r\n\r\n",
		"obs-fold":                  "GET / HTTP/1.1\r\n" + host + "X-A: a\r\n b\r\n\r\n",
		"obs-fold with tab":         "GET / HTTP/1.1\r\n" + host + "X-A: a\r\n\tb\r\n\r\n",
		"fold before first field":   "GET / HTTP/1.1\r\n " + host + "\r\n",
		"bare LF ending head":       "GET / HTTP/1.1\r\n" + host + "\n",
		"bare LF in head":           "GET / HTTP/1.1\r\nX-A: a\nHost: x\r\n\r\n",
		"bare LF request line":      "GET / HTTP/1.1\n" + host + "\r\n",
		"bare CR in value":          "GET / HTTP/1.1\r\n" + "X-A: a\rb\r\n" + host + "\r\n",
		"space before colon":        "GET / HTTP/1.1\r\n" + host + "X-A : b\r\n\r\n",
		"space before Host colon":   "GET / HTTP/1.1\r\nHost : x\r\n\r\n",
		"no colon":                  "GET / HTTP/1.1\r\n" + host + "X-A b\r\n\r\n",
		"empty name":                "GET / HTTP/1.1\r\n" + host + ": b\r\n\r\n",
		"bad name byte":             "GET / HTTP/1.1\r\n" + host + "X(A): b\r\n\r\n",
		"NUL in value":              "GET / HTTP/1.1\r\n" + host + "X-A: a\x00b\r\n\r\n",
		"CTL in value":              "GET / HTTP/1.1\r\n" + host + "X-A: a\x01b\r\n\r\n",
		"DEL in value":              "GET / HTTP/1.1\r\n" + host + "X-A: a\x7fb\r\n\r\n",
		"ESC in Content-Length":     "POST / HTTP/1.1\r\n" + host + "Content-Length: 1\x1b\r\n\r\nx",
		"257 fields":                "GET / HTTP/1.1\r\n" + host + headFields(256) + "\r\n",
		"Host after 256 fields":     "GET / HTTP/1.1\r\n" + headFields(256) + host + "\r\n",
		"TE twice":                  "POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
		"Connection: upgrade only":  "POST / HTTP/1.1\r\n" + host + "Connection: upgrade\r\nContent-Length: 1\r\n\r\nx",
		"Expect in lower case":      "POST / HTTP/1.1\r\n" + host + "expect: 100-continue\r\nContent-Length: 1\r\n\r\n",
		"Upgrade, no Connection":    "GET / HTTP/1.1\r\n" + host + "UPGRADE: h2c\r\n\r\n",
		"upgrade token mixed case":  "GET / HTTP/1.1\r\n" + host + "connection: UpGrade\r\n\r\n",
		"Transfer-Encoding chunked": "GET / HTTP/1.1\r\n" + host + "transfer-encoding: CHUNKED\r\n\r\n0\r\n\r\n",
	} {
		var h h1Head
		if n := parseRequestHead([]byte(head), &h); n != h1Not {
			t.Errorf("%s: %q: parseRequestHead = %d, want h1Not", name, head, n)
		}
	}
}

func TestParseResponseHead(t *testing.T) {
	for _, tc := range []struct {
		name, head string
		status     int
		reason     string
		minor      int
		close      bool
		length     int64
		chunked    bool
		fields     string // fieldsOf, joined with "|"
	}{
		{name: "plain", head: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
			status: 200, reason: "OK", minor: 1, length: 2, fields: "Content-Length: 2"},
		{name: "no reason", head: "HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n",
			status: 404, minor: 1, length: 0, fields: "Content-Length: 0"},
		{name: "empty reason", head: "HTTP/1.1 204 \r\n\r\n", status: 204, minor: 1, length: -1},
		{name: "reason with spaces and obs-text", head: "HTTP/1.1 500 Tout va tr\xe8s mal\r\n\r\n",
			status: 500, reason: "Tout va tr\xe8s mal", minor: 1, length: -1},
		{name: "HTTP/1.0 closes", head: "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n",
			status: 200, reason: "OK", minor: 0, close: true, length: 1, fields: "Content-Length: 1"},
		{name: "HTTP/1.0 keep-alive", head: "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nKeep-Alive: timeout=5\r\nContent-Length: 1\r\n\r\n",
			status: 200, reason: "OK", minor: 0, length: 1,
			fields: "-Connection: Keep-Alive|-Keep-Alive: timeout=5|Content-Length: 1"},
		{name: "HTTP/1.1 close", head: "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n",
			status: 200, reason: "OK", minor: 1, close: true, length: -1, fields: "-connection: close"},
		{name: "bare LF", head: "HTTP/1.1 200 OK\nContent-Length: 3\nX-A: b\n\n",
			status: 200, reason: "OK", minor: 1, length: 3, fields: "Content-Length: 3|X-A: b"},
		{name: "bare LF mixed", head: "HTTP/1.1 200 OK\r\nX-A: b\n\r\n",
			status: 200, reason: "OK", minor: 1, length: -1, fields: "X-A: b"},
		{name: "chunked wins over Content-Length", head: "HTTP/1.1 200 OK\r\nContent-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\n",
			status: 200, reason: "OK", minor: 1, length: -1, chunked: true,
			fields: "-Content-Length: 10|Transfer-Encoding: chunked"},
		{name: "chunked, then Content-Length", head: "HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\ncontent-length: 10\r\n\r\n",
			status: 200, reason: "OK", minor: 1, length: -1, chunked: true,
			fields: "Transfer-Encoding: Chunked|-content-length: 10"},
		{name: "identical Content-Lengths, one kept", head: "HTTP/1.1 200 OK\r\nContent-Length: 4\r\nContent-Length:  4\r\n\r\n",
			status: 200, reason: "OK", minor: 1, length: 4, fields: "Content-Length: 4|-Content-Length: 4"},
		{name: "hop-by-hop and Connection-named", head: "HTTP/1.1 200 OK\r\nConnection: X-Bar, Content-Length, Transfer-Encoding\r\n" +
			"X-Bar: 1\r\nUpgrade: h2c\r\nProxy-Authenticate: Basic\r\nTransfer-Encoding: chunked\r\n\r\n",
			status: 200, reason: "OK", minor: 1, length: -1, chunked: true,
			fields: "-Connection: X-Bar, Content-Length, Transfer-Encoding|-X-Bar: 1|-Upgrade: h2c|-Proxy-Authenticate: Basic|Transfer-Encoding: chunked"},
		{name: "103 Early Hints", head: "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n",
			status: 103, reason: "Early Hints", minor: 1, length: -1, fields: "Link: </s.css>; rel=preload"},
		{name: "status 100", head: "HTTP/1.1 100 Continue\r\n\r\n", status: 100, reason: "Continue", minor: 1, length: -1},
		{name: "status 999", head: "HTTP/1.1 999 Odd\r\n\r\n", status: 999, reason: "Odd", minor: 1, length: -1},
		{name: "256 fields", head: "HTTP/1.1 200 OK\r\n" + headFields(256) + "\r\n",
			status: 200, reason: "OK", minor: 1, length: -1, fields: strings.Join(strings.Split(strings.TrimSuffix(headFields(256), "\r\n"), "\r\n"), "|")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h h1Head
			const body = "body bytes"
			if n := parseResponseHead([]byte(tc.head+body), &h); n != len(tc.head) {
				t.Fatalf("parseResponseHead = %d, want %d", n, len(tc.head))
			}
			if h.status != tc.status || string(h.reason) != tc.reason || h.minor != tc.minor || h.close != tc.close ||
				h.contentLength != tc.length || h.chunked != tc.chunked {
				t.Errorf("got status %d reason %q minor %d close %v length %d chunked %v\n"+
					"want       %d        %q       %d       %v        %d         %v",
					h.status, h.reason, h.minor, h.close, h.contentLength, h.chunked,
					tc.status, tc.reason, tc.minor, tc.close, tc.length, tc.chunked)
			}
			if got := strings.Join(fieldsOf(&h), "|"); got != tc.fields {
				t.Errorf("fields\n got %q\nwant %q", got, tc.fields)
			}
		})
	}
}

func TestParseResponseHeadMore(t *testing.T) {
	full := "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
	for i := 0; i < len(full); i++ {
		var h h1Head
		if n := parseResponseHead([]byte(full[:i]), &h); n != h1More {
			t.Errorf("%q: %d, want h1More", full[:i], n)
		}
	}
}

func TestParseResponseHeadNot(t *testing.T) {
	for name, head := range map[string]string{
		"garbage":                   "garbage\r\n\r\n",
		"HTTP/2":                    "HTTP/2.0 200 OK\r\n\r\n",
		"HTTP/1.2":                  "HTTP/1.2 200 OK\r\n\r\n",
		"lower-case":                "http/1.1 200 OK\r\n\r\n",
		"two-digit status":          "HTTP/1.1 20 OK\r\n\r\n",
		"four-digit status":         "HTTP/1.1 2000 OK\r\n\r\n",
		"status below 100":          "HTTP/1.1 099 Low\r\n\r\n",
		"status 000":                "HTTP/1.1 000\r\n\r\n",
		"non-digit status":          "HTTP/1.1 2x0 OK\r\n\r\n",
		"no space after version":    "HTTP/1.1_200 OK\r\n\r\n",
		"two spaces":                "HTTP/1.1  200 OK\r\n\r\n",
		"CTL in reason":             "HTTP/1.1 200 O\x01K\r\n\r\n",
		"TE gzip":                   "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
		"TE list":                   "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
		"TE twice":                  "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
		"TE empty":                  "HTTP/1.1 200 OK\r\nTransfer-Encoding: \r\n\r\n",
		"differing Content-Lengths": "HTTP/1.1 200 OK\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n",
		"Content-Length list":       "HTTP/1.1 200 OK\r\nContent-Length: 4, 4\r\n\r\n",
		"Content-Length sign":       "HTTP/1.1 200 OK\r\nContent-Length: +4\r\n\r\n",
		"obs-fold":                  "HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\n\r\n",
		"space before colon":        "HTTP/1.1 200 OK\r\nContent-Length : 4\r\n\r\n",
		"no colon":                  "HTTP/1.1 200 OK\r\nX-A\r\n\r\n",
		"NUL in value":              "HTTP/1.1 200 OK\r\nX-A: \x00\r\n\r\n",
		"bare CR in value":          "HTTP/1.1 200 OK\r\nX-A: a\rb\r\n\r\n",
		"257 fields":                "HTTP/1.1 200 OK\r\n" + headFields(257) + "\r\n",
	} {
		var h h1Head
		if n := parseResponseHead([]byte(head), &h); n != h1Not {
			t.Errorf("%s: %q: parseResponseHead = %d, want h1Not", name, head, n)
		}
	}
}

func TestParseChunkSize(t *testing.T) {
	for _, tc := range []struct {
		line string
		size int64
		ok   bool
	}{
		{"0", 0, true},
		{"5", 5, true},
		{"a", 10, true},
		{"A", 10, true},
		{"fF", 255, true},
		{"00000000000000000000001f", 31, true}, // leading zeros do not overflow
		{"1a;ext=1", 26, true},
		{"1a;name=\"quoted; value\";other", 26, true},
		{"5 ;a=b", 5, true}, // BWS before an extension (RFC 9112 §7.1.1)
		{"5\t; a", 5, true},
		{"5  ", 5, true},
		{"fffffffffffffff", 1<<60 - 1, true}, // 15 digits: the most that is taken
		{"", 0, false},
		{" 5", 0, false},
		{";ext", 0, false},
		{"g", 0, false},
		{"5x", 0, false},
		{"5 x", 0, false},
		{"0x5", 0, false},
		{"-5", 0, false},
		{"+5", 0, false},
		{"5;a\x00b", 0, false},
		{"5;a\x7f", 0, false},
		{"5;a\rb", 0, false},
		{"1000000000000000", 0, false}, // 16 digits
		{"ffffffffffffffff", 0, false},
		{"ffffffffffffffffffff", 0, false},
	} {
		size, ok := parseChunkSize([]byte(tc.line))
		if ok != tc.ok || ok && size != tc.size {
			t.Errorf("parseChunkSize(%q) = %d, %v; want %d, %v", tc.line, size, ok, tc.size, tc.ok)
		}
	}
}
