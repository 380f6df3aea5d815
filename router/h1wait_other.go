//go:build !linux

package router

import "net"

func peerClosed(net.Conn) bool { return false }

func peek(uintptr) int { return -1 }
