package router

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2/hpack"

	"skiff/park"
	"skiff/telemetry"
)

// The HTTP/2 fast path relays an h2c connection to its own upstream connection frame by
// frame, when nothing in the config applies to it: no config service at the destination
// (checked again for each request's :authority), no authorization policy (inbound), no
// mesh mTLS. Both ends keep their own HTTP/2 session: the client's preface, SETTINGS,
// flow control, PINGs, priorities, resets and GOAWAYs pass through as they were sent, so
// every rule of the protocol is checked by the endpoints, as without a proxy. The relay
// writes what each read brought in one write, and spends no goroutine or allocation per
// stream: under h2load's 8×32 streams that is 1.6 writes per request (net/http's server,
// client and ReverseProxy between two HTTP/2 sessions made 3.2, and some 105 allocations).
//
// What the relay needs from the frames it reads only the 9-byte frame header, except for
// header blocks, which it decodes with a copy of the receiving end's HPACK state: for a
// request's :authority (routing), content-type (request_protocol) and X-Request-Id, and
// for a response's :status and grpc-status (metrics). A request without X-Request-Id gets
// one appended to its header block as a literal that does not touch either end's dynamic
// table. Each request is counted in the same series as on the standard path.
//
// A request that the config does apply to (a service added while the connection lives,
// an authorization policy) is refused with REFUSED_STREAM, which clients retry, and the
// connection ends with a GOAWAY after its streams: the retry comes on a new connection,
// which takes the standard path. Anything the relay cannot follow (a header block it
// cannot decode, a frame too large to inspect) ends its inspection of that direction;
// the bytes keep flowing untouched, and the endpoint that receives them judges them.

// h2MaxInspect bounds a frame the relay reads whole (header blocks and SETTINGS). The
// receiving end allows 16 KiB unless it asked for more; a larger frame is passed on
// without inspection.
const h2MaxInspect = 256 << 10

// h2BufSize is a relay direction's read buffer, taken from a pool while it has bytes to
// move and given back while it waits.
const h2BufSize = 32 << 10

var h2Bufs = newBufPool(h2BufSize)

// h2relay is one client connection on the HTTP/2 fast path and its upstream connection.
type h2relay struct {
	h    *HTTP
	m    *Meta
	down Conn
	up   net.Conn
	c2u  h2half // client to upstream
	u2c  h2half

	mu      sync.Mutex
	streams map[uint32]h2stream // requests forwarded and not yet answered in full
	stats   reqStats
	// maxReq is the highest stream that opened a request, maxAccepted the highest that
	// was forwarded as one (the last stream a GOAWAY of the relay's own lets through).
	// c2u writes both, under mu.
	maxReq, maxAccepted uint32
	// retiring is set once the relay has sent the client a GOAWAY: new streams are
	// refused, and the connection closes when the last stream ends.
	retiring bool
	closed   bool
	// upFirst says the upstream side ended first: streams left then failed upstream.
	upFirst bool

	// Writes to the client come from u2c and from the relay's own frames (RST_STREAM,
	// GOAWAY), which may only go between u2c's frames.
	dmu sync.Mutex
	// dBetween: u2c's output so far ends at a frame boundary (and has begun: the
	// upstream's SETTINGS must be the first frame the client sees).
	dBetween bool
	dPending []byte // the relay's frames, waiting for the next boundary

	// Settings one side announces that change how the other side's header blocks must
	// be read or written, handed between the two goroutines: value+1, 0 when unchanged.
	upTable, downTable atomic.Uint64
	upMaxFrame         atomic.Uint32 // the upstream's SETTINGS_MAX_FRAME_SIZE

	began time.Time    // streams' times are kept from here (monotonic)
	last  atomic.Int64 // time of the last read either way (UnixNano), for the idle timeout
	idle  *time.Timer
	ended atomic.Int32 // directions finished
}

// h2stream is a request in flight on a relay, for its metrics: 32 bytes, since every
// relay keeps a map of them (an idle relay's map keeps its slots).
type h2stream struct {
	at                  time.Duration // when it was forwarded: time since the relay began
	reqBytes, respBytes int64
	status              uint16 // the final status, 0 until the response head
	grpc                int16  // grpc-status, -1 until one (a small number) is seen
	isGRPC              bool
}

