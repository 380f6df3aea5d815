package router

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"skiff/telemetry"
)

// The HTTP/1.1 fast path serves the common case of an HTTP/1.1 connection without
// net/http: it parses each request head in place (h1head.go), writes it to a pooled
// upstream connection with only the hop-by-hop fields changed, and streams the response
// back with its framing as the upstream sent it. Per request that is a few hundred
// nanoseconds of parsing and no allocation, against net/http's server, client and
// ReverseProxy (header maps built and copied twice, three goroutines per upstream
// connection, some 85 allocations).
//
// It takes the requests it can forward exactly and hands the connection to net/http's
// server, at a request boundary and for the rest of the connection's life, for anything
// else: a request parseRequestHead does not accept, an outbound request to a config
// service (routing, mirrors, timeouts), an inbound one while authorization policies
// exist, an outbound one over mesh mTLS. Those paths keep their behaviour unchanged.

// tcpBacked is a downstream connection that is a plain TCP socket underneath.
type tcpBacked interface {
	// TCP returns the socket, and whether bytes the listener read while sniffing are
	// still to be replayed (the socket must not be waited on or read directly then).
	TCP() (c *net.TCPConn, replaying bool)
}

// h1conn is one downstream connection on the fast path.
type h1conn struct {
	h  *HTTP
	c  Conn
	m  *Meta
	rd bufReader
	// req and resp are the parsed heads of the request in flight, borrowed from
	// h1HeadPool while a request is read and served: their field lists are most of what
	// a connection would otherwise hold while idle.
	req, resp *h1Head
	heads     *[2]h1Head   // what req and resp point into
	state     atomic.Int32 // h1Active, h1Idle or h1Closed: see h1Conns
	// deadline is set while a read deadline is in force on c; headerDeadline once the
	// header timeout is (for a head that did not arrive in one read).
	deadline, headerDeadline bool
	// head and sent1xx describe the request in flight: a HEAD, and whether an
	// informational response has been passed on (it may then not be sent again).
	head, sent1xx bool
	stats         reqStats
	out           io.Writer // c, or a sockWriter on its socket
	// up is the upstream connection of the request in flight, for Shutdown to close
	// when its time is up (the goroutine may be waiting on it, not on c).
	up atomic.Pointer[h1Upstream]
	// since is when the request in flight began (UnixNano), 0 between requests, and
	// h1Gone once the client closed its end during the request (see watchGone).
	since atomic.Int64
}

const (
	h1Active int32 = iota
	h1Idle
	h1Closed
)

// h1Conns tracks the fast path's connections, so that Shutdown can close the idle ones
// at once and let the others finish the request in flight, as http.Server does.
type h1Conns struct{ connSet[*h1conn] }

// closeIdle closes the connections waiting for a request; with all set, every one.
func (t *h1Conns) closeIdle(all bool) {
	// Not under the set's lock: a Close may wait (see below).
	for _, hc := range t.list() {
		if all || hc.state.CompareAndSwap(h1Idle, h1Closed) {
			hc.state.Store(h1Closed)
			// The upstream first: a request served inside the client's read
			// (take) holds the client's socket, whose Close waits for that read
			// to end, and the read ends when the upstream fails.
			if up := hc.up.Load(); up != nil {
				_ = up.rd.c.Close()
			}
			_ = hc.c.Close()
		}
	}
}

// shutdown stops the fast path: no new connections, idle ones closed now, busy ones
// after their response, the rest when ctx ends.
func (t *h1Conns) shutdown(ctx context.Context) {
	t.closing.Store(true)
	t.closeIdle(false)
	t.drain(ctx, func() { t.closeIdle(true) })
}

