package router

import (
	"bytes"
)

// The HTTP/1.1 fast path parses message heads itself, into slices of the read buffer,
// so that a request costs no allocation and no header map. It is deliberately narrow:
// parseRequestHead accepts only requests that are well formed and unambiguous, and
// that the fast path can forward with its framing unchanged. Anything else (HTTP/1.0,
// Expect, Upgrade, a chunked or large body, obs-fold, a bare LF, a duplicate
// Content-Length, a bad byte anywhere) is handed to net/http's server, whose answers
// and smuggling defences (the H1Guard) are then exactly the ones the proxy always had.

// h1Field is one header field of a parsed head.
type h1Field struct {
	name, value []byte
	hop         bool // not forwarded: hop-by-hop, or replaced by the proxy
}

// h1Head is a parsed request or response head. Its slices point into the buffer it was
// parsed from and are valid until that buffer is read into again.
type h1Head struct {
	size   int // bytes of the head, final CRLF included
	fields []h1Field

	// Request line.
	method, target []byte
	host           []byte
	hosts          int

	// Status line.
	status int
	reason []byte
	minor  int // HTTP/1.<minor> of a response

	contentLength int64 // -1 when absent
	chunked       bool
	close         bool // the sender ends the connection after this message
	keepAlive     bool // Connection: keep-alive (an HTTP/1.0 response that stays open)
	connTokens    bool // Connection names other fields, which are not forwarded
	teTrailers    bool // TE lists trailers: passed on as "TE: trailers", as ReverseProxy does
	requestID     bool // a non-empty X-Request-Id is present
	grpc          bool // Content-Type application/grpc*
	xfcc          bool // X-Forwarded-Client-Cert is present
}

// Parse results besides a head's size.
const (
	h1More = 0  // the head is not complete yet
	h1Not  = -1 // not for the fast path (request) or malformed (response)
)

// Limits of the fast path. A request head that does not fit is handed to net/http,
// which answers 431 past its own limit; a response head that does not fit is a 502,
// and so is a response with more fields than maxH1Fields.
const (
	maxH1RequestHead  = maxHeaderBytes
	maxH1ResponseHead = 256 << 10
	maxH1Fields       = 256
	// maxH1Body is the largest request body the fast path carries. The request is sent
	// whole before the response is read, so an upstream that answers early without
	// reading the body must not be able to block the copy: 64 KiB fits the socket
	// buffers. Larger bodies, and chunked ones, go through net/http, which reads the
	// response while it sends.
	maxH1Body = 64 << 10
)

func (h *h1Head) reset() {
	clear(h.fields) // what they point into may be a buffer that is not kept
	fields := h.fields[:0]
	*h = h1Head{fields: fields, contentLength: -1}
}

// cutLine returns the line at the start of b without its CRLF, and the bytes it took.
// n is h1More when b holds no LF yet, h1Not when the LF has no CR before it.
func cutLine(b []byte) (line []byte, n int) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return nil, h1More
	}
	if i == 0 || b[i-1] != '\r' {
		return nil, h1Not
	}
	return b[:i-1], i + 1
}

// cutLineLenient is cutLine for responses, where a bare LF ends a line as well (as Go's
// client and every browser accept).
func cutLineLenient(b []byte) (line []byte, n int) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return nil, h1More
	}
	line = b[:i]
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	return line, i + 1
}

// parseRequestHead parses the request head at the start of b into h. It returns the
// head's size, h1More when more bytes are needed, or h1Not when the request is not one
// for the fast path.
func parseRequestHead(b []byte, h *h1Head) int {
	h.reset()
	line, n := cutLine(b)
	if n <= 0 {
		return n
	}
	off := n
	// method SP origin-form SP HTTP/1.1
	sp := bytes.IndexByte(line, ' ')
	if sp <= 0 || !isToken(line[:sp]) {
		return h1Not
	}
	h.method = line[:sp]
	rest := line[sp+1:]
	sp = bytes.IndexByte(rest, ' ')
	if sp <= 0 || rest[0] != '/' || string(rest[sp+1:]) != "HTTP/1.1" {
		return h1Not
	}
	h.target = rest[:sp]
	for _, c := range h.target {
		if c <= ' ' || c >= 0x7f {
			return h1Not
		}
	}
	for {
		line, n := cutLine(b[off:])
		if n <= 0 {
			return n
		}
		off += n
		if len(line) == 0 {
			break
		}
		if !h.field(line, true) {
			return h1Not
		}
	}
	switch {
	case h.hosts != 1, !validHost(h.host):
		return h1Not
	case h.chunked, h.contentLength > maxH1Body:
		return h1Not
	}
	if h.connTokens {
		h.hideConnectionNamed()
	}
	h.size = off
	return off
}

