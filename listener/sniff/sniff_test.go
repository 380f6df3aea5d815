package sniff

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
)

// sample is input for Classify and what it must say about it.
type sample struct {
	name string
	b    []byte
	want Result
	// at is the shortest prefix of b that Classify decides on: shorter ones need
	// more, it and longer ones give want. 0 means all of b; -1 means only b itself
	// is checked (random inputs).
	at int
}

func same(a, b Result) bool {
	return a.Proto == b.Proto && a.SNI == b.SNI && a.Method == b.Method && slices.Equal(a.ALPN, b.ALPN)
}

func (r Result) GoString() string {
	return fmt.Sprintf("{%v SNI:%q ALPN:%q Method:%q}", r.Proto, r.SNI, r.ALPN, r.Method)
}

// helloSample is a captured ClientHello and what the crypto/tls server read in it.
type helloSample struct {
	name    string
	records []byte
	info    *tls.ClientHelloInfo
}

var (
	realOnce   sync.Once
	realOK     bool
	realHellos []helloSample
	realGet    []byte
	realConn   []byte
	realH2     []byte
)

// captureReal captures the real clients' bytes once per test binary.
func captureReal(tb testing.TB) {
	tb.Helper()
	realOnce.Do(func() {
		long := func(n, size int) []string {
			var p []string
			for i := range n {
				p = append(p, fmt.Sprintf("proto-%03d-%s", i, strings.Repeat("x", size-10)))
			}
			return p
		}
		for _, c := range []struct {
			name string
			cfg  *tls.Config
		}{
			{"tls13-h2", &tls.Config{ServerName: "api.example.com", NextProtos: []string{"h2", "http/1.1"}}},
			{"tls12-mixed-case", &tls.Config{ServerName: "Mixed.Example.COM", MaxVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}}},
			{"no-alpn", &tls.Config{ServerName: "db.internal"}},
			{"no-sni", &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}}},
			{"ip-no-sni", &tls.Config{ServerName: "10.1.2.3", NextProtos: []string{"grpc-exp", "h2"}}},
			{"big-10k", &tls.Config{ServerName: "big.example.com", NextProtos: long(40, 250)}},
		} {
			records, info := captureHello(tb, c.cfg)
			realHellos = append(realHellos, helloSample{c.name, records, info})
		}
		realGet, realConn = realHTTP1(tb)
		realH2 = realH2C(tb)
		realOK = true
	})
	if !realOK {
		tb.Fatal("capturing real client bytes failed earlier")
	}
}