// serveH1 serves an HTTP/1 connection on the fast path until it ends or is handed over.
func (h *HTTP) serveH1(c Conn) {
	m := c.Meta()
	// The fast path frames every request itself; the guard is only for net/http, which
	// gets a fresh one if it takes the connection over.
	m.Guard = nil
	hc := &h1conn{h: h, c: c, m: m, rd: bufReader{c: c, pool: h1Bufs}, stats: reqStats{metrics: h.metrics, m: m}, out: c}
	if tb, ok := c.(tcpBacked); ok {
		if tcp, _ := tb.TCP(); tcp != nil {
			hc.out = writerFor(tcp) // bytes still to replay are read, not written
		}
	}
	if !h.h1.add(hc) {
		_ = c.Close()
		return
	}
	defer h.h1.remove(hc)
	defer hc.putHeads()
	for {
		ok, fast := hc.readRequest()
		if !ok {
			hc.rd.release()
			_ = c.Close()
			return
		}
		if !fast {
			hc.handover()
			return
		}
		if !hc.proxy() {
			hc.rd.release()
			_ = c.Close()
			return
		}
	}
}

// readRequest waits for the next request head and parses it. ok is false when the
// connection is to be closed (EOF, timeout, shutdown, an error), fast whether the
// request is one for the fast path.
func (hc *h1conn) readRequest() (ok, fast bool) {
	if len(hc.rd.buffered()) == 0 {
		hc.putHeads()
		if !hc.waitRequest() {
			return false, false
		}
	}
	if hc.req == nil {
		hc.heads = h1HeadPool.Get().(*[2]h1Head)
		hc.req, hc.resp = &hc.heads[0], &hc.heads[1]
	}
	for {
		n := parseRequestHead(hc.rd.buffered(), hc.req)
		switch {
		case n > 0:
			return true, hc.forFastPath()
		case n == h1Not:
			return true, false
		}
		if !hc.headerDeadline {
			hc.setDeadline(hc.h.srv.ReadHeaderTimeout)
			hc.headerDeadline = true
		}
		if err := hc.rd.fill(maxH1RequestHead); err != nil {
			if errors.Is(err, errHeadTooLarge) {
				return true, false // net/http answers 431
			}
			return false, false
		}
	}
}

var h1HeadPool = sync.Pool{New: func() any { return new([2]h1Head) }}

// putHeads gives the heads back to the pool.
func (hc *h1conn) putHeads() {
	if hc.heads != nil {
		hc.req.reset() // no slices into the read buffer stay reachable from the pool
		hc.resp.reset()
		h1HeadPool.Put(hc.heads)
		hc.heads, hc.req, hc.resp = nil, nil, nil
	}
}

// waitRequest waits for the first bytes of the next request while the connection is
// idle: Shutdown may close it meanwhile, the idle timeout applies, and on a plain TCP
// socket no buffer is held.
func (hc *h1conn) waitRequest() bool {
	hc.rd.release()
	hc.setDeadline(hc.h.srv.IdleTimeout)
	hc.headerDeadline = false
	tcp := readableTCP(hc.c)
	if tcp == nil {
		// Sniffed bytes to replay (or no socket): read through the connection.
		if !hc.goIdle() {
			return false
		}
		err := hc.rd.fill(maxH1RequestHead)
		return hc.state.CompareAndSwap(h1Idle, h1Active) && err == nil
	}
	if hc.rd.sock == nil {
		hc.rd.sock = newSockReader(tcp, hc.wakeBuf, hc.sleepBuf)
	}
	// One read when the request is already there; else the connection goes idle (and
	// gives its buffer back) inside the read, before the poller waits, and active again
	// when it wakes. Requests that come whole are served inside the read.
	s := hc.rd.sock
	s.got = hc
	_, err := s.read()
	s.got = nil
	// The idle deadline stays while the head is read (it usually arrives whole, and the
	// header timeout is set only if it did not): one timer update per request.
	return err == nil && len(hc.rd.buffered()) > 0 && hc.state.Load() == h1Active
}

