package listener

import (
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	dto "github.com/prometheus/client_model/go"
	"golang.org/x/sys/unix"
)

// idleBudget is the heap one idle relay may hold, its sockets' objects not included.
// Measured on linux/amd64, Go 1.26: 400 B (the relay, its idle timer, its slot in the
// poller). idleServerBudget is the same for a connection relayed by the Server, from
// handleTo on: its two sockets, what its metrics and closing log line need, its relay.
// Measured: 1,260 B. The budgets are those plus 15%.
//
// An idle relay holds no goroutine: both its directions have parked. A goroutine held
// while idle would cost a stack of 2 KiB at the least, and its g, more than the whole
// budget; the runtime keeps a few stacks of ended goroutines cached whatever the count
// of connections, which makes the stack figure too noisy to hold to a budget, so the
// goroutines are counted instead.
const (
	idleBudget       = 460
	idleServerBudget = 1450
)

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
// heap, goroutines and their stacks, and the process's resident memory. The heap is
// checked against idleBudget and idleServerBudget, and no goroutine may be left.
// SKIFF_IDLE_CONNS sets the count (default 500) to profile at scale; -v prints the
// breakdown.
//
// "relay" runs the relay alone, started as the Server starts it (nothing waits for it
// on a goroutine), between sockets made before the measurement. "server" has the
// Server accept, sniff, dial and relay each connection, from handleTo on, with the
// test's own ends as bare descriptors, so that everything measured is the proxy's.
func TestIdleRelayMemory(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector enlarges stacks and adds shadow memory")
	}
	if testing.Short() {
		t.Skip("opens hundreds of connections")
	}
	if runtime.GOOS != "linux" {
		t.Skip("relays park their quiet directions only on Linux")
	}
	n := 500
	if s := os.Getenv("SKIFF_IDLE_CONNS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			t.Fatalf("SKIFF_IDLE_CONNS=%q: want a positive count", s)
		}
		n = v
	}
	t.Run("relay", func(t *testing.T) { idleRelayMemory(t, n) })
	t.Run("server", func(t *testing.T) { idleServerMemory(t, n) })
}