// samples returns the table every test walks: real client bytes, hand-made edge
// cases, and other protocols' first bytes.
func samples(tb testing.TB) []sample {
	captureReal(tb)
	var s []sample
	for _, h := range realHellos {
		want := Result{Proto: TLS, SNI: strings.ToLower(h.info.ServerName), ALPN: h.info.SupportedProtos}
		s = append(s, sample{name: "real/" + h.name, b: h.records, want: want})
	}
	line := func(b []byte) int { return bytes.IndexByte(b, '\n') + 1 }
	s = append(s,
		sample{name: "real/net-http-get", b: realGet, want: Result{Proto: HTTP1, Method: "GET"}, at: line(realGet)},
		sample{name: "real/net-http-connect", b: realConn, want: Result{Proto: HTTP1, Method: "CONNECT"}, at: line(realConn)},
		sample{name: "real/net-http-h2c", b: realH2, want: Result{Proto: HTTP2}, at: len(h2Preface)},
	)

	str := func(name, b string, want Result, at int) sample { return sample{name, []byte(b), want, at} }
	http1 := func(m string) Result { return Result{Proto: HTTP1, Method: m} }
	tcp := Result{Proto: TCP}
	tlsNone := Result{Proto: TLS}
	s = append(s,
		str("h2/preface", h2Preface, Result{Proto: HTTP2}, 0),
		str("h2/preface-settings", h2Preface+"\x00\x00\x00\x04\x00\x00\x00\x00\x00", Result{Proto: HTTP2}, len(h2Preface)),
		str("h2/pri-then-other", "PRI * HTTP/2.0\r\nHost: x\r\n", tcp, 17),
		str("h2/pri-then-crlf-other", "PRI * HTTP/2.0\r\n\r\nXM\r\n\r\n", tcp, 19),
		str("h2/pri-bare-lf", "PRI * HTTP/2.0\n\nSM\n\n", tcp, 15),

		str("http1/get", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", http1("GET"), 16),
		str("http1/post-1.0", "POST /submit?x=1 HTTP/1.0\r\n", http1("POST"), 0),
		str("http1/connect", "CONNECT db.internal:443 HTTP/1.1\r\nHost: db.internal:443\r\n\r\n", http1("CONNECT"), 34),
		str("http1/connect-ipv6", "CONNECT [2001:db8::1]:443 HTTP/1.1\r\n", http1("CONNECT"), 0),
		str("http1/options-asterisk", "OPTIONS * HTTP/1.1\r\n", http1("OPTIONS"), 0),
		str("http1/absolute-form", "GET http://example.com/x HTTP/1.1\r\n", http1("GET"), 0),
		str("http1/pri-1.1", "PRI * HTTP/1.1\r\n\r\n", http1("PRI"), 16),
		str("http1/custom-bare-lf", "MKCALENDAR /cal/ HTTP/1.1\nHost: x\n\n", http1("MKCALENDAR"), 26),
		str("http1/custom-tchars", "M-SEARCH * HTTP/1.1\r\n", http1("M-SEARCH"), 0),
		str("http1/lowercase-method", "get / HTTP/1.0\r\n", http1("get"), 0),
		str("http1/utf8-path", "GET /caf\xc3\xa9 HTTP/1.1\r\n", http1("GET"), 0),
		str("http1/method-32", strings.Repeat("X", 32)+" / HTTP/1.1\r\n", http1(strings.Repeat("X", 32)), 0),

		str("tcp/redis-inline", "GET key\r\n", tcp, 8),
		str("tcp/redis-inline-set", "SET key value\r\n", tcp, 8),
		str("tcp/redis-resp", "*1\r\n$4\r\nPING\r\n", tcp, 3),
		str("tcp/ssh", "SSH-2.0-OpenSSH_9.6\r\n", tcp, 20),
		str("tcp/mysql-handshake-response", "\x55\x00\x00\x01\x85\xa6\xff\x01\x00\x00\x00\x01\x21", tcp, 2),
		str("tcp/postgres-sslrequest", "\x00\x00\x00\x08\x04\xd2\x16\x2f", tcp, 1),
		str("tcp/sslv2-hello", "\x80\x2e\x01\x03\x01\x00\x15\x00\x00\x00\x10", tcp, 1),
		str("tcp/method-33", strings.Repeat("X", 33)+" / HTTP/1.1\r\n", tcp, 33),
		str("tcp/empty-method", " / HTTP/1.1\r\n", tcp, 1),
		str("tcp/double-space", "GET  / HTTP/1.1\r\n", tcp, 5),
		str("tcp/http-1.2", "GET / HTTP/1.2\r\n", tcp, 14),
		str("tcp/http-0.9", "GET /\r\n", tcp, 6),
		str("tcp/http2-version", "GET / HTTP/2\r\n", tcp, 12),
		str("tcp/cr-not-crlf", "GET / HTTP/1.1\rX", tcp, 16),
		str("tcp/no-colon-target", "GET example.com HTTP/1.1\r\n", tcp, 16),
		str("tcp/asterisk-plus", "GET *x HTTP/1.1\r\n", tcp, 6),
		str("tcp/bad-target-start", "GET ?x HTTP/1.1\r\n", tcp, 5),
		str("tcp/ctl-in-target", "GET /a\x00b HTTP/1.1\r\n", tcp, 7),
		str("tcp/del-in-target", "GET /a\x7fb HTTP/1.1\r\n", tcp, 7),
		str("tcp/long-line", "GET /"+strings.Repeat("a", maxLine)+" HTTP/1.1\r\n", tcp, maxLine),

		str("tls/bad-major", "\x16\x02\x01\x00\x10", tcp, 2),
		str("tls/bad-minor", "\x16\x03\x05\x00\x10", tcp, 3),
		str("tls/record-too-long", "\x16\x03\x01\x41\x00", tcp, 4),
		str("tls/record-2^14+1", "\x16\x03\x01\x40\x01", tcp, 5),
		str("tls/record-empty", "\x16\x03\x01\x00\x00\x01", tcp, 5),
		str("tls/server-hello", "\x16\x03\x03\x00\x10\x02\x00\x00\x0c", tlsNone, 6),
		str("tls/hello-too-big", "\x16\x03\x01\x40\x00\x01\x00\xff\xff", tlsNone, 9),
		str("tls/hello-just-too-big", "\x16\x03\x01\x40\x00\x01\x00\x3f\xfd", tlsNone, 9),
		str("tls/garbage-hello", "\x16\x03\x01\x00\x08\x01\x00\x00\x04\xde\xad\xbe\xef", tlsNone, 0),
		str("tls/empty-hello", "\x16\x03\x01\x00\x04\x01\x00\x00\x00", tlsNone, 0),
	)

	// Hand-built hellos for what real clients do not send.
	rec := func(msg []byte) []byte { return frame(msg, maxRecordLen) }
	hs := func(name string, msg []byte, want Result) sample { return sample{name: name, b: rec(msg), want: want} }
	s = append(s,
		hs("hello/sni-alpn", hello(sniExt("a.test"), alpnExt("h2")), Result{Proto: TLS, SNI: "a.test", ALPN: []string{"h2"}}),
		hs("hello/no-extensions", hello(), tlsNone),
		hs("hello/empty-extensions", hello([]byte{}), tlsNone),
		hs("hello/alpn-only", hello(alpnExt("http/1.1", "h2")), Result{Proto: TLS, ALPN: []string{"http/1.1", "h2"}}),
		hs("hello/sni-uppercase", hello(sniExt("API.Example.COM")), Result{Proto: TLS, SNI: "api.example.com"}),
		hs("hello/sni-other-name-type", hello(ext(extServerName, vec16(append([]byte{7}, vec16([]byte("x"))...)))), tlsNone),
		hs("hello/sni-other-then-host", hello(ext(extServerName, vec16(slices.Concat([]byte{7}, vec16([]byte("x")), []byte{0}, vec16([]byte("h.test")))))), Result{Proto: TLS, SNI: "h.test"}),
		hs("hello/sni-trailing-dot", hello(sniExt("a.test."), alpnExt("h2")), tlsNone),
		hs("hello/sni-space", hello(sniExt("a test")), tlsNone),
		hs("hello/sni-empty-name", hello(sniExt("")), tlsNone),
		hs("hello/sni-256", hello(sniExt(strings.Repeat("a", 256))), tlsNone),
		hs("hello/sni-255", hello(sniExt(strings.Repeat("a", 255))), Result{Proto: TLS, SNI: strings.Repeat("a", 255)}),
		hs("hello/sni-two-hosts", hello(sniExt("a.test", "b.test")), tlsNone),
		hs("hello/sni-twice", hello(sniExt("a.test"), sniExt("a.test")), tlsNone),
		hs("hello/sni-empty-list", hello(ext(extServerName, vec16(nil))), tlsNone),
		hs("hello/sni-empty-ext", hello(ext(extServerName, nil)), tlsNone),
		hs("hello/alpn-twice", hello(alpnExt("h2"), alpnExt("h2")), tlsNone),
		hs("hello/alpn-empty-name", hello(alpnExt("h2", "")), tlsNone),
		hs("hello/alpn-empty-list", hello(ext(extALPN, vec16(nil))), tlsNone),
		hs("hello/alpn-trailing", hello(ext(extALPN, append(vec16(vec8([]byte("h2"))), 0))), tlsNone),
		hs("hello/ext-truncated", hello(sniExt("a.test"), []byte{0, 21, 0, 9}), tlsNone),
		hs("hello/unknown-exts", hello(ext(0xfafa, nil), sniExt("a.test"), ext(21, make([]byte, 300)), alpnExt("h2")), Result{Proto: TLS, SNI: "a.test", ALPN: []string{"h2"}}),
		hs("hello/bytes-after-exts", fixHelloLen(append(hello(sniExt("a.test")), 0)), tlsNone),
	)
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range 4 {
		b := make([]byte, 64<<i)
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		s = append(s, sample{name: fmt.Sprintf("tcp/random-%d", len(b)), b: b, want: tcp, at: -1})
	}
	after := rec(append(hello(sniExt("a.test")), 0)) // a byte after the message, in its record
	s = append(s, sample{name: "hello/bytes-after-message", b: after, want: Result{Proto: TLS, SNI: "a.test"}, at: len(after) - 1})
	return s
}

// hello builds a ClientHello handshake message, header included, with the extensions
// exts, each whole (type, length, data); with no exts it has no extensions block.
func hello(exts ...[]byte) []byte {
	body := slices.Concat([]byte{3, 3}, make([]byte, 32), []byte{0}, vec16([]byte{0x13, 0x01}), []byte{1, 0})
	if exts != nil {
		body = append(body, vec16(slices.Concat(exts...))...)
	}
	return append([]byte{typeClientHello, byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body))}, body...)
}

