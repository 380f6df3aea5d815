package lb

import (
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
)

// TestDistribution: over 100k picks (100k distinct keys for the hash policies) each
// endpoint's share is its weight's share within ±2% absolute. For the random policies
// one standard deviation of a share p is sqrt(p(1-p)/n) ≤ 0.16%, so ±2% is over 12σ;
// the margin is for the hash policies, whose shares are fixed by their tables: a ring
// hash endpoint of weight 1 has 1024 points, σ ≈ 3% of its share (±0.8% of 25%).
func TestDistribution(t *testing.T) {
	const picks, tolerance = 100_000, 0.02
	for _, w := range [][]uint32{{1, 2, 7}, {1, 1, 1, 1}, {3, 0, 5, 2, 10}} {
		for _, p := range seeded() {
			shares := share(p.Build(endpoints(w...)), len(w), picks)
			var total float64
			for _, x := range w {
				total += float64(max(x, 1))
			}
			for i, x := range w {
				want := float64(max(x, 1)) / total
				if math.Abs(shares[i]-want) > tolerance {
					t.Errorf("%v, weights %v: endpoint %d has %.4f of picks, want %.4f ± %.2f", p, w, i, shares[i], want, tolerance)
				}
			}
			t.Logf("%-13s weights %v: shares %.4f", p, w, shares)
		}
	}
}

// share returns each of the n endpoints' share of picks, with keys spread by a hash.
func share(pk Picker, n, picks int) []float64 {
	counts := make([]float64, n)
	for i := range picks {
		ep, done := pk.Pick(HashString("key-" + strconv.Itoa(i)))
		done()
		counts[index(ep)]++
	}
	for i := range counts {
		counts[i] /= float64(picks)
	}
	return counts
}

// index returns the position of ep in endpoints(…).
func index(ep *Endpoint) int {
	b := ep.Addr.Addr().As4()
	return int(b[2])<<8 | int(b[3]) - 1
}

// TestRoundRobinExact: every stretch of one cycle holds each endpoint exactly its weight
// (over the weights' greatest common divisor) times, and equal weights go in turn.
func TestRoundRobinExact(t *testing.T) {
	for _, w := range [][]uint32{{1, 2, 7}, {5, 1, 1}, {4, 4, 4}, {1}, {0, 3}, {6, 9, 3}} {
		pk := WithRand(RoundRobin, rand.NewPCG(1, 2)).Build(endpoints(w...))
		cycle := len(pk.(*rrPicker).sched)
		g := uint32(0)
		for _, x := range w {
			g = uint32(gcd(uint64(g), uint64(max(x, 1))))
		}
		seq := make([]int, 3*cycle)
		for i := range seq {
			ep, _ := pk.Pick(0)
			seq[i] = index(ep)
		}
		for start := range 2 * cycle {
			counts := make([]uint32, len(w))
			for _, i := range seq[start : start+cycle] {
				counts[i]++
			}
			for i, x := range w {
				if want := max(x, 1) / g; counts[i] != want {
					t.Fatalf("weights %v, picks %v: endpoint %d picked %d times in cycle from %d, want %d", w, seq, i, counts[i], start, want)
				}
			}
		}
	}
	// Equal weights: strict turns; 5,1,1 spread: the heavy one never waits long.
	pk := RoundRobin.Build(equal(4))
	first, _ := pk.Pick(0)
	for i := 1; i < 12; i++ {
		ep, _ := pk.Pick(0)
		if want := (index(first) + i) % 4; index(ep) != want {
			t.Fatalf("pick %d: endpoint %d, want %d", i, index(ep), want)
		}
	}
	if got, want := schedule([]uint64{5, 1, 1}), []uint32{0, 0, 0, 1, 2, 0, 0}; !slices.Equal(got, want) {
		t.Errorf("schedule(5, 1, 1) = %v, want %v", got, want)
	}
}

// TestRoundRobinScaled: weights too fine for the schedule are scaled down to it and
// keep their shares.
func TestRoundRobinScaled(t *testing.T) {
	w := []uint64{1_000_000, 3_000_001, 7}
	sched := schedule(slices.Clone(w))
	if len(sched) > maxSchedule+len(w) {
		t.Fatalf("schedule of %d slots, want at most %d", len(sched), maxSchedule+len(w))
	}
	counts := make([]int, len(w))
	for _, i := range sched {
		counts[i]++
	}
	if counts[2] != 1 || math.Abs(float64(counts[1])/float64(counts[0])-3) > 0.001 {
		t.Errorf("counts %v over %d slots, want 1:3 and 1 slot for the lightest", counts, len(sched))
	}
}

