package listener

import (
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"skiff/config"
	"skiff/listener/sniff"
	"skiff/telemetry"
)

func testServer(t *testing.T) *Server {
	cfg := config.Default()
	cfg.Sniff.Timeout = 300 * time.Millisecond
	s, err := NewServer(&cfg, zerolog.Nop(), telemetry.NewMetrics())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.local.Stop() })
	return s
}

// upstream returns a dial func to a fresh server conn, and the server's end.
func upstream(t *testing.T) (dial func() (net.Conn, error), server <-chan *net.TCPConn) {
	ch := make(chan *net.TCPConn, 1)
	return func() (net.Conn, error) {
		a, b := tcpPair(t)
		ch <- b
		return a, nil
	}, ch
}

func TestSniffClientFirstHTTP(t *testing.T) {
	s := testServer(t)
	client, down := tcpPair(t)
	req := "GET /x HTTP/1.1\r\nHost: a\r\n\r\n"
	_, _ = client.Write([]byte(req))
	dial, _ := upstream(t)
	start := time.Now()
	r, err := s.sniffConn(down, dial)
	if err != nil {
		t.Fatal(err)
	}
	if r.res.Proto != sniff.HTTP1 || string(r.head()) != req || r.up != nil {
		t.Errorf("got proto %v head %q up %v", r.res.Proto, r.head(), r.up)
	}
	if d := time.Since(start); d > s.cfg.Sniff.ServerFirstWait {
		t.Errorf("client-first sniffing waited %v", d)
	}
}

func TestSniffTLSHelloInPieces(t *testing.T) {
	s := testServer(t)
	client, down := tcpPair(t)
	// Capture a real ClientHello.
	hello := make(chan []byte, 1)
	a, b := net.Pipe()
	go func() {
		buf := make([]byte, 4096)
		n, _ := b.Read(buf)
		hello <- buf[:n]
		b.Close()
	}()
	go func() {
		_ = tls.Client(a, &tls.Config{ServerName: "api.example", NextProtos: []string{"h2"}}).Handshake()
	}()
	h := <-hello
	go func() {
		_, _ = client.Write(h[:7])
		time.Sleep(50 * time.Millisecond)
		_, _ = client.Write(h[7:])
	}()
	dial, _ := upstream(t)
	r, err := s.sniffConn(down, dial)
	if err != nil {
		t.Fatal(err)
	}
	if r.res.Proto != sniff.TLS || r.res.SNI != "api.example" || string(r.head()) != string(h) {
		t.Errorf("got %+v, head %d bytes of %d", r.res, r.n, len(h))
	}
}

func TestSniffServerFirst(t *testing.T) {
	s := testServer(t)
	_, down := tcpPair(t)
	dial, servers := upstream(t)
	go func() {
		srv := <-servers
		_, _ = srv.Write([]byte("220 mail ESMTP\r\n"))
	}()
	start := time.Now()
	r, err := s.sniffConn(down, dial)
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	if r.res.Proto != sniff.TCP || string(r.hello) != "220 mail ESMTP\r\n" || r.up == nil {
		t.Errorf("got proto %v hello %q up %v", r.res.Proto, r.hello, r.up)
	}
	if took > 10*s.cfg.Sniff.ServerFirstWait {
		t.Errorf("greeting took %v to be seen", took)
	}
	t.Logf("server-first greeting decided after %v", took)
}

// A client that is slow to speak is still sniffed: the dialled upstream is kept for it.
func TestSniffSlowClient(t *testing.T) {
	s := testServer(t)
	client, down := tcpPair(t)
	dial, _ := upstream(t)
	go func() {
		time.Sleep(100 * time.Millisecond)
		_, _ = client.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
	}()
	r, err := s.sniffConn(down, dial)
	if err != nil {
		t.Fatal(err)
	}
	if r.res.Proto != sniff.HTTP2 || r.up == nil {
		t.Errorf("got proto %v up %v", r.res.Proto, r.up)
	}
}

// A first message that stops half way is relayed opaque after sniff.timeout, bytes kept.
func TestSniffStalledPrefix(t *testing.T) {
	s := testServer(t)
	client, down := tcpPair(t)
	_, _ = client.Write([]byte("GET /only-part"))
	dial, _ := upstream(t)
	start := time.Now()
	r, err := s.sniffConn(down, dial)
	if err != nil {
		t.Fatal(err)
	}
	if r.res.Proto != sniff.TCP || string(r.head()) != "GET /only-part" {
		t.Errorf("got proto %v head %q", r.res.Proto, r.head())
	}
	if d := time.Since(start); d < s.cfg.Sniff.Timeout || d > s.cfg.Sniff.Timeout+2*time.Second {
		t.Errorf("stalled prefix decided after %v, want about %v", d, s.cfg.Sniff.Timeout)
	}
}

func TestSniffClientClosesSilently(t *testing.T) {
	s := testServer(t)
	client, down := tcpPair(t)
	client.Close()
	dial, _ := upstream(t)
	r, err := s.sniffConn(down, dial)
	if err != nil {
		t.Fatal(err)
	}
	if r.res.Proto != sniff.TCP || r.n != 0 {
		t.Errorf("got %+v n=%d", r.res, r.n)
	}
	if r.up != nil {
		r.up.Close()
	}
}
