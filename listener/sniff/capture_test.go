package sniff

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"
)

// This file captures real first flights from real clients (crypto/tls, net/http)
// over in-memory connections, so the tests feed Classify bytes nobody wrote by hand.

// captureHello runs a crypto/tls client handshake with cfg against a crypto/tls server
// over net.Pipe. It returns the client's first bytes, up to the end of the records that
// carry its ClientHello, and what the server's GetConfigForClient saw in that hello.
func captureHello(tb testing.TB, cfg *tls.Config) ([]byte, *tls.ClientHelloInfo) {
	tb.Helper()
	c, s := net.Pipe()
	deadline := time.Now().Add(10 * time.Second)
	c.SetDeadline(deadline)
	s.SetDeadline(deadline)
	defer c.Close()
	defer s.Close()

	go func() {
		tls.Client(c, cfg).Handshake() // fails when the server stops it; c is closed after
		c.Close()
	}()

	rec := &recordingConn{Conn: s}
	var info *tls.ClientHelloInfo
	errStop := errors.New("captured")
	srv := tls.Server(rec, &tls.Config{
		GetConfigForClient: func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
			info = chi
			return nil, errStop
		},
	})
	if err := srv.Handshake(); !errors.Is(err, errStop) {
		tb.Fatalf("server handshake: %v, want the capture to stop it", err)
	}
	return helloRecords(tb, rec.buf.Bytes()), info
}

// recordingConn records every byte read through it.
type recordingConn struct {
	net.Conn
	buf bytes.Buffer
}

func (r *recordingConn) Read(p []byte) (int, error) {
	n, err := r.Conn.Read(p)
	r.buf.Write(p[:n])
	return n, err
}

// helloRecords returns the prefix of b made of the handshake records that carry the
// first handshake message, walking record headers independently of the code under test.
func helloRecords(tb testing.TB, b []byte) []byte {
	tb.Helper()
	var stream []byte
	for pos := 0; ; {
		if len(b)-pos < 5 || b[pos] != 22 {
			tb.Fatalf("captured bytes do not hold a whole handshake message: % x", b)
		}
		n := int(b[pos+3])<<8 | int(b[pos+4])
		stream = append(stream, b[pos+5:pos+5+n]...)
		pos += 5 + n
		if len(stream) >= 4 && len(stream) >= 4+(int(stream[1])<<16|int(stream[2])<<8|int(stream[3])) {
			return b[:pos:pos]
		}
	}
}

// handshakeMessage returns the handshake message carried by records.
func handshakeMessage(records []byte) []byte {
	var msg []byte
	for pos := 0; pos+5 <= len(records); {
		n := int(records[pos+3])<<8 | int(records[pos+4])
		msg = append(msg, records[pos+5:pos+5+n]...)
		pos += 5 + n
	}
	return msg
}

// frame wraps msg in TLS 1.0-versioned handshake records of at most size bytes each,
// as a client fragmenting its hello would.
func frame(msg []byte, size int) []byte {
	out := make([]byte, 0, len(msg)+(len(msg)/size+1)*5)
	for len(msg) > 0 {
		n := min(size, len(msg))
		out = append(out, 22, 3, 1, byte(n>>8), byte(n))
		out = append(out, msg[:n]...)
		msg = msg[n:]
	}
	return out
}

// pipeTransport returns an http.Transport whose every dial is one end of a net.Pipe,
// and a function that takes the other end of the next dial and returns what the client
// writes on it, read until enough reports true, the client stops, or 5s pass.
func pipeTransport(tb testing.TB) (*http.Transport, func(enough func([]byte) bool) []byte) {
	conns := make(chan net.Conn, 1)
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, s := net.Pipe()
			conns <- s
			return c, nil
		},
	}
	read := func(enough func([]byte) bool) []byte {
		tb.Helper()
		var s net.Conn
		select {
		case s = <-conns:
		case <-time.After(10 * time.Second):
			tb.Fatal("client never dialled")
		}
		defer s.Close()
		s.SetReadDeadline(time.Now().Add(5 * time.Second))
		var got []byte
		buf := make([]byte, 4096)
		for !enough(got) {
			n, err := s.Read(buf)
			got = append(got, buf[:n]...)
			if err != nil {
				break
			}
		}
		return got
	}
	return tr, read
}

// captureClient sends req with a client on tr in the background, and returns what
// read gets from the connection the client dials, until enough.
func captureClient(tr *http.Transport, req *http.Request, read func(func([]byte) bool) []byte, enough func([]byte) bool) []byte {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		if resp, err := (&http.Client{Transport: tr}).Do(req.WithContext(ctx)); err == nil {
			resp.Body.Close()
		}
	}()
	got := read(enough)
	cancel()
	<-done
	tr.CloseIdleConnections()
	return got
}

func endOfHeaders(b []byte) bool { return bytes.Contains(b, []byte("\r\n\r\n")) }

// realHTTP1 returns a GET, and a CONNECT sent to a proxy, as net/http writes them.
func realHTTP1(tb testing.TB) (get, connect []byte) {
	tb.Helper()
	tr, read := pipeTransport(tb)
	req, _ := http.NewRequest("GET", "http://api.example.test/v1/items?id=42", nil)
	get = captureClient(tr, req, read, endOfHeaders)

	tr, read = pipeTransport(tb)
	tr.Proxy = http.ProxyURL(&url.URL{Scheme: "http", Host: "proxy.example.test:3128"})
	req, _ = http.NewRequest("GET", "https://secure.example.test/", nil)
	connect = captureClient(tr, req, read, endOfHeaders)
	if !endOfHeaders(get) || !endOfHeaders(connect) {
		tb.Fatalf("incomplete captures: %q, %q", get, connect)
	}
	return get, connect
}

// realH2C returns the first bytes net/http's HTTP/2 client (the bundled copy of
// golang.org/x/net/http2) writes with prior knowledge over cleartext: the preface,
// then at least its SETTINGS frame.
func realH2C(tb testing.TB) []byte {
	tb.Helper()
	tr, read := pipeTransport(tb)
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	tr.Protocols = &p
	req, _ := http.NewRequest("GET", "http://h2c.example.test/", nil)
	got := captureClient(tr, req, read, func(b []byte) bool { return len(b) >= len(h2Preface)+9 })
	if len(got) < len(h2Preface)+9 {
		tb.Fatalf("h2c client wrote only %q", got)
	}
	return got
}

// serverReads returns what a crypto/tls server's GetConfigForClient sees when a client
// sends records, or nil if crypto/tls rejects the hello before that.
func serverReads(records []byte) *tls.ClientHelloInfo {
	c, s := net.Pipe()
	deadline := time.Now().Add(2 * time.Second)
	c.SetDeadline(deadline)
	s.SetDeadline(deadline)
	defer s.Close()
	go func() {
		c.Write(records)
		io.Copy(io.Discard, c) // take the alert; ends when s closes
		c.Close()
	}()
	var info *tls.ClientHelloInfo
	tls.Server(s, &tls.Config{
		GetConfigForClient: func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
			info = chi
			return nil, errors.New("captured")
		},
	}).Handshake()
	return info
}
