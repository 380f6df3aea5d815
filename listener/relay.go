package listener

import (
	"errors"
	"net"
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
	var (
		last    = &activity{}
		failed  atomic.Bool
		upErr   error
		upBytes int64
		done    = make(chan struct{})
	)
	last.touch()
	abort := func() {
		if failed.CompareAndSwap(false, true) {
			// SO_LINGER 0: Close sends RST instead of FIN.
			_ = down.SetLinger(0)
			_ = up.SetLinger(0)
			_ = down.Close()
			_ = up.Close()
		}
	}
	go func() {
		defer close(done)
		upBytes, upErr = pipe(up, down, idle, last, func(n int64) {
			if onBytes != nil {
				onBytes(true, n)
			}
		})
		if upErr != nil {
			abort()
			return
		}
		_ = up.CloseWrite()
	}()
	downBytes, downErr := pipe(down, up, idle, last, func(n int64) {
		if onBytes != nil {
			onBytes(false, n)
		}
	})
	if downErr != nil {
		abort()
	} else {
		_ = down.CloseWrite()
	}
	<-done
	_ = down.Close()
	_ = up.Close()
	return relayResult(upBytes, downBytes, upErr, downErr)
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

// pipe moves bytes from src to dst until EOF (nil error) or an error. A direction whose
// wait times out goes on waiting while the other direction has moved bytes within the
// idle timeout.
func pipe(dst, src *net.TCPConn, idle time.Duration, last *activity, count func(int64)) (int64, error) {
	return copyDirection(dst, src, idle,
		func() bool { return last.since() < idle },
		func(n int64) {
			last.touch()
			count(n)
		})
}

// activity is when a relayed connection last moved a byte, either way.
type activity struct{ last atomic.Int64 }

func (a *activity) touch()               { a.last.Store(time.Now().UnixNano()) }
func (a *activity) since() time.Duration { return time.Since(time.Unix(0, a.last.Load())) }