// h2Relays tracks the relays, so that Shutdown can send each a GOAWAY and wait for its
// streams, as http.Server does for its HTTP/2 connections.
type h2Relays struct{ connSet[*h2relay] }

// h2FastPath reports whether an HTTP/2 connection may be relayed: nothing in the config
// applies to it as a whole. Each request's :authority is checked again (admit).
func (h *HTTP) h2FastPath(m *Meta) bool {
	if h.rt == nil {
		return true
	}
	snap := h.rt.Snapshot()
	if m.Direction == "inbound" {
		// In the mesh, the relay could not replace a client's own XFCC header.
		return h.mesh == nil && snap.Authz.Empty()
	}
	if h.mesh != nil && m.Mesh {
		return false
	}
	// A config that routes by name could claim any request's :authority. A request it
	// claims is refused and its client sent to a new connection, which must then take
	// the standard path: so with such services no connection takes the relay.
	t := snap.Routes
	return t.serviceAt(m.Dst) == nil && len(t.byHost) == 0 && len(t.suffixes) == 0
}

// serveH2Relay relays c if it qualifies and its upstream answers; false leaves c to the
// standard path (which then answers each request itself: a 503 when the dial fails).
func (h *HTTP) serveH2Relay(c Conn) bool {
	m := c.Meta()
	if h.dial == nil || !h.h2FastPath(m) {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.Proxy.ConnectTimeout)
	up, err := h.dial(ctx, m.Direction, m.Dst)
	cancel()
	if err != nil {
		return false
	}
	r := &h2relay{h: h, m: m, down: c, up: up, streams: map[uint32]h2stream{}, began: time.Now(),
		stats: reqStats{metrics: h.metrics, m: m}}
	r.upMaxFrame.Store(h2DefaultMaxFrameSize)
	r.c2u.init(r, c, up, true)
	r.u2c.init(r, up, c, false)
	if !h.h2.add(r) {
		_ = up.Close()
		_ = c.Close()
		return true
	}
	r.touch()
	if d := h.cfg.Proxy.IdleTimeout; d > 0 {
		// Under mu: a timer that fires at once must find itself.
		r.mu.Lock()
		r.idle = time.AfterFunc(d, r.idleCheck)
		r.mu.Unlock()
	}
	go r.c2u.run()
	go r.u2c.run()
	return true
}

func (r *h2relay) touch() { r.last.Store(time.Now().UnixNano()) }

// idleCheck closes a relay on which no byte moved either way for proxy.idle_timeout.
func (r *h2relay) idleCheck() {
	d := r.h.cfg.Proxy.IdleTimeout
	quiet := time.Duration(time.Now().UnixNano() - r.last.Load())
	if quiet >= d {
		r.h.log.Debug().Uint64(telemetry.FieldConnID, r.m.ConnID).Dur("idle", quiet).Msg("HTTP/2 relay idle: closing")
		r.closeAll()
		return
	}
	r.mu.Lock()
	r.idle.Reset(d - quiet)
	r.mu.Unlock()
}

// closeAll closes both connections; the directions then end.
func (r *h2relay) closeAll() {
	_ = r.down.Close()
	_ = r.up.Close()
	r.wakeParked()
}

// wakeParked runs the directions that are parked: a closed socket leaves the poller
// without an event, and a parked direction has no goroutine to see it.
func (r *h2relay) wakeParked() {
	for _, d := range [2]*h2half{&r.c2u, &r.u2c} {
		if park.Unpark(&d.pk) {
			go d.run()
		}
	}
}

// admit reports whether a request may take the relay: the config still applies to
// none of the connection's requests and not to this one's authority.
func (r *h2relay) admit(authority string) bool {
	h := r.h
	if h.rt == nil {
		return true
	}
	snap := h.rt.Snapshot()
	if r.m.Direction == "inbound" {
		return snap.Authz.Empty()
	}
	return snap.Routes.serviceFor(r.m.Dst, authority) == nil
}

// request notes a request forwarded on stream id; false refuses it (the relay is
// retiring or the config applies to it).
func (r *h2relay) request(id uint32, b *h2block) bool {
	ok := r.admit(b.authority)
	r.mu.Lock()
	defer r.mu.Unlock()
	if id > r.maxReq {
		r.maxReq = id
	}
	if !ok || r.retiring {
		return false
	}
	r.maxAccepted = id
	r.streams[id] = h2stream{at: time.Since(r.began), grpc: -1, isGRPC: b.grpc}
	return true
}

