package sniff

import "testing"

// finalCases are Final's inputs on the paths the listener takes: a decided first read,
// and bytes cut short by the peek deadline or a half-close. want is the most
// allocations allowed: none, except the names a TLS answer carries (Classify's doc).
func finalCases(tb testing.TB) []struct {
	name string
	b    []byte
	want float64
} {
	captureReal(tb)
	return []struct {
		name string
		b    []byte
		want float64
	}{
		{"http1-get", realGet, 0},
		{"http2-preface", realH2, 0},
		{"tls-sni-alpn", realHellos[0].records, 2}, // one string for all names, one []string
		{"tcp-opaque", []byte{0x9a, 0, 0, 8, 4, 210, 22, 47}, 0},
		{"cut-http1", []byte("GET /index.ht"), 0},
		{"cut-h2-preface", realH2[:10], 0},
		{"cut-tls", realHellos[0].records[:100], 0},
		{"empty", nil, 0},
	}
}

// TestFinalAllocs: Final costs no allocation beyond Classify's documented ones, whether
// the bytes are complete or were cut short.
func TestFinalAllocs(t *testing.T) {
	for _, c := range finalCases(t) {
		if got := testing.AllocsPerRun(100, func() { Final(c.b) }); got > c.want {
			t.Errorf("%s: %v allocations per Final, want at most %v", c.name, got, c.want)
		}
	}
}

func BenchmarkFinal(b *testing.B) {
	for _, c := range finalCases(b) {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				Final(c.b)
			}
		})
	}
}
