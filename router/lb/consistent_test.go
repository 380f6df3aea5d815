package lb

import (
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strconv"
	"testing"
)

const keys = 10_000

// hashPolicies are the consistent-hashing policies, with their defaults.
var hashPolicies = []Policy{RingHash, Maglev}

// assign returns the address each of the test keys goes to.
func assign(pk Picker) []netip.AddrPort {
	out := make([]netip.AddrPort, keys)
	for i := range out {
		ep, _ := pk.Pick(HashString("user-" + strconv.Itoa(i)))
		out[i] = ep.Addr
	}
	return out
}

// moved returns the fraction of keys whose address differs.
func moved(before, after []netip.AddrPort) (frac float64) {
	for i := range before {
		if before[i] != after[i] {
			frac++
		}
	}
	return frac / float64(len(before))
}

// TestHashSameKeySameEndpoint: a key goes to the same endpoint every time, in every
// picker built from the same set in any order (so in every sidecar).
func TestHashSameKeySameEndpoint(t *testing.T) {
	for _, p := range hashPolicies {
		eps := endpoints(1, 2, 3, 1, 1, 4)
		want := assign(p.Build(eps))
		if got := assign(p.Build(eps)); !slices.Equal(got, want) {
			t.Errorf("%v: a second picker over the same set sends keys elsewhere", p)
		}
		r := rand.New(rand.NewPCG(1, 1))
		for range 3 {
			shuffled := slices.Clone(eps)
			r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
			if got := assign(p.Build(shuffled)); !slices.Equal(got, want) {
				t.Errorf("%v: the same set in another order sends keys elsewhere", p)
			}
		}
		pk := p.Build(eps)
		for i := range 1000 {
			key := HashString("user-" + strconv.Itoa(i))
			first, _ := pk.Pick(key)
			for range 3 {
				if again, _ := pk.Pick(key); again != first {
					t.Fatalf("%v: key %d went to %v, then %v", p, i, first.Addr, again.Addr)
				}
			}
		}
	}
}

// TestHashAddEndpoint: adding a 5th endpoint to 4 moves about the new endpoint's share
// (1/5) of the keys, at most 1/5 + 5%, and nearly all of them to the new endpoint.
func TestHashAddEndpoint(t *testing.T) {
	for _, p := range hashPolicies {
		before, after := assign(p.Build(equal(4))), assign(p.Build(equal(5)))
		frac := moved(before, after)
		elsewhere := 0.0
		for i := range before {
			if before[i] != after[i] && after[i] != addr(4) {
				elsewhere++
			}
		}
		elsewhere /= keys
		t.Logf("%v: adding a 5th endpoint to 4 moved %.2f%% of keys (ideal 20%%), %.2f%% between the old 4", p, 100*frac, 100*elsewhere)
		if frac > 0.25 {
			t.Errorf("%v: adding a 5th endpoint moved %.2f%% of keys, want at most 25%%", p, 100*frac)
		}
		if frac < 0.15 {
			t.Errorf("%v: adding a 5th endpoint moved %.2f%% of keys; it should take about 20%%", p, 100*frac)
		}
		limit := 0.02 // maglev's refill moves a few keys between old endpoints
		if p == RingHash {
			limit = 0 // the old endpoints' points stay where they were
		}
		if elsewhere > limit {
			t.Errorf("%v: %.2f%% of keys moved between old endpoints, want at most %.0f%%", p, 100*elsewhere, 100*limit)
		}
	}
}

// TestHashRemoveEndpoint: removing one of 5 endpoints moves its keys and (for ring hash)
// no others; maglev moves a few others too.
func TestHashRemoveEndpoint(t *testing.T) {
	for _, p := range hashPolicies {
		eps := equal(5)
		gone := eps[2].Addr
		before := assign(p.Build(eps))
		after := assign(p.Build(slices.Delete(slices.Clone(eps), 2, 3)))
		var own, others float64
		for i := range before {
			switch {
			case before[i] == gone:
				own++
				if after[i] == gone {
					t.Fatalf("%v: key %d still goes to the removed endpoint", p, i)
				}
			case before[i] != after[i]:
				others++
			}
		}
		t.Logf("%v: removing 1 of 5 endpoints moved its %.2f%% of keys and %.2f%% of the others'", p, 100*own/keys, 100*others/keys)
		limit := 0.02
		if p == RingHash {
			limit = 0
		}
		if others/keys > limit {
			t.Errorf("%v: removing an endpoint moved %.2f%% of the keys of endpoints that stayed, want at most %.0f%%", p, 100*others/keys, 100*limit)
		}
	}
}

