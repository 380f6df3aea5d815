package listener

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

// sockopts reads SO_KEEPALIVE and TCP_NODELAY off c's socket.
func sockopts(t *testing.T, c *net.TCPConn) (keepAlive, noDelay bool) {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var ka, nd int
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		if ka, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_KEEPALIVE); gerr == nil {
			nd, gerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NODELAY)
		}
	}); err != nil || gerr != nil {
		t.Fatal(err, gerr)
	}
	return ka != 0, nd != 0
}

// The connections whose peer is the workload beside the proxy (accepted outbound,
// dialed inbound) have no TCP keep-alive; those with a peer on another host keep it.
// All have Nagle off.
func TestKeepAliveOnlyWithOtherHosts(t *testing.T) {
	s := testServer(t)
	s.cfg.Proxy.OutboundPort, s.cfg.Proxy.InboundPort = 0, 0
	t.Cleanup(func() { s.Shutdown(context.Background()) })

	for _, tc := range []struct {
		dir  Direction
		want bool
	}{{Outbound, false}, {Inbound, true}} {
		lns, err := s.Listen(tc.dir)
		if err != nil {
			t.Fatal(err)
		}
		port := lns[0].Addr().(*net.TCPAddr).Port
		client, err := net.Dial("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		down, err := lns[0].AcceptTCP()
		if err != nil {
			t.Fatal(err)
		}
		defer down.Close()
		if ka, nd := sockopts(t, down); ka != tc.want || !nd {
			t.Errorf("accepted %s: keep-alive %v, nodelay %v; want keep-alive %v, nodelay true", tc.dir, ka, nd, tc.want)
		}
	}

	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	dst := netip.MustParseAddrPort(ln.Addr().String())
	for _, tc := range []struct {
		dir  Direction
		want bool
	}{{Outbound, true}, {Inbound, false}} {
		up, err := s.dial(context.Background(), tc.dir, dst)
		if err != nil {
			t.Fatal(err)
		}
		if ka, nd := sockopts(t, up); ka != tc.want || !nd {
			t.Errorf("dialed %s: keep-alive %v, nodelay %v; want keep-alive %v, nodelay true", tc.dir, ka, nd, tc.want)
		}
		_ = up.Close()
	}
}
