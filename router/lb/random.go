package lb

import (
	"math"
	"math/bits"
	"math/rand/v2"
)

// random is the random policy.
type random struct{ src rand.Source }

func (random) String() string                    { return "random" }
func (r random) withRand(src rand.Source) Policy { return random{src: src} }

func (r random) Build(eps []Endpoint) Picker {
	if len(eps) == 0 {
		return empty{}
	}
	p := &randomPicker{eps: own(eps), rng: rng{r.src}}
	p.alias = newAlias(weights(p.eps))
	return p
}

type randomPicker struct {
	eps   []Endpoint
	alias alias
	rng   rng
}

func (p *randomPicker) Pick(uint64) (*Endpoint, Done) {
	return &p.eps[p.alias.pick(p.rng.uint64())], nop
}

// alias is Vose's alias table: a weighted choice among n items in O(1) from one 64-bit
// random number, whose high part (of r×n) picks a column and whose low part tosses the
// column's biased coin.
type alias struct {
	keep  []uint64 // column i answers i if the coin < keep[i], else other[i]
	other []uint32
}

// newAlias builds the table for weights w, none 0, at least one. The arithmetic is
// exact: n·w[i] and the total fit in 64 bits for uint32 weights and n < 2^31.
func newAlias(w []uint64) alias {
	n := uint64(len(w))
	a := alias{keep: make([]uint64, n), other: make([]uint32, n)}
	var total uint64
	for _, x := range w {
		total += x
	}
	// Each column holds total units; item i brings n·w[i] of them.
	scaled := make([]uint64, n)
	var small, large []uint32
	for i, x := range w {
		scaled[i] = x * n
		if scaled[i] < total {
			small = append(small, uint32(i))
		} else {
			large = append(large, uint32(i))
		}
	}
	for len(small) > 0 && len(large) > 0 {
		s := small[len(small)-1]
		small = small[:len(small)-1]
		l := large[len(large)-1]
		// Column s keeps scaled[s]/total of its draws and gives the rest to l.
		a.keep[s], _ = bits.Div64(scaled[s], 0, total)
		a.other[s] = l
		scaled[l] -= total - scaled[s]
		if scaled[l] < total {
			large = large[:len(large)-1]
			small = append(small, l)
		}
	}
	// What is left holds exactly total units per column.
	for _, i := range append(small, large...) {
		a.keep[i] = math.MaxUint64
		a.other[i] = i
	}
	return a
}

func (a *alias) pick(r uint64) int {
	col, coin := bits.Mul64(r, uint64(len(a.keep)))
	if coin < a.keep[col] {
		return int(col)
	}
	return int(a.other[col])
}

// Choice is an item and its weight for Weighted.
type Choice[T any] struct {
	Item   T
	Weight uint32 // 0 means never
}

// Weighted picks items at random in proportion to their weights: the router's split of
// a route's traffic over destinations (a 90/10 canary). Unlike an Endpoint's, a weight of
// 0 here means the item is never picked. It is immutable and safe for concurrent use.
type Weighted[T any] struct {
	items []T
	alias alias
	rng   rng
}

// NewWeighted returns a Weighted over choices, drawing from src, or from math/rand/v2's
// per-thread generator if src is nil (see WithRand for when src must be concurrent-safe).
func NewWeighted[T any](choices []Choice[T], src rand.Source) *Weighted[T] {
	w := &Weighted[T]{rng: rng{src}}
	var ws []uint64
	for _, c := range choices {
		if c.Weight > 0 {
			w.items = append(w.items, c.Item)
			ws = append(ws, uint64(c.Weight))
		}
	}
	if len(ws) > 0 {
		w.alias = newAlias(ws)
	}
	return w
}

// Pick returns an item, or false if no item has a weight above 0.
func (w *Weighted[T]) Pick() (T, bool) {
	if w == nil || len(w.items) == 0 {
		var zero T
		return zero, false
	}
	return w.items[w.alias.pick(w.rng.uint64())], true
}
