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
	// got, when set, takes the bytes of each read instead of read's caller (see taker).
	got taker
	// snd is the sending side of an upstream connection's reader (see sockSend).
	snd *sockSend
	// hold keeps the buffer while waiting (its bytes may still be referred to).
	hold bool
	n    int
	err  error
}

// taker takes the n bytes a read put in its owner's buffer space, and returns true to
// have the read go on for more.
//
// After a read shorter than the space offered, the socket was empty: the runtime's
// poller marks it readable for any byte that comes later, and nothing clears that mark
// before the wait, since the read (RawConn.Read) is still the same one. So the next step
// is the wait, not a read that would find nothing. (A fresh RawConn.Read clears the mark
// as it begins, which is why its first step is always a read.)
type taker interface{ take(n int) bool }

// sockSend is what a reader needs to send a request from inside the read of its answer
// (see send): only upstream connections have one.
type sockSend struct {
	// pending is the request, written after a check when check is set (the peer has
	// neither closed the connection nor sent anything: errStale if it has).
	pending []byte
	check   bool
	werr    error            // the error that write met, if any
	pk      func(fd uintptr) // peek into peeked, made once (closedByPeer)
	peeked  int
}

// errIdleEnded is a read that the owner ended as it went idle.
var errIdleEnded = errors.New("read ended on going idle")

// errStale is a pooled connection found closed, or with unasked-for bytes, before
// anything was written to it.
var errStale = errors.New("pooled connection closed by upstream")

func newSockReader(c *net.TCPConn, buf func() []byte, idle func() bool) *sockReader {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	s := &sockReader{rc: rc, buf: buf, idle: idle}
	s.fn = s.rawRead
	return s
}

// sending gives s the means to send (sockSend).
func (s *sockReader) sending() *sockReader {
	snd := &sockSend{}
	snd.pk = func(fd uintptr) { snd.peeked = peek(fd) }
	s.snd = snd
	return s
}

// closedByPeer is peerClosed for the socket s reads (a sending one), without allocating.
func (s *sockReader) closedByPeer() bool {
	s.snd.peeked = -1
	if err := s.rc.Control(s.snd.pk); err != nil {
		return true
	}
	return s.snd.peeked >= 0
}

// read reads once, waiting (with no buffer held) until there is something to read.
// With a request pending, it first sends that, and waits for the answer without looking.
func (s *sockReader) read() (int, error) {
	s.n, s.err = 0, nil
	err := s.rc.Read(s.fn)
	if snd := s.snd; snd != nil {
		if err == nil && snd.pending != nil && s.err == nil {
			// The send buffer filled before the request was all out: the rest goes out
			// through the poller, and the read looks first, as a plain one does.
			err = s.writeRest()
			if err == nil {
				err = s.rc.Read(s.fn)
			}
		}
		snd.pending, snd.check = nil, false
	}
	if err != nil {
		return 0, err
	}
	return s.n, s.err
}

func (s *sockReader) writeRest() error {
	w := sockWriter{rc: s.rc, p: s.snd.pending}
	s.snd.pending = nil
	if err := s.rc.Write(w.rawWrite); err != nil {
		return err
	}
	s.snd.werr = w.err
	return nil
}

func (s *sockReader) rawRead(fd uintptr) bool {
	if snd := s.snd; snd != nil && snd.pending != nil {
		if !s.send(fd) {
			return true
		}
		if snd.werr == nil {
			return s.wait() // nothing can have come before the request went
		}
	}
	for {
		p := s.buf()
		n, _, errno := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
		switch {
		case errno == syscall.EINTR:
			continue
		case errno == syscall.EAGAIN:
			return s.wait()
		case errno != 0:
			s.err = &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", errno)}
		case n == 0:
			s.err = io.EOF
		case s.got != nil:
			if !s.got.take(int(n)) {
				return true
			}
			if int(n) < len(p) {
				return s.wait() // the socket was empty: see taker
			}
			continue
		default:
			s.n = int(n)
		}
		return true
	}
}

