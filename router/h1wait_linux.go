package router

import (
	"net"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// peek looks at the socket's receive queue without taking from it or blocking: 1 when a
// byte is there, 0 at EOF or on an error, -1 when nothing has arrived. It is a raw
// recvfrom because unix.Recvfrom allocates a socket address on every call, and a
// RawSyscall because it cannot block: a Syscall would wake the runtime's monitor thread
// (asleep while the process idles) on every reuse of a pooled connection, which costs
// two to three timed sleeps and a futex call per request at a steady low rate.
func peek(fd uintptr) int {
	var b [1]byte
	n, _, errno := unix.RawSyscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1,
		unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
	switch {
	case errno == unix.EAGAIN:
		return -1
	case errno != 0:
		return 0 // a reset or other error: a read will report it
	}
	return int(n)
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
