package lb

import (
	"fmt"
	"math"

	"github.com/cespare/xxhash/v2"
)

// DefaultMaglevSize is maglev's default table size (256 KiB, 4 bytes a slot). Maglev's
// authors advise a prime over 100 times the endpoints for little disruption: 655 here.
// Past that the table still balances to a slot, but a change to the set moves more keys
// than it must (adding one endpoint to 1000 moves 0.66% rather than 0.1%).
const DefaultMaglevSize = 65537

// maxMaglevSize bounds NewMaglev's table to 64 MiB.
const maxMaglevSize = 1 << 24

// NewMaglev returns a maglev policy with a table of size slots, a prime.
func NewMaglev(size int) (Policy, error) {
	if size < 2 || size > maxMaglevSize || !prime(size) {
		return nil, fmt.Errorf("maglev table size %d: want a prime from 2 to %d", size, maxMaglevSize)
	}
	return maglev{size: uint64(size)}, nil
}

type maglev struct{ size uint64 }

func (maglev) String() string { return "maglev" }

// Build fills the table as in the Maglev paper, with weights. Endpoints take turns, in
// address order, at taking the next empty slot in their own permutation of the table:
// offset XXH64(a) mod M, skip XXH64("skip/a") mod (M-1) + 1, a in netip.AddrPort's
// String form. Turns are paced by weight: the heaviest endpoint takes a slot every
// round, and one of weight w its k-th slot in round ⌈k·wmax/w⌉. So an endpoint gets slots
// in proportion to its weight (one whose share is under a slot may get none), and the
// table depends on the set alone. The turns come
// off a heap in order, so the fill costs O(M log n) whatever the weights.
func (m maglev) Build(eps []Endpoint) Picker {
	if len(eps) == 0 {
		return empty{}
	}
	p := &maglevPicker{eps: own(eps), table: make([]uint32, m.size)}
	var wmax uint64
	for i := range p.eps {
		wmax = max(wmax, uint64(p.eps[i].Weight))
	}
	turns := make([]turn, len(p.eps))
	var buf []byte
	for pos, i := range byAddr(p.eps) {
		t := &turns[pos]
		*t = turn{i: i, order: uint32(pos), w: uint64(p.eps[i].Weight), k: 1}
		t.round = t.due(wmax)
		buf = append(buf[:0], "skip/"...)
		buf = p.eps[i].Addr.AppendTo(buf)
		t.slot = xxhash.Sum64(buf[len("skip/"):]) % m.size
		t.skip = 1
		if m.size > 2 {
			t.skip = xxhash.Sum64(buf)%(m.size-1) + 1
		}
	}
	for k := len(turns)/2 - 1; k >= 0; k-- {
		down(turns, k)
	}
	for k := range p.table {
		p.table[k] = math.MaxUint32
	}
	for range m.size {
		t := &turns[0]
		for p.table[t.slot] != math.MaxUint32 {
			t.slot += t.skip
			if t.slot >= m.size {
				t.slot -= m.size
			}
		}
		p.table[t.slot] = t.i
		t.k++
		t.round = t.due(wmax)
		down(turns, 0)
	}
	return p
}

// turn is an endpoint's place in Maglev's fill: its k-th slot is due in round.
type turn struct {
	round, k, w, slot, skip uint64
	i, order                uint32 // the endpoint's index, and its place in address order
}

// due returns the round of the k-th slot of an endpoint of weight w: ⌈k·wmax/w⌉, below
// 2^56 for tables below 2^24.
func (t *turn) due(wmax uint64) uint64 { return (t.k*wmax + t.w - 1) / t.w }

// before reports whether turn a comes before turn b: by round, then address.
func (a *turn) before(b *turn) bool {
	return a.round < b.round || a.round == b.round && a.order < b.order
}

// down restores the heap order of turns (earliest first) below turns[k].
func down(turns []turn, k int) {
	for {
		c := 2*k + 1
		if c >= len(turns) {
			return
		}
		if c+1 < len(turns) && turns[c+1].before(&turns[c]) {
			c++
		}
		if !turns[c].before(&turns[k]) {
			return
		}
		turns[k], turns[c] = turns[c], turns[k]
		k = c
	}
}

type maglevPicker struct {
	eps   []Endpoint
	table []uint32 // endpoint indexes
}

func (p *maglevPicker) Pick(key uint64) (*Endpoint, Done) {
	return &p.eps[p.table[key%uint64(len(p.table))]], nop
}

// prime reports whether n is a prime.
func prime(n int) bool {
	if n < 2 {
		return false
	}
	for d := 2; d*d <= n; d++ {
		if n%d == 0 {
			return false
		}
	}
	return true
}
