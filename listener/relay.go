package listener

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// RelayResult says how a relay ended.
type RelayResult struct {
	Received int64 // bytes from downstream to upstream
	Sent     int64 // bytes from upstream to downstream
	// Err is the first error that ended the relay early (a reset, an idle timeout);
	// nil when both sides closed cleanly.
	Err error
}

// ErrIdle ends a relay on which nothing moved for the idle timeout.
var ErrIdle = errors.New("idle timeout")

// Relay copies bytes both ways between down (accepted) and up (dialled) until both
// directions have ended, then closes both connections.
//
// It keeps the zero-copy path: on Linux each direction moves bytes with splice(2)
// through a pipe held only while bytes are moving (splice_linux.go), so the bytes never
// enter user space and an idle connection holds no pipe. Nor does it hold a goroutine:
// a direction that stays quiet hands its socket to a poller shared by all relays
// (park_linux.go) and its goroutine ends; a new one starts when bytes arrive.
//
// A clean EOF in one direction is passed on as a half-close (CloseWrite) and the other
// direction goes on. A reset or any other error on either side resets both, so the peer
// that did not fail learns of the failure as it would without a proxy. The idle timer is
// shared: a direction that is quiet is not timed out while the other one moves bytes.
// onBytes, when set, is called as bytes move (true: downstream to upstream).
func Relay(down, up *net.TCPConn, idle time.Duration, onBytes func(toUpstream bool, n int64)) RelayResult {
	w := &relayWaiter{onBytes: onBytes, done: make(chan RelayResult, 1)}
	r := &relay{}
	r.init(down, up, idle, w)
	r.spawn()
	return <-w.done
}

// relayOwner is told of a relay's progress and, once, of its end.
type relayOwner interface {
	relayed(toUpstream bool, n int64)
	// relayEnded is called when both directions have ended and both connections are
	// closed.
	relayEnded(RelayResult)
}

// relayWaiter is the owner of a relay run by Relay, which waits for it.
type relayWaiter struct {
	onBytes func(toUpstream bool, n int64)
	done    chan RelayResult
}

func (w *relayWaiter) relayed(toUpstream bool, n int64) {
	if w.onBytes != nil {
		w.onBytes(toUpstream, n)
	}
}

func (w *relayWaiter) relayEnded(res RelayResult) { w.done <- res }

// relay is what the two directions of a relayed connection share. It is meant to be
// embedded in its owner's own state, so that an idle connection costs one allocation
// besides its sockets: it holds it for as long as it stays open.
type relay struct {
	down, up *net.TCPConn
	idle     time.Duration
	owner    relayOwner
	last     atomic.Int64 // when a byte last moved, either way (Unix nanoseconds)
	failed   atomic.Bool
	live     atomic.Int32 // directions not ended yet
	dirs     [2]direction // downstream to upstream, and back

	mu     sync.Mutex
	timer  *time.Timer // the idle timeout of parked directions; made at the first park
	closed bool        // both directions ended: the timer must not be armed again
}

// direction is one way of a relay: it copies src to dst.
type direction struct {
	r          *relay
	src, dst   *net.TCPConn
	toUpstream bool
	bytes      int64
	err        error // what ended it; nil for a clean EOF
	park       parkState
}

// init readies the relay between down and up, which spawn starts; owner is told of its
// progress and end. Between the two, abort may already be called.
func (r *relay) init(down, up *net.TCPConn, idle time.Duration, owner relayOwner) {
	r.down, r.up, r.idle, r.owner = down, up, idle, owner
	r.last.Store(time.Now().UnixNano())
	r.dirs[0] = direction{r: r, src: down, dst: up, toUpstream: true}
	r.dirs[1] = direction{r: r, src: up, dst: down}
	r.live.Store(2)
}

// spawn runs the relay's directions on goroutines of their own, and returns at once.
func (r *relay) spawn() {
	spawn(&r.dirs[0])
	spawn(&r.dirs[1])
}

// run copies until the direction ends, or until it parks: a direction that parks is
// no longer this goroutine's to touch, and resumes on another one.
func (d *direction) run() {
	if !d.copy() {
		d.end()
	}
}

