package router

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"
)

// bufReader is a read buffer over a connection that a head can be parsed in place from
// (the HTTP/1.1 fast path), or frames (the HTTP/2 relay). Unlike bufio.Reader it grows
// (up to a limit) for a head longer than its buffer, and it takes its buffer from a pool
// only while it holds bytes or a read is under way.
type bufReader struct {
	c    net.Conn
	pool *bufPool
	buf  *[]byte // nil while released
	r, w int     // unread bytes: (*buf)[r:w]
	sock *sockReader
}

// bufPool lends read buffers of one size; a buffer grown past it is not taken back.
type bufPool struct {
	p    sync.Pool
	size int
}

func newBufPool(size int) *bufPool {
	bp := &bufPool{size: size}
	bp.p.New = func() any { b := make([]byte, size); return &b }
	return bp
}

const h1BufSize = 4 << 10

var h1Bufs = newBufPool(h1BufSize)

var errHeadTooLarge = errors.New("message head too large")

func (b *bufReader) buffered() []byte {
	if b.buf == nil {
		return nil
	}
	return (*b.buf)[b.r:b.w]
}

func (b *bufReader) discard(n int) { b.r += n }

// fill reads once more into the buffer, keeping the unread bytes and growing the buffer
// up to max when they fill it.
func (b *bufReader) fill(max int) error {
	b.space()
	buf := *b.buf
	if b.r > 0 && (b.r == b.w || b.w == len(buf)) {
		b.w = copy(buf, buf[b.r:b.w])
		b.r = 0
	}
	if b.w == len(buf) {
		if len(buf) >= max {
			return errHeadTooLarge
		}
		grown := make([]byte, min(2*len(buf), max))
		n := copy(grown, buf[:b.w])
		b.release() // the old buffer back to the pool; release forgets its bytes, kept in grown
		b.buf, b.w = &grown, n
		buf = grown
	}
	var n int
	var err error
	if b.sock != nil {
		// The same free space (space), and the buffer kept while waiting: parsed heads
		// point into it.
		b.sock.hold = true
		n, err = b.sock.read()
		b.sock.hold = false
	} else {
		n, err = b.c.Read(buf[b.w:])
	}
	b.w += n
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// space is the free part of the buffer, taking one from the pool if none is held.
func (b *bufReader) space() []byte {
	if b.buf == nil {
		b.buf = b.pool.p.Get().(*[]byte)
		b.r, b.w = 0, 0
	}
	return (*b.buf)[b.w:]
}

// idle gives the buffer back while the reader waits, if it holds nothing.
func (b *bufReader) idle() bool {
	if b.r == b.w {
		b.release()
	}
	return true
}

// release gives the buffer back; it must hold no unread bytes.
func (b *bufReader) release() {
	if b.buf != nil {
		if cap(*b.buf) == b.pool.size {
			b.pool.p.Put(b.buf)
		}
		b.buf, b.r, b.w = nil, 0, 0
	}
}

// h1Writers lends per-request write buffers: a head and a small body go out in one write.
var h1Writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, h1BufSize) }}

func getWriter(c io.Writer) *bufio.Writer {
	w := h1Writers.Get().(*bufio.Writer)
	w.Reset(c)
	return w
}

func putWriter(w *bufio.Writer) {
	w.Reset(nil)
	h1Writers.Put(w)
}

// h1Upstream is a pooled HTTP/1.1 connection to an upstream.
type h1Upstream struct {
	rd        bufReader
	out       io.Writer   // rd.c, or sw
	sw        *sockWriter // on rd.c's socket, when it is a plain TCP one
	key       h1Key
	idleSince time.Time
}

type h1Key struct {
	inbound bool // inbound dials bind the passthrough source address: a pool of their own
	addr    netip.AddrPort
}

// h1Pool keeps idle upstream connections per direction and address, most recently used
// first, as http.Transport would (its limits are the same: 256 idle per address, closed
// after 90 s).
type h1Pool struct {
	dial DialFunc
	mu   sync.Mutex
	idle map[h1Key][]*h1Upstream
	done chan struct{}
}

const (
	h1MaxIdlePerAddr = 256
	h1IdleTimeout    = 90 * time.Second
)

func newH1Pool(dial DialFunc) *h1Pool {
	p := &h1Pool{dial: dial, idle: map[h1Key][]*h1Upstream{}, done: make(chan struct{})}
	go p.sweep()
	return p
}