// response notes a response header block (or trailers) of stream id.
func (r *h2relay) response(id uint32, b *h2block, end bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st, ok := r.streams[id]
	if !ok {
		return
	}
	if st.status == 0 && b.status >= 200 {
		st.status = uint16(b.status)
	}
	if v, err := strconv.Atoi(b.grpcStatus); err == nil && v >= 0 && v <= math.MaxInt16 {
		st.grpc = int16(v)
	}
	if end {
		r.finishLocked(id, &st, int(st.status), telemetry.FlagNone)
		return
	}
	r.streams[id] = st
}

// data counts a DATA frame of stream id; end is its END_STREAM flag.
func (r *h2relay) data(toUp bool, id uint32, n int, end bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st, ok := r.streams[id]
	if !ok {
		return
	}
	if toUp {
		st.reqBytes += int64(n)
		r.streams[id] = st
		return
	}
	st.respBytes += int64(n)
	if end {
		r.finishLocked(id, &st, int(st.status), telemetry.FlagNone)
		return
	}
	r.streams[id] = st
}

// reset ends stream id on a RST_STREAM from the client (toUp) or the upstream.
func (r *h2relay) reset(toUp bool, id, errCode uint32) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st, ok := r.streams[id]
	if !ok {
		return
	}
	code, flag := int(st.status), telemetry.FlagNone
	if code == 0 {
		// What the standard path records: the client went away (499), or the upstream
		// failed the request (502). An upstream's CANCEL is a request given up, most
		// often at the deadline its client set (grpc-timeout): counted as the client's.
		code = 499
		if !toUp && errCode != h2ErrCancel {
			code, flag = 502, telemetry.FlagUpstreamFail
		}
	}
	r.finishLocked(id, &st, code, flag)
}

// finishLocked records a stream and forgets it; a retiring relay closes after its last.
func (r *h2relay) finishLocked(id uint32, st *h2stream, code int, flag string) {
	delete(r.streams, id)
	r.record(st, code, flag)
	r.closeIfDoneLocked()
}

func (r *h2relay) record(st *h2stream, code int, flag string) {
	proto, grpc := "http2", ""
	if st.isGRPC {
		proto = "grpc"
	}
	if st.grpc >= 0 {
		grpc = strconv.Itoa(int(st.grpc)) // no allocation below 100
	}
	r.stats.record(time.Since(r.began)-st.at, proto, code, grpc, flag, st.reqBytes, st.respBytes)
}

func (r *h2relay) closeIfDoneLocked() {
	if r.retiring && len(r.streams) == 0 && !r.closed {
		r.closed = true
		// FIN after the GOAWAY rather than a reset that could overtake it; the client
		// closes its side, and the directions end.
		if cw, ok := r.down.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
		_ = r.up.Close()
		r.wakeParked()
	}
}

// retire sends the client a GOAWAY that lets the streams forwarded so far finish, then
// refuse, if refuse is not 0, that stream. The relay closes when its last stream ends.
func (r *h2relay) retire(refuse uint32) {
	var b [2*h2FrameHeaderLen + 12]byte
	f := b[:0]
	r.mu.Lock()
	if !r.retiring {
		r.retiring = true
		f = appendGoAway(f, r.maxAccepted, h2ErrNoError)
	}
	r.mu.Unlock()
	if refuse != 0 {
		f = appendRSTStream(f, refuse, h2ErrRefusedStream)
	}
	r.sendDown(f)
	r.mu.Lock()
	r.closeIfDoneLocked()
	r.mu.Unlock()
}

// sendDown writes the relay's own frames to the client, now if u2c's output is between
// frames, else as soon as it is.
func (r *h2relay) sendDown(frames []byte) {
	if len(frames) == 0 {
		return
	}
	r.dmu.Lock()
	defer r.dmu.Unlock()
	if r.dBetween {
		_, _ = r.down.Write(frames)
		return
	}
	r.dPending = append(r.dPending, frames...)
}

