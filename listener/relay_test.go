package listener

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t testing.TB) (a, b *net.TCPConn) {
	t.Helper()
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ch := make(chan *net.TCPConn, 1)
	go func() {
		c, _ := ln.AcceptTCP()
		ch <- c
	}()
	a, err = net.DialTCP("tcp4", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	b = <-ch
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// relayed returns client and server ends with a Relay running between them.
func relayed(t testing.TB, idle time.Duration) (client, server *net.TCPConn, res <-chan RelayResult) {
	client, down := tcpPair(t)
	up, server := tcpPair(t)
	ch := make(chan RelayResult, 1)
	go func() { ch <- Relay(down, up, idle, nil) }()
	return client, server, ch
}

func TestRelayBytesAndHalfClose(t *testing.T) {
	client, server, res := relayed(t, time.Minute)
	payload := make([]byte, 8<<20+123)
	_, _ = rand.Read(payload)

	// The server reads to EOF (which only arrives if the client's half-close is passed
	// on), then answers with what it got, and closes.
	go func() {
		got, _ := io.ReadAll(server)
		_, _ = server.Write(got[:1000])
		_, _ = server.Write(got[len(got)-1000:])
		server.Close()
	}()
	go func() {
		_, _ = client.Write(payload)
		_ = client.CloseWrite()
	}()
	_ = client.SetReadDeadline(time.Now().Add(20 * time.Second))
	reply, err := io.ReadAll(client)
	if err != nil {
		t.Fatal(err)
	}
	want := append(append([]byte{}, payload[:1000]...), payload[len(payload)-1000:]...)
	if !bytes.Equal(reply, want) {
		t.Fatalf("reply: %d bytes, not what was sent", len(reply))
	}
	r := <-res
	if r.Err != nil || r.Received != int64(len(payload)) || r.Sent != 2000 {
		t.Errorf("result = %+v, want received %d sent 2000 no error", r, len(payload))
	}
}

func TestRelayPropagatesReset(t *testing.T) {
	client, server, res := relayed(t, time.Minute)
	_, _ = client.Write([]byte("hello"))
	buf := make([]byte, 5)
	if _, err := io.ReadFull(server, buf); err != nil {
		t.Fatal(err)
	}
	_ = server.SetLinger(0)
	server.Close() // RST
	_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := client.Read(buf)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("client read after server reset: %v, want ECONNRESET", err)
	}
	if r := <-res; r.Err == nil {
		t.Errorf("relay result has no error after a reset: %+v", r)
	}
}

func TestRelayIdleTimeout(t *testing.T) {
	client, _, res := relayed(t, 150*time.Millisecond)
	select {
	case r := <-res:
		if !errors.Is(r.Err, ErrIdle) {
			t.Errorf("err = %v, want ErrIdle", r.Err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("idle connection was not closed")
	}
	_ = client.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := client.Read(make([]byte, 1)); err == nil {
		t.Error("client connection still open after idle timeout")
	}
}

// A download with a silent request side is not idle.
func TestRelayIdleCountsBothDirections(t *testing.T) {
	idle := 200 * time.Millisecond
	client, server, res := relayed(t, idle)
	go func() {
		for i := 0; i < 10; i++ {
			if _, err := server.Write([]byte("tick")); err != nil {
				return
			}
			time.Sleep(idle / 2)
		}
		server.Close()
	}()
	_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(client)
	if err != nil || len(got) != 40 {
		t.Fatalf("got %d bytes, err %v; want 40 bytes and EOF", len(got), err)
	}
	client.Close()
	if r := <-res; errors.Is(r.Err, ErrIdle) {
		t.Errorf("busy connection timed out as idle")
	}
}

func BenchmarkRelay64KiB(b *testing.B) {
	client, server, _ := relayed(b, time.Minute)
	buf := make([]byte, 64<<10)
	rbuf := make([]byte, 64<<10)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	go func() {
		for {
			if _, err := io.ReadFull(server, rbuf); err != nil {
				return
			}
		}
	}()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := client.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
}

// A chatty exchange over one relay: messages of every size, answered at once, after a
// pause shorter than the time a direction waits before it parks, or after a longer one,
// and now and then a burst larger than the socket buffers, read slowly so that the
// relay finds its destination full. Every byte must come back in order, and no wait
// may miss bytes that arrived as it began (the exchange would stall).
func TestRelayChattyExchange(t *testing.T) {
	client, server, res := relayed(t, time.Minute)
	go func() { // echo
		buf := make([]byte, 64<<10)
		for {
			n, err := server.Read(buf)
			if n > 0 {
				if _, werr := server.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				_ = server.CloseWrite()
				return
			}
		}
	}()
	sizes := []int{1, 7, 100, 1460, 4096, 65 << 10, 3 << 20}
	pauses := []time.Duration{0, 0, 200 * time.Microsecond, 2 * parkAfter}
	var sent int64
	got := make([]byte, 3<<20)
	for i := 0; i < 120; i++ {
		msg := make([]byte, sizes[i%len(sizes)])
		_, _ = rand.Read(msg)
		time.Sleep(pauses[i%len(pauses)])
		werr := make(chan error, 1)
		go func() { _, err := client.Write(msg); werr <- err }()
		_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
		if len(msg) > 1<<20 {
			time.Sleep(20 * time.Millisecond) // let the buffers on the way fill up
		}
		if _, err := io.ReadFull(client, got[:len(msg)]); err != nil {
			t.Fatalf("message %d (%d bytes): %v", i, len(msg), err)
		}
		if err := <-werr; err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got[:len(msg)], msg) {
			t.Fatalf("message %d (%d bytes) came back changed", i, len(msg))
		}
		sent += int64(len(msg))
	}
	_ = client.CloseWrite()
	if n, err := io.Copy(io.Discard, client); n != 0 || err != nil {
		t.Fatalf("after the half-close: %d more bytes, %v", n, err)
	}
	r := <-res
	if r.Err != nil || r.Received != sent || r.Sent != sent {
		t.Errorf("result = %+v, want %d bytes each way, no error", r, sent)
	}
}
