package lb

import (
	"math/bits"
	"math/rand/v2"
	"net/netip"
	"sync/atomic"
)

// leastRequest is the least_request policy: power of two choices, with weights.
//
// The first candidate is drawn by weight, the second uniformly among the others, and the
// one with fewer requests in flight per unit of weight wins, the first on a tie. So an
// idle service is spread exactly by weight; under load the comparison pulls every
// endpoint toward the same load per unit of weight, the spread that weights ask for; and
// with two or more endpoints the candidates always differ, so a loaded endpoint loses to
// any less loaded one. (Scoring weight/(active+1) instead would send every idle
// comparison to the heavier candidate: weights 1, 2, 7 would get 0%, 33%, 67% of an idle
// service, not 10%, 20%, 70%.)
type leastRequest struct{ src rand.Source }

func (leastRequest) String() string                    { return "least_request" }
func (l leastRequest) withRand(src rand.Source) Policy { return leastRequest{src: src} }

func (l leastRequest) Build(eps []Endpoint) Picker { return l.rebuild(nil, eps) }

// rebuild shares prev's in-flight counter for every address that stays.
func (l leastRequest) rebuild(prev Picker, eps []Endpoint) Picker {
	if len(eps) == 0 {
		return empty{}
	}
	var old map[netip.AddrPort]*counter
	if pp, ok := prev.(*lrPicker); ok && pp != nil {
		old = make(map[netip.AddrPort]*counter, len(pp.eps))
		for i := range pp.eps {
			old[pp.eps[i].Addr] = pp.active[i]
		}
	}
	p := &lrPicker{eps: own(eps), rng: rng{l.src}}
	p.alias = newAlias(weights(p.eps))
	p.active = make([]*counter, len(p.eps))
	p.done = make([]Done, len(p.eps))
	for i := range p.eps {
		c := old[p.eps[i].Addr]
		if c == nil {
			c = new(counter)
		}
		p.active[i] = c
		p.done[i] = func() { c.n.Add(-1) }
	}
	return p
}

// counter counts one endpoint's requests in flight, alone on its cache line.
type counter struct {
	n atomic.Int64
	_ [56]byte
}

type lrPicker struct {
	eps    []Endpoint
	alias  alias
	active []*counter
	done   []Done // done[i] decrements active[i]; built once so Pick allocates nothing
	rng    rng
}

func (p *lrPicker) Pick(uint64) (*Endpoint, Done) {
	a := p.alias.pick(p.rng.uint64())
	if n := len(p.eps); n > 1 {
		b := below(p.rng.uint64(), n-1)
		if b >= a {
			b++
		}
		if p.busier(a, b) {
			a = b
		}
	}
	p.active[a].n.Add(1)
	return &p.eps[a], p.done[a]
}

// busier reports whether endpoint a has more requests in flight per unit of weight than
// endpoint b: active[a]/w[a] > active[b]/w[b], compared exactly in 128 bits.
func (p *lrPicker) busier(a, b int) bool {
	ah, al := bits.Mul64(p.inFlight(a), uint64(p.eps[b].Weight))
	bh, bl := bits.Mul64(p.inFlight(b), uint64(p.eps[a].Weight))
	return ah > bh || ah == bh && al > bl
}

// inFlight returns endpoint i's requests in flight; a Done called twice cannot make it
// look less than idle.
func (p *lrPicker) inFlight(i int) uint64 {
	return uint64(max(0, p.active[i].n.Load()))
}
