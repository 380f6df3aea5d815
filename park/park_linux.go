package park

import (
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Waiter is what parks: Wake is called, on the poller's goroutine, when its socket has
// something; it must hand the work to a goroutine of its own.
type Waiter interface{ Wake() }

// State is a waiter's place in the poller. The zero value is not parked.
type State struct {
	slot    int32 // its slot in poller.slots while parked, else 0
	watched bool  // its socket is in the epoll set (armed or not)
	failed  bool  // parking failed: it waits on its own goroutine from then on
}

// Failed reports whether parking failed for this waiter, which then waits on its own
// goroutine from then on.
func (s *State) Failed() bool { return s.failed }

type poller struct {
	epfd int
	file *os.File // epfd's: kept, since its finalizer would close epfd
	rc   syscall.RawConn

	mu     sync.Mutex
	slots  []pollSlot // [0] is unused: a zero State.slot means not parked
	free   []int32
	broken bool
}

type pollSlot struct {
	w   Waiter
	s   *State
	gen uint32 // which parking of w the slot holds, so that stale events miss
}

var thePoller struct {
	once sync.Once
	p    atomic.Pointer[poller]
}

// Start starts the process's poller if it is not running yet (its goroutine then exists
// before anything counts goroutines). Park starts it too.
func Start() { idlePoller() }

// idlePoller returns the process's poller, starting it at the first call, or nil if it
// could not be made (waiters then wait on their goroutines as they always could).
func idlePoller() *poller {
	thePoller.once.Do(func() {
		if p, err := newPoller(); err == nil {
			thePoller.p.Store(p)
			go p.loop()
		}
	})
	return thePoller.p.Load()
}

func newPoller() (*poller, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		_ = unix.Close(fd)
		return nil, os.NewSyscallError("fcntl", err)
	}
	// A non-blocking descriptor is registered with the runtime's poller.
	f := os.NewFile(uintptr(fd), "park")
	// A deadline is refused unless it was; without it, nothing would wake the loop.
	if err := f.SetReadDeadline(time.Time{}); err != nil {
		_ = f.Close()
		return nil, err
	}
	rc, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	return &poller{epfd: fd, file: f, rc: rc, slots: make([]pollSlot, 1)}, nil
}

// loop wakes every parked waiter whose socket became ready.
func (p *poller) loop() {
	var (
		evs  [128]unix.EpollEvent
		n    int
		werr error
	)
	wait := func(fd uintptr) bool {
		n, werr = unix.EpollWait(int(fd), evs[:], 0)
		if werr == unix.EINTR {
			n, werr = 0, nil
		}
		return n > 0 || werr != nil
	}
	for {
		err := p.rc.Read(wait)
		if err == nil {
			err = werr
		}
		if err != nil {
			p.fail()
			return
		}
		for _, ev := range evs[:n] {
			if w := p.take(ev.Fd, uint32(ev.Pad)); w != nil {
				w.Wake()
			}
		}
	}
}

// fail stops parking, should the epoll set become unusable (it is not expected to):
// every parked waiter goes back to waiting on a goroutine.
func (p *poller) fail() {
	p.mu.Lock()
	p.broken = true
	var ws []Waiter
	for i := range p.slots {
		if w := p.slots[i].w; w != nil {
			p.slots[i].s.slot = 0
			p.slots[i].s.failed = true
			p.slots[i].w, p.slots[i].s = nil, nil
			ws = append(ws, w)
		}
	}
	p.mu.Unlock()
	for _, w := range ws {
		w.Wake()
	}
}

// put gives w a slot and a token for it, and says how to put its socket in the epoll
// set; ok is false if the poller has failed.
func (p *poller) put(w Waiter, st *State) (slot int32, gen uint32, op int, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.broken {
		return 0, 0, 0, false
	}
	if n := len(p.free); n > 0 {
		slot = p.free[n-1]
		p.free = p.free[:n-1]
	} else {
		slot = int32(len(p.slots))
		p.slots = append(p.slots, pollSlot{})
	}
	s := &p.slots[slot]
	s.gen++
	s.w, s.s = w, st
	st.slot = slot
	op = unix.EPOLL_CTL_MOD
	if !st.watched {
		op = unix.EPOLL_CTL_ADD
		st.watched = true
	}
	return slot, s.gen, op, true
}

// take returns the waiter parked under the token, which is then no longer parked, or
// nil if the token is stale.
func (p *poller) take(slot int32, gen uint32) Waiter {
	p.mu.Lock()
	defer p.mu.Unlock()
	if slot <= 0 || int(slot) >= len(p.slots) || p.slots[slot].gen != gen {
		return nil
	}
	return p.release(slot)
}

func (p *poller) release(slot int32) Waiter {
	s := &p.slots[slot]
	w := s.w
	if w == nil {
		return nil
	}
	s.s.slot = 0
	s.w, s.s = nil, nil
	p.free = append(p.free, slot)
	return w
}

// Park parks w until the socket under rc has something. It reports whether w is no
// longer the caller's: parked, or woken on another goroutine already. When it reports
// false, w could not park and the caller goes on waiting with it. Whatever the caller
// must do before another goroutine may run w, it does before Park.
func Park(w Waiter, st *State, rc syscall.RawConn) bool {
	p := idlePoller()
	if p == nil {
		st.failed = true
		return false
	}
	slot, gen, op, ok := p.put(w, st)
	if !ok {
		st.failed = true
		return false
	}
	// From here on w may be running on another goroutine: only locals are touched.
	var werr error
	cerr := rc.Control(func(fd uintptr) {
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: slot, Pad: int32(gen)}
		werr = unix.EpollCtl(p.epfd, op, int(fd), &ev)
		if werr == unix.ENOENT && op == unix.EPOLL_CTL_MOD {
			werr = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, int(fd), &ev)
		}
	})
	if cerr == nil && werr == nil {
		return true
	}
	if !Unpark(st) {
		return true // someone else took it meanwhile (its owner, ending it)
	}
	if werr != nil {
		st.failed = true
	}
	return false
}

// Unpark takes the waiter out of the poller if it is parked there, and reports whether
// it was: the caller then has it.
func Unpark(st *State) bool {
	p := thePoller.p.Load()
	if p == nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if st.slot == 0 {
		return false
	}
	return p.release(st.slot) != nil
}

// Parked reports whether the waiter is parked.
func Parked(st *State) bool {
	p := thePoller.p.Load()
	if p == nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return st.slot != 0
}
