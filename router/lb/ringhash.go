package lb

import (
	"cmp"
	"fmt"
	"math/bits"
	"slices"

	"github.com/cespare/xxhash/v2"
)

// Ring hash defaults.
const (
	// DefaultVNodes is ring_hash's points per unit of weight. An endpoint's share of the
	// ring is off its weight's share by about 1/sqrt(points) (one standard deviation):
	// ±3% for weight 1.
	DefaultVNodes = 1024
	// DefaultMaxRingSize caps the ring at 4 MiB (12 bytes a point, and 4 a bucket of
	// the index Pick uses): past 256 units of weight (256 endpoints of weight 1) the
	// points per unit of weight shrink.
	DefaultMaxRingSize = 1 << 18

	// maxRingSize bounds NewRingHash's ring to 256 MiB.
	maxRingSize = 1 << 24
)

// NewRingHash returns a ring_hash policy with vnodes points per unit of weight and at
// most maxSize points (each endpoint keeps at least one).
//
// The points per unit of weight are fixed rather than derived from the set (as a
// minimum ring size would be), so that adding or removing an endpoint leaves every other
// endpoint's points where they were and moves only the keys that must move: with a ring
// size fixed instead, adding a 5th endpoint to 4 would take a fifth of the others'
// points away too, and move their keys among them. Past maxSize the points are scaled
// down to fit, each endpoint keeping at least one; a change of one endpoint in n then
// rescales the others by about 1/n, which moves about that fraction of keys more.
func NewRingHash(vnodes, maxSize int) (Policy, error) {
	if maxSize < 1 || maxSize > maxRingSize || vnodes < 1 || vnodes > maxSize {
		return nil, fmt.Errorf("ring hash: want 1 ≤ points per weight (%d) ≤ ring size (%d) ≤ %d", vnodes, maxSize, maxRingSize)
	}
	return ringHash{vnodes: uint64(vnodes), maxSize: uint64(maxSize)}, nil
}

type ringHash struct{ vnodes, maxSize uint64 }

func (ringHash) String() string { return "ring_hash" }

// Build places the points of the endpoint at address a (a in netip.AddrPort's String
// form) at the first outputs of SplitMix64 seeded with XXH64(a). Points that collide
// order by address.
func (r ringHash) Build(eps []Endpoint) Picker {
	if len(eps) == 0 {
		return empty{}
	}
	p := &ringPicker{eps: own(eps)}
	w := weights(p.eps)
	var total uint64
	for _, x := range w {
		total += x
	}
	if total > r.maxSize/r.vnodes {
		for i := range w {
			w[i] = max(1, w[i]*r.maxSize/total)
		}
	} else {
		for i := range w {
			w[i] *= r.vnodes
		}
	}
	var n uint64
	for _, x := range w {
		n += x
	}
	points := make([]point, 0, n)
	var buf []byte
	for _, i := range byAddr(p.eps) {
		buf = p.eps[i].Addr.AppendTo(buf[:0])
		x := xxhash.Sum64(buf)
		for range w[i] {
			x += 0x9e3779b97f4a7c15
			points = append(points, point{h: splitmix(x), i: i})
		}
	}
	radixSort(points)
	p.hashes = make([]uint64, len(points))
	p.idx = make([]uint32, len(points))
	for k, pt := range points {
		p.hashes[k], p.idx[k] = pt.h, pt.i
	}
	// One bucket a point or up to twice as many, at least two.
	p.shift = uint(64 - max(1, bits.Len(uint(len(points)-1))))
	p.bucket = make([]uint32, 1<<(64-p.shift)+1)
	k := 0
	for b := range p.bucket {
		for k < len(p.hashes) && p.hashes[k]>>p.shift < uint64(b) {
			k++
		}
		p.bucket[b] = uint32(k)
	}
	return p
}

// point is a ring point: its hash and its endpoint's index.
type point struct {
	h uint64
	i uint32
}

// splitmix is SplitMix64's output function (Steele, Lea, Flood, 2014).
func splitmix(x uint64) uint64 {
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

// radixSort sorts points by hash, stably: small rings with a comparison sort, large ones
// with a least-significant-digit radix sort, 16 bits a pass, several times faster.
func radixSort(points []point) {
	if len(points) < 1<<12 {
		slices.SortStableFunc(points, func(a, b point) int { return cmp.Compare(a.h, b.h) })
		return
	}
	tmp := make([]point, len(points))
	src, dst := points, tmp
	count := make([]int, 1<<16)
	for shift := 0; shift < 64; shift += 16 {
		clear(count)
		for _, pt := range src {
			count[uint16(pt.h>>shift)]++
		}
		sum := 0
		for d, c := range count {
			count[d] = sum
			sum += c
		}
		for _, pt := range src {
			d := uint16(pt.h >> shift)
			dst[count[d]] = pt
			count[d]++
		}
		src, dst = dst, src
	}
	// Four passes: the sorted points are back in points.
}

// byAddr returns the indexes of eps in address order (input order among duplicates), so
// that tables built from them do not depend on the order the caller listed them in.
func byAddr(eps []Endpoint) []uint32 {
	order := make([]uint32, len(eps))
	for i := range order {
		order[i] = uint32(i)
	}
	slices.SortStableFunc(order, func(a, b uint32) int { return eps[a].Addr.Compare(eps[b].Addr) })
	return order
}

type ringPicker struct {
	eps    []Endpoint
	hashes []uint64 // sorted
	idx    []uint32 // idx[k] is the endpoint at hashes[k]
	// The points whose hash has top bits b are hashes[bucket[b]:bucket[b+1]]: with about
	// one point a bucket, Pick searches a few points rather than the whole ring (two
	// cache misses rather than twenty on a ring of 2^18).
	bucket []uint32
	shift  uint // 64 - bits in a bucket number
}

func (p *ringPicker) Pick(key uint64) (*Endpoint, Done) {
	b := key >> p.shift
	lo, hi := int(p.bucket[b]), int(p.bucket[b+1])
	// The first point at or after key is in the bucket, else the next bucket's first.
	k, _ := slices.BinarySearch(p.hashes[lo:hi], key)
	k += lo
	if k == len(p.hashes) {
		k = 0
	}
	return &p.eps[p.idx[k]], nop
}