// fixHelloLen rewrites the length in the header of the handshake message msg.
func fixHelloLen(msg []byte) []byte {
	n := len(msg) - 4
	msg[1], msg[2], msg[3] = byte(n>>16), byte(n>>8), byte(n)
	return msg
}

func vec8(b []byte) []byte  { return append([]byte{byte(len(b))}, b...) }
func vec16(b []byte) []byte { return append([]byte{byte(len(b) >> 8), byte(len(b))}, b...) }

func ext(typ uint16, data []byte) []byte {
	return append([]byte{byte(typ >> 8), byte(typ)}, vec16(data)...)
}

func sniExt(hosts ...string) []byte {
	var l []byte
	for _, h := range hosts {
		l = append(l, serverNameHost)
		l = append(l, vec16([]byte(h))...)
	}
	return ext(extServerName, vec16(l))
}

func alpnExt(protos ...string) []byte {
	var l []byte
	for _, p := range protos {
		l = append(l, vec8([]byte(p))...)
	}
	return ext(extALPN, vec16(l))
}

// TestClassify feeds every sample whole, cut at every byte, and with more bytes
// after it, as a listener peeking a connection that trickles in would.
func TestClassify(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, s := range samples(t) {
		t.Run(s.name, func(t *testing.T) {
			got, more := Classify(s.b)
			if more || !same(got, s.want) {
				t.Fatalf("Classify(all %d bytes) = %#v, %v; want %#v, false", len(s.b), got, more, s.want)
			}
			at := s.at
			if at == 0 {
				at = len(s.b)
			}
			if at > 0 {
				for i := range len(s.b) {
					got, more := Classify(s.b[:i])
					if i < at && (!more || !same(got, Result{})) {
						t.Fatalf("Classify(first %d of %d bytes) = %#v, %v; want needMore until %d", i, len(s.b), got, more, at)
					}
					if i >= at && (more || !same(got, s.want)) {
						t.Fatalf("Classify(first %d of %d bytes) = %#v, %v; want %#v from %d on", i, len(s.b), got, more, s.want, at)
					}
				}
			}
			for range 8 {
				tail := make([]byte, rng.IntN(64))
				for i := range tail {
					tail[i] = byte(rng.Uint32())
				}
				got, more := Classify(slices.Concat(s.b, tail))
				if more || !same(got, s.want) {
					t.Fatalf("Classify(b + % x) = %#v, %v; want %#v", tail, got, more, s.want)
				}
			}
		})
	}
}