// wait is the step to the poller's wait when there is nothing to read: false, unless
// the owner ends the read as it goes idle.
func (s *sockReader) wait() bool {
	if !s.hold && !s.idle() {
		s.err = errIdleEnded
		return true
	}
	return false
}

// send writes the pending request from inside the read. It returns false when the read
// is to end at once: the connection is stale (errStale), or the send buffer is full
// (pending keeps the rest). After a write error the read goes on: the upstream may have
// answered before it closed.
//
// Writing here rather than before the read saves the read that would find nothing:
// the answer cannot come before the request has gone, and this read's wait began
// (RawConn.Read cleared the poller's mark) before the write, so the mark the answer
// sets is not lost.
func (s *sockReader) send(fd uintptr) bool {
	snd := s.snd
	rest, err := writeSome(fd, snd.pending, snd.check)
	snd.check = false
	switch {
	case err == errStale:
		snd.pending, s.err = nil, errStale
		return false
	case err != nil:
		snd.pending, snd.werr = nil, err
		return true
	case len(rest) > 0:
		snd.pending = rest
		return false
	}
	snd.pending = nil
	return true
}

// writeSome writes p to fd until all of it is out or the send buffer is full, and
// returns what is left. With check set it first makes sure the peer has neither closed
// the connection nor sent anything (a pooled one), and writes nothing (errStale) if it
// has.
func writeSome(fd uintptr, p []byte, check bool) (rest []byte, err error) {
	if check && peek(fd) >= 0 {
		return p, errStale
	}
	for len(p) > 0 {
		n, _, errno := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
		switch {
		case errno == syscall.EINTR:
			continue
		case errno == syscall.EAGAIN:
			return p, nil
		case errno != 0:
			return p, &net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("write", errno)}
		}
		p = p[n:]
	}
	return nil, nil
}

// sockWriter writes to a TCP socket with raw write(2) calls, waiting through the poller
// when the socket's send buffer is full.
type sockWriter struct {
	rc  syscall.RawConn
	fn  func(fd uintptr) bool
	p   []byte
	n   int
	err error
	// writes counts the Write calls that wrote (see send in h1proxy.go).
	writes uint32
	// check: before the next write, make sure the peer has neither closed the connection
	// nor sent anything (it is a pooled one): errStale, with nothing written, if it has.
	check bool
	// deferTo, when set, takes the next Write's bytes instead: they go out from inside
	// the read of the answer (sockReader.send), the check with them. It is a sending
	// reader (sockSend).
	deferTo *sockReader
}

// newSockWriter returns a writer for c, or nil if its RawConn is not to be had.
func newSockWriter(c *net.TCPConn) *sockWriter {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	w := &sockWriter{rc: rc}
	w.fn = w.rawWrite
	return w
}

// writerFor is a sockWriter on c when there is one to be had, else c.
func writerFor(c *net.TCPConn) io.Writer {
	if w := newSockWriter(c); w != nil {
		return w
	}
	return c
}

// Write writes p, or with deferTo set hands it over unwritten: p must then stay as it
// is until that read is done.
func (w *sockWriter) Write(p []byte) (int, error) {
	if r := w.deferTo; r != nil {
		w.deferTo = nil
		r.snd.pending, r.snd.check, r.snd.werr = p, w.check, nil
		w.check = false
		return len(p), nil
	}
	w.writes++
	w.p, w.n, w.err = p, 0, nil
	err := w.rc.Write(w.fn)
	w.p = nil
	if err == nil {
		err = w.err
	}
	return w.n, err
}

func (w *sockWriter) rawWrite(fd uintptr) bool {
	rest, err := writeSome(fd, w.p, w.check)
	w.check = false
	w.n += len(w.p) - len(rest)
	w.p = rest
	if err != nil {
		w.err = err
		return true
	}
	return len(rest) == 0 // false: the send buffer is full, wait until it drains
}
