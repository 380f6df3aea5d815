package router

import (
	"encoding/hex"
	"math/rand/v2"
)

// newRequestID returns a random UUID (version 4) for x-request-id. math/rand/v2's global
// generator is per-thread and lock-free; the id needs to be unique, not secret.
func newRequestID() string {
	return string(appendRequestID(make([]byte, 0, 36)))
}

// appendRequestID appends a new request id to dst.
func appendRequestID(dst []byte) []byte {
	var b [16]byte
	hi, lo := rand.Uint64(), rand.Uint64()
	for i := 0; i < 8; i++ {
		b[i] = byte(hi >> (8 * i))
		b[8+i] = byte(lo >> (8 * i))
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return append(dst, s[:]...)
}
