// Package lb picks an endpoint of a service for each request or connection.
//
// A Policy builds a Picker from a service's endpoint set; the policy's keyword in config
// is its String: round_robin, least_request, random, ring_hash or maglev. A Picker is
// immutable once built. When the endpoint set changes the caller builds a new Picker
// (Rebuild keeps least request's in-flight counts) and swaps it in behind an
// atomic.Pointer: requests in flight keep the endpoint and the Done they got from the old
// Picker, so an endpoint that leaves drains while a new one takes requests at once,
// without a reload.
//
// Pick is lock-free and allocation-free for every policy.
//
// The consistent-hashing policies, ring_hash and maglev, map a 64-bit key to an
// endpoint. HashString, HashKey and HashAddr make that key from a header, a cookie or a
// source address with XXH64 (seed 0), and both policies build their tables from the
// endpoints' addresses and weights alone, in any order: every sidecar with the same
// endpoint set sends a key to the same endpoint.
package lb

import (
	"fmt"
	"math/bits"
	"math/rand/v2"
	"net/netip"
	"slices"
)

// Endpoint is one address of a service.
type Endpoint struct {
	Addr netip.AddrPort
	// Weight is the endpoint's relative share of requests (of keys, for the hash
	// policies); 0 means 1. Pickers hand out copies whose Weight is the one they used.
	Weight uint32
	// Labels are the endpoint's labels (subsets select on them). Pickers share the map
	// with the caller and never change it.
	Labels map[string]string
}

// Picker chooses an endpoint for one request or connection. Pickers are immutable once
// built, except for the in-flight counters of least_request, which are atomics; they are
// safe for concurrent use.
type Picker interface {
	// Pick returns the endpoint for a request, and the Done to call exactly once when
	// the request ends. key is the request's hash (see HashString) for ring_hash and
	// maglev; the other policies ignore it. With no endpoints Pick returns nil, which
	// the caller answers with 503. Done is never nil. The caller must not change the
	// returned Endpoint.
	Pick(key uint64) (*Endpoint, Done)
}

// Done ends a request picked by Pick. least_request counts requests in flight with it;
// for the other policies it is a shared no-op.
type Done func()

// Policy builds Pickers for one load-balancing policy.
type Policy interface {
	// String returns the policy's keyword in config.
	String() string
	// Build returns a Picker over a copy of eps. eps should hold each address once.
	Build(eps []Endpoint) Picker
}

// The policies, with their defaults. NewRingHash and NewMaglev build the hash policies
// with other table sizes; WithRand gives a policy a deterministic random source.
var (
	// RoundRobin cycles through a precomputed weighted schedule in which an endpoint of
	// weight w appears w times, spread out (earliest deadline first), starting at a
	// random place so that sidecars built at the same moment do not march in step.
	RoundRobin Policy = roundRobin{}
	// LeastRequest draws one endpoint by weight and one other at random, and takes the
	// one with fewer requests in flight per unit of weight (the first on a tie).
	LeastRequest Policy = leastRequest{}
	// Random draws an endpoint by weight.
	Random Policy = random{}
	// RingHash places DefaultVNodes points per unit of weight for each endpoint on a
	// ring of 64-bit hashes; a key goes to the first point at or after it.
	RingHash Policy = ringHash{vnodes: DefaultVNodes, maxSize: DefaultMaxRingSize}
	// Maglev fills a lookup table of DefaultMaglevSize slots (Maglev, NSDI 2016, with
	// weights); a key goes to table[key % size].
	Maglev Policy = maglev{size: DefaultMaglevSize}
)

// Parse returns the policy with the given config keyword, with its defaults.
func Parse(keyword string) (Policy, error) {
	for _, p := range policies {
		if p.String() == keyword {
			return p, nil
		}
	}
	return nil, fmt.Errorf("unknown load balancing policy %q (want one of %s)", keyword, keywords)
}

var policies = []Policy{RoundRobin, LeastRequest, Random, RingHash, Maglev}

var keywords = func() string {
	s := ""
	for i, p := range policies {
		if i > 0 {
			s += ", "
		}
		s += p.String()
	}
	return s
}()

// Rebuild is Build that keeps what prev knows about the endpoints it shares with eps:
// for least_request, the requests still in flight on an endpoint that stays keep
// counting against it. The other policies keep nothing (the hash policies are a function
// of the endpoint set alone). prev may be nil or any Picker.
func Rebuild(p Policy, prev Picker, eps []Endpoint) Picker {
	if r, ok := p.(rebuilder); ok {
		return r.rebuild(prev, eps)
	}
	return p.Build(eps)
}

type rebuilder interface {
	rebuild(prev Picker, eps []Endpoint) Picker
}

// WithRand returns p drawing its random numbers from src rather than from math/rand/v2's
// per-thread generator, for deterministic tests. src must be safe for concurrent use if
// the Pickers are used concurrently (a rand.PCG is not). Policies that draw nothing
// (ring_hash, maglev) are returned unchanged.
func WithRand(p Policy, src rand.Source) Policy {
	if r, ok := p.(randomized); ok {
		return r.withRand(src)
	}
	return p
}

type randomized interface {
	withRand(src rand.Source) Policy
}

// rng is a random source: src, or math/rand/v2's lock-free per-thread generator if nil.
type rng struct{ src rand.Source }

func (r rng) uint64() uint64 {
	if r.src == nil {
		return rand.Uint64()
	}
	return r.src.Uint64()
}

// below returns a number in [0, n) from r (Lemire's multiply-shift; the bias is n/2^64).
func below(r uint64, n int) int {
	hi, _ := bits.Mul64(r, uint64(n))
	return int(hi)
}

// nop is the Done of every policy that counts nothing.
var nop Done = func() {}

// empty is the Picker of an empty endpoint set.
type empty struct{}

func (empty) Pick(uint64) (*Endpoint, Done) { return nil, nop }

// own returns the picker's copy of eps, with weight 0 made 1.
func own(eps []Endpoint) []Endpoint {
	out := slices.Clone(eps)
	for i := range out {
		if out[i].Weight == 0 {
			out[i].Weight = 1
		}
	}
	return out
}

// weights returns the endpoints' weights, widened.
func weights(eps []Endpoint) []uint64 {
	w := make([]uint64, len(eps))
	for i := range eps {
		w[i] = uint64(eps[i].Weight)
	}
	return w
}

// Compile-time guards: every policy is a Policy, every picker a Picker.
var (
	_ Policy = roundRobin{}
	_ Policy = leastRequest{}
	_ Policy = random{}
	_ Policy = ringHash{}
	_ Policy = maglev{}

	_ Picker = empty{}
	_ Picker = (*rrPicker)(nil)
	_ Picker = (*lrPicker)(nil)
	_ Picker = (*randomPicker)(nil)
	_ Picker = (*ringPicker)(nil)
	_ Picker = (*maglevPicker)(nil)

	_ randomized = roundRobin{}
	_ randomized = leastRequest{}
	_ randomized = random{}
	_ rebuilder  = leastRequest{}
)