// end passes on how the direction ended, d.err: an EOF as a half-close, an error as
// resets of both sides.
func (d *direction) end() {
	if d.err != nil {
		d.r.abort()
	} else {
		_ = d.dst.CloseWrite()
	}
	d.r.directionDone()
}

// directionDone ends the relay once both directions have ended.
func (r *relay) directionDone() {
	if r.live.Add(-1) != 0 {
		return
	}
	r.mu.Lock()
	r.closed = true
	if r.timer != nil {
		r.timer.Stop()
	}
	r.mu.Unlock()
	_ = r.down.Close()
	_ = r.up.Close()
	up, down := &r.dirs[0], &r.dirs[1]
	r.owner.relayEnded(relayResult(up.bytes, down.bytes, up.err, down.err))
}

// abort resets both connections, once, and ends the directions that are parked (a
// parked direction has no goroutine to see its socket close).
func (r *relay) abort() {
	r.abortWith(net.ErrClosed)
}

// abortWith is abort, with err as the error of the directions it ends.
func (r *relay) abortWith(err error) {
	if !r.failed.CompareAndSwap(false, true) {
		return
	}
	// SO_LINGER 0: Close sends RST instead of FIN.
	_ = r.down.SetLinger(0)
	_ = r.up.SetLinger(0)
	_ = r.down.Close()
	_ = r.up.Close()
	for i := range r.dirs {
		if d := &r.dirs[i]; d.unpark() {
			d.err = err
			d.end()
		}
	}
}

// stillActive is asked by a direction whose wait timed out: it goes on waiting while the
// other direction has moved bytes within the idle timeout.
func (r *relay) stillActive() bool {
	return time.Since(time.Unix(0, r.last.Load())) < r.idle
}

// moved records n bytes relayed one way.
func (r *relay) moved(toUpstream bool, n int64) {
	r.last.Store(time.Now().UnixNano())
	r.owner.relayed(toUpstream, n)
}

// armIdle sets the idle timer to fire when the relay will have been idle for the idle
// timeout, as a direction parks: parked, it has no read deadline of its own.
func (r *relay) armIdle() {
	left := r.idle - time.Since(time.Unix(0, r.last.Load()))
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.closed:
	case r.timer == nil:
		r.timer = time.AfterFunc(left, r.idleFired)
	default:
		r.timer.Reset(left)
	}
}

// idleFired ends the relay if nothing moved for the idle timeout; if something did, it
// waits for the rest.
func (r *relay) idleFired() {
	if left := r.idle - time.Since(time.Unix(0, r.last.Load())); left > 0 {
		r.mu.Lock()
		if !r.closed {
			r.timer.Reset(left)
		}
		r.mu.Unlock()
		return
	}
	// A direction that is not parked is waiting with a deadline of its own, or moving
	// bytes: it is left alone until it parks.
	for i := range r.dirs {
		if r.dirs[i].parked() {
			r.abortWith(ErrIdle)
			return
		}
	}
}

// relayResult reports how a relay ended: the cause, not the "use of closed connection"
// the other direction saw after the first one failed.
func relayResult(upBytes, downBytes int64, upErr, downErr error) RelayResult {
	res := RelayResult{Received: upBytes, Sent: downBytes}
	switch {
	case downErr != nil && !errors.Is(downErr, net.ErrClosed):
		res.Err = downErr
	case upErr != nil && !errors.Is(upErr, net.ErrClosed):
		res.Err = upErr
	case downErr != nil:
		res.Err = downErr
	case upErr != nil:
		res.Err = upErr
	}
	return res
}

// runq holds directions about to run: each runNext goroutine takes one. Started this
// way rather than with a closure over the direction, a goroutine costs no allocation,
// so waking a parked direction allocates nothing.
var runq struct {
	sync.Mutex
	ds []*direction
}

// spawn runs d on a new goroutine.
func spawn(d *direction) {
	runq.Lock()
	runq.ds = append(runq.ds, d)
	runq.Unlock()
	go runNext()
}

func runNext() {
	runq.Lock()
	n := len(runq.ds) - 1
	d := runq.ds[n]
	runq.ds[n] = nil
	runq.ds = runq.ds[:n]
	runq.Unlock()
	d.run()
}
