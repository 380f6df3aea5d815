package router

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// Raw socket I/O for the fast paths. Both types go through the socket's RawConn, so the
// runtime's poller still does the waiting, deadlines hold and a concurrent Close is
// safe; but the read(2) and write(2) themselves are made with RawSyscall, without telling
// the scheduler. A read or write on a non-blocking socket never blocks, and the
// scheduler's bookkeeping around a system call (and, when the kernel's loopback or veth
// work makes one last over 20 µs, the runtime's monitor handing the processor to another
// thread, and the futex calls that go with it) cost about as much as the call itself.

// readableTCP is the plain TCP socket under c to read directly (without a buffer held
// while waiting), or nil: there is none (mesh TLS), or sniffed bytes are still to be
// replayed through c.
func readableTCP(c net.Conn) *net.TCPConn {
	if tb, ok := c.(tcpBacked); ok {
		if tcp, replaying := tb.TCP(); !replaying {
			return tcp
		}
		return nil
	}
	tcp, _ := c.(*net.TCPConn)
	return tcp
}

// sockReader reads a TCP socket into a buffer that its owner takes from a pool only when
// bytes have arrived: an idle connection then holds no buffer, and a busy one pays one
// read(2) per batch of bytes, not a peek to wait with and then a read. (Waiting through
// the socket's RawConn is what lets the buffer go while the poller waits.)
type sockReader struct {
	rc  syscall.RawConn
	fn  func(fd uintptr) bool // rawRead, made once: a method value passed on allocates
	buf func() []byte         // the owner's free buffer space, taking a buffer if it has none
	// idle runs when there is nothing to read, before the wait: the owner may give an
	// empty buffer back, and returns false to end the read (with errIdleEnded) instead.
	idle func() bool
	// hold keeps the buffer while waiting (its bytes may still be referred to).
	hold bool
	n    int
	err  error
}

// errIdleEnded is a read that the owner ended as it went idle.
var errIdleEnded = errors.New("read ended on going idle")

func newSockReader(c *net.TCPConn, buf func() []byte, idle func() bool) *sockReader {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	s := &sockReader{rc: rc, buf: buf, idle: idle}
	s.fn = s.rawRead
	return s
}

// read reads once, waiting (with no buffer held) until there is something to read.
func (s *sockReader) read() (int, error) {
	s.n, s.err = 0, nil
	if err := s.rc.Read(s.fn); err != nil {
		return 0, err
	}
	return s.n, s.err
}

func (s *sockReader) rawRead(fd uintptr) bool {
	p := s.buf()
	for {
		n, _, errno := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
		switch {
		case errno == syscall.EINTR:
			continue
		case errno == syscall.EAGAIN:
			if !s.hold && !s.idle() {
				s.err = errIdleEnded
				return true
			}
			return false
		case errno != 0:
			s.err = &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", errno)}
		case n == 0:
			s.err = io.EOF
		default:
			s.n = int(n)
		}
		return true
	}
}

// sockWriter writes to a TCP socket with raw write(2) calls, waiting through the poller
// when the socket's send buffer is full.
type sockWriter struct {
	rc  syscall.RawConn
	fn  func(fd uintptr) bool
	p   []byte
	n   int
	err error
}

// newSockWriter returns a writer for c, or c itself if its RawConn is not to be had.
func newSockWriter(c *net.TCPConn) io.Writer {
	rc, err := c.SyscallConn()
	if err != nil {
		return c
	}
	w := &sockWriter{rc: rc}
	w.fn = w.rawWrite
	return w
}

func (w *sockWriter) Write(p []byte) (int, error) {
	w.p, w.n, w.err = p, 0, nil
	err := w.rc.Write(w.fn)
	w.p = nil
	if err == nil {
		err = w.err
	}
	return w.n, err
}

func (w *sockWriter) rawWrite(fd uintptr) bool {
	for len(w.p) > 0 {
		n, _, errno := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(unsafe.SliceData(w.p))), uintptr(len(w.p)))
		switch {
		case errno == syscall.EINTR:
			continue
		case errno == syscall.EAGAIN:
			return false // the send buffer is full: wait until it drains
		case errno != 0:
			w.err = &net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("write", errno)}
			return true
		}
		w.p = w.p[n:]
		w.n += int(n)
	}
	return true
}
