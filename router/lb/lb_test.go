package lb

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// endpoints returns len(w) endpoints 10.0.0.1:8080, 10.0.0.2:8080, … with weights w.
func endpoints(w ...uint32) []Endpoint {
	eps := make([]Endpoint, len(w))
	for i := range eps {
		eps[i] = Endpoint{Addr: addr(i), Weight: w[i]}
	}
	return eps
}

// equal returns n endpoints of weight 1.
func equal(n int) []Endpoint {
	w := make([]uint32, n)
	for i := range w {
		w[i] = 1
	}
	return endpoints(w...)
}

func addr(i int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i + 1)}), 8080)
}

// seeded returns every policy, drawing from a fixed seed where it draws at all: for
// single-goroutine tests only (a PCG is not safe for concurrent use).
func seeded() []Policy {
	var out []Policy
	for i, p := range policies {
		out = append(out, WithRand(p, rand.NewPCG(uint64(i), 42)))
	}
	return out
}

func TestParse(t *testing.T) {
	for _, want := range policies {
		got, err := Parse(want.String())
		if err != nil || got != want {
			t.Errorf("Parse(%q) = %v, %v; want %v", want.String(), got, err, want)
		}
	}
	for _, bad := range []string{"", "RoundRobin", "round-robin", "least_conn", "ring_hash "} {
		if p, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) = %v, want an error", bad, p)
		} else if !strings.Contains(err.Error(), "round_robin, least_request, random, ring_hash, maglev") {
			t.Errorf("Parse(%q): error %q does not list the keywords", bad, err)
		}
	}
}

func TestNewHashPolicies(t *testing.T) {
	for _, size := range []int{2, 3, 5003, 65537} {
		if _, err := NewMaglev(size); err != nil {
			t.Errorf("NewMaglev(%d): %v", size, err)
		}
	}
	for _, size := range []int{-7, 0, 1, 4, 65536, 65535, 1<<24 + 1} {
		if _, err := NewMaglev(size); err == nil {
			t.Errorf("NewMaglev(%d): no error", size)
		}
	}
	if _, err := NewRingHash(1, 1); err != nil {
		t.Errorf("NewRingHash(1, 1): %v", err)
	}
	for _, c := range [][2]int{{0, 100}, {101, 100}, {1, 0}, {1, 1<<24 + 1}} {
		if _, err := NewRingHash(c[0], c[1]); err == nil {
			t.Errorf("NewRingHash(%d, %d): no error", c[0], c[1])
		}
	}
	for _, p := range []Policy{must(NewRingHash(8, 64)), must(NewMaglev(7))} {
		if _, err := Parse(p.String()); err != nil {
			t.Errorf("%v: String %q does not parse: %v", p, p.String(), err)
		}
	}
}

func must(p Policy, err error) Policy {
	if err != nil {
		panic(err)
	}
	return p
}

func TestEmpty(t *testing.T) {
	for _, p := range policies {
		for _, eps := range [][]Endpoint{nil, {}} {
			ep, done := p.Build(eps).Pick(1)
			if ep != nil || done == nil {
				t.Errorf("%v: Pick on no endpoints = %v, done nil %v; want nil and a Done", p, ep, done == nil)
			}
			done()
		}
	}
	if item, ok := NewWeighted([]Choice[string]{{"a", 0}, {"b", 0}}, nil).Pick(); ok {
		t.Errorf("Weighted of zero weights picked %q", item)
	}
	if _, ok := (*Weighted[int])(nil).Pick(); ok {
		t.Error("nil Weighted picked")
	}
}

// TestOneEndpoint: every policy answers the only endpoint, for every key.
func TestOneEndpoint(t *testing.T) {
	for _, p := range seeded() {
		pk := p.Build(endpoints(0))
		for k := range uint64(100) {
			ep, done := pk.Pick(k * 0x9e3779b97f4a7c15)
			if ep == nil || ep.Addr != addr(0) {
				t.Fatalf("%v: Pick = %v, want %v", p, ep, addr(0))
			}
			done()
		}
	}
}

// TestOwnCopy: a picker keeps its own copy of the endpoints, with weight 0 made 1, and
// shares the labels.
func TestOwnCopy(t *testing.T) {
	eps := []Endpoint{{Addr: addr(0), Labels: map[string]string{"version": "v1"}}}
	for _, p := range policies {
		pk := p.Build(eps)
		eps[0].Addr = addr(9)
		ep, done := pk.Pick(0)
		done()
		if ep.Addr != addr(0) || ep.Weight != 1 || ep.Labels["version"] != "v1" {
			t.Errorf("%v: Pick = %+v, want %v, weight 1, version v1", p, *ep, addr(0))
		}
		eps[0].Addr = addr(0)
	}
}

