package listener

import (
	"net"

	"golang.org/x/sys/unix"
)

// bytesReceived is the kernel's count of bytes received on c (tcpi_bytes_received).
func bytesReceived(c *net.TCPConn) uint64 {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0
	}
	var n uint64
	_ = rc.Control(func(fd uintptr) {
		if info, err := unix.GetsockoptTCPInfo(int(fd), unix.SOL_TCP, unix.TCP_INFO); err == nil {
			n = info.Bytes_received
		}
	})
	return n
}