// end runs when a direction has finished; the second to finish records the streams
// left (the connection ended under them) and lets the relay go.
func (r *h2relay) end(upSide bool) {
	if r.ended.Add(1) == 1 {
		r.mu.Lock()
		r.upFirst = upSide
		r.mu.Unlock()
		return
	}
	r.closeAll()
	r.mu.Lock()
	if r.idle != nil {
		r.idle.Stop()
	}
	for id, st := range r.streams {
		code, flag := int(st.status), telemetry.FlagNone
		if code == 0 {
			code = 499
			if r.upFirst {
				code, flag = 502, telemetry.FlagUpstreamFail
			}
		}
		delete(r.streams, id)
		r.record(&st, code, flag)
	}
	r.closed = true
	r.mu.Unlock()
	r.h.h2.remove(r)
}

// h2block is what the relay keeps of a header block while it decodes it.
type h2block struct {
	active    bool // between the block's first frame and its END_HEADERS
	stream    uint32
	push      bool // a PUSH_PROMISE's block: decoded only to keep the HPACK state
	endStream bool
	// request fields
	authority string
	grpc      bool
	hasID     bool
	// response fields
	status     int
	grpcStatus string
}

// h2half is one direction of a relay.
type h2half struct {
	r        *h2relay
	src, dst net.Conn
	toUp     bool
	in       bufReader // read and not yet passed on: in.buffered(); no buffer while waiting
	need     int       // the whole frame the direction waits for, when larger than the buffer
	preface  int       // bytes of the client preface still to pass (client to upstream)
	skip     int       // bytes of the current frame's payload still to pass on
	opaque   bool      // inspection has ended: bytes pass on untouched
	dec      *hpack.Decoder
	blk      h2block
	ins      []byte  // bytes the relay adds to this batch
	segs     []h2seg // the batch: runs of the buffer and of ins
	out      net.Buffers
	vec      [][]byte
	sock     *sockReader // reads src when it is a plain TCP socket with nothing to replay
	fresh    bool        // this goroutine has not handled a frame yet (see idleBuf)
	deadline bool        // a read deadline (h2ParkAfter) is set on src
	pk       park.State  // its place in the poller while parked
}

// h2seg is a run of bytes to write: buf[a:b], or ins[a:b] when added.
type h2seg struct {
	a, b  int
	added bool
}

func (d *h2half) init(r *h2relay, src, dst net.Conn, toUp bool) {
	d.r, d.src, d.dst, d.toUp = r, src, dst, toUp
	d.in = bufReader{c: src, pool: h2Bufs}
	d.dec = hpack.NewDecoder(h2DefaultTableSize, d.emit)
	d.dec.SetMaxStringLength(maxHeaderBytes)
	if toUp {
		d.preface = len(h2Preface)
	}
}

func (d *h2half) run() {
	d.fresh = true
	if d.deadline {
		_ = d.src.SetReadDeadline(time.Time{})
		d.deadline = false
	}
	err := d.loop()
	if err == errIdleEnded {
		// Nothing to read: the direction parks (package park) and this goroutine ends;
		// one starts again when the socket has something. Where it cannot park, a fresh
		// goroutine, whose stack stays at the minimum, waits instead of this one, whose
		// stack grew with the frames it handled.
		// The batch's scratch slices go too: an idle relay keeps only its state. So does
		// the read buffer, unless it holds part of a frame: the read that ended may have
		// ended before it waited (its deadline had passed while it handled a batch), so
		// it did not give the buffer back. Under a burst of new connections that was
		// most of them, each keeping 32 KiB until its next frame.
		d.ins, d.segs, d.out, d.vec = nil, nil, nil, nil
		d.in.idle()
		if !d.pk.Failed() && park.Park(d, &d.pk, d.sock.rc) {
			return
		}
		go d.run()
		return
	}
	d.in.release()
	if errors.Is(err, io.EOF) {
		// The source is done sending: pass the half-close on, as a TCP relay does.
		if cw, ok := d.dst.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		} else {
			d.r.closeAll()
		}
	} else {
		d.r.closeAll()
	}
	d.r.end(!d.toUp)
}

