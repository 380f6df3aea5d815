package router

import (
	"io"
	"net"
	"syscall"
)

// sockReader reads a TCP socket into a buffer that its owner takes from a pool only when
// bytes have arrived: an idle connection then holds no buffer, and a busy one pays one
// read(2) per batch of bytes, not a peek to wait with and then a read. (Waiting through
// the socket's RawConn is what lets the buffer go while the poller waits.)
type sockReader struct {
	rc   syscall.RawConn
	fn   func(fd uintptr) bool // rawRead, made once: a method value passed on allocates
	buf  func() []byte         // the owner's free buffer space, taking a buffer if it has none
	idle func()                // nothing to read: the owner may give an empty buffer back
	n    int
	err  error
}

func newSockReader(c *net.TCPConn, buf func() []byte, idle func()) *sockReader {
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
		n, err := syscall.Read(int(fd), p)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			s.idle()
			return false
		case err != nil:
			s.err = &net.OpError{Op: "read", Net: "tcp", Err: err}
		case n == 0:
			s.err = io.EOF
		default:
			s.n = n
		}
		return true
	}
}
