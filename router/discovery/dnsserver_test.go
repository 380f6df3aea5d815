package discovery

import (
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/net/dns/dnsmessage"

	"skiff/internal/dnstest"
)

// dnsServer is an authoritative DNS server on 127.0.0.1 whose names and failures a test
// changes while it runs.
type dnsServer struct {
	addr netip.AddrPort

	mu    sync.Mutex
	names map[string][]netip.Addr // a name present with no addresses exists but is empty
	fail  string                  // "": answer; "servfail"; "drop": no answer at all

	queries atomic.Int64 // for each name asked, A and AAAA count one each
}

func startDNS(t *testing.T) *dnsServer {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &dnsServer{addr: pc.LocalAddr().(*net.UDPAddr).AddrPort(), names: map[string][]netip.Addr{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = dnstest.ServeUDP(pc, d.lookup)
	}()
	t.Cleanup(func() {
		pc.Close()
		<-done
	})
	return d
}

func (d *dnsServer) lookup(name string) dnstest.Reply {
	d.queries.Add(1)
	d.mu.Lock()
	defer d.mu.Unlock()
	switch d.fail {
	case "servfail":
		return dnstest.Reply{RCode: dnsmessage.RCodeServerFailure}
	case "drop":
		return dnstest.Reply{Drop: true}
	}
	addrs, ok := d.names[name]
	if !ok {
		return dnstest.Reply{RCode: dnsmessage.RCodeNameError}
	}
	return dnstest.Reply{Addrs: addrs}
}

// set gives name these addresses (none: the name exists with no records).
func (d *dnsServer) set(name string, addrs ...string) {
	as := []netip.Addr{}
	for _, a := range addrs {
		as = append(as, netip.MustParseAddr(a))
	}
	d.mu.Lock()
	d.names[strings.ToLower(name)] = as
	d.mu.Unlock()
}

func (d *dnsServer) remove(name string) {
	d.mu.Lock()
	delete(d.names, strings.ToLower(name))
	d.mu.Unlock()
}

func (d *dnsServer) failWith(mode string) {
	d.mu.Lock()
	d.fail = mode
	d.mu.Unlock()
}