func TestHashKnownValues(t *testing.T) {
	// XXH64, seed 0: the values any implementation gives, so affinity holds across
	// sidecars and versions.
	for s, want := range map[string]uint64{
		"":    0xef46db3751d8e999,
		"a":   0xd24ec4f1a98c6e5b,
		"abc": 0x44bc2cf5ad770999,
	} {
		if got := HashString(s); got != want {
			t.Errorf("HashString(%q) = %#x, want %#x", s, got, want)
		}
		if got := HashKey([]byte(s)); got != want {
			t.Errorf("HashKey(%q) = %#x, want %#x", s, got, want)
		}
	}
	v4 := netip.MustParseAddr("192.0.2.7")
	if HashAddr(v4) != HashAddr(netip.MustParseAddr("::ffff:192.0.2.7")) {
		t.Error("HashAddr differs for an IPv4 address and its IPv4-mapped form")
	}
	if HashAddr(v4) == HashAddr(netip.MustParseAddr("192.0.2.8")) {
		t.Error("HashAddr is the same for two addresses")
	}
}

// TestAllocs: Pick (and Done) allocate nothing, for every policy.
func TestAllocs(t *testing.T) {
	for _, n := range []int{1, 10, 1000} {
		for _, p := range policies {
			pk := p.Build(endpoints(weightsUpTo(n)...))
			key := uint64(0)
			if a := testing.AllocsPerRun(1000, func() {
				key += 0x9e3779b97f4a7c15
				_, done := pk.Pick(key)
				done()
			}); a != 0 {
				t.Errorf("%v over %d endpoints: %v allocations a Pick", p, n, a)
			}
		}
	}
	w := NewWeighted([]Choice[string]{{"stable", 90}, {"canary", 10}}, nil)
	if a := testing.AllocsPerRun(1000, func() { w.Pick() }); a != 0 {
		t.Errorf("Weighted.Pick: %v allocations", a)
	}
	b, a4 := []byte("session=abc"), netip.MustParseAddr("192.0.2.1")
	if a := testing.AllocsPerRun(1000, func() { HashKey(b); HashString("user-42"); HashAddr(a4) }); a != 0 {
		t.Errorf("hashing: %v allocations", a)
	}
}

// weightsUpTo returns n weights cycling 1…5.
func weightsUpTo(n int) []uint32 {
	w := make([]uint32, n)
	for i := range w {
		w[i] = uint32(i%5 + 1)
	}
	return w
}

// TestConcurrent picks and finishes requests from many goroutines while the endpoint
// set changes under them, as the router does; run it with -race. Afterwards no request
// is left counted in flight.
func TestConcurrent(t *testing.T) {
	const goroutines, picks = 16, 2000
	sets := [][]Endpoint{endpoints(1, 2, 3, 4), endpoints(2, 2, 0, 0, 5), endpoints(1), nil, equal(20)}
	for _, p := range policies {
		t.Run(p.String(), func(t *testing.T) {
			var cur atomic.Pointer[Picker]
			first := p.Build(sets[0])
			cur.Store(&first)
			var wg sync.WaitGroup
			wg.Go(func() {
				prev := first
				for i := range 50 {
					next := Rebuild(p, prev, sets[i%len(sets)])
					cur.Store(&next)
					prev = next
				}
			})
			for g := range goroutines {
				wg.Go(func() {
					held := make([]Done, 0, 8)
					for i := range picks {
						ep, done := (*cur.Load()).Pick(uint64(g*picks + i))
						if ep != nil && ep.Weight == 0 {
							t.Errorf("picked %v with weight 0", ep.Addr)
						}
						// Keep a few requests open across rebuilds.
						if held = append(held, done); len(held) == cap(held) {
							for _, d := range held {
								d()
							}
							held = held[:0]
						}
					}
					for _, d := range held {
						d()
					}
				})
			}
			wg.Wait()
			if lr, ok := (*cur.Load()).(*lrPicker); ok {
				for i, c := range lr.active {
					if n := c.n.Load(); n != 0 {
						t.Errorf("%v: %d requests left in flight", lr.eps[i].Addr, n)
					}
				}
			}
		})
	}
}

func Example() {
	// The router builds a picker per service when it compiles a snapshot, and swaps
	// in a new one when the endpoints change.
	policy, err := Parse("ring_hash")
	if err != nil {
		panic(err)
	}
	var picker atomic.Pointer[Picker]
	p := policy.Build([]Endpoint{
		{Addr: netip.MustParseAddrPort("10.0.0.1:8080")},
		{Addr: netip.MustParseAddrPort("10.0.0.2:8080"), Weight: 2},
	})
	picker.Store(&p)

	// Per request: hash the affinity header, pick, and call done when it ends.
	ep, done := (*picker.Load()).Pick(HashString("user-42"))
	defer done()
	if ep == nil {
		fmt.Println("503: no endpoints")
		return
	}
	fmt.Println(ep.Addr)
	// Output: 10.0.0.1:8080
}