// parseResponseHead parses the response head at the start of b into h, as parseRequestHead.
// h1Not means the response is malformed.
func parseResponseHead(b []byte, h *h1Head) int {
	h.reset()
	line, n := cutLineLenient(b)
	if n <= 0 {
		return n
	}
	off := n
	// HTTP/1.x SP 3DIGIT [SP reason]
	if len(line) < 12 || string(line[:7]) != "HTTP/1." || line[8] != ' ' {
		return h1Not
	}
	switch line[7] {
	case '0':
		h.minor = 0
		h.close = true // unless it says keep-alive
	case '1':
		h.minor = 1
	default:
		return h1Not
	}
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return h1Not
		}
		h.status = h.status*10 + int(c-'0')
	}
	if h.status < 100 {
		return h1Not
	}
	if len(line) > 12 {
		if line[12] != ' ' {
			return h1Not
		}
		h.reason = line[13:]
		if !validValue(h.reason) {
			return h1Not
		}
	}
	for {
		line, n := cutLineLenient(b[off:])
		if n <= 0 {
			return n
		}
		off += n
		if len(line) == 0 {
			break
		}
		if !h.field(line, false) {
			return h1Not
		}
	}
	if h.chunked && h.minor == 0 {
		return h1Not // HTTP/1.0 has no transfer codings (RFC 9112 §6.1): the framing is in doubt
	}
	if h.chunked && h.contentLength >= 0 {
		// Transfer-Encoding wins, and Content-Length must not be passed on (RFC 9112 §6.3).
		for i := range h.fields {
			if asciiEqualFold(h.fields[i].name, "content-length") {
				h.fields[i].hop = true
			}
		}
		h.contentLength = -1
	}
	if h.minor == 0 && h.keepAlive {
		h.close = false
	}
	if h.connTokens {
		h.hideConnectionNamed()
	}
	h.size = off
	return off
}

// field parses one header line into h, and reports whether it is acceptable.
func (h *h1Head) field(line []byte, request bool) bool {
	if len(h.fields) == maxH1Fields || line[0] == ' ' || line[0] == '\t' {
		return false // too many, or obs-fold
	}
	colon := bytes.IndexByte(line, ':')
	if colon <= 0 || !isToken(line[:colon]) {
		return false
	}
	name, value := line[:colon], trimOWS(line[colon+1:])
	if !validValue(value) {
		return false
	}
	f := h1Field{name: name, value: value}
	switch len(name) {
	case 2:
		if asciiEqualFold(name, "te") {
			f.hop = true
			h.teTrailers = h.teTrailers || hasToken(value, "trailers")
		}
	case 4:
		if request && asciiEqualFold(name, "host") {
			h.hosts++
			h.host = value
		}
	case 6:
		if request && asciiEqualFold(name, "expect") {
			return false
		}
	case 7:
		if asciiEqualFold(name, "upgrade") {
			if request {
				return false
			}
			f.hop = true
		}
	case 10:
		switch {
		case asciiEqualFold(name, "connection"):
			f.hop = true
			if !h.connection(value, request) {
				return false
			}
		case asciiEqualFold(name, "keep-alive"):
			f.hop = true
		}
	case 12:
		switch {
		case asciiEqualFold(name, "x-request-id"):
			if len(value) == 0 {
				f.hop = true // replaced, as an absent one
			} else {
				h.requestID = true
			}
		case request && asciiEqualFold(name, "content-type"):
			h.grpc = len(value) >= 16 && asciiEqualFold(value[:16], "application/grpc")
		}
	case 14:
		if asciiEqualFold(name, "content-length") {
			cl, ok := parseLength(value)
			switch {
			case !ok:
				return false
			case h.contentLength >= 0 && (request || cl != h.contentLength):
				return false // a duplicate: net/http decides what it means
			case h.contentLength >= 0:
				f.hop = true // the same value again, passed on once
			}
			h.contentLength = cl
		}
	case 16:
		if asciiEqualFold(name, "proxy-connection") {
			f.hop = true
		}
	case 17:
		if asciiEqualFold(name, "transfer-encoding") {
			if h.chunked || !asciiEqualFold(value, "chunked") {
				return false // another coding, or a list: net/http (or a 502) handles it
			}
			h.chunked = true
		}
	case 18:
		if asciiEqualFold(name, "proxy-authenticate") {
			f.hop = true
		}
	case 19:
		if asciiEqualFold(name, "proxy-authorization") {
			f.hop = true
		}
	case 23:
		if request && asciiEqualFold(name, "x-forwarded-client-cert") {
			h.xfcc = true
		}
	}
	if request && h.chunked && h.contentLength >= 0 {
		return false // the smuggling shape: net/http and the H1Guard refuse it
	}
	h.fields = append(h.fields, f)
	return true
}

