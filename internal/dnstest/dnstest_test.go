package dnstest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

func zone(name string) Reply {
	switch name {
	case "web.skiff.test":
		return Reply{Addrs: []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("::ffff:10.0.0.2")}}
	case "empty.skiff.test":
		return Reply{}
	case "fail.skiff.test":
		return Reply{RCode: dnsmessage.RCodeServerFailure}
	case "big.skiff.test":
		var as []netip.Addr
		for i := range 200 {
			as = append(as, netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}))
		}
		return Reply{Addrs: as}
	}
	return Reply{RCode: dnsmessage.RCodeNameError}
}

// serve runs the zone on UDP and TCP on one loopback port, and returns a Go resolver
// that asks it.
func serve(t *testing.T) *net.Resolver {
	t.Helper()
	var pc net.PacketConn
	var ln net.Listener
	for range 10 { // the UDP port may be taken for TCP
		var err error
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		if ln, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		pc.Close()
		pc = nil
	}
	if pc == nil {
		t.Fatal("no port free for both UDP and TCP")
	}
	go func() { _ = ServeUDP(pc, zone) }()
	go func() { _ = ServeTCP(ln, zone) }()
	t.Cleanup(func() { pc.Close(); ln.Close() })
	addr := pc.LocalAddr().String()
	return &net.Resolver{PreferGo: true, StrictErrors: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
}

func TestServeToGoResolver(t *testing.T) {
	r := serve(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	got, err := r.LookupNetIP(ctx, "ip", "WEB.skiff.test")
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(got, netip.Addr.Compare)
	if want := "[10.0.0.1 10.0.0.2 2001:db8::1]"; fmt.Sprint(got) != want {
		t.Errorf("web: %v, want %v", got, want)
	}

	// 200 A records do not fit a UDP answer: it comes truncated, the resolver asks
	// again over TCP.
	big, err := r.LookupNetIP(ctx, "ip4", "big.skiff.test")
	if err != nil || len(big) != 200 {
		t.Errorf("big: %d addresses, %v; want 200", len(big), err)
	}

	for _, name := range []string{"empty.skiff.test", "nowhere.skiff.test"} {
		_, err := r.LookupNetIP(ctx, "ip", name)
		var de *net.DNSError
		if !errors.As(err, &de) || !de.IsNotFound {
			t.Errorf("%s: %v, want not found", name, err)
		}
	}
	_, err = r.LookupNetIP(ctx, "ip", "fail.skiff.test")
	var de *net.DNSError
	if !errors.As(err, &de) || de.IsNotFound || !de.Temporary() {
		t.Errorf("fail: %v, want a temporary failure", err)
	}
}

func query(id uint16, name string, typ dnsmessage.Type, edns int) []byte {
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: id, RecursionDesired: true})
	_ = b.StartQuestions()
	_ = b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name), Type: typ, Class: dnsmessage.ClassINET})
	if edns > 0 {
		_ = b.StartAdditionals()
		var rh dnsmessage.ResourceHeader
		_ = rh.SetEDNS0(edns, dnsmessage.RCodeSuccess, false)
		_ = b.OPTResource(rh, dnsmessage.OPTResource{})
	}
	q, err := b.Finish()
	if err != nil {
		panic(err)
	}
	return q
}

func TestAnswerTruncatesForUDP(t *testing.T) {
	for _, c := range []struct {
		edns  int
		udp   bool
		trunc bool
	}{{0, true, true}, {1232, true, true}, {4096, true, false}, {0, false, false}} {
		resp := Answer(query(7, "big.skiff.test.", dnsmessage.TypeA, c.edns), c.udp, zone)
		var p dnsmessage.Parser
		h, err := p.Start(resp)
		if err != nil {
			t.Fatal(err)
		}
		if h.ID != 7 || h.Truncated != c.trunc {
			t.Errorf("%+v: id %d truncated %v", c, h.ID, h.Truncated)
		}
		if c.udp && len(resp) > max(c.edns, 512) {
			t.Errorf("%+v: %d bytes over UDP", c, len(resp))
		}
	}
}

// FuzzAnswer feeds the handler arbitrary bytes, as a socket may: it must not panic, and
// whatever it sends must be a well-formed response to the query's ID that fits UDP.
func FuzzAnswer(f *testing.F) {
	f.Add(query(1, "web.skiff.test.", dnsmessage.TypeA, 0))
	f.Add(query(2, "big.skiff.test.", dnsmessage.TypeAAAA, 1232))
	f.Add(query(3, "nowhere.", dnsmessage.TypeMX, 0))
	f.Add([]byte{0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, q []byte) {
		resp := Answer(q, true, zone)
		if resp == nil {
			return
		}
		if len(resp) > udpMax {
			t.Fatalf("%d bytes over UDP", len(resp))
		}
		var p dnsmessage.Parser
		h, err := p.Start(resp)
		if err != nil {
			t.Fatalf("unparsable response %x: %v", resp, err)
		}
		if !h.Response || len(q) < 2 || h.ID != uint16(q[0])<<8|uint16(q[1]) {
			t.Fatalf("header %+v does not answer query %x", h, q)
		}
		if _, err := p.AllQuestions(); err != nil {
			t.Fatalf("response questions: %v", err)
		}
		if _, err := p.AllAnswers(); err != nil {
			t.Fatalf("response answers: %v", err)
		}
	})
}