// idleBuf gives the buffer back while the direction waits, if it holds nothing, and
// lets it wait h2ParkAfter on this goroutine: a read that times out then ends with
// errIdleEnded, for run to park the direction. Where parking failed, a goroutine that
// has handled no frame yet waits in the read itself, and one that has ends the read
// at once (run hands the wait to a fresh goroutine, whose stack never grew).
func (d *h2half) idleBuf() bool {
	d.in.idle()
	if d.pk.Failed() {
		return d.fresh
	}
	_ = d.src.SetReadDeadline(time.Now().Add(h2ParkAfter))
	d.deadline = true
	return true
}

// h2ParkAfter is how long a relay direction waits for more on its own goroutine before
// it parks, as a TCP relay's does: parking and waking cost an epoll_ctl and a wake-up of
// the poller's goroutine, which a busy connection should not pay between its batches.
const h2ParkAfter = 5 * time.Millisecond

// Wake runs a parked direction whose socket has something (park.Waiter).
func (d *h2half) Wake() { go d.run() }

func (d *h2half) read() (int, error) {
	if d.sock == nil {
		if tcp := readableTCP(d.src); tcp != nil {
			d.sock = newSockReader(tcp, d.in.space, d.idleBuf)
		}
	}
	if d.sock != nil {
		n, err := d.sock.read()
		if n == 0 && errors.Is(err, os.ErrDeadlineExceeded) {
			err = errIdleEnded // quiet for h2ParkAfter (or a deadline set then passed)
		}
		return n, err
	}
	return d.src.Read(d.in.space())
}

func (d *h2half) loop() error {
	for {
		n, err := d.read()
		if n > 0 {
			d.r.touch()
			d.in.w += n
			if werr := d.process(); werr != nil {
				return werr
			}
			d.fresh = false
		}
		if err != nil {
			return err
		}
	}
}

// process passes on every whole frame (and the read part of a frame passed through)
// in the buffer, in one write, and keeps the rest for the next read.
func (d *h2half) process() error {
	buf := *d.in.buf
	b := buf[:d.in.w]
	p, from := d.in.r, d.in.r
	d.ins, d.segs = d.ins[:0], d.segs[:0]
	d.need = 0
frames:
	for p < len(b) {
		switch {
		case d.preface > 0:
			n := min(d.preface, len(b)-p)
			at := len(h2Preface) - d.preface
			if string(b[p:p+n]) != h2Preface[at:at+n] {
				d.stopInspecting("no client preface")
			}
			p += n
			d.preface -= n
			continue
		case d.skip > 0:
			n := min(d.skip, len(b)-p)
			p += n
			d.skip -= n
			continue
		case d.opaque:
			p = len(b)
			continue
		}
		if len(b)-p < h2FrameHeaderLen {
			break
		}
		fh := parseFrameHeader(b[p:])
		switch fh.typ {
		case h2Headers, h2Continuation, h2PushPromise, h2Settings, h2RSTStream:
		default:
			if fh.typ == h2Data {
				n := fh.length
				if fh.flags&h2FlagPadded != 0 && p+h2FrameHeaderLen < len(b) {
					// The body without the padding, as the standard path counts it (when
					// the pad length has arrived with the frame header, as it nearly always
					// does).
					n = max(0, n-1-int(b[p+h2FrameHeaderLen]))
				}
				d.r.data(d.toUp, fh.stream, n, fh.flags&h2FlagEndStream != 0)
			}
			p += h2FrameHeaderLen
			d.skip = fh.length
			continue
		}
		end := p + h2FrameHeaderLen + fh.length
		if end > len(b) {
			if h2FrameHeaderLen+fh.length > h2MaxInspect {
				d.stopInspecting("frame too large to inspect")
				continue
			}
			d.need = h2FrameHeaderLen + fh.length
			break frames
		}
		from = d.frame(fh, b, p, from)
		p = end
	}
	d.segs = append(d.segs, h2seg{a: from, b: p})
	if err := d.write(buf); err != nil {
		return err
	}
	// Keep what is left (part of a frame header, or of a frame read whole) for the next
	// read, at the front of a buffer large enough for the frame awaited.
	left := d.in.w - p
	if size := max(d.need, h2BufSize); size > len(buf) {
		grown := make([]byte, size)
		copy(grown, buf[p:d.in.w])
		d.in.release()
		d.in.buf = &grown
	} else if p > 0 {
		copy(buf, buf[p:d.in.w])
	}
	d.in.r, d.in.w = 0, left
	return nil
}