// get returns an idle connection to key's address, or dials one. reused says which.
// With lazy set, a reused connection's socket is looked at only just before the first
// write to it (sockWriter.check), in the same system call as that write's neighbours
// where it can be: the caller must then take errStale, with nothing sent, as the sign
// to get another.
func (p *h1Pool) get(ctx context.Context, key h1Key, lazy bool) (up *h1Upstream, reused bool, err error) {
	for {
		p.mu.Lock()
		list := p.idle[key]
		if len(list) == 0 {
			p.mu.Unlock()
			break
		}
		up = list[len(list)-1]
		list[len(list)-1] = nil
		p.idle[key] = list[:len(list)-1]
		p.mu.Unlock()
		// Every reuse peeks at the socket (one recv that finds nothing): a connection the
		// upstream closed meanwhile, or one with bytes nobody asked for (a late body
		// after a 204 or a HEAD response), must not take a request, since the pool is
		// shared by every client of the address and stray bytes would be read as the
		// next client's response. net/http's transport watches idle connections for the
		// same reason.
		if time.Since(up.idleSince) < h1IdleTimeout {
			if lazy && up.sw != nil {
				up.sw.check = true
				return up, true, nil
			}
			if !up.closedByPeer() {
				return up, true, nil
			}
		}
		_ = up.rd.c.Close()
	}
	dir := "outbound"
	if key.inbound {
		dir = "inbound"
	}
	c, err := p.dial(ctx, dir, key.addr)
	if err != nil {
		return nil, false, err
	}
	up = &h1Upstream{rd: bufReader{c: c, pool: h1Bufs}, key: key, out: c}
	if tcp, ok := c.(*net.TCPConn); ok {
		if up.sw = newSockWriter(tcp); up.sw != nil {
			up.out = up.sw
		}
		if up.rd.sock = newSockReader(tcp, up.rd.space, up.rd.idle); up.rd.sock != nil {
			up.rd.sock.sending()
		}
	}
	return up, false, nil
}

// closedByPeer reports whether the upstream closed the idle connection or sent bytes on
// it that nobody asked for.
func (up *h1Upstream) closedByPeer() bool {
	if up.rd.sock != nil {
		return up.rd.sock.closedByPeer()
	}
	return peerClosed(up.rd.c)
}

// sendErr is the error met by a request written from inside the read of its answer.
func (up *h1Upstream) sendErr() error {
	if up.rd.sock != nil {
		return up.rd.sock.snd.werr
	}
	return nil
}

// put returns a connection whose last response was read to its end.
func (p *h1Pool) put(up *h1Upstream) {
	if len(up.rd.buffered()) > 0 {
		_ = up.rd.c.Close() // bytes past the response: the upstream is not speaking HTTP
		return
	}
	if up.sw != nil {
		up.sw.check, up.sw.deferTo = false, nil
	}
	up.idleSince = time.Now()
	p.mu.Lock()
	if list := p.idle[up.key]; len(list) < h1MaxIdlePerAddr {
		select {
		case <-p.done:
		default:
			p.idle[up.key] = append(list, up)
			p.mu.Unlock()
			return
		}
	}
	p.mu.Unlock()
	_ = up.rd.c.Close()
}

// sweep closes connections idle for longer than h1IdleTimeout.
func (p *h1Pool) sweep() {
	t := time.NewTicker(h1IdleTimeout / 3)
	defer t.Stop()
	for {
		select {
		case <-p.done:
			return
		case <-t.C:
		}
		var stale []*h1Upstream
		p.mu.Lock()
		for k, list := range p.idle {
			keep := list[:0]
			for _, up := range list {
				if time.Since(up.idleSince) >= h1IdleTimeout {
					stale = append(stale, up)
				} else {
					keep = append(keep, up)
				}
			}
			clear(list[len(keep):])
			if len(keep) == 0 {
				delete(p.idle, k)
			} else {
				p.idle[k] = keep
			}
		}
		p.mu.Unlock()
		for _, up := range stale {
			_ = up.rd.c.Close()
		}
	}
}

// close closes every idle connection and stops pooling.
func (p *h1Pool) close() {
	p.mu.Lock()
	select {
	case <-p.done:
	default:
		close(p.done)
	}
	idle := p.idle
	p.idle = map[h1Key][]*h1Upstream{}
	p.mu.Unlock()
	for _, list := range idle {
		for _, up := range list {
			_ = up.rd.c.Close()
		}
	}
}