// TestRealHellos checks the captured hellos against what crypto/tls read in them, and
// checks that a hello split over many records, as some clients and evasion tools send
// it, reads the same as in one record.
func TestRealHellos(t *testing.T) {
	captureReal(t)
	for _, h := range realHellos {
		t.Run(h.name, func(t *testing.T) {
			got, more := Classify(h.records)
			if more || got.Proto != TLS || got.SNI != strings.ToLower(h.info.ServerName) || !slices.Equal(got.ALPN, h.info.SupportedProtos) {
				t.Fatalf("Classify = %#v, %v; crypto/tls read SNI %q ALPN %q", got, more, h.info.ServerName, h.info.SupportedProtos)
			}
			msg := handshakeMessage(h.records)
			for _, size := range []int{1, 2, 3, 4, 5, 7, 64, 100, 1000, maxRecordLen} {
				b := frame(msg, size)
				if len(b) > MaxPeek {
					continue
				}
				for i := range len(b) {
					if _, more := Classify(b[:i]); !more {
						t.Fatalf("records of %d: Classify(first %d of %d bytes) decided early", size, i, len(b))
					}
				}
				if r, more := Classify(b); more || !same(r, got) {
					t.Fatalf("records of %d: Classify = %#v, %v; want %#v", size, r, more, got)
				}
			}
		})
	}
}