// frame handles a frame the relay reads whole, b[p:] up to its end, and returns where
// the current run of the batch starts.
func (d *h2half) frame(fh h2FrameHeader, b []byte, p, from int) int {
	payload := b[p+h2FrameHeaderLen : p+h2FrameHeaderLen+fh.length]
	switch fh.typ {
	case h2Settings:
		if fh.flags&h2FlagAck == 0 {
			forEachSetting(payload, d.setting)
		}
		return from
	case h2RSTStream:
		if len(payload) == 4 {
			d.r.reset(d.toUp, fh.stream, binary.BigEndian.Uint32(payload))
		}
		return from
	}
	// A header block: HEADERS or PUSH_PROMISE, and its CONTINUATIONs.
	if fh.typ == h2Continuation {
		if !d.blk.active || fh.stream != d.blk.stream {
			d.stopInspecting("CONTINUATION out of place")
			return from
		}
	} else {
		if d.blk.active {
			d.stopInspecting("header block interrupted")
			return from
		}
		d.applyTableSize()
		d.blk = h2block{active: true, stream: fh.stream, push: fh.typ == h2PushPromise,
			endStream: fh.typ == h2Headers && fh.flags&h2FlagEndStream != 0}
	}
	s, e, ok := headerFragment(fh.typ, fh.flags, payload)
	if !ok {
		d.stopInspecting("bad padding")
		return from
	}
	if _, err := d.dec.Write(payload[s:e]); err != nil {
		d.stopInspecting("HPACK: " + err.Error())
		return from
	}
	if fh.flags&h2FlagEndHeaders == 0 {
		return from
	}
	if err := d.dec.Close(); err != nil {
		d.stopInspecting("HPACK: " + err.Error())
		return from
	}
	d.blk.active = false
	if d.blk.push {
		return from
	}
	if !d.toUp {
		d.r.response(fh.stream, &d.blk, d.blk.endStream)
		return from
	}
	if fh.stream <= d.r.maxReq { // c2u writes it: no lock needed to read it here
		return from // trailers (or a stream the upstream will refuse)
	}
	if !d.r.request(fh.stream, &d.blk) {
		// Refused: the block still goes to the upstream, which must decode it to keep
		// its HPACK state, but made malformed (a pseudo-header after a regular field,
		// a second :path), so that no server acts on it, and reset at once.
		at := len(d.ins)
		d.ins = appendLiteralField(d.ins, "x-skiff-refused", "1")
		d.ins = appendLiteralField(d.ins, ":path", "/")
		from = d.extendBlock(fh, b, p, e, from, at)
		at = len(d.ins)
		d.ins = appendRSTStream(d.ins, fh.stream, h2ErrCancel)
		end := p + h2FrameHeaderLen + fh.length
		d.segs = append(d.segs, h2seg{a: from, b: end}, h2seg{a: at, b: len(d.ins), added: true})
		d.r.retire(fh.stream)
		return end
	}
	if !d.blk.hasID {
		at := len(d.ins)
		d.ins = append(d.ins, 0x00, byte(len("x-request-id")))
		d.ins = append(d.ins, "x-request-id"...)
		d.ins = append(d.ins, 36)
		d.ins = appendRequestID(d.ins)
		from = d.extendBlock(fh, b, p, e, from, at)
	}
	return from
}

// extendBlock adds ins[at:] to the end of the header block whose last frame is b[p:],
// with the fragment ending at e in its payload: inside that frame, before its padding,
// when the receiver's frame size allows, else in a CONTINUATION of its own after it.
func (d *h2half) extendBlock(fh h2FrameHeader, b []byte, p, e, from, at int) int {
	added := len(d.ins) - at
	if fh.length+added <= d.r.maxFrameUp() {
		putFrameLength(b[p:], fh.length+added)
		cut := p + h2FrameHeaderLen + e
		d.segs = append(d.segs, h2seg{a: from, b: cut}, h2seg{a: at, b: len(d.ins), added: true})
		return cut
	}
	b[p+4] &^= h2FlagEndHeaders
	lit := d.ins[at:]
	d.ins = appendFrameHeader(d.ins, added, h2Continuation, h2FlagEndHeaders, fh.stream)
	d.ins = append(d.ins, lit...)
	end := p + h2FrameHeaderLen + fh.length
	d.segs = append(d.segs, h2seg{a: from, b: end}, h2seg{a: at + added, b: len(d.ins), added: true})
	return end
}

