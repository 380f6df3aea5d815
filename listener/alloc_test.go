package listener

import (
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// idleBudget is what one idle relayed connection may hold in heap and goroutine stacks,
// the two relayed sockets' objects included. Measured: 4,960 B (1,095 B heap, two 2 KiB
// stacks), Go 1.26, linux/amd64; the budget is that plus about 15%. A goroutine whose
// stack the collector cannot shrink to 2 KiB while it waits, or any buffer held while
// idle, goes over it. Lower it as the relay gets leaner.
const idleBudget = 5700

// mallocs is the process's count of heap allocations so far.
func mallocs() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.Mallocs
}

// TestRelayAllocsDoNotGrowWithBytes: once a relay runs, moving bytes allocates nothing,
// so a connection that carries 64 MiB costs the heap what one carrying 1 MiB does. Both
// the bulk case (large writes: few, long bursts) and the chatty one (small messages each
// way: a burst per message) are checked, since the second is where a per-burst
// allocation shows. The relay is then ended with half-closes, and its byte counts must
// be exact. It runs under the race detector too, which changes the counts but not how
// they grow.
func TestRelayAllocsDoNotGrowWithBytes(t *testing.T) {
	// slack absorbs what the runtime allocates on its own while the bytes move (a few,
	// more under the race detector); one allocation per burst or per chunk would be
	// hundreds here.
	const slack = 32
	for _, k := range relayKinds[1:] {
		t.Run(k.name, func(t *testing.T) {
			client, server, res := k.connect(t)
			var toServer, toClient int64 // bytes each way, for the relay's counts

			buf, rbuf := make([]byte, 64<<10), make([]byte, 64<<10)
			bulk := func(total int) uint64 {
				done := make(chan error, 1)
				before := mallocs()
				go func() {
					var err error
					for left := total; left > 0 && err == nil; left -= len(rbuf) {
						_, err = io.ReadFull(server, rbuf[:min(left, len(rbuf))])
					}
					done <- err
				}()
				for left := total; left > 0; left -= len(buf) {
					if _, err := client.Write(buf[:min(left, len(buf))]); err != nil {
						t.Fatal(err)
					}
				}
				if err := <-done; err != nil {
					t.Fatal(err)
				}
				toServer += int64(total)
				// The reader goroutine is the test's own allocation, the same each time.
				return mallocs() - before
			}
			chat := func(rounds int) uint64 {
				msg, reply := make([]byte, 512), make([]byte, 512)
				before := mallocs()
				for range rounds {
					if _, err := client.Write(msg); err != nil {
						t.Fatal(err)
					}
					if _, err := io.ReadFull(server, reply); err != nil {
						t.Fatal(err)
					}
					if _, err := server.Write(reply); err != nil {
						t.Fatal(err)
					}
					if _, err := io.ReadFull(client, msg); err != nil {
						t.Fatal(err)
					}
				}
				toServer += int64(rounds) * 512
				toClient += int64(rounds) * 512
				return mallocs() - before
			}

			bulk(1 << 20) // warm up: pooled pipes and buffers
			chat(10)
			runtime.GC() // the first collection starts its workers, which allocates
			small, large := bulk(1<<20), bulk(64<<20)
			if large > small+slack {
				t.Errorf("relaying 64 MiB: %d allocations, 1 MiB: %d; want at most %d more", large, small, slack)
			}
			few, many := chat(10), chat(1000)
			t.Logf("allocations: relaying 1 MiB %d, 64 MiB %d; 10 round trips %d, 1000 %d", small, large, few, many)
			if many > few+slack {
				t.Errorf("1000 round trips of 512 bytes: %d allocations, 10: %d; want at most %d more", many, few, slack)
			}

			_ = client.CloseWrite()
			_ = server.CloseWrite()
			r := <-res
			if r.Err != nil || r.Received != toServer || r.Sent != toClient {
				t.Errorf("result %+v, want received %d, sent %d, no error", r, toServer, toClient)
			}
		})
	}
}

