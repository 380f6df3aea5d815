package sniff

import (
	"math/rand/v2"
	"testing"
)

// BenchmarkClassify measures the first read of each kind of connection, decided in
// one call as the listener's common case is.
func BenchmarkClassify(b *testing.B) {
	captureReal(b)
	garbage := make([]byte, 512)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range garbage {
		garbage[i] = byte(rng.Uint32())
	}
	garbage[0] = 0x9a // neither a tchar nor a handshake record
	for _, c := range []struct {
		name string
		b    []byte
	}{
		{"http1-get", realGet},
		{"http1-connect", realConn},
		{"http2-preface", realH2},
		{"tls-clienthello", realHellos[0].records},     // SNI + 2 ALPN, X25519MLKEM768 key share
		{"tls-clienthello-sni", realHellos[2].records}, // SNI, no ALPN
		{"tls-clienthello-3-records", frame(handshakeMessage(realHellos[0].records), 600)},
		{"tcp-garbage", garbage},
		{"tcp-ssh", []byte("SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13\r\n")},
		{"tcp-redis-inline", []byte("GET key\r\n")},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				Classify(c.b)
			}
		})
	}
}