// take takes the n bytes the client's read brought (sockReader.got) and serves
// the requests among them that came whole, body included, and that the fast path
// takes, from inside the read. It returns true when all were served: the read then
// waits for the next request without first reading to find nothing (see
// taker). Anything else (a head cut short, a body still to come, a request
// for net/http, an error) is left to readRequest.
//
// Nothing here may read the client, whose socket the read holds: whole requests need
// no read, and the response goes out through the write side.
func (hc *h1conn) take(n int) bool {
	hc.rd.w += n
	for {
		if hc.state.Load() != h1Active || hc.h.h1.closing.Load() {
			return false
		}
		if hc.req == nil {
			hc.heads = h1HeadPool.Get().(*[2]h1Head)
			hc.req, hc.resp = &hc.heads[0], &hc.heads[1]
		}
		buf := hc.rd.buffered()
		hn := parseRequestHead(buf, hc.req)
		if hn <= 0 || hc.req.contentLength > int64(len(buf)-hn) || !hc.forFastPath() {
			return false
		}
		if !hc.proxy() {
			hc.state.Store(h1Closed) // the connection ends here
			return false
		}
		if len(hc.rd.buffered()) == 0 {
			hc.putHeads()
			hc.setDeadline(hc.h.srv.IdleTimeout)
			hc.headerDeadline = false
			return true
		}
	}
}

// goIdle marks the connection idle, unless Shutdown has begun (or closed it).
func (hc *h1conn) goIdle() bool {
	if !hc.state.CompareAndSwap(h1Active, h1Idle) {
		return false
	}
	if hc.h.h1.closing.Load() {
		hc.state.CompareAndSwap(h1Idle, h1Closed)
		return false
	}
	return true
}

// sleepBuf and wakeBuf are the idle-wait callbacks of the client's sockReader.
func (hc *h1conn) sleepBuf() bool {
	hc.rd.release()
	return hc.goIdle()
}

func (hc *h1conn) wakeBuf() []byte {
	hc.state.CompareAndSwap(h1Idle, h1Active)
	return hc.rd.space()
}

func (hc *h1conn) setDeadline(d time.Duration) {
	if d > 0 {
		_ = hc.c.SetReadDeadline(time.Now().Add(d))
		hc.deadline = true
	} else if hc.deadline {
		hc.clearDeadline()
	}
}

func (hc *h1conn) clearDeadline() {
	_ = hc.c.SetReadDeadline(time.Time{})
	hc.deadline = false
}

// forFastPath reports whether the parsed request may go the fast way: nothing in the
// config applies to it.
func (hc *h1conn) forFastPath() bool {
	h, m := hc.h, hc.m
	if h.rt == nil {
		return true
	}
	snap := h.rt.Snapshot()
	if m.Direction == "inbound" {
		return snap.Authz.Empty()
	}
	if h.mesh != nil && m.Mesh {
		return false
	}
	t := snap.Routes
	if t.serviceAt(m.Dst) != nil {
		return false
	}
	if len(t.byHost) == 0 && len(t.suffixes) == 0 {
		return true
	}
	return t.serviceFor(m.Dst, string(hc.req.host)) == nil
}

// handover gives the connection to net/http's server, the request just parsed and any
// bytes after it first.
func (hc *h1conn) handover() {
	pending := bytes.Clone(hc.rd.buffered())
	hc.rd.discard(len(pending))
	hc.rd.release()
	if hc.deadline {
		hc.clearDeadline()
	}
	g := &H1Guard{}
	g.Feed(pending)
	hc.m.Guard = g
	hc.h.serveStd(&handoffConn{Conn: hc.c, pending: pending})
}

// handoffConn replays the bytes the fast path had read to net/http's server.
type handoffConn struct {
	Conn
	pending []byte
}