// TestHashWeightChange: doubling one endpoint's weight (of 4) raises its share from 1/4
// to 2/5 (±2% absolute), by keys that move to it (for ring hash, only those).
func TestHashWeightChange(t *testing.T) {
	for _, p := range hashPolicies {
		before := assign(p.Build(endpoints(1, 1, 1, 1)))
		after := assign(p.Build(endpoints(2, 1, 1, 1)))
		var share, elsewhere float64
		for i := range after {
			if after[i] == addr(0) {
				share++
			} else if after[i] != before[i] {
				elsewhere++
			}
		}
		share, elsewhere = share/keys, elsewhere/keys
		frac := moved(before, after)
		t.Logf("%v: weight 1→2 on 1 of 4: share %.2f%% (ideal 40%%), moved %.2f%% (ideal 15%%), %.2f%% not to it", p, 100*share, 100*frac, 100*elsewhere)
		if math.Abs(share-0.4) > 0.02 {
			t.Errorf("%v: share %.2f%%, want 40%% ± 2%%", p, 100*share)
		}
		limit := 0.02
		if p == RingHash {
			limit = 0
		}
		if elsewhere > limit {
			t.Errorf("%v: %.2f%% of keys moved between endpoints whose weight stayed, want at most %.0f%%", p, 100*elsewhere, 100*limit)
		}
	}
}

// TestMaglevSmallTable: a small table still fills every slot, in proportion to weights.
func TestMaglevSmallTable(t *testing.T) {
	pk := must(NewMaglev(101)).Build(endpoints(1, 2, 7)).(*maglevPicker)
	counts := make([]int, 3)
	for _, i := range pk.table {
		counts[i]++
	}
	if !slices.Equal(counts, []int{10, 20, 71}) && !slices.Equal(counts, []int{11, 20, 70}) && !slices.Equal(counts, []int{10, 21, 70}) {
		t.Errorf("table of 101 for weights 1, 2, 7: slots %v, want 10, 20, 70 and one more", counts)
	}
}

// TestRingHashCapped: past the ring's cap, weights scale down and every endpoint keeps
// a point.
func TestRingHashCapped(t *testing.T) {
	pk := must(NewRingHash(100, 1000)).Build(endpoints(1, 1, 1, 2000)).(*ringPicker)
	counts := make([]int, 4)
	for _, i := range pk.idx {
		counts[i]++
	}
	if len(pk.hashes) > 1003 || counts[0] != 1 || counts[3] < 990 {
		t.Errorf("ring of %d points, per endpoint %v; want at most 1003, 1 each for the light ones", len(pk.hashes), counts)
	}
}

// TestRingPickMatchesSearch: Pick's bucketed search finds what a search of the whole
// ring finds: the first point at or after the key, wrapping to the first point.
func TestRingPickMatchesSearch(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	for _, c := range []struct{ vnodes, max, n int }{{1, 1, 1}, {1, 2, 2}, {3, 100, 3}, {1024, 1 << 18, 7}} {
		pk := must(NewRingHash(c.vnodes, c.max)).Build(equal(c.n)).(*ringPicker)
		keys := []uint64{0, 1, math.MaxUint64, pk.hashes[0], pk.hashes[0] + 1, pk.hashes[len(pk.hashes)-1]}
		for range 10_000 {
			keys = append(keys, r.Uint64())
		}
		for _, key := range keys {
			k, _ := slices.BinarySearch(pk.hashes, key)
			if k == len(pk.hashes) {
				k = 0
			}
			if got, _ := pk.Pick(key); got != &pk.eps[pk.idx[k]] {
				t.Fatalf("ring of %d points: key %#x went to %v, want %v", len(pk.hashes), key, got.Addr, pk.eps[pk.idx[k]].Addr)
			}
		}
	}
}
