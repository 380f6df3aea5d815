package lb

import (
	"math/rand/v2"
	"slices"
	"sync/atomic"
)

// maxSchedule bounds the round-robin schedule (4 bytes a slot). Weights whose sum, over
// their greatest common divisor, is larger are scaled down to fit, each to at least 1.
const maxSchedule = 1 << 16

// roundRobin is the round_robin policy.
type roundRobin struct{ src rand.Source }

func (roundRobin) String() string                    { return "round_robin" }
func (r roundRobin) withRand(src rand.Source) Policy { return roundRobin{src: src} }

func (r roundRobin) Build(eps []Endpoint) Picker {
	if len(eps) == 0 {
		return empty{}
	}
	p := &rrPicker{eps: own(eps)}
	p.sched = schedule(weights(p.eps))
	p.next.Store(uint64(below(rng{r.src}.uint64(), len(p.sched))))
	return p
}

type rrPicker struct {
	eps   []Endpoint
	sched []uint32 // endpoint indexes
	_     [64]byte // keep next, which every Pick writes, off the read-only fields' line
	next  atomic.Uint64
}

func (p *rrPicker) Pick(uint64) (*Endpoint, Done) {
	n := p.next.Add(1)
	return &p.eps[p.sched[n%uint64(len(p.sched))]], nop
}

// schedule returns a cycle in which endpoint i appears in proportion to w[i], spread out:
// the k-th appearance of i (k from 0) is due at (k+½)/w[i] of the cycle, and the slots
// go in order of due time, ties to the lower index. Equal weights give 0, 1, …, n-1.
func schedule(w []uint64) []uint32 {
	g := w[0]
	for _, x := range w[1:] {
		g = gcd(g, x)
	}
	var total uint64
	for i := range w {
		w[i] /= g
		total += w[i]
	}
	if total > maxSchedule {
		scaled := uint64(0)
		for i := range w {
			w[i] = max(1, w[i]*maxSchedule/total)
			scaled += w[i]
		}
		total = scaled
	}
	type slot struct {
		due2 uint64 // 2k+1: due at due2/(2·w)
		w    uint64
		i    uint32
	}
	slots := make([]slot, 0, total)
	for i, x := range w {
		for k := range x {
			slots = append(slots, slot{due2: 2*k + 1, w: x, i: uint32(i)})
		}
	}
	slices.SortFunc(slots, func(a, b slot) int {
		// a.due2/a.w vs b.due2/b.w; both products stay below 2^35.
		l, r := a.due2*b.w, b.due2*a.w
		switch {
		case l < r:
			return -1
		case l > r:
			return 1
		}
		return int(a.i) - int(b.i)
	})
	sched := make([]uint32, len(slots))
	for k, s := range slots {
		sched[k] = s.i
	}
	return sched
}

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}
