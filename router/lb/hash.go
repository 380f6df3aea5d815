package lb

import (
	"net/netip"

	"github.com/cespare/xxhash/v2"
)

// HashKey returns the consistent-hashing key for b (a header's or a cookie's value):
// XXH64 with seed 0, the same in every process and every XXH64 implementation, so that
// sidecars agree on where a key goes.
func HashKey(b []byte) uint64 { return xxhash.Sum64(b) }

// HashString is HashKey for a string.
func HashString(s string) uint64 { return xxhash.Sum64String(s) }

// HashAddr is HashKey of a's 16-byte form (IPv4 as ::ffff:a.b.c.d, no zone), for
// affinity on the source address.
func HashAddr(a netip.Addr) uint64 {
	b := a.As16()
	return xxhash.Sum64(b[:])
}