// TestIdleRelayMemory opens many relayed connections, lets each move one line both ways
// (as a real one does before it goes quiet), and measures what they hold while idle:
// heap, goroutine stacks, and the process's resident memory. The heap and stack figures
// are checked against idleBudget. SKIFF_IDLE_CONNS sets the count (default 500) to profile
// at scale; -v prints the breakdown.
//
// Relay is called from a goroutine that does nothing else, so the figures are the
// relay's own. In the listener the calling goroutine is the connection's handler, whose
// stack also holds its callers' frames while it waits.
func TestIdleRelayMemory(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector enlarges stacks and adds shadow memory")
	}
	if testing.Short() {
		t.Skip("opens hundreds of connections")
	}
	n := 500
	if s := os.Getenv("SKIFF_IDLE_CONNS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			t.Fatalf("SKIFF_IDLE_CONNS=%q: want a positive count", s)
		}
		n = v
	}

	// The test's own ends (client and server) are made first and measured on their own,
	// so that what is left is what a proxy holds: the two relayed sockets and the relay.
	type quad struct{ client, down, up, server *net.TCPConn }
	conns := make([]quad, n)
	for i := range conns {
		c := &conns[i]
		c.client, c.down = tcpPair(t)
		c.up, c.server = tcpPair(t)
	}
	before := idleSnapshot()
	results := make(chan RelayResult, n)
	line, reply := []byte("ping\n"), make([]byte, 5)
	for i := range conns {
		c := &conns[i]
		go func() { results <- Relay(c.down, c.up, time.Hour, nil) }()
		for _, hop := range [][2]*net.TCPConn{{c.client, c.server}, {c.server, c.client}} {
			if _, err := hop[0].Write(line); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(hop[1], reply); err != nil {
				t.Fatal(err)
			}
		}
	}
	per := func(a, b uint64) float64 { return (float64(a) - float64(b)) / float64(n) }
	var after memSnapshot
	var heap, stack float64
	for try := 0; try < 3; try++ {
		// On a busy machine a goroutine may not be parked yet when the collector
		// looks, and keeps its larger stack until the next one: look again.
		after = idleSnapshot()
		heap, stack = per(after.heap, before.heap), per(after.stack, before.stack)
		if heap+stack <= idleBudget {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("%d idle relays: per connection: heap %.0f B, goroutine stacks %.0f B (%.2f goroutines), "+
		"VmRSS %+.1f KiB", n, heap, stack, per(after.goroutines, before.goroutines),
		per(after.rssKiB, before.rssKiB))
	if heap+stack > idleBudget {
		t.Errorf("an idle relay holds %.0f B of heap and stacks, want at most %d", heap+stack, idleBudget)
	}

	for i := range conns {
		_ = conns[i].client.CloseWrite()
		_ = conns[i].server.CloseWrite()
	}
	for range conns {
		if r := <-results; r.Err != nil || r.Received != 5 || r.Sent != 5 {
			t.Fatalf("relay result %+v, want 5 bytes each way and no error", r)
		}
	}
}

type memSnapshot struct{ heap, stack, goroutines, rssKiB uint64 }

// idleSnapshot measures after two collections. Each one halves the stack of a parked
// goroutine that uses less than a quarter of it, so two bring a stack that grew to
// 8 KiB while bytes moved back to what the wait needs, as happens to an idle
// connection's goroutines.
func idleSnapshot() memSnapshot {
	time.Sleep(50 * time.Millisecond) // let every relay goroutine reach its wait
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memSnapshot{heap: ms.HeapAlloc, stack: ms.StackInuse, goroutines: uint64(runtime.NumGoroutine()), rssKiB: vmRSSKiB()}
}

// vmRSSKiB is the process's resident set size from /proc/self/status, 0 where there is
// none.
func vmRSSKiB() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for l := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kib, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kib
		}
	}
	return 0
}
