package router

import (
	"bytes"
	"encoding/binary"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// readCountingConn counts the reads the server makes on a downstream connection.
type readCountingConn struct {
	*testConn
	reads atomic.Int64
}

func (c *readCountingConn) Read(p []byte) (int, error) {
	c.reads.Add(1)
	return c.testConn.Read(p)
}

// TestH2CReadsBuffered: frames that arrive together are read together, not with two
// reads each (header, then payload), which is what net/http's HTTP/2 server does on its
// own. All 100 PINGs are answered, so nothing is left behind in the buffer.
func TestH2CReadsBuffered(t *testing.T) {
	dst := closedPort(t) // PINGs go nowhere
	p := startProxy(t, dst, false)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan *readCountingConn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		rc := &readCountingConn{testConn: &testConn{Conn: c, meta: Meta{Direction: "outbound", Dst: dst, ConnID: 1}}}
		accepted <- rc
		p.h.ServeConn(rc)
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	const pings = 100
	var out bytes.Buffer
	out.WriteString(http2.ClientPreface)
	fr := http2.NewFramer(&out, nil)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	for i := range pings {
		var data [8]byte
		binary.BigEndian.PutUint64(data[:], uint64(i))
		if err := fr.WritePing(false, data); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Write(out.Bytes()); err != nil { // one write: it arrives together
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	in := http2.NewFramer(nil, c)
	for acked := 0; acked < pings; {
		f, err := in.ReadFrame()
		if err != nil {
			t.Fatalf("after %d PING acks: %v", acked, err)
		}
		if pf, ok := f.(*http2.PingFrame); ok && pf.IsAck() {
			if got := binary.BigEndian.Uint64(pf.Data[:]); got != uint64(acked) {
				t.Fatalf("PING ack %d for PING %d", got, acked)
			}
			acked++
		}
	}
	// The preface takes a read or two (net/http peeks at it), the rest of the segment
	// one or a few more; unbuffered it would be 2 per frame.
	if n := (<-accepted).reads.Load(); n > 20 {
		t.Errorf("%d reads for %d frames, want them read a segment at a time", n, pings+1)
	}
}