func idleRelayMemory(t *testing.T, n int) {
	type quad struct{ client, down, up, server *net.TCPConn }
	conns := make([]quad, n)
	for i := range conns {
		c := &conns[i]
		c.client, c.down = tcpPair(t)
		c.up, c.server = tcpPair(t)
	}
	results := make(chan RelayResult, n)
	owner := &relayWaiter{done: results}
	relays := make([]relay, n)
	line, reply := []byte("ping\n"), make([]byte, 5)
	open := func(i int) {
		c := &conns[i]
		relays[i].init(c.down, c.up, time.Hour, owner)
		relays[i].spawn()
		for _, hop := range [][2]*net.TCPConn{{c.client, c.server}, {c.server, c.client}} {
			if _, err := hop[0].Write(line); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(hop[1], reply); err != nil {
				t.Fatal(err)
			}
		}
	}
	warm := warmUp(n)
	for i := range warm {
		open(i)
	}
	reserveGoroutines(2 * n)
	before := idleSnapshot()
	for i := warm; i < n; i++ {
		open(i)
	}
	// The relays' own allocation is made before the measurement, like their sockets.
	checkIdleMemory(t, n-warm, before, idleBudget, int64(unsafe.Sizeof(relay{})))

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

func idleServerMemory(t *testing.T, n int) {
	s := plainServer(t, "")
	upLn, upAddr := rawListen(t, n)
	proxy := relayPort(t, s, upAddr)
	ends := make([]int, 0, 2*n)
	t.Cleanup(func() {
		for _, fd := range ends {
			_ = unix.Close(fd)
		}
	})
	line, reply := []byte("ping\n"), make([]byte, 5)
	open := func() {
		client := rawDial(t, proxy)
		rawWrite(t, client, line)
		server, _, err := unix.Accept(upLn)
		if err != nil {
			t.Fatal(err)
		}
		ends = append(ends, client, server)
		rawRead(t, server, reply)
		rawWrite(t, server, reply)
		rawRead(t, client, reply)
	}
	warm := warmUp(n)
	for range warm {
		open()
	}
	reserveGoroutines(3 * n)
	before := idleSnapshot()
	for range n - warm {
		open()
	}
	checkIdleMemory(t, n-warm, before, idleServerBudget, 0)

	for _, fd := range ends {
		_ = unix.Close(fd)
	}
	ends = nil
	active := s.metrics.TCPActive.WithLabelValues(string(Outbound))
	relaying := func() float64 {
		var m dto.Metric
		_ = active.Write(&m)
		return m.GetGauge().GetValue()
	}
	deadline := time.Now().Add(10 * time.Second)
	for relaying() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("relays still open 10s after both ends closed")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// warmUp is how many of n connections are opened before the measurement starts, so
// that what the first ones set up for good is not counted as every connection's: the
// poller, the metrics' series, and the runtime's caches of goroutines and stacks, which
// fill up to what a burst of connections needs and stay so.
func warmUp(n int) int { return min(n/5, 100) }

// reserveGoroutines has n goroutines run at once and end. The runtime never frees a
// goroutine's g (some 400 B of heap); it keeps it for the next one. Without this, how
// many of the relays' short-lived goroutines happened to run at once, which depends on
// the machine's speed and load, would show in the heap figure.
func reserveGoroutines(n int) {
	var started, done sync.WaitGroup
	release := make(chan struct{})
	started.Add(n)
	done.Add(n)
	for range n {
		go func() {
			started.Done()
			<-release
			done.Done()
		}()
	}
	started.Wait()
	close(release)
	done.Wait()
}

// checkIdleMemory measures what n idle connections opened since before hold (plus
// extra bytes each, made before) and checks it against budget.
func checkIdleMemory(t *testing.T, n int, before memSnapshot, budget int, extra int64) {
	t.Helper()
	per := func(a, b uint64) float64 { return (float64(a) - float64(b)) / float64(n) }
	var after memSnapshot
	var heap, goroutines float64
	for try := 0; try < 3; try++ {
		// On a busy machine a direction may not have parked yet when the collector
		// looks: look again.
		after = idleSnapshot()
		heap, goroutines = per(after.heap, before.heap)+float64(extra), per(after.goroutines, before.goroutines)
		if heap <= float64(budget) && goroutines < 0.01 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("%d idle connections: per connection: heap %.0f B, goroutines %.2f, goroutine stacks %+.0f B, "+
		"VmRSS %+.1f KiB", n, heap, goroutines, per(after.stack, before.stack), per(after.rssKiB, before.rssKiB))
	if heap > float64(budget) {
		t.Errorf("an idle connection holds %.0f B of heap, want at most %d", heap, budget)
	}
	if goroutines >= 0.01 {
		t.Errorf("idle connections hold %.2f goroutines each, want none", goroutines)
	}
}

// rawListen listens on loopback with a bare descriptor, so that the connections it
// accepts cost the test's heap nothing.
func rawListen(t *testing.T, backlog int) (int, netip.AddrPort) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, backlog); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	a := sa.(*unix.SockaddrInet4)
	return fd, netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
}

func rawDial(t *testing.T, to netip.AddrPort) int {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Connect(fd, &unix.SockaddrInet4{Addr: to.Addr().As4(), Port: int(to.Port())}); err != nil {
		_ = unix.Close(fd)
		t.Fatal(err)
	}
	return fd
}

func rawWrite(t *testing.T, fd int, b []byte) {
	if _, err := unix.Write(fd, b); err != nil {
		t.Fatal(err)
	}
}

func rawRead(t *testing.T, fd int, b []byte) {
	for got := 0; got < len(b); {
		n, err := unix.Read(fd, b[got:])
		if err != nil || n == 0 {
			t.Fatalf("read: %d bytes, %v", n, err)
		}
		got += n
	}
}

type memSnapshot struct{ heap, stack, goroutines, rssKiB uint64 }

// idleSnapshot measures after two collections, which free what connection setup left
// behind, and the stacks of goroutines that have ended.
func idleSnapshot() memSnapshot {
	time.Sleep(50 * time.Millisecond) // let every relay direction park
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
