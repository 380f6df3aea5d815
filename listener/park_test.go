package listener

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"skiff/config"
	"skiff/telemetry"
)

// waitParked waits until the relay's directions dirs have parked (on Linux; elsewhere
// directions keep their goroutines and it only gives them time to reach their wait).
func waitParked(t *testing.T, r *relay, dirs ...int) {
	t.Helper()
	if runtime.GOOS != "linux" {
		time.Sleep(50 * time.Millisecond)
		return
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, i := range dirs {
		for !r.dirs[i].parked() {
			if time.Now().After(deadline) {
				t.Fatalf("direction %d did not park", i)
			}
			time.Sleep(time.Millisecond)
		}
	}
}

// startRelay starts a relay between two loopback pairs, as the Server does.
func startRelay(t *testing.T) (client, server *net.TCPConn, r *relay, res <-chan RelayResult) {
	client, down := tcpPair(t)
	up, server := tcpPair(t)
	ch := make(chan RelayResult, 1)
	r = &relay{}
	r.init(down, up, time.Minute, &relayWaiter{done: ch})
	r.spawn()
	return client, server, r, ch
}

// A relay whose directions parked carries bytes both ways again, passes the half-closes
// on, and counts every byte.
func TestRelayParkedCarriesOn(t *testing.T) {
	client, server, r, res := startRelay(t)
	base := runtime.NumGoroutine()
	msg, got := []byte("hello"), make([]byte, 5)
	for i := range 3 {
		waitParked(t, r, 0, 1)
		if runtime.GOOS == "linux" && runtime.NumGoroutine() >= base {
			t.Fatalf("%d goroutines with the relay parked, %d before", runtime.NumGoroutine(), base)
		}
		from, to := client, server
		if i%2 == 1 {
			from, to = server, client
		}
		if _, err := from.Write(msg); err != nil {
			t.Fatal(err)
		}
		_ = to.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(to, got); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("round %d: read %q, %v", i, got, err)
		}
	}
	waitParked(t, r, 0, 1)
	// Half-close from the client while parked: the server sees EOF and still answers.
	_ = client.CloseWrite()
	_ = server.SetReadDeadline(time.Now().Add(5 * time.Second))
	if b, err := io.ReadAll(server); err != nil || len(b) != 0 {
		t.Fatalf("server read after the client's half-close: %q, %v", b, err)
	}
	waitParked(t, r, 1)
	if _, err := server.Write([]byte("bye")); err != nil {
		t.Fatal(err)
	}
	_ = server.CloseWrite()
	_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if b, err := io.ReadAll(client); err != nil || string(b) != "bye" {
		t.Fatalf("client read %q, %v; want the answer and EOF", b, err)
	}
	if r := <-res; r.Err != nil || r.Received != 10 || r.Sent != 8 {
		t.Errorf("result %+v, want received 10, sent 8, no error", r)
	}
}

// A reset reaches the other side from a parked relay too.
func TestRelayParkedPropagatesReset(t *testing.T) {
	client, server, r, res := startRelay(t)
	waitParked(t, r, 0, 1)
	_ = server.SetLinger(0)
	_ = server.Close()
	_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := client.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("client read after the server's reset: %v, want ECONNRESET", err)
	}
	if r := <-res; r.Err == nil {
		t.Errorf("relay result has no error after a reset: %+v", r)
	}
}

