package listener

import (
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Parking: a relay direction that has been quiet for a while gives up its goroutine.
//
// Go's runtime can only wait for a socket with a goroutine blocked on it, and a blocked
// goroutine costs a 2 KiB stack at the least (more if it ever grew) and its
// descriptor, for as long as the connection stays open; with two per relay that was
// most of what an idle relayed connection cost. So a quiet direction instead puts its
// source socket in one epoll set shared by all relays, one-shot, and its goroutine
// ends. A single goroutine waits for that set (through the runtime's poller: the set's
// descriptor is itself pollable, so no thread blocks on it), and starts a goroutine
// for each direction whose socket has something: bytes, an EOF, an error. What a
// parked direction costs is its slot here and the epoll entry in the kernel.
//
// Sockets are added while the runtime holds a reference to them (RawConn.Control), so
// a descriptor is never added after its socket was closed and its number reused. A
// closed socket leaves the set by itself; a relay that closes its sockets (abort) takes
// its parked directions out of the table first. Each parking gets a new token, so an
// event that arrives for an earlier one is ignored.

// parkState is a direction's place in the poller.
type parkState struct {
	slot    int32 // its slot in poller.slots while parked, else 0
	watched bool  // its source is in the epoll set (armed or not)
	failed  bool  // parking failed: it waits on its own goroutine from then on
}

type poller struct {
	epfd int
	file *os.File // epfd's: kept, since its finalizer would close epfd
	rc   syscall.RawConn

	mu     sync.Mutex
	slots  []pollSlot // [0] is unused: a zero parkState.slot means not parked
	free   []int32
	broken bool
}

type pollSlot struct {
	d   *direction
	gen uint32 // which parking of d the slot holds, so that stale events miss
}

var thePoller struct {
	once sync.Once
	p    atomic.Pointer[poller]
}

// idlePoller returns the process's poller, starting it at the first call, or nil if it
// could not be made (relays then wait on their goroutines as they always could).
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
	f := os.NewFile(uintptr(fd), "relay-park")
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

// loop starts a goroutine for every parked direction whose socket became ready.
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
			if d := p.take(ev.Fd, uint32(ev.Pad)); d != nil {
				spawn(d)
			}
		}
	}
}

// fail stops parking, should the epoll set become unusable (it is not expected to):
// every parked direction goes back to waiting on a goroutine.
func (p *poller) fail() {
	p.mu.Lock()
	p.broken = true
	var ds []*direction
	for i := range p.slots {
		if d := p.slots[i].d; d != nil {
			p.slots[i].d = nil
			d.park.slot = 0
			d.park.failed = true
			ds = append(ds, d)
		}
	}
	p.mu.Unlock()
	for _, d := range ds {
		spawn(d)
	}
}

// put gives d a slot and a token for it, and says how to put its socket in the epoll
// set; ok is false if the poller has failed.
func (p *poller) put(d *direction) (slot int32, gen uint32, op int, ok bool) {
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
	s.d = d
	d.park.slot = slot
	op = unix.EPOLL_CTL_MOD
	if !d.park.watched {
		op = unix.EPOLL_CTL_ADD
		d.park.watched = true
	}
	return slot, s.gen, op, true
}

// take returns the direction parked under the token, which is then no longer parked,
// or nil if the token is stale.
func (p *poller) take(slot int32, gen uint32) *direction {
	p.mu.Lock()
	defer p.mu.Unlock()
	if slot <= 0 || int(slot) >= len(p.slots) || p.slots[slot].gen != gen {
		return nil
	}
	return p.release(slot)
}

func (p *poller) release(slot int32) *direction {
	s := &p.slots[slot]
	d := s.d
	if d == nil {
		return nil
	}
	s.d = nil
	d.park.slot = 0
	p.free = append(p.free, slot)
	return d
}

// parkSrc parks d until its source has something. It reports whether d is no longer
// this goroutine's: parked, or taken by someone else already. When it reports false,
// d could not park and its goroutine goes on with it.
func (d *direction) parkSrc() bool {
	p := idlePoller()
	if p == nil {
		d.park.failed = true
		return false
	}
	rc, err := d.src.SyscallConn()
	if err != nil {
		return false
	}
	// Armed before d is parked: once it is, this goroutine must not touch the relay.
	d.r.armIdle()
	slot, gen, op, ok := p.put(d)
	if !ok {
		d.park.failed = true
		return false
	}
	// From here on d may be running on another goroutine: only locals are touched.
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
	if !d.unpark() {
		return true // the relay ended it meanwhile (abort, idle timeout)
	}
	if werr != nil {
		d.park.failed = true
	}
	return false
}

// unpark takes d out of the poller if it is parked there, and reports whether it was:
// the caller then has it.
func (d *direction) unpark() bool {
	p := thePoller.p.Load()
	if p == nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if d.park.slot == 0 {
		return false
	}
	return p.release(d.park.slot) != nil
}

// parked reports whether d is parked.
func (d *direction) parked() bool {
	p := thePoller.p.Load()
	if p == nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return d.park.slot != 0
}
