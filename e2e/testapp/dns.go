package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"golang.org/x/net/dns/dnsmessage"

	"skiff/internal/dnstest"
)

func init() {
	moreCmds["dns"] = serveDNS
	moreUsage += `
dns server:
  dns -listen IP:PORT -records FILE
          authoritative A/AAAA answers over UDP and TCP from FILE, read again for every
          query: one "name address" per line (several lines per name for several
          addresses), '#' comments; a name alone exists with no addresses (empty
          answer); "name servfail" answers SERVFAIL, "name drop" nothing at all; other
          names get NXDOMAIN. An unreadable or broken file answers SERVFAIL. Replace the
          file by renaming a new one over it, so no query reads it half written.
`
}

func serveDNS(args []string) error {
	fs := flag.NewFlagSet("dns", flag.ContinueOnError)
	addr := fs.String("listen", ":0", "address to listen on, UDP and TCP")
	file := fs.String("records", "", "file of records")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *file == "" {
		return fmt.Errorf("-records is required")
	}
	pc, err := net.ListenPacket("udp", *addr)
	if err != nil {
		return err
	}
	// TCP on the port UDP got, for answers too big for a datagram.
	ln, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		return err
	}
	lookup := func(name string) dnstest.Reply {
		data, err := os.ReadFile(*file)
		if err != nil {
			fmt.Fprintf(os.Stderr, "testapp dns: %v\n", err)
			return dnstest.Reply{RCode: dnsmessage.RCodeServerFailure}
		}
		rep, err := recordsLookup(data, name)
		if err != nil {
			fmt.Fprintf(os.Stderr, "testapp dns: %s: %v\n", *file, err)
		}
		return rep
	}
	emit(map[string]string{"listening": pc.LocalAddr().String()})
	errc := make(chan error, 2)
	go func() { errc <- dnstest.ServeUDP(pc, lookup) }()
	go func() { errc <- dnstest.ServeTCP(ln, lookup) }()
	return <-errc
}

// recordsLookup answers for name (lowercase, no trailing dot) from a records file. A
// broken file gives SERVFAIL and the error, so a test's mistake is not an answer.
func recordsLookup(data []byte, name string) (dnstest.Reply, error) {
	rep := dnstest.Reply{RCode: dnsmessage.RCodeNameError}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) > 2 {
			return dnstest.Reply{RCode: dnsmessage.RCodeServerFailure}, fmt.Errorf("line %d: want \"name [address]\", got %q", n, line)
		}
		if strings.ToLower(strings.TrimSuffix(f[0], ".")) != name {
			continue
		}
		if rep.RCode == dnsmessage.RCodeNameError {
			rep.RCode = dnsmessage.RCodeSuccess
		}
		if len(f) == 1 {
			continue
		}
		switch f[1] {
		case "servfail":
			return dnstest.Reply{RCode: dnsmessage.RCodeServerFailure}, nil
		case "drop":
			return dnstest.Reply{Drop: true}, nil
		}
		a, err := netip.ParseAddr(f[1])
		if err != nil || a.Zone() != "" {
			return dnstest.Reply{RCode: dnsmessage.RCodeServerFailure}, fmt.Errorf("line %d: %q is not an IP address", n, f[1])
		}
		rep.Addrs = append(rep.Addrs, a)
	}
	if err := sc.Err(); err != nil {
		return dnstest.Reply{RCode: dnsmessage.RCodeServerFailure}, err
	}
	return rep, nil
}
