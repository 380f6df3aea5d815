package sniff

const (
	// h2Preface is the HTTP/2 client connection preface, RFC 9113 §3.4.
	h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

	// maxMethod bounds the method token. Registered methods are at most 17 bytes
	// (UPDATEREDIRECTREF); the slack is for custom ones. A longer token is TCP.
	maxMethod = 32

	// maxLine bounds the request line, line ending included. 8 KiB is what common
	// servers and proxies accept for a request line (nginx large_client_header_buffers,
	// the 8000 octets RFC 9112 §3 recommends supporting). A line that has not ended
	// within it is TCP.
	maxLine = 8 << 10

	// http1Version is what every accepted request line's version starts with; one of
	// '0' or '1' follows.
	http1Version = "HTTP/1."
)

// isTchar reports whether a byte is an RFC 9110 §5.6.2 tchar, the bytes of a method.
var isTchar = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

// isTargetByte reports whether a byte may appear in a request-target as sent on
// the wire: anything but SP, controls and DEL. Bytes >= 0x80 are allowed: some
// clients send raw UTF-8 paths, and the HTTP server, not the sniffer, should judge.
var isTargetByte = func() (t [256]bool) {
	for c := 0x21; c < 0x100; c++ {
		t[c] = c != 0x7f
	}
	return t
}()

// classifyHTTP classifies b, which starts with a tchar, as the HTTP/2 preface, an
// HTTP/1 request line, or TCP.
//
// "PRI * HTTP/2.0\r\n" followed by anything but the rest of the preface is TCP: it is
// neither HTTP/2 nor an HTTP/1.x request line, and relaying it untouched lets the
// destination reject it as it would without a sidecar. "PRI * HTTP/1.1" is an HTTP/1
// request with method PRI.
func classifyHTTP(b []byte) (Result, bool) {
	if b[0] == 'P' {
		n := min(len(b), len(h2Preface))
		if string(b[:n]) == h2Preface[:n] {
			if n == len(h2Preface) {
				return Result{Proto: HTTP2}, false
			}
			return Result{}, true
		}
	}
	return classifyRequestLine(b)
}

// classifyRequestLine decides whether b starts with an HTTP/1.0 or HTTP/1.1
// request line, RFC 9112 §3:
//
//	method SP request-target SP "HTTP/1." ("0" / "1") CRLF
//
// with a bare LF accepted for CRLF (RFC 9112 §2.2). Only a whole line is HTTP1: the
// method alone is not, as inline commands of opaque protocols look the same ("GET
// key\r\n" to Redis). Every check looks only at bytes before the point it decides at,
// so a decision holds for every longer input.
func classifyRequestLine(b []byte) (Result, bool) {
	// Past maxLine, running out of bytes means the line is too long.
	if len(b) > maxLine {
		b = b[:maxLine]
	}
	tcp := Result{Proto: TCP}

	// method
	i := 0
	for i < len(b) && i <= maxMethod && isTchar[b[i]] {
		i++
	}
	if i > maxMethod {
		return tcp, false
	}
	if i == len(b) {
		return outOfLine(b)
	}
	if b[i] != ' ' || i == 0 {
		return tcp, false
	}
	m := i
	i++

	// request-target: origin-form "/path", asterisk-form "*", absolute-form
	// "scheme:...", or authority-form "host:port" (CONNECT). The first byte tells
	// them apart, and the last two contain a colon.
	t := i
	for i < len(b) && isTargetByte[b[i]] {
		i++
	}
	if i > t {
		switch c := b[t]; {
		case c == '/':
		case c == '*':
			if i > t+1 {
				return tcp, false
			}
		case c == '[' || c >= '0' && c <= '9' || c|0x20 >= 'a' && c|0x20 <= 'z':
			if i < len(b) && !hasColon(b[t:i]) {
				return tcp, false
			}
		default:
			return tcp, false
		}
	}
	if i == len(b) {
		return outOfLine(b)
	}
	if b[i] != ' ' || i == t {
		return tcp, false
	}
	i++

	// HTTP-version and line end
	v := b[i:]
	n := min(len(v), len(http1Version))
	if string(v[:n]) != http1Version[:n] {
		return tcp, false
	}
	if len(v) <= len(http1Version) {
		return outOfLine(b)
	}
	if minor := v[len(http1Version)]; minor != '0' && minor != '1' {
		return tcp, false
	}
	end := v[len(http1Version)+1:]
	if len(end) == 0 || end[0] == '\r' && len(end) == 1 {
		return outOfLine(b)
	}
	if end[0] != '\n' && (end[0] != '\r' || end[1] != '\n') {
		return tcp, false
	}
	return Result{Proto: HTTP1, Method: method(b[:m])}, false
}

// outOfLine is the answer when b, valid so far, ends inside the request line.
func outOfLine(b []byte) (Result, bool) {
	if len(b) >= maxLine {
		return Result{Proto: TCP}, false
	}
	return Result{}, true
}

func hasColon(b []byte) bool {
	for _, c := range b {
		if c == ':' {
			return true
		}
	}
	return false
}

// method returns m as a string, without allocating for the common methods.
func method(m []byte) string {
	switch string(m) {
	case "GET":
		return "GET"
	case "HEAD":
		return "HEAD"
	case "POST":
		return "POST"
	case "PUT":
		return "PUT"
	case "DELETE":
		return "DELETE"
	case "CONNECT":
		return "CONNECT"
	case "OPTIONS":
		return "OPTIONS"
	case "TRACE":
		return "TRACE"
	case "PATCH":
		return "PATCH"
	case "PRI":
		return "PRI"
	}
	return string(m)
}
