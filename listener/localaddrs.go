package listener

import (
	"net"
	"net/netip"
	"sync/atomic"
	"time"
)

// LocalAddrs is the set of this namespace's own addresses, refreshed in the background so
// the per-connection check is one atomic load and a map lookup.
type LocalAddrs struct {
	set  atomic.Pointer[map[netip.Addr]struct{}]
	stop chan struct{}
}

// localRefresh is how often the set is re-read; addresses of a pod or VM rarely change.
const localRefresh = 5 * time.Second

// NewLocalAddrs reads the addresses now and keeps them fresh until Stop.
func NewLocalAddrs() *LocalAddrs {
	l := &LocalAddrs{stop: make(chan struct{})}
	l.refresh()
	go func() {
		t := time.NewTicker(localRefresh)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				l.refresh()
			case <-l.stop:
				return
			}
		}
	}()
	return l
}

func (l *LocalAddrs) refresh() {
	m := map[netip.Addr]struct{}{}
	addrs, err := net.InterfaceAddrs()
	if err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(n.IP); ok {
					m[ip.Unmap()] = struct{}{}
				}
			}
		}
	}
	l.set.Store(&m)
}

// Has reports whether a is one of this namespace's addresses.
func (l *LocalAddrs) Has(a netip.Addr) bool {
	_, ok := (*l.set.Load())[a.Unmap()]
	return ok
}

// Stop ends the background refresh.
func (l *LocalAddrs) Stop() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
}
