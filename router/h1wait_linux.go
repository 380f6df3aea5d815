package router

import (
	"net"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// peek looks at the socket's receive queue without taking from it or blocking: 1 when a
// byte is there, 0 at EOF, -1 when nothing has arrived (or on an error). It is a raw
// recvfrom because unix.Recvfrom allocates a socket address on every call.
func peek(fd uintptr) int {
	var b [1]byte
	n, _, errno := unix.Syscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1,
		unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
	switch {
	case errno == unix.EAGAIN:
		return -1
	case errno != 0:
		return 0 // a reset or other error: a read will report it
	}
	return int(n)
}

// waitReadable blocks until c has bytes (or EOF, or an error) to read, or its read
// deadline passes, without a buffer: an idle keep-alive connection then holds none.
//
// The socket is always peeked before the wait. Skipping that when the last read had
// drained it is not safe: RawConn.Read, like every read, first clears readiness the
// poller already noted, so bytes that arrived just before would never wake the wait.
func waitReadable(c *net.TCPConn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var w readWait
	return rc.Read(w.ready)
}

// readWait is waitReadable's callback state: a method value on a stack object rather
// than a closure, which would be allocated on every wait.
type readWait struct{ waited bool }

func (w *readWait) ready(fd uintptr) bool {
	if w.waited {
		// Woken by the poller: the read that follows finds out what arrived (and waits
		// again by itself after a spurious wake-up).
		return true
	}
	w.waited = true
	return peek(fd) >= 0
}

// peerClosed reports whether an idle pooled connection has been closed by its peer (or
// has unexpected bytes waiting, which makes it unusable as well).
func peerClosed(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return true
	}
	closed := false
	if err := rc.Control(func(fd uintptr) { closed = peek(fd) >= 0 }); err != nil {
		return true
	}
	return closed
}
