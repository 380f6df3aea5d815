package lb

import (
	"strconv"
	"testing"
)

func BenchmarkPick(b *testing.B) {
	for _, p := range policies {
		for _, n := range []int{10, 1000} {
			pk := p.Build(endpoints(weightsUpTo(n)...))
			b.Run(p.String()+"/"+strconv.Itoa(n), func(b *testing.B) {
				b.ReportAllocs()
				key := uint64(0)
				for b.Loop() {
					key += 0x9e3779b97f4a7c15
					_, done := pk.Pick(key)
					done()
				}
			})
		}
	}
}

// BenchmarkPickParallel shows what contention costs: round robin's shared counter and
// least request's in-flight counters.
func BenchmarkPickParallel(b *testing.B) {
	for _, p := range policies {
		pk := p.Build(endpoints(weightsUpTo(10)...))
		b.Run(p.String()+"/10", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				key := uint64(0)
				for pb.Next() {
					key += 0x9e3779b97f4a7c15
					_, done := pk.Pick(key)
					done()
				}
			})
		})
	}
}

func BenchmarkBuild(b *testing.B) {
	for _, p := range policies {
		eps := endpoints(weightsUpTo(1000)...)
		b.Run(p.String()+"/1000", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				p.Build(eps)
			}
		})
	}
}

func BenchmarkWeighted(b *testing.B) {
	w := NewWeighted([]Choice[string]{{"stable", 90}, {"canary", 10}}, nil)
	b.ReportAllocs()
	for b.Loop() {
		w.Pick()
	}
}

func BenchmarkHashString(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		HashString("3f2504e0-4f89-11d3-9a0c-0305e82c3301")
	}
}
