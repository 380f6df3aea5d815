package listener

import (
	"errors"
	"net"
	"os"
	"syscall"
	"time"
	"unsafe"

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
// A direction waits here holding no pipe and allocating nothing, and the burst runs in
// its own call, whose frame is gone by then. The read deadline of src bounds each
// wait: when it passes, the relay decides whether the direction is idle.
func (d *direction) copy() (parked bool) {
	r := d.r
	srcRC, err := d.src.SyscallConn()
	if err != nil {
		d.err = err
		return false
	}
	var (
		peek [1]byte
		perr syscall.Errno
	)
	readable := func(fd uintptr) bool {
		// recvfrom(2) with MSG_PEEK, made directly: unix.Recvfrom allocates a sockaddr
		// on every call. A pending error (a reset) is reported here, once.
		_, _, perr = unix.Syscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&peek[0])), 1,
			unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
		return perr != unix.EAGAIN
	}
	for {
		// Wait, holding no pipe, until src has data or EOF.
		wait, mayPark := r.idle, !d.park.Failed()
		if mayPark && parkAfter < wait {
			wait = parkAfter
		}
		if err := d.src.SetReadDeadline(time.Now().Add(wait)); err != nil {
			d.err = err
			return false
		}
		if err := srcRC.Read(readable); err != nil {
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
		if perr != 0 {
			d.err = os.NewSyscallError("recvfrom", perr)
			return false
		}
		n, eof, err := spliceBurst(d.dst, d.src)
		d.bytes += n
		if n > 0 {
			r.moved(d.toUpstream, n)
		}
		if err != nil || eof {
			d.err = err
			return false
		}
	}
}

// spliceBurst moves what src has now (and what keeps arriving while it moves) to dst
// through a pooled pipe, returning when src has nothing more for the moment or at EOF.
func spliceBurst(dst, src *net.TCPConn) (total int64, eof bool, err error) {
	srcRC, err := src.SyscallConn()
	if err != nil {
		return 0, false, err
	}
	dstRC, err := dst.SyscallConn()
	if err != nil {
		return 0, false, err
	}
	p, err := getPipe()
	if err != nil {
		return 0, false, err
	}
	defer putPipe(p)
	var (
		n     int   // bytes the last splice moved
		opErr error // of the last splice
	)
	fill := func(fd uintptr) { // socket → pipe, without waiting
		nn, err := unix.Splice(int(fd), nil, p.w, nil, pipeSize-p.n, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
		n, opErr = 0, err
		if err == nil {
			n = int(nn) // on error nn is -1
		}
	}
	drain := func(fd uintptr) bool { // pipe → socket
		nn, err := unix.Splice(p.r, nil, int(fd), nil, p.n, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
		if errors.Is(err, unix.EAGAIN) {
			return false // dst is full: wait until it drains
		}
		n, opErr = 0, err
		if err == nil {
			n = int(nn)
		}
		return true
	}
	for {
		// An empty socket ends the burst.
		if cerr := srcRC.Control(fill); cerr != nil {
			return total, false, cerr
		}
		in, inErr := n, opErr
		switch {
		case inErr == nil && in == 0:
			eof = true
		case errors.Is(inErr, unix.EAGAIN):
			inErr = nil
		case inErr != nil:
			return total, false, os.NewSyscallError("splice", inErr)
		}
		p.n += in
		// pipe → socket, waiting for room in dst as needed.
		for p.n > 0 {
			if werr := dstRC.Write(drain); werr != nil {
				return total, false, werr
			}
			if opErr != nil {
				return total, false, os.NewSyscallError("splice", opErr)
			}
			p.n -= n
			total += int64(n)
		}
		if eof || in == 0 {
			return total, eof, nil
		}
	}
}