// A parked relay is closed once idle for the idle timeout, not before.
func TestRelayParkedIdleTimeout(t *testing.T) {
	client, down := tcpPair(t)
	up, _ := tcpPair(t)
	ch := make(chan RelayResult, 1)
	r := &relay{}
	idle := 300 * time.Millisecond
	start := time.Now()
	r.init(down, up, idle, &relayWaiter{done: ch})
	r.spawn()
	waitParked(t, r, 0, 1)
	select {
	case res := <-ch:
		if d := time.Since(start); !errors.Is(res.Err, ErrIdle) || d < idle {
			t.Errorf("ended after %v with %v, want ErrIdle after %v", d, res.Err, idle)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("parked idle relay was not closed")
	}
	_ = client.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := client.Read(make([]byte, 1)); err == nil {
		t.Error("client connection still open after the idle timeout")
	}
}

// The drain deadline resets relays whose directions are parked, and Shutdown returns.
func TestShutdownCutsParkedRelays(t *testing.T) {
	s := plainServer(t, "")
	app := echoApp(t)
	proxy := relayPort(t, s, app)
	client, err := net.DialTCP("tcp4", nil, net.TCPAddrFromAddrPort(proxy))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if _, err := client.Write([]byte("ping\n")); err != nil {
		t.Fatal(err)
	}
	_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(client, make([]byte, 5)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // for the relay's directions to park
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	done := make(chan struct{})
	go func() { s.Shutdown(ctx); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return: a parked relay was not cut")
	}
	if _, err := client.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("client read after the drain deadline: %v, want ECONNRESET", err)
	}
}

// The line a relay writes when it closes carries the connection's fields as the lines
// written with the connection's logger do, in the same order, although the relay does
// not keep that logger.
func TestRelayClosingLogLine(t *testing.T) {
	old := zerolog.GlobalLevel()
	zerolog.SetGlobalLevel(zerolog.DebugLevel)
	t.Cleanup(func() { zerolog.SetGlobalLevel(old) })
	var out syncBuffer
	cfg := config.Default()
	cfg.Proxy.IdleTimeout = 200 * time.Millisecond
	s, err := NewServer(&cfg, zerolog.New(&out).With().Timestamp().Logger(), telemetry.NewMetrics())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		s.Shutdown(ctx)
	})
	app := echoApp(t)
	proxy := relayPort(t, s, app)

	for _, tc := range []struct {
		name  string
		first []byte
		idle  bool   // left open until the idle timeout closes it
		want  string // what the context of the relay's lines must have
		event string // how the closing line's own fields start
	}{
		{"tcp", []byte("ping\n"), false, `"orig_dst":"` + app.String() + `"`, `"proto":"tcp",`},
		{"tls", clientHello(t, "api.example"), false, `"sni":"api.example"`, `"proto":"tls",`},
		{"idle", []byte("ping\n"), true, `"orig_dst":"` + app.String() + `"`, `"close_reason":"idle timeout","proto":"tcp",`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out.Reset()
			c, err := net.DialTCP("tcp4", nil, net.TCPAddrFromAddrPort(proxy))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write(tc.first); err != nil {
				t.Fatal(err)
			}
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.ReadFull(c, make([]byte, len(tc.first))); err != nil {
				t.Fatal(err)
			}
			if !tc.idle {
				_ = c.CloseWrite()
			}
			_, _ = io.ReadAll(c)
			// The connection's context: what follows the level, up to the event's fields.
			ctx := func(line string) string {
				_, rest, _ := strings.Cut(line, `"level":`)
				_, rest, _ = strings.Cut(rest, ",")
				return rest
			}
			relaying := ctx(out.waitLine(t, `"message":"relaying"`))
			connFields, _, ok := strings.Cut(relaying, `"proto":`)
			if !ok || !strings.Contains(connFields, tc.want) || !strings.Contains(connFields, `"conn_id":`) {
				t.Fatalf("relaying line %s: want %s and the connection's fields", relaying, tc.want)
			}
			if closed := ctx(out.waitLine(t, `"message":"connection closed"`)); !strings.HasPrefix(closed, connFields+tc.event) {
				t.Errorf("closing line\n%s\nwant it to start with\n%s", closed, connFields+tc.event)
			}
		})
	}
}

// relayPort accepts on loopback and hands every connection to s as an outbound one to
// dst, as Serve and handle do once handle has the original destination.
func relayPort(t *testing.T, s *Server, dst netip.AddrPort) netip.AddrPort {
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.AcceptTCP()
			if err != nil {
				return
			}
			if !s.begin() { // as Serve does
				_ = c.Close()
				return
			}
			go func() {
				defer s.active.Done()
				s.handleTo(c, Outbound, s.connID.Add(1), dst)
			}()
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String())
}

// echoApp echoes whatever it reads, and closes once the client has.
func echoApp(t *testing.T) netip.AddrPort {
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.AcceptTCP()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String())
}

// clientHello returns a real TLS ClientHello for serverName.
func clientHello(t *testing.T, serverName string) []byte {
	a, b := net.Pipe()
	defer a.Close()
	go func() {
		_ = tls.Client(a, &tls.Config{ServerName: serverName}).Handshake()
	}()
	buf := make([]byte, 4096)
	_ = b.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := b.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	return buf[:n]
}

// syncBuffer is a log destination that tests read while the server writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) Reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Reset()
}

// waitLine returns the first line that contains s, waiting for it for a while.
func (b *syncBuffer) waitLine(t *testing.T, s string) string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		b.mu.Lock()
		text := b.buf.String()
		b.mu.Unlock()
		for l := range strings.Lines(text) {
			if strings.Contains(l, s) {
				return strings.TrimSpace(l)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log line with %s in:\n%s", s, text)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
