package listener

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// relayChunk is how many bytes one splice call may move before the relay loop looks
// at the clock again: it bounds how stale the idle timer and the byte counters get.
const relayChunk = 1 << 20

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
// It keeps the zero-copy path: each direction is (*net.TCPConn).ReadFrom of the other
// TCP connection wrapped only in an io.LimitedReader, which the runtime turns into
// splice(2), so the bytes never enter user space.
//
// A clean EOF in one direction is passed on as a half-close (CloseWrite) and the other
// direction goes on. A reset or any other error on either side resets both, so the peer
// that did not fail learns of the failure as it would without a proxy. The idle timer is
// shared: a direction that is quiet is not timed out while the other one moves bytes.
// onBytes, when set, is called as bytes move (true: downstream to upstream).
func Relay(down, up *net.TCPConn, idle time.Duration, onBytes func(toUpstream bool, n int64)) RelayResult {
	var (
		last    = &idleTracker{a: down, b: up}
		failed  atomic.Bool
		upErr   error
		upBytes int64
		done    = make(chan struct{})
	)
	last.moved() // start from the counters as they are now
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
	res := RelayResult{Received: upBytes, Sent: downBytes}
	// Report the cause, not the "use of closed connection" the other direction saw.
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

// pipe moves bytes from src to dst until EOF (nil error) or an error.
func pipe(dst, src *net.TCPConn, idle time.Duration, last *idleTracker, count func(int64)) (int64, error) {
	lr := io.LimitedReader{R: src}
	var total int64
	for {
		if err := src.SetReadDeadline(time.Now().Add(idle)); err != nil {
			return total, err
		}
		lr.N = relayChunk
		n, err := dst.ReadFrom(&lr)
		if n > 0 {
			total += n
			count(n)
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				if n > 0 || last.moved() {
					continue // this or the other direction moved bytes: not idle
				}
				return total, ErrIdle
			}
			return total, err
		}
		if lr.N > 0 {
			return total, nil // src reached EOF before filling the chunk
		}
	}
}

// idleTracker tells whether a relayed connection moved any byte since it was last asked.
// A splice call that is busy moving bytes does not return until its chunk is done, so the
// relay cannot see the progress itself; the kernel's per-socket byte counters (TCP_INFO)
// can. It is asked only when an idle deadline passes, so it costs nothing per byte.
type idleTracker struct {
	a, b *net.TCPConn
	mu   sync.Mutex
	seen [2]uint64
}

func (t *idleTracker) moved() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := [2]uint64{bytesReceived(t.a), bytesReceived(t.b)}
	changed := now != t.seen
	t.seen = now
	return changed
}
