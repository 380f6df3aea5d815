package listener

import (
	"errors"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Why not io.Copy: (*net.TCPConn).ReadFrom splices too, but it takes a pipe for the whole
// call and blocks in it waiting for data, so every idle relayed connection holds two
// pipes (four descriptors, and a pipe's pages) for its lifetime. This loop waits for the
// socket to become readable with no pipe at all, takes a pipe from a small pool only
// while bytes are moving, and gives it back as soon as the socket is drained. An idle
// connection costs its two sockets and nothing else.

// pipeSize is what a pipe is asked to hold: enough for one full splice per wake-up at
// loopback and 10 GbE rates.
const pipeSize = 1 << 20

type spliceBuf struct {
	r, w int // pipe ends
	n    int // bytes in the pipe
}

// pipePool keeps a few idle pipes so that busy connections do not create one per burst.
// It is bounded so that a burst of many connections does not leave many pipes behind.
var pipePool = make(chan *spliceBuf, 64)

func getPipe() (*spliceBuf, error) {
	select {
	case p := <-pipePool:
		return p, nil
	default:
	}
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, os.NewSyscallError("pipe2", err)
	}
	// Best effort: the default 64 KiB pipe works too, only with more calls.
	_, _ = unix.FcntlInt(uintptr(fds[0]), unix.F_SETPIPE_SZ, pipeSize)
	return &spliceBuf{r: fds[0], w: fds[1]}, nil
}

func putPipe(p *spliceBuf) {
	if p.n != 0 { // bytes stuck in it (the copy failed): not reusable
		p.close()
		return
	}
	select {
	case pipePool <- p:
	default:
		p.close()
	}
}

func (p *spliceBuf) close() {
	_ = unix.Close(p.r)
	_ = unix.Close(p.w)
}

// The callbacks below are closures over local variables, called through a RawConn that
// the same function got from the *net.TCPConn. The compiler then sees the concrete
// RawConn, calls it directly, and keeps the closures, their variables and the RawConn
// on the stack. Handed around as a syscall.RawConn interface they would escape, and
// cost several allocations per burst: on a chatty connection, per message.

// parkAfter is how long a direction that has drained its source waits for more on its
// own goroutine before it parks (park_linux.go). A transfer whose socket runs dry for a
// moment, or a quick request and answer, keeps its goroutines and is woken by the
// runtime's poller as before; a direction quiet for longer gives its goroutine up.
// Parking and coming back cost a goroutine start, two system calls and the expired
// deadline's error value, a few µs: nothing next to a pause this long.
const parkAfter = 5 * time.Millisecond

// copy moves bytes from d.src to d.dst until EOF (d.err nil) or an error (d.err),
// telling the relay of every batch, or until it parks: it then reports true, and the
// direction is no longer this goroutine's.
//
// The whole burst runs inside one RawConn.Read of src, and the splice that finds src
// empty is also the first step of the wait that follows. (The runtime's poller clears
// its readiness mark as a RawConn.Read begins, so the first step of one must be a call
// on the socket; within the same one, the mark set by bytes that arrive after that call
// is kept.) The pipe goes back to the pool as that splice finds nothing, so a waiting
// direction holds none. A request of a few bytes and its answer thus cost three calls a
// way: splice in, splice out, and the splice in that finds nothing and waits. The read
// deadline of src bounds each wait: when it passes, the relay decides whether the
// direction is idle.
func (d *direction) copy() (parked bool) {
	r := d.r
	srcRC, err := d.src.SyscallConn()
	if err != nil {
		d.err = err
		return false
	}
	dstRC, err := d.dst.SyscallConn()
	if err != nil {
		d.err = err
		return false
	}
	var (
		p      *spliceBuf    // held only while bytes move
		opErr  error         // of the last splice, or of getPipe
		full   bool          // dst had no room: the rest waits for it outside the read
		wait   time.Duration // the read deadline's distance, set before each wait
		moved  bool          // bytes moved since the read deadline was set
		dlnErr error         // of setting it from inside the read
	)
	defer func() {
		if p != nil {
			putPipe(p)
		}
	}()
	// drain empties the pipe into dst as far as dst takes it now, and tells the relay of
	// what it moved. It reports false when dst has no room left (opErr is then nil).
	drain := func(fd uintptr) bool {
		out := 0
		for p.n > 0 && opErr == nil {
			nn, err := unix.Splice(p.r, nil, int(fd), nil, p.n, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
			if err == unix.EAGAIN {
				break
			}
			if opErr = err; err == nil {
				p.n -= int(nn)
				out += int(nn)
			}
		}
		if out > 0 {
			moved = true
			d.bytes += int64(out)
			r.moved(d.toUpstream, int64(out))
		}
		return p.n == 0 || opErr != nil
	}
	// burst moves what src has until it has nothing (then it waits: false), an EOF, an
	// error or a full dst (true).
	burst := func(fd uintptr) bool {
		for {
			if p == nil {
				if p, opErr = getPipe(); opErr != nil {
					return true
				}
			}
			nn, err := unix.Splice(int(fd), nil, p.w, nil, pipeSize, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
			if err == unix.EAGAIN {
				putPipe(p)
				p = nil
				if moved { // the wait is counted from now
					moved = false
					if dlnErr = d.src.SetReadDeadline(time.Now().Add(wait)); dlnErr != nil {
						return true
					}
				}
				return false
			}
			if err != nil || nn == 0 {
				opErr = err
				return true
			}
			p.n, opErr = int(nn), nil
			if err := dstRC.Control(func(fd uintptr) { full = !drain(fd) }); err != nil {
				opErr = err
			}
			if p.n > 0 {
				return true // an error, or no room in dst
			}
		}
	}
	for {
		var mayPark bool
		wait, mayPark = r.idle, !d.park.Failed()
		if mayPark && parkAfter < wait {
			wait = parkAfter
		}
		if err := d.src.SetReadDeadline(time.Now().Add(wait)); err != nil {
			d.err = err
			return false
		}
		moved, full = false, false
		if err := srcRC.Read(burst); err != nil {
			if p != nil { // the deadline had passed before the first splice
				putPipe(p)
				p = nil
			}
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				d.err = err
				return false
			}
			if !r.stillActive() {
				d.err = ErrIdle
				return false
			}
			if mayPark && d.parkSrc() {
				return true
			}
			continue
		}
		switch {
		case dlnErr != nil:
			d.err = dlnErr
			return false
		case opErr != nil && p == nil: // getPipe
			d.err = opErr
			return false
		case opErr != nil:
			d.err = os.NewSyscallError("splice", opErr)
			return false
		case !full:
			return false // EOF
		}
		// dst is full: wait for room, then go back to reading.
		if err := dstRC.Write(drain); err != nil {
			d.err = err
			return false
		}
		if opErr != nil {
			d.err = os.NewSyscallError("splice", opErr)
			return false
		}
	}
}