// TestHelloBiggerThanARecord checks a hello that crypto/tls itself splits over two
// records because it is longer than one: it cannot fit in MaxPeek, so it is TLS with
// nothing read from it, decided as soon as its length is known.
func TestHelloBiggerThanARecord(t *testing.T) {
	var protos []string
	for i := range 70 {
		protos = append(protos, fmt.Sprintf("%03d-%s", i, strings.Repeat("p", 246)))
	}
	b, info := captureHello(t, &tls.Config{ServerName: "huge.example.com", NextProtos: protos})
	if len(info.SupportedProtos) != 70 || len(b) <= MaxPeek || b[5+maxRecordLen] != recordTypeHandshake {
		t.Fatalf("capture is not a %d-byte hello in two records", len(b))
	}
	for i := range 9 {
		if _, more := Classify(b[:i]); !more {
			t.Fatalf("Classify(first %d bytes) decided before the hello's length", i)
		}
	}
	for _, i := range []int{9, 100, MaxPeek - 1, MaxPeek, len(b)} {
		if r, more := Classify(b[:i]); more || !same(r, Result{Proto: TLS}) {
			t.Fatalf("Classify(first %d bytes) = %#v, %v; want TLS without SNI", i, r, more)
		}
	}
}

// TestMaxPeek checks the edges of MaxPeek: a hello that fills it exactly is read,
// one byte more is not, and no input longer than MaxPeek is read past it.
func TestMaxPeek(t *testing.T) {
	want := Result{Proto: TLS, SNI: "edge.test", ALPN: []string{"h2"}}
	// padded is a hello of msgLen bytes, made so by a padding extension (RFC 7685).
	padded := func(msgLen int) []byte {
		msg := hello(sniExt("edge.test"), alpnExt("h2"), ext(21, nil))
		return hello(sniExt("edge.test"), alpnExt("h2"), ext(21, make([]byte, msgLen-len(msg))))
	}

	exact := frame(padded(maxRecordLen), maxRecordLen)
	if len(exact) != MaxPeek {
		t.Fatalf("exact hello is %d bytes, want %d", len(exact), MaxPeek)
	}
	if r, more := Classify(exact[:MaxPeek-1]); !more {
		t.Fatalf("one byte short: %#v, decided", r)
	}
	if r, more := Classify(exact); more || !same(r, want) {
		t.Fatalf("exact: %#v, %v; want %#v", r, more, want)
	}
	// The same hello in two records is 5 bytes too long.
	two := frame(padded(maxRecordLen), maxRecordLen-10)
	if r, more := Classify(two[:9]); more || !same(r, Result{Proto: TLS}) {
		t.Fatalf("two records: %#v, %v; want TLS without SNI as soon as the length is known", r, more)
	}
	// Nothing past MaxPeek changes an answer.
	for _, s := range samples(t) {
		b := slices.Concat(s.b, make([]byte, MaxPeek))
		for _, n := range []int{MaxPeek, MaxPeek + 1, len(b)} {
			r1, m1 := Classify(b[:n])
			r2, m2 := Classify(b[:MaxPeek])
			if m1 || m2 || !same(r1, r2) {
				t.Fatalf("%s: Classify(%d bytes) = %#v, %v; of MaxPeek bytes = %#v, %v", s.name, n, r1, m1, r2, m2)
			}
		}
	}
	long := bytes.Repeat([]byte{'a'}, MaxPeek)
	if r, more := Classify(long); more || r.Proto != TCP {
		t.Fatalf("MaxPeek tchars: %#v, %v", r, more)
	}
}

