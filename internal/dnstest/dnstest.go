// Package dnstest is a small authoritative DNS server for tests: it answers A and AAAA
// queries from a lookup function, over UDP and TCP. The discovery unit tests and the
// end-to-end test app both serve names with it, so that what a test changes (a name's
// addresses, a failure) is what a real resolver sees on the wire.
package dnstest

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// Reply is what the server says about a name.
type Reply struct {
	// Addrs are the name's addresses; a query gets those of its type (A: IPv4, AAAA:
	// IPv6). A name that exists with none of the type asked gets an empty answer.
	Addrs []netip.Addr
	// RCode is the response code: RCodeSuccess, RCodeNameError (NXDOMAIN: Addrs are
	// ignored), RCodeServerFailure...
	RCode dnsmessage.RCode
	// Drop sends no response at all, so the client times out.
	Drop bool
}

// Lookup says what to answer for name: lowercase, without the trailing dot.
type Lookup func(name string) Reply

// Sizes of responses: what a UDP client without EDNS0 accepts (RFC 1035), the most this
// server sends over UDP to one that advertises more, and a TCP message's limit.
const (
	udpMin = 512
	udpMax = 4096
	tcpMax = 65535
)

// Answer returns the response to one query message, or nil when nothing is to be sent:
// bytes too broken to answer (no header) or a Reply with Drop. udp limits the response to
// what a UDP client accepts; one that does not fit is sent truncated (TC, no answers), so
// the client retries over TCP. The bytes are untrusted: Answer never panics on them.
func Answer(query []byte, udp bool, lookup Lookup) []byte {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil || h.Response {
		// Without a header there is no ID to answer to; a response is never answered, so
		// two servers cannot bounce a packet between them for ever.
		return nil
	}
	resp := dnsmessage.Header{ID: h.ID, Response: true, OpCode: h.OpCode, RecursionDesired: h.RecursionDesired}
	if h.OpCode != 0 {
		resp.RCode = dnsmessage.RCodeNotImplemented
		return build(resp, nil, nil, 0)
	}
	qs, err := p.AllQuestions()
	if err != nil || len(qs) != 1 {
		resp.RCode = dnsmessage.RCodeFormatError
		return build(resp, nil, nil, 0)
	}
	q := qs[0]
	limit := tcpMax
	edns := 0 // the client's advertised UDP size, 0 if it sent no OPT record
	if err := p.SkipAllAnswers(); err == nil {
		if err := p.SkipAllAuthorities(); err == nil {
			// A broken additional section only costs the client EDNS0.
			if add, err := p.AllAdditionals(); err == nil {
				for _, r := range add {
					if r.Header.Type == dnsmessage.TypeOPT {
						edns = max(int(r.Header.Class), udpMin)
					}
				}
			}
		}
	}
	if udp {
		limit = udpMin
		if edns > 0 {
			limit = min(edns, udpMax)
		}
	}

	name := strings.ToLower(strings.TrimSuffix(q.Name.String(), "."))
	rep := lookup(name)
	if rep.Drop {
		return nil
	}
	resp.Authoritative = true
	resp.RCode = rep.RCode
	var answers []netip.Addr
	if rep.RCode == dnsmessage.RCodeSuccess && q.Class == dnsmessage.ClassINET {
		for _, a := range rep.Addrs {
			if (q.Type == dnsmessage.TypeA && a.Unmap().Is4()) || (q.Type == dnsmessage.TypeAAAA && a.Is6() && !a.Is4In6()) {
				answers = append(answers, a)
			}
		}
	}
	if b := build(resp, &q, answers, edns); b != nil && len(b) <= limit {
		return b
	}
	resp.Truncated = true
	return build(resp, &q, nil, edns)
}

// ttl of the records served: short, as a headless Service's are, so a caching resolver
// between the server and the client would not hide a change for long.
const ttl = 5

// build encodes a response; q nil leaves out the question. edns > 0 adds an OPT record,
// as RFC 6891 asks of a server answering a query that had one.
func build(h dnsmessage.Header, q *dnsmessage.Question, answers []netip.Addr, edns int) []byte {
	b := dnsmessage.NewBuilder(make([]byte, 0, udpMin), h)
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil
	}
	if q != nil {
		if err := b.Question(*q); err != nil {
			return nil
		}
	}
	if err := b.StartAnswers(); err != nil {
		return nil
	}
	for _, a := range answers {
		rh := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: ttl}
		var err error
		if a.Unmap().Is4() {
			err = b.AResource(rh, dnsmessage.AResource{A: a.Unmap().As4()})
		} else {
			err = b.AAAAResource(rh, dnsmessage.AAAAResource{AAAA: a.As16()})
		}
		if err != nil {
			return nil
		}
	}
	if edns > 0 {
		if err := b.StartAdditionals(); err != nil {
			return nil
		}
		var rh dnsmessage.ResourceHeader
		if err := rh.SetEDNS0(udpMax, dnsmessage.RCodeSuccess, false); err != nil {
			return nil
		}
		if err := b.OPTResource(rh, dnsmessage.OPTResource{}); err != nil {
			return nil
		}
	}
	out, err := b.Finish()
	if err != nil {
		return nil
	}
	return out
}

// ServeUDP answers the queries arriving on pc until it is closed.
func ServeUDP(pc net.PacketConn, lookup Lookup) error {
	buf := make([]byte, tcpMax)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		if resp := Answer(buf[:n], true, lookup); resp != nil {
			_, _ = pc.WriteTo(resp, from)
		}
	}
}

// tcpIdle is how long a TCP connection may wait for its next query.
const tcpIdle = 10 * time.Second

// ServeTCP answers the queries of the connections accepted on ln until it is closed:
// each message framed by a two-byte length (RFC 1035 4.2.2), several per connection.
func ServeTCP(ln net.Listener, lookup Lookup) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		go func() {
			defer c.Close()
			serveConn(c, lookup)
		}()
	}
}

func serveConn(c net.Conn, lookup Lookup) {
	var size [2]byte
	buf := make([]byte, tcpMax)
	for {
		_ = c.SetDeadline(time.Now().Add(tcpIdle))
		if _, err := io.ReadFull(c, size[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint16(size[:]))
		if _, err := io.ReadFull(c, buf[:n]); err != nil {
			return
		}
		resp := Answer(buf[:n], false, lookup)
		if resp == nil {
			continue // dropped: the client's own timeout ends the wait
		}
		out := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(resp)), uint16(len(resp)))
		if _, err := c.Write(append(out, resp...)); err != nil {
			return
		}
	}
}