// TestLeastRequestAvoidsLoaded: with a request held open on one endpoint, new requests
// go to the others (which finish theirs at once); when it ends, the endpoint takes its
// turn again.
func TestLeastRequestAvoidsLoaded(t *testing.T) {
	pk := WithRand(LeastRequest, rand.NewPCG(3, 4)).Build(equal(3))
	held := holdOne(t, pk, 0)
	for range 10_000 {
		ep, done := pk.Pick(0)
		if index(ep) == 0 {
			t.Fatal("picked endpoint 0, which has a request in flight while the others have none")
		}
		done()
	}
	held()
	if got := share(pk, 3, 30_000); got[0] < 0.3 {
		t.Errorf("endpoint 0 had %.3f of picks once idle again, want ⅓", got[0])
	}
}

// holdOne picks until endpoint i comes up, ends every other request at once, and
// returns the Done of i's.
func holdOne(t *testing.T, pk Picker, i int) Done {
	for range 1000 {
		ep, done := pk.Pick(0)
		if index(ep) == i {
			return done
		}
		done()
	}
	t.Fatalf("endpoint %d not picked in 1000 picks", i)
	return nil
}

// TestLeastRequestSteadyState: with every request held open, in-flight counts follow the
// weights (each endpoint within one request per unit of weight of the others).
func TestLeastRequestSteadyState(t *testing.T) {
	w := []uint32{1, 2, 7}
	pk := WithRand(LeastRequest, rand.NewPCG(5, 6)).Build(endpoints(w...)).(*lrPicker)
	for range 1000 {
		pk.Pick(0)
	}
	for i := range w {
		perWeight := float64(pk.active[i].n.Load()) / float64(w[i])
		if want := 100.0; math.Abs(perWeight-want) > 1 {
			t.Errorf("endpoint %d (weight %d): %.2f in flight per unit of weight, want %.0f ± 1", i, w[i], perWeight, want)
		}
	}
}

// TestRebuildKeepsLoad: a rebuilt least-request picker still counts the requests in
// flight on the endpoints it keeps, and their Dones, from the old picker, count down.
func TestRebuildKeepsLoad(t *testing.T) {
	lr := WithRand(LeastRequest, rand.NewPCG(7, 8))
	old := lr.Build(equal(2))
	held := holdOne(t, old, 0)
	// Endpoint 1 leaves, endpoint 2 joins; endpoint 0 keeps its request.
	next := Rebuild(lr, old, []Endpoint{{Addr: addr(0)}, {Addr: addr(2)}})
	for range 100 {
		ep, done := next.Pick(0)
		if index(ep) == 0 {
			t.Fatal("picked endpoint 0, which still has a request in flight")
		}
		done()
	}
	held()
	if n := next.(*lrPicker).active[0].n.Load(); n != 0 {
		t.Errorf("endpoint 0 has %d in flight after its request ended, want 0", n)
	}
	// Without prev nothing carries over, and other policies rebuild as Build.
	old.Pick(0)
	if n := Rebuild(lr, nil, equal(2)).(*lrPicker).active[0].n.Load(); n != 0 {
		t.Errorf("fresh picker starts with %d in flight", n)
	}
	if _, ok := Rebuild(Maglev, old, equal(2)).(*maglevPicker); !ok {
		t.Error("Rebuild(Maglev, …) did not build a maglev picker")
	}
}

// TestWeightedSplit: a 90/10 split over 10k picks lands within ±1.5%: one standard
// deviation of the 10% share is sqrt(0.1·0.9/10000) = 0.3%, so the bound is 5σ (4σ is
// 1.2%).
func TestWeightedSplit(t *testing.T) {
	const picks, tolerance = 10_000, 0.015
	for seed := range uint64(5) {
		w := NewWeighted([]Choice[string]{{"stable", 90}, {"canary", 10}, {"off", 0}}, rand.NewPCG(seed, 99))
		counts := map[string]int{}
		for range picks {
			item, ok := w.Pick()
			if !ok {
				t.Fatal("Pick reported no item")
			}
			counts[item]++
		}
		if got := float64(counts["canary"]) / picks; math.Abs(got-0.1) > tolerance || counts["off"] != 0 {
			t.Errorf("seed %d: %v over %d picks, want canary 10%% ± 1.5%% and off never", seed, counts, picks)
		}
	}
}

// TestAliasExact: the alias table's probabilities are the weights' shares, to 2^-64,
// whatever the weights.
func TestAliasExact(t *testing.T) {
	for _, w := range [][]uint64{{1}, {1, 2, 7}, {1, 1 << 32, 3}, {5, 5, 5, 5, 5}, {1<<32 - 1, 1, 1, 1}} {
		a := newAlias(w)
		var total float64
		for _, x := range w {
			total += float64(x)
		}
		got := make([]float64, len(w))
		n := float64(len(w))
		for col := range a.keep {
			keep := float64(a.keep[col]) / (1 << 64)
			got[col] += keep / n
			got[a.other[col]] += (1 - keep) / n
		}
		for i, x := range w {
			if want := float64(x) / total; math.Abs(got[i]-want) > 1e-12 {
				t.Errorf("weights %v: item %d has probability %g, want %g", w, i, got[i], want)
			}
		}
	}
}