// TestReframedBadRecords checks that a hello continued in something other than a
// handshake record is TLS without SNI, decided when that record's header arrives.
func TestReframedBadRecords(t *testing.T) {
	msg := hello(sniExt("a.test"), alpnExt("h2"))
	for _, bad := range [][]byte{
		{23, 3, 1, 0, 10},      // application data
		{22, 4, 1, 0, 10},      // bad version
		{22, 3, 1, 0, 0},       // empty record
		{22, 3, 1, 0x40, 0x01}, // too long
	} {
		b := frame(msg, 20)
		copy(b[25:30], bad)
		for i := range 30 {
			if _, more := Classify(b[:i]); !more {
				t.Fatalf("% x: decided at %d", bad, i)
			}
		}
		for _, i := range []int{30, len(b)} {
			if r, more := Classify(b[:i]); more || !same(r, Result{Proto: TLS}) {
				t.Fatalf("% x: Classify(first %d) = %#v, %v; want TLS without SNI", bad, i, r, more)
			}
		}
	}
	// A handshake message header split over records.
	b := slices.Concat([]byte{22, 3, 1, 0, 2}, msg[:2], []byte{22, 3, 3, 0, 1}, msg[2:3], frame(msg[3:], 1000))
	if r, more := Classify(b); more || !same(r, Result{Proto: TLS, SNI: "a.test", ALPN: []string{"h2"}}) {
		t.Fatalf("split header: %#v, %v", r, more)
	}
	// A record carrying the end of the hello and more after it.
	b = frame(append(slices.Clone(msg), 20, 0, 0, 1, 1), 10)
	if r, more := Classify(b); more || !same(r, Result{Proto: TLS, SNI: "a.test", ALPN: []string{"h2"}}) {
		t.Fatalf("trailing message: %#v, %v", r, more)
	}
}

func TestFinal(t *testing.T) {
	for _, c := range []struct {
		b    string
		want Protocol
	}{
		{"", TCP},
		{"\x16", TCP},
		{"\x16\x03\x01\x02", TCP},
		{"\x16\x03\x01\x02\x00", TLS},
		{"\x16\x03\x01\x02\x00\x01\x00\x01", TLS},
		{"GET / HTT", TCP},
		{"PRI * HTTP/2.0\r\n", TCP},
		{"GET / HTTP/1.1\r\n", HTTP1},
		{h2Preface, HTTP2},
		{"SSH-", TCP},
	} {
		if got := Final([]byte(c.b)); got.Proto != c.want {
			t.Errorf("Final(%q) = %#v, want %v", c.b, got, c.want)
		}
	}
	for _, s := range samples(t) {
		if got := Final(s.b); !same(got, s.want) {
			t.Errorf("%s: Final = %#v, want %#v", s.name, got, s.want)
		}
	}
}

