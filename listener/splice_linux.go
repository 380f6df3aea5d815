package listener

import (
	"errors"
	"net"
	"os"
	"syscall"
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

// copyDirection moves bytes from src to dst until EOF (nil error) or an error, calling
// moved for every batch. The read deadline of src bounds each wait; when it passes,
// stillActive decides whether to wait again.
func copyDirection(dst, src *net.TCPConn, idle time.Duration, stillActive func() bool, moved func(int64)) (int64, error) {
	srcRC, err := src.SyscallConn()
	if err != nil {
		return 0, err
	}
	dstRC, err := dst.SyscallConn()
	if err != nil {
		return 0, err
	}
	var (
		total int64
		peek  [1]byte
	)
	for {
		// Wait, holding no pipe, until src has data or EOF.
		if err := src.SetReadDeadline(time.Now().Add(idle)); err != nil {
			return total, err
		}
		var perr error
		err := srcRC.Read(func(fd uintptr) bool {
			_, _, perr = unix.Recvfrom(int(fd), peek[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
			return !errors.Is(perr, unix.EAGAIN)
		})
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) && stillActive() {
				continue
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return total, ErrIdle
			}
			return total, err
		}
		if perr != nil {
			return total, os.NewSyscallError("recvfrom", perr)
		}
		n, eof, err := spliceBurst(dstRC, srcRC)
		total += n
		if n > 0 {
			moved(n)
		}
		if err != nil || eof {
			return total, err
		}
	}
}

// spliceBurst moves what src has now (and what keeps arriving while it moves) to dst
// through a pooled pipe, returning when src has nothing more for the moment or at EOF.
func spliceBurst(dstRC, srcRC syscall.RawConn) (total int64, eof bool, err error) {
	p, err := getPipe()
	if err != nil {
		return 0, false, err
	}
	defer putPipe(p)
	for {
		// socket → pipe, without waiting: an empty socket ends the burst.
		var (
			n     int
			inErr error
		)
		if cerr := srcRC.Control(func(fd uintptr) {
			var nn int64
			nn, inErr = unix.Splice(int(fd), nil, p.w, nil, pipeSize-p.n, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
			if inErr == nil {
				n = int(nn) // on error nn is -1
			}
		}); cerr != nil {
			return total, false, cerr
		}
		switch {
		case inErr == nil && n == 0:
			eof = true
		case errors.Is(inErr, unix.EAGAIN):
			inErr = nil
		case inErr != nil:
			return total, false, os.NewSyscallError("splice", inErr)
		}
		p.n += n
		// pipe → socket, waiting for room in dst as needed.
		for p.n > 0 {
			var outErr error
			werr := dstRC.Write(func(fd uintptr) bool {
				var nn int64
				nn, outErr = unix.Splice(p.r, nil, int(fd), nil, p.n, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
				if errors.Is(outErr, unix.EAGAIN) {
					return false // dst is full: wait until it drains
				}
				if outErr == nil {
					p.n -= int(nn)
					total += nn
				}
				return true
			})
			if werr != nil {
				return total, false, werr
			}
			if outErr != nil {
				return total, false, os.NewSyscallError("splice", outErr)
			}
		}
		if eof || n == 0 {
			return total, eof, nil
		}
	}
}
