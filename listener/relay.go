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
// enter user space and an idle connection holds no pipe.
//
// A clean EOF in one direction is passed on as a half-close (CloseWrite) and the other
// direction goes on. A reset or any other error on either side resets both, so the peer
// that did not fail learns of the failure as it would without a proxy. The idle timer is
// shared: a direction that is quiet is not timed out while the other one moves bytes.
// onBytes, when set, is called as bytes move (true: downstream to upstream).
func Relay(down, up *net.TCPConn, idle time.Duration, onBytes func(toUpstream bool, n int64)) RelayResult {
	r := &relay{down: down, up: up, idle: idle, onBytes: onBytes}
	r.last.Store(time.Now().UnixNano())
	r.upDone.Add(1)
	go r.toUpstream()
	downBytes, downErr := copyDirection(down, up, r, false)
	if downErr != nil {
		r.abort()
	} else {
		_ = down.CloseWrite()
	}
	r.upDone.Wait()
	_ = down.Close()
	_ = up.Close()
	return relayResult(r.upBytes, downBytes, r.upErr, downErr)
}

// relay is what the two directions of a relayed connection share. It is one allocation
// rather than a closure and a captured variable each, since an idle connection holds it
// for as long as it stays open.
type relay struct {
	down, up *net.TCPConn
	idle     time.Duration
	onBytes  func(toUpstream bool, n int64)
	last     atomic.Int64 // when a byte last moved, either way (Unix nanoseconds)
	failed   atomic.Bool
	upDone   sync.WaitGroup
	upBytes  int64 // set by toUpstream before upDone
	upErr    error
}

// toUpstream copies downstream to upstream, then passes on the EOF as a half-close, or
// an error as resets.
func (r *relay) toUpstream() {
	defer r.upDone.Done()
	r.upBytes, r.upErr = copyDirection(r.up, r.down, r, true)
	if r.upErr != nil {
		r.abort()
		return
	}
	_ = r.up.CloseWrite()
}

// abort resets both connections, once.
func (r *relay) abort() {
	if r.failed.CompareAndSwap(false, true) {
		// SO_LINGER 0: Close sends RST instead of FIN.
		_ = r.down.SetLinger(0)
		_ = r.up.SetLinger(0)
		_ = r.down.Close()
		_ = r.up.Close()
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
	if r.onBytes != nil {
		r.onBytes(toUpstream, n)
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