func TestProtocolString(t *testing.T) {
	for p, want := range map[Protocol]string{Unknown: "unknown", TCP: "tcp", TLS: "tls", HTTP1: "http1", HTTP2: "http2", 200: "unknown"} {
		if got := p.String(); got != want {
			t.Errorf("Protocol(%d).String() = %q, want %q", p, got, want)
		}
	}
}

func TestAllocs(t *testing.T) {
	captureReal(t)
	for _, c := range []struct {
		name string
		b    []byte
		max  float64
	}{
		{"http1-get", realGet, 0},
		{"http1-connect", realConn, 0},
		{"http2", realH2, 0},
		{"tcp-ssh", []byte("SSH-2.0-OpenSSH_9.6\r\n"), 0},
		{"tcp-redis", []byte("GET key\r\n"), 0},
		{"tcp-binary", []byte{0, 0, 0, 8, 4, 210, 22, 47}, 0},
		{"need-more", []byte("GET /index.ht"), 0},
		{"tls-sni-alpn", realHellos[0].records, 2}, // one string for all names, one []string
		{"tls-sni", realHellos[2].records, 1},
		{"tls-need-more", realHellos[3].records[:100], 0},
	} {
		if got := testing.AllocsPerRun(100, func() { Classify(c.b) }); got > c.max {
			t.Errorf("%s: %v allocs per Classify, want at most %v", c.name, got, c.max)
		}
	}
}

// TestAgainstCryptoTLS mutates hellos and checks that whatever crypto/tls's server
// reads in one that it accepts, Classify reads too: the same SNI (lowercased) and
// ALPN. Classify is stricter about server names than crypto/tls, which takes any
// bytes: such hellos must read as TLS without SNI or ALPN.
func TestAgainstCryptoTLS(t *testing.T) {
	captureReal(t)
	msgs := [][]byte{
		hello(sniExt("a.test"), alpnExt("h2", "http/1.1")),
		hello(ext(0x0a0a, nil), sniExt("b.test"), ext(21, make([]byte, 16)), alpnExt("x")),
	}
	for _, h := range realHellos[:5] {
		msgs = append(msgs, handshakeMessage(h.records))
	}
	rng := rand.New(rand.NewPCG(11, 12))
	n := 2000
	if testing.Short() {
		n = 200
	}
	accepted := 0
	for range n {
		msg := slices.Clone(msgs[rng.IntN(len(msgs))])
		for range 1 + rng.IntN(3) {
			// Mostly the end of the message, where the names usually are.
			i := 4 + rng.IntN(len(msg)-4)
			if rng.IntN(4) > 0 {
				i = len(msg) - 1 - rng.IntN(min(len(msg)-4, 64))
			}
			msg[i] = byte(rng.Uint32())
		}
		b := frame(msg, maxRecordLen)
		got, more := Classify(b)
		if more {
			continue
		}
		info := serverReads(b)
		if info == nil {
			continue
		}
		accepted++
		want := Result{Proto: TLS, SNI: strings.ToLower(info.ServerName), ALPN: info.SupportedProtos}
		if info.ServerName != "" && !validHostName([]byte(info.ServerName)) {
			want = Result{Proto: TLS}
		}
		if !same(got, want) {
			t.Fatalf("Classify = %#v; crypto/tls read SNI %q ALPN %q\nmsg: % x", got, info.ServerName, info.SupportedProtos, msg)
		}
	}
	t.Logf("%d of %d mutated hellos accepted by crypto/tls and compared", accepted, n)
}