// connection reads a Connection header's tokens.
func (h *h1Head) connection(value []byte, request bool) bool {
	for len(value) > 0 {
		var tok []byte
		if i := bytes.IndexByte(value, ','); i >= 0 {
			tok, value = trimOWS(value[:i]), value[i+1:]
		} else {
			tok, value = trimOWS(value), nil
		}
		switch {
		case len(tok) == 0:
		case asciiEqualFold(tok, "close"):
			h.close = true
		case asciiEqualFold(tok, "keep-alive"):
			h.keepAlive = true
		case asciiEqualFold(tok, "upgrade") && request:
			return false
		default:
			h.connTokens = true
		}
	}
	return true
}

// hideConnectionNamed marks the fields a Connection header names as hop-by-hop.
func (h *h1Head) hideConnectionNamed() {
	for i := range h.fields {
		c := &h.fields[i]
		if !c.hop || !asciiEqualFold(c.name, "connection") {
			continue
		}
		for j := range h.fields {
			f := &h.fields[j]
			if f.hop || framing(f.name) {
				continue // the message's framing and authority are not the sender's to drop
			}
			if hasToken(c.value, string(f.name)) {
				f.hop = true
			}
		}
	}
}

func framing(name []byte) bool {
	return asciiEqualFold(name, "content-length") || asciiEqualFold(name, "transfer-encoding") ||
		asciiEqualFold(name, "host")
}

// hasToken reports whether the comma-separated list v holds tok (case-insensitively).
func hasToken(v []byte, tok string) bool {
	for len(v) > 0 {
		var t []byte
		if i := bytes.IndexByte(v, ','); i >= 0 {
			t, v = trimOWS(v[:i]), v[i+1:]
		} else {
			t, v = trimOWS(v), nil
		}
		if asciiEqualFold(t, tok) {
			return true
		}
	}
	return false
}

// parseLength parses a Content-Length value: digits only, as net/http requires.
func parseLength(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// asciiEqualFold compares b with the lower-case ASCII s, ignoring b's case.
func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lowerByte(s[i]) {
			return false
		}
	}
	return true
}

func lowerByte(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// tokenByte marks RFC 9110's tchar.
var tokenByte = func() (t [256]bool) {
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

func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !tokenByte[c] {
			return false
		}
	}
	return true
}

// validValue reports whether a field value (or reason phrase) holds only visible
// characters, spaces, tabs and obs-text: no CR, LF, NUL or other control.
func validValue(b []byte) bool {
	for _, c := range b {
		if c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// hostByte marks the bytes net/http accepts in a Host header.
var hostByte = func() (t [256]bool) {
	for c := 0; c < 256; c++ {
		t[c] = tokenByte[c] && c != '#' && c != '^' && c != '`' && c != '|'
	}
	for _, c := range "!$%&'()*+,-.:;=[]_~" {
		t[c] = true
	}
	return t
}()

func validHost(b []byte) bool {
	for _, c := range b {
		if !hostByte[c] {
			return false
		}
	}
	return true
}
