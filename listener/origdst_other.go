//go:build !linux

package listener

import (
	"errors"
	"net"
	"net/netip"
)

// OriginalDst needs Linux netfilter; elsewhere there is no redirected traffic to serve.
func OriginalDst(c *net.TCPConn) (netip.AddrPort, error) {
	return netip.AddrPort{}, errors.New("original destination: only supported on Linux")
}
