//go:build !linux

package router

import "net"

// waitReadable is a no-op where the socket cannot be peeked: the next read waits.
func waitReadable(*net.TCPConn) error { return nil }

func peerClosed(net.Conn) bool { return false }
