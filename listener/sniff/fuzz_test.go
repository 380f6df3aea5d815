package sniff

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

// checkInput checks what Classify and Final promise for b alone.
func checkInput(t testing.TB, b []byte) (Result, bool) {
	t.Helper()
	orig := bytes.Clone(b)
	r, more := Classify(b)
	if !bytes.Equal(b, orig) {
		t.Fatalf("Classify modified its input % x", orig)
	}
	switch {
	case more && !same(r, Result{}):
		t.Fatalf("Classify(% x) = %#v with needMore, want the zero Result", b, r)
	case more && len(b) >= MaxPeek:
		t.Fatalf("Classify(%d bytes) needs more past MaxPeek", len(b))
	case !more && r.Proto == Unknown:
		t.Fatalf("Classify(% x) decided Unknown", b)
	case r.Proto > HTTP2:
		t.Fatalf("Classify(% x) = %#v, no such protocol", b, r)
	}
	f := Final(b)
	if f.Proto == Unknown || !more && !same(f, r) {
		t.Fatalf("Final(% x) = %#v; Classify = %#v, %v", b, f, r, more)
	}
	return r, more
}

// checkPrefixes checks b and its prefixes at cuts: once a prefix is decided,
// every longer one, b itself and b followed by tail give the same answer.
func checkPrefixes(t testing.TB, b []byte, cuts []int, tail []byte) {
	t.Helper()
	r, more := checkInput(t, b)
	for _, i := range cuts {
		if i < 0 || i > len(b) {
			continue
		}
		ri, mi := checkInput(t, b[:i])
		if !mi && (more || !same(ri, r)) {
			t.Fatalf("Classify(first %d bytes) = %#v, decided; Classify(all %d) = %#v, %v\ninput: % x", i, ri, len(b), r, more, b)
		}
	}
	if !more {
		bt := append(bytes.Clone(b), tail...)
		if rt, mt := checkInput(t, bt); mt || !same(rt, r) {
			t.Fatalf("Classify(b + % x) = %#v, %v; Classify(b) = %#v\ninput: % x", tail, rt, mt, r, b)
		}
	}
}

// someCuts returns a few cut points in [0, n], spread and jittered by seed.
func someCuts(n int, seed uint64) []int {
	cuts := []int{0, 1, 2, 4, 5, 6, 9, n / 2, n - 1}
	rng := rand.New(rand.NewPCG(seed, uint64(n)))
	for range 6 {
		cuts = append(cuts, rng.IntN(n+1))
	}
	return cuts
}

// seeds returns real and hand-made inputs for the fuzzers and the property test.
func seeds(tb testing.TB) [][]byte {
	var out [][]byte
	for _, s := range samples(tb) {
		if len(s.b) <= 4096 {
			out = append(out, s.b)
		}
	}
	for _, h := range realHellos[:3] {
		out = append(out, frame(handshakeMessage(h.records), 300), frame(handshakeMessage(h.records), 3))
	}
	return out
}

// FuzzClassify checks Classify's promises on any input: it never panics, decides a
// protocol whenever it does not need more, never needs more past MaxPeek, and keeps
// its answer as the input grows.
func FuzzClassify(f *testing.F) {
	for _, s := range seeds(f) {
		f.Add(s, []byte("\r\n"))
	}
	f.Fuzz(func(t *testing.T, b, tail []byte) {
		checkPrefixes(t, b, someCuts(len(b), uint64(len(tail))), tail)
	})
}

// FuzzClientHello puts a fuzzed handshake message into valid TLS records of a
// fuzzed size, so the fuzzer spends its time in the ClientHello parser. Besides
// Classify's promises it checks that the framing does not change what is read.
func FuzzClientHello(f *testing.F) {
	captureReal(f)
	for _, h := range realHellos[:5] {
		f.Add(handshakeMessage(h.records), uint16(maxRecordLen))
		f.Add(handshakeMessage(h.records), uint16(100))
	}
	f.Add(hello(sniExt("a.test"), alpnExt("h2", "http/1.1")), uint16(7))
	f.Add(hello(sniExt("a.test", "b.test")), uint16(1))
	f.Add(hello(), uint16(2))
	f.Fuzz(func(t *testing.T, msg []byte, size uint16) {
		if len(msg) == 0 {
			return
		}
		size = max(1, min(size, maxRecordLen))
		one := frame(msg, maxRecordLen)
		b := frame(msg, int(size))
		r1, m1 := checkInput(t, one)
		checkPrefixes(t, b, someCuts(len(b), uint64(size)), msg[:min(len(msg), 8)])
		r, more := Classify(b)
		if !more && r.Proto != TLS || !m1 && r1.Proto != TLS {
			t.Fatalf("valid records classified %#v / %#v", r, r1)
		}
		// Only a hello that fits, records and all, is read the same in any framing.
		if !more && !m1 && len(b) <= MaxPeek && len(msg) <= maxRecordLen && !same(r, r1) {
			t.Fatalf("in records of %d: %#v; in one record: %#v\nmsg: % x", size, r, r1, msg)
		}
	})
}

// TestProperties checks Classify's promises on mutations of the seeds: cut, with bytes
// flipped, inserted or deleted, glued to each other, and random, each at every cut
// point (or a sample of them for long inputs).
func TestProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	corpus := seeds(t)
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	n := 3000
	if testing.Short() {
		n = 300
	}
	for range n {
		b := bytes.Clone(corpus[rng.IntN(len(corpus))])
		for range 1 + rng.IntN(4) {
			switch rng.IntN(7) {
			case 0:
				b = b[:rng.IntN(len(b)+1)]
			case 1:
				if len(b) > 0 {
					b[rng.IntN(len(b))] ^= byte(1 << rng.IntN(8))
				}
			case 2:
				if len(b) > 0 {
					b[rng.IntN(len(b))] = byte(rng.Uint32())
				}
			case 3:
				i := rng.IntN(len(b) + 1)
				b = append(b[:i], append(random(1+rng.IntN(8)), b[i:]...)...)
			case 4:
				if len(b) > 0 {
					i := rng.IntN(len(b))
					b = append(b[:i], b[min(len(b), i+1+rng.IntN(8)):]...)
				}
			case 5:
				b = append(b, corpus[rng.IntN(len(corpus))]...)
			case 6:
				b = random(rng.IntN(200))
				if rng.IntN(2) == 0 && len(b) > 5 {
					// A valid record header and ClientHello type over random bytes.
					binary.BigEndian.PutUint16(b[3:], uint16(len(b)-5))
					b[0], b[1], b[2], b[5] = 22, 3, 1, 1
				}
			}
		}
		var cuts []int
		if len(b) <= 2048 {
			for i := range len(b) {
				cuts = append(cuts, i)
			}
		} else {
			cuts = someCuts(len(b), rng.Uint64())
		}
		checkPrefixes(t, b, cuts, random(rng.IntN(32)))
	}
}
