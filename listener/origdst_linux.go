package listener

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// soOriginalDst is SO_ORIGINAL_DST (netfilter_ipv4.h) and IP6T_SO_ORIGINAL_DST
// (netfilter_ipv6/ip6_tables.h): both are 80, at SOL_IP and SOL_IPV6.
const soOriginalDst = 80

// OriginalDst returns the destination a redirected connection was addressed to before
// iptables REDIRECT rewrote it, read from conntrack. It uses SyscallConn().Control,
// not File(), which would dup the descriptor and switch it to blocking mode.
func OriginalDst(c *net.TCPConn) (netip.AddrPort, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	local, _ := c.LocalAddr().(*net.TCPAddr)
	v6 := local != nil && local.IP.To4() == nil
	var (
		ap    netip.AddrPort
		opErr error
	)
	err = rc.Control(func(fd uintptr) {
		// Big enough for sockaddr_in6 (28 bytes); sockaddr_in is 16.
		var buf [28]byte
		size := uint32(len(buf))
		level := unix.SOL_IP
		if v6 {
			level = unix.SOL_IPV6
		}
		_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, uintptr(level), soOriginalDst,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&size)), 0)
		if e != 0 {
			opErr = e
			return
		}
		port := binary.BigEndian.Uint16(buf[2:4])
		if v6 {
			addr := netip.AddrFrom16([16]byte(buf[8:24]))
			ap = netip.AddrPortFrom(addr, port)
		} else {
			ap = netip.AddrPortFrom(netip.AddrFrom4([4]byte(buf[4:8])), port)
		}
	})
	if err != nil {
		return netip.AddrPort{}, err
	}
	if opErr != nil {
		return netip.AddrPort{}, fmt.Errorf("reading original destination: %w", opErr)
	}
	return ap, nil
}