func (c *handoffConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// WriteTo keeps the zero-copy relay of an upgraded connection (ReverseProxy copies the
// hijacked connection with io.Copy).
func (c *handoffConn) WriteTo(w io.Writer) (int64, error) {
	var total int64
	if len(c.pending) > 0 {
		n, err := w.Write(c.pending)
		total += int64(n)
		c.pending = c.pending[n:]
		if err != nil {
			return total, err
		}
	}
	var n int64
	var err error
	if wt, ok := c.Conn.(io.WriterTo); ok {
		n, err = wt.WriteTo(w)
	} else {
		n, err = io.Copy(w, struct{ io.Reader }{c.Conn})
	}
	return total + n, err
}

func (c *handoffConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// errBadResponse is an upstream response the fast path cannot read as HTTP/1.1.
var errBadResponse = errors.New("malformed HTTP response from upstream")

// proxy forwards the parsed request and its response. It reports whether the
// connection stays open for another request.
func (hc *h1conn) proxy() (keep bool) {
	start := time.Now()
	req, m := hc.req, hc.m
	keep = !req.close
	proto := "http"
	if req.grpc {
		proto = "grpc"
	}
	head := req.size
	body := max(req.contentLength, 0)
	key := h1Key{inbound: m.Direction == "inbound", addr: m.Dst}
	hc.since.Store(start.UnixNano())
	defer hc.endRequest()
	// A request without a body may be sent again on a new connection if a pooled one
	// turns out to have been closed by the upstream, when that is safe (as net/http).
	retry := body == 0 && idempotent(req.method)
	hc.head, hc.sent1xx = asciiEqualFold(req.method, "head"), false
	w := getWriter(hc.out)
	defer putWriter(w)
	// uw holds the request while it is sent: when it is sent from inside the read of
	// its answer (see send), until that read is done.
	uw := getWriter(nil)
	defer putWriter(uw)
	for attempt, stale := 0, 0; ; attempt++ {
		// A request without a body is checked against a pooled connection's closing
		// just before it is written (lazily, see h1Pool.get); one with a body before its
		// body is taken from the read buffer, so that another connection can be tried.
		up, reused, err := hc.h.h1pool.get(context.Background(), key, body == 0 && stale < h1MaxIdlePerAddr)
		hc.up.Store(up)
		if err != nil {
			hc.rd.discard(head)
			if body > 0 {
				keep = false // the body is left unread
			}
			return hc.fail(start, proto, err, keep)
		}
		reqBytes, sendErr := hc.send(up, uw, head, body)
		if sendErr != nil && errors.Is(sendErr, errDownstream) {
			_ = up.rd.c.Close()
			return false // the client went away mid-body
		}
		var ok, keepUp bool
		var code int
		var respBytes int64
		if !errors.Is(sendErr, errStale) {
			if body > 0 {
				head, body = 0, 0 // sent: what follows is the response
			}
			ok, code, respBytes, keepUp, err = hc.respond(w, up, &keep, sendErr)
		} else {
			err = sendErr
		}
		if hc.since.Load() == h1Gone {
			// The client went away while the upstream kept it waiting (watchGone).
			_ = up.rd.c.Close()
			if code == 0 {
				code = 499
			}
			hc.stats.record(time.Since(start), proto, code, "", telemetry.FlagNone, reqBytes, respBytes)
			return false
		}
		if err != nil && !ok && code == 0 {
			// The upstream had closed a pooled connection: nothing was sent on it.
			if errors.Is(err, errStale) {
				_ = up.rd.c.Close()
				attempt--
				stale++
				continue
			}
			// Sent on a pooled connection that turned out to be closed.
			if reused && retry && attempt == 0 && !hc.sent1xx && len(up.rd.buffered()) == 0 {
				_ = up.rd.c.Close()
				continue
			}
		}
		if head > 0 {
			hc.rd.discard(head)
		}
		if !ok {
			_ = up.rd.c.Close()
			if code == 0 {
				return hc.fail(start, proto, err, keep)
			}
			// The response had begun: the client sees it cut short.
			hc.stats.record(time.Since(start), proto, code, "", telemetry.FlagUpstreamFail, reqBytes, respBytes)
			_ = w.Flush()
			return false
		}
		// Taken back from hc.up first: watchGone closes only a connection it takes
		// from there, so never one back in the pool.
		if keepUp && hc.up.CompareAndSwap(up, nil) {
			hc.h.h1pool.put(up)
		} else {
			_ = up.rd.c.Close()
		}
		hc.stats.record(time.Since(start), proto, code, "", telemetry.FlagNone, reqBytes, respBytes)
		if w.Flush() != nil {
			return false
		}
		return keep && !hc.h.h1.closing.Load()
	}
}

// endRequest marks the end of the request in flight.
func (hc *h1conn) endRequest() {
	hc.up.Store(nil)
	hc.since.Store(0)
}

// errDownstream marks a failure to read the request body from the client.
var errDownstream = errors.New("client connection failed")

// send writes the request head (the first head bytes of the read buffer, which stay in
// it) and the body (consumed) to up, through w. It returns the body bytes sent.
//
// A request that fits in w whole and has no body is not written here: it goes out from
// inside the read of its answer (sockReader.send), which saves that read a system call
// that would find nothing, and w keeps it until then.
func (hc *h1conn) send(up *h1Upstream, w *bufio.Writer, head int, body int64) (int64, error) {
	w.Reset(up.out)
	var writes uint32
	if up.sw != nil {
		writes = up.sw.writes
	}
	hc.writeRequestHead(w)
	var sent int64
	if body > 0 {
		hc.rd.discard(head)
		if hc.deadline {
			hc.clearDeadline()
		}
		for sent < body {
			avail := hc.rd.buffered()
			if len(avail) == 0 {
				if err := hc.rd.fill(maxH1RequestHead); err != nil {
					return sent, errors.Join(errDownstream, err)
				}
				continue
			}
			n := int(min(int64(len(avail)), body-sent))
			_, _ = w.Write(avail[:n])
			hc.rd.discard(n)
			sent += int64(n)
		}
	}
	if body == 0 && up.sw != nil && up.rd.sock != nil && up.sw.writes == writes {
		up.sw.deferTo = up.rd.sock
	}
	err := w.Flush()
	if up.sw != nil {
		up.sw.deferTo = nil
	}
	return sent, err
}

// writeRequestHead writes the request as the app sent it, less the hop-by-hop fields,
// plus X-Request-Id when it had none and, inbound in the mesh, the peer's identity.
func (hc *h1conn) writeRequestHead(w *bufio.Writer) {
	req, m := hc.req, hc.m
	stripXFCC := req.xfcc && hc.h.mesh != nil && m.Direction == "inbound"
	_, _ = w.Write(req.method)
	_ = w.WriteByte(' ')
	_, _ = w.Write(req.target)
	_, _ = w.WriteString(" HTTP/1.1\r\n")
	for i := range req.fields {
		f := &req.fields[i]
		if f.hop || stripXFCC && asciiEqualFold(f.name, "x-forwarded-client-cert") {
			continue
		}
		writeField(w, f)
	}
	if req.teTrailers {
		_, _ = w.WriteString("TE: trailers\r\n")
	}
	if !req.requestID {
		_, _ = w.WriteString("X-Request-Id: ")
		_, _ = w.Write(appendRequestID(w.AvailableBuffer()))
		_, _ = w.WriteString("\r\n")
	}
	if hc.h.mesh != nil && m.Direction == "inbound" && m.PeerID != "" {
		_, _ = w.WriteString(XFCC + ": By=")
		_, _ = w.WriteString(m.LocalID)
		_, _ = w.WriteString(";URI=")
		_, _ = w.WriteString(m.PeerID)
		_, _ = w.WriteString("\r\n")
	}
	_, _ = w.WriteString("\r\n")
}

func writeField(w *bufio.Writer, f *h1Field) {
	_, _ = w.Write(f.name)
	_, _ = w.WriteString(": ")
	_, _ = w.Write(f.value)
	_, _ = w.WriteString("\r\n")
}

// respond reads the upstream's response and writes it to the client. ok is false when
// no complete response reached the client; code is then the status the client already
// got, 0 if none. keepUp says whether up may serve another request.
//
// It writes to w and leaves the end of the response in it: the caller records the
// request before the client can have all of it, then flushes.
func (hc *h1conn) respond(w *bufio.Writer, up *h1Upstream, keep *bool, sendErr error) (ok bool, code int, n int64, keepUp bool, err error) {
	resp := hc.resp
	for informational := 0; ; {
		hn := parseResponseHead(up.rd.buffered(), resp)
		if hn == h1Not {
			return false, 0, 0, false, errBadResponse
		}
		if hn == h1More {
			err := up.rd.fill(maxH1ResponseHead)
			if sendErr == nil {
				sendErr = up.sendErr()
			}
			if err != nil {
				if sendErr != nil && !errors.Is(err, errStale) {
					err = sendErr // the upstream stopped reading the request first
				}
				return false, 0, 0, false, err
			}
			continue
		}
		if resp.status >= 200 {
			break
		}
		// 1xx: passed on as it comes (103 Early Hints, 102); a 101 answers an upgrade
		// the fast path never asks for.
		informational++
		if resp.status == http.StatusSwitchingProtocols || informational > 16 {
			return false, 0, 0, false, errBadResponse
		}
		hc.writeResponseHead(w, false)
		hc.sent1xx = true
		up.rd.discard(hn)
		if err := w.Flush(); err != nil {
			return false, 0, 0, false, errors.Join(errDownstream, err)
		}
	}
	if sendErr != nil {
		// The upstream answered before it took the whole request: the client's body was
		// not all read, so the connection cannot carry another request.
		*keep = false
	}
	code = resp.status
	bodyless := hc.head || code == http.StatusNoContent || code == http.StatusNotModified
	length := resp.contentLength
	if !bodyless && length < 0 && !resp.chunked {
		*keep = false // read until the upstream closes: the client learns the end the same way
	}
	keepUp = !resp.close && sendErr == nil
	if hc.h.h1.closing.Load() {
		*keep = false // shutting down: the client is told, as net/http's server does
	}
	hc.writeResponseHead(w, !*keep)
	up.rd.discard(resp.size)
	var rerr, werr error
	switch {
	case bodyless:
	case resp.chunked:
		n, rerr, werr = copyChunked(w, &up.rd)
	case length >= 0:
		n, rerr, werr = hc.copyBody(w, &up.rd, length)
	default:
		n, rerr, werr = hc.copyBody(w, &up.rd, -1)
		keepUp = false
		if errors.Is(rerr, io.EOF) {
			rerr = nil
		}
	}
	switch {
	case rerr != nil:
		return false, code, n, false, rerr
	case werr != nil:
		*keep = false
		return true, code, n, false, nil // the client went away: nothing to tell it
	}
	return true, code, n, keepUp, nil
}

// writeResponseHead writes the parsed response head, less its hop-by-hop fields.
func (hc *h1conn) writeResponseHead(w *bufio.Writer, closing bool) {
	resp := hc.resp
	_, _ = w.WriteString("HTTP/1.1 ")
	_, _ = w.Write(strconv.AppendInt(w.AvailableBuffer(), int64(resp.status), 10))
	_ = w.WriteByte(' ')
	if len(resp.reason) > 0 {
		_, _ = w.Write(resp.reason)
	} else {
		_, _ = w.WriteString(http.StatusText(resp.status))
	}
	_, _ = w.WriteString("\r\n")
	for i := range resp.fields {
		if f := &resp.fields[i]; !f.hop {
			writeField(w, f)
		}
	}
	if closing {
		_, _ = w.WriteString("Connection: close\r\n")
	}
	_, _ = w.WriteString("\r\n")
}

// spliceMin is the body size from which a response body is moved with splice(2) (both
// sockets plain TCP) rather than through the buffer.
const spliceMin = 64 << 10

// copyBody copies length bytes (-1: until EOF) from the upstream to w. What is buffered
// goes first; the rest is spliced when it is large and both ends are TCP sockets.
// Before each wait for the upstream, w is flushed, so a response that trickles reaches
// the client as it comes and one that arrives at once leaves in one write.
func (hc *h1conn) copyBody(w *bufio.Writer, src *bufReader, length int64) (n int64, rerr, werr error) {
	for length < 0 || n < length {
		avail := src.buffered()
		if len(avail) == 0 {
			if werr = w.Flush(); werr != nil {
				return n, nil, werr
			}
			if length < 0 || length-n >= spliceMin {
				if m, rerr, werr, done := hc.splice(src, length-n, length < 0); done {
					return n + m, rerr, werr
				}
			}
			if rerr = src.fill(h1BufSize); rerr != nil {
				if length >= 0 && errors.Is(rerr, io.EOF) {
					rerr = io.ErrUnexpectedEOF
				}
				return n, rerr, nil
			}
			continue
		}
		k := len(avail)
		if length >= 0 {
			k = int(min(int64(k), length-n))
		}
		if _, werr = w.Write(avail[:k]); werr != nil {
			return n, nil, werr
		}
		src.discard(k)
		n += int64(k)
	}
	return n, nil, nil
}

// splice moves the rest of a body from the upstream socket to the client's with
// splice(2). done is false when either end is not a plain TCP socket.
func (hc *h1conn) splice(src *bufReader, remaining int64, toEOF bool) (n int64, rerr, werr error, done bool) {
	tb, ok := hc.c.(tcpBacked)
	if !ok {
		return 0, nil, nil, false
	}
	down, _ := tb.TCP()
	up, ok := src.c.(*net.TCPConn)
	if down == nil || !ok {
		return 0, nil, nil, false
	}
	src.release()
	var r io.Reader = up
	if !toEOF {
		r = &io.LimitedReader{R: up, N: remaining}
	}
	n, err := down.ReadFrom(r)
	switch {
	case err != nil:
		// Which side failed is not told apart by ReadFrom; the connection is done either way.
		return n, err, nil, true
	case !toEOF && n < remaining:
		return n, io.ErrUnexpectedEOF, nil, true
	}
	return n, nil, nil, true
}

// errBadChunk is a chunked response body whose framing is malformed.
var errBadChunk = errors.New("malformed chunked encoding from upstream")

// maxChunkLine bounds a chunk-size line (with extensions) and a trailer line.
const maxChunkLine = 4 << 10

// copyChunked copies a chunked body verbatim, checking its framing as it goes so that
// the copy ends exactly where the body does. It returns the data bytes (framing excluded).
func copyChunked(w *bufio.Writer, src *bufReader) (n int64, rerr, werr error) {
	for {
		line, err := chunkLine(w, src)
		if err != nil {
			return n, err, nil
		}
		size, ok := parseChunkSize(line[:len(line)-2])
		if !ok {
			return n, errBadChunk, nil
		}
		if _, werr = w.Write(line); werr != nil {
			return n, nil, werr
		}
		src.discard(len(line))
		if size == 0 {
			break
		}
		for size > 0 {
			avail := src.buffered()
			if len(avail) == 0 {
				if werr = w.Flush(); werr != nil {
					return n, nil, werr
				}
				if rerr = src.fill(h1BufSize); rerr != nil {
					return n, noEOF(rerr), nil
				}
				continue
			}
			k := int(min(int64(len(avail)), size))
			if _, werr = w.Write(avail[:k]); werr != nil {
				return n, nil, werr
			}
			src.discard(k)
			size -= int64(k)
			n += int64(k)
		}
		for len(src.buffered()) < 2 {
			if rerr = src.fill(h1BufSize); rerr != nil {
				return n, noEOF(rerr), nil
			}
		}
		if b := src.buffered(); b[0] != '\r' || b[1] != '\n' {
			return n, errBadChunk, nil
		}
		_, _ = w.WriteString("\r\n")
		src.discard(2)
	}
	// Trailer fields, then the empty line that ends the body.
	for {
		line, err := chunkLine(w, src)
		if err != nil {
			return n, err, nil
		}
		if len(line) > 2 && !validTrailer(line[:len(line)-2]) {
			return n, errBadChunk, nil
		}
		if _, werr = w.Write(line); werr != nil {
			return n, nil, werr
		}
		src.discard(len(line))
		if len(line) == 2 {
			return n, nil, nil
		}
	}
}

// chunkLine returns the next CRLF-terminated line of src, CRLF included, still buffered.
func chunkLine(w *bufio.Writer, src *bufReader) ([]byte, error) {
	for {
		b := src.buffered()
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			if i == 0 || b[i-1] != '\r' || i+1 > maxChunkLine {
				return nil, errBadChunk
			}
			return b[:i+1], nil
		}
		if len(b) >= maxChunkLine {
			return nil, errBadChunk
		}
		if err := w.Flush(); err != nil {
			return nil, err
		}
		if err := src.fill(2 * maxChunkLine); err != nil {
			return nil, noEOF(err)
		}
	}
}

func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// parseChunkSize parses a chunk-size line without its CRLF: hex digits, optional
// whitespace, optional extensions (checked for control bytes, otherwise ignored).
func parseChunkSize(line []byte) (int64, bool) {
	var size int64
	i := 0
	for ; i < len(line); i++ {
		c := line[i]
		var d byte
		switch {
		case '0' <= c && c <= '9':
			d = c - '0'
		case 'a' <= c && c <= 'f':
			d = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			d = c - 'A' + 10
		default:
			goto rest
		}
		if size >= 1<<56 {
			return 0, false
		}
		size = size<<4 | int64(d)
	}
rest:
	if i == 0 {
		return 0, false
	}
	ext := trimOWS(line[i:])
	if len(ext) > 0 && (ext[0] != ';' || !validValue(ext)) {
		return 0, false
	}
	return size, true
}

func validTrailer(line []byte) bool {
	colon := bytes.IndexByte(line, ':')
	return colon > 0 && isToken(line[:colon]) && validValue(line[colon+1:])
}

func idempotent(method []byte) bool {
	switch string(method) {
	case "GET", "HEAD", "OPTIONS", "TRACE":
		return true
	}
	return false
}

// fail answers a request the upstream could not serve, as proxyError does.
func (hc *h1conn) fail(start time.Time, proto string, err error, keep bool) bool {
	code, flag := upstreamFailure(err)
	hc.h.logUpstreamFailure(hc.m, hc.m.Dst, err, code)
	w := getWriter(hc.out)
	_, _ = w.WriteString("HTTP/1.1 ")
	_, _ = w.Write(strconv.AppendInt(w.AvailableBuffer(), int64(code), 10))
	_ = w.WriteByte(' ')
	_, _ = w.WriteString(http.StatusText(code))
	_, _ = w.WriteString("\r\nContent-Length: 0\r\n")
	if !keep {
		_, _ = w.WriteString("Connection: close\r\n")
	}
	_, _ = w.WriteString("\r\n")
	// Recorded before the client can see the answer, so that whoever reads the metric
	// after the response finds it.
	hc.stats.record(time.Since(start), proto, code, "", flag, 0, 0)
	werr := w.Flush()
	putWriter(w)
	return keep && werr == nil && !hc.h.h1.closing.Load()
}

// reqStat holds one label set's request metrics, so that a connection's requests do not
// look them up (hashing nine label values) four times each.
type reqStat struct {
	code              int
	proto, grpc, flag string
	requests          prometheus.Counter
	duration          prometheus.Observer
	reqBytes          prometheus.Observer
	respBytes         prometheus.Observer
}

// reqStats records a fast-path connection's requests with the labels ServeHTTP's record
// uses, keeping the few label sets a connection sees.
type reqStats struct {
	metrics *telemetry.Metrics
	m       *Meta
	dst     string // m.Dst.String(), for metric labels
	stats   []*reqStat
}

// record adds a served request to the metrics.
func (rs *reqStats) record(elapsed time.Duration, proto string, code int, grpc, flag string, reqBytes, respBytes int64) {
	var s *reqStat
	for _, st := range rs.stats {
		if st.code == code && st.proto == proto && st.grpc == grpc && st.flag == flag {
			s = st
			break
		}
	}
	if s == nil {
		if rs.dst == "" {
			rs.dst = rs.m.Dst.String()
		}
		policy, principal := inboundSecurity(rs.m)
		labels := []string{rs.m.Direction, rs.dst, proto, strconv.Itoa(code), grpc, policy, principal,
			telemetry.UnknownService, flag}
		met := rs.metrics
		s = &reqStat{code: code, proto: proto, grpc: grpc, flag: flag,
			requests:  met.Requests.WithLabelValues(labels...),
			duration:  met.RequestDuration.WithLabelValues(labels...),
			reqBytes:  met.RequestBytes.WithLabelValues(labels...),
			respBytes: met.ResponseBytes.WithLabelValues(labels...)}
		if len(rs.stats) < 4 {
			rs.stats = append(rs.stats, s)
		}
	}
	s.requests.Inc()
	s.duration.Observe(float64(elapsed) / float64(time.Millisecond))
	s.reqBytes.Observe(float64(reqBytes))
	s.respBytes.Observe(float64(respBytes))
}
