package listener

import (
	"io"
	"net"
	"testing"
	"time"
)

// The relay benchmarks move bytes between loopback TCP pairs, through Relay (splice),
// through RelayStreams (the user-space copy that mesh mTLS connections use, here over
// plain TCP so that only the copy loop is measured), and straight from one socket to
// the other ("direct") as the floor the other two are compared with. allocs/op is per
// relayed chunk or round trip: it must stay 0 (see alloc_test.go).

// relayKind names a way of connecting a client to a server.
type relayKind struct {
	name  string
	relay func(down, up *net.TCPConn) RelayResult // nil: no relay, the client talks to the server
}

var relayKinds = []relayKind{
	{"direct", nil},
	{"splice", func(down, up *net.TCPConn) RelayResult { return Relay(down, up, time.Minute, nil) }},
	{"streams", func(down, up *net.TCPConn) RelayResult { return RelayStreams(down, up, time.Minute, nil) }},
}

// connect returns a client and a server end joined as k says; res delivers the relay's
// result once it ends (nothing, for direct).
func (k relayKind) connect(tb testing.TB) (client, server *net.TCPConn, res <-chan RelayResult) {
	tb.Helper()
	ch := make(chan RelayResult, 1)
	if k.relay == nil {
		client, server = tcpPair(tb)
		return client, server, ch
	}
	client, down := tcpPair(tb)
	up, server := tcpPair(tb)
	go func() { ch <- k.relay(down, up) }()
	return client, server, ch
}

// BenchmarkRelayThroughput streams 64 KiB writes one way; MB/s is relayed bytes.
func BenchmarkRelayThroughput(b *testing.B) {
	const chunk = 64 << 10
	for _, k := range relayKinds {
		b.Run(k.name, func(b *testing.B) {
			client, server, _ := k.connect(b)
			buf := make([]byte, chunk)
			drained := make(chan int64, 1)
			go func() {
				// Read to EOF, which comes once the client's half-close has passed the
				// relay, so the timing includes delivering the last chunk.
				n, _ := io.CopyBuffer(io.Discard, struct{ io.Reader }{server}, make([]byte, chunk))
				drained <- n
			}()
			b.SetBytes(chunk)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := client.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			_ = client.CloseWrite()
			if got := <-drained; got != int64(b.N)*chunk {
				b.Fatalf("server got %d bytes, want %d", got, int64(b.N)*chunk)
			}
		})
	}
}

// BenchmarkRelayPingPong is one 1 KiB request and its 1 KiB answer: the latency a relay
// adds to a small RPC, where each message costs the relay a wake-up.
func BenchmarkRelayPingPong(b *testing.B) {
	const size = 1 << 10
	for _, k := range relayKinds {
		b.Run(k.name, func(b *testing.B) {
			client, server, _ := k.connect(b)
			go func() {
				buf := make([]byte, size)
				for {
					if _, err := io.ReadFull(server, buf); err != nil {
						return
					}
					if _, err := server.Write(buf); err != nil {
						return
					}
				}
			}()
			msg := make([]byte, size)
			reply := make([]byte, size)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := client.Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(client, reply); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