// write passes the batch on in one system call.
func (d *h2half) write(buf []byte) error {
	d.out = d.vec[:0]
	for _, s := range d.segs {
		if s.a == s.b {
			continue
		}
		if s.added {
			d.out = append(d.out, d.ins[s.a:s.b])
		} else {
			d.out = append(d.out, buf[s.a:s.b])
		}
	}
	d.vec = d.out[:0]
	if d.toUp {
		if len(d.out) == 0 {
			return nil
		}
		_, err := d.out.WriteTo(d.dst)
		return err
	}
	// To the client: the relay's own frames may go in only between frames.
	r := d.r
	r.dmu.Lock()
	defer r.dmu.Unlock()
	var err error
	if len(d.out) > 0 {
		_, err = d.out.WriteTo(d.dst)
		// Between frames, and not inside a header block, which RFC 9113 §4.3 makes one
		// unbroken run of frames. Once the direction is no longer inspected, where its
		// frames begin is unknown: the relay's own frames wait (for good).
		r.dBetween = d.skip == 0 && !d.blk.active && !d.opaque
	}
	if err == nil && r.dBetween && len(r.dPending) > 0 {
		_, err = d.dst.Write(r.dPending)
		r.dPending = r.dPending[:0]
	}
	return err
}

func (d *h2half) stopInspecting(why string) {
	if !d.opaque {
		d.opaque = true
		d.r.h.log.Debug().Uint64(telemetry.FieldConnID, d.r.m.ConnID).Bool("to_upstream", d.toUp).
			Str(telemetry.FieldReason, why).Msg("HTTP/2 relay stops inspecting frames")
	}
}

// setting notes a SETTINGS value of this direction's sender that the other direction
// must follow: the sender's decoder table size bounds the other side's encoder (so the
// relay's copy of that decoder), and its frame size bounds what the relay may add.
func (d *h2half) setting(id uint16, v uint32) {
	switch id {
	case h2SettingHeaderTableSize:
		if d.toUp {
			d.r.downTable.Store(uint64(v) + 1)
		} else {
			d.r.upTable.Store(uint64(v) + 1)
		}
	case h2SettingMaxFrameSize:
		if !d.toUp {
			d.r.upMaxFrame.Store(v)
		}
	}
}

// applyTableSize takes up, before a header block, a table size the receiver of this
// direction announced.
func (d *h2half) applyTableSize() {
	t := &d.r.upTable
	if !d.toUp {
		t = &d.r.downTable
	}
	if v := t.Swap(0); v != 0 {
		d.dec.SetAllowedMaxDynamicTableSize(uint32(v - 1))
	}
}

func (r *h2relay) maxFrameUp() int { return int(r.upMaxFrame.Load()) }

// emit collects the fields the relay uses from a header block.
func (d *h2half) emit(f hpack.HeaderField) {
	b := &d.blk
	if b.push {
		return
	}
	switch f.Name {
	case ":authority":
		b.authority = f.Value
	case "host":
		if b.authority == "" {
			b.authority = f.Value
		}
	case ":status":
		b.status = statusCode(f.Value)
	case "content-type":
		b.grpc = strings.HasPrefix(f.Value, "application/grpc")
	case "x-request-id":
		b.hasID = true
	case "grpc-status":
		b.grpcStatus = f.Value
	}
}

// statusCode parses a three-digit :status, 0 if it is not one.
func statusCode(s string) int {
	if len(s) != 3 {
		return 0
	}
	n := 0
	for i := 0; i < 3; i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0
		}
		n = n*10 + int(c-'0')
	}
	return n
}

// shutdown sends every relay's client a GOAWAY, waits for their streams to finish
// until ctx ends, then closes what is left.
func (t *h2Relays) shutdown(ctx context.Context) {
	t.closing.Store(true)
	for _, r := range t.list() {
		r.retire(0) // may write to the client: not under the set's lock
	}
	t.drain(ctx, func() { t.each((*h2relay).closeAll) })
}
