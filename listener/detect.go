package listener

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"skiff/listener/sniff"
)

// How a connection's protocol is found (DESIGN: sniff by peeking and replaying).
//
// Client-first protocols (HTTP, TLS, gRPC) send as soon as they connect, so the first
// read nearly always holds enough to decide, and sniffing adds no wait. Server-first
// protocols (SMTP, MySQL, FTP, SSH servers' banners) wait for the server to speak. Istio
// needs such ports declared and Linkerd waits 10 s; skiff instead waits only
// sniff.server_first_wait (20 ms by default) for the client, then dials the destination
// and lets whichever side speaks first decide: the server's greeting marks the connection
// opaque TCP and reaches the client at once; the client's bytes are sniffed as usual.
//
// Nothing sniffed is lost: the client's bytes are kept and written first (or replayed to
// the HTTP server), the server's greeting is written to the client, and only then does
// the relay hand the two raw sockets to splice.

// sniffResult is what the listener learnt from a connection's first bytes.
type sniffResult struct {
	res   sniff.Result
	buf   *[]byte // pooled; the client's first bytes are (*buf)[:n]
	n     int
	up    net.Conn // dialled while the client was silent (TCP, or mTLS to a mesh peer), or nil
	hello []byte   // what the server said first, to pass to the client; nil if nothing
}

func (r *sniffResult) head() []byte {
	if r.buf == nil {
		return nil
	}
	return (*r.buf)[:r.n]
}

// release returns the peek buffer to the pool once its bytes are no longer needed.
func (r *sniffResult) release() {
	if r.buf != nil {
		peekPool.Put(r.buf)
		r.buf = nil
	}
}

var peekPool = sync.Pool{New: func() any { b := make([]byte, sniff.MaxPeek); return &b }}

// greetingSize bounds the first read from a server that spoke first.
const greetingSize = 4 << 10

// aLongTimeAgo is a deadline in the past, used to wake a blocked read.
var aLongTimeAgo = time.Unix(1, 0)

// sniffConn reads the client's first bytes (and, if the client is silent, dials the
// destination and waits for either side) and classifies the connection. On error the
// caller resets the client; any upstream dialled is closed here.
//
// down is the accepted TCP connection, or the plaintext inside a mesh mTLS connection.
// With dial nil nothing is dialled for a silent client (strict mTLS: the destination
// must not speak to a peer not yet authenticated): the client has sniff.timeout to
// speak, and one that does not is reported as TCP with no bytes.
func (s *Server) sniffConn(down net.Conn, dial func() (net.Conn, error)) (sniffResult, error) {
	r := sniffResult{buf: peekPool.Get().(*[]byte)}
	b := *r.buf
	wait := s.cfg.Sniff.ServerFirstWait
	if dial == nil {
		wait = s.cfg.Sniff.Timeout
	}
	_ = down.SetReadDeadline(time.Now().Add(wait))
	n, err := down.Read(b)
	r.n = n
	if n == 0 && isTimeout(err) && dial == nil {
		r.res.Proto = sniff.TCP
		_ = down.SetReadDeadline(time.Time{})
		return r, nil
	}
	if n == 0 && isTimeout(err) {
		up, err := dial()
		if err != nil {
			r.release()
			return r, err
		}
		r.up = up
		if done, err := s.firstSpeaker(down, &r); done || err != nil {
			_ = down.SetReadDeadline(time.Time{})
			return r, err
		}
	} else if err != nil && n == 0 {
		// The client closed (or reset) without a byte: relay as opaque, which passes the
		// close on; a reset is the caller's to handle.
		r.res.Proto = sniff.TCP
		if isTimeout(err) || errors.Is(err, errEOF) {
			return r, nil
		}
		r.release()
		return r, err
	}
	// The client spoke: classify, reading more while the bytes so far are a valid prefix.
	deadline := time.Now().Add(s.cfg.Sniff.Timeout)
	for {
		res, more := sniff.Classify(b[:r.n])
		if !more {
			r.res = res
			break
		}
		if r.n == len(b) {
			r.res = sniff.Final(b[:r.n])
			break
		}
		_ = down.SetReadDeadline(deadline)
		m, err := down.Read(b[r.n:])
		r.n += m
		if err != nil {
			r.res = sniff.Final(b[:r.n])
			if isTimeout(err) || errors.Is(err, errEOF) {
				break
			}
			if r.up != nil {
				_ = r.up.Close()
			}
			r.release()
			return r, err
		}
	}
	_ = down.SetReadDeadline(time.Time{})
	return r, nil
}

// firstSpeaker waits, with an upstream already dialled, for the client or the server to
// send. It reports done when the connection is decided as opaque TCP (the server spoke,
// or the client closed); otherwise the client's first bytes are in r for classifying.
func (s *Server) firstSpeaker(down net.Conn, r *sniffResult) (done bool, err error) {
	type readResult struct {
		n   int
		err error
	}
	hello := make([]byte, greetingSize)
	fromServer := make(chan readResult, 1)
	// Set before the server read starts: its wake-up deadline must not be overwritten.
	_ = down.SetReadDeadline(time.Now().Add(s.cfg.Proxy.IdleTimeout))
	go func() {
		n, err := r.up.Read(hello)
		if n > 0 || (err != nil && !isTimeout(err)) {
			_ = down.SetReadDeadline(aLongTimeAgo) // wake the client read below
		}
		fromServer <- readResult{n, err}
	}()
	n, cerr := down.Read(*r.buf)
	r.n = n
	// Stop the server read if it is still waiting, and collect it.
	_ = r.up.SetReadDeadline(aLongTimeAgo)
	sr := <-fromServer
	_ = r.up.SetReadDeadline(time.Time{})
	if sr.n > 0 {
		r.hello = hello[:sr.n]
	}
	switch {
	case sr.n == 0 && sr.err != nil && !isTimeout(sr.err) && !errors.Is(sr.err, errEOF):
		// The server reset before a word: the caller resets the client too. The relay
		// could not pass it on, since a socket reports a reset once and EOF after.
		_ = r.up.Close()
		r.release()
		return true, sr.err
	case sr.n > 0 || (sr.err != nil && !isTimeout(sr.err)):
		// The server spoke (or closed): a server-first protocol, relayed as opaque.
		// Any bytes the client sent meanwhile are relayed too.
		r.res.Proto = sniff.TCP
		return true, nil
	case n > 0:
		return false, nil // the client spoke first: classify
	case cerr != nil && !isTimeout(cerr) && !errors.Is(cerr, errEOF):
		_ = r.up.Close()
		r.release()
		return true, cerr
	default:
		// The client closed without a byte, or stayed silent for the idle timeout.
		r.res.Proto = sniff.TCP
		return true, nil
	}
}

var errEOF = io.EOF

func isTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }
