//go:build linux

package park

import (
	"net"
	"syscall"
	"testing"
	"time"
)

// chanWaiter records its wake-ups.
type chanWaiter struct{ woke chan struct{} }

func newWaiter() *chanWaiter { return &chanWaiter{woke: make(chan struct{}, 8)} }

func (w *chanWaiter) Wake() { w.woke <- struct{}{} }

func (w *chanWaiter) expectWake(t *testing.T, what string) {
	t.Helper()
	select {
	case <-w.woke:
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: not woken", what)
	}
}

func (w *chanWaiter) expectNoWake(t *testing.T, what string) {
	t.Helper()
	select {
	case <-w.woke:
		t.Fatalf("%s: woken", what)
	case <-time.After(50 * time.Millisecond):
	}
}

// tcpPair is a connected pair of loopback TCP sockets and the RawConn of the first.
func tcpPair(t *testing.T) (a, b *net.TCPConn, rc syscall.RawConn) {
	t.Helper()
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	b, err = net.DialTCP("tcp4", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	a, err = ln.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
	rc, err = a.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	return a, b, rc
}

// drain reads what has arrived on c, so that its socket is quiet again.
func drain(t *testing.T, c *net.TCPConn, n int) {
	t.Helper()
	buf := make([]byte, n)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(buf); err != nil {
		t.Fatal(err)
	}
}

// TestParkWakesOnBytes: a parked waiter is woken once when bytes arrive, is no longer
// parked then, and can park again on the same socket, time after time.
func TestParkWakesOnBytes(t *testing.T) {
	a, b, rc := tcpPair(t)
	w, st := newWaiter(), &State{}
	for round := range 3 {
		if !Park(w, st, rc) {
			t.Fatalf("round %d: Park failed", round)
		}
		if !Parked(st) {
			t.Fatalf("round %d: not parked after Park", round)
		}
		w.expectNoWake(t, "quiet socket")
		if _, err := b.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		w.expectWake(t, "bytes arrived")
		if Parked(st) {
			t.Fatalf("round %d: still parked after its wake-up", round)
		}
		drain(t, a, 1)
	}
	w.expectNoWake(t, "after the last round")
}

// TestParkReadyAtOnce: bytes that arrived before Park (between the read that found
// nothing and the parking) wake the waiter at once: the set is not edge-triggered.
func TestParkReadyAtOnce(t *testing.T) {
	_, b, rc := tcpPair(t)
	if _, err := b.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond)
	w, st := newWaiter(), &State{}
	if !Park(w, st, rc) {
		t.Fatal("Park failed")
	}
	w.expectWake(t, "bytes waiting before Park")
}

// TestParkWakesOnPeerClose: the peer's close (an EOF to read) wakes the waiter.
func TestParkWakesOnPeerClose(t *testing.T) {
	_, b, rc := tcpPair(t)
	w, st := newWaiter(), &State{}
	if !Park(w, st, rc) {
		t.Fatal("Park failed")
	}
	_ = b.Close()
	w.expectWake(t, "peer closed")
}

// TestUnpark: a waiter taken out is the caller's (Unpark true once), is not woken by
// what arrives later, and parks again afresh; an event left from the earlier parking
// does not wake the new one twice.
func TestUnpark(t *testing.T) {
	a, b, rc := tcpPair(t)
	w, st := newWaiter(), &State{}
	if !Park(w, st, rc) {
		t.Fatal("Park failed")
	}
	if !Unpark(st) {
		t.Fatal("Unpark of a parked waiter reported false")
	}
	if Unpark(st) || Parked(st) {
		t.Fatal("a waiter taken out is still parked")
	}
	if _, err := b.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	w.expectNoWake(t, "bytes after Unpark")
	drain(t, a, 1)
	if !Park(w, st, rc) {
		t.Fatal("second Park failed")
	}
	w.expectNoWake(t, "second parking, quiet socket")
	if _, err := b.Write([]byte("y")); err != nil {
		t.Fatal(err)
	}
	w.expectWake(t, "bytes for the second parking")
	w.expectNoWake(t, "a second wake-up for one parking")
}

// TestParkMany: waiters parked together are each woken by their own socket only.
func TestParkMany(t *testing.T) {
	const n = 64
	ws := make([]*chanWaiter, n)
	peers := make([]*net.TCPConn, n)
	for i := range n {
		_, b, rc := tcpPair(t)
		ws[i], peers[i] = newWaiter(), b
		if !Park(ws[i], &State{}, rc) {
			t.Fatalf("Park %d failed", i)
		}
	}
	for i := 0; i < n; i += 2 {
		if _, err := peers[i].Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		if i%2 == 0 {
			ws[i].expectWake(t, "written to")
		}
	}
	for i := 1; i < n; i += 2 {
		select {
		case <-ws[i].woke:
			t.Fatalf("waiter %d woken with nothing on its socket", i)
		default:
		}
	}
}
